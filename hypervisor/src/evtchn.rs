//! Event channels (class `event_channel`): interdomain ports with pending and mask bits, and a
//! blocking wait per domain.
//!
//! Each domain's ports live behind one mutex with a condvar. `notify` sets the remote port's
//! pending bit under the remote's lock and signals the condvar if the port is unmasked and was
//! not already pending; `wait` checks for pending unmasked ports under the same lock before it
//! sleeps, so a notify can never fall between the check and the sleep (no lost wakeups), and
//! nothing spins. Spurious events are counted (XSA-332, lateeoi): wakeups that find nothing
//! pending, notifies on masked ports, and events the driver reports as having found no work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use xenoprof::Class;

use crate::domain::{Domain, DomainHandle};
use crate::error::{Error, Result};
use crate::types::{DOMID_SELF, DomId, NR_EVENT_CHANNELS, Port};

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
}

const FREE: PortState = PortState {
    kind: Kind::Free,
    pending: false,
    masked: false,
};

#[derive(Debug)]
struct Ports {
    ports: Vec<PortState>,
    waiters: usize,
}

/// Event-channel counters of one domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvtchnStats {
    /// Notifies this domain sent.
    pub notifies_sent: u64,
    /// Events that became pending on this domain's unmasked ports.
    pub events: u64,
    /// Notifies that found the port already pending (coalesced).
    pub coalesced: u64,
    /// Notifies that hit a masked port (spurious).
    pub masked: u64,
    /// Wakeups of `wait` that found nothing pending (spurious).
    pub spurious_wakeups: u64,
    /// Events the driver reported as spurious (found no work).
    pub reported_spurious: u64,
}

impl EvtchnStats {
    /// All spurious events: masked notifies, empty wakeups and reported ones.
    pub fn spurious(&self) -> u64 {
        self.masked + self.spurious_wakeups + self.reported_spurious
    }
}

#[derive(Debug, Default)]
struct Counters {
    notifies_sent: AtomicU64,
    events: AtomicU64,
    coalesced: AtomicU64,
    masked: AtomicU64,
    spurious_wakeups: AtomicU64,
    reported_spurious: AtomicU64,
}

fn bump(c: &AtomicU64) {
    // Relaxed: statistics only.
    c.fetch_add(1, Ordering::Relaxed);
}

/// A set of ports (the result of a wait), without allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PendingPorts {
    bits: [u64; NR_EVENT_CHANNELS / 64],
}

impl PendingPorts {
    const EMPTY: Self = Self {
        bits: [0; NR_EVENT_CHANNELS / 64],
    };

    fn insert(&mut self, p: usize) {
        self.bits[p / 64] |= 1 << (p % 64);
    }

    /// Whether no port is in the set (a timed-out wait).
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: Port) -> bool {
        let p = port.0 as usize;
        p < NR_EVENT_CHANNELS && self.bits[p / 64] & (1 << (p % 64)) != 0
    }

    /// The ports, ascending.
    pub fn iter(&self) -> impl Iterator<Item = Port> + '_ {
        (0..NR_EVENT_CHANNELS)
            .filter(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
            .map(|p| Port(p as u32))
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }
}

impl std::fmt::Debug for PendingPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A domain's event channels.
#[derive(Debug)]
pub(crate) struct EventChannels {
    inner: Mutex<Ports>,
    cond: Condvar,
    stats: Counters,
}

impl EventChannels {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Ports {
                ports: vec![FREE],
                waiters: 0,
            }),
            cond: Condvar::new(),
            stats: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ports> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes every port (domain destruction), unbinding the remote ends, and wakes waiters.
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
            v
        };
        self.cond.notify_all();
        for (remote, rport) in bound {
            if let Some(rd) = d.machine.find_domain(remote) {
                let mut p = rd.evtchn.lock();
                if let Some(s) = p.ports.get_mut(rport.0 as usize)
                    && matches!(s.kind, Kind::Interdomain { remote, .. } if remote == d.id)
                {
                    s.kind = Kind::Unbound { remote: d.id };
                }
            }
        }
    }
}

fn alloc_port(p: &mut Ports, kind: Kind) -> Result<Port> {
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
    };
    Ok(Port(i as u32))
}

impl DomainHandle {
    fn resolve(&self, d: DomId) -> DomId {
        if d == DOMID_SELF { self.d.id } else { d }
    }

