//! Forwarding behaviour: learning, ageing, moves, flooding, no hairpin, port state, counters,
//! malformed frames.

use std::sync::Arc;
use std::time::Duration;

use bridge_lite::testkit::udp_frame;
use bridge_lite::{
    Bridge, BridgeConfig, BridgeError, DropReason, MacAddr, Output, PortId, PortKind,
};

const AGEING: Duration = Duration::from_secs(300);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A bridge with an uplink and `vifs` vif ports: returns (bridge, [uplink, vif1, ...]).
fn bridge(vifs: u16) -> (Bridge, Vec<PortId>) {
    let mut br = Bridge::new(BridgeConfig {
        fdb_capacity: 1024,
        ageing: AGEING,
        hash_seed: Some(7),
        ..BridgeConfig::default()
    })
    .unwrap();
    let mut ports = vec![br.add_port(PortKind::Uplink).unwrap()];
    for d in 1..=vifs {
        ports.push(
            br.add_port(PortKind::Vif {
                domid: d,
                handle: 0,
            })
            .unwrap(),
        );
    }
    (br, ports)
}

fn mac(n: u32) -> MacAddr {
    MacAddr::local(n)
}

fn frame(src: MacAddr, dst: MacAddr) -> Arc<[u8]> {
    udp_frame(src, dst, 60, 0).into()
}

/// Forwards one batch and returns the output queues.
#[track_caller]
fn send(br: &mut Bridge, port: PortId, frames: &[Arc<[u8]>], now: Duration) -> Output<Arc<[u8]>> {
    let mut out = Output::new();
    br.forward(port, &mut frames.to_vec(), now, &mut out)
        .unwrap();
    out
}

/// The ports that received something, in order.
fn egress(out: &Output<Arc<[u8]>>) -> Vec<PortId> {
    out.iter().map(|(p, _)| p).collect()
}

#[test]
fn learns_sources_and_forwards_known_unicast_to_one_port() {
    let (mut br, p) = bridge(3);
    let (a, b) = (mac(1), mac(2));
    // a on vif1 speaks: unknown destination, so it floods to everyone else.
    let out = send(&mut br, p[1], &[frame(a, b)], secs(0));
    assert_eq!(egress(&out), vec![p[0], p[2], p[3]]);
    assert_eq!(br.lookup(a, secs(0)), Some(p[1]));
    // b on vif2 answers: a is known, so only vif1 gets it.
    let out = send(&mut br, p[2], &[frame(b, a)], secs(1));
    assert_eq!(egress(&out), vec![p[1]]);
    assert_eq!(br.lookup(b, secs(1)), Some(p[2]));
    let entries = br.fdb_entries(secs(1));
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| !e.is_static));
    assert_eq!(br.port_stats(p[1]).unwrap().learned, 1);
}

#[test]
fn entries_age_out_then_traffic_floods_again() {
    let (mut br, p) = bridge(2);
    let (a, b) = (mac(1), mac(2));
    send(&mut br, p[1], &[frame(a, b)], secs(10));
    let out = send(&mut br, p[2], &[frame(b, a)], secs(10) + AGEING);
    assert_eq!(
        egress(&out),
        vec![p[1]],
        "still known exactly at the ageing time"
    );
    // a was last seen at 10 s; one nanosecond past the ageing time it is unknown.
    let late = secs(10) + AGEING + Duration::from_nanos(1);
    assert_eq!(br.lookup(a, late), None);
    let out = send(&mut br, p[2], &[frame(b, a)], late);
    assert_eq!(egress(&out), vec![p[0], p[1]]);
    assert_eq!(br.port_stats(p[2]).unwrap().rx_unknown_unicast, 1);
    // b was refreshed by its own frames, a was not: a full sweep frees only a (unless the
    // per-batch incremental sweep got to a's bucket first).
    br.age(late);
    assert_eq!(br.fdb_stats().occupied, 1);
    assert_eq!(br.fdb_stats().expired, 1);
    assert_eq!(br.lookup(b, late), Some(p[2]));
    br.fdb().check_invariants().unwrap();
}

