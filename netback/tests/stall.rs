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
