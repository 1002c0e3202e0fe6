//! A vif as the toolstack configured it, through xenbus: host and builtin modes, one switch per
//! `bridge=` name, a refused switch, `hotplug-status`, `rate`, the MAC handover between two
//! vifs of one guest, keys read as Linux 6.1 reads them, and a backend restart that strands no
//! guest. Everything runs on the test's thread; time is driven by hand where it matters
//! (`Netback::poll_at`), so no count depends on the machine's speed.

use std::time::{Duration, Instant};

use hypervisor::{VifConfig, VifPaths};
use netback::{Config, Netback, VifId};
use testkit::{Guest, MemNetdevs, RawFront, Scene, broadcast, frame, mac_string};

/// Passes until one finds nothing to do (bounded: a livelock fails instead of hanging).
#[track_caller]
fn settle(s: &mut Scene) {
    for _ in 0..64 {
        if !s.nb.poll().expect("netback polls") {
            return;
        }
    }
    panic!("the backend never settled");
}

/// A vif with MAC number `mac` and nothing else configured but what `f` adds.
fn vif(mac: u8, f: impl FnOnce(&mut VifConfig)) -> VifConfig {
    let mut c = VifConfig::new(&mac_string(testkit::mac(mac)));
    f(&mut c);
    c
}

/// The toolstack adds the guest's vif, the backend offers it, the guest connects.
#[track_caller]
fn attach(s: &mut Scene, g: Guest, cfg: &VifConfig) -> (RawFront, VifPaths) {
    let f = s.guest(g);
    let p = f.add_vif(&s.xen, cfg);
    settle(s);
    f.publish(&p);
    settle(s);
    (f, p)
}

fn state(f: &RawFront, p: &VifPaths) -> String {
    f.backend_node(p, "state").unwrap_or_default()
}

/// A builtin vif on switch `name`.
fn on_switch(mac: u8, name: &str) -> VifConfig {
    vif(mac, |c| {
        c.script = Some("/etc/xen/scripts/vif-splitnet".into());
        c.bridge = Some(name.into());
    })
}

#[test]
fn vifs_join_only_the_switch_their_bridge_names() {
    let mut s = Scene::new(Config::default());
    s.nb.add_switch("red").unwrap();
    s.nb.add_switch("blue").unwrap();
    let (mut a, pa) = attach(&mut s, Guest::mac(1), &on_switch(1, "red"));
    let (mut b, pb) = attach(&mut s, Guest::mac(2), &on_switch(2, "red"));
    let (mut c, pc) = attach(&mut s, Guest::mac(3), &on_switch(3, "blue"));
    for (f, p) in [(&a, &pa), (&b, &pb), (&c, &pc)] {
        assert_eq!(state(f, p), "4", "{:?} connected", f.id());
    }
    for g in [&mut a, &mut b, &mut c] {
        g.post_rx(16);
    }
    // A broadcast and a unicast on red reach red's other guest, and never blue's.
    let bc = broadcast(1, 200, 1);
    a.send(&bc);
    let uni = frame(1, 2, 300, 2);
    a.send(&uni);
    settle(&mut s);
    assert_eq!(b.recv(), [Ok(bc), Ok(uni)]);
    assert!(c.recv().is_empty(), "red's frames leaked to blue");
    // Blue's broadcast stays on blue (it has no one else).
    c.send(&broadcast(3, 200, 3));
    settle(&mut s);
    assert!(
        a.recv().is_empty() && b.recv().is_empty(),
        "blue's broadcast leaked to red"
    );
    let snap = s.nb.snapshot();
    let ports = |name: &str| {
        snap.switches
            .iter()
            .find(|sw| sw.name == name)
            .map(|sw| sw.bridge.ports.len())
    };
    assert_eq!((ports("red"), ports("blue")), (Some(2), Some(1)));
    assert_eq!(ports("xenbr0"), Some(0), "the default switch got nothing");
}

