//! One guest cannot degrade another through what they share: the frame pool (counted in pages,
//! not payload bytes), the rx queue (each frame expires on its own), the MAC table (a cap per
//! port).

use std::time::Duration;

use netback::Config;
use testkit::{Guest, Nb, Scene, broadcast, frame};

#[test]
fn queued_small_frames_pin_at_most_the_vifs_share_of_pages_and_others_still_send() {
    // 2048 pool pages and three vifs: each rx queue may pin 2048 / (3 + 1) = 512 pages.
    let mut s = Scene::new(Config::default());
    let h = s.front(Guest::mac(9));
    let mut a = s.front(Guest::mac(1));
    let mut b = s.front(Guest::mac(2));
    a.post_rx(64);
    // h posts no buffers; b floods it with 60-byte broadcasts (each pins a whole page). By
    // bytes alone 512 KiB would hold 8 738 of them.
    for i in 0..1200u32 {
        b.send(&broadcast(2, 60, i));
        s.nb.poll().unwrap();
        b.reap_tx();
        a.recv();
        if i % 32 == 0 {
            a.post_rx(32);
        }
    }
    let hs = s.nb.vif_stats(h.id()).unwrap();
    assert_eq!(
        hs.rx_queue_full,
        1200 - 512,
        "512 pages queued, the rest dropped: {hs:?}"
    );
    // The high-water marks: the share in pages, 512 frames of 60 bytes.
    assert_eq!(hs.rx_queue_peak_pages, 512, "{hs:?}");
    assert_eq!(hs.rx_queue_peak_bytes, 512 * 60, "{hs:?}");
    // a's queue drained as it posted buffers; its mark stays where the queue once stood.
    let as_ = s.nb.vif_stats(a.id()).unwrap();
    assert!(as_.rx_packets > 0, "{as_:?}");
    assert!(
        as_.rx_queue_peak_bytes >= 60 && as_.rx_queue_peak_pages <= 512,
        "{as_:?}"
    );
    assert!(
        s.nb.pool().owned_pages() <= 512 + 64,
        "the pool holds h's share and little else: {}",
        s.nb.pool().owned_pages()
    );
    // Another guest's transmit still finds buffers.
    a.send(&frame(1, 2, 1000, 7));
    s.nb.poll().unwrap();
    assert_eq!(s.nb.vif_stats(a.id()).unwrap().tx_no_buffer, 0);
    assert_eq!(s.nb.vif_stats(b.id()).unwrap().tx_no_buffer, 0);
}

/// A guest that takes its frames slowly (one buffer per pass) is not a PAUSE for everyone: the
/// wire's frames reach a fast guest at the wire's pace, and the slow guest's surplus is its own
/// drops, counted at its queue.
#[test]
fn a_slow_guest_never_holds_the_wire_back() {
    let cfg = Config {
        rx_queue_bytes: 70_000,
        ..Config::default()
    };
    let mut s = Scene::new(cfg);
    let mut wire = s.nic(1514);
    let mut slow = s.front(Guest::mac(9));
    let mut fast = s.front(Guest::mac(1));
    fast.post_rx(64);
    slow.post_rx(1);
    // Broadcasts, so every frame is for both guests.
    const N: usize = 400;
    let (mut sent, mut fast_got, mut slow_got, mut passes) = (0, 0, 0, 0);
    while fast_got < N && passes < 1000 {
        passes += 1;
        while sent < N {
            let f = broadcast(0x33, 1514, sent as u32);
            if wire.send(f.len(), |b| b.copy_from_slice(&f)).is_none() {
                break;
            }
            sent += 1;
        }
        wire.flush();
        s.nb.poll().unwrap();
        let n = fast.recv().len();
        fast.post_rx(n);
        fast_got += n;
        let n = slow.recv().len();
        slow_got += n;
        slow.post_rx(1);
    }
    assert_eq!(fast_got, N, "the fast guest got every frame");
    assert!(
        passes <= 20,
        "{passes} passes for {N} frames: the slow guest set the pace"
    );
    let ss = s.nb.vif_stats(slow.id()).unwrap();
    let queued = 70_000 / 1514;
    assert!(
        ss.rx_queue_full >= (N - slow_got - queued) as u64,
        "the slow guest's surplus is dropped at its queue and counted: {ss:?}"
    );
    assert!(ss.fatal.is_none());
}

