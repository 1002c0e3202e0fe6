//! The bridge: ports, the batch forwarding path, counters and captures.

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use crate::capture::{Capture, CaptureDirection, CaptureSummary};
use crate::error::BridgeError;
use crate::fdb::{Fdb, FdbEntry, FdbStats, Learned, MAX_PORT_ID};
use crate::frame::{Frame, MAC_GROUP_BIT, MAC_MASK, MacAddr, read_macs};
use crate::iplock::{IpLock, IpLockOptions};
use crate::output::Output;
use crate::port::{BridgeSnapshot, DropReason, PortId, PortKind, PortSnapshot, PortStats};

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
    /// per full batch). Lookups never return an expired entry either way; the sweep only frees
    /// slots early so occupancy counts track live entries.
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

#[derive(Debug)]
struct PortInfo {
    kind: PortKind,
}

/// A minimal L2 learning switch. Single-threaded: the thread that forwards owns it (netback's
/// backend thread); counters are read with [`Bridge::snapshot`] on that thread.
#[derive(Debug)]
pub struct Bridge {
    fdb: Fdb,
    ports: Vec<Option<PortInfo>>,
    up: Vec<bool>,
    /// Per port: learn source addresses (default true).
    learning: Vec<bool>,
    /// Per port: accept only sources pinned to the port (default false).
    locked: Vec<bool>,
    /// Per port: the addresses it may send from (default none: no IP lock).
    ip_locks: Vec<IpLock>,
    stats: Vec<PortStats>,
    /// Live port ids in ascending order: the flood set.
    flood_list: Vec<u16>,
    captures: Vec<Option<Capture>>,
    n_captures: usize,
    /// (port, queue length before the batch) for tx captures.
    tx_marks: Vec<(usize, usize)>,
    max_ports: usize,
    frames_per_sweep: usize,
    /// Frames forwarded since the last sweep step.
    sweep_credit: usize,
}

