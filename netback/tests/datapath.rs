//! Frames between two hand-driven frontends through netback and bridge-lite, in copy and flip
//! mode, single- and multi-slot.

use netback::{Config, RxMode};
use testkit::{Guest, Scene, frame};

fn exchange(mode: RxMode, len: usize) {
    let mut s = Scene::new(Config::default());
    let mut a = s.front(Guest::mac(1));
    let mut b = s.front(Guest {
        mode,
        ..Guest::mac(2)
    });
    b.post_rx(128);
    // b speaks first so the switch learns it; a's frames are then unicast to b.
    b.send(&frame(2, 1, 60, 0));
    s.nb.poll().unwrap();
    let sent: Vec<Vec<u8>> = (0..5).map(|i| frame(1, 2, len, i)).collect();
    for f in &sent {
        a.send(f);
    }
    s.nb.poll().unwrap();
    assert_eq!(
        a.reap_tx(),
        sent.iter().map(|f| f.len().div_ceil(4096)).sum::<usize>()
    );
    assert!(
        a.tx_responses.iter().all(|r| r.status == 0),
        "{:?}",
        a.tx_responses
    );
    let got = b.recv();
    let lens: Vec<_> = got.iter().map(|g| g.as_ref().map(Vec::len)).collect();
    assert_eq!(got.len(), sent.len(), "received {lens:?}");
    for (g, s) in got.iter().zip(&sent) {
        assert!(g.as_ref().is_ok_and(|g| g == s), "frame arrives intact");
    }
    let st = s.nb.vif_stats(b.id()).unwrap();
    assert_eq!(st.rx_packets, 5);
    assert_eq!(st.rx_copy_errors, 0);
}

#[test]
fn copy_mode_single_slot() {
    exchange(RxMode::Copy, 1514);
}

#[test]
fn copy_mode_multi_slot_jumbo() {
    exchange(RxMode::Copy, 9014);
}

#[test]
fn copy_mode_64k_frames() {
    exchange(RxMode::Copy, 65535);
}

#[test]
fn flip_mode_single_slot() {
    exchange(RxMode::Flip, 1514);
}

#[test]
fn flip_mode_multi_slot() {
    exchange(RxMode::Flip, 9014);
}

/// Ten 1000-byte frames from one guest to another in one pass; returns the grant-copy
/// hypercalls the pass made.
fn copy_hypercalls_for_ten_frames(copy_batch_ops: usize) -> u64 {
    let cfg = Config {
        copy_batch_ops,
        ..Config::default()
    };
    let mut s = Scene::new(cfg);
    let mut a = s.front(Guest::mac(1));
    let mut b = s.front(Guest::mac(2));
    b.post_rx(64);
    b.send(&frame(2, 1, 60, 0));
    s.nb.poll().unwrap();
    let before = s.nb.snapshot().copy_hypercalls;
    for i in 0..10 {
        a.send(&frame(1, 2, 1000, i));
    }
    s.nb.poll().unwrap();
    assert_eq!(b.recv().len(), 10);
    s.nb.snapshot().copy_hypercalls - before
}

#[test]
fn unbatched_copy_makes_one_hypercall_per_op() {
    // 10 tx copies + 10 rx copies, one op each.
    assert_eq!(copy_hypercalls_for_ten_frames(1), 20);
}

#[test]
fn batched_copy_flushes_once_per_pass() {
    assert_eq!(
        copy_hypercalls_for_ten_frames(64),
        2,
        "one tx flush, one rx flush"
    );
}

/// An uplink that never has frames: for what the backend reports about its ports.
struct Idle(&'static str);

impl netback::Uplink<xen_model::DomainHandle> for Idle {
    fn name(&self) -> &str {
        self.0
    }
    fn max_frame(&self) -> usize {
        1514
    }
    fn receive(
        &mut self,
        _io: &netback::UplinkIo<'_, xen_model::DomainHandle>,
        _out: &mut Vec<netback::pool::NetFrame<xen_model::DomainHandle>>,
        _budget: usize,
    ) -> bool {
        false
    }
    fn transmit(
        &mut self,
        _io: &netback::UplinkIo<'_, xen_model::DomainHandle>,
        frames: &mut Vec<netback::pool::NetFrame<xen_model::DomainHandle>>,
    ) {
        frames.clear();
    }
    fn arm(&mut self) -> bool {
        false
    }
    fn wakeup(&self) -> netback::Wakeup<'_> {
        netback::Wakeup::Port(hypervisor::Port(0))
    }
    fn stats(&self) -> netback::UplinkStats {
        netback::UplinkStats::default()
    }
    fn accepts(&self) -> netback::Accepts {
        netback::Accepts::NONE
    }
}

#[test]
fn each_switch_names_its_own_uplink_ports() {
    // Port numbers are per switch: two switches' first uplinks are both port 0, so a report
    // names a port from its switch's own list.
    let mut nb = Scene::new(Config::default()).nb;
    let a = nb.attach_uplink_to("a", Box::new(Idle("tap:a0"))).unwrap();
    let b = nb.attach_uplink_to("b", Box::new(Idle("tap:b0"))).unwrap();
    let x = nb.attach_uplink(Box::new(Idle("tap:x0"))).unwrap();
    assert_eq!(a, b, "each switch numbers its own ports");
    let snap = nb.snapshot();
    let named = |name: &str| {
        let s = snap.switches.iter().find(|s| s.name == name).unwrap();
        (s.uplinks.clone(), s.bridge.ports.len())
    };
    assert_eq!(named("a"), (vec![(a, "tap:a0".to_string())], 1));
    assert_eq!(named("b"), (vec![(b, "tap:b0".to_string())], 1));
    assert_eq!(named("xenbr0"), (vec![(x, "tap:x0".to_string())], 1));
}
