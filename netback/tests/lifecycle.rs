//! The vif lifecycle through xenbus, as Linux's netback and libxl run it: netback on its own
//! thread, real netfront guests driven from the test thread, the toolstack's writes through
//! dom0's xenstore. Never `connect_vif`: every connection is the xenbus handshake, and every
//! connection is shown to carry frames, byte for byte.

mod threaded;

use std::time::{Duration, Instant};

use netback::NetbackSnapshot;
use netfront::RxMode;
use threaded::{GUARD, Guest, exchange, guest, mac, machine, node, vif, wait_node};
use xen_model::Hypervisor;

fn state(xen: &Hypervisor, dir: &str) -> String {
    node(xen, &format!("{dir}/state"))
}

#[track_caller]
fn assert_connected(snap: &NetbackSnapshot, domid: u16) {
    let v = snap.vifs.iter().find(|(id, _)| *id == vif(domid, 0));
    assert!(
        v.is_some_and(|(_, st)| st.fatal.is_none()),
        "vif{domid}.0 is not connected: {snap:?}"
    );
}

#[track_caller]
fn assert_gone(snap: &NetbackSnapshot, domid: u16) {
    assert!(
        snap.vifs.iter().all(|(id, _)| *id != vif(domid, 0)),
        "vif{domid}.0 is still connected: {snap:?}"
    );
}

/// The guest's netfront notices the backend closing (`wait` reports it).
#[track_caller]
fn sees_backend_close(g: &mut Guest) {
    let start = Instant::now();
    let err = loop {
        match g.nf.wait(Some(Duration::from_millis(5))) {
            Err(e) => break e,
            Ok(()) => assert!(start.elapsed() < GUARD, "netfront never saw the close"),
        }
    };
    assert!(
        matches!(err, netfront::Error::BackendClosed { state: 5 | 6, .. }),
        "{err}"
    );
}

/// Frontend close, then the same devid again: the new netfront finds the backend still Closed
/// from the last connection, the backend offers InitWait on its Initialising, and the new
/// connection carries frames. (The reconnect loop below reconnects without waiting.)
#[test]
fn reattach_same_devid_passes_traffic_again() {
    let (xen, _dom0, be) = machine();
    let (da, pa) = guest(&xen, 1, 0, mac(2));
    let (db, _) = guest(&xen, 2, 0, mac(3));
    let mut a = Guest::connect(&da, 0, mac(2), RxMode::Copy);
    let mut b = Guest::connect(&db, 0, mac(3), RxMode::Copy);
    exchange(&mut a, &mut b, 8);

    a.close();
    let snap = be.settled();
    assert_eq!(state(&xen, &pa.backend), "6");
    assert_gone(&snap, 1);
    assert_eq!(snap.departed.last().map(|d| d.0), Some(vif(1, 0)));
    assert_eq!(snap.devices, 2, "a closed frontend keeps its device");

    // The same devid again: Initialising, the backend's InitWait, Connected.
    let mut a = Guest::connect(&da, 0, mac(2), RxMode::Copy);
    assert_eq!(state(&xen, &pa.backend), "4");
    exchange(&mut a, &mut b, 8);
    let snap = be.settled();
    assert_connected(&snap, 1);
    assert_connected(&snap, 2);
    assert_eq!(snap.devices, 2);
    a.close();
    b.close();
}

/// The toolstack detaches a connected vif by writing `key=value` to its backend directory.
fn toolstack_detach(key: &str, value: &str) {
    let (xen, _dom0, be) = machine();
    let xs = xen.xenstore();
    let (db, _) = guest(&xen, 2, 0, mac(3));
    let mut b = Guest::connect(&db, 0, mac(3), RxMode::Copy);
    let base = be.settled().devices;
    let (da, pa) = guest(&xen, 1, 0, mac(2));
    let mut a = Guest::connect(&da, 0, mac(2), RxMode::Copy);
    exchange(&mut a, &mut b, 4);
    assert_eq!(be.settled().devices, base + 1);

    xs.write(&format!("{}/{key}", pa.backend), value).unwrap();
    // Closed as soon as the backend has read the write: it does not wait for the frontend
    // (the guest is not even polled before this check).
    let snap = be.settled();
    assert_eq!(state(&xen, &pa.backend), "6", "after {key}={value}");
    assert_gone(&snap, 1);
    assert_connected(&snap, 2);
    assert_eq!(snap.devices, base + 1, "the directory is still there");
    sees_backend_close(&mut a);
    // The rings were unmapped before Closed: every grant ends.
    a.close();

    // The toolstack removes both directories: the device is forgotten.
    xs.rm(&pa.backend).unwrap();
    xs.rm(&pa.frontend).unwrap();
    assert_eq!(be.settled().devices, base);

    // Added again with the same devid: a fresh device, a fresh netfront, traffic.
    let (_, pa2) = guest(&xen, 1, 0, mac(2));
    assert_eq!(pa2, pa);
    let mut a = Guest::connect(&da, 0, mac(2), RxMode::Copy);
    exchange(&mut a, &mut b, 4);
    let snap = be.settled();
    assert_connected(&snap, 1);
    assert_eq!(snap.devices, base + 1);
    a.close();
    b.close();
}

