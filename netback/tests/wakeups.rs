//! Lost wakeups: the backend runs with its poll interval set to an hour, so nothing moves
//! unless a notification, a watch, an uplink or the backend's own timers wake it. Every step
//! below would hang (and the [`GUARD`] turn that into a failure) if one were missed: the
//! xenbus handshake, guest to guest in bursts that each start with the backend asleep, an rx
//! ring run dry and refilled, a tx ring filled while the backend is busy, the wire in both
//! directions, and a frame expiring in the queue of a guest that never posts buffers.

mod threaded;

use std::thread;
use std::time::{Duration, Instant};

use netback::{Config, VifStats};
use netfront::RxMode;
use threaded::{Backend, GUARD, Guest, exchange, expect_frames, guest, mac, vif};
use xen_model::{DomainHandle, Hypervisor};

/// Far longer than any test runs: the backend never wakes on its own account.
const HOURS: Duration = Duration::from_secs(3 * 3600);
/// How long a frame may wait for guest buffers before the backend drops it.
const DRAIN: Duration = Duration::from_millis(300);

/// Guest `domid`'s vif counters, asked of the backend (which wakes it).
fn stats(be: &Backend, domid: u16) -> VifStats {
    be.run(move |nb| {
        nb.snapshot()
            .vifs
            .into_iter()
            .find(|(id, _)| *id == vif(domid, 0))
            .map(|(_, st)| st)
            .expect("the vif is connected")
    })
}

fn machine() -> (Hypervisor, DomainHandle, Backend) {
    let xen = Hypervisor::new(32 * 1024).expect("machine");
    let dom0 = xen.create_domain(4096).expect("dom0");
    let cfg = Config {
        poll_interval: HOURS,
        rx_drain_timeout: DRAIN,
        ..Config::default()
    };
    let be = Backend::start_with(dom0.clone(), cfg);
    (xen, dom0, be)
}

/// Two guests connected through xenbus (each connect waits on the backend's watch-driven
/// state changes: a missed watch would hang here).
fn two_guests(xen: &Hypervisor) -> (Guest, Guest) {
    let (da, _) = guest(xen, 1, 0, mac(2));
    let (db, _) = guest(xen, 2, 0, mac(3));
    let a = Guest::connect(&da, 0, mac(2), RxMode::Copy);
    let b = Guest::connect(&db, 0, mac(3), RxMode::Copy);
    (a, b)
}

#[test]
fn bursts_that_each_start_with_the_backend_asleep_all_arrive() {
    let (xen, _dom0, be) = machine();
    let (mut a, mut b) = two_guests(&xen);
    for round in 0..50 {
        // Long enough for the backend to have re-armed every ring and blocked.
        thread::sleep(Duration::from_millis(2));
        exchange(&mut a, &mut b, 1 + round % 5);
    }
    let a_stats = stats(&be, 1);
    assert_eq!(a_stats.tx_packets, a_stats.rx_packets);
    assert_eq!(a_stats.rx_queue_full + a_stats.rx_expired, 0, "{a_stats:?}");
    a.close();
    b.close();
}

#[test]
fn an_rx_ring_run_dry_is_served_again_when_the_guest_refills_it() {
    let (xen, _dom0, be) = machine();
    let (mut a, mut b) = two_guests(&xen);
    // B posted 64 buffers and does not look at its ring while A sends 100 frames: 64 land,
    // 36 wait in B's queue and the backend arms the ring for B's next request.
    let sent: Vec<Vec<u8>> = (0..100).map(|_| a.send_to(b.mac, 200)).collect();
    let start = Instant::now();
    while stats(&be, 2).rx_packets < 64 {
        assert!(start.elapsed() < GUARD, "B's buffers never filled");
        a.nf.poll().expect("A poll");
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(5));
    // B takes its frames, refilling 16 buffers at a time: only its refill notifications can
    // get the remaining 36 out of the queue.
    expect_frames(&mut a, &mut b, &sent);
    a.close();
    b.close();
}

#[test]
fn a_tx_ring_filled_while_the_backend_is_parked_is_drained_when_it_resumes() {
    let (xen, _dom0, be) = machine();
    let (mut a, mut b) = two_guests(&xen);
    // The backend is busy (parked in a job) while A fills its ring; A's notification arrives
    // while the backend is not waiting for it.
    let sent = be.paused(|| (0..48).map(|_| a.send_to(b.mac, 600)).collect::<Vec<_>>());
    expect_frames(&mut a, &mut b, &sent);
    a.close();
    b.close();
}

