//! Several forwarding threads on one bridge: shared learning, counters summed over forwarders,
//! per-port caps across threads, removed port numbers quarantined while a forwarder may hold
//! them.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bridge_lite::testkit::udp_frame;
use bridge_lite::{
    Bridge, BridgeConfig, BridgeError, CaptureDirection, Forwarder, MacAddr, Output, PortId,
    PortKind,
};

fn bridge(max_ports: usize) -> (Bridge, PortId, PortId, PortId) {
    let mut br = Bridge::new(BridgeConfig {
        fdb_capacity: 1024,
        hash_seed: Some(3),
        max_ports,
        ..BridgeConfig::default()
    })
    .unwrap();
    let up = br.add_port(PortKind::Uplink).unwrap();
    let v1 = br
        .add_port(PortKind::Vif {
            domid: 1,
            handle: 0,
        })
        .unwrap();
    let v2 = br
        .add_port(PortKind::Vif {
            domid: 2,
            handle: 0,
        })
        .unwrap();
    (br, up, v1, v2)
}

fn frame(src: u32, dst: MacAddr) -> Arc<[u8]> {
    udp_frame(MacAddr::local(src), dst, 60, src).into()
}

/// Forwards `rounds` batches of `frames` from `port` on `f`, draining the output.
fn pump(f: &mut Forwarder, port: PortId, frames: &[Arc<[u8]>], rounds: usize) -> usize {
    let mut out = Output::new();
    let mut sent = 0;
    for r in 0..rounds {
        let now = Duration::from_millis(r as u64);
        f.forward(port, &mut frames.to_vec(), now, &mut out)
            .unwrap();
        sent += out.len();
        out.clear();
    }
    sent
}

#[test]
fn two_forwarders_learn_into_one_table_and_their_counters_add_up() {
    let (br, up, v1, _v2) = bridge(8);
    let (mut a, mut b) = (br.forwarder(), br.forwarder());
    // Guests 1..=64 behind vif1 talk to remotes 1001..=1064 behind the uplink and back.
    let guest_tx: Vec<_> = (1..=64)
        .map(|n| frame(n, MacAddr::local(1000 + n)))
        .collect();
    let remote_tx: Vec<_> = (1..=64)
        .map(|n| frame(1000 + n, MacAddr::local(n)))
        .collect();
    let ta = thread::spawn(move || (pump(&mut a, v1, &guest_tx, 200), a));
    let tb = thread::spawn(move || (pump(&mut b, up, &remote_tx, 200), b));
    let (sent_a, mut a) = ta.join().unwrap();
    let (sent_b, _b) = tb.join().unwrap();
    assert!(sent_a >= 200 * 64 && sent_b >= 200 * 64);
    br.fdb().check_invariants().unwrap();
    let now = Duration::from_millis(200);
    for n in 1..=64 {
        assert_eq!(br.lookup(MacAddr::local(n), now), Some(v1));
        assert_eq!(br.lookup(MacAddr::local(1000 + n), now), Some(up));
        assert_eq!(a.lookup(MacAddr::local(1000 + n), now), Some(up));
    }
    let (sv1, sup) = (br.port_stats(v1).unwrap(), br.port_stats(up).unwrap());
    assert_eq!(sv1.rx_frames, 200 * 64);
    assert_eq!(sup.rx_frames, 200 * 64);
    assert_eq!(sv1.learned + sup.learned, 128);
    let out_total: u64 = br.snapshot().ports.iter().map(|p| p.stats.tx_frames).sum();
    assert_eq!(out_total, (sent_a + sent_b) as u64);
}

#[test]
fn counters_of_a_dropped_forwarder_are_kept_and_reset_still_works() {
    let (mut br, up, v1, _) = bridge(8);
    let mut f = br.forwarder();
    pump(&mut f, v1, &[frame(1, MacAddr::BROADCAST)], 10);
    drop(f);
    assert_eq!(br.port_stats(v1).unwrap().rx_frames, 10);
    assert_eq!(br.port_stats(up).unwrap().tx_frames, 10);
    assert_eq!(br.fdb_stats().learned, 1);
    br.reset_stats();
    assert_eq!(br.port_stats(v1).unwrap().rx_frames, 0);
    br.fdb().check_invariants().unwrap();
}