#[inline(always)]
fn nanos(now: Duration) -> u64 {
    u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
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
        Ok(Self {
            fdb: Fdb::new(cfg.fdb_capacity, cfg.ageing, cfg.hash_seed),
            ports: Vec::new(),
            up: Vec::new(),
            learning: Vec::new(),
            locked: Vec::new(),
            ip_locks: Vec::new(),
            stats: Vec::new(),
            flood_list: Vec::new(),
            captures: Vec::new(),
            n_captures: 0,
            tx_marks: Vec::new(),
            max_ports: cfg.max_ports,
            frames_per_sweep: cfg.frames_per_sweep.max(1),
            sweep_credit: 0,
        })
    }

    /// Adds a port (up, counters zero) and returns its id: the lowest free number.
    pub fn add_port(&mut self, kind: PortKind) -> Result<PortId, BridgeError> {
        let idx = match self.ports.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.ports.len() < self.max_ports => {
                self.ports.push(None);
                self.up.push(false);
                self.learning.push(true);
                self.locked.push(false);
                self.ip_locks.push(IpLock::default());
                self.stats.push(PortStats::default());
                self.captures.push(None);
                self.ports.len() - 1
            }
            None => {
                return Err(BridgeError::TooManyPorts {
                    max: self.max_ports,
                });
            }
        };
        self.ports[idx] = Some(PortInfo { kind });
        self.fdb.set_port_limit(PortId(idx as u16), None);
        self.up[idx] = true;
        self.learning[idx] = true;
        self.locked[idx] = false;
        self.ip_locks[idx] = IpLock::default();
        self.stats[idx] = PortStats::default();
        self.rebuild_flood_list();
        Ok(PortId(idx as u16))
    }

    /// Removes a port: forgets every MAC on it (static ones too), stops its capture (a capture
    /// error is discarded; stop it first to see it) and returns its final counters. Frames
    /// already queued for it in a caller's [`Output`] stay there: drain them before reusing the
    /// id.
    pub fn remove_port(&mut self, port: PortId) -> Result<PortStats, BridgeError> {
        let i = self.check(port)?;
        self.fdb.flush_port(port, true);
        if let Some(c) = self.captures[i].take() {
            self.n_captures -= 1;
            let _ = c.finish();
        }
        self.ports[i] = None;
        self.up[i] = false;
        self.rebuild_flood_list();
        Ok(std::mem::take(&mut self.stats[i]))
    }

    /// Brings a port up or down. A down port receives nothing (its rx frames are dropped and
    /// counted) and sends nothing (frames to it are dropped and counted). Its MAC entries are
    /// kept, so its unicast traffic is dropped rather than flooded to every other port while
    /// it is down, and forwarding resumes at once when it comes back.
    pub fn set_port_up(&mut self, port: PortId, up: bool) -> Result<(), BridgeError> {
        let i = self.check(port)?;
        self.up[i] = up;
        Ok(())
    }

    /// Turns source learning on the port on or off (like `bridge link set ... learning off`).
    /// With learning off, frames still forward but their sources are not added or moved; pair
    /// it with [`Bridge::add_static`] for a guest whose MAC the control plane knows.
    pub fn set_port_learning(&mut self, port: PortId, on: bool) -> Result<(), BridgeError> {
        let i = self.check(port)?;
        self.learning[i] = on;
        Ok(())
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
        let i = self.check(port)?;
        self.locked[i] = locked;
        Ok(())
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
        let i = self.check(port)?;
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
        self.ip_locks[i].set_addrs(addrs);
        Ok(())
    }

    /// The addresses the port's IP lock allows, IPv4 first (empty: no IP lock).
    pub fn port_ips(&self, port: PortId) -> Result<Vec<IpAddr>, BridgeError> {
        Ok(self.ip_locks[self.check(port)?].addrs())
    }

    /// Sets the port's IP lock options (kept when its addresses change; they matter only while
    /// it has addresses).
    pub fn set_port_ip_options(
        &mut self,
        port: PortId,
        opts: IpLockOptions,
    ) -> Result<(), BridgeError> {
        let i = self.check(port)?;
        self.ip_locks[i].opts = opts;
        Ok(())
    }

    /// The port's IP lock options.
    pub fn port_ip_options(&self, port: PortId) -> Result<IpLockOptions, BridgeError> {
        Ok(self.ip_locks[self.check(port)?].opts)
    }

    /// Whether the port is up.
    pub fn port_is_up(&self, port: PortId) -> Result<bool, BridgeError> {
        Ok(self.up[self.check(port)?])
    }

    /// What is behind the port.
    pub fn port_kind(&self, port: PortId) -> Result<PortKind, BridgeError> {
        let i = self.check(port)?;
        Ok(self.ports[i].as_ref().map_or(PortKind::Uplink, |p| p.kind))
    }

    /// Live ports in id order.
    pub fn ports(&self) -> impl Iterator<Item = PortId> + '_ {
        self.flood_list.iter().map(|&p| PortId(p))
    }

    fn check(&self, port: PortId) -> Result<usize, BridgeError> {
        match self.ports.get(port.index()) {
            Some(Some(_)) => Ok(port.index()),
            _ => Err(BridgeError::NoSuchPort { port }),
        }
    }

    fn rebuild_flood_list(&mut self) {
        self.flood_list.clear();
        self.flood_list.extend(
            self.ports
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_some())
                .map(|(i, _)| i as u16),
        );
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
    pub fn forward<H: Frame>(
        &mut self,
        ingress: PortId,
        frames: &mut Vec<H>,
        now: Duration,
        out: &mut Output<H>,
    ) -> Result<(), BridgeError> {
        let _s = xenoprof::scope(xenoprof::Class::BRIDGE);
        let ii = self.check(ingress)?;
        let now_ns = nanos(now);
        if out.queues.len() < self.ports.len() {
            out.queues.resize_with(self.ports.len(), Vec::new);
        }
        if self.n_captures != 0 {
            self.capture_before(ii, frames, now, out);
        }
        self.sweep_credit += frames.len();
        if self.sweep_credit >= self.frames_per_sweep {
            let buckets = self.sweep_credit / self.frames_per_sweep;
            self.sweep_credit %= self.frames_per_sweep;
            self.fdb.sweep(now_ns, buckets);
        }

        if !self.up[ii] {
            let st = &mut self.stats[ii];
            st.rx_frames += frames.len() as u64;
            st.rx_bytes += frames.iter().map(|h| h.frame_len() as u64).sum::<u64>();
            st.drops.add(DropReason::IngressDown, frames.len() as u64);
            frames.clear();
            return Ok(());
        }

        let ing = ingress.0;
        let (learning, locked) = (self.learning[ii], self.locked[ii]);
        let ip_lock = &self.ip_locks[ii];
        // One branch per frame on this when the port has no IP lock.
        let ip_locked = ip_lock.is_on();
        // This batch's ingress counters, added to the port's at the end (its drops, rare, go
        // straight to the port's).
        let mut rx = PortStats {
            rx_frames: frames.len() as u64,
            ..PortStats::default()
        };
        for h in frames.drain(..) {
            let (len, macs) = {
                let b = h.bytes();
                (h.frame_len() as u64, read_macs(b))
            };
            rx.rx_bytes += len;
            let Some((dst, src)) = macs else {
                self.stats[ii].drops.add(DropReason::TooShort, 1);
                continue;
            };
            if src & MAC_GROUP_BIT != 0 {
                self.stats[ii].drops.add(DropReason::SrcMulticast, 1);
                continue;
            }
            if src == 0 {
                self.stats[ii].drops.add(DropReason::SrcZero, 1);
                continue;
            }
            if locked && self.fdb.lookup(src, now_ns) != Some(ingress) {
                self.stats[ii].drops.add(DropReason::SrcNotAllowed, 1);
                continue;
            }
            if ip_locked && let Err(r) = ip_lock.check(h.bytes(), h.frame_len()) {
                self.stats[ii].drops.add(r, 1);
                continue;
            }
            // A dropped frame teaches the table nothing: learn only now.
            if !locked && learning {
                match self.fdb.learn(src, ingress, now_ns) {
                    Learned::Refreshed => {}
                    Learned::New | Learned::Evicted { .. } => rx.learned += 1,
                    Learned::Moved { .. } => rx.moves_in += 1,
                    Learned::StaticConflict | Learned::Full | Learned::LimitReached => {
                        rx.learn_refused += 1
                    }
                }
            }
            if dst & MAC_GROUP_BIT == 0 {
                if let Some(p) = self.fdb.lookup(dst, now_ns) {
                    if p.0 == ing {
                        self.stats[ii].drops.add(DropReason::Hairpin, 1);
                        continue;
                    }
                    let pi = p.index();
                    let st = &mut self.stats[pi];
                    if !self.up[pi] {
                        st.drops.add(DropReason::EgressDown, 1);
                        continue;
                    }
                    st.tx_frames += 1;
                    st.tx_bytes += len;
                    out.queues[pi].push(h);
                    continue;
                }
                rx.rx_unknown_unicast += 1;
            } else if dst == MAC_MASK {
                rx.rx_broadcast += 1;
            } else {
                rx.rx_multicast += 1;
            }
            rx.floods += 1;
            // Clone for every eligible port but the last, which gets the original handle.
            let mut prev: Option<usize> = None;
            for &p in &self.flood_list {
                if p == ing {
                    continue;
                }
                let pi = p as usize;
                if !self.up[pi] {
                    self.stats[pi].drops.add(DropReason::EgressDown, 1);
                    continue;
                }
                if let Some(q) = prev {
                    self.stats[q].tx_frames += 1;
                    self.stats[q].tx_bytes += len;
                    out.queues[q].push(h.clone());
                }
                prev = Some(pi);
            }
            if let Some(q) = prev {
                self.stats[q].tx_frames += 1;
                self.stats[q].tx_bytes += len;
                out.queues[q].push(h);
            }
        }
        let st = &mut self.stats[ii];
        st.rx_frames += rx.rx_frames;
        st.rx_bytes += rx.rx_bytes;
        st.floods += rx.floods;
        st.rx_broadcast += rx.rx_broadcast;
        st.rx_multicast += rx.rx_multicast;
        st.rx_unknown_unicast += rx.rx_unknown_unicast;
        st.learned += rx.learned;
        st.moves_in += rx.moves_in;
        st.learn_refused += rx.learn_refused;
        if self.n_captures != 0 {
            self.capture_after(now, out);
        }
        Ok(())
    }

    /// Records rx frames of a capturing ingress port and marks where each tx-capturing port's
    /// queue stands, so `capture_after` records exactly this batch's frames.
    #[cold]
    fn capture_before<H: Frame>(
        &mut self,
        ii: usize,
        frames: &[H],
        now: Duration,
        out: &Output<H>,
    ) {
        if let Some(c) = self.captures[ii].as_mut().filter(|c| c.dir.rx()) {
            for h in frames {
                c.record(now, h.bytes(), h.frame_len());
            }
        }
        self.tx_marks.clear();
        for (pi, c) in self.captures.iter().enumerate() {
            if c.as_ref().is_some_and(|c| c.dir.tx()) {
                self.tx_marks.push((pi, out.queues[pi].len()));
            }
        }
    }

    #[cold]
    fn capture_after<H: Frame>(&mut self, now: Duration, out: &Output<H>) {
        for &(pi, start) in &self.tx_marks {
            if let Some(c) = self.captures[pi].as_mut() {
                for h in &out.queues[pi][start..] {
                    c.record(now, h.bytes(), h.frame_len());
                }
            }
        }
    }

    /// Starts a pcap capture of `port`'s traffic into `writer` (a file, a pipe to `tshark -i -`,
    /// ...). The pcap header is written at once.
    pub fn start_capture(
        &mut self,
        port: PortId,
        writer: impl Write + Send + 'static,
        dir: CaptureDirection,
    ) -> Result<(), BridgeError> {
        let i = self.check(port)?;
        if self.captures[i].is_some() {
            return Err(BridgeError::CaptureRunning { port });
        }
        let c = Capture::new(Box::new(writer), dir)
            .map_err(|source| BridgeError::Capture { port, source })?;
        self.captures[i] = Some(c);
        self.n_captures += 1;
        Ok(())
    }

    /// Stops `port`'s capture, flushes the writer and says how many frames it holds, or
    /// reports the write error that stopped it early.
    pub fn stop_capture(&mut self, port: PortId) -> Result<CaptureSummary, BridgeError> {
        let i = self.check(port)?;
        let c = self.captures[i]
            .take()
            .ok_or(BridgeError::NoCapture { port })?;
        self.n_captures -= 1;
        c.finish()
            .map_err(|source| BridgeError::Capture { port, source })
    }

    /// A copy of one port's counters.
    pub fn port_stats(&self, port: PortId) -> Result<PortStats, BridgeError> {
        Ok(self.stats[self.check(port)?])
    }

    /// A copy of every port's counters and the table's.
    pub fn snapshot(&self) -> BridgeSnapshot {
        BridgeSnapshot {
            ports: self
                .ports()
                .map(|id| {
                    let i = id.index();
                    PortSnapshot {
                        id,
                        kind: self.ports[i].as_ref().map_or(PortKind::Uplink, |p| p.kind),
                        up: self.up[i],
                        learning: self.learning[i],
                        locked: self.locked[i],
                        ips: self.ip_locks[i].addrs(),
                        capturing: self.captures[i].is_some(),
                        learned_macs: self.fdb.port_entries(id),
                        stats: self.stats[i],
                    }
                })
                .collect(),
            fdb: self.fdb.stats(),
        }
    }

    /// Zeroes every port's counters (the table's counters are cumulative and stay).
    pub fn reset_stats(&mut self) {
        self.stats
            .iter_mut()
            .for_each(|s| *s = PortStats::default());
    }

    /// The port `mac` is known on at `now`, if any.
    pub fn lookup(&self, mac: MacAddr, now: Duration) -> Option<PortId> {
        let key = mac.to_u64();
        if key == 0 {
            return None;
        }
        self.fdb.lookup(key, nanos(now))
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