#[test]
fn the_wire_wakes_the_backend_both_ways() {
    let (xen, _dom0, be) = machine();
    let (mut a, mut b) = two_guests(&xen);
    let remote = xen.create_domain(16).expect("remote host's pseudo-domain");
    let (_port, mut wire) =
        be.run(move |nb| xen_model::nic::attach(nb, &remote, 1514).expect("wire"));
    let host = mac(9);
    for round in 0..20u32 {
        thread::sleep(Duration::from_millis(2));
        // Wire → guest.
        let inbound = Guest::frame(host, a.mac, 1514, round);
        assert!(
            wire.send(inbound.len(), |buf| buf.copy_from_slice(&inbound))
                .is_some()
        );
        wire.flush();
        let start = Instant::now();
        let got = loop {
            if let Some(f) = a.try_recv() {
                break f;
            }
            assert!(
                start.elapsed() < GUARD,
                "round {round}: wire → A never arrived"
            );
            a.nf.wait(Some(Duration::from_millis(5))).expect("A wait");
        };
        assert_eq!(got, inbound, "round {round}");
        // Guest → wire (the switch learnt the host's MAC on the uplink's port).
        thread::sleep(Duration::from_millis(2));
        let outbound = a.send_to(host, 900);
        let start = Instant::now();
        let got = loop {
            if let Some(f) = wire.take_frame() {
                break f.to_vec();
            }
            assert!(
                start.elapsed() < GUARD,
                "round {round}: A → wire never arrived"
            );
            if !wire.arm(false) {
                wire.wait(Duration::from_millis(5));
            }
        };
        assert_eq!(got, outbound, "round {round}");
    }
    exchange(&mut a, &mut b, 2);
    a.close();
    b.close();
}

#[test]
fn a_frame_expires_in_the_queue_of_a_guest_that_never_posts_buffers() {
    let (xen, _dom0, be) = machine();
    let (mut a, b) = two_guests(&xen);
    // 64 frames fill B's posted buffers, 10 more wait in its queue; B never looks again.
    for _ in 0..74 {
        a.send_to(b.mac, 100);
    }
    let start = Instant::now();
    while stats(&be, 2).rx_packets < 64 {
        assert!(start.elapsed() < GUARD, "B's buffers never filled");
        a.nf.poll().expect("A poll");
        thread::sleep(Duration::from_millis(1));
    }
    // From here nothing notifies the backend. Inside one job, block the way the serving loop
    // does and pass after each wake until the queue has expired: with an hour's poll
    // interval, only the backend's own expiry deadline ends the wait.
    let (expired, wakes, waited) = be.run(|nb| {
        let start = Instant::now();
        let mut wakes = 0;
        loop {
            while nb.poll().expect("pass") {}
            let expired = nb
                .snapshot()
                .vifs
                .iter()
                .find(|(id, _)| *id == vif(2, 0))
                .map_or(0, |(_, st)| st.rx_expired);
            if expired >= 10 || start.elapsed() > GUARD {
                return (expired, wakes, start.elapsed());
            }
            nb.wait(HOURS).expect("wait");
            wakes += 1;
        }
    });
    assert_eq!(
        expired, 10,
        "the queued frames expire (after {waited:?}, {wakes} wakes)"
    );
    // Each wake is a deadline come due (the stalled guest's grace, each frame's expiry: they
    // were queued one by one) or a late notification: a few dozen at most. A deadline already
    // past would make `wait` return at once, over and over, for the whole drain timeout.
    assert!(wakes <= 30, "{wakes} wakes in {waited:?}: the backend spun");
    a.close();
    b.close();
}

/// Per-queue NAPI: a guest that stays idle while another streams has its tx ring armed and is
/// skipped by the busy backend's passes; its next frame is served as soon as it notifies, even
/// though the backend never waits (events are collected before each pass while a ring is
/// armed). With the poll interval at hours, a missed event would hang here.
#[test]
fn an_idle_guest_is_skipped_while_another_streams_and_served_when_it_notifies() {
    let (xen, _dom0, be) = machine();
    let (mut a, mut b) = two_guests(&xen);
    let (dc, _) = guest(&xen, 3, 0, mac(4));
    let mut c = Guest::connect(&dc, 0, mac(4), RxMode::Copy);
    // Everyone known to the switch, then C idles.
    exchange(&mut a, &mut b, 1);
    exchange(&mut c, &mut b, 1);
    let armed = |be: &Backend, domid: u16| {
        be.run(move |nb| {
            nb.vif_dump(vif(domid, 0))
                .expect("connected")
                .queues
                .iter()
                .all(|q| q.tx_armed)
        })
    };
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        // A keeps the backend busy; C says nothing.
        exchange(&mut a, &mut b, 4);
        rounds += 1;
        if armed(&be, 3) {
            break;
        }
        assert!(
            start.elapsed() < GUARD,
            "C's idle tx ring was never armed ({rounds} rounds of A's traffic)"
        );
    }
    for round in 0..20 {
        // C's frame, sent into an armed ring while A streams, must arrive.
        let from_c = c.send_to(b.mac, 100 + round);
        let from_a: Vec<Vec<u8>> = (0..4).map(|_| a.send_to(b.mac, 300)).collect();
        let mut want = vec![from_c];
        want.extend(from_a);
        expect_frames_any_order(&mut b, &want);
        // Let C's ring go idle again.
        thread::sleep(Duration::from_millis(1));
    }
    let c_stats = stats(&be, 3);
    assert_eq!(c_stats.tx_packets, 21, "{c_stats:?}");
    a.close();
    b.close();
    c.close();
}

/// Receives `want.len()` frames on `to` (within [`GUARD`]) and checks they are `want`, in any
/// order (frames of two guests interleave at the switch).
fn expect_frames_any_order(to: &mut Guest, want: &[Vec<u8>]) {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < want.len() {
        match to.try_recv() {
            Some(f) => got.push(f),
            None => {
                assert!(
                    start.elapsed() < GUARD,
                    "{} of {} frames arrived",
                    got.len(),
                    want.len()
                );
                thread::yield_now();
            }
        }
    }
    let mut w = want.to_vec();
    w.sort();
    got.sort();
    assert_eq!(got, w);
}
