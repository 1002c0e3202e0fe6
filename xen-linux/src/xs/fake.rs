//! A scripted in-memory xenstored for tests: a Unix socket, a thread per connection, one tree.
//!
//! It speaks the wire protocol through this crate's codec, so it checks the client's framing,
//! and its [`Script`] makes the daemon behave in the ways a client must survive: watch events
//! before replies, replies dribbled a byte at a time, transaction conflicts, refusals, hang-ups.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::wire::{self, Access, Decoder, Message, MsgType, Perm, Request, WatchEvent, XsErrno};

/// One node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Vec<u8>,
    pub perms: Vec<Perm>,
}

type Tree = BTreeMap<String, Node>;

/// How the daemon misbehaves.
#[derive(Debug, Default)]
pub(crate) struct Script {
    /// Commits answered EAGAIN before one succeeds.
    pub eagain_commits: u32,
    /// Send the watch events a request fires before its reply (else after).
    pub events_before_reply: bool,
    /// Write every outgoing message one byte per `write`.
    pub dribble: bool,
    /// Paths under this prefix are refused with EACCES.
    pub deny_prefix: Option<String>,
    /// A READ of this path closes the connection instead of answering.
    pub hang_up_on_read: Option<String>,
}

#[derive(Debug)]
struct WatchReg {
    conn: u32,
    path: String,
    token: String,
}

/// The daemon's state, shared by its threads.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub tree: Tree,
    pub script: Script,
    /// (type, tx_id) of every request received.
    pub log: Vec<(MsgType, u32)>,
    watches: Vec<WatchReg>,
    conns: HashMap<u32, UnixStream>,
    /// Open transactions: a private copy of the tree and the paths changed in it.
    txs: HashMap<u32, (Tree, Vec<String>)>,
    next_tx: u32,
}

impl State {
    /// How many requests of type `t` arrived.
    pub fn count(&self, t: MsgType) -> usize {
        self.log.iter().filter(|(ty, _)| *ty == t).count()
    }

    /// A node's value as text.
    pub fn value(&self, path: &str) -> Option<String> {
        self.tree
            .get(path)
            .map(|n| String::from_utf8_lossy(&n.value).into_owned())
    }
}

