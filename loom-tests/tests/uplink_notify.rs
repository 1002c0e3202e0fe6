//! loom models of the uplink's notify protocol ([`netif_ring::notify::WantEvent`]): the NIC model's
//! queues between netback and its device suppress notifications with one flag per direction,
//! and a lost wakeup there stalls the uplink as surely as one on a shared ring.
//!
//! The queue is modelled by its published length (an `AtomicUsize` pushed with `Release` and
//! read with `Acquire`, as crossbeam's `ArrayQueue` publishes a slot): only acquire/release
//! between the two sides, so nothing but the protocol's own barriers can save a wakeup.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release --target-dir target/loom`.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use loom_tests::builder;
use netif_ring::SeededBug;
use netif_ring::notify::WantEvent;

struct Queue {
    len: AtomicUsize,
    want: WantEvent,
}

/// The consumer drains an item, then goes to sleep (arms and re-checks) while the producer
/// pushes a second item and decides whether to notify. The wakeup is lost exactly when the
/// consumer sleeps, the producer does not notify, and the item is there; the model asserts that
/// never happens. Two rounds, so the flag is exercised after a first arming was consumed.
fn no_lost_uplink_wakeup(bug: SeededBug) {
    builder().check(move || {
        netif_ring::seed_bug(bug);
        let q = Arc::new(Queue {
            len: AtomicUsize::new(0),
            want: WantEvent::new(),
        });
        let consumer = {
            let q = q.clone();
            thread::spawn(move || {
                let mut taken = 0;
                let mut sleeps = false;
                for _ in 0..2 {
                    // Acquire: pairs with the producer's Release push.
                    if q.len.load(Ordering::Acquire) > taken {
                        taken += 1;
                        continue;
                    }
                    // Acquire in the re-check: pairs with the Release push.
                    if !q.want.arm(|| q.len.load(Ordering::Acquire) > taken) {
                        sleeps = true;
                        break;
                    }
                    taken += 1;
                }
                (taken, sleeps)
            })
        };
        let mut notified = false;
        for _ in 0..2 {
            // Release: publishes the item; pairs with the consumer's Acquire loads.
            q.len.fetch_add(1, Ordering::Release);
            notified |= q.want.should_notify();
        }
        let (taken, sleeps) = consumer.join().unwrap();
        assert!(
            !(sleeps && !notified && taken < 2),
            "lost wakeup: the consumer sleeps on {} item(s) and the producer did not notify",
            2 - taken
        );
    });
}

#[test]
fn uplink_notify_loses_no_wakeup() {
    no_lost_uplink_wakeup(SeededBug::None);
}

#[test]
#[should_panic(expected = "lost wakeup")]
fn uplink_notify_catches_a_missing_barrier() {
    no_lost_uplink_wakeup(SeededBug::NoFullBarrier);
}
