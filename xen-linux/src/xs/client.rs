//! A xenstore client over xenstored's Unix socket or `/dev/xen/xenbus`.
//!
//! One request is outstanding at a time: [`XsClient`] sends it, then reads until the reply with
//! the same req_id arrives. Watch events that arrive meanwhile (xenstored interleaves them freely
//! with replies) are queued, never lost and never taken for the reply; [`XsClient::read_watch`]
//! hands them out.
//!
//! Thread-safety: every operation takes `&mut self`, so a client is used from one thread at a
//! time (it is `Send`; put it in a `Mutex` to share it). A backend typically keeps one
//! connection in its control thread and may open a second for another thread: xenstored serves
//! any number of connections.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::wire::{
    self, Decoder, Message, MsgType, PAYLOAD_MAX, Perm, Request, WatchEvent, WireError, XsErrno,
};
use crate::error::{Error, POLL_HINT, Result, XS_IO_HINT};
use crate::sys;

/// xenstored's socket (Xen 4.17's default `XEN_RUN_STORED`), then its `/run` spelling.
pub const SOCKET_PATHS: [&str; 2] = ["/var/run/xenstored/socket", "/run/xenstored/socket"];
/// The kernel's xenbus device: the fallback where no xenstored socket is reachable (a driver
/// domain, or xenstored in a stub domain).
pub const XENBUS_DEV: &str = "/dev/xen/xenbus";
/// Environment variable naming the socket or device to use instead (as libxenstore honours).
pub const PATH_ENV: &str = "XENSTORED_PATH";
/// Attempts [`XsClient::transaction`] makes before giving up on a conflicting transaction.
pub const MAX_TX_ATTEMPTS: u32 = 16;

const HINT_RUNNING: &str = "is xenstored running? start it (systemctl start xenstored, or xencommons) and run as root \
     in dom0";

/// Where [`XsClient::open`] looks, in order: only `env` if set, else the sockets then the device.
pub fn candidates(env: Option<&OsStr>) -> Vec<PathBuf> {
    match env {
        Some(p) if !p.is_empty() => vec![PathBuf::from(p)],
        _ => SOCKET_PATHS
            .iter()
            .chain([&XENBUS_DEV])
            .map(PathBuf::from)
            .collect(),
    }
}

#[derive(Debug)]
enum Transport {
    Socket(UnixStream),
    Device(File),
}

impl Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Socket(s) => s.read(buf),
            Transport::Device(f) => f.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Transport::Socket(s) => s.write_all(buf),
            Transport::Device(f) => f.write_all(buf),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Socket(s) => s.as_fd(),
            Transport::Device(f) => f.as_fd(),
        }
    }
}

/// A connection to xenstore. See the module docs for threading.
#[derive(Debug)]
pub struct XsClient {
    conn: Transport,
    endpoint: PathBuf,
    dec: Decoder,
    events: VecDeque<WatchEvent>,
    next_req_id: u32,
    out: Vec<u8>,
    /// Set once the stream lost its framing or closed: every later call is `Disconnected`.
    broken: bool,
    /// How long a request may wait for its reply (`None`: as long as it takes).
    timeout: Option<std::time::Duration>,
}

