//! Xenstore: a hierarchical key store with per-node permissions and watches.
//!
//! Permissions follow xenstored: each node has an owner (full access), a default for everyone
//! else, and an ACL of (domid, perm). Domain 0 may do anything. A new node inherits its parent's
//! permissions, with the creator as owner if it is unprivileged. `/local/domain/<id>` is created
//! owned by `<id>`, and everything above it by dom0, so a guest can write only under its own
//! directory (which holds its backend directories too) unless dom0 grants more.
//! Watches fire (path, token) for changes at or below the watched path, once right after
//! registration (as xenstored does), and for `@introduceDomain` / `@releaseDomain`.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use std::time::Duration;

use crate::efd::EventFd;
use crate::machine::Machine;
use hypervisor::error::{Error, Result};
use hypervisor::types::{DomId, WatchEvent, XsPerm, XsPermLevel};
use hypervisor::xenbus::{VifConfig, VifPaths};

#[derive(Debug, Clone)]
struct Node {
    value: String,
    perms: Vec<XsPerm>,
}

#[derive(Debug)]
struct WatchReg {
    conn: u64,
    domid: DomId,
    path: String,
    token: String,
    tx: Sender<WatchEvent>,
    sig: Arc<WatchSignal>,
}

#[derive(Debug)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    watches: Vec<WatchReg>,
}

/// The store.
#[derive(Debug)]
pub(crate) struct Store {
    tree: Mutex<Tree>,
    next_conn: AtomicU64,
    /// Faults a test injects into one domain's connections (a slow or dead xenstored).
    faults: Mutex<Faults>,
}

/// A slow or dead xenstored, as seen by the connections of one domain (never the toolstack's
/// own, `Hypervisor::xenstore`): every request waits `delay` first; while `down`, every request
/// fails with `XsDisconnected`; a connection made before the last restart stays broken (as a
/// socket to a xenstored that died), so its owner must connect again and re-register its
/// watches.
#[derive(Debug, Default)]
struct Faults {
    domid: Option<DomId>,
    delay: Duration,
    down: bool,
    /// Restarts so far: a connection older than the last one is broken for good.
    epoch: u64,
}

fn dom0_perms(others: XsPermLevel) -> Vec<XsPerm> {
    vec![XsPerm {
        domid: 0,
        perm: others,
    }]
}

fn is_under(path: &str, top: &str) -> bool {
    path == top
        || top == "/"
        || (path.starts_with(top) && path.as_bytes().get(top.len()) == Some(&b'/'))
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(i) if i > 0 => Some(&path[..i]),
        _ => None,
    }
}

fn validate(path: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-/_@".contains(c);
    let special = path.starts_with('@') && path[1..].chars().all(|c| c.is_ascii_alphanumeric());
    let ok = special
        || path == "/"
        || (path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains("//")
            && path.len() <= 3072
            && path.chars().all(ok_char));
    if ok {
        Ok(())
    } else {
        Err(Error::XsInvalidPath(path.to_string()))
    }
}

impl Tree {
    fn perm(&self, path: &str, domid: DomId) -> XsPermLevel {
        let Some(n) = self.nodes.get(path) else {
            return XsPermLevel::None;
        };
        let owner = n.perms.first().map(|p| p.domid).unwrap_or(0);
        if domid == 0 || domid == owner {
            return XsPermLevel::Both;
        }
        n.perms[1..]
            .iter()
            .find(|p| p.domid == domid)
            .or(n.perms.first())
            .map(|p| p.perm)
            .unwrap_or(XsPermLevel::None)
    }

    fn check(&self, path: &str, domid: DomId, write: bool) -> Result<()> {
        let p = self.perm(path, domid);
        if (write && p.can_write()) || (!write && p.can_read()) {
            Ok(())
        } else {
            Err(Error::XsPermissionDenied {
                domid,
                path: path.to_string(),
                access: if write { "write" } else { "read" },
            })
        }
    }