#[test]
fn a_mac_seen_on_another_port_moves_and_is_counted() {
    let (mut br, p) = bridge(2);
    let (a, b) = (mac(1), mac(2));
    send(&mut br, p[1], &[frame(a, b)], secs(0));
    // The guest migrates: the same MAC now speaks from vif2.
    send(&mut br, p[2], &[frame(a, b)], secs(1));
    assert_eq!(br.lookup(a, secs(1)), Some(p[2]));
    assert_eq!(br.fdb_stats().moves, 1);
    assert_eq!(br.port_stats(p[2]).unwrap().moves_in, 1);
    assert_eq!(br.port_stats(p[2]).unwrap().learned, 0);
    let out = send(&mut br, p[0], &[frame(b, a)], secs(2));
    assert_eq!(egress(&out), vec![p[2]]);
}

#[test]
fn broadcast_multicast_and_unknown_unicast_flood_but_never_hairpin() {
    let (mut br, p) = bridge(3);
    let a = mac(1);
    let mcast = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    let frames = [
        frame(a, MacAddr::BROADCAST),
        frame(a, mcast),
        frame(a, mac(99)),
    ];
    let out = send(&mut br, p[2], &frames, secs(0));
    for port in [p[0], p[1], p[3]] {
        assert_eq!(out.queue(port).len(), 3, "{port} gets every flooded frame");
    }
    assert!(
        out.queue(p[2]).is_empty(),
        "nothing goes back out the ingress port"
    );
    let st = br.port_stats(p[2]).unwrap();
    assert_eq!(
        (
            st.floods,
            st.rx_broadcast,
            st.rx_multicast,
            st.rx_unknown_unicast
        ),
        (3, 1, 1, 1)
    );
    // Flooding cloned the handle: each broadcast frame is held by three queues, no copy made.
    assert_eq!(Arc::strong_count(&out.queue(p[0])[0]), 3 + 1);
    assert!(Arc::ptr_eq(&out.queue(p[0])[0], &frames[0]));

    // Known unicast to a station on the ingress port itself is dropped, not reflected.
    let b = mac(2);
    send(&mut br, p[2], &[frame(b, a)], secs(1));
    let out = send(&mut br, p[2], &[frame(b, a)], secs(1));
    assert!(out.is_empty());
    assert_eq!(
        br.port_stats(p[2]).unwrap().drops.get(DropReason::Hairpin),
        2
    );
}

#[test]
fn down_ports_neither_receive_nor_send_and_keep_their_entries() {
    let (mut br, p) = bridge(2);
    let (a, b) = (mac(1), mac(2));
    send(&mut br, p[1], &[frame(a, b)], secs(0));
    br.set_port_up(p[1], false).unwrap();
    assert!(!br.port_is_up(p[1]).unwrap());

    // Unicast to the down port is dropped (counted on it), not flooded to others.
    let out = send(&mut br, p[0], &[frame(b, a)], secs(1));
    assert!(out.is_empty());
    assert_eq!(
        br.port_stats(p[1])
            .unwrap()
            .drops
            .get(DropReason::EgressDown),
        1
    );
    // A flood skips it and counts the skip there.
    let out = send(&mut br, p[0], &[frame(b, MacAddr::BROADCAST)], secs(1));
    assert_eq!(egress(&out), vec![p[2]]);
    assert_eq!(
        br.port_stats(p[1])
            .unwrap()
            .drops
            .get(DropReason::EgressDown),
        2
    );
    // What it receives is dropped whole, and learns nothing.
    let out = send(
        &mut br,
        p[1],
        &[frame(mac(3), b), frame(mac(3), b)],
        secs(1),
    );
    assert!(out.is_empty());
    let st = br.port_stats(p[1]).unwrap();
    assert_eq!(st.drops.get(DropReason::IngressDown), 2);
    assert_eq!(st.rx_frames, 3);
    assert_eq!(br.lookup(mac(3), secs(1)), None);
    // Back up: its entry still stands.
    br.set_port_up(p[1], true).unwrap();
    let out = send(&mut br, p[0], &[frame(b, a)], secs(2));
    assert_eq!(egress(&out), vec![p[1]]);
}