    /// `EVTCHNOP_alloc_unbound`: a port `remote` may bind to.
    pub fn alloc_unbound(&self, remote: DomId) -> Result<Port> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let remote = self.resolve(remote);
        alloc_port(&mut self.d.evtchn.lock(), Kind::Unbound { remote })
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
        let rd = if remote == me {
            self.d.clone()
        } else {
            self.d
                .machine
                .find_domain(remote)
                .ok_or(Error::NoSuchDomain(remote))?
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
            )?;
            p.ports[remote_port.0 as usize].kind = Kind::Interdomain {
                remote: me,
                remote_port: local,
            };
            return Ok(local);
        }
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
        )?;
        rp.ports[remote_port.0 as usize].kind = Kind::Interdomain {
            remote: me,
            remote_port: local,
        };
        Ok(local)
    }

    /// `EVTCHNOP_send`: marks the remote end pending and wakes its domain if unmasked. A notify
    /// on an unbound port does nothing, as in Xen.
    pub fn notify(&self, port: Port) -> Result<()> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let me = self.d.id;
        let kind = self
            .d
            .evtchn
            .lock()
            .ports
            .get(port.0 as usize)
            .map(|s| s.kind);
        let (remote, rport) = match kind {
            Some(Kind::Interdomain {
                remote,
                remote_port,
            }) => (remote, remote_port),
            Some(Kind::Unbound { .. }) => return Ok(()),
            _ => return Err(Error::BadPort(port)),
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
        let was = s.pending;
        s.pending = true;
        if s.masked {
            bump(&ev.stats.masked);
        } else if was {
            bump(&ev.stats.coalesced);
        } else {
            bump(&ev.stats.events);
            if p.waiters > 0 {
                ev.cond.notify_all();
            }
        }
        Ok(())
    }

    fn with_port<R>(
        &self,
        port: Port,
        f: impl FnOnce(&mut PortState, &Condvar, usize) -> R,
    ) -> Result<R> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let ev = &self.d.evtchn;
        let mut p = ev.lock();
        let waiters = p.waiters;
        match p.ports.get_mut(port.0 as usize) {
            Some(s) if s.kind != Kind::Free => Ok(f(s, &ev.cond, waiters)),
            _ => Err(Error::BadPort(port)),
        }
    }

    /// Masks a port: events still become pending but do not wake `wait`.
    pub fn mask(&self, port: Port) -> Result<()> {
        self.with_port(port, |s, _, _| s.masked = true)
    }

    /// Unmasks a port; if it is pending, waiters are woken (as Xen re-raises the upcall).
    pub fn unmask(&self, port: Port) -> Result<()> {
        self.with_port(port, |s, cond, waiters| {
            s.masked = false;
            if s.pending && waiters > 0 {
                cond.notify_all();
            }
        })
    }

    /// Whether the port is pending.
    pub fn is_pending(&self, port: Port) -> Result<bool> {
        self.with_port(port, |s, _, _| s.pending)
    }

    /// Clears the port's pending bit; returns whether it was set.
    pub fn clear_pending(&self, port: Port) -> Result<bool> {
        self.with_port(port, |s, _, _| std::mem::replace(&mut s.pending, false))
    }

    /// `EVTCHNOP_close`: frees the port; the remote end of an interdomain port becomes unbound.
    pub fn close(&self, port: Port) -> Result<()> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let me = self.d.id;
        let kind = {
            let mut p = self.d.evtchn.lock();
            match p.ports.get_mut(port.0 as usize) {
                Some(s) if s.kind != Kind::Free && port.0 != 0 => std::mem::replace(s, FREE).kind,
                _ => return Err(Error::BadPort(port)),
            }
        };
        if let Kind::Interdomain {
            remote,
            remote_port,
        } = kind
        {
            let rd = if remote == me {
                Some(self.d.clone())
            } else {
                self.d.machine.find_domain(remote)
            };
            if let Some(rd) = rd {
                let mut p = rd.evtchn.lock();
                if let Some(s) = p.ports.get_mut(remote_port.0 as usize)
                    && s.kind
                        == (Kind::Interdomain {
                            remote: me,
                            remote_port: port,
                        })
                {
                    s.kind = Kind::Unbound { remote: me };
                }
            }
        }
        Ok(())
    }

    /// Blocks until at least one unmasked port is pending, or `timeout` passes (`None`: no
    /// limit). Returns the pending unmasked ports and clears their pending bits (the upcall's
    /// scan); an empty set means the timeout expired, or the domain has been destroyed (check
    /// [`DomainHandle::is_dying`]), in which case it returns at once. Several vCPU threads may
    /// wait; each event is delivered to one of them.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<PendingPorts> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        let ev = &self.d.evtchn;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut p = ev.lock();
        let mut woke = false;
        loop {
            let mut set = PendingPorts::EMPTY;
            for (i, s) in p.ports.iter_mut().enumerate() {
                if s.pending && !s.masked {
                    s.pending = false;
                    set.insert(i);
                }
            }
            if !set.is_empty() {
                return Ok(set);
            }
            if woke {
                bump(&ev.stats.spurious_wakeups);
            }
            if self.d.is_dying() {
                return Ok(PendingPorts::EMPTY);
            }
            p.waiters += 1;
            // The vCPU is blocked, not working: samplers skip it and exact mode charges the
            // sleep to nothing, as Xenoprof sees a blocked vCPU (no samples while descheduled).
            let blocked = xenoprof::blocked();
            p = match deadline {
                None => ev.cond.wait(p).unwrap_or_else(|e| e.into_inner()),
                Some(dl) => {
                    let now = Instant::now();
                    if now >= dl {
                        p.waiters -= 1;
                        return Ok(PendingPorts::EMPTY);
                    }
                    let (g, to) = ev
                        .cond
                        .wait_timeout(p, dl - now)
                        .unwrap_or_else(|e| e.into_inner());
                    woke = !to.timed_out();
                    g
                }
            };
            drop(blocked);
            if deadline.is_none() {
                woke = true;
            }
            p.waiters -= 1;
        }
    }

    /// Reports that an event on `port` found no work (lateeoi's spurious flag), for the counters.
    pub fn report_spurious(&self, _port: Port) {
        bump(&self.d.evtchn.stats.reported_spurious);
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
            reported_spurious: l(&c.reported_spurious),
        }
    }
}