impl XsClient {
    /// Connects to xenstore: `$XENSTORED_PATH` if set, else xenstored's socket
    /// ([`SOCKET_PATHS`]), else [`XENBUS_DEV`]. The error says what is missing and what to do.
    pub fn open() -> Result<Self> {
        let env = std::env::var_os(PATH_ENV);
        let paths = candidates(env.as_deref());
        let mut first_err = None;
        for path in &paths {
            match Self::try_connect(path) {
                Ok(c) => return Ok(c),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert_with(|| connect_error(path, &e));
                }
            }
        }
        Err(first_err.unwrap_or_else(|| {
            let list: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
            let via = if env.is_some() {
                format!(" (from {PATH_ENV})")
            } else {
                String::new()
            };
            Error::Unavailable {
                what: format!("no xenstore at {}{via}", list.join(" or ")),
                hint: HINT_RUNNING,
            }
        }))
    }

    /// Connects to the xenstored socket or xenbus device at `path` (a socket is connected to,
    /// anything else opened read-write).
    pub fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::try_connect(path).map_err(|e| connect_error(path, &e))
    }

    fn try_connect(path: &Path) -> io::Result<Self> {
        let conn = if std::fs::metadata(path)?.file_type().is_socket() {
            Transport::Socket(UnixStream::connect(path)?)
        } else {
            Transport::Device(OpenOptions::new().read(true).write(true).open(path)?)
        };
        Ok(XsClient {
            conn,
            endpoint: path.to_owned(),
            dec: Decoder::new(),
            events: VecDeque::new(),
            next_req_id: 1,
            out: Vec::with_capacity(wire::HEADER_LEN + PAYLOAD_MAX),
            broken: false,
            timeout: None,
        })
    }

    /// The socket or device this client is connected to.
    pub fn endpoint(&self) -> &Path {
        &self.endpoint
    }

    /// Reads a node's value.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>> {
        self.do_read(0, path)
    }

    /// Reads a node's value as UTF-8 text.
    pub fn read_string(&mut self, path: &str) -> Result<String> {
        to_string(self.read(path)?)
    }

    /// Writes a node's value, creating it and missing parents.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<()> {
        self.do_write(0, path, value)
    }

    /// The leaf names of a node's children.
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>> {
        self.do_directory(0, path)
    }

    /// Creates a node (and missing parents) with an empty value if it does not exist.
    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        self.do_ok(0, &Request::Mkdir { path })
    }

    /// Removes a node and everything below it (no error if it does not exist).
    pub fn rm(&mut self, path: &str) -> Result<()> {
        self.do_ok(0, &Request::Rm { path })
    }

    /// A node's permissions: owner entry first, then the ACL.
    pub fn get_permissions(&mut self, path: &str) -> Result<Vec<Perm>> {
        self.do_get_perms(0, path)
    }

    /// Replaces a node's permissions (owner entry first).
    pub fn set_permissions(&mut self, path: &str, perms: &[Perm]) -> Result<()> {
        self.do_ok(
            0,
            &Request::SetPerms {
                path,
                perms: perms.into(),
            },
        )
    }

    /// Registers a watch on `path` and everything below it. xenstored fires it once right away;
    /// events are collected with [`XsClient::read_watch`].
    pub fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        self.do_ok(0, &Request::Watch { path, token })
    }

    /// Removes a watch. Events it fired before the reply may still be queued.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        self.do_ok(0, &Request::Unwatch { path, token })
    }

    /// The next watch event: a queued one, else one read within `timeout` (`None`: wait as long
    /// as it takes; `Some(Duration::ZERO)`: only what is already there). `Ok(None)` on timeout.
    pub fn read_watch(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        if let Some(ev) = self.events.pop_front() {
            return Ok(Some(ev));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let Some(msg) = self.next_message(deadline)? else {
            return Ok(None);
        };
        if msg.msg_type() == Some(MsgType::WatchEvent) {
            return Ok(Some(WatchEvent::parse(&msg.payload)?));
        }
        self.broken = true;
        Err(WireError::Malformed {
            ty: msg.header.ty,
            why: "a reply arrived with no request outstanding",
        }
        .into())
    }

    /// Whether watch events (or a whole message) are already buffered in this process, where
    /// polling [`AsFd::as_fd`] would not see them: drain with `read_watch(Some(ZERO))` before
    /// sleeping in `poll`.
    pub fn has_buffered_events(&self) -> bool {
        !self.events.is_empty() || self.dec.has_message()
    }

    /// Runs `f` in a transaction and commits it, retrying the whole of `f` when xenstored
    /// reports a conflict (`EAGAIN`, at commit or inside), at most [`MAX_TX_ATTEMPTS`] times.
    /// If `f` fails the transaction is aborted and its error returned. `f` may run more than
    /// once, so it should act only through the transaction.
    pub fn transaction<T>(
        &mut self,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        for _ in 0..MAX_TX_ATTEMPTS {
            let id = wire::parse_tx_id(&self.request(0, &Request::TransactionStart)?)?;
            let result = f(&mut Transaction { client: self, id });
            match result {
                Ok(v) => match self.do_ok(id, &Request::TransactionEnd { commit: true }) {
                    Ok(()) => return Ok(v),
                    Err(e) if e.xs_errno() == Some(&XsErrno::Eagain) => continue,
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    // Abort. If that fails too, the original error says more; a broken
                    // connection shows up on the next call.
                    let _ = self.do_ok(id, &Request::TransactionEnd { commit: false });
                    if e.xs_errno() == Some(&XsErrno::Eagain) {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(Error::TransactionConflict {
            attempts: MAX_TX_ATTEMPTS,
        })
    }

    fn do_read(&mut self, tx: u32, path: &str) -> Result<Vec<u8>> {
        self.request(tx, &Request::Read { path })
    }

    fn do_write(&mut self, tx: u32, path: &str, value: &[u8]) -> Result<()> {
        self.do_ok(tx, &Request::Write { path, value })
    }

    fn do_directory(&mut self, tx: u32, path: &str) -> Result<Vec<String>> {
        Ok(wire::parse_directory(
            &self.request(tx, &Request::Directory { path })?,
        )?)
    }

    fn do_get_perms(&mut self, tx: u32, path: &str) -> Result<Vec<Perm>> {
        Ok(wire::parse_perms(
            &self.request(tx, &Request::GetPerms { path })?,
        )?)
    }

    fn do_ok(&mut self, tx: u32, req: &Request<'_>) -> Result<()> {
        let payload = self.request(tx, req)?;
        Ok(wire::parse_ok(req.msg_type(), &payload)?)
    }

    /// Gives every later request a deadline: a reply not in by then fails the request with
    /// [`Error::Timeout`] and leaves the connection broken (a late reply could not be told
    /// apart from a reply to a later request), so its owner connects again.
    pub fn set_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.timeout = timeout;
    }

    /// Sends `req` and returns its reply's payload, queueing watch events that come first.
    fn request(&mut self, tx_id: u32, req: &Request<'_>) -> Result<Vec<u8>> {
        if self.broken {
            return Err(Error::Disconnected);
        }
        let req_id = self.next_req_id;
        // 0 is what watch events carry; never use it for a request.
        self.next_req_id = self.next_req_id.checked_add(1).unwrap_or(1);
        self.out.clear();
        // A request refused here was never sent: the connection stays usable.
        req.encode(req_id, tx_id, &mut self.out)?;
        if let Err(e) = self.conn.write_all(&self.out) {
            self.broken = true;
            return Err(Error::os("write to xenstore", &e, XS_IO_HINT));
        }
        let deadline = self.timeout.map(|t| (Instant::now() + t, t));
        loop {
            let Some(msg) = self.next_message(deadline.map(|d| d.0))? else {
                if let Some((at, after)) = deadline
                    && Instant::now() >= at
                {
                    self.broken = true;
                    return Err(Error::Timeout { after });
                }
                continue;
            };
            let ty = msg.msg_type();
            if ty == Some(MsgType::WatchEvent) {
                self.events.push_back(WatchEvent::parse(&msg.payload)?);
            } else if msg.header.req_id != req_id {
                self.broken = true;
                return Err(WireError::Malformed {
                    ty: msg.header.ty,
                    why: "a reply to a request that was not sent",
                }
                .into());
            } else if ty == Some(MsgType::Error) {
                return Err(Error::Xenstore {
                    op: req.msg_type(),
                    path: req.path().unwrap_or_default().to_owned(),
                    errno: XsErrno::parse(&msg.payload),
                });
            } else if ty == Some(req.msg_type()) {
                return Ok(msg.payload);
            } else {
                self.broken = true;
                return Err(WireError::UnexpectedReply {
                    expected: req.msg_type().raw(),
                    got: msg.header.ty,
                }
                .into());
            }
        }
    }

    /// The next whole message, reading as needed until `deadline` (`None`: block).
    fn next_message(&mut self, deadline: Option<Instant>) -> Result<Option<Message>> {
        if self.broken {
            return Err(Error::Disconnected);
        }
        let mut buf = [0u8; PAYLOAD_MAX];
        loop {
            match self.dec.next_message() {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e.into());
                }
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                let ready = sys::poll_readable(self.conn.as_fd(), Some(left))
                    .map_err(|e| Error::os("poll on xenstore", &e, POLL_HINT))?;
                if !ready {
                    return Ok(None);
                }
            }
            match self.conn.read(&mut buf) {
                Ok(0) => {
                    self.broken = true;
                    return Err(Error::Disconnected);
                }
                Ok(n) => self.dec.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.broken = true;
                    return Err(Error::os("read from xenstore", &e, XS_IO_HINT));
                }
            }
        }
    }
}

