//! loom models of the shared-ring protocol and of bridge-lite's MAC table shared by forwarding
//! threads (`tests/switch_fdb.rs`), and the small harness they share.
//!
//! The models live in `tests/`; they compile only under `--cfg loom` (see the README for the
//! command). The same `netif-ring` code runs here as on real pages: its `sync` module swaps in
//! loom's atomics and fences. [`Event`] is an event channel in miniature — a pending flag, a
//! notify and a blocking wait — so a lost wakeup shows up as loom's deadlock detection, exactly as
//! it would show up as a hang in a real domain.
#![forbid(unsafe_code)]

#[cfg(loom)]
pub use model::*;

#[cfg(loom)]
mod model {
    use loom::sync::{Arc, Condvar, Mutex};
    use netif_ring::netif::{TxRequest, TxResponse};
    use netif_ring::{BackRing, FrontRing, OwnedRing, TxRing};

    /// Ring memory shared by the modelled threads.
    pub type Mem = Arc<OwnedRing>;
    /// A frontend over modelled memory.
    pub type Front = FrontRing<TxRing, Mem>;
    /// A backend over modelled memory.
    pub type Back = BackRing<TxRing, Mem>;

    /// A fresh ring of `slots` slots and both its handles.
    pub fn pair(slots: u32) -> (Front, Back) {
        let mem = Arc::new(OwnedRing::new::<TxRing>(slots));
        (FrontRing::init(mem.clone()), BackRing::attach(mem))
    }

    /// The request with sequence number `seq`: every field derived from `seq`, so a slot read
    /// before it was written (zeros, or an older request) cannot pass for it.
    pub fn request(seq: u16) -> TxRequest {
        TxRequest {
            gref: 0x1000 + seq as u32,
            offset: 2 * seq + 1,
            flags: 0,
            id: seq,
            size: 60 + seq,
        }
    }

    /// The response to `request(seq)`.
    pub fn response(seq: u16) -> TxResponse {
        TxResponse {
            id: seq,
            status: seq as i16 + 1,
        }
    }

    /// An event channel in miniature: `notify` sets a pending flag and wakes the waiter; `wait`
    /// blocks until the flag is set and clears it. Blocking (rather than spinning) lets loom's
    /// deadlock detection catch a wakeup that never comes.
    #[derive(Debug, Default)]
    pub struct Event {
        pending: Mutex<bool>,
        cv: Condvar,
    }

    impl Event {
        /// A new event, wrapped for sharing between modelled threads.
        pub fn new() -> Arc<Event> {
            Arc::new(Event::default())
        }

        /// Marks the event pending and wakes a waiter.
        pub fn notify(&self) {
            *self.pending.lock().unwrap() = true;
            self.cv.notify_one();
        }

        /// Blocks until the event is pending, then clears it.
        pub fn wait(&self) {
            let mut p = self.pending.lock().unwrap();
            while !*p {
                p = self.cv.wait(p).unwrap();
            }
            *p = false;
        }
    }

    /// A loom model builder with the suite's preemption bound (`LOOM_MAX_PREEMPTIONS` overrides).
    pub fn builder() -> loom::model::Builder {
        let mut b = loom::model::Builder::new();
        if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
            b.preemption_bound = Some(3);
        }
        b
    }
}
