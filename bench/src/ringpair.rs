//! Cross-thread request/response throughput: the splitnet ring against crossbeam's `ArrayQueue`.
//!
//! Both run the same workload: a frontend thread sends `n` requests and consumes `n` responses; a
//! backend thread answers each request. Waiting never spins without bound: a side with nothing to
//! do snoozes with crossbeam's `Backoff` and then blocks. The ring blocks on an [`Event`] and is
//! woken only when the peer's push-and-check-notify says so (ring.h's suppression); the
//! `ArrayQueue` pair has no suppression protocol, so it parks with a short timeout instead.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::Backoff;
use netif_ring::netif::{TxRequest, TxResponse};
use netif_ring::{BackRing, FrontRing, OwnedRing, TxRing};

/// An event channel in miniature: pending flag, notify, blocking wait.
#[derive(Debug, Default)]
pub struct Event {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Event {
    /// Sets the event pending and wakes the waiter.
    pub fn notify(&self) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_one();
    }

    /// Blocks until pending (or `timeout`), then clears it.
    pub fn wait(&self, timeout: Duration) {
        let g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (mut p, _) = self
            .cv
            .wait_timeout_while(g, timeout, |p| !*p)
            .unwrap_or_else(|e| e.into_inner());
        *p = false;
    }
}

/// What one cross-thread run did.
#[derive(Debug, Clone, Copy)]
pub struct RunStats {
    /// Wall time for all round trips.
    pub elapsed: Duration,
    /// Notifications sent (both directions).
    pub notifies: u64,
}

const WAIT: Duration = Duration::from_millis(100);

fn request(seq: u32) -> TxRequest {
    TxRequest {
        gref: seq,
        offset: 0,
        flags: 0,
        id: seq as u16,
        size: 60,
    }
}

