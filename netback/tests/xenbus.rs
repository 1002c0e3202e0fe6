//! The control plane: features and InitWait, connecting on the frontend's keys, refusing bad
//! keys with an `error` node, and teardown.

use netback::{Config, RxMode};
use testkit::{Guest, Nb, RawFront, Scene, broadcast};
use xen_model::{DomainHandle, Hypervisor, XsConnection};

fn state(xs: &XsConnection, dir: &str) -> String {
    xs.read(&format!("{dir}/state")).unwrap_or_default()
}

/// Polls the backend until `cond` holds (bounded: the control plane is event-driven, a few
/// passes suffice).
#[track_caller]
fn settle(nb: &mut Nb, mut cond: impl FnMut() -> bool) {
    for _ in 0..50 {
        nb.poll().unwrap();
        if cond() {
            return;
        }
    }
    panic!("control plane did not settle");
}

fn write_keys(f: &RawFront, fe: &str, extra: &[(&str, &str)]) {
    let xs = f.dom.xenstore();
    let k = &f.keys.queues[0];
    for (key, v) in [
        ("tx-ring-ref", k.tx_ring_ref.0.to_string()),
        ("rx-ring-ref", k.rx_ring_ref.0.to_string()),
        ("event-channel", k.event_channel.0.to_string()),
        ("request-rx-copy", "1".into()),
        ("feature-rx-notify", "1".into()),
        ("feature-sg", "1".into()),
    ] {
        xs.write(&format!("{fe}/{key}"), &v).unwrap();
    }
    for (key, v) in extra {
        xs.write(&format!("{fe}/{key}"), v).unwrap();
    }
}

fn setup(extra: &[(&str, &str)]) -> (Hypervisor, DomainHandle, Nb, RawFront, String, String) {
    let Scene { xen, dom0, mut nb } = Scene::new(Config::default());
    let f = RawFront::new(&xen, dom0.domid(), Guest::mac(1));
    let paths = xen
        .add_vif(f.dom.domid(), dom0.domid(), 0, "02:00:00:00:00:01")
        .unwrap();
    let xs = dom0.xenstore();
    settle(&mut nb, || state(&xs, &paths.backend) == "2");
    for feat in [
        "feature-rx-copy",
        "feature-rx-flip",
        "feature-sg",
        "feature-rx-notify",
    ] {
        assert_eq!(
            xs.read(&format!("{}/{feat}", paths.backend)).unwrap(),
            "1",
            "{feat}"
        );
    }
    write_keys(&f, &paths.frontend, extra);
    f.dom
        .xenstore()
        .write(&format!("{}/state", paths.frontend), "4")
        .unwrap();
    (xen, dom0, nb, f, paths.backend, paths.frontend)
}

#[test]
fn handshake_connects_and_teardown_closes() {
    let (_xen, dom0, mut nb, mut f, be, fe) = setup(&[]);
    let xs = dom0.xenstore();
    settle(&mut nb, || state(&xs, &be) == "4");
    assert_eq!(nb.vifs().count(), 1);
    // The connected vif passes traffic: a broadcast from the guest reaches the switch.
    f.send(&broadcast(1, 100, 0));
    nb.poll().unwrap();
    assert_eq!(f.reap_tx(), 1);
    assert_eq!(nb.vif_stats(f.id()).unwrap().tx_packets, 1);
    // Frontend closes: backend disconnects and goes Closed.
    f.dom.xenstore().write(&format!("{fe}/state"), "6").unwrap();
    settle(&mut nb, || state(&xs, &be) == "6");
    assert_eq!(nb.vifs().count(), 0);
}

#[test]
fn a_frontend_without_rx_notify_still_connects() {
    // Linux only shortens its drain timeout without feature-rx-notify; so does nothing here.
    let (_xen, dom0, mut nb, _f, be, _fe) = setup(&[("feature-rx-notify", "0")]);
    let xs = dom0.xenstore();
    settle(&mut nb, || state(&xs, &be) == "4");
    assert_eq!(nb.vifs().count(), 1);
}

