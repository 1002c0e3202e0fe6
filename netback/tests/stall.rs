//! A guest that stops posting receive buffers is reported stalled (Linux 6.1's
//! `xenvif_rx_queue_stalled`: carrier off) after `rx_stall_timeout`, frames for it are dropped
//! and counted instead of held, other guests are not touched, and it recovers when it posts
//! again. Time is stepped by hand (`poll_at`): nothing here sleeps.

use std::time::{Duration, Instant};

use netback::{Config, VifStats};
use testkit::{Guest, Nb, RawFront, broadcast, frame};

/// A guest `h` that posts no rx buffers and a pair `a` → `b` that behaves, on one backend.
struct Scene {
    nb: Nb,
    h: RawFront,
    a: RawFront,
    b: RawFront,
    /// The test's clock: every pass runs at `t0` plus a step.
    t0: Instant,
    _keep: (xen_model::Hypervisor, xen_model::DomainHandle),
}

fn scene(cfg: Config) -> Scene {
    let mut s = testkit::Scene::new(cfg);
    let h = s.front(Guest::mac(9));
    let mut a = s.front(Guest::mac(1));
    let mut b = s.front(Guest::mac(2));
    a.post_rx(64);
    b.post_rx(64);
    let t0 = Instant::now();
    // Both good guests speak once so the switch learns them (nothing floods to `h` later).
    a.send(&frame(1, 2, 60, 0));
    b.send(&frame(2, 1, 60, 0));
    s.nb.poll_at(t0).unwrap();
    s.nb.poll_at(t0).unwrap();
    a.reap_tx();
    b.reap_tx();
    a.recv();
    b.recv();
    let testkit::Scene { xen, dom0, nb } = s;
    Scene {
        nb,
        h,
        a,
        b,
        t0,
        _keep: (xen, dom0),
    }
}

impl Scene {
    fn at(&mut self, secs: u64) {
        self.nb
            .poll_at(self.t0 + Duration::from_secs(secs))
            .unwrap();
    }

    fn h(&self) -> VifStats {
        self.nb.vif_stats(self.h.id()).unwrap()
    }

    /// `a` broadcasts one frame (to `b` and `h`) and a pass runs at `secs`.
    fn broadcast_at(&mut self, secs: u64, seq: u32) {
        self.a.send(&broadcast(1, 200, seq));
        self.at(secs);
        self.a.reap_tx();
    }

    /// `a` → `b` unicast still flows at `secs`.
    #[track_caller]
    fn pair_flows(&mut self, secs: u64, seq: u32) {
        let f = frame(1, 2, 700, seq);
        self.a.send(&f);
        self.at(secs);
        self.a.reap_tx();
        let got = self.b.recv();
        assert_eq!(got.len(), 1, "b still receives");
        assert!(got[0].as_ref().is_ok_and(|g| *g == f));
        self.b.post_rx(1);
    }

    fn h_queued(&self) -> usize {
        let d = self.nb.vif_dump(self.h.id()).unwrap();
        d.queues.iter().map(|q| q.rx_queue_frames).sum()
    }
}

#[test]
fn a_guest_that_posts_nothing_for_the_timeout_while_frames_wait_is_stalled() {
    let mut s = scene(Config::default());
    // Frames wait for `h` from the start (the broadcast, and the first unicast the switch
    // flooded before it knew `b`); they expire at 10 s (the drain timeout).
    s.broadcast_at(0, 1);
    assert_eq!(s.h_queued(), 2);
    s.at(59);
    assert!(!s.h().rx_stalled, "not before the timeout");
    assert_eq!(s.h().rx_expired, 2, "the first frames expired meanwhile");
    // A frame waits again past the timeout, and the guest has posted nothing: stalled.
    s.broadcast_at(61, 2);
    let st = s.h();
    assert!(st.rx_stalled, "{st:?}");
    assert_eq!(st.rx_stalls, 1);
    assert_eq!(
        st.rx_stall_drops, 1,
        "the waiting frame is dropped at the stall"
    );
    assert_eq!(s.h_queued(), 0, "nothing held for a stalled guest");
    assert!(st.fatal.is_none(), "a stall is not a protocol violation");
    assert!(s.nb.vifs().any(|v| v.id() == s.h.id() && v.is_rx_stalled()));
    // The others are not stalled and still pass traffic.
    assert!(!s.nb.vif_stats(s.a.id()).unwrap().rx_stalled);
    assert!(!s.nb.vif_stats(s.b.id()).unwrap().rx_stalled);
    assert_eq!(s.b.recv().len(), 2, "b got both broadcasts");
    s.pair_flows(62, 3);
    // While stalled, every frame switched to it is dropped on arrival and counted, and `b`
    // still gets the same broadcasts.
    for i in 0..5 {
        s.broadcast_at(63 + i, 10 + i as u32);
        assert_eq!(s.h_queued(), 0, "dropped on arrival, never queued");
    }
    assert_eq!(s.h().rx_stall_drops, 6);
    assert_eq!(s.b.recv().len(), 5, "b got these five broadcasts");
    assert_eq!(
        s.h().rx_stalls,
        1,
        "one stall, however many frames it drops"
    );
}

