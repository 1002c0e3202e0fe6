//! Event channels (class `event_channel`): interdomain ports with pending and mask bits, owned
//! by handles.
//!
//! A domain's ports live behind one mutex. Each port belongs to the [`EvtchnHandle`] that
//! allocated or bound it (as a port belongs to the `/dev/xen/evtchn` descriptor that bound it in
//! Linux), and only that handle's `wait` delivers it: two drivers in one domain never take each
//! other's events. Delivery masks the port until the handle unmasks it (the late EOI).
//!
//! `notify` sets the remote port's pending bit under the remote domain's lock and, if the port
//! is unmasked and was not pending, wakes its handle: its condvar if a thread waits, and its
//! eventfd if someone asked for one (`as_fd`, for a poll loop). `wait` looks for deliverable
//! ports under the same lock before it sleeps, so a notify can never fall between the check and
//! the sleep (no lost wakeups), and nothing spins. Spurious events are counted (XSA-332,
//! lateeoi): wakeups that find nothing, notifies on masked ports, notifies that coalesce.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use xenoprof::Class;

use crate::domain::{Domain, DomainHandle};
use crate::efd::EventFd;
use hypervisor::error::{Error, Result};
use hypervisor::types::{DOMID_SELF, DomId, NR_EVENT_CHANNELS, Port};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Free,
    Unbound { remote: DomId },
    Interdomain { remote: DomId, remote_port: Port },
}

#[derive(Debug, Clone, Copy)]
struct PortState {
    kind: Kind,
    pending: bool,
    masked: bool,
    /// The handle that owns the port (an index into `Ports::handles`).
    owner: usize,
}

const FREE: PortState = PortState {
    kind: Kind::Free,
    pending: false,
    masked: false,
    owner: usize::MAX,
};

/// What a handle shares with the notifiers of its domain.
#[derive(Debug, Default)]
struct HandleShared {
    cond: Condvar,
    /// Created on the first `as_fd` (`None` if the process is out of descriptors); written when
    /// a port becomes deliverable.
    efd: OnceLock<Option<EventFd>>,
}

#[derive(Debug)]
struct HandleSlot {
    shared: Arc<HandleShared>,
    /// Ports this handle owns.
    ports: Vec<u32>,
    /// Threads blocked in this handle's `wait`.
    waiters: usize,
    /// The eventfd has been written and not yet drained.
    signalled: bool,
}

#[derive(Debug)]
struct Ports {
    ports: Vec<PortState>,
    handles: Vec<Option<HandleSlot>>,
}

impl Ports {
    /// Wakes the owner of port `p`, which just became deliverable.
    fn wake(&mut self, p: usize) {
        let Some(owner) = self.ports.get(p).map(|s| s.owner) else {
            return;
        };
        let Some(Some(h)) = self.handles.get_mut(owner) else {
            return;
        };
        if h.waiters > 0 {
            h.shared.cond.notify_all();
        }
        if !h.signalled
            && let Some(Some(efd)) = h.shared.efd.get()
        {
            // Cannot block (non-blocking, far from the counter's limit); a failure leaves the
            // poller to its timeout, never loses the event (it stays pending).
            efd.signal();
            h.signalled = true;
        }
    }

    fn wake_all(&mut self) {
        for h in self.handles.iter_mut().flatten() {
            h.shared.cond.notify_all();
            if let Some(Some(efd)) = h.shared.efd.get() {
                efd.signal();
                h.signalled = true;
            }
        }
    }
}

/// Event-channel counters of one domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvtchnStats {
    /// Notifies this domain sent.
    pub notifies_sent: u64,
    /// Events that became deliverable on this domain's ports.
    pub events: u64,
    /// Notifies that found the port already pending (coalesced).
    pub coalesced: u64,
    /// Notifies that hit a masked port (delivered later, or spurious).
    pub masked: u64,
    /// Wakeups of `wait` that found nothing deliverable (spurious).
    pub spurious_wakeups: u64,
}

impl EvtchnStats {
    /// Spurious events: masked notifies and empty wakeups.
    pub fn spurious(&self) -> u64 {
        self.masked + self.spurious_wakeups
    }
}

#[derive(Debug, Default)]
struct Counters {
    notifies_sent: AtomicU64,
    events: AtomicU64,
    coalesced: AtomicU64,
    masked: AtomicU64,
    spurious_wakeups: AtomicU64,
}

fn bump(c: &AtomicU64) {
    // Relaxed: statistics only.
    c.fetch_add(1, Ordering::Relaxed);
}

/// A domain's event channels.
#[derive(Debug)]
pub(crate) struct EventChannels {
    inner: Mutex<Ports>,
    stats: Counters,
}

