//! [`XenXs`]: a xenstore connection of the seam ([`XenStore`]) over the raw [`XsClient`].
//!
//! The pollable descriptor. The client reads the socket in whole chunks and queues watch
//! events that arrive while it waits for a reply, so an event can sit in this process with
//! the socket no longer readable: polling the socket alone could sleep on an event already
//! here. So [`XenStore::as_fd`] is an epoll descriptor watching two things, level-triggered:
//! the socket (readable when xenstored sends something) and an eventfd that is readable
//! exactly while the client holds buffered events. Every call updates the eventfd before it
//! releases the client, so "readable" means "a watch event may be waiting" whichever side
//! holds it, and `read_watch(Some(ZERO))` collects it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rustix::event::{EventfdFlags, epoll, eventfd};

use super::xs::XsClient;
use super::xs::wire::{Access, Perm, WireError, XsErrno};
use hypervisor::error::{Error, Result};
use hypervisor::traits::XenStore;
use hypervisor::types::{DomId, WatchEvent, XsPerm, XsPermLevel};

#[derive(Debug)]
struct Conn {
    client: XsClient,
    /// Whether `ready` is signalled (saves a syscall when nothing changed).
    signalled: bool,
}

/// A xenstore connection on real Xen. `Send` and `Sync`; calls are serialised (one request is
/// outstanding at a time on a connection), and `read_watch` holds the connection while it
/// waits: open another connection for a thread that must not wait behind it.
#[derive(Debug)]
pub struct XenXs {
    conn: Mutex<Conn>,
    /// Readable while `conn.client` holds buffered watch events.
    ready: OwnedFd,
    /// Watches the socket and `ready`: what `as_fd` hands out.
    epoll: OwnedFd,
    domid: DomId,
}

impl XenXs {
    /// Connects to the xenstored socket or xenbus device at `path`, for domain `domid` (named
    /// in permission errors).
    pub fn connect(path: impl AsRef<Path>, domid: DomId) -> Result<Self> {
        Self::new(XsClient::connect(path)?, domid)
    }

    /// Wraps a connected client.
    pub fn new(client: XsClient, domid: DomId) -> Result<Self> {
        let os = |op, e: rustix::io::Errno| {
            Error::from(super::Error::Os {
                op,
                errno: e.raw_os_error(),
                hint: super::error::FD_HINT,
            })
        };
        let ready = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
            .map_err(|e| os("eventfd for xenstore readiness", e))?;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| os("epoll_create for xenstore readiness", e))?;
        for (fd, tag) in [(client.as_fd(), 0), (ready.as_fd(), 1)] {
            epoll::add(
                &epoll,
                fd,
                epoll::EventData::new_u64(tag),
                epoll::EventFlags::IN,
            )
            .map_err(|e| os("epoll_ctl for xenstore readiness", e))?;
        }
        let xs = XenXs {
            conn: Mutex::new(Conn {
                client,
                signalled: false,
            }),
            ready,
            epoll,
            domid,
        };
        {
            let mut conn = xs.lock();
            xs.sync(&mut conn);
        }
        Ok(xs)
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `ready` readable exactly while the client holds buffered events.
    fn sync(&self, conn: &mut Conn) {
        let want = conn.client.has_buffered_events();
        if want == conn.signalled {
            return;
        }
        // Neither can block (non-blocking, counter far from its limit) nor fail on a valid
        // eventfd; were one to fail, a poller would only wait for its timeout or the socket.
        if want {
            let _ = rustix::io::write(&self.ready, &1u64.to_ne_bytes());
        } else {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&self.ready, &mut b);
        }
        conn.signalled = want;
    }

    /// Runs one client call, then syncs readiness and maps the error.
    fn call<R>(
        &self,
        path: &str,
        access: &'static str,
        f: impl FnOnce(&mut XsClient) -> super::Result<R>,
    ) -> Result<R> {
        let mut conn = self.lock();
        let r = f(&mut conn.client);
        self.sync(&mut conn);
        r.map_err(|e| map_xs_error(e, self.domid, path, access))
    }
}

/// The seam's error for a failed xenstore call on `path`: `ENOENT` is
/// [`Error::XsNoEntry`], `EACCES`/`EPERM` [`Error::XsPermissionDenied`], a path the codec
/// refuses [`Error::XsInvalidPath`]; anything else keeps the raw layer's error.
pub(crate) fn map_xs_error(
    e: super::Error,
    domid: DomId,
    path: &str,
    access: &'static str,
) -> Error {
    match e {
        super::Error::Xenstore {
            errno: XsErrno::Enoent,
            path,
            ..
        } => Error::XsNoEntry(path),
        super::Error::Xenstore {
            errno: XsErrno::Eacces | XsErrno::Eperm,
            path,
            ..
        } => Error::XsPermissionDenied {
            domid,
            path,
            access,
        },
        super::Error::Wire(WireError::EmptyPath | WireError::NulInString { what: "path" }) => {
            Error::XsInvalidPath(path.to_owned())
        }
        e => Error::from(e),
    }
}

fn to_wire(p: &XsPerm) -> Perm {
    Perm {
        domid: p.domid,
        access: match p.perm {
            XsPermLevel::None => Access::None,
            XsPermLevel::Read => Access::Read,
            XsPermLevel::Write => Access::Write,
            XsPermLevel::Both => Access::Both,
        },
    }
}

impl XenStore for XenXs {
    fn read(&self, path: &str) -> Result<String> {
        self.call(path, "read", |c| c.read_string(path))
    }

    fn write(&self, path: &str, value: &str) -> Result<()> {
        self.call(path, "write", |c| c.write(path, value.as_bytes()))
    }

    fn mkdir(&self, path: &str) -> Result<()> {
        self.call(path, "write", |c| c.mkdir(path))
    }

    fn rm(&self, path: &str) -> Result<()> {
        self.call(path, "write", |c| c.rm(path))
    }

    fn directory(&self, path: &str) -> Result<Vec<String>> {
        self.call(path, "read", |c| c.directory(path))
    }

    fn set_permissions(&self, path: &str, perms: &[XsPerm]) -> Result<()> {
        let perms: Vec<Perm> = perms.iter().map(to_wire).collect();
        self.call(path, "write", |c| c.set_permissions(path, &perms))
    }

    fn watch(&self, path: &str, token: &str) -> Result<()> {
        self.call(path, "read", |c| c.watch(path, token))
    }

    fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        self.call(path, "read", |c| c.unwatch(path, token))
            .map_err(|e| match e {
                // xenstored's answer for a watch this connection does not have.
                Error::XsNoEntry(_) => Error::XsNoWatch {
                    path: path.to_owned(),
                    token: token.to_owned(),
                },
                e => e,
            })
    }

    fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        let ev = self.call("", "read", |c| c.read_watch(timeout))?;
        Ok(ev.map(|e| WatchEvent {
            path: e.path,
            token: e.token,
        }))
    }

    fn set_request_timeout(&self, timeout: Option<std::time::Duration>) {
        self.lock().client.set_timeout(timeout);
    }

    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.epoll.as_fd())
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