/// The running daemon. Dropping it stops it and removes the socket.
#[derive(Debug)]
pub(crate) struct FakeXenstored {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeXenstored {
    pub fn start() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Relaxed: only uniqueness of the name matters; nothing is published through it.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "splitnet-fake-xenstored-{}-{n}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the fake xenstored socket");
        let root = Node {
            value: Vec::new(),
            perms: vec![Perm {
                domid: 0,
                access: Access::None,
            }],
        };
        let state = Arc::new(Mutex::new(State {
            tree: BTreeMap::from([("/".to_owned(), root)]),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for (id, stream) in (1u32..).zip(listener.incoming()) {
                    // Acquire pairs with the Release store in Drop, before its wake-up connect.
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let writer = stream.try_clone().expect("clone the connection");
                    lock(&state).conns.insert(id, writer);
                    let state = state.clone();
                    std::thread::spawn(move || serve(&state, id, stream));
                }
            })
        };
        FakeXenstored {
            path,
            state,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for FakeXenstored {
    fn drop(&mut self) {
        // Release pairs with the acceptor's Acquire load after the wake-up connect below.
        self.stop.store(true, Ordering::Release);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for (_, c) in lock(&self.state).conns.drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve(state: &Mutex<State>, conn: u32, mut stream: UnixStream) {
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    'conn: loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        dec.feed(&buf[..n]);
        while let Ok(Some(msg)) = dec.next_message() {
            let mut st = lock(state);
            if !answer(&mut st, conn, &msg) {
                break 'conn;
            }
        }
    }
    let mut st = lock(state);
    st.conns.remove(&conn);
    st.watches.retain(|w| w.conn != conn);
    let _ = stream.shutdown(Shutdown::Both);
}

/// Handles one request, writing the reply and any watch events; false to hang up.
fn answer(st: &mut State, conn: u32, msg: &Message) -> bool {
    let h = msg.header;
    let req = match Request::parse(h.ty, &msg.payload) {
        Ok(r) => r,
        Err(_) => {
            send(
                st,
                conn,
                &reply(MsgType::Error, h.req_id, h.tx_id, XsErrno::Einval.emit()),
            );
            return true;
        }
    };
    st.log.push((req.msg_type(), h.tx_id));
    if let (Request::Read { path }, Some(bye)) = (&req, &st.script.hang_up_on_read)
        && path == bye
    {
        return false;
    }
    let mut fired = Vec::new();
    let mut after = Vec::new();
    let result = execute(st, conn, h.tx_id, &req, &mut fired, &mut after);
    let ty = req.msg_type();
    let rep = match result {
        Ok(payload) => reply(ty, h.req_id, h.tx_id, payload),
        Err(e) => reply(MsgType::Error, h.req_id, h.tx_id, e.emit()),
    };
    let events: Vec<(u32, Message)> = fired.iter().flat_map(|p| matching(st, p)).collect();
    let (own, others): (Vec<_>, Vec<_>) = events.into_iter().partition(|(c, _)| *c == conn);
    for (c, m) in &others {
        send(st, *c, m);
    }
    if st.script.events_before_reply {
        own.iter().for_each(|(_, m)| send(st, conn, m));
        send(st, conn, &rep);
    } else {
        send(st, conn, &rep);
        own.iter().for_each(|(_, m)| send(st, conn, m));
    }
    // Events that always follow the reply (a new watch's first firing).
    for ev in after {
        send(st, conn, &ev.to_message().expect("event fits"));
    }
    true
}

fn reply(ty: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Message {
    Message::new(ty, req_id, tx_id, payload).expect("reply fits")
}

fn send(st: &mut State, conn: u32, m: &Message) {
    let mut bytes = Vec::new();
    m.encode(&mut bytes);
    let dribble = st.script.dribble;
    if let Some(s) = st.conns.get_mut(&conn) {
        if dribble {
            for b in &bytes {
                let _ = s.write_all(std::slice::from_ref(b));
            }
        } else {
            let _ = s.write_all(&bytes);
        }
    }
}

/// The watch events a change at `path` fires, per connection.
fn matching(st: &State, path: &str) -> Vec<(u32, Message)> {
    st.watches
        .iter()
        .filter(|w| is_child(path, &w.path))
        .map(|w| {
            let ev = WatchEvent {
                path: path.to_owned(),
                token: w.token.clone(),
            };
            (w.conn, ev.to_message().expect("event fits"))
        })
        .collect()
}

fn is_child(path: &str, parent: &str) -> bool {
    parent == "/"
        || path == parent
        || path
            .strip_prefix(parent)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn execute(
    st: &mut State,
    conn: u32,
    tx: u32,
    req: &Request<'_>,
    fired: &mut Vec<String>,
    after: &mut Vec<WatchEvent>,
) -> Result<Vec<u8>, XsErrno> {
    if let (Some(path), Some(deny)) = (req.path(), &st.script.deny_prefix)
        && path.starts_with(deny.as_str())
    {
        return Err(XsErrno::Eacces);
    }
    match req {
        Request::TransactionStart => {
            st.next_tx += 1;
            let id = st.next_tx;
            st.txs.insert(id, (st.tree.clone(), Vec::new()));
            return Ok(wire::emit_strings(&[id.to_string()]));
        }
        Request::TransactionEnd { commit } => {
            let (tree, changed) = st.txs.remove(&tx).ok_or(XsErrno::Einval)?;
            if *commit {
                if st.script.eagain_commits > 0 {
                    st.script.eagain_commits -= 1;
                    return Err(XsErrno::Eagain);
                }
                st.tree = tree;
                fired.extend(changed);
            }
            return Ok(wire::OK.to_vec());
        }
        Request::Watch { path, token } => {
            st.watches.push(WatchReg {
                conn,
                path: (*path).into(),
                token: (*token).into(),
            });
            after.push(WatchEvent {
                path: (*path).into(),
                token: (*token).into(),
            });
            return Ok(wire::OK.to_vec());
        }
        Request::Unwatch { path, token } => {
            let before = st.watches.len();
            st.watches
                .retain(|w| !(w.conn == conn && w.path == *path && w.token == *token));
            return if st.watches.len() < before {
                Ok(wire::OK.to_vec())
            } else {
                Err(XsErrno::Enoent)
            };
        }
        _ => {}
    }
    // Tree operations, on the transaction's copy inside one.
    let (tree, changed) = if tx == 0 {
        (&mut st.tree, fired)
    } else {
        let (t, c) = st.txs.get_mut(&tx).ok_or(XsErrno::Einval)?;
        (t, c)
    };
    let path = req.path().unwrap_or_default();
    match req {
        Request::Read { .. } => tree
            .get(path)
            .map(|n| n.value.clone())
            .ok_or(XsErrno::Enoent),
        Request::Write { value, .. } => {
            create(tree, path);
            tree.get_mut(path).expect("just created").value = value.to_vec();
            changed.push(path.into());
            Ok(wire::OK.to_vec())
        }
        Request::Mkdir { .. } => {
            if !tree.contains_key(path) {
                create(tree, path);
                changed.push(path.into());
            }
            Ok(wire::OK.to_vec())
        }
        Request::Rm { .. } => {
            if !tree.contains_key(path) {
                return if tree.contains_key(parent_of(path)) {
                    Ok(wire::OK.to_vec())
                } else {
                    Err(XsErrno::Enoent)
                };
            }
            tree.retain(|k, _| !is_child(k, path));
            changed.push(path.into());
            Ok(wire::OK.to_vec())
        }
        Request::Directory { .. } => {
            if !tree.contains_key(path) {
                return Err(XsErrno::Enoent);
            }
            let prefix = if path == "/" {
                "/".to_owned()
            } else {
                format!("{path}/")
            };
            let names: Vec<&str> = tree
                .keys()
                .filter_map(|k| k.strip_prefix(prefix.as_str()))
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .collect();
            Ok(wire::emit_strings(&names))
        }
        Request::GetPerms { .. } => {
            let node = tree.get(path).ok_or(XsErrno::Enoent)?;
            let perms: Vec<String> = node.perms.iter().map(Perm::to_string).collect();
            Ok(wire::emit_strings(&perms))
        }
        Request::SetPerms { perms, .. } => {
            tree.get_mut(path).ok_or(XsErrno::Enoent)?.perms = perms.to_vec();
            changed.push(path.into());
            Ok(wire::OK.to_vec())
        }
        _ => Err(XsErrno::Enosys),
    }
}

/// Creates `path` and its missing ancestors, each inheriting its parent's permissions.
fn create(tree: &mut Tree, path: &str) {
    if path == "/" || tree.contains_key(path) {
        return;
    }
    let parent = parent_of(path);
    create(tree, parent);
    let perms = tree
        .get(parent)
        .map(|n| n.perms.clone())
        .unwrap_or_default();
    tree.insert(
        path.to_owned(),
        Node {
            value: Vec::new(),
            perms,
        },
    );
}