    /// Creates `path` and missing ancestors (needs write access to the nearest existing one).
    fn create(&mut self, path: &str, domid: DomId) -> Result<Vec<String>> {
        let mut missing = vec![];
        let mut p = path;
        while !self.nodes.contains_key(p) {
            missing.push(p.to_string());
            p = parent(p).ok_or_else(|| Error::XsInvalidPath(path.to_string()))?;
        }
        self.check(p, domid, true)?;
        let mut perms = self
            .nodes
            .get(p)
            .map(|n| n.perms.clone())
            .unwrap_or_default();
        if domid != 0
            && let Some(first) = perms.first_mut()
        {
            first.domid = domid;
        }
        for m in missing.iter().rev() {
            self.nodes.insert(
                m.clone(),
                Node {
                    value: String::new(),
                    perms: perms.clone(),
                },
            );
        }
        Ok(missing)
    }

    fn fire(&self, path: &str, removed: bool) {
        for w in &self.watches {
            let ev = if is_under(path, &w.path) {
                Some(path)
            } else if removed && is_under(&w.path, path) {
                Some(w.path.as_str())
            } else {
                None
            };
            if let Some(ev) = ev {
                let readable =
                    removed || path.starts_with('@') || self.perm(path, w.domid).can_read();
                if readable {
                    // A dropped receiver just means the connection is going away.
                    let _ = w.tx.send(WatchEvent {
                        path: ev.to_string(),
                        token: w.token.clone(),
                    });
                    w.sig.raise();
                }
            }
        }
    }
}

impl Store {
    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        for p in ["/", "/local", "/local/domain", "/vm", "/tool"] {
            nodes.insert(
                p.to_string(),
                Node {
                    value: String::new(),
                    perms: dom0_perms(XsPermLevel::Read),
                },
            );
        }
        Self {
            tree: Mutex::new(Tree {
                nodes,
                watches: vec![],
            }),
            next_conn: AtomicU64::new(1),
            faults: Mutex::new(Faults::default()),
        }
    }

    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Toolstack: `/local/domain/<id>` owned by the domain; fire `@introduceDomain`.
    pub fn introduce_domain(&self, domid: DomId) {
        let mut t = self.tree();
        let path = format!("/local/domain/{domid}");
        let perms = vec![XsPerm {
            domid,
            perm: XsPermLevel::None,
        }];
        t.nodes.insert(
            path.clone(),
            Node {
                value: String::new(),
                perms: perms.clone(),
            },
        );
        t.nodes.insert(
            format!("{path}/domid"),
            Node {
                value: domid.to_string(),
                perms,
            },
        );
        t.fire(&path, false);
        t.fire("@introduceDomain", false);
    }

    /// Toolstack: removes the domain's directory; fires `@releaseDomain`.
    pub fn release_domain(&self, domid: DomId) {
        let mut t = self.tree();
        let path = format!("/local/domain/{domid}");
        let doomed: Vec<String> = t
            .nodes
            .keys()
            .filter(|k| is_under(k, &path))
            .cloned()
            .collect();
        for k in &doomed {
            t.nodes.remove(k);
        }
        t.fire(&path, true);
        t.fire("@releaseDomain", false);
    }
}

/// A xenstore connection of one domain, with its own watch queue. Its watches are removed when
/// it drops.
#[derive(Debug)]
pub struct XsConnection {
    m: Arc<Machine>,
    domid: DomId,
    /// The toolstack's connection (`Hypervisor::xenstore`): never subject to injected faults.
    toolstack: bool,
    /// The restart epoch it was made in (see `Faults`).
    epoch: u64,
    /// The deadline of each request, in nanoseconds (0: none): only injected delays take time.
    timeout_ns: AtomicU64,
    id: u64,
    tx: Sender<WatchEvent>,
    rx: Mutex<Receiver<WatchEvent>>,
    sig: Arc<WatchSignal>,
}