impl AsFd for XsClient {
    /// The connection's descriptor, readable when watch events (or anything else) arrive. Check
    /// [`XsClient::has_buffered_events`] before sleeping on it.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.as_fd()
    }
}

/// An open transaction, handed to the closure of [`XsClient::transaction`].
#[derive(Debug)]
pub struct Transaction<'c> {
    client: &'c mut XsClient,
    id: u32,
}

impl Transaction<'_> {
    /// The transaction id xenstored assigned.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// [`XsClient::read`] within the transaction.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>> {
        self.client.do_read(self.id, path)
    }

    /// [`XsClient::read_string`] within the transaction.
    pub fn read_string(&mut self, path: &str) -> Result<String> {
        to_string(self.read(path)?)
    }

    /// [`XsClient::write`] within the transaction.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<()> {
        self.client.do_write(self.id, path, value)
    }

    /// [`XsClient::directory`] within the transaction.
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>> {
        self.client.do_directory(self.id, path)
    }

    /// [`XsClient::mkdir`] within the transaction.
    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        self.client.do_ok(self.id, &Request::Mkdir { path })
    }

    /// [`XsClient::rm`] within the transaction.
    pub fn rm(&mut self, path: &str) -> Result<()> {
        self.client.do_ok(self.id, &Request::Rm { path })
    }

    /// [`XsClient::get_permissions`] within the transaction.
    pub fn get_permissions(&mut self, path: &str) -> Result<Vec<Perm>> {
        self.client.do_get_perms(self.id, path)
    }

    /// [`XsClient::set_permissions`] within the transaction.
    pub fn set_permissions(&mut self, path: &str, perms: &[Perm]) -> Result<()> {
        self.client.do_ok(
            self.id,
            &Request::SetPerms {
                path,
                perms: perms.into(),
            },
        )
    }
}

fn to_string(v: Vec<u8>) -> Result<String> {
    String::from_utf8(v).map_err(|_| WireError::NotUtf8 { what: "value" }.into())
}

fn connect_error(path: &Path, e: &io::Error) -> Error {
    let p = path.display();
    let (what, hint) = match e.raw_os_error() {
        Some(libc::ENOENT) => (format!("no xenstore at {p}"), HINT_RUNNING),
        Some(libc::ECONNREFUSED) => (format!("nothing listens on {p}"), HINT_RUNNING),
        Some(libc::EACCES | libc::EPERM) => (
            format!("permission denied on {p}"),
            "run as root in dom0 (or a driver domain with xenstore access)",
        ),
        _ => (
            format!("cannot connect to xenstore at {p}: {e}"),
            HINT_RUNNING,
        ),
    };
    Error::Unavailable { what, hint }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
