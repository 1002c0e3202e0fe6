//! The forwarding path: one [`Forwarder`] per thread, all sharing one bridge's MAC table and
//! port table.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, Cache};

use crate::error::BridgeError;
use crate::fdb::{Fdb, Learned};
use crate::frame::{Frame, MAC_GROUP_BIT, MAC_MASK, MacAddr, read_macs};
use crate::output::Output;
use crate::port::{DropReason, PortId, PortStats};
use crate::stats::{OwnBlock, Registry};
use crate::table::{LIVE, PortTable, UP};

/// What every forwarder of a bridge shares besides the MAC table.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The current port table (see [`crate::table`]).
    pub(crate) ports: Arc<ArcSwap<PortTable>>,
    /// Every forwarder's counter block.
    pub(crate) stats: Mutex<Registry>,
    pub(crate) max_ports: usize,
    pub(crate) frames_per_sweep: usize,
}

#[inline(always)]
pub(crate) fn nanos(now: Duration) -> u64 {
    u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
}

/// A forwarding handle on a [`crate::Bridge`], for one thread: made by
/// [`crate::Bridge::forwarder`], it forwards bursts exactly as [`crate::Bridge::forward`] does,
/// sharing the bridge's MAC table and ports with every other forwarder, and is `Send` so a
/// worker thread can own it.
///
/// What it owns (nothing here is touched by another forwarder): its counters (the bridge's
/// reports sum every forwarder's), its position in the incremental ageing sweep, and its view of
/// the port table, which it refreshes at the start of each batch when the control path has
/// changed it (a pointer compare, no lock, no shared write). What it shares: the MAC table,
/// where lookups are loads only and a learn writes only when something changes (see
/// [`crate::fdb`]). A capture takes a lock, only on the captured port.
///
/// A port removed from the bridge stops being used by batches that begin after the removal; a
/// batch already under way finishes with the ports it began with. Its number is not handed out
/// again while any forwarder may still be in such a batch, or still holds that older table
/// between batches (an idle forwarder keeps its table until its next batch; drop it to let
/// go).
pub struct Forwarder {
    shared: Arc<Shared>,
    table: Cache<Arc<ArcSwap<PortTable>>, Arc<PortTable>>,
    fdb: Fdb,
    stats: OwnBlock,
    /// (port, queue length before the batch) for tx captures.
    tx_marks: Vec<(usize, usize)>,
    frames_per_sweep: usize,
    /// Frames forwarded since the last sweep step.
    sweep_credit: usize,
}

impl fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("fdb", &self.fdb)
            .field("sweep_credit", &self.sweep_credit)
            .finish()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        Registry::retire(&self.shared.stats, &self.stats.block);
    }
}

impl Forwarder {
    pub(crate) fn new(shared: Arc<Shared>, fdb: Fdb) -> Self {
        let stats = Registry::register(&shared.stats, shared.max_ports);
        Self {
            table: Cache::new(shared.ports.clone()),
            frames_per_sweep: shared.frames_per_sweep,
            shared,
            fdb,
            stats,
            tx_marks: Vec::new(),
            sweep_credit: 0,
        }
    }

    /// Drops an outdated port table now rather than at the next batch.
    pub(crate) fn refresh(&mut self) {
        self.table.load();
    }

    /// The port `mac` is known on at `now`, if any (as this forwarder's next batch would see
    /// it).
    pub fn lookup(&mut self, mac: MacAddr, now: Duration) -> Option<PortId> {
        let key = mac.to_u64();
        if key == 0 {
            return None;
        }
        let t = self.table.load();
        self.fdb
            .lookup(key, nanos(now))
            .filter(|p| t.state(p.index()) & LIVE != 0)
    }