#[test]
fn toolstack_online_0_closes_then_rm_forgets_and_readd_works() {
    toolstack_detach("online", "0");
}

#[test]
fn toolstack_state_5_closes_then_rm_forgets_and_readd_works() {
    toolstack_detach("state", "5");
}

/// The toolstack removes a device whose backend is Closing, in the same breath as the
/// frontend's Closed: the backend's Closed must not recreate the removed directory (which
/// would keep the device alive forever), and the device is forgotten.
#[test]
fn removing_a_closing_device_leaves_nothing_behind() {
    let (xen, _dom0, be) = machine();
    let xs = xen.xenstore();
    let (da, pa) = guest(&xen, 1, 0, mac(2));
    wait_node(&xen, &format!("{}/state", pa.backend), "2");
    let fe_state = format!("{}/state", pa.frontend);
    da.xenstore().write(&fe_state, "5").unwrap();
    wait_node(&xen, &format!("{}/state", pa.backend), "5");
    be.paused(|| {
        da.xenstore().write(&fe_state, "6").unwrap();
        xs.rm(&pa.backend).unwrap();
        xs.rm(&pa.frontend).unwrap();
    });
    assert_eq!(be.settled().devices, 0);
    assert!(
        xs.directory(&pa.backend).is_err(),
        "the removed directory came back: {:?}",
        xs.directory(&pa.backend)
    );
    // Added again: a fresh device that connects and carries frames.
    let (db, _) = guest(&xen, 2, 0, mac(3));
    guest(&xen, 1, 0, mac(2));
    let mut a = Guest::connect(&da, 0, mac(2), RxMode::Copy);
    let mut b = Guest::connect(&db, 0, mac(3), RxMode::Copy);
    exchange(&mut a, &mut b, 4);
    assert_eq!(be.settled().devices, 2);
    a.close();
    b.close();
}

/// Only `online=1` with `state=1` is picked up; flipping either picks the device up.
#[test]
fn devices_not_online_or_not_initialising_are_left_alone() {
    let (xen, _dom0, be) = machine();
    let xs = xen.xenstore();
    xen.create_domain_with_id(1, 2048).unwrap();
    // Parked backend: it sees each device only once complete, as after libxl's transaction.
    let (offline, busy) = be.paused(|| {
        let (_, offline) = guest(&xen, 1, 0, mac(2));
        xs.write(&format!("{}/online", offline.backend), "0")
            .unwrap();
        let (_, busy) = guest(&xen, 1, 1, mac(3));
        xs.write(&format!("{}/state", busy.backend), "2").unwrap();
        (offline, busy)
    });
    let snap = be.settled();
    assert_eq!(snap.devices, 0, "{snap:?}");
    for p in [&offline, &busy] {
        // No features written: the backend never offered the device.
        assert_eq!(node(&xen, &format!("{}/feature-rx-copy", p.backend)), "");
    }
    assert_eq!(state(&xen, &offline.backend), "1");

    xs.write(&format!("{}/online", offline.backend), "1")
        .unwrap();
    wait_node(&xen, &format!("{}/state", offline.backend), "2");
    xs.write(&format!("{}/state", busy.backend), "1").unwrap();
    wait_node(&xen, &format!("{}/state", busy.backend), "2");
    assert_eq!(be.settled().devices, 2);

    let dom = xen.domain(1).unwrap();
    let mut a = Guest::connect(&dom, 0, mac(2), RxMode::Copy);
    let mut b = Guest::connect(&dom, 1, mac(3), RxMode::Copy);
    exchange(&mut a, &mut b, 4);
    a.close();
    b.close();
}