/// Makes a connection's watch queue pollable: an eventfd (made on the first `as_fd`) written
/// when an event is queued and drained before the queue is read.
#[derive(Debug, Default)]
struct WatchSignal {
    signalled: AtomicBool,
    efd: OnceLock<Option<EventFd>>,
}

impl WatchSignal {
    /// An event was queued (after the send).
    fn raise(&self) {
        if let Some(Some(efd)) = self.efd.get()
            // AcqRel: pairs with the swap in `drain`; one write per drain, and a drain that
            // misses our event leaves the descriptor readable.
            && !self.signalled.swap(true, Ordering::AcqRel)
        {
            efd.signal();
        }
    }

    /// Before reading the queue: clears the readiness an earlier `raise` left.
    fn drain(&self) {
        // AcqRel: pairs with the swap in `raise`.
        if self.signalled.swap(false, Ordering::AcqRel)
            && let Some(Some(efd)) = self.efd.get()
        {
            efd.drain();
        }
    }
}

impl XsConnection {
    pub(crate) fn new(m: Arc<Machine>, domid: DomId, toolstack: bool) -> Self {
        // Relaxed: a unique id, nothing published.
        let id = m.store.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let epoch = m.store.faults().epoch;
        Self {
            m,
            domid,
            toolstack,
            epoch,
            timeout_ns: AtomicU64::new(0),
            id,
            tx,
            rx: Mutex::new(rx),
            sig: Arc::new(WatchSignal::default()),
        }
    }

