//! Per-forwarder port counters: each forwarding thread counts into its own block, the control
//! path sums the blocks when asked.
//!
//! A counter shared by every forwarder would be a cache line written by every forwarder on
//! every frame. Instead each [`crate::Forwarder`] owns a block of [`Counter`]s (single writer:
//! a plain load and store per event, as a `u64 +=` costs), registered with the bridge so that
//! [`crate::Bridge::snapshot`] can add them up from another thread without stopping anyone. A
//! report may be a few frames behind and its counters need not be from one instant (rx of one
//! frame counted, its tx not yet); each counter is exact.
//!
//! Blocks grow in chunks of [`CHUNK`] ports as the port table grows: a chunk is published once
//! (`OnceLock`) by its owner and never replaced.

use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_utils::CachePadded;

use crate::port::{DropReason, PortStats};
use crate::sync::Counter;

/// Ports per chunk of a counter block.
pub(crate) const CHUNK: usize = 32;

/// One port's counters in one forwarder's block.
#[derive(Debug, Default)]
pub(crate) struct AtomicPortStats {
    pub(crate) rx_frames: Counter,
    pub(crate) rx_bytes: Counter,
    pub(crate) tx_frames: Counter,
    pub(crate) tx_bytes: Counter,
    pub(crate) floods: Counter,
    pub(crate) rx_broadcast: Counter,
    pub(crate) rx_multicast: Counter,
    pub(crate) rx_unknown_unicast: Counter,
    pub(crate) learned: Counter,
    pub(crate) moves_in: Counter,
    pub(crate) learn_refused: Counter,
    drops: [Counter; DropReason::ALL.len()],
}

impl AtomicPortStats {
    #[inline(always)]
    pub(crate) fn drop_add(&self, reason: DropReason, n: u64) {
        self.drops[reason as usize].add(n);
    }

    /// Adds a batch's ingress counters (built in a plain [`PortStats`]).
    pub(crate) fn add(&self, s: &PortStats) {
        self.rx_frames.add(s.rx_frames);
        self.rx_bytes.add(s.rx_bytes);
        self.floods.add(s.floods);
        self.rx_broadcast.add(s.rx_broadcast);
        self.rx_multicast.add(s.rx_multicast);
        self.rx_unknown_unicast.add(s.rx_unknown_unicast);
        self.learned.add(s.learned);
        self.moves_in.add(s.moves_in);
        self.learn_refused.add(s.learn_refused);
    }

    fn load(&self) -> PortStats {
        let mut s = PortStats {
            rx_frames: self.rx_frames.get(),
            rx_bytes: self.rx_bytes.get(),
            tx_frames: self.tx_frames.get(),
            tx_bytes: self.tx_bytes.get(),
            floods: self.floods.get(),
            rx_broadcast: self.rx_broadcast.get(),
            rx_multicast: self.rx_multicast.get(),
            rx_unknown_unicast: self.rx_unknown_unicast.get(),
            learned: self.learned.get(),
            moves_in: self.moves_in.get(),
            learn_refused: self.learn_refused.get(),
            ..PortStats::default()
        };
        for (r, c) in DropReason::ALL.iter().zip(&self.drops) {
            s.drops.add(*r, c.get());
        }
        s
    }
}

/// A chunk of [`CHUNK`] ports' counters, each port's on lines of its own (forwarders' chunks
/// are allocated by different threads side by side).
/// A fixed-size array, so indexing within a chunk needs no bounds check.
pub(crate) type Chunk = Arc<[CachePadded<AtomicPortStats>; CHUNK]>;

/// One forwarder's counter block, as the registry sees it.
#[derive(Debug)]
pub(crate) struct Block {
    chunks: Box<[OnceLock<Chunk>]>,
}

impl Block {
    fn new(max_ports: usize) -> Self {
        Self {
            chunks: (0..max_ports.div_ceil(CHUNK))
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Port `i`'s counters, if its chunk exists.
    fn port(&self, i: usize) -> Option<PortStats> {
        let c = self.chunks.get(i / CHUNK)?.get()?;
        Some(c[i % CHUNK].load())
    }
}

/// The owner's view of its block: the chunks it has made, for indexing without a check.
#[derive(Debug)]
pub(crate) struct OwnBlock {
    pub(crate) block: Arc<Block>,
    chunks: Vec<Chunk>,
}

impl OwnBlock {
    /// Makes chunks until ports `0..ports` have counters.
    #[inline]
    pub(crate) fn cover(&mut self, ports: usize) {
        while self.chunks.len() * CHUNK < ports {
            let i = self.chunks.len();
            let Some(slot) = self.block.chunks.get(i) else {
                return;
            };
            // Only the owner ever initialises its chunks, so this never waits.
            let c = slot
                .get_or_init(|| Arc::new(std::array::from_fn(|_| CachePadded::default())))
                .clone();
            self.chunks.push(c);
        }
    }

    /// Port `i`'s counters; `i` must be covered.
    #[inline(always)]
    pub(crate) fn port(&self, i: usize) -> &AtomicPortStats {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// Every forwarder's block, plus the sums of blocks whose forwarder is gone. Locked when a
/// forwarder is made or dropped and when counters are summed: never by forwarding.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: Vec<Arc<Block>>,
    retired: Vec<PortStats>,
}

impl Registry {
    /// A new block for a new forwarder.
    pub(crate) fn register(reg: &Mutex<Registry>, max_ports: usize) -> OwnBlock {
        let block = Arc::new(Block::new(max_ports));
        lock(reg).live.push(block.clone());
        OwnBlock {
            block,
            chunks: Vec::new(),
        }
    }

    /// Folds a dropped forwarder's counts into the retired sums.
    pub(crate) fn retire(reg: &Mutex<Registry>, block: &Arc<Block>) {
        let mut r = lock(reg);
        r.live.retain(|b| !Arc::ptr_eq(b, block));
        for (i, c) in block.chunks.iter().enumerate() {
            let Some(c) = c.get() else { break };
            for (k, s) in c.iter().enumerate() {
                let p = i * CHUNK + k;
                if r.retired.len() <= p {
                    r.retired.resize(p + 1, PortStats::default());
                }
                r.retired[p].wrapping_add(&s.load());
            }
        }
    }

    /// Port `i`'s counters summed over every forwarder, live and gone.
    pub(crate) fn sum(reg: &Mutex<Registry>, i: usize) -> PortStats {
        let r = lock(reg);
        let mut s = r.retired.get(i).copied().unwrap_or_default();
        for b in &r.live {
            if let Some(p) = b.port(i) {
                s.wrapping_add(&p);
            }
        }
        s
    }
}

fn lock(reg: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    // A panic elsewhere while holding the lock leaves sums that are still valid numbers.
    reg.lock().unwrap_or_else(|e| e.into_inner())
}