/// A frontend that goes Closed and then Initialising is offered the device again, also when
/// the backend reads the frontend's state only after both writes (still in Closing itself).
#[test]
fn frontend_closed_then_initialising_is_offered_again() {
    let (xen, _dom0, be) = machine();
    let (da, pa) = guest(&xen, 1, 0, mac(2));
    let (db, _) = guest(&xen, 2, 0, mac(3));
    let gxs = da.xenstore();
    let fe_state = format!("{}/state", pa.frontend);
    let mut b = Guest::connect(&db, 0, mac(3), RxMode::Copy);

    // Connected, then closed by the book; Initialising by hand: InitWait, features again.
    let mut a = Guest::connect(&da, 0, mac(2), RxMode::Copy);
    exchange(&mut a, &mut b, 4);
    a.close();
    wait_node(&xen, &format!("{}/state", pa.backend), "6");
    xen.xenstore()
        .rm(&format!("{}/feature-rx-copy", pa.backend))
        .unwrap();
    gxs.write(&fe_state, "1").unwrap();
    wait_node(&xen, &format!("{}/state", pa.backend), "2");
    assert_eq!(node(&xen, &format!("{}/feature-rx-copy", pa.backend)), "1");
    let mut a = Guest::connect(&da, 0, mac(2), RxMode::Copy);
    exchange(&mut a, &mut b, 4);
    a.close();
    wait_node(&xen, &format!("{}/state", pa.backend), "6");

    // The backend in Closing when the frontend writes Closed and Initialising at once.
    gxs.write(&fe_state, "1").unwrap();
    wait_node(&xen, &format!("{}/state", pa.backend), "2");
    gxs.write(&fe_state, "5").unwrap();
    wait_node(&xen, &format!("{}/state", pa.backend), "5");
    be.paused(|| {
        gxs.write(&fe_state, "6").unwrap();
        gxs.write(&fe_state, "1").unwrap();
    });
    be.settled();
    assert_eq!(state(&xen, &pa.backend), "2", "offered again");
    let mut a = Guest::connect(&da, 0, mac(2), RxMode::Copy);
    exchange(&mut a, &mut b, 4);
    a.close();
    b.close();
}

/// vif1.0 and vif10.0 share a prefix in every path and token: whatever happens to one never
/// touches the other.
#[test]
fn vif1_and_vif10_are_never_confused() {
    let (xen, _dom0, be) = machine();
    let xs = xen.xenstore();
    let (d1, p1) = guest(&xen, 1, 0, mac(1));
    let (d10, p10) = guest(&xen, 10, 0, mac(10));
    let (dp, _) = guest(&xen, 2, 0, mac(2));
    let mut peer = Guest::connect(&dp, 0, mac(2), RxMode::Copy);
    let mut g1 = Guest::connect(&d1, 0, mac(1), RxMode::Copy);
    let mut g10 = Guest::connect(&d10, 0, mac(10), RxMode::Copy);
    exchange(&mut g1, &mut peer, 2);
    exchange(&mut g10, &mut peer, 2);

    // Frontend close of vif1.0.
    g1.close();
    let snap = be.settled();
    assert_eq!(state(&xen, &p1.backend), "6");
    assert_gone(&snap, 1);
    assert_connected(&snap, 10);
    assert_eq!(state(&xen, &p10.backend), "4");
    exchange(&mut g10, &mut peer, 2);

    // The toolstack removes vif1.0.
    xs.rm(&p1.backend).unwrap();
    xs.rm(&p1.frontend).unwrap();
    let snap = be.settled();
    assert_eq!(snap.devices, 2);
    assert_connected(&snap, 10);
    assert_eq!(state(&xen, &p10.backend), "4");
    exchange(&mut g10, &mut peer, 2);

    // vif1.0 again, then detached by the toolstack.
    guest(&xen, 1, 0, mac(1));
    let mut g1 = Guest::connect(&d1, 0, mac(1), RxMode::Copy);
    exchange(&mut g1, &mut peer, 2);
    xs.write(&format!("{}/online", p1.backend), "0").unwrap();
    let snap = be.settled();
    assert_eq!(state(&xen, &p1.backend), "6");
    assert_connected(&snap, 10);
    assert_eq!(state(&xen, &p10.backend), "4");
    exchange(&mut g10, &mut peer, 2);
    sees_backend_close(&mut g1);
    g1.close();

    // The other way round: vif1.0 back in place, then vif10.0 closes and is removed.
    xs.write(&format!("{}/online", p1.backend), "1").unwrap();
    xs.write(&format!("{}/state", p1.backend), "1").unwrap();
    let mut g1 = Guest::connect(&d1, 0, mac(1), RxMode::Copy);
    g10.close();
    xs.rm(&p10.backend).unwrap();
    xs.rm(&p10.frontend).unwrap();
    let snap = be.settled();
    assert_gone(&snap, 10);
    assert_connected(&snap, 1);
    assert_eq!(snap.devices, 2);
    assert_eq!(state(&xen, &p1.backend), "4");
    exchange(&mut g1, &mut peer, 2);
    g1.close();
    peer.close();
}
