//! The bridge: ports and their settings, the MAC table's control path, counters and captures
//! (the control side), plus one built-in [`Forwarder`] behind [`Bridge::forward`].

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::capture::{Capture, CaptureDirection, CaptureSummary};
use crate::error::BridgeError;
use crate::fdb::{Fdb, FdbEntry, FdbStats, MAX_PORT_ID};
use crate::forwarder::{Forwarder, Shared, nanos};
use crate::frame::{Frame, MacAddr};
use crate::iplock::{IpLock, IpLockOptions};
use crate::output::Output;
use crate::port::{BridgeSnapshot, PortId, PortKind, PortSnapshot, PortStats};
use crate::stats::Registry;
use crate::table::{CaptureSlot, LIVE, PortConf, PortTable, UP};

/// How a bridge is built.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// MAC table slots; rounded up to a power of two times 8 (default 8192). Size it about
    /// 4-8x the number of stations so set-associative collisions rarely evict a live entry.
    pub fdb_capacity: usize,
    /// Time after which an unrefreshed MAC entry stops counting (default 300 s, as Linux).
    pub ageing: Duration,
    /// Most ports at once (default 1024, at most 32768).
    pub max_ports: usize,
    /// Seed of the MAC hash; `None` picks a random one (recommended: a guest then cannot aim
    /// addresses at one table bucket). Tests set it for reproducible tables.
    pub hash_seed: Option<u64>,
    /// Frames forwarded per table bucket swept for expired entries (default 32: one bucket
    /// per full batch), per forwarder. Lookups never return an expired entry either way; the
    /// sweep only frees slots early so occupancy counts track live entries.
    pub frames_per_sweep: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            fdb_capacity: 8192,
            ageing: Duration::from_secs(300),
            max_ports: 1024,
            hash_seed: None,
            frames_per_sweep: 32,
        }
    }
}

/// A minimal L2 learning switch.
///
/// A `Bridge` is the switch's control side (ports, settings, static MACs, counters, captures;
/// `&mut self`, one thread at a time) plus one built-in forwarding handle behind
/// [`Bridge::forward`], so a single thread can own and drive it whole, as netback's backend
/// thread does. For several forwarding threads, each takes its own [`Forwarder`]
/// ([`Bridge::forwarder`]): they share the MAC table and the port table without locks, and
/// the control side changes settings under them without waiting for them (changes apply from
/// each forwarder's next batch). Counters are summed over every forwarder when read.
#[derive(Debug)]
pub struct Bridge {
    shared: Arc<Shared>,
    /// The control path's handle on the MAC table.
    fdb: Fdb,
    /// The port table as last published.
    table: Arc<PortTable>,
    /// Tables replaced since, oldest first, while a forwarder may still hold one.
    retired: Vec<(u64, Weak<PortTable>)>,
    /// Per port number: the version of the first table without it (its quarantine).
    freed_at: Vec<u64>,
    /// Per port number: the summed counters when its port was added or its counters reset.
    baseline: Vec<PortStats>,
    /// The forwarder behind [`Bridge::forward`].
    fwd: Forwarder,
}

impl Bridge {
    /// A bridge with no ports.
    pub fn new(cfg: BridgeConfig) -> Result<Self, BridgeError> {
        if cfg.fdb_capacity == 0 || cfg.fdb_capacity > 1 << 28 {
            return Err(BridgeError::InvalidConfig {
                what: "fdb_capacity must be between 1 and 2^28 entries",
            });
        }
        if cfg.max_ports == 0 || cfg.max_ports > MAX_PORT_ID as usize + 1 {
            return Err(BridgeError::InvalidConfig {
                what: "max_ports must be between 1 and 32768",
            });
        }
        let table = Arc::new(PortTable::default());
        let shared = Arc::new(Shared {
            ports: Arc::new(ArcSwap::new(table.clone())),
            stats: Mutex::new(Registry::default()),
            max_ports: cfg.max_ports,
            frames_per_sweep: cfg.frames_per_sweep.max(1),
        });
        let fdb = Fdb::with_ports(cfg.fdb_capacity, cfg.ageing, cfg.hash_seed, cfg.max_ports);
        let fwd = Forwarder::new(shared.clone(), fdb.handle());
        Ok(Self {
            shared,
            fdb,
            table,
            retired: Vec::new(),
            freed_at: Vec::new(),
            baseline: Vec::new(),
            fwd,
        })
    }