#[test]
fn a_vif_naming_a_switch_that_does_not_exist_is_refused_saying_why() {
    let mut s = Scene::new(Config::default());
    let (mut other, _) = attach(&mut s, Guest::mac(1), &on_switch(1, "xenbr0"));
    let f = s.guest(Guest::mac(2));
    let p = f.add_vif(&s.xen, &on_switch(2, "dmz"));
    settle(&mut s);
    assert_eq!(state(&f, &p), "6", "refused: Closed");
    let why = f
        .backend_node(&p, "hotplug-error")
        .expect("hotplug-error says why");
    assert!(
        why.contains("\"dmz\"") && why.contains("xenbr0") && why.contains("switch=dmz"),
        "{why}"
    );
    assert_eq!(f.backend_node(&p, "error").as_deref(), Some(why.as_str()));
    assert!(s.nb.vifs().all(|v| v.id() != f.id()), "never connected");
    // The guest already there is not disturbed.
    other.post_rx(1);
    other.send(&broadcast(1, 100, 1));
    settle(&mut s);
    assert_eq!(s.nb.vif_stats(other.id()).unwrap().tx_packets, 1);
}

#[test]
fn host_mode_gives_the_vif_a_netdev_before_initwait_and_removes_it_with_the_device() {
    let mut s = Scene::new(Config::default());
    let nd = MemNetdevs::default();
    s.nb.set_netdevs(Box::new(nd.clone()));
    let cfg = vif(1, |c| {
        c.script = Some("/etc/xen/scripts/vif-bridge".into());
        c.vifname = Some("web0".into());
        c.mtu = Some(9000);
    });
    let mut f = s.guest(Guest::mac(1));
    let p = f.add_vif(&s.xen, &cfg);
    settle(&mut s);
    assert_eq!(state(&f, &p), "2");
    assert_eq!(
        nd.0.borrow().opened,
        [(f.id(), "web0".to_string(), 9000)],
        "made before InitWait, so the hotplug script finds it"
    );
    f.publish(&p);
    settle(&mut s);
    assert_eq!(state(&f, &p), "4");
    // Guest → netdev, whatever the destination; netdev → guest.
    let out = frame(1, 9, 500, 1);
    f.send(&out);
    settle(&mut s);
    assert_eq!(nd.wire("web0").borrow().sent, [out]);
    f.post_rx(4);
    let inbound = frame(9, 1, 700, 2);
    nd.wire("web0")
        .borrow_mut()
        .inbox
        .push_back(inbound.clone());
    settle(&mut s);
    assert_eq!(f.recv(), [Ok(inbound)]);
    // The toolstack removes the device: the netdev goes too.
    let xs = s.xen.xenstore();
    xs.rm(&p.backend).unwrap();
    xs.rm(&p.frontend).unwrap();
    settle(&mut s);
    assert_eq!(nd.0.borrow().removed, [(f.id(), "web0".to_string())]);
}

#[test]
fn host_mode_names_the_netdev_after_the_vif_and_is_refused_without_netdevs() {
    let host = |mac| {
        vif(mac, |c| {
            c.script = Some("vif-route".into());
        })
    };
    let mut s = Scene::new(Config::default());
    // No netdevs: the device is refused, saying what to do.
    let f = s.guest(Guest::mac(1));
    let p = f.add_vif(&s.xen, &host(1));
    settle(&mut s);
    assert_eq!(state(&f, &p), "6");
    let why = f.backend_node(&p, "hotplug-error").unwrap();
    assert!(
        why.contains("vif-splitnet") && why.contains("--vif-mode"),
        "{why}"
    );
    // With netdevs, vif<domid>.<devid>.
    let nd = MemNetdevs::default();
    s.nb.set_netdevs(Box::new(nd.clone()));
    let (g, pg) = attach(&mut s, Guest::mac(2), &host(2));
    assert_eq!(state(&g, &pg), "4");
    let name = format!("vif{}.0", g.id().domid);
    assert_eq!(nd.0.borrow().opened, [(g.id(), name, 1500)]);
}

#[test]
fn connected_waits_for_the_hotplug_script() {
    let mut s = Scene::new(Config::default());
    let cfg = vif(1, |c| {
        c.script = Some("vif-splitnet".into());
        c.hotplug = true;
    });
    let (f, p) = attach(&mut s, Guest::mac(1), &cfg);
    assert_eq!(
        state(&f, &p),
        "2",
        "libxl's empty hotplug-status: wait for the script"
    );
    s.xen
        .xenstore()
        .write(&format!("{}/hotplug-status", p.backend), "connected")
        .unwrap();
    settle(&mut s);
    assert_eq!(state(&f, &p), "4");
}