#[test]
fn counters_add_up_and_reset() {
    let (mut br, p) = bridge(2);
    let (a, b) = (mac(1), mac(2));
    let small: Arc<[u8]> = udp_frame(a, b, 60, 0).into();
    let big: Arc<[u8]> = udp_frame(a, b, 1514, 1).into();
    send(&mut br, p[0], &[frame(b, a)], secs(0)); // learn b on the uplink
    send(&mut br, p[1], &[small, big], secs(1));
    let vif = br.port_stats(p[1]).unwrap();
    assert_eq!((vif.rx_frames, vif.rx_bytes), (2, 60 + 1514));
    let up = br.port_stats(p[0]).unwrap();
    assert_eq!((up.tx_frames, up.tx_bytes), (2, 60 + 1514));
    assert_eq!((up.rx_frames, up.rx_bytes), (1, 60));
    // The uplink's first frame flooded to both vifs.
    assert_eq!(br.port_stats(p[2]).unwrap().tx_frames, 1);
    assert_eq!(br.port_stats(p[1]).unwrap().tx_frames, 1);

    let snap = br.snapshot();
    assert_eq!(snap.ports.len(), 3);
    assert_eq!(snap.ports[0].kind, PortKind::Uplink);
    assert_eq!(
        snap.ports[1].kind,
        PortKind::Vif {
            domid: 1,
            handle: 0
        }
    );
    assert_eq!(snap.ports[1].stats, vif);
    assert_eq!(snap.fdb.learned, 2);
    br.reset_stats();
    assert_eq!(br.port_stats(p[1]).unwrap().rx_frames, 0);
}

#[test]
fn malformed_frames_are_dropped_by_reason_and_teach_nothing() {
    let (mut br, p) = bridge(1);
    let good = udp_frame(mac(1), mac(2), 60, 0);
    let mut src_mcast = good.clone();
    src_mcast[6] |= 1;
    let mut src_bcast = good.clone();
    src_bcast[6..12].fill(0xff);
    let mut src_zero = good.clone();
    src_zero[6..12].fill(0);
    let frames: Vec<&[u8]> = vec![
        &[],
        &good[..1],
        &good[..13],
        &src_mcast,
        &src_bcast,
        &src_zero,
        &good[..14], // header only: forwarded, the switch does not need more
    ];
    let mut out = Output::new();
    br.forward(p[1], &mut frames.clone(), secs(0), &mut out)
        .unwrap();
    let st = br.port_stats(p[1]).unwrap();
    assert_eq!(st.drops.get(DropReason::TooShort), 3);
    assert_eq!(st.drops.get(DropReason::SrcMulticast), 2);
    assert_eq!(st.drops.get(DropReason::SrcZero), 1);
    assert_eq!(st.drops.total(), 6);
    assert_eq!(st.rx_frames, 7);
    assert_eq!(
        st.rx_bytes,
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    assert_eq!(out.queue(p[0]), &[&good[..14]]);
    // Only the valid source was learned.
    assert_eq!(br.fdb_stats().learned, 1);
    assert_eq!(br.lookup(mac(1), secs(0)), Some(p[1]));
}

#[test]
fn removed_ports_forget_their_macs_and_reject_frames_without_eating_them() {
    let (mut br, p) = bridge(2);
    send(&mut br, p[2], &[frame(mac(5), mac(6))], secs(0));
    let last = br.remove_port(p[2]).unwrap();
    assert_eq!(last.rx_frames, 1);
    assert_eq!(br.lookup(mac(5), secs(0)), None);
    let mut frames = vec![frame(mac(5), mac(6))];
    let mut out = Output::new();
    let err = br
        .forward(p[2], &mut frames, secs(0), &mut out)
        .unwrap_err();
    assert!(matches!(err, BridgeError::NoSuchPort { port } if port == p[2]));
    assert_eq!(frames.len(), 1, "the caller keeps its handles on error");
    assert!(err.to_string().contains("add_port"));
    // The freed number is reused, with fresh counters.
    let again = br
        .add_port(PortKind::Vif {
            domid: 9,
            handle: 0,
        })
        .unwrap();
    assert_eq!(again, p[2]);
    assert_eq!(br.port_stats(again).unwrap().rx_frames, 0);
    assert_eq!(br.ports().count(), 3);
}

#[test]
fn static_entries_pin_a_guest_mac() {
    let (mut br, p) = bridge(2);
    let guest = mac(1);
    br.add_static(guest, p[1]).unwrap();
    // A spoofer on vif2 using the guest's MAC does not steal its traffic.
    send(&mut br, p[2], &[frame(guest, mac(2))], secs(0));
    assert_eq!(br.port_stats(p[2]).unwrap().learn_refused, 1);
    let out = send(&mut br, p[0], &[frame(mac(3), guest)], secs(1_000_000));
    assert_eq!(egress(&out), vec![p[1]]);
    assert!(matches!(
        br.add_static(MacAddr::BROADCAST, p[1]),
        Err(BridgeError::InvalidMac { .. })
    ));
    assert!(br.remove_mac(guest));
    assert_eq!(br.lookup(guest, secs(0)), None);
}

#[test]
fn port_limit_and_bad_config_are_errors() {
    let mut br = Bridge::new(BridgeConfig {
        max_ports: 2,
        ..BridgeConfig::default()
    })
    .unwrap();
    br.add_port(PortKind::Uplink).unwrap();
    br.add_port(PortKind::Uplink).unwrap();
    assert!(matches!(
        br.add_port(PortKind::Uplink),
        Err(BridgeError::TooManyPorts { max: 2 })
    ));
    assert!(
        Bridge::new(BridgeConfig {
            fdb_capacity: 0,
            ..BridgeConfig::default()
        })
        .is_err()
    );
}

#[test]
fn a_locked_port_accepts_only_its_pinned_source() {
    let (mut br, p) = bridge(2);
    let guest = mac(1);
    br.add_static(guest, p[1]).unwrap();
    br.set_port_locked(p[1], true).unwrap();
    let spoofed = frame(mac(66), MacAddr::BROADCAST);
    let out = send(
        &mut br,
        p[1],
        &[frame(guest, MacAddr::BROADCAST), spoofed],
        secs(0),
    );
    assert_eq!(
        out.queue(p[0]).len(),
        1,
        "only the guest's own frame passes"
    );
    let st = br.port_stats(p[1]).unwrap();
    assert_eq!(st.drops.get(DropReason::SrcNotAllowed), 1);
    assert_eq!(
        br.lookup(mac(66), secs(0)),
        None,
        "a locked port learns nothing"
    );
    assert!(br.snapshot().ports[1].locked);
    // Unlocked again, the same frame passes and is learned.
    br.set_port_locked(p[1], false).unwrap();
    let out = send(
        &mut br,
        p[1],
        &[frame(mac(66), MacAddr::BROADCAST)],
        secs(1),
    );
    assert_eq!(out.queue(p[0]).len(), 1);
    assert_eq!(br.lookup(mac(66), secs(1)), Some(p[1]));
}

#[test]
fn learning_off_forwards_without_learning() {
    let (mut br, p) = bridge(2);
    br.set_port_learning(p[2], false).unwrap();
    let out = send(&mut br, p[2], &[frame(mac(7), mac(8))], secs(0));
    assert_eq!(egress(&out), vec![p[0], p[1]]);
    assert_eq!(br.lookup(mac(7), secs(0)), None);
    assert_eq!(br.fdb_stats().learned, 0);
}

#[test]
fn a_bridge_can_move_to_the_backend_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Bridge>();
    assert_send::<Output<bridge_lite::FrameRef<'static>>>();
}