    /// A new forwarding handle for another thread (see [`Forwarder`]). Each forwarding thread
    /// needs its own; they may forward at the same time as each other and as this bridge's
    /// own [`Bridge::forward`] (from another thread than the control side's, that is only
    /// through a forwarder).
    pub fn forwarder(&self) -> Forwarder {
        Forwarder::new(self.shared.clone(), self.fdb.handle())
    }

    /// Publishes `t` as the new port table.
    fn publish(&mut self, mut t: PortTable) {
        t.version = self.table.version + 1;
        let t = Arc::new(t);
        self.shared.ports.store(t.clone());
        let old = std::mem::replace(&mut self.table, t);
        self.retired.push((old.version, Arc::downgrade(&old)));
        drop(old);
        // The built-in forwarder is between batches (we hold `&mut self`): let it drop the
        // old table now, so it never holds a port number in quarantine.
        self.fwd.refresh();
        self.retired.retain(|(_, w)| w.strong_count() != 0);
    }

    /// A copy of the current table, to change and publish.
    fn edit(&self) -> PortTable {
        (*self.table).clone()
    }

    /// The oldest table version a forwarder may still be forwarding with.
    fn oldest_in_use(&mut self) -> u64 {
        self.retired.retain(|(_, w)| w.strong_count() != 0);
        self.retired.first().map_or(self.table.version, |&(v, _)| v)
    }

    fn sum(&self, i: usize) -> PortStats {
        Registry::sum(&self.shared.stats, i)
    }

    /// Adds a port (up, counters zero) and returns its id: the lowest free number.
    ///
    /// A removed port's number is reused only once no forwarder can still be in a batch that
    /// began before the removal (nor holds that older port table between batches); until then
    /// a higher number is used, and when none is left the error is
    /// [`BridgeError::PortNumbersBusy`]. With only the bridge's own forwarder, numbers are
    /// reused at once.
    pub fn add_port(&mut self, kind: PortKind) -> Result<PortId, BridgeError> {
        let oldest = self.oldest_in_use();
        let mut t = self.edit();
        let free = |i: usize| t.conf[i].is_none();
        let idx = match (0..t.conf.len()).find(|&i| free(i) && self.freed_at[i] <= oldest) {
            Some(i) => i,
            None if t.conf.len() < self.shared.max_ports => {
                t.conf.push(None);
                t.state.push(0);
                self.freed_at.push(0);
                self.baseline.push(PortStats::default());
                t.conf.len() - 1
            }
            None if (0..t.conf.len()).any(free) => {
                return Err(BridgeError::PortNumbersBusy {
                    max: self.shared.max_ports,
                });
            }
            None => {
                return Err(BridgeError::TooManyPorts {
                    max: self.shared.max_ports,
                });
            }
        };
        let port = PortId(idx as u16);
        let generation = self.fdb.open_port(port);
        t.conf[idx] = Some(PortConf {
            kind,
            generation,
            learning: true,
            locked: false,
            ip_lock: Arc::new(IpLock::default()),
            capture: None,
        });
        t.state[idx] = LIVE | UP;
        t.rebuild_flood_list();
        self.baseline[idx] = self.sum(idx);
        self.publish(t);
        Ok(port)
    }

    /// Removes a port: forgets every MAC on it (static ones too), stops its capture (a capture
    /// error is discarded; stop it first to see it) and returns its final counters. Frames
    /// already queued for it in a caller's [`Output`] stay there: drain them before reusing the
    /// id.
    ///
    /// Forwarders stop using the port from their next batch; entries a forwarder learns for
    /// it meanwhile are withdrawn by that forwarder (see [`crate::fdb`]).
    pub fn remove_port(&mut self, port: PortId) -> Result<PortStats, BridgeError> {
        let i = self.check(port)?;
        let mut t = self.edit();
        let capture = t.conf[i].take().and_then(|c| c.capture);
        if capture.is_some() {
            t.captures -= 1;
        }
        t.state[i] = 0;
        t.rebuild_flood_list();
        self.publish(t);
        self.freed_at[i] = self.table.version;
        self.fdb.close_port(port);
        if let Some(c) = capture {
            let _ = take_capture(&c).map(Capture::finish);
        }
        let mut st = self.sum(i);
        st.wrapping_sub(&self.baseline[i]);
        Ok(st)
    }

