//! Xenstore: tree operations, permissions, watches.

mod common;

use std::time::Duration;

use hypervisor::*;

const T: Option<Duration> = Some(Duration::from_secs(5));

#[test]
fn read_write_mkdir_rm_directory() {
    let (xen, _d0, g) = common::machine();
    let xs = g.xenstore();
    xs.write("/local/domain/1/data/a/b", "hello").unwrap();
    assert_eq!(xs.read("/local/domain/1/data/a/b").unwrap(), "hello");
    assert_eq!(xs.read("/local/domain/1/data/a").unwrap(), "");
    xs.mkdir("/local/domain/1/data/c").unwrap();
    assert_eq!(
        xs.directory("/local/domain/1/data").unwrap(),
        vec!["a", "c"]
    );
    xs.rm("/local/domain/1/data/a").unwrap();
    assert_eq!(
        xs.read("/local/domain/1/data/a/b"),
        Err(Error::XsNoEntry("/local/domain/1/data/a/b".into()))
    );
    assert_eq!(xs.directory("/local/domain/1/data").unwrap(), vec!["c"]);
    assert!(matches!(
        xs.rm("/local/domain/1/nope"),
        Err(Error::XsNoEntry(_))
    ));
    for bad in ["", "relative", "/trailing/", "/a//b", "/sp ace"] {
        assert!(
            matches!(xs.write(bad, "x"), Err(Error::XsInvalidPath(_))),
            "{bad}"
        );
    }
    let dom0 = xen.xenstore();
    assert!(
        dom0.directory("/local/domain")
            .unwrap()
            .contains(&"1".to_string())
    );
}

#[test]
fn guests_write_only_under_their_own_directory() {
    let (xen, d0, g) = common::machine();
    let xs = g.xenstore();
    let deny = |r: Result<()>| assert!(matches!(r, Err(Error::XsPermissionDenied { .. })), "{r:?}");
    deny(xs.write("/local/domain/0/x", "1"));
    deny(xs.write("/local/x", "1"));
    deny(xs.mkdir("/tool/x"));
    deny(xs.rm("/local/domain/0"));
    // Another guest's directory is not even readable.
    assert!(matches!(
        xs.read("/local/domain/0/domid"),
        Err(Error::XsPermissionDenied { .. })
    ));
    // dom0 may write anywhere.
    let x0 = d0.xenstore();
    x0.write("/tool/x", "1").unwrap();
    x0.write("/local/domain/1/from-dom0", "ok").unwrap();
    assert_eq!(xs.read("/local/domain/1/from-dom0").unwrap(), "ok");
    // A guest cannot take over nodes it does not own.
    assert!(matches!(
        xs.set_permissions(
            "/tool/x",
            &[XsPerm {
                domid: 1,
                perm: XsPermLevel::Both
            }]
        ),
        Err(Error::XsPermissionDenied { .. })
    ));
    let e = xs.write("/local/domain/0/x", "1").unwrap_err().to_string();
    assert!(
        e.contains("/local/domain/1"),
        "the message says where the guest may write: {e}"
    );
    drop(xen);
}

#[test]
fn vif_directories_follow_xen_permissions() {
    let (xen, d0, g) = common::machine();
    let paths = xen.add_vif(1, 0, 0, "00:16:3e:00:00:01").unwrap();
    assert_eq!(paths.backend, "/local/domain/0/backend/vif/1/0");
    assert_eq!(paths.frontend, "/local/domain/1/device/vif/0");
    let (xb, xf) = (d0.xenstore(), g.xenstore());
    // Each end owns its directory and reads the other's.
    xb.write(&format!("{}/feature-rx-copy", paths.backend), "1")
        .unwrap();
    xf.write(&format!("{}/tx-ring-ref", paths.frontend), "8")
        .unwrap();
    assert_eq!(
        xf.read(&format!("{}/feature-rx-copy", paths.backend))
            .unwrap(),
        "1"
    );
    assert_eq!(
        xb.read(&format!("{}/tx-ring-ref", paths.frontend)).unwrap(),
        "8"
    );
    assert_eq!(
        xf.read(&format!("{}/backend-id", paths.frontend)).unwrap(),
        "0"
    );
    // But the frontend cannot write the backend's directory.
    assert!(matches!(
        xf.write(&format!("{}/state", paths.backend), "4"),
        Err(Error::XsPermissionDenied { .. })
    ));
}

#[test]
fn watches_fire_for_the_subtree_with_their_token() {
    let (_xen, d0, g) = common::machine();
    let xs = g.xenstore();
    xs.mkdir("/local/domain/1/w").unwrap();
    xs.watch("/local/domain/1/w", "tok").unwrap();
    // Fires once on registration.
    assert_eq!(
        xs.read_watch(T).unwrap(),
        Some(WatchEvent {
            path: "/local/domain/1/w".into(),
            token: "tok".into()
        })
    );
    // A change deep below, made by another domain (dom0), fires with the changed path.
    d0.xenstore().write("/local/domain/1/w/a/b", "v").unwrap();
    assert_eq!(
        xs.read_watch(T).unwrap().unwrap().path,
        "/local/domain/1/w/a/b"
    );
    // Unrelated paths with a shared prefix do not fire.
    xs.write("/local/domain/1/wx", "v").unwrap();
    assert_eq!(xs.read_watch(Some(Duration::from_millis(5))).unwrap(), None);
    // Removing an ancestor fires the watch's path.
    xs.rm("/local/domain/1/w").unwrap();
    assert_eq!(xs.read_watch(T).unwrap().unwrap().path, "/local/domain/1/w");
    xs.unwatch("/local/domain/1/w", "tok").unwrap();
    assert!(matches!(
        xs.unwatch("/local/domain/1/w", "tok"),
        Err(Error::XsNoWatch { .. })
    ));
    xs.write("/local/domain/1/w", "again").unwrap();
    assert_eq!(xs.read_watch(Some(Duration::from_millis(5))).unwrap(), None);
}

#[test]
fn a_watcher_thread_wakes_on_a_write() {
    let (_xen, d0, g) = common::machine();
    let xs = g.xenstore();
    xs.watch("/local/domain/1/device", "dev").unwrap();
    assert!(xs.read_watch(T).unwrap().is_some());
    let t = std::thread::spawn(move || xs.read_watch(T).unwrap());
    d0.xenstore()
        .write("/local/domain/1/device/vif/0/state", "1")
        .unwrap();
    let ev = t.join().unwrap().expect("the watch fired");
    assert_eq!(ev.token, "dev");
}

#[test]
fn domain_lifecycle_watches() {
    let (xen, d0, _g) = common::machine();
    let xs = d0.xenstore();
    xs.watch("@releaseDomain", "rel").unwrap();
    assert!(xs.read_watch(T).unwrap().is_some());
    xen.destroy_domain(1).unwrap();
    assert_eq!(xs.read_watch(T).unwrap().unwrap().path, "@releaseDomain");
    assert!(matches!(
        xs.read("/local/domain/1/domid"),
        Err(Error::XsNoEntry(_))
    ));
}
