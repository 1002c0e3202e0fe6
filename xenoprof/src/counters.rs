//! Per-vCPU counters: cycles and calls per (context, class), and the tag a sampler reads.
//!
//! One [`VcpuCounters`] belongs to one registered thread. Only that thread writes the counters
//! (plain relaxed load + store, no locked read-modify-write); reports and the sampler read them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::class::{Class, MAX_CLASSES};
use crate::hooks::{CONTEXTS, Context, DomId};

const _: () = assert!(MAX_CLASSES.is_power_of_two() && MAX_CLASSES <= 256);

/// Tag bits holding the context.
pub(crate) const TAG_CTX_MASK: u32 = 0xff << 8;
/// Tag bit: the vCPU is blocked (waiting), so a sampler does not count it.
pub(crate) const TAG_BLOCKED: u32 = 1 << 16;
/// Tag bit: the vCPU's thread has exited or re-registered; a sampler skips it.
pub(crate) const TAG_OFFLINE: u32 = 1 << 17;

/// One thread's counters. Written only by the owning thread; read by reports and samplers.
#[derive(Debug)]
pub struct VcpuCounters {
    domid: DomId,
    vcpu: u32,
    tid: Option<u32>,
    cycles: Box<[[AtomicU64; MAX_CLASSES]; CONTEXTS]>,
    calls: Box<[[AtomicU64; MAX_CLASSES]; CONTEXTS]>,
    /// The thread's current state, packed for the sampler: `flags | ctx << 8 | class`.
    tag: AtomicU32,
}

/// A copy of one vCPU's counters at one moment: `[context][class]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Cycles per `[context as usize][class.index()]`.
    pub cycles: [[u64; MAX_CLASSES]; CONTEXTS],
    /// Scope entries per `[context as usize][class.index()]`.
    pub calls: [[u64; MAX_CLASSES]; CONTEXTS],
}

impl CounterSnapshot {
    /// All zeros.
    pub const ZERO: CounterSnapshot = CounterSnapshot {
        cycles: [[0; MAX_CLASSES]; CONTEXTS],
        calls: [[0; MAX_CLASSES]; CONTEXTS],
    };

    /// `self - earlier`, counter by counter (wrapping, as the counters do).
    pub fn since(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        let mut out = CounterSnapshot::ZERO;
        for c in 0..CONTEXTS {
            for k in 0..MAX_CLASSES {
                out.cycles[c][k] = self.cycles[c][k].wrapping_sub(earlier.cycles[c][k]);
                out.calls[c][k] = self.calls[c][k].wrapping_sub(earlier.calls[c][k]);
            }
        }
        out
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &CounterSnapshot) {
        for c in 0..CONTEXTS {
            for k in 0..MAX_CLASSES {
                self.cycles[c][k] = self.cycles[c][k].wrapping_add(other.cycles[c][k]);
                self.calls[c][k] = self.calls[c][k].wrapping_add(other.calls[c][k]);
            }
        }
    }
}

fn zeros() -> Box<[[AtomicU64; MAX_CLASSES]; CONTEXTS]> {
    Box::new(std::array::from_fn(|_| {
        std::array::from_fn(|_| AtomicU64::new(0))
    }))
}

impl VcpuCounters {
    pub(crate) fn new(domid: DomId, vcpu: u32, tid: Option<u32>, ctx: Context) -> Self {
        Self {
            domid,
            vcpu,
            tid,
            cycles: zeros(),
            calls: zeros(),
            tag: AtomicU32::new(pack_tag(ctx, Class::OTHER)),
        }
    }

    /// The domain this vCPU belongs to.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The vCPU number within its domain (registration order).
    pub fn vcpu(&self) -> u32 {
        self.vcpu
    }

    /// The Linux thread id of the registered thread, where known (used to attribute PC samples).
    pub fn tid(&self) -> Option<u32> {
        self.tid
    }