    /// Forwards a burst of frames received on `ingress`: see [`crate::Bridge::forward`], which
    /// is this on the bridge's own forwarder.
    pub fn forward<H: Frame>(
        &mut self,
        ingress: PortId,
        frames: &mut Vec<H>,
        now: Duration,
        out: &mut Output<H>,
    ) -> Result<(), BridgeError> {
        let _s = xenoprof::scope(xenoprof::Class::BRIDGE);
        let Self {
            table,
            fdb,
            stats,
            tx_marks,
            frames_per_sweep,
            sweep_credit,
            ..
        } = self;
        let t: &PortTable = table.load();
        let ii = ingress.index();
        let Some(conf) = t.conf(ii) else {
            return Err(BridgeError::NoSuchPort { port: ingress });
        };
        let now_ns = nanos(now);
        let nports = t.state.len();
        if out.queues.len() < nports {
            out.queues.resize_with(nports, Vec::new);
        }
        stats.cover(nports);
        if t.captures != 0 {
            capture_before(t, tx_marks, ii, frames, now, out);
        }
        *sweep_credit += frames.len();
        if *sweep_credit >= *frames_per_sweep {
            let buckets = *sweep_credit / *frames_per_sweep;
            *sweep_credit %= *frames_per_sweep;
            fdb.sweep(now_ns, buckets);
        }

        let ist = stats.port(ii);
        if t.state(ii) & UP == 0 {
            ist.rx_frames.add(frames.len() as u64);
            ist.rx_bytes
                .add(frames.iter().map(|h| h.frame_len() as u64).sum::<u64>());
            ist.drop_add(DropReason::IngressDown, frames.len() as u64);
            frames.clear();
            return Ok(());
        }

        let ing = ingress.0;
        let (learning, locked, generation) = (conf.learning, conf.locked, conf.generation);
        let ip_lock = &*conf.ip_lock;
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
                ist.drop_add(DropReason::TooShort, 1);
                continue;
            };
            if src & MAC_GROUP_BIT != 0 {
                ist.drop_add(DropReason::SrcMulticast, 1);
                continue;
            }
            if src == 0 {
                ist.drop_add(DropReason::SrcZero, 1);
                continue;
            }
            if locked && fdb.lookup(src, now_ns) != Some(ingress) {
                ist.drop_add(DropReason::SrcNotAllowed, 1);
                continue;
            }
            if ip_locked && let Err(r) = ip_lock.check(h.bytes(), h.frame_len()) {
                ist.drop_add(r, 1);
                continue;
            }
            // A dropped frame teaches the table nothing: learn only now.
            if !locked && learning {
                match fdb.learn_for(src, ingress, generation, now_ns) {
                    Learned::Refreshed => {}
                    Learned::New | Learned::Evicted { .. } => rx.learned += 1,
                    Learned::Moved { .. } => rx.moves_in += 1,
                    Learned::StaticConflict | Learned::Full | Learned::LimitReached => {
                        rx.learn_refused += 1
                    }
                }
            }
            if dst & MAC_GROUP_BIT == 0 {
                // An entry for a port this batch's table does not have (removed, its entries
                // being flushed) is no entry: the frame floods, as it would after the flush.
                if let Some(p) = fdb.lookup(dst, now_ns)
                    && let s = t.state(p.index())
                    && s & LIVE != 0
                {
                    if p.0 == ing {
                        ist.drop_add(DropReason::Hairpin, 1);
                        continue;
                    }
                    let pi = p.index();
                    let st = stats.port(pi);
                    if s & UP == 0 {
                        st.drop_add(DropReason::EgressDown, 1);
                        continue;
                    }
                    st.tx_frames.add(1);
                    st.tx_bytes.add(len);
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
            for &p in &t.flood_list {
                if p == ing {
                    continue;
                }
                let pi = p as usize;
                if t.state[pi] & UP == 0 {
                    stats.port(pi).drop_add(DropReason::EgressDown, 1);
                    continue;
                }
                if let Some(q) = prev {
                    let st = stats.port(q);
                    st.tx_frames.add(1);
                    st.tx_bytes.add(len);
                    out.queues[q].push(h.clone());
                }
                prev = Some(pi);
            }
            if let Some(q) = prev {
                let st = stats.port(q);
                st.tx_frames.add(1);
                st.tx_bytes.add(len);
                out.queues[q].push(h);
            }
        }
        stats.port(ii).add(&rx);
        if t.captures != 0 {
            capture_after(t, tx_marks, now, out);
        }
        Ok(())
    }
}

/// Records rx frames of a capturing ingress port and marks where each tx-capturing port's
/// queue stands, so `capture_after` records exactly this batch's frames.
#[cold]
fn capture_before<H: Frame>(
    t: &PortTable,
    tx_marks: &mut Vec<(usize, usize)>,
    ii: usize,
    frames: &[H],
    now: Duration,
    out: &Output<H>,
) {
    if let Some(c) = t
        .conf(ii)
        .and_then(|c| c.capture.as_ref())
        .filter(|c| c.dir.rx())
    {
        for h in frames {
            c.record(now, h.bytes(), h.frame_len());
        }
    }
    tx_marks.clear();
    for (pi, c) in t.conf.iter().enumerate() {
        if c.as_ref()
            .and_then(|c| c.capture.as_ref())
            .is_some_and(|c| c.dir.tx())
        {
            tx_marks.push((pi, out.queues[pi].len()));
        }
    }
}

#[cold]
fn capture_after<H: Frame>(
    t: &PortTable,
    tx_marks: &[(usize, usize)],
    now: Duration,
    out: &Output<H>,
) {
    for &(pi, start) in tx_marks {
        if let Some(c) = t.conf(pi).and_then(|c| c.capture.as_ref()) {
            for h in &out.queues[pi][start..] {
                c.record(now, h.bytes(), h.frame_len());
            }
        }
    }
}
