//! The one place that decides between std and loom atomics (DESIGN decision 7, as in
//! `netif-ring`).
//!
//! Everything in this crate takes its atomics, `Ordering` and `fence` from here, so the MAC
//! table's concurrent code runs unchanged under loom's model checker (`--cfg loom`, the models
//! live in `loom-tests`). Under `cfg(loom)` this module also carries the seeded-bug switch the
//! models use to show they have teeth; outside loom the switch is a constant and compiles away.
//!
//! One deliberate exception, [`Counter`]: statistics counters written by one thread and only
//! read for reports are std atomics even under loom. They carry no protocol (nothing is
//! published through them), and modelling them would multiply the interleavings loom explores
//! for nothing.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Deliberate bugs in the MAC table's concurrency protocol, injectable only in loom builds
/// (see `loom-tests/tests/switch_fdb.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeededBug {
    /// The correct protocol.
    None,
    /// A learner does not re-check, after publishing an entry, that its port is still the
    /// generation it forwards for: an entry can outlive the port's removal.
    NoPortRecheck,
    /// A learner of a new MAC does not look for a twin another learner put in the same bucket
    /// at the same moment: the MAC can stay in the table twice.
    NoTwinRecheck,
    /// A learner checks its port's cap and adds to its count in two steps instead of one
    /// read-modify-write: two learners can both take the last place.
    CapCheckThenAdd,
    /// The learner's full barrier (entry store, then port/twin re-read) removed: the store can
    /// be ordered after the re-read, so the learner and the control path can miss each other.
    NoLearnBarrier,
}

#[cfg(loom)]
mod seeded {
    use super::SeededBug;
    use std::cell::Cell;

    std::thread_local! {
        // loom runs every modelled thread as a coroutine on the thread that called
        // `loom::model`, so a value set by the test is seen by all of them and tests running
        // in other threads are unaffected.
        static BUG: Cell<SeededBug> = const { Cell::new(SeededBug::None) };
    }

    pub fn set(bug: SeededBug) {
        BUG.with(|b| b.set(bug));
    }

    pub fn get() -> SeededBug {
        BUG.with(|b| b.get())
    }
}

/// Injects a protocol bug for the loom models on this thread (loom builds only).
#[cfg(loom)]
pub fn seed_bug(bug: SeededBug) {
    seeded::set(bug);
}

/// Whether `bug` is seeded (always false outside loom).
#[inline(always)]
pub(crate) fn seeded(bug: SeededBug) -> bool {
    #[cfg(loom)]
    {
        seeded::get() == bug
    }
    #[cfg(not(loom))]
    {
        let _ = bug;
        false
    }
}

/// The full barrier (store-load; only a SeqCst fence gives it) between a learner publishing an
/// entry and re-reading its port's generation and the bucket. It pairs with the same fence in
/// `Fdb::close_port` (between bumping the port's generation and scanning for its entries) and
/// with the fence of a twin learner of the same MAC: of two threads that each store and then
/// load what the other stored, at least one sees the other's store.
#[inline(always)]
pub(crate) fn learn_barrier() {
    if seeded(SeededBug::NoLearnBarrier) {
        return;
    }
    fence(Ordering::SeqCst);
}

/// The control path's half of [`learn_barrier`]: between a store that retires or pins
/// something and the scan that cleans up behind it.
#[inline(always)]
pub(crate) fn control_barrier() {
    fence(Ordering::SeqCst);
}

/// A statistics counter with a single writer (the thread owning the block it lives in) and any
/// number of readers taking reports. The writer adds with a plain load and store (no locked
/// read-modify-write: nobody else writes), so counting costs what a `u64 +=` costs; a reader
/// may see a count a few events old, never a torn one. Always a std atomic (see the module
/// docs).
#[derive(Debug, Default)]
pub(crate) struct Counter(std::sync::atomic::AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning thread calls this.
    #[inline(always)]
    pub(crate) fn add(&self, n: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: a single writer, and readers want a value, not an ordering.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// The current count.
    #[inline(always)]
    pub(crate) fn get(&self) -> u64 {
        // Relaxed: a report, ordered by nothing.
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}