    /// Cycles charged so far to (ctx, class).
    pub fn cycles(&self, ctx: Context, class: Class) -> u64 {
        // Relaxed: pairs with the owner's relaxed store in `add_cycles`; a report may read a
        // value a few transitions old and needs each counter only individually consistent.
        self.cycles[ctx as usize][class.index()].load(Ordering::Relaxed)
    }

    /// Scope entries so far for (ctx, class).
    pub fn calls(&self, ctx: Context, class: Class) -> u64 {
        // Relaxed: pairs with the owner's relaxed store in `add_call`, as in `cycles`.
        self.calls[ctx as usize][class.index()].load(Ordering::Relaxed)
    }

    /// A copy of every counter now.
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut s = CounterSnapshot::ZERO;
        for c in 0..CONTEXTS {
            for k in 0..MAX_CLASSES {
                // Relaxed: pairs with the owner's relaxed stores in `add_cycles`/`add_call`.
                s.cycles[c][k] = self.cycles[c][k].load(Ordering::Relaxed);
                // Relaxed: as above.
                s.calls[c][k] = self.calls[c][k].load(Ordering::Relaxed);
            }
        }
        s
    }

    /// The (context, class) the thread is in now, as a sampler sees it.
    pub fn current(&self) -> (Context, Class) {
        unpack_tag(self.raw_tag())
    }

    /// Whether a sampler should count this vCPU now: its thread is alive and not blocked.
    pub fn is_running(&self) -> bool {
        self.raw_tag() & (TAG_BLOCKED | TAG_OFFLINE) == 0
    }

    /// Whether the thread has exited or re-registered (its counters stay for reports).
    pub fn is_offline(&self) -> bool {
        self.raw_tag() & TAG_OFFLINE != 0
    }

    /// Zeroes every counter. Only meaningful while the owning thread is idle; sessions do not
    /// use it (they subtract a baseline), so concurrent sessions cannot disturb each other.
    pub fn reset(&self) {
        for c in self.cycles.iter().chain(self.calls.iter()).flatten() {
            // Relaxed: races benignly with the owner's increments; see the doc comment.
            c.store(0, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    pub(crate) fn raw_tag(&self) -> u32 {
        // Relaxed: pairs with the relaxed store in `publish`; a sample is a snapshot of one word
        // and needs no ordering with other memory.
        self.tag.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub(crate) fn publish(&self, tag: u32) {
        // Relaxed: pairs with the relaxed load in `raw_tag` (the sampler).
        self.tag.store(tag, Ordering::Relaxed);
    }

    pub(crate) fn set_offline(&self) {
        // Relaxed: pairs with the relaxed load in `raw_tag`; the flag is advisory for samplers.
        self.tag.fetch_or(TAG_OFFLINE, Ordering::Relaxed);
    }

    /// The counter slot of a tag: `[context][class]`, clamped so no tag can index out of range.
    #[inline(always)]
    fn slot(tag: u32) -> (usize, usize) {
        let ctx = ((tag >> 8) & 0xff) as usize;
        (ctx.min(CONTEXTS - 1), (tag as usize) & (MAX_CLASSES - 1))
    }

    #[inline(always)]
    pub(crate) fn add_cycles_tag(&self, tag: u32, delta: u64) {
        let (x, k) = Self::slot(tag);
        let c = &self.cycles[x][k];
        // Relaxed load + store, not fetch_add: the owning thread is the only writer, so no
        // locked read-modify-write is needed. Pairs with the relaxed loads of readers above.
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    pub(crate) fn add_call_tag(&self, tag: u32) {
        let (x, k) = Self::slot(tag);
        let c = &self.calls[x][k];
        // Relaxed single-writer increment, as in `add_cycles_tag`.
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
}

#[inline(always)]
pub(crate) const fn pack_tag(ctx: Context, class: Class) -> u32 {
    ((ctx as u32) << 8) | class.index() as u32
}

pub(crate) fn unpack_tag(tag: u32) -> (Context, Class) {
    let ctx = Context::from_u8((tag >> 8) as u8);
    let class = Class::from_index((tag & 0xff) as usize).unwrap_or(Class::OTHER);
    (ctx, class)
}