/// Sends `n` requests through a page-sized tx ring and takes `n` responses, with batches of up to
/// `burst` per push.
pub fn ring_round_trips(n: u32, burst: u32) -> RunStats {
    let mem = Arc::new(OwnedRing::page());
    let mut front: FrontRing<TxRing, _> = FrontRing::init(mem.clone());
    let mut back: BackRing<TxRing, _> = BackRing::attach(mem);
    let to_back = Arc::new(Event::default());
    let to_front = Arc::new(Event::default());
    let (tb, tf) = (to_back.clone(), to_front.clone());
    let start = Instant::now();
    let server = thread::spawn(move || {
        let mut done = 0;
        let mut notifies = 0u64;
        let backoff = Backoff::new();
        while done < n {
            let mut got = 0;
            while got < burst {
                match back.next_request() {
                    Ok(Some(req)) => {
                        let rsp = TxResponse {
                            id: req.id,
                            status: 0,
                        };
                        if back.put_response(rsp).is_err() {
                            break;
                        }
                        got += 1;
                    }
                    _ => break,
                }
            }
            if got > 0 {
                done += got;
                backoff.reset();
                if back.push_responses_and_check_notify() {
                    notifies += 1;
                    tf.notify();
                }
            } else if !backoff.is_completed() {
                backoff.snooze();
            } else if !back.final_check_for_requests().unwrap_or(true) {
                tb.wait(WAIT);
                backoff.reset();
            }
        }
        notifies
    });
    let (mut sent, mut answered, mut notifies) = (0u32, 0u32, 0u64);
    let backoff = Backoff::new();
    while answered < n {
        let mut progressed = false;
        let mut put = 0;
        while sent < n && put < burst && front.put_request(request(sent)).is_ok() {
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
        while let Ok(Some(rsp)) = front.next_response() {
            debug_assert_eq!(rsp.id, answered as u16);
            answered += 1;
            progressed = true;
        }
        if progressed {
            backoff.reset();
        } else if !backoff.is_completed() {
            backoff.snooze();
        } else if !front.final_check_for_responses().unwrap_or(true) {
            to_front.wait(WAIT);
            backoff.reset();
        }
    }
    notifies += server.join().unwrap_or(0);
    RunStats {
        elapsed: start.elapsed(),
        notifies,
    }
}

/// The same workload through two crossbeam `ArrayQueue`s of 256 entries (requests and responses).
pub fn array_queue_round_trips(n: u32, burst: u32) -> RunStats {
    let req_q = Arc::new(ArrayQueue::<TxRequest>::new(256));
    let rsp_q = Arc::new(ArrayQueue::<TxResponse>::new(256));
    let (rq, sq) = (req_q.clone(), rsp_q.clone());
    let start = Instant::now();
    let server = thread::spawn(move || {
        let mut done = 0;
        let backoff = Backoff::new();
        while done < n {
            let mut got = 0;
            while got < burst {
                let Some(req) = rq.pop() else { break };
                let mut rsp = TxResponse {
                    id: req.id,
                    status: 0,
                };
                // The response queue has room for every outstanding request; retry if the
                // frontend has not drained it yet.
                while let Err(back) = sq.push(rsp) {
                    rsp = back;
                    thread::yield_now();
                }
                got += 1;
            }
            if got > 0 {
                done += got;
                backoff.reset();
            } else if !backoff.is_completed() {
                backoff.snooze();
            } else {
                thread::park_timeout(Duration::from_micros(50));
            }
        }
    });
    let (mut sent, mut answered, mut outstanding) = (0u32, 0u32, 0u32);
    let backoff = Backoff::new();
    while answered < n {
        let mut progressed = false;
        let mut put = 0;
        while sent < n && put < burst && outstanding < 256 && req_q.push(request(sent)).is_ok() {
            sent += 1;
            put += 1;
            outstanding += 1;
        }
        progressed |= put > 0;
        while let Some(rsp) = rsp_q.pop() {
            debug_assert_eq!(rsp.id, answered as u16);
            answered += 1;
            outstanding -= 1;
            progressed = true;
        }
        if progressed {
            backoff.reset();
        } else if !backoff.is_completed() {
            backoff.snooze();
        } else {
            thread::park_timeout(Duration::from_micros(50));
        }
    }
    let _ = server.join();
    RunStats {
        elapsed: start.elapsed(),
        notifies: 0,
    }
}

/// Single-thread push/pop through one ring: put `burst` requests, push, consume them, answer,
/// push, consume the responses; `n` slots in all. Returns slots moved.
pub fn ring_single_thread(n: u32, burst: u32) -> u32 {
    let mem = OwnedRing::page();
    let mut front: FrontRing<TxRing, _> = FrontRing::init(&mem);
    let mut back: BackRing<TxRing, _> = BackRing::attach(&mem);
    let mut moved = 0;
    while moved < n {
        for i in 0..burst {
            let _ = front.put_request(request(moved + i));
        }
        front.push_requests();
        while let Ok(Some(req)) = back.next_request() {
            let _ = back.put_response(TxResponse {
                id: req.id,
                status: 0,
            });
        }
        back.push_responses();
        while let Ok(Some(_)) = front.next_response() {}
        moved += burst;
    }
    moved
}

/// The single-thread workload through two `ArrayQueue`s.
pub fn array_queue_single_thread(n: u32, burst: u32) -> u32 {
    let req_q = ArrayQueue::<TxRequest>::new(256);
    let rsp_q = ArrayQueue::<TxResponse>::new(256);
    let mut moved = 0;
    while moved < n {
        for i in 0..burst {
            let _ = req_q.push(request(moved + i));
        }
        while let Some(req) = req_q.pop() {
            let _ = rsp_q.push(TxResponse {
                id: req.id,
                status: 0,
            });
        }
        while rsp_q.pop().is_some() {}
        moved += burst;
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_workloads_complete() {
        assert!(ring_round_trips(10_000, 64).notifies > 0);
        array_queue_round_trips(10_000, 64);
        assert_eq!(ring_single_thread(6400, 64), 6400);
        assert_eq!(array_queue_single_thread(6400, 64), 6400);
    }
}