#[test]
fn a_mac_limit_stops_one_guest_from_filling_the_table() {
    let (mut br, p) = bridge(2);
    br.set_port_mac_limit(p[2], Some(3)).unwrap();
    let frames: Vec<Arc<[u8]>> = (100..110)
        .map(|n| frame(mac(n), MacAddr::BROADCAST))
        .collect();
    let out = send(&mut br, p[2], &frames, secs(0));
    assert_eq!(out.queue(p[0]).len(), 10, "frames still forward");
    assert_eq!(br.port_stats(p[2]).unwrap().learned, 3);
    assert_eq!(br.port_stats(p[2]).unwrap().learn_refused, 7);
    assert_eq!(br.snapshot().ports[2].learned_macs, 3);
    // A MAC of that guest cannot move in over the limit either.
    send(&mut br, p[1], &[frame(mac(1), MacAddr::BROADCAST)], secs(0));
    send(&mut br, p[2], &[frame(mac(1), MacAddr::BROADCAST)], secs(0));
    assert_eq!(br.lookup(mac(1), secs(0)), Some(p[1]));
    // Once its entries age out and are reclaimed, it may learn again.
    let later = secs(1) + AGEING;
    br.age(later);
    assert_eq!(br.snapshot().ports[2].learned_macs, 0);
    send(&mut br, p[2], &frames[9..], later);
    assert_eq!(br.lookup(mac(109), later), Some(p[2]));
    br.fdb().check_invariants().unwrap();
}