#[test]
fn a_stalled_guest_recovers_when_it_posts_buffers_again() {
    let mut s = scene(Config::default());
    s.broadcast_at(61, 1);
    assert!(s.h().rx_stalled);
    // Stalling asked the guest to notify at its first posted buffer (req_event = req_cons + 1).
    let ix = s.h.rx_indices();
    assert_eq!(ix.req_event, ix.req_prod.wrapping_add(1));
    s.h.post_rx(4);
    s.at(62);
    let st = s.h();
    assert!(!st.rx_stalled, "ready again once it posts: {st:?}");
    // Carrier on: frames reach it again.
    s.broadcast_at(63, 2);
    let got = s.h.recv();
    assert_eq!(got.len(), 1);
    assert!(got[0].as_ref().is_ok_and(|f| *f == broadcast(1, 200, 2)));
    assert_eq!(
        s.h().rx_stall_drops,
        1,
        "only the frame waiting at the stall"
    );
    // The clock restarted at the recovery and again at the delivery: with buffers left it
    // does not stall however long it waits...
    s.broadcast_at(200, 3);
    assert!(!s.h().rx_stalled);
    assert_eq!(s.h.recv().len(), 1);
    // ... and stalls again once it has used them all and posted nothing for the timeout.
    s.broadcast_at(201, 4);
    s.broadcast_at(202, 5);
    assert_eq!(s.h.recv().len(), 2, "its last two buffers");
    s.broadcast_at(230, 6);
    assert!(!s.h().rx_stalled, "30 s since its last delivery");
    s.broadcast_at(263, 7);
    let st = s.h();
    assert!(st.rx_stalled, "61 s since its last delivery: {st:?}");
    assert_eq!(st.rx_stalls, 2);
}

#[test]
fn buffers_too_few_for_the_frame_are_not_a_stall() {
    // As Linux: a stall is no request at all; a guest with one buffer posted for a frame that
    // needs three is left to the drain timeout.
    let mut s = scene(Config::default());
    s.h.post_rx(1);
    s.a.send(&broadcast(1, 9014, 1));
    s.at(61);
    s.a.reap_tx();
    let st = s.h();
    assert!(!st.rx_stalled, "{st:?}");
    assert_eq!(s.h_queued(), 1, "still waiting for buffers");
    s.at(72);
    assert_eq!(
        s.h().rx_expired,
        2,
        "the flooded hello at 61 s, the jumbo frame at 72 s"
    );
}

#[test]
fn a_zero_timeout_turns_detection_off() {
    let mut s = scene(Config {
        rx_stall_timeout: Duration::ZERO,
        ..Config::default()
    });
    s.broadcast_at(61, 1);
    s.broadcast_at(3600, 2);
    let st = s.h();
    assert!(!st.rx_stalled);
    assert_eq!(st.rx_stalls, 0);
    assert_eq!(
        s.h_queued(),
        1,
        "the later frame waits (the earlier ones expired)"
    );
    assert_eq!(st.rx_expired, 2);
}

/// A UDP/IPv4 frame from MAC 1 to MAC 2 on source port `port` (a flow of its own).
fn udp(port: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(testkit::mac(1), testkit::mac(2))
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(port, 9);
    let mut out = Vec::with_capacity(b.size(100));
    b.write(&mut out, &[0x5a; 100]).unwrap();
    out
}

fn port_of(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[34], f[35]])
}