#[test]
fn too_many_queues_is_refused() {
    let (_xen, dom0, mut nb, _f, be, _fe) = setup(&[("multi-queue-num-queues", "4")]);
    let xs = dom0.xenstore();
    settle(&mut nb, || state(&xs, &be) == "6");
    let err = xs.read(&format!("{be}/error")).unwrap();
    assert!(err.contains("multi-queue-num-queues 4"), "{err}");
}

#[test]
fn flip_request_refused_when_flip_is_off() {
    let Scene { xen, dom0, mut nb } = Scene::new(Config::default());
    nb.set_allow_flip(false).unwrap();
    let f = RawFront::new(
        &xen,
        dom0.domid(),
        Guest {
            mode: RxMode::Flip,
            ..Guest::mac(1)
        },
    );
    let paths = xen
        .add_vif(f.dom.domid(), dom0.domid(), 0, "02:00:00:00:00:01")
        .unwrap();
    let xs = dom0.xenstore();
    settle(&mut nb, || state(&xs, &paths.backend) == "2");
    assert_eq!(
        xs.read(&format!("{}/feature-rx-flip", paths.backend))
            .unwrap(),
        "0"
    );
    write_keys(&f, &paths.frontend, &[("request-rx-copy", "0")]);
    f.dom
        .xenstore()
        .write(&format!("{}/state", paths.frontend), "4")
        .unwrap();
    settle(&mut nb, || state(&xs, &paths.backend) == "6");
    let err = xs.read(&format!("{}/error", paths.backend)).unwrap();
    assert!(err.contains("feature-rx-flip is 0"), "{err}");
}

#[test]
fn a_refused_device_is_not_offered_again_until_it_can_be_prepared() {
    // A builtin vif naming a switch this backend lacks is refused; the toolstack's own
    // frontend state write (Initialising) and a frontend that starts over must not put it on
    // the default switch.
    let Scene { xen, dom0, mut nb } = Scene::new(Config::default());
    let f = RawFront::new(&xen, dom0.domid(), Guest::mac(1));
    let cfg = xen_model::VifConfig {
        bridge: Some("nope".into()),
        ..xen_model::VifConfig::new("02:00:00:00:00:01")
    };
    let paths = xen
        .add_vif_with(f.dom.domid(), dom0.domid(), 0, &cfg)
        .unwrap();
    let (be, fe) = (paths.backend, paths.frontend);
    let xs = dom0.xenstore();
    settle(&mut nb, || state(&xs, &be) == "6");
    let error = xs.read(&format!("{be}/error")).unwrap();
    assert!(
        error.contains("no splitnet switch named \"nope\""),
        "{error}"
    );
    for _ in 0..10 {
        nb.poll().unwrap();
    }
    assert_eq!(state(&xs, &be), "6", "offered again without its switch");

    // The frontend starts over and connects regardless: still refused, nothing connected.
    let fxs = f.dom.xenstore();
    fxs.write(&format!("{fe}/state"), "1").unwrap();
    write_keys(&f, &fe, &[]);
    fxs.write(&format!("{fe}/state"), "4").unwrap();
    for _ in 0..10 {
        nb.poll().unwrap();
    }
    assert_eq!(state(&xs, &be), "6");
    assert_eq!(nb.vifs().count(), 0, "a refused device was connected");
    assert!(
        nb.snapshot().bridge.ports.is_empty(),
        "a refused device is on the default switch"
    );

    // Once the switch exists, the frontend starting over gets the device, on that switch.
    nb.add_switch("nope").unwrap();
    fxs.write(&format!("{fe}/state"), "1").unwrap();
    settle(&mut nb, || state(&xs, &be) == "2");
    fxs.write(&format!("{fe}/state"), "4").unwrap();
    settle(&mut nb, || state(&xs, &be) == "4");
    assert_eq!(nb.vifs().count(), 1);
    let snap = nb.snapshot();
    assert!(snap.bridge.ports.is_empty(), "{:?}", snap.bridge);
    let nope = snap.switches.iter().find(|s| s.name == "nope").unwrap();
    assert_eq!(nope.bridge.ports.len(), 1);
}