    /// The connection's domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Gives every request a deadline (`None`: none).
    pub fn set_request_timeout(&self, timeout: Option<Duration>) {
        let ns = timeout.map_or(0, |t| t.as_nanos().clamp(1, u128::from(u64::MAX)) as u64);
        // Relaxed: a setting read by this connection's own requests; nothing else is published.
        self.timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// Each request's deadline.
    pub fn request_timeout(&self) -> Option<Duration> {
        // Relaxed: as in `set_request_timeout`.
        match self.timeout_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// The injected faults, before a request: waits the delay, then fails if xenstored is
    /// down or was restarted since this connection was made. `timeout` bounds the wait: a
    /// request that would take longer fails with `XsTimeout` at the deadline, as a client
    /// with a request deadline sees it.
    pub(crate) fn gate(&self, timeout: Option<Duration>) -> Result<()> {
        if self.toolstack {
            return Ok(());
        }
        let (delay, broken) = {
            let f = self.m.store.faults();
            if f.domid != Some(self.domid) {
                return Ok(());
            }
            (f.delay, f.down || f.epoch != self.epoch)
        };
        if broken {
            return Err(Error::XsDisconnected);
        }
        if delay.is_zero() {
            return Ok(());
        }
        match timeout {
            Some(t) if t < delay => {
                std::thread::sleep(t);
                Err(Error::XsTimeout { after: t })
            }
            _ => {
                std::thread::sleep(delay);
                Ok(())
            }
        }
    }

    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.m.store.tree()
    }

    /// Runs `f` on the node at `path` (and the tree holding it) once this connection is
    /// allowed to read it: a bad path, a missing node and a denied read are errors, checked in
    /// that order.
    fn with_readable<R>(&self, path: &str, f: impl FnOnce(&Tree, &Node) -> R) -> Result<R> {
        validate(path)?;
        let t = self.tree();
        let n = t
            .nodes
            .get(path)
            .ok_or_else(|| Error::XsNoEntry(path.to_string()))?;
        t.check(path, self.domid, false)?;
        Ok(f(&t, n))
    }

    /// Reads a node's value.
    pub fn read(&self, path: &str) -> Result<String> {
        self.with_readable(path, |_, n| n.value.clone())
    }

    /// Writes a node, creating it (and missing parents) if needed.
    pub fn write(&self, path: &str, value: &str) -> Result<()> {
        validate(path)?;
        let mut t = self.tree();
        if t.nodes.contains_key(path) {
            t.check(path, self.domid, true)?;
        } else {
            t.create(path, self.domid)?;
        }
        if let Some(n) = t.nodes.get_mut(path) {
            n.value = value.to_string();
        }
        t.fire(path, false);
        Ok(())
    }

    /// Creates a directory node (no-op if it exists and is writable).
    pub fn mkdir(&self, path: &str) -> Result<()> {
        validate(path)?;
        let mut t = self.tree();
        if t.nodes.contains_key(path) {
            return t.check(path, self.domid, true);
        }
        t.create(path, self.domid)?;
        t.fire(path, false);
        Ok(())
    }

    /// Removes a node and its subtree.
    pub fn rm(&self, path: &str) -> Result<()> {
        validate(path)?;
        let mut t = self.tree();
        if !t.nodes.contains_key(path) {
            return Err(Error::XsNoEntry(path.to_string()));
        }
        t.check(path, self.domid, true)?;
        if path == "/" {
            return Err(Error::XsInvalidPath(path.to_string()));
        }
        let doomed: Vec<String> = t
            .nodes
            .keys()
            .filter(|k| is_under(k, path))
            .cloned()
            .collect();
        for k in &doomed {
            t.nodes.remove(k);
        }
        t.fire(path, true);
        Ok(())
    }

    /// The names of a node's children.
    pub fn directory(&self, path: &str) -> Result<Vec<String>> {
        self.with_readable(path, |t, _| {
            let prefix = if path == "/" {
                "/".to_string()
            } else {
                format!("{path}/")
            };
            t.nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter(|(k, _)| !k[prefix.len()..].contains('/') && k.len() > prefix.len())
                .map(|(k, _)| k[prefix.len()..].to_string())
                .collect()
        })
    }

    /// The node's permissions (owner/default first, then the ACL).
    pub fn get_permissions(&self, path: &str) -> Result<Vec<XsPerm>> {
        self.with_readable(path, |_, n| n.perms.clone())
    }

    /// Sets a node's permissions (owner or dom0 only).
    pub fn set_permissions(&self, path: &str, perms: &[XsPerm]) -> Result<()> {
        validate(path)?;
        let mut t = self.tree();
        let owner = t
            .nodes
            .get(path)
            .ok_or_else(|| Error::XsNoEntry(path.to_string()))?
            .perms
            .first()
            .map(|p| p.domid);
        if perms.is_empty() || (self.domid != 0 && owner != Some(self.domid)) {
            return Err(Error::XsPermissionDenied {
                domid: self.domid,
                path: path.to_string(),
                access: "set permissions on",
            });
        }
        if let Some(n) = t.nodes.get_mut(path) {
            n.perms = perms.to_vec();
        }
        t.fire(path, false);
        Ok(())
    }

    /// Registers a watch on `path` and its subtree; fires once at once.
    pub fn watch(&self, path: &str, token: &str) -> Result<()> {
        validate(path)?;
        let mut t = self.tree();
        t.watches.push(WatchReg {
            conn: self.id,
            domid: self.domid,
            path: path.to_string(),
            token: token.to_string(),
            tx: self.tx.clone(),
            sig: self.sig.clone(),
        });
        // A dropped receiver cannot happen: we hold it.
        let _ = self.tx.send(WatchEvent {
            path: path.to_string(),
            token: token.to_string(),
        });
        self.sig.raise();
        Ok(())
    }

    /// Removes a watch.
    pub fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        let mut t = self.tree();
        let before = t.watches.len();
        t.watches
            .retain(|w| !(w.conn == self.id && w.path == path && w.token == token));
        if t.watches.len() == before {
            return Err(Error::XsNoWatch {
                path: path.to_string(),
                token: token.to_string(),
            });
        }
        Ok(())
    }

    /// The next watch event, waiting up to `timeout` (`None`: forever). `Ok(None)` on timeout.
    pub fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        self.sig.drain();
        Ok(match timeout {
            // We hold a sender, so recv cannot fail with Disconnected.
            None => rx.recv().ok(),
            // Timeout (or, impossibly, Disconnected) is None.
            Some(t) => rx.recv_timeout(t).ok(),
        })
    }
}