#[test]
fn one_stalled_queue_takes_the_whole_vifs_carrier_off() {
    use hypervisor::ringpage::own_ring;
    use netif_ring::netif::RxRequest;
    use netif_ring::{FrontRing, RxRing, TxRing};

    let mut s = testkit::Scene::new(Config {
        max_queues: 2,
        ..Config::default()
    });
    let mut a = s.front(Guest::mac(1));
    // `r` has two queues: its raw frontend's rings (queue 0) and a second pair made here.
    let mut r = s.guest(Guest::mac(2));
    let txp = r.dom.alloc_page().unwrap();
    let rxp = r.dom.alloc_page().unwrap();
    let _tx1: testkit::TxFront = FrontRing::<TxRing, _>::init(own_ring(&r.dom, txp).unwrap());
    let mut rx1: testkit::RxFront = FrontRing::<RxRing, _>::init(own_ring(&r.dom, rxp).unwrap());
    let port1 = r.evtchn.alloc_unbound(r.backend).unwrap();
    r.keys.queues.push(netback::QueueKeys {
        tx_ring_ref: r.dom.grant_access(r.backend, txp, false).unwrap(),
        rx_ring_ref: r.dom.grant_access(r.backend, rxp, false).unwrap(),
        event_channel: port1,
        event_channel_rx: None,
    });
    r.connect(&mut s.nb);
    r.post_rx(64);
    let t0 = Instant::now();
    r.send(&testkit::frame(2, 1, 60, 0));
    s.nb.poll_at(t0).unwrap();
    r.reap_tx();
    // Sixteen flows: those steered to queue 0 arrive, the others wait on queue 1 (no buffers).
    for p in 0..16 {
        a.send(&udp(1000 + p));
    }
    s.nb.poll_at(t0).unwrap();
    a.reap_tx();
    let on_q0: Vec<u16> = r
        .recv()
        .iter()
        .map(|f| port_of(f.as_ref().unwrap()))
        .collect();
    let on_q1: Vec<u16> = (1000..1016).filter(|p| !on_q0.contains(p)).collect();
    assert!(
        !on_q0.is_empty() && !on_q1.is_empty(),
        "flows spread over both queues: {on_q0:?}"
    );
    let at = |secs| t0 + Duration::from_secs(secs);
    let rid = r.id();
    let st = |s: &testkit::Scene| s.nb.vif_stats(rid).unwrap();
    // Past the timeout a frame waits on queue 1, which has nothing posted: it stalls, and the
    // whole vif's carrier goes off, so queue 0's flows are dropped too although it has buffers.
    a.send(&udp(on_q1[0]));
    s.nb.poll_at(at(61)).unwrap();
    assert!(st(&s).rx_stalled);
    let per_queue =
        s.nb.vifs()
            .find(|v| v.id() == r.id())
            .unwrap()
            .queue_stats();
    assert_eq!(
        (per_queue[0].rx_stalled, per_queue[1].rx_stalled),
        (false, true)
    );
    let drops = st(&s).rx_stall_drops;
    a.send(&udp(on_q0[0]));
    s.nb.poll_at(at(62)).unwrap();
    a.reap_tx();
    assert!(r.recv().is_empty(), "carrier off for every queue");
    assert_eq!(st(&s).rx_stall_drops, drops + 1);
    // Queue 1 posts one buffer: ready, carrier on, queue 0's flows arrive again.
    let pfn = r.dom.alloc_page().unwrap();
    let gref = r.dom.grant_access(r.backend, pfn, false).unwrap();
    rx1.put_request(RxRequest {
        id: 0,
        pad: 0,
        gref: gref.0,
    })
    .unwrap();
    assert!(
        rx1.push_requests_and_check_notify(),
        "the stall asked for an event at the first buffer"
    );
    s.nb.poll_at(at(63)).unwrap();
    assert!(!st(&s).rx_stalled);
    a.send(&udp(on_q0[0]));
    s.nb.poll_at(at(64)).unwrap();
    let got = r.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(port_of(got[0].as_ref().unwrap()), on_q0[0]);
}

#[test]
fn a_bogus_req_prod_while_stalled_disables_the_vif_and_disabled_wins() {
    let mut s = scene(Config::default());
    s.broadcast_at(61, 1);
    assert!(s.h().rx_stalled);
    // The recovery check reads req_prod: one claiming more requests than the ring holds is
    // fatal there as everywhere.
    s.h.set_rx_req_prod(10_000);
    s.at(62);
    let st = s.h();
    assert!(
        matches!(st.fatal, Some(netback::Fatal::Ring(_))),
        "{:?}",
        st.fatal
    );
    assert!(!st.rx_stalled, "disabled says more than stalled");
    // Its frames now count as discarded (a disabled vif), not as stall drops.
    let drops = st.rx_stall_drops;
    s.broadcast_at(63, 2);
    let st = s.h();
    assert_eq!(st.rx_stall_drops, drops);
    assert_eq!(st.rx_discarded, 1);
    assert_eq!(s.b.recv().len(), 2, "b got both broadcasts");
    s.pair_flows(64, 3);
}
