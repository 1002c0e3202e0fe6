//! Anti-spoofing: the toolstack's `mac` node locks a vif's switch port to that source MAC, as
//! the iptables rules of Xen's vif scripts do. netback on its own thread, real netfront guests
//! driven from the test thread, everything connected through xenbus.

mod threaded;

use std::time::Duration;

use bridge_lite::{DropReason, MacAddr, PortKind, PortSnapshot};
use netback::NetbackSnapshot;
use netfront::RxMode;
use threaded::{Backend, Guest, expect_frames, guest, mac, machine};

#[track_caller]
fn port(snap: &NetbackSnapshot, domid: u16) -> PortSnapshot {
    snap.bridge
        .ports
        .iter()
        .find(|p| p.kind == PortKind::Vif { domid, handle: 0 })
        .cloned()
        .unwrap_or_else(|| panic!("no switch port for vif{domid}.0: {snap:?}"))
}

/// Where the switch has `m`, and whether pinned.
fn fdb_entry(be: &Backend, m: [u8; 6]) -> Option<(bridge_lite::PortId, bool)> {
    be.run(move |nb| {
        nb.bridge()
            .fdb_entries(Duration::ZERO)
            .into_iter()
            .find(|e| e.mac == MacAddr(m))
            .map(|e| (e.port, e.is_static))
    })
}

/// Guest A sends frames claiming guest B's MAC: the switch drops them on A's port as
/// `src_not_allowed`, before B connects and while it is connected; B's MAC stays pinned to
/// B's port, B still gets its unicast, and A's own frames still pass.
#[test]
fn a_guest_spoofing_another_guests_mac_is_dropped_and_counted() {
    let (xen, _dom0, be) = machine();
    let (ma, mb, mc) = (mac(2), mac(3), mac(4));
    let (da, _) = guest(&xen, 1, 0, ma);
    let (db, _) = guest(&xen, 2, 0, mb);
    let (dc, _) = guest(&xen, 3, 0, mc);
    let mut a = Guest::connect(&da, 0, ma, RxMode::Copy);
    let mut c = Guest::connect(&dc, 0, mc, RxMode::Copy);
    let snap = be.settled();
    assert!(port(&snap, 1).locked && port(&snap, 3).locked);

    // Before B is even connected: A claims B's MAC, unicast to C and broadcast.
    let spoofed = [
        Guest::frame(mb, mc, 100, 1),
        Guest::frame(mb, [0xff; 6], 60, 2),
        Guest::frame(mb, mc, 1514, 3),
    ];
    for f in &spoofed {
        a.send_raw(f);
    }
    // A's own frame, sent after the spoofed ones, is the first C sees (frames keep order).
    let own = a.send_to(mc, 200);
    expect_frames(&mut a, &mut c, &[own]);
    let snap = be.settled();
    let pa = port(&snap, 1);
    assert_eq!(pa.stats.rx_frames, 4);
    assert_eq!(pa.stats.drops.get(DropReason::SrcNotAllowed), 3);
    assert_eq!(pa.stats.drops.total(), 3);
    assert_eq!((pa.stats.learned, pa.learned_macs), (0, 0));
    assert_eq!(fdb_entry(&be, mb), None, "B's MAC was not learned anywhere");

    // B connects: its MAC is pinned to its port.
    let mut b = Guest::connect(&db, 0, mb, RxMode::Copy);
    let snap = be.settled();
    let pb = port(&snap, 2).id;
    assert_eq!(fdb_entry(&be, mb), Some((pb, true)));

    // A keeps claiming B's MAC, to C and to B itself.
    for f in [
        Guest::frame(mb, mc, 300, 4),
        Guest::frame(mb, mb, 400, 5),
        Guest::frame(mb, [0xff; 6], 60, 6),
    ] {
        a.send_raw(&f);
    }
    let own = a.send_to(mc, 500);
    expect_frames(&mut a, &mut c, &[own]);
    // C's unicast to B reaches B, and is the first frame B sees.
    let to_b = c.send_to(mb, 600);
    expect_frames(&mut c, &mut b, &[to_b]);
    let snap = be.settled();
    let pa = port(&snap, 1);
    assert_eq!(pa.stats.drops.get(DropReason::SrcNotAllowed), 6);
    assert_eq!(pa.stats.drops.total(), 6);
    assert_eq!(pa.stats.rx_frames, 8);
    assert_eq!(pa.stats.tx_frames, 0, "nothing was sent to A");
    assert_eq!((pa.stats.moves_in, pa.learned_macs), (0, 0));
    assert_eq!(fdb_entry(&be, mb), Some((pb, true)), "B's MAC did not move");
    assert_eq!(fdb_entry(&be, ma), Some((pa.id, true)));
    let pb = port(&snap, 2);
    assert_eq!(pb.stats.tx_frames, 1, "B got exactly C's frame");
    assert_eq!(pb.stats.drops.total(), 0);
    let pc = port(&snap, 3);
    assert_eq!(pc.stats.tx_frames, 2, "C got exactly A's two own frames");
    // Nothing else is waiting at B or C: no spoofed frame was delivered late.
    assert_eq!(b.try_recv(), None);
    assert_eq!(c.try_recv(), None);
    a.close();
    b.close();
    c.close();
}
