//! The errors a person sees: typed, and saying what to do.

mod common;

use std::net::Ipv4Addr;

use common::root_netns;
use hostnet::{Error, PacketSocket, Tap, TapConfig};

#[test]
fn bad_names_are_refused_before_the_kernel_is_asked() {
    for name in ["", "sixteen-bytes-16", "a/b", "a:b", "sp ace"] {
        match Tap::open(name, &TapConfig::default()) {
            Err(e @ Error::BadName { .. }) => {
                assert!(e.to_string().contains("1 to 15 bytes"), "{e}")
            }
            other => panic!("Tap::open({name:?}): {other:?}"),
        }
        assert!(
            matches!(PacketSocket::bind(name), Err(Error::BadName { .. })),
            "{name:?}"
        );
    }
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn tap_name_held_by_a_non_tap_device_is_in_use() {
    let ns = root_netns("tap_name_held_by_a_non_tap_device_is_in_use");
    ns.ip(&[
        "link", "add", "taken0", "type", "veth", "peer", "name", "taken1",
    ])
    .unwrap();
    ns.ip(&["tuntap", "add", "dev", "tun0", "mode", "tun"])
        .unwrap();
    for name in ["taken0", "tun0"] {
        match ns.run(|| Tap::open(name, &TapConfig::default())).unwrap() {
            Err(e @ Error::NameInUse { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(name) && msg.contains("not a TAP"), "{msg}");
            }
            other => panic!("Tap::open({name}): {other:?}"),
        }
    }
    // The veth is untouched.
    assert!(
        ns.ip(&["link", "show", "taken0"])
            .unwrap()
            .contains("taken0@taken1")
    );
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn nic_that_does_not_exist_is_no_such_interface() {
    let ns = root_netns("nic_that_does_not_exist_is_no_such_interface");
    match ns.run(|| PacketSocket::bind("nosuch0")).unwrap() {
        Err(e @ Error::NoSuchInterface { .. }) => {
            assert!(
                e.to_string()
                    .starts_with("no such interface nosuch0: check"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn an_address_added_twice_is_in_use() {
    let ns = root_netns("an_address_added_twice_is_in_use");
    let tap = ns
        .run(|| Tap::open("atap0", &TapConfig::default()))
        .unwrap()
        .unwrap();
    let addr = Ipv4Addr::new(10, 199, 8, 1);
    tap.add_ipv4(addr, 24).unwrap();
    assert!(
        ns.ip(&["-4", "addr", "show", "atap0"])
            .unwrap()
            .contains("10.199.8.1/24")
    );
    match tap.add_ipv4(addr, 24) {
        Err(e @ Error::AddressInUse { .. }) => {
            assert!(
                e.to_string()
                    .contains("ip addr del 10.199.8.1/24 dev atap0"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A second, different address is added, not swapped in for the first.
    tap.add_ipv4(Ipv4Addr::new(10, 199, 9, 1), 24).unwrap();
    let addrs = ns.ip(&["-4", "addr", "show", "atap0"]).unwrap();
    assert!(
        addrs.contains("10.199.8.1/24") && addrs.contains("10.199.9.1/24"),
        "{addrs}"
    );
    assert!(matches!(
        tap.add_ipv4(addr, 33),
        Err(Error::BadConfig { .. })
    ));
    assert!(matches!(tap.set_mtu(20), Err(Error::BadConfig { .. })));
}
