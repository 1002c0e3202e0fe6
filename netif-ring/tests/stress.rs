//! Two threads, millions of requests and responses, checked order and content. Both sides block
//! when idle and are woken only when the ring's notify decision says so: a lost wakeup shows up as
//! a hang, which the wait timeout turns into a failure naming the side that hung.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use netif_ring::netif::{TxRequest, TxResponse};
use netif_ring::{BackRing, FrontRing, OwnedRing, TxRing};

/// An event channel in miniature: a pending flag, a notify that sets it, a wait that blocks until
/// it is set and clears it.
#[derive(Default)]
struct Event {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Event {
    fn notify(&self) {
        *self.pending.lock().unwrap() = true;
        self.cv.notify_one();
    }

    #[track_caller]
    fn wait(&self, who: &str) {
        let guard = self.pending.lock().unwrap();
        let (mut pending, timeout) = self
            .cv
            .wait_timeout_while(guard, Duration::from_secs(20), |p| !*p)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "{who} waited 20 s for an event that never came: a lost wakeup"
        );
        *pending = false;
    }
}

fn payload(seq: u32) -> TxRequest {
    TxRequest {
        gref: seq,
        offset: (seq % 4096) as u16,
        flags: (seq >> 12) as u16,
        id: seq as u16,
        size: (seq.wrapping_mul(2654435761) >> 16) as u16,
    }
}

fn run(total: u32, slots: u32, burst: u32) -> (u64, u64) {
    let mem = Arc::new(OwnedRing::new::<TxRing>(slots));
    let to_back = Arc::new(Event::default());
    let to_front = Arc::new(Event::default());
    let mut front: FrontRing<TxRing, _> = FrontRing::init(mem.clone());
    let mut back: BackRing<TxRing, _> = BackRing::attach(mem);

    let (tb, tf) = (to_back.clone(), to_front.clone());
    let backend = thread::spawn(move || {
        let mut expect = 0u32;
        let mut notifies = 0u64;
        while expect < total {
            let mut got = 0;
            while let Some(req) = back.next_request().expect("frontend is well-behaved") {
                assert_eq!(
                    req,
                    payload(expect),
                    "request {expect} out of order or torn"
                );
                back.put_response(TxResponse {
                    id: req.id,
                    status: (expect % 3) as i16,
                })
                .expect("one response per request");
                expect += 1;
                got += 1;
                if got == burst {
                    break;
                }
            }
            if got > 0 {
                if back.push_responses_and_check_notify() {
                    notifies += 1;
                    tf.notify();
                }
            } else if !back.final_check_for_requests().unwrap() {
                tb.wait("backend");
            }
        }
        notifies
    });

    let mut sent = 0u32;
    let mut answered = 0u32;
    let mut notifies = 0u64;
    while answered < total {
        let mut progressed = false;
        let mut put = 0;
        while sent < total && put < burst && front.put_request(payload(sent)).is_ok() {
            sent += 1;
            put += 1;
        }
        if put > 0 {
            progressed = true;
            if front.push_requests_and_check_notify() {
                notifies += 1;
                to_back.notify();
            }
        }
        while let Some(rsp) = front.next_response().expect("backend is well-behaved") {
            assert_eq!(rsp.id, answered as u16, "response {answered} out of order");
            assert_eq!(rsp.status, (answered % 3) as i16);
            answered += 1;
            progressed = true;
        }
        // Nothing to send and nothing received: sleep until the backend says there is more.
        if !progressed && !front.final_check_for_responses().unwrap() {
            to_front.wait("frontend");
        }
    }
    let back_notifies = backend.join().expect("backend thread");
    (notifies, back_notifies)
}

#[test]
fn two_threads_two_million_round_trips() {
    let total = 2_000_000;
    let (front_notifies, back_notifies) = run(total, 256, 64);
    // Suppression works: far fewer notifications than messages in either direction.
    assert!(front_notifies < total as u64 && back_notifies < total as u64);
}

#[test]
fn tiny_ring_single_slot_bursts_wrap_many_times() {
    // A 2-slot ring with bursts of one wraps the indices 500k times and makes every request and
    // response a notify decision: the harshest schedule for a lost wakeup.
    run(1_000_000, 2, 1);
}