    fn set_state(
        &mut self,
        port: PortId,
        f: impl FnOnce(&mut PortConf),
    ) -> Result<(), BridgeError> {
        let i = self.check(port)?;
        let mut t = self.edit();
        f(t.conf_mut(i));
        self.publish(t);
        Ok(())
    }

    /// Brings a port up or down. A down port receives nothing (its rx frames are dropped and
    /// counted) and sends nothing (frames to it are dropped and counted). Its MAC entries are
    /// kept, so its unicast traffic is dropped rather than flooded to every other port while
    /// it is down, and forwarding resumes at once when it comes back.
    pub fn set_port_up(&mut self, port: PortId, up: bool) -> Result<(), BridgeError> {
        let i = self.check(port)?;
        let mut t = self.edit();
        t.state[i] = if up { LIVE | UP } else { LIVE };
        self.publish(t);
        Ok(())
    }

    /// Turns source learning on the port on or off (like `bridge link set ... learning off`).
    /// With learning off, frames still forward but their sources are not added or moved; pair
    /// it with [`Bridge::add_static`] for a guest whose MAC the control plane knows.
    pub fn set_port_learning(&mut self, port: PortId, on: bool) -> Result<(), BridgeError> {
        self.set_state(port, |c| c.learning = on)
    }

    /// Caps how many MACs the port may have learned at once (`None`: no cap), so one guest
    /// cycling through source addresses cannot fill the table and push out everyone else's
    /// entries. Frames whose source is not learned because of the cap are still forwarded and
    /// counted in `learn_refused`. Static entries do not count; expired entries count until
    /// reclaimed (by a learn into their bucket, the incremental sweep, or [`Bridge::age`]).
    pub fn set_port_mac_limit(
        &mut self,
        port: PortId,
        limit: Option<u32>,
    ) -> Result<(), BridgeError> {
        self.check(port)?;
        self.fdb.set_port_limit(port, limit);
        Ok(())
    }

    /// Locks or unlocks the port (anti-spoofing, like `bridge link set ... locked on`): a
    /// locked port accepts only frames whose source MAC the table maps to this port (a static
    /// entry, or one learned before locking and not yet aged out), dropping the rest as
    /// [`DropReason::SrcNotAllowed`], and learns nothing. This is the switch-level replacement
    /// for the iptables anti-spoof rules Xen's vif scripts install.
    pub fn set_port_locked(&mut self, port: PortId, locked: bool) -> Result<(), BridgeError> {
        self.set_state(port, |c| c.locked = locked)
    }

    /// Locks the port to IP addresses (anti-spoofing, the `ip` key of a vif: what Xen's
    /// vif-common.sh enforces with iptables): frames from the port then pass only if their
    /// IPv4 or IPv6 source (or ARP sender) is one of `addrs`, with the exceptions neighbour
    /// discovery and DHCP need, and only IPv4, ARP and IPv6 pass unless
    /// [`IpLockOptions::other_ethertypes`]. The rules, and why, are in [`crate::iplock`]; each
    /// breach is counted on this port under its [`DropReason`]. An empty list removes the lock
    /// (the default). Both families are locked as soon as one address is given: with IPv4
    /// addresses only, the port's IPv6 may come only from `::` and link-local addresses; with
    /// IPv6 only, its IPv4 is only DHCP from 0.0.0.0 and its ARP only probes. Combine it with
    /// [`Bridge::set_port_locked`]: the IP lock trusts the frame's source MAC.
    ///
    /// Unspecified, multicast and broadcast addresses are refused (`InvalidConfig`); the lock
    /// is then left as it was.
    pub fn set_port_ips(&mut self, port: PortId, addrs: &[IpAddr]) -> Result<(), BridgeError> {
        self.check(port)?;
        let bad = |a: &IpAddr| match a {
            IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
            IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
        };
        if addrs.iter().any(bad) {
            return Err(BridgeError::InvalidConfig {
                what: "an IP lock address must be unicast (not unspecified, multicast or \
                       broadcast)",
            });
        }
        self.set_state(port, |c| {
            let mut lock = (*c.ip_lock).clone();
            lock.set_addrs(addrs);
            c.ip_lock = Arc::new(lock);
        })
    }

