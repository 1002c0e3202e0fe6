//! What a host-mode vif's netdev needs from a TAP, each test in a namespace of its own: it
//! outlives its process (persistent) and a later open attaches to it; an HVM guest's QEMU TAP
//! is attached to, never created; the MAC Linux's xen-netback gives every vif; a place in a
//! Linux bridge, as `vif-bridge` gives it.

mod common;

use common::{eventually, root_netns, sys_class_net};
use hostnet::netns::Netns;
use hostnet::tap::{self, offload};
use hostnet::vnet::HdrLen;
use hostnet::{Error, Tap, TapConfig, iface};

/// The vif netdev's MAC under Linux's xen-netback.
const VIF_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// What a host-mode vif's TAP is opened with.
fn vif_config(mtu: u32) -> TapConfig {
    TapConfig {
        vnet_hdr: Some(HdrLen::Legacy),
        offload: offload::CSUM | offload::TSO4 | offload::TSO6,
        mtu: Some(mtu),
        persist: true,
    }
}

/// `ip -d link show DEV`.
fn details(ns: &Netns, dev: &str) -> String {
    ns.ip(&["-d", "link", "show", dev])
        .unwrap_or_else(|e| panic!("ip -d link show {dev}: {e}"))
}

fn has(ns: &Netns, dev: &str) -> bool {
    sys_class_net(ns).iter().any(|n| n == dev)
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn a_persistent_tap_outlives_its_handle_is_attached_again_and_deleted() {
    let ns = root_netns("a_persistent_tap_outlives_its_handle_is_attached_again_and_deleted");
    let first = ns
        .run(|| Tap::open("vif1.0", &vif_config(9000)))
        .unwrap()
        .unwrap();
    assert!(first.created());
    first.set_mac(VIF_MAC).unwrap();
    first.set_up().unwrap();
    let d = details(&ns, "vif1.0");
    assert!(d.contains("persist on"), "{d}");
    assert!(d.contains("vnet_hdr on"), "{d}");
    assert!(d.contains("mtu 9000"), "{d}");
    assert!(d.contains("link/ether fe:ff:ff:ff:ff:ff"), "{d}");
    assert_eq!(first.mac().unwrap(), VIF_MAC);

    // The process that made it goes: the TAP stays, down to no carrier.
    drop(first);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(has(&ns, "vif1.0"), "a persistent TAP went with its handle");
    let d = details(&ns, "vif1.0");
    assert!(d.contains("NO-CARRIER"), "{d}");

    // The next instance attaches to it (and to it only: attach never creates).
    let again = ns
        .run(|| Tap::open("vif1.0", &vif_config(9000)))
        .unwrap()
        .unwrap();
    assert!(!again.created(), "a second open made a new device");
    assert_eq!(again.mac().unwrap(), VIF_MAC, "the MAC stayed with it");
    // While it is attached, deleting it is refused: a TAP has one reader.
    match ns.run(|| tap::delete("vif1.0")).unwrap() {
        Err(e @ Error::TapBusy { .. }) => assert!(e.to_string().contains("vif1.0"), "{e}"),
        other => panic!("delete while attached: {other:?}"),
    }
    drop(again);

    // Deleting clears the persistence and the device goes; a second delete finds nothing.
    let deleted = ns.run(|| tap::delete("vif1.0")).unwrap();
    assert!(deleted.unwrap());
    assert!(
        eventually(|| !has(&ns, "vif1.0")),
        "vif1.0 is still there after delete"
    );
    assert!(!ns.run(|| tap::delete("vif1.0")).unwrap().unwrap());
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn attach_finds_an_existing_tap_and_never_creates_one() {
    let ns = root_netns("attach_finds_an_existing_tap_and_never_creates_one");
    // QEMU's TAP for an HVM guest's emulated NIC is not there yet.
    match ns
        .run(|| Tap::attach("vif2.0-emu", &TapConfig::default()))
        .unwrap()
    {
        Err(e @ Error::NoSuchTap { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("vif2.0-emu") && msg.contains("never creates"),
                "{msg}"
            );
        }
        other => panic!("attach to a missing TAP: {other:?}"),
    }
    assert!(!has(&ns, "vif2.0-emu"), "attach created a device");

    // Made by someone else (ip tuntap, as QEMU would), it is attached to and left in place.
    ns.ip(&["tuntap", "add", "dev", "vif2.0-emu", "mode", "tap"])
        .unwrap();
    let tap = ns
        .run(|| Tap::attach("vif2.0-emu", &TapConfig::default()))
        .unwrap()
        .unwrap();
    assert!(!tap.created());
    // Held, it cannot be attached twice.
    match ns
        .run(|| Tap::attach("vif2.0-emu", &TapConfig::default()))
        .unwrap()
    {
        Err(Error::TapBusy { .. }) => {}
        other => panic!("second attach: {other:?}"),
    }
    drop(tap);
    assert!(has(&ns, "vif2.0-emu"), "the TAP someone else made went");

    // A name held by another kind of device is not a TAP to attach to.
    ns.ip(&["link", "add", "ve0", "type", "veth", "peer", "name", "ve1"])
        .unwrap();
    match ns
        .run(|| Tap::attach("ve0", &TapConfig::default()))
        .unwrap()
    {
        Err(Error::NameInUse { .. }) => {}
        other => panic!("attach to a veth: {other:?}"),
    }
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn a_vif_netdev_joins_a_linux_bridge_and_errors_say_what_to_do() {
    let ns = root_netns("a_vif_netdev_joins_a_linux_bridge_and_errors_say_what_to_do");
    let config = TapConfig {
        persist: false,
        ..vif_config(1500)
    };
    let tap = ns.run(|| Tap::open("vif3.0", &config)).unwrap().unwrap();
    tap.set_mac(VIF_MAC).unwrap();

    // No bridge yet: what to do.
    match ns.run(|| iface::join_bridge("vif3.0", "xenbr0")).unwrap() {
        Err(e @ Error::NoSuchBridge { .. }) => {
            assert!(
                e.to_string().contains("ip link add xenbr0 type bridge"),
                "{e}"
            );
        }
        other => panic!("join a missing bridge: {other:?}"),
    }
    // Not a bridge: said so.
    ns.ip(&["link", "add", "ve0", "type", "veth", "peer", "name", "ve1"])
        .unwrap();
    match ns.run(|| iface::join_bridge("vif3.0", "ve0")).unwrap() {
        Err(e @ Error::NotABridge { .. }) => assert!(e.to_string().contains("ve0"), "{e}"),
        other => panic!("join a veth: {other:?}"),
    }
    // No such port.
    ns.ip(&["link", "add", "xenbr0", "type", "bridge"]).unwrap();
    match ns.run(|| iface::join_bridge("vif9.9", "xenbr0")).unwrap() {
        Err(Error::NoSuchInterface { .. }) => {}
        other => panic!("join with a missing port: {other:?}"),
    }

    // The bridge exists: the vif is its port, and up.
    ns.run(|| iface::join_bridge("vif3.0", "xenbr0"))
        .unwrap()
        .unwrap();
    let d = details(&ns, "vif3.0");
    assert!(d.contains("master xenbr0"), "{d}");
    assert!(d.contains(",UP"), "{d}");
    // Again: nothing changes, no error.
    ns.run(|| iface::join_bridge("vif3.0", "xenbr0"))
        .unwrap()
        .unwrap();
}
