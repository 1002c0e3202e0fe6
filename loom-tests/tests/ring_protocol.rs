//! loom models of io/ring.h's protocol, and the seeded bugs they must catch.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release --target-dir target/loom`.
#![cfg(loom)]

use loom::thread;
use loom_tests::{Back, Event, Front, builder, pair, request, response};

use netif_ring::SeededBug;

/// (a) publish/consume: the consumer never reads a slot before its contents are written. Two
/// requests pushed separately; the backend takes whatever is visible and must see exactly the
/// requests written, in order, never a zeroed or stale slot.
fn publish_consume(bug: SeededBug) {
    builder().check(move || {
        netif_ring::seed_bug(bug);
        let (mut front, mut back) = pair(2);
        let producer = thread::spawn(move || {
            for seq in 0..2 {
                front.put_request(request(seq)).unwrap();
                front.push_requests();
            }
        });
        let mut seen = 0u16;
        for _ in 0..2 {
            while let Some(req) = back.next_request().unwrap() {
                assert_eq!(
                    req,
                    request(seen),
                    "slot read before its contents were written"
                );
                seen += 1;
            }
            thread::yield_now();
        }
        producer.join().unwrap();
    });
}

#[test]
fn a_publish_consume() {
    publish_consume(SeededBug::None);
}

#[test]
#[should_panic(expected = "slot read before its contents were written")]
fn a_publish_consume_catches_relaxed_publish() {
    publish_consume(SeededBug::PublishRelaxed);
}

/// (b) event suppression, requests: after a first request has been consumed (so `req_event` is
/// stale), the frontend pushes a second while the backend runs its final check and would go to
/// sleep if it saw nothing. The wakeup is lost exactly when the backend decides to sleep and the
/// frontend decides not to notify; the model asserts that never happens. (The decisions are
/// checked rather than acted on with a blocking wait, so a seeded bug fails with this message
/// instead of a loom deadlock, which cannot unwind cleanly; `c_wrap_around_small_ring` does block.)
fn no_lost_request_wakeup(bug: SeededBug) {
    builder().check(move || {
        netif_ring::seed_bug(bug);
        let (mut front, mut back) = pair(4);
        // Round one, sequential: the backend consumes request 0 without re-arming req_event.
        front.put_request(request(0)).unwrap();
        front.push_requests();
        assert_eq!(back.next_request().unwrap(), Some(request(0)));

        let backend = thread::spawn(move || {
            // Sleep only if the final check (req_event = req_cons + 1, mb, re-read) saw nothing.
            let sleeps = !back.final_check_for_requests().unwrap();
            if !sleeps {
                assert_eq!(back.next_request().unwrap(), Some(request(1)));
            }
            sleeps
        });
        front.put_request(request(1)).unwrap();
        let notified = front.push_requests_and_check_notify();
        let sleeps = backend.join().unwrap();
        assert!(
            !sleeps || notified,
            "lost wakeup: backend sleeps and frontend did not notify"
        );
    });
}

#[test]
fn b_no_lost_request_wakeup() {
    no_lost_request_wakeup(SeededBug::None);
}

#[test]
#[should_panic(expected = "lost wakeup")]
fn b_no_lost_request_wakeup_catches_missing_barrier() {
    no_lost_request_wakeup(SeededBug::NoFullBarrier);
}

/// (b) event suppression, responses: the mirror image, backend pushing and frontend sleeping.
fn no_lost_response_wakeup(bug: SeededBug) {
    builder().check(move || {
        netif_ring::seed_bug(bug);
        let (mut front, mut back) = pair(4);
        for seq in 0..2 {
            front.put_request(request(seq)).unwrap();
        }
        front.push_requests();
        back.next_request().unwrap().unwrap();
        back.next_request().unwrap().unwrap();
        back.put_response(response(0)).unwrap();
        back.push_responses();
        assert_eq!(front.next_response().unwrap(), Some(response(0)));

        let frontend = thread::spawn(move || {
            let sleeps = !front.final_check_for_responses().unwrap();
            if !sleeps {
                assert_eq!(front.next_response().unwrap(), Some(response(1)));
            }
            sleeps
        });
        back.put_response(response(1)).unwrap();
        let notified = back.push_responses_and_check_notify();
        let sleeps = frontend.join().unwrap();
        assert!(
            !sleeps || notified,
            "lost wakeup: frontend sleeps and backend did not notify"
        );
    });
}

#[test]
fn b_no_lost_response_wakeup() {
    no_lost_response_wakeup(SeededBug::None);
}

#[test]
#[should_panic(expected = "lost wakeup")]
fn b_no_lost_response_wakeup_catches_missing_barrier() {
    no_lost_response_wakeup(SeededBug::NoFullBarrier);
}

/// (c) wrap-around: three requests through a two-slot ring, both sides blocking on events and
/// woken only by notify decisions. Indices pass the ring size; order and content must hold
/// and nobody may sleep forever.
#[test]
fn c_wrap_around_small_ring() {
    const N: u16 = 3;
    builder().check(|| {
        let (front, back) = pair(2);
        let to_back = Event::new();
        let to_front = Event::new();
        let (tb, tf) = (to_back.clone(), to_front.clone());
        let backend = thread::spawn(move || serve(back, N, &tb, &tf));
        drive(front, N, &to_back, &to_front);
        backend.join().unwrap();
    });
}

fn serve(mut back: Back, n: u16, to_back: &Event, to_front: &Event) {
    let mut seq = 0;
    while seq < n {
        match back.next_request().unwrap() {
            Some(req) => {
                assert_eq!(req, request(seq), "request out of order across the wrap");
                back.put_response(response(seq)).unwrap();
                seq += 1;
                if back.push_responses_and_check_notify() {
                    to_front.notify();
                }
            }
            None => {
                if !back.final_check_for_requests().unwrap() {
                    to_back.wait();
                }
            }
        }
    }
}

fn drive(mut front: Front, n: u16, to_back: &Event, to_front: &Event) {
    let (mut sent, mut done) = (0, 0);
    while done < n {
        let mut progressed = false;
        if sent < n && front.put_request(request(sent)).is_ok() {
            sent += 1;
            progressed = true;
            if front.push_requests_and_check_notify() {
                to_back.notify();
            }
        }
        while let Some(rsp) = front.next_response().unwrap() {
            assert_eq!(rsp, response(done), "response out of order across the wrap");
            done += 1;
            progressed = true;
        }
        if !progressed && !front.final_check_for_responses().unwrap() {
            to_front.wait();
        }
    }
}
