//! The double's event channels: every port of the machine in one mutex-guarded map, one
//! condvar for every waiter.
//!
//! A port belongs to the handle that allocated or bound it, and only that handle's `wait`
//! delivers it. Delivery clears the pending bit and masks the port until the handle unmasks it
//! (late EOI); an event arriving meanwhile stays pending and is delivered after the unmask.
//! Binding marks the new local port pending, as Xen's `EVTCHNOP_bind_interdomain` does. There
//! is deliberately no descriptor (`as_fd` is `None`), so drivers take their fallback wait path.

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Machine;
use crate::error::{Error, Result};
use crate::traits::EventChannel;
use crate::types::{DOMID_SELF, DomId, NR_EVENT_CHANNELS, Port};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// Allocated for this domain to bind to.
    Unbound(DomId),
    /// Connected to this domain's port.
    Bound(DomId, Port),
}

#[derive(Debug, Clone, Copy)]
struct PortState {
    handle: u64,
    peer: Peer,
    pending: bool,
    masked: bool,
}

#[derive(Debug, Default)]
struct Ports {
    /// Every port of every domain, by (domain, port).
    ports: BTreeMap<(DomId, u32), PortState>,
    next_handle: u64,
    /// Events delivered by waits, per domain.
    delivered: BTreeMap<DomId, u64>,
}

impl Ports {
    fn alloc(&mut self, domid: DomId, handle: u64, peer: Peer) -> Result<Port> {
        let p = (1..NR_EVENT_CHANNELS as u32)
            .find(|p| !self.ports.contains_key(&(domid, *p)))
            .ok_or(Error::NoFreePort)?;
        let st = PortState {
            handle,
            peer,
            pending: false,
            masked: false,
        };
        self.ports.insert((domid, p), st);
        Ok(Port(p))
    }

    /// Closes a port; its peer, if bound to it, becomes unbound (waiting for us again).
    fn close(&mut self, domid: DomId, port: Port) {
        if let Some(PortState {
            peer: Peer::Bound(rd, rp),
            ..
        }) = self.ports.remove(&(domid, port.0))
            && let Some(r) = self.ports.get_mut(&(rd, rp.0))
            && r.peer == Peer::Bound(domid, port)
        {
            r.peer = Peer::Unbound(domid);
        }
    }
}

/// Every event channel of the machine.
#[derive(Debug, Default)]
pub(super) struct Events {
    ports: Mutex<Ports>,
    /// Woken whenever a port may have become deliverable.
    cond: Condvar,
}

impl Events {
    fn lock(&self) -> MutexGuard<'_, Ports> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ports_in_use(&self, domid: DomId) -> usize {
        self.lock()
            .ports
            .keys()
            .filter(|(d, _)| *d == domid)
            .count()
    }

    pub fn masked_ports(&self, domid: DomId) -> usize {
        let p = self.lock();
        p.ports
            .iter()
            .filter(|((d, _), s)| *d == domid && s.masked)
            .count()
    }

    pub fn delivered(&self, domid: DomId) -> u64 {
        self.lock().delivered.get(&domid).copied().unwrap_or(0)
    }
}

/// An event-channel handle of one domain; dropping it closes its ports.
pub struct Evtchn {
    m: Arc<Machine>,
    domid: DomId,
    id: u64,
}

impl std::fmt::Debug for Evtchn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evtchn")
            .field("domid", &self.domid)
            .field("id", &self.id)
            .finish()
    }
}

impl Evtchn {
    pub(super) fn new(m: Arc<Machine>, domid: DomId) -> Self {
        let id = {
            let mut p = m.events.lock();
            p.next_handle += 1;
            p.next_handle
        };
        Self { m, domid, id }
    }

    fn lock(&self) -> MutexGuard<'_, Ports> {
        self.m.events.lock()
    }

    /// One of this handle's ports.
    fn owned<'a>(&self, p: &'a mut Ports, port: Port) -> Result<&'a mut PortState> {
        p.ports
            .get_mut(&(self.domid, port.0))
            .filter(|s| s.handle == self.id)
            .ok_or(Error::BadPort(port))
    }
}

impl EventChannel for Evtchn {
    fn alloc_unbound(&self, remote: DomId) -> Result<Port> {
        let remote = if remote == DOMID_SELF {
            self.domid
        } else {
            remote
        };
        self.lock()
            .alloc(self.domid, self.id, Peer::Unbound(remote))
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port> {
        let remote = if remote == DOMID_SELF {
            self.domid
        } else {
            remote
        };
        let mut p = self.lock();
        let bindable = p
            .ports
            .get(&(remote, remote_port.0))
            .is_some_and(|s| s.peer == Peer::Unbound(self.domid));
        if !bindable {
            return Err(Error::PortNotBindable {
                remote,
                port: remote_port,
            });
        }
        let local = p.alloc(self.domid, self.id, Peer::Bound(remote, remote_port))?;
        if let Some(r) = p.ports.get_mut(&(remote, remote_port.0)) {
            r.peer = Peer::Bound(self.domid, local);
        }
        // As Xen: the new port starts pending, so a bound driver looks at its rings at once.
        if let Some(l) = p.ports.get_mut(&(self.domid, local.0)) {
            l.pending = true;
        }
        self.m.events.cond.notify_all();
        Ok(local)
    }

    fn unbind(&self, port: Port) -> Result<()> {
        let mut p = self.lock();
        self.owned(&mut p, port)?;
        p.close(self.domid, port);
        Ok(())
    }

    fn notify(&self, port: Port) -> Result<()> {
        let mut p = self.lock();
        let Peer::Bound(rd, rp) = self.owned(&mut p, port)?.peer else {
            return Ok(()); // unbound: nobody to tell, as in Xen
        };
        if let Some(r) = p.ports.get_mut(&(rd, rp.0))
            && r.peer == Peer::Bound(self.domid, port)
        {
            r.pending = true;
            if !r.masked {
                self.m.events.cond.notify_all();
            }
        }
        Ok(())
    }

    fn wait(&self, timeout: Option<Duration>, pending: &mut Vec<Port>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut p = self.lock();
        loop {
            let before = pending.len();
            for (&(d, port), s) in p.ports.iter_mut() {
                if d == self.domid && s.handle == self.id && s.pending && !s.masked {
                    s.pending = false;
                    s.masked = true;
                    pending.push(Port(port));
                }
            }
            let n = (pending.len() - before) as u64;
            if n > 0 {
                *p.delivered.entry(self.domid).or_default() += n;
                return Ok(());
            }
            p = match deadline {
                None => self
                    .m
                    .events
                    .cond
                    .wait(p)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(dl) => {
                    let now = Instant::now();
                    if now >= dl {
                        return Ok(());
                    }
                    self.m
                        .events
                        .cond
                        .wait_timeout(p, dl - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    fn unmask(&self, ports: &[Port]) -> Result<()> {
        let mut p = self.lock();
        let mut first_err = None;
        for &port in ports {
            match self.owned(&mut p, port) {
                Ok(s) => {
                    s.masked = false;
                    if s.pending {
                        self.m.events.cond.notify_all();
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// None: the double has no descriptors, so callers use [`EventChannel::wait`].
    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl Drop for Evtchn {
    fn drop(&mut self) {
        let mut p = self.lock();
        let mine: Vec<u32> = p
            .ports
            .iter()
            .filter(|((d, _), s)| *d == self.domid && s.handle == self.id)
            .map(|((_, port), _)| *port)
            .collect();
        for port in mine {
            p.close(self.domid, Port(port));
        }
    }
}
