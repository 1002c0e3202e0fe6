//! The one place that decides between std and loom atomics.
//!
//! Everything in this crate imports its atomics, `Ordering` and `fence` from here, so the same ring
//! code runs on real shared pages and under loom's model checker. Under `cfg(loom)` this module
//! also carries the seeded-bug switch the loom suite uses to show its models have teeth: the
//! publish store can be weakened to `Relaxed` and the full barrier before reading the peer's event
//! index can be removed. Outside loom both are constants and compile away.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};

/// Deliberate protocol bugs, injectable only in loom builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeededBug {
    /// The correct protocol.
    None,
    /// `req_prod`/`rsp_prod` published with `Relaxed` instead of `Release`.
    PublishRelaxed,
    /// The full barrier between publishing a producer index and reading the peer's event index
    /// (and between setting an event index and re-reading the producer) removed.
    NoFullBarrier,
}

#[cfg(loom)]
mod seeded {
    use super::SeededBug;
    use std::cell::Cell;

    std::thread_local! {
        // loom runs every modelled thread as a coroutine on the thread that called
        // `loom::model`, so a thread-local set by the test is seen by all of them and tests in
        // other threads are unaffected.
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

/// The ordering of a producer-index publish: `Release`, pairing with the consumer's `Acquire`
/// load of the same index, so slot contents written before the publish are visible after it.
#[inline(always)]
pub(crate) fn publish_order() -> Ordering {
    #[cfg(loom)]
    if seeded::get() == SeededBug::PublishRelaxed {
        return Ordering::Relaxed;
    }
    Ordering::Release
}

/// ring.h's `mb()`/`xen_mb()`: a full barrier ordering an earlier store before a later load
/// (store-load, which only a SeqCst fence gives). Each call site names the fence it pairs with.
#[inline(always)]
pub(crate) fn full_barrier() {
    #[cfg(loom)]
    if seeded::get() == SeededBug::NoFullBarrier {
        return;
    }
    fence(Ordering::SeqCst);
}