#[test]
fn each_queued_frame_expires_even_while_buffers_trickle_in() {
    let cfg = Config {
        rx_drain_timeout: Duration::from_millis(50),
        ..Config::default()
    };
    let mut s = Scene::new(cfg);
    let mut slow = s.front(Guest::mac(3));
    let mut a = s.front(Guest::mac(1));
    // 40 frames for the slow guest at once.
    for i in 0..40 {
        a.send(&frame(1, 3, 500, i));
    }
    // Unknown unicast floods; the slow guest learns nothing it did not send: announce it.
    slow.send(&frame(3, 0xff, 60, 0));
    // Time is the test's, stepped by hand.
    let mut t = std::time::Instant::now();
    s.nb.poll_at(t).unwrap();
    // It posts one buffer now and then: the queue never stalls outright, yet frames that have
    // waited past the timeout are dropped one by one.
    let mut got = 0;
    for _ in 0..8 {
        slow.post_rx(1);
        s.nb.poll_at(t).unwrap();
        got += slow.recv().len();
        t += Duration::from_millis(15);
    }
    s.nb.poll_at(t).unwrap();
    let st = s.nb.vif_stats(slow.id()).unwrap();
    assert!(
        (1..=8).contains(&got),
        "the trickled buffers were used: {got}"
    );
    // Every frame was delivered or expired (none is still queued after 120 ms): a guest that
    // takes a frame now and then does not keep the rest alive.
    assert_eq!(st.rx_expired, 40 - got as u64, "{st:?}");
    assert!(st.fatal.is_none());
}

#[test]
fn a_flood_of_source_macs_learns_at_most_the_ports_cap() {
    let mut s = Scene::new(Config::default());
    // Frontends connected by hand carry no configured MAC: their ports are not locked, so the
    // cap is what bounds them.
    let mut h = s.front(Guest::mac(9));
    let mut a = s.front(Guest::mac(1));
    let mut b = s.front(Guest::mac(2));
    b.post_rx(64);
    b.send(&frame(2, 0xff, 60, 0));
    a.send(&frame(1, 0xff, 60, 0));
    s.nb.poll().unwrap();
    for i in 0..500u32 {
        let mut f = frame(9, 0xff, 60, 0);
        f[6..12].copy_from_slice(&[0x02, 0x77, 0, 0, (i >> 8) as u8, i as u8]);
        h.send(&f);
        if i % 32 == 0 {
            s.nb.poll().unwrap();
            h.reap_tx();
        }
    }
    s.nb.poll().unwrap();
    let h_port =
        s.nb.vifs()
            .find(|v| v.id() == h.id())
            .unwrap()
            .bridge_port();
    let port_of = |nb: &Nb| {
        nb.snapshot()
            .bridge
            .ports
            .into_iter()
            .find(|x| x.id == h_port)
            .unwrap()
    };
    let hp = port_of(&s.nb);
    assert_eq!(hp.learned_macs, 64, "the cap");
    assert!(hp.stats.learn_refused >= 400, "{:?}", hp.stats);
    // a's entry survived: its unicast to b is not flooded to h. (First let b take what the
    // flood queued for it.)
    loop {
        b.post_rx(64);
        s.nb.poll().unwrap();
        if b.recv().is_empty() {
            break;
        }
    }
    let before = port_of(&s.nb).stats.tx_frames;
    a.send(&frame(1, 2, 300, 1));
    s.nb.poll().unwrap();
    assert_eq!(b.recv().len(), 1);
    assert_eq!(
        port_of(&s.nb).stats.tx_frames,
        before,
        "a's unicast was not flooded to the hostile port"
    );
}