impl EventChannels {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Ports {
                ports: vec![FREE],
                handles: Vec::new(),
            }),
            stats: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ports> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes every port (domain destruction), unbinding the remote ends, and wakes every
    /// handle (their waits then return empty).
    pub fn close_all(&self, d: &Domain) {
        let bound: Vec<(DomId, Port)> = {
            let mut p = self.lock();
            let v = p
                .ports
                .iter()
                .filter_map(|s| match s.kind {
                    Kind::Interdomain {
                        remote,
                        remote_port,
                    } => Some((remote, remote_port)),
                    _ => None,
                })
                .collect();
            p.ports.iter_mut().for_each(|s| *s = FREE);
            for h in p.handles.iter_mut().flatten() {
                h.ports.clear();
            }
            p.wake_all();
            v
        };
        for (remote, rport) in bound {
            if let Some(rd) = d.machine.find_domain(remote) {
                unbind_remote(&rd, rport, d.id);
            }
        }
    }
}

/// The remote end of a closed interdomain port becomes unbound (waiting for `closer` again).
fn unbind_remote(rd: &Domain, rport: Port, closer: DomId) {
    let mut p = rd.evtchn.lock();
    if let Some(s) = p.ports.get_mut(rport.0 as usize)
        && matches!(s.kind, Kind::Interdomain { remote, .. } if remote == closer)
    {
        s.kind = Kind::Unbound { remote: closer };
    }
}

fn alloc_port(p: &mut Ports, kind: Kind, owner: usize) -> Result<Port> {
    let i = match p.ports.iter().skip(1).position(|s| s.kind == Kind::Free) {
        Some(i) => i + 1,
        None if p.ports.len() < NR_EVENT_CHANNELS => {
            p.ports.push(FREE);
            p.ports.len() - 1
        }
        None => return Err(Error::NoFreePort),
    };
    p.ports[i] = PortState {
        kind,
        pending: false,
        masked: false,
        owner,
    };
    if let Some(Some(h)) = p.handles.get_mut(owner) {
        h.ports.push(i as u32);
    }
    Ok(Port(i as u32))
}

/// An event-channel handle of one domain (a `/dev/xen/evtchn` descriptor): the ports it
/// allocates or binds are delivered to it alone. Dropping it closes them.
pub struct EvtchnHandle {
    d: Arc<Domain>,
    id: usize,
    shared: Arc<HandleShared>,
}

impl std::fmt::Debug for EvtchnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvtchnHandle")
            .field("domid", &self.d.id)
            .field("id", &self.id)
            .finish()
    }
}

impl DomainHandle {
    /// Opens an event-channel handle for this domain.
    pub fn open_evtchn(&self) -> EvtchnHandle {
        let shared = Arc::new(HandleShared::default());
        let mut p = self.d.evtchn.lock();
        let slot = HandleSlot {
            shared: shared.clone(),
            ports: Vec::new(),
            waiters: 0,
            signalled: false,
        };
        let id = match p.handles.iter().position(Option::is_none) {
            Some(i) => {
                p.handles[i] = Some(slot);
                i
            }
            None => {
                p.handles.push(Some(slot));
                p.handles.len() - 1
            }
        };
        EvtchnHandle {
            d: self.d.clone(),
            id,
            shared,
        }
    }

    /// This domain's event-channel counters.
    pub fn evtchn_stats(&self) -> EvtchnStats {
        let c = &self.d.evtchn.stats;
        // Relaxed: statistics.
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EvtchnStats {
            notifies_sent: l(&c.notifies_sent),
            events: l(&c.events),
            coalesced: l(&c.coalesced),
            masked: l(&c.masked),
            spurious_wakeups: l(&c.spurious_wakeups),
        }
    }

    /// Ports of this domain in use (allocated or bound), for leak checks.
    pub fn evtchn_ports_in_use(&self) -> usize {
        let p = self.d.evtchn.lock();
        p.ports.iter().filter(|s| s.kind != Kind::Free).count()
    }
}

impl EvtchnHandle {
    fn resolve(&self, d: DomId) -> DomId {
        if d == DOMID_SELF { self.d.id } else { d }
    }

    /// The domain this handle belongs to.
    pub fn domid(&self) -> DomId {
        self.d.id
    }