/// Keeps `a`'s tx ring full of `size`-byte frames to `b` and runs the backend from `t` for
/// `span` of simulated time in 1 ms steps; returns the bytes `b` received.
fn stream(
    s: &mut Scene,
    a: &mut RawFront,
    b: &mut RawFront,
    t: &mut Instant,
    span: Duration,
) -> u64 {
    let size = 1500;
    let end = *t + span;
    let mut got = 0u64;
    let mut seq = 0;
    while *t < end {
        while a.tx.free_requests() > 0 {
            seq += 1;
            if !a.try_send(&frame(1, 2, size, seq)) {
                break;
            }
        }
        s.nb.poll_at(*t).expect("netback polls");
        a.reap_tx();
        got += b
            .recv()
            .iter()
            .map(|r| r.as_ref().map_or(0, Vec::len) as u64)
            .sum::<u64>();
        b.post_rx_up_to(64);
        *t += Duration::from_millis(1);
    }
    got
}

#[test]
fn rate_limits_the_guests_transmit_and_a_change_applies_live() {
    let mut s = Scene::new(Config::default());
    // 10 Mb/s in 50 ms windows, as libxl writes rate=10Mb/s.
    let limited = vif(1, |c| c.rate = Some("62500,50000".into()));
    let (mut a, pa) = attach(&mut s, Guest::mac(1), &limited);
    let (mut b, _) = attach(&mut s, Guest::mac(2), &vif(2, |_| {}));
    b.post_rx_up_to(64);
    let mut t = Instant::now();
    let got = stream(&mut s, &mut a, &mut b, &mut t, Duration::from_secs(5));
    let want = 62_500.0 / 0.05 * 5.0;
    let ratio = got as f64 / want;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{got} B in 5 s at 10 Mb/s ({ratio:.3}x)"
    );
    assert!(s.nb.vif_stats(a.id()).unwrap().tx_rate_limited > 0);
    // Twice the rate, written while the guest streams: it applies from the next pass.
    s.xen
        .xenstore()
        .write(&format!("{}/rate", pa.backend), "125000,50000")
        .unwrap();
    let got = stream(&mut s, &mut a, &mut b, &mut t, Duration::from_secs(5));
    let ratio = got as f64 / (2.0 * want);
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{got} B in 5 s at 20 Mb/s ({ratio:.3}x)"
    );
    // No limit: the key removed.
    s.xen
        .xenstore()
        .rm(&format!("{}/rate", pa.backend))
        .unwrap();
    let got = stream(&mut s, &mut a, &mut b, &mut t, Duration::from_secs(1));
    assert!(
        got as f64 > 4.0 * want / 5.0,
        "unlimited after the key went: {got} B in 1 s"
    );
}

#[test]
fn a_mac_moving_between_two_vifs_never_locks_the_survivor_out() {
    let mut s = Scene::new(Config::default());
    let same = on_switch(1, "xenbr0");
    // The old domain, and a peer.
    let (mut old, _) = attach(&mut s, Guest::mac(1), &same);
    let (mut peer, _) = attach(&mut s, Guest::mac(2), &on_switch(2, "xenbr0"));
    // The new domain of the same guest (restore, or a localhost migration's target).
    let (mut new, pn) = attach(&mut s, Guest::mac(1), &same);
    for g in [&mut old, &mut peer, &mut new] {
        g.post_rx(16);
    }
    let to_guest = frame(2, 1, 200, 1);
    peer.send(&to_guest);
    settle(&mut s);
    assert_eq!(
        new.recv(),
        [Ok(to_guest.clone())],
        "the newest holds the MAC"
    );
    assert!(old.recv().is_empty());
    old.send(&frame(1, 2, 200, 2));
    settle(&mut s);
    assert!(
        peer.recv().is_empty(),
        "the old domain may not send as the MAC meanwhile"
    );
    // The migration is cancelled: the new domain goes, the old one resumes and owns it again.
    let xs = s.xen.xenstore();
    xs.rm(&pn.backend).unwrap();
    xs.rm(&pn.frontend).unwrap();
    settle(&mut s);
    peer.send(&to_guest);
    let from_old = frame(1, 2, 200, 3);
    old.send(&from_old);
    settle(&mut s);
    assert_eq!(old.recv(), [Ok(to_guest)]);
    assert_eq!(peer.recv(), [Ok(from_old)]);
}

