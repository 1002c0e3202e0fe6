//! The double's xenstore: one `BTreeMap` of paths to values shared by every connection, and
//! watches.
//!
//! A watch fires once when registered, then for every write, mkdir or removal at or below its
//! path (and, for a removed ancestor, with the watch's own path), as xenstored does. Parents are
//! created on write. Permissions are accepted and ignored. There is deliberately no descriptor.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Machine;
use crate::error::{Error, Result};
use crate::traits::XenStore;
use crate::types::{DomId, WatchEvent, XsPerm};

#[derive(Debug)]
struct Watch {
    conn: u64,
    path: String,
    token: String,
}

#[derive(Debug, Default)]
struct Nodes {
    nodes: BTreeMap<String, String>,
    watches: Vec<Watch>,
    /// Each connection's queue of fired watches.
    queues: BTreeMap<u64, VecDeque<WatchEvent>>,
    next_conn: u64,
}

/// Whether `path` is `top` or below it (whole components).
fn is_under(path: &str, top: &str) -> bool {
    path == top || (path.starts_with(top) && path.as_bytes().get(top.len()) == Some(&b'/'))
}

fn validate(path: &str) -> Result<()> {
    let ok = path.starts_with('@')
        || (path.starts_with('/') && !path.contains("//") && (path == "/" || !path.ends_with('/')));
    if ok {
        Ok(())
    } else {
        Err(Error::XsInvalidPath(path.to_string()))
    }
}

impl Nodes {
    /// Queues an event for every watch at or above `path` (and, if `removed`, for every watch
    /// below it, with the watch's own path).
    fn fire(&mut self, path: &str, removed: bool) {
        for w in &self.watches {
            let ev = if is_under(path, &w.path) {
                path
            } else if removed && is_under(&w.path, path) {
                &w.path
            } else {
                continue;
            };
            if let Some(q) = self.queues.get_mut(&w.conn) {
                q.push_back(WatchEvent {
                    path: ev.to_string(),
                    token: w.token.clone(),
                });
            }
        }
    }

    /// Creates `path` and its missing parents (empty values). A watch on a created parent is
    /// at or above `path`, so firing for `path` alone reaches it.
    fn create(&mut self, path: &str) {
        let mut missing = vec![];
        let mut p = path;
        while p.len() > 1 && !self.nodes.contains_key(p) {
            missing.push(p.to_string());
            p = &p[..p.rfind('/').unwrap_or(0)];
        }
        for m in missing {
            self.nodes.insert(m, String::new());
        }
    }

    fn write(&mut self, path: &str, value: &str) {
        self.create(path);
        self.nodes.insert(path.to_string(), value.to_string());
        self.fire(path, false);
    }

    fn rm(&mut self, path: &str) -> Result<()> {
        if !self.nodes.contains_key(path) {
            return Err(Error::XsNoEntry(path.to_string()));
        }
        self.nodes.retain(|k, _| !is_under(k, path));
        self.fire(path, true);
        Ok(())
    }
}

/// The store every connection shares.
#[derive(Debug, Default)]
pub(super) struct Tree {
    nodes: Mutex<Nodes>,
    /// Woken whenever a watch fires.
    cond: Condvar,
}

impl Tree {
    fn lock(&self) -> MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The toolstack's write (no connection).
    pub fn toolstack_write(&self, path: &str, value: &str) {
        self.lock().write(path, value);
        self.cond.notify_all();
    }

    /// The toolstack's removal of a subtree (nothing if it is not there).
    pub fn toolstack_rm(&self, path: &str) {
        let _ = self.lock().rm(path);
        self.cond.notify_all();
    }

    pub fn watches(&self) -> usize {
        self.lock().watches.len()
    }
}

/// A xenstore connection of one domain, with its own watch queue; its watches go when it drops.
pub struct Store {
    m: Arc<Machine>,
    domid: DomId,
    id: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("domid", &self.domid)
            .field("id", &self.id)
            .finish()
    }
}

impl Store {
    pub(super) fn new(m: Arc<Machine>, domid: DomId) -> Self {
        let id = {
            let mut n = m.store.lock();
            n.next_conn += 1;
            let id = n.next_conn;
            n.queues.insert(id, VecDeque::new());
            id
        };
        Self { m, domid, id }
    }

    fn lock(&self) -> MutexGuard<'_, Nodes> {
        self.m.store.lock()
    }

    /// Runs a change and wakes readers of watches.
    fn change<R>(&self, path: &str, f: impl FnOnce(&mut Nodes) -> Result<R>) -> Result<R> {
        validate(path)?;
        let r = f(&mut self.lock());
        self.m.store.cond.notify_all();
        r
    }
}

impl XenStore for Store {
    fn read(&self, path: &str) -> Result<String> {
        validate(path)?;
        self.lock()
            .nodes
            .get(path)
            .cloned()
            .ok_or_else(|| Error::XsNoEntry(path.to_string()))
    }

    fn write(&self, path: &str, value: &str) -> Result<()> {
        self.change(path, |n| {
            n.write(path, value);
            Ok(())
        })
    }

    fn mkdir(&self, path: &str) -> Result<()> {
        self.change(path, |n| {
            if !n.nodes.contains_key(path) {
                n.create(path);
                n.fire(path, false);
            }
            Ok(())
        })
    }

    fn rm(&self, path: &str) -> Result<()> {
        if path == "/" {
            return Err(Error::XsInvalidPath(path.to_string()));
        }
        self.change(path, |n| n.rm(path))
    }

    fn directory(&self, path: &str) -> Result<Vec<String>> {
        validate(path)?;
        let n = self.lock();
        if !n.nodes.contains_key(path) {
            return Err(Error::XsNoEntry(path.to_string()));
        }
        let prefix = format!("{}/", path.trim_end_matches('/'));
        Ok(n.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| &k[prefix.len()..])
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect())
    }

    /// Accepted and ignored (the path must exist).
    fn set_permissions(&self, path: &str, _perms: &[XsPerm]) -> Result<()> {
        self.read(path).map(drop)
    }

    fn watch(&self, path: &str, token: &str) -> Result<()> {
        let (conn, token) = (self.id, token.to_string());
        self.change(path, |n| {
            if let Some(q) = n.queues.get_mut(&conn) {
                q.push_back(WatchEvent {
                    path: path.to_string(),
                    token: token.clone(),
                });
            }
            n.watches.push(Watch {
                conn,
                path: path.to_string(),
                token,
            });
            Ok(())
        })
    }

    fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        let mut n = self.lock();
        let i = n
            .watches
            .iter()
            .position(|w| w.conn == self.id && w.path == path && w.token == token)
            .ok_or_else(|| Error::XsNoWatch {
                path: path.to_string(),
                token: token.to_string(),
            })?;
        n.watches.remove(i);
        Ok(())
    }

    fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut n = self.lock();
        loop {
            if let Some(ev) = n.queues.get_mut(&self.id).and_then(VecDeque::pop_front) {
                return Ok(Some(ev));
            }
            let cond = &self.m.store.cond;
            n = match deadline {
                None => cond.wait(n).unwrap_or_else(|e| e.into_inner()),
                Some(dl) => {
                    let now = Instant::now();
                    if now >= dl {
                        return Ok(None);
                    }
                    cond.wait_timeout(n, dl - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// None: the double has no descriptors.
    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let mut n = self.lock();
        let id = self.id;
        n.watches.retain(|w| w.conn != id);
        n.queues.remove(&id);
    }
}