    /// `EVTCHNOP_alloc_unbound`: a port `remote` may bind to.
    pub fn alloc_unbound(&self, remote: DomId) -> Result<Port> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let remote = self.resolve(remote);
        alloc_port(&mut self.d.evtchn.lock(), Kind::Unbound { remote }, self.id)
    }

    /// `EVTCHNOP_bind_interdomain`: connects a new local port to `remote`'s unbound port.
    pub fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let me = self.d.id;
        let remote = self.resolve(remote);
        let not_bindable = Error::PortNotBindable {
            remote,
            port: remote_port,
        };
        let bindable =
            |s: Option<&PortState>| matches!(s, Some(s) if s.kind == Kind::Unbound { remote: me });
        if remote == me {
            let mut p = self.d.evtchn.lock();
            if !bindable(p.ports.get(remote_port.0 as usize)) {
                return Err(not_bindable);
            }
            let local = alloc_port(
                &mut p,
                Kind::Interdomain {
                    remote: me,
                    remote_port,
                },
                self.id,
            )?;
            p.ports[remote_port.0 as usize].kind = Kind::Interdomain {
                remote: me,
                remote_port: local,
            };
            return Ok(local);
        }
        let rd = self
            .d
            .machine
            .find_domain(remote)
            .ok_or(Error::NoSuchDomain(remote))?;
        // Lock both domains in domid order (Xen's double_evtchn_lock) to avoid deadlock.
        let (mut lp, mut rp);
        if me < remote {
            lp = self.d.evtchn.lock();
            rp = rd.evtchn.lock();
        } else {
            rp = rd.evtchn.lock();
            lp = self.d.evtchn.lock();
        }
        if !bindable(rp.ports.get(remote_port.0 as usize)) {
            return Err(not_bindable);
        }
        let local = alloc_port(
            &mut lp,
            Kind::Interdomain {
                remote,
                remote_port,
            },
            self.id,
        )?;
        rp.ports[remote_port.0 as usize].kind = Kind::Interdomain {
            remote: me,
            remote_port: local,
        };
        Ok(local)
    }

    /// The state of one of this handle's ports.
    fn owned<'a>(&self, p: &'a mut Ports, port: Port) -> Result<&'a mut PortState> {
        match p.ports.get_mut(port.0 as usize) {
            Some(s) if s.kind != Kind::Free && s.owner == self.id => Ok(s),
            _ => Err(Error::BadPort(port)),
        }
    }

    /// `EVTCHNOP_send`: marks the remote end pending and wakes its handle if unmasked. A notify
    /// on an unbound port does nothing, as in Xen.
    pub fn notify(&self, port: Port) -> Result<()> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let me = self.d.id;
        let kind = self.owned(&mut self.d.evtchn.lock(), port)?.kind;
        let Kind::Interdomain {
            remote,
            remote_port: rport,
        } = kind
        else {
            return Ok(());
        };
        bump(&self.d.evtchn.stats.notifies_sent);
        let rd = if remote == me {
            self.d.clone()
        } else {
            match self.d.machine.find_domain(remote) {
                Some(d) => d,
                None => return Ok(()), // the peer is gone; Xen drops the event too
            }
        };
        let ev = &rd.evtchn;
        let mut p = ev.lock();
        let Some(s) = p.ports.get_mut(rport.0 as usize) else {
            return Ok(());
        };
        if s.kind
            != (Kind::Interdomain {
                remote: me,
                remote_port: port,
            })
        {
            return Ok(()); // closed or rebound meanwhile
        }
        let was = std::mem::replace(&mut s.pending, true);
        if s.masked {
            bump(&ev.stats.masked);
        } else if was {
            bump(&ev.stats.coalesced);
        } else {
            bump(&ev.stats.events);
            p.wake(rport.0 as usize);
        }
        Ok(())
    }

    /// Unmasks ports of this handle; one with an event pending is delivered again.
    pub fn unmask(&self, ports: &[Port]) -> Result<()> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let mut p = self.d.evtchn.lock();
        let mut first_err = None;
        for &port in ports {
            match self.owned(&mut p, port) {
                Ok(s) => {
                    let was = std::mem::replace(&mut s.masked, false);
                    if was && s.pending {
                        p.wake(port.0 as usize);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Masks a port of this handle: events stay pending and are not delivered until unmasked.
    pub fn mask(&self, port: Port) -> Result<()> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        self.owned(&mut self.d.evtchn.lock(), port)?.masked = true;
        Ok(())
    }

    /// Whether a port of this handle has an event pending (delivered or not).
    pub fn is_pending(&self, port: Port) -> Result<bool> {
        Ok(self.owned(&mut self.d.evtchn.lock(), port)?.pending)
    }

    /// `EVTCHNOP_close`: frees a port of this handle; the remote end becomes unbound.
    pub fn unbind(&self, port: Port) -> Result<()> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let me = self.d.id;
        let kind = {
            let mut p = self.d.evtchn.lock();
            let kind = std::mem::replace(self.owned(&mut p, port)?, FREE).kind;
            if let Some(Some(h)) = p.handles.get_mut(self.id) {
                h.ports.retain(|q| *q != port.0);
            }
            if let Kind::Interdomain {
                remote,
                remote_port,
            } = kind
                && remote == me
                && let Some(s) = p.ports.get_mut(remote_port.0 as usize)
                && s.kind
                    == (Kind::Interdomain {
                        remote: me,
                        remote_port: port,
                    })
            {
                s.kind = Kind::Unbound { remote: me };
            }
            kind
        };
        if let Kind::Interdomain {
            remote,
            remote_port,
        } = kind
            && remote != me
            && let Some(rd) = self.d.machine.find_domain(remote)
        {
            unbind_remote(&rd, remote_port, me);
        }
        Ok(())
    }

    /// Blocks until a port of this handle is deliverable (pending and unmasked), or `timeout`
    /// passes (`None`: no limit). Appends the deliverable ports to `out`, clearing their
    /// pending bits and masking them (the upcall's scan); they stay masked until
    /// [`EvtchnHandle::unmask`]. Returns at once, delivering nothing, once the domain has been
    /// destroyed. Several threads may wait on one handle; each port goes to one of them.
    pub fn wait(&self, timeout: Option<Duration>, out: &mut Vec<Port>) -> Result<()> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let ev = &self.d.evtchn;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut p = ev.lock();
        let mut woke = false;
        loop {
            let Ports { ports, handles } = &mut *p;
            let Some(Some(h)) = handles.get_mut(self.id) else {
                return Ok(());
            };
            let before = out.len();
            for &i in &h.ports {
                if let Some(s) = ports.get_mut(i as usize)
                    && s.pending
                    && !s.masked
                {
                    s.pending = false;
                    s.masked = true;
                    out.push(Port(i));
                }
            }
            // Nothing of ours is deliverable any more: drain the eventfd so a poll loop does not
            // see a stale readiness.
            if h.signalled {
                h.signalled = false;
                if let Some(Some(efd)) = h.shared.efd.get() {
                    efd.drain();
                }
            }
            if out.len() > before {
                return Ok(());
            }
            if woke {
                bump(&ev.stats.spurious_wakeups);
            }
            if self.d.is_dying() {
                return Ok(());
            }
            let left = match deadline {
                None => None,
                Some(dl) => {
                    let now = Instant::now();
                    if now >= dl {
                        return Ok(());
                    }
                    Some(dl - now)
                }
            };
            h.waiters += 1;
            let shared = self.shared.clone();
            // The vCPU is blocked, not working: samplers skip it and exact mode charges the
            // sleep to nothing, as Xenoprof sees a blocked vCPU (no samples while descheduled).
            let blocked = xenoprof::blocked();
            p = match left {
                None => {
                    woke = true;
                    shared.cond.wait(p).unwrap_or_else(|e| e.into_inner())
                }
                Some(l) => {
                    let (g, to) = shared
                        .cond
                        .wait_timeout(p, l)
                        .unwrap_or_else(|e| e.into_inner());
                    woke = !to.timed_out();
                    g
                }
            };
            drop(blocked);
            if let Some(Some(h)) = p.handles.get_mut(self.id) {
                h.waiters -= 1;
            }
        }
    }

    /// An eventfd that polls readable while a port of this handle is deliverable (created on
    /// first use; from then on every port that becomes deliverable writes it).
    pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        let efd = EventFd::get_or_create(&self.shared.efd, |efd| {
            // Ports may have become deliverable before the descriptor existed: signal them.
            let mut p = self.d.evtchn.lock();
            let Ports { ports, handles } = &mut *p;
            if let Some(Some(h)) = handles.get_mut(self.id)
                && !h.signalled
                && h.ports.iter().any(|&i| {
                    ports
                        .get(i as usize)
                        .is_some_and(|s| s.pending && !s.masked)
                })
            {
                efd.signal();
                h.signalled = true;
            }
        })?;
        Some(efd.as_fd())
    }
}

impl Drop for EvtchnHandle {
    fn drop(&mut self) {
        let owned: Vec<u32> = {
            let p = self.d.evtchn.lock();
            p.handles
                .get(self.id)
                .and_then(|h| h.as_ref())
                .map(|h| h.ports.clone())
                .unwrap_or_default()
        };
        for port in owned {
            let _ = self.unbind(Port(port));
        }
        let mut p = self.d.evtchn.lock();
        if let Some(h) = p.handles.get_mut(self.id) {
            *h = None;
        }
    }
}