impl XsConnection {
    /// An eventfd that polls readable while a watch event may be queued (made on first use).
    pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        let efd = EventFd::get_or_create(&self.sig.efd, |efd| {
            // Events may have been queued before the descriptor existed: make it readable.
            // Release: pairs with the AcqRel swap in `drain`.
            self.sig.signalled.store(true, Ordering::Release);
            efd.signal();
        })?;
        Some(efd.as_fd())
    }
}

impl Drop for XsConnection {
    fn drop(&mut self) {
        let id = self.id;
        self.tree().watches.retain(|w| w.conn != id);
    }
}

impl crate::machine::Hypervisor {
    /// Makes xenstored answer domain `domid`'s requests only after `delay` (zero: at once), as
    /// an overloaded xenstored would; the toolstack's own connection is not affected.
    pub fn xenstore_delay(&self, domid: DomId, delay: Duration) {
        let mut f = self.m.store.faults();
        f.domid = Some(domid);
        f.delay = delay;
    }

    /// Takes xenstored away from domain `domid`: its requests fail with `XsDisconnected` until
    /// [`Hypervisor::xenstore_restart`], and connections made before then stay broken.
    pub fn xenstore_kill(&self, domid: DomId) {
        let mut f = self.m.store.faults();
        f.domid = Some(domid);
        f.down = true;
    }

    /// xenstored is back (a restart): new connections work; old ones stay broken, so their
    /// owners must connect again and register their watches again.
    pub fn xenstore_restart(&self) {
        let mut f = self.m.store.faults();
        f.down = false;
        f.epoch += 1;
    }

    /// Nodes in the store, for leak checks.
    pub fn xenstore_nodes(&self) -> usize {
        self.m.store.tree().nodes.len()
    }

    /// Watches registered in the store, all connections, for leak checks.
    pub fn xenstore_watches(&self) -> usize {
        self.m.store.tree().watches.len()
    }

    /// Toolstack (libxl): creates a vif's backend and frontend directories with Xen's
    /// permissions (each end owns its directory, the other end may read it) and cross-links
    /// them: `frontend`, `frontend-id`, `backend`, `backend-id`, `handle`, `mac`, `type`,
    /// `online`, `state` = 1 (Initialising) on both.
    pub fn add_vif(
        &self,
        frontend: DomId,
        backend: DomId,
        devid: u32,
        mac: &str,
    ) -> Result<VifPaths> {
        self.add_vif_with(frontend, backend, devid, &VifConfig::new(mac))
    }

    /// As [`Hypervisor::add_vif`], with everything a `vif = [...]` entry configures written
    /// as libxl writes it ([`VifConfig`]: script, bridge, vifname, ip, rate, mtu, type, and an
    /// empty `hotplug-status` when a hotplug script is to be waited for).
    pub fn add_vif_with(
        &self,
        frontend: DomId,
        backend: DomId,
        devid: u32,
        cfg: &VifConfig,
    ) -> Result<VifPaths> {
        let xs = self.xenstore();
        let paths = VifPaths::new(frontend, backend, devid);
        let (be, fe) = (&paths.backend, &paths.frontend);
        xs.mkdir(be)?;
        xs.mkdir(fe)?;
        let be_perms = [
            XsPerm {
                domid: backend,
                perm: XsPermLevel::None,
            },
            XsPerm {
                domid: frontend,
                perm: XsPermLevel::Read,
            },
        ];
        let fe_perms = [
            XsPerm {
                domid: frontend,
                perm: XsPermLevel::None,
            },
            XsPerm {
                domid: backend,
                perm: XsPermLevel::Read,
            },
        ];
        xs.set_permissions(be, &be_perms)?;
        xs.set_permissions(fe, &fe_perms)?;
        for (path, value) in paths.toolstack_nodes_with(frontend, backend, devid, cfg) {
            xs.write(&path, &value)?;
        }
        Ok(paths)
    }
}
