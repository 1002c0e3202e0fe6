//! Notification suppression for a software queue: the `req_event`/`rsp_event` handshake of
//! `io/ring.h`, reduced to one flag, for queues that are not shared rings (the NIC model's
//! descriptor and completion queues between netback and its device).
//!
//! The consumer, before it sleeps, sets the flag and re-checks its queue
//! ([`WantEvent::arm`]); the producer, after it publishes items, asks whether to notify
//! ([`WantEvent::should_notify`]). A full barrier sits between each side's store and its load
//! (the store-buffering pattern), so at least one of them sees the other: either the consumer
//! finds the item on its re-check, or the producer finds the flag and notifies. Without the
//! barriers both can miss, and the consumer sleeps on an item nobody tells it about; the loom
//! model in `loom-tests/tests/uplink_notify.rs` shows exactly that with
//! [`SeededBug::NoFullBarrier`](crate::SeededBug::NoFullBarrier).

use crate::sync::{AtomicBool, Ordering, full_barrier};

/// The consumer's "wake me for the next item" flag.
#[derive(Debug, Default)]
pub struct WantEvent(AtomicBool);

impl WantEvent {
    /// A flag not armed: the producer need not notify until the consumer arms it.
    pub fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// Consumer, before sleeping: asks for an event, then re-checks with `has_work` (which
    /// must read the queue with at least `Acquire`). True: work is already there and the
    /// consumer must not sleep; false: the producer will notify for the next item.
    pub fn arm(&self, has_work: impl FnOnce() -> bool) -> bool {
        // Relaxed: ordered before the re-check by the full barrier below.
        self.0.store(true, Ordering::Relaxed);
        // Full barrier: store-load between the flag and the queue re-check; pairs with the
        // barrier in `should_notify` between the producer's publish and its flag read.
        full_barrier();
        has_work()
    }

    /// Producer, after publishing items (with at least `Release`): true if the consumer asked
    /// for an event and this caller is the one to send it (the flag is cleared, so one arming
    /// gets one notification).
    pub fn should_notify(&self) -> bool {
        // Full barrier: store-load between the publish and the flag read; pairs with the
        // barrier in `arm` between the consumer's flag store and its re-check.
        full_barrier();
        // Relaxed: ordered by the barrier; the swap decides which producer call notifies.
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::Relaxed)
    }
}