#[test]
fn keys_are_read_as_linux_reads_them() {
    let mut s = Scene::new(Config::default());
    // A feature that is not a number is off, and the vif still connects.
    let f = s.guest(Guest::mac(1));
    let p = f.add_vif(&s.xen, &vif(1, |_| {}));
    settle(&mut s);
    f.publish(&p);
    f.dom
        .xenstore()
        .write(&format!("{}/feature-gso-tcpv4", p.frontend), "yes")
        .unwrap();
    settle(&mut s);
    assert_eq!(state(&f, &p), "4");
    // Without request-rx-copy (and flipping not offered) the frontend is refused.
    let mut s = Scene::new(Config::default());
    s.nb.set_allow_flip(false).unwrap();
    let f = s.guest(Guest::mac(2));
    let p = f.add_vif(&s.xen, &vif(2, |_| {}));
    settle(&mut s);
    f.publish(&p);
    f.dom
        .xenstore()
        .rm(&format!("{}/request-rx-copy", p.frontend))
        .unwrap();
    // Re-announce Connected so the backend reads the keys as they now stand.
    f.dom
        .xenstore()
        .write(&format!("{}/state", p.frontend), "4")
        .unwrap();
    settle(&mut s);
    assert_eq!(state(&f, &p), "6");
    assert!(
        f.backend_node(&p, "error")
            .unwrap()
            .contains("request-rx-copy")
    );
    // Ring indices impossible at connect: refused, not connected and then disabled.
    let g = s.guest(Guest::mac(3));
    let pg = g.add_vif(&s.xen, &vif(3, |_| {}));
    settle(&mut s);
    g.set_tx_req_prod(1000);
    g.publish(&pg);
    settle(&mut s);
    assert_eq!(state(&g, &pg), "6");
    let err = g.backend_node(&pg, "error").unwrap();
    assert!(
        err.contains("tx ring") && err.contains("impossible"),
        "{err}"
    );
    assert!(s.nb.vifs().all(|v| v.id() != g.id()));
}

#[test]
fn a_new_backend_takes_over_connected_vifs_and_serves_what_was_left_on_the_rings() {
    let mut s = Scene::new(Config::default());
    let (mut a, pa) = attach(&mut s, Guest::mac(1), &vif(1, |_| {}));
    let (mut b, pb) = attach(&mut s, Guest::mac(2), &vif(2, |_| {}));
    b.post_rx(32);
    let first = frame(1, 2, 400, 1);
    a.send(&first);
    settle(&mut s);
    assert_eq!(b.recv(), [Ok(first)]);
    a.reap_tx();
    // The backend goes away without closing anything (a crash, or a restart that leaves the
    // guests connected): no xenstore write, its mappings and event channels released. The new
    // one looks at nothing before its first pass, after the old one is gone (netbackd holds a
    // lock so two never run at once).
    let fresh = Netback::new(s.dom0.clone(), Config::default(), testkit::POOL_PAGES).unwrap();
    drop(std::mem::replace(&mut s.nb, fresh));
    // The guest sends while no backend serves it.
    let during = frame(1, 2, 600, 2);
    a.send(&during);
    for p in [&pa, &pb] {
        assert_eq!(
            s.xen
                .xenstore()
                .read(&format!("{}/state", p.backend))
                .unwrap(),
            "4",
            "nothing was closed"
        );
    }
    settle(&mut s);
    let ids: Vec<VifId> = s.nb.vifs().map(|v| v.id()).collect();
    assert!(ids.contains(&a.id()) && ids.contains(&b.id()), "{ids:?}");
    assert_eq!(
        b.recv(),
        [Ok(during)],
        "the request left on the ring was served"
    );
    let after = frame(2, 1, 800, 3);
    a.post_rx(4);
    b.send(&after);
    settle(&mut s);
    assert_eq!(a.recv(), [Ok(after)]);
    for p in [&pa, &pb] {
        assert_eq!(
            s.xen
                .xenstore()
                .read(&format!("{}/state", p.backend))
                .unwrap(),
            "4"
        );
    }
}
