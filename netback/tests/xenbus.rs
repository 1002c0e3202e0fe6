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
    let k = &f.keys;
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