#[test]
fn a_mac_cap_holds_for_two_forwarders_on_one_port() {
    let (mut br, _up, v1, _) = bridge(8);
    br.set_port_mac_limit(v1, Some(5)).unwrap();
    let handles: Vec<_> = (0..2u32)
        .map(|k| {
            let mut f = br.forwarder();
            // Each thread cycles through its own 100 source MACs (a guest spraying sources
            // over two queues).
            let frames: Vec<_> = (0..100)
                .map(|n| frame(k * 1000 + n + 1, MacAddr::BROADCAST))
                .collect();
            thread::spawn(move || pump(&mut f, v1, &frames, 50))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let snap = br.snapshot();
    assert!(
        snap.ports[1].learned_macs <= 5,
        "{}",
        snap.ports[1].learned_macs
    );
    assert!(snap.ports[1].stats.learn_refused > 0);
    br.fdb().check_invariants().unwrap();
}

#[test]
fn a_removed_port_number_waits_until_no_forwarder_can_hold_it() {
    let (mut br, up, v1, v2) = bridge(4);
    let mut f = br.forwarder();
    pump(&mut f, v2, &[frame(7, MacAddr::BROADCAST)], 1);
    br.remove_port(v2).unwrap();
    assert_eq!(br.lookup(MacAddr::local(7), Duration::ZERO), None);
    // f still holds the table with v2 in it: the number is not reused, a higher one is.
    let p3 = br
        .add_port(PortKind::Vif {
            domid: 3,
            handle: 0,
        })
        .unwrap();
    assert_eq!(p3.index(), 3);
    // All four numbers used or quarantined.
    br.remove_port(p3).unwrap();
    assert!(matches!(
        br.add_port(PortKind::Uplink),
        Err(BridgeError::PortNumbersBusy { max: 4 })
    ));
    // A frame from the removed port is refused, as on the bridge itself.
    let mut frames = vec![frame(8, MacAddr::BROADCAST)];
    let err = f.forward(v2, &mut frames, Duration::ZERO, &mut Output::new());
    assert!(matches!(err, Err(BridgeError::NoSuchPort { .. })));
    // That batch began with the new table: the numbers are free again, lowest first.
    assert_eq!(br.add_port(PortKind::Uplink).unwrap(), v2);
    // Traffic from the reused number learns afresh; nothing of the old port leaked into it.
    pump(&mut f, up, &[frame(9, MacAddr::local(7))], 1);
    assert_eq!(
        br.port_stats(v2).unwrap().tx_frames,
        1,
        "unknown unicast floods"
    );
    assert_eq!(br.port_stats(v1).unwrap().tx_frames, 2);
    br.fdb().check_invariants().unwrap();
    // Dropping an idle forwarder releases what it held.
    br.remove_port(v1).unwrap();
    drop(f);
    assert_eq!(br.add_port(PortKind::Uplink).unwrap(), v1);
}

#[test]
fn a_capture_records_frames_forwarded_on_another_thread() {
    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (mut br, up, v1, _) = bridge(8);
    let sink = Sink::default();
    br.start_capture(up, sink.clone(), CaptureDirection::Tx)
        .unwrap();
    let mut f = br.forwarder();
    let frames = vec![frame(1, MacAddr::BROADCAST)];
    thread::spawn(move || pump(&mut f, v1, &frames, 3))
        .join()
        .unwrap();
    assert_eq!(br.stop_capture(up).unwrap().frames, 3);
    assert!(sink.0.lock().unwrap().len() > 24 + 3 * 60);
    assert!(!br.snapshot().ports[0].capturing);
}

#[test]
fn forwarders_can_move_to_worker_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Forwarder>();
}