    /// The addresses the port's IP lock allows, IPv4 first (empty: no IP lock).
    pub fn port_ips(&self, port: PortId) -> Result<Vec<IpAddr>, BridgeError> {
        Ok(self.conf(port)?.ip_lock.addrs())
    }

    /// Sets the port's IP lock options (kept when its addresses change; they matter only while
    /// it has addresses).
    pub fn set_port_ip_options(
        &mut self,
        port: PortId,
        opts: IpLockOptions,
    ) -> Result<(), BridgeError> {
        self.set_state(port, |c| {
            let mut lock = (*c.ip_lock).clone();
            lock.opts = opts;
            c.ip_lock = Arc::new(lock);
        })
    }

    /// The port's IP lock options.
    pub fn port_ip_options(&self, port: PortId) -> Result<IpLockOptions, BridgeError> {
        Ok(self.conf(port)?.ip_lock.opts)
    }

    /// Whether the port is up.
    pub fn port_is_up(&self, port: PortId) -> Result<bool, BridgeError> {
        Ok(self.table.state(self.check(port)?) & UP != 0)
    }

    /// What is behind the port.
    pub fn port_kind(&self, port: PortId) -> Result<PortKind, BridgeError> {
        Ok(self.conf(port)?.kind)
    }

    /// Live ports in id order.
    pub fn ports(&self) -> impl Iterator<Item = PortId> + '_ {
        self.table.flood_list.iter().map(|&p| PortId(p))
    }

    fn check(&self, port: PortId) -> Result<usize, BridgeError> {
        match self.table.conf(port.index()) {
            Some(_) => Ok(port.index()),
            None => Err(BridgeError::NoSuchPort { port }),
        }
    }

    fn conf(&self, port: PortId) -> Result<&PortConf, BridgeError> {
        self.table
            .conf(port.index())
            .ok_or(BridgeError::NoSuchPort { port })
    }

    /// Forwards a burst of frames received on `ingress` at the caller's time `now` (taken once
    /// per batch; any monotonic clock, the same one for every call). Drains `frames` and
    /// appends each forwarded handle to `out`'s queue for its egress port: known unicast to one
    /// port, broadcast/multicast/unknown unicast cloned to every other live port that is up;
    /// never back out of `ingress`. Frames are dropped (and counted) when shorter than 14
    /// bytes, when their source is multicast or zero, when the ingress or egress port is
    /// down, and on a locked port when they fail its MAC or IP lock.
    ///
    /// On error (no such ingress port) `frames` is left untouched, so the caller keeps its
    /// handles.
    ///
    /// This is the bridge's own [`Forwarder`]; other threads forward through theirs, at the
    /// same time.
    pub fn forward<H: Frame>(
        &mut self,
        ingress: PortId,
        frames: &mut Vec<H>,
        now: Duration,
        out: &mut Output<H>,
    ) -> Result<(), BridgeError> {
        self.fwd.forward(ingress, frames, now, out)
    }

    /// Starts a pcap capture of `port`'s traffic into `writer` (a file, a pipe to `tshark -i -`,
    /// ...). The pcap header is written at once.
    ///
    /// Forwarders take the capture's lock to record a frame of this port, and only then.
    pub fn start_capture(
        &mut self,
        port: PortId,
        writer: impl Write + Send + 'static,
        dir: CaptureDirection,
    ) -> Result<(), BridgeError> {
        let i = self.check(port)?;
        if self.table.conf(i).is_some_and(|c| c.capture.is_some()) {
            return Err(BridgeError::CaptureRunning { port });
        }
        let c = Capture::new(Box::new(writer), dir)
            .map_err(|source| BridgeError::Capture { port, source })?;
        let mut t = self.edit();
        t.conf_mut(i).capture = Some(Arc::new(CaptureSlot {
            dir,
            cap: Mutex::new(Some(c)),
        }));
        t.captures += 1;
        self.publish(t);
        Ok(())
    }

    /// Stops `port`'s capture, flushes the writer and says how many frames it holds, or
    /// reports the write error that stopped it early.
    pub fn stop_capture(&mut self, port: PortId) -> Result<CaptureSummary, BridgeError> {
        let i = self.check(port)?;
        let mut t = self.edit();
        let slot = t
            .conf_mut(i)
            .capture
            .take()
            .ok_or(BridgeError::NoCapture { port })?;
        t.captures -= 1;
        self.publish(t);
        take_capture(&slot)
            .ok_or(BridgeError::NoCapture { port })?
            .finish()
            .map_err(|source| BridgeError::Capture { port, source })
    }

    /// A copy of one port's counters.
    pub fn port_stats(&self, port: PortId) -> Result<PortStats, BridgeError> {
        let i = self.check(port)?;
        let mut st = self.sum(i);
        st.wrapping_sub(&self.baseline[i]);
        Ok(st)
    }

    /// A copy of every port's counters and the table's.
    pub fn snapshot(&self) -> BridgeSnapshot {
        BridgeSnapshot {
            ports: self
                .ports()
                .filter_map(|id| {
                    let i = id.index();
                    let c = self.table.conf(i)?;
                    let mut stats = self.sum(i);
                    stats.wrapping_sub(&self.baseline[i]);
                    Some(PortSnapshot {
                        id,
                        kind: c.kind,
                        up: self.table.state(i) & UP != 0,
                        learning: c.learning,
                        locked: c.locked,
                        ips: c.ip_lock.addrs(),
                        capturing: c.capture.is_some(),
                        learned_macs: self.fdb.port_entries(id),
                        stats,
                    })
                })
                .collect(),
            fdb: self.fdb.stats(),
        }
    }

    /// Zeroes every port's counters (the table's counters are cumulative and stay).
    pub fn reset_stats(&mut self) {
        for i in 0..self.baseline.len() {
            self.baseline[i] = self.sum(i);
        }
    }

    /// The port `mac` is known on at `now`, if any.
    pub fn lookup(&self, mac: MacAddr, now: Duration) -> Option<PortId> {
        let key = mac.to_u64();
        if key == 0 {
            return None;
        }
        self.fdb
            .lookup(key, nanos(now))
            .filter(|p| self.table.state(p.index()) & LIVE != 0)
    }

    /// Pins `mac` to `port` (for example a guest's configured MAC from xenstore): it never
    /// ages, moves or gets evicted, and frames from that MAC on other ports do not re-learn it.
    pub fn add_static(&mut self, mac: MacAddr, port: PortId) -> Result<(), BridgeError> {
        self.check(port)?;
        if mac.is_multicast() || mac == MacAddr::ZERO {
            return Err(BridgeError::InvalidMac { mac });
        }
        if self.fdb.add_static(mac, port) {
            Ok(())
        } else {
            Err(BridgeError::FdbBucketFull { mac })
        }
    }

    /// Forgets `mac` (static or learned). Returns whether it was known.
    pub fn remove_mac(&mut self, mac: MacAddr) -> bool {
        mac != MacAddr::ZERO && self.fdb.remove(mac)
    }

    /// Frees every expired entry now (a full table scan; the forwarding path also frees them
    /// incrementally). Returns how many were freed.
    pub fn age(&mut self, now: Duration) -> usize {
        self.fdb.sweep(nanos(now), usize::MAX)
    }

    /// Live table entries at `now`, like `bridge fdb show`.
    pub fn fdb_entries(&self, now: Duration) -> Vec<FdbEntry> {
        self.fdb.entries(nanos(now))
    }

    /// The table's counters.
    pub fn fdb_stats(&self) -> FdbStats {
        self.fdb.stats()
    }

    /// The table itself, read-only (for invariant checks and diagnostics).
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }
}

/// Takes the capture out of its slot (forwarders with an older table then record nothing).
fn take_capture(slot: &CaptureSlot) -> Option<Capture> {
    slot.cap.lock().unwrap_or_else(|e| e.into_inner()).take()
}
