//! Builtin mode with two switches, as for two bridges (or VLANs) on one host: each has an
//! uplink into a network of its own (a veth whose far end is in a namespace of its own, the
//! same addresses on both), guests join the switch their `bridge=` names, and nothing crosses
//! between the switches, broadcasts included. A guest naming a switch that does not exist is
//! refused, and put on no other switch. Root only: ignored by default, run with `--ignored` as
//! root (CI does).

mod support;

use std::time::Duration;

use rustix::process::Signal;
use support::daemon::{Daemon, Netns, root_netns};
use support::peers::{answers_within, iperf3, mac_of, pcap_records, pings};

/// Both networks use the same addresses: only the switches keep them apart.
const HOST: &str = "10.199.41.1/24";
/// Guest 1, on switch a.
const G1: &str = "10.199.41.2";
/// Guest 2, on switch b.
const G2: &str = "10.199.41.3";
const G1_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x02];
const G2_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x03];

/// Source MACs of a pcap file's frames.
fn sources(file: &std::path::Path) -> Vec<[u8; 6]> {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    pcap_records(&bytes)
        .into_iter()
        .filter_map(|(_, f)| f.get(6..12)?.try_into().ok())
        .collect()
}

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2, iputils-ping and iperf3: run as root with --ignored (CI does)"]
fn two_switches_keep_their_guests_apart_and_an_unknown_switch_is_refused() {
    let ns = root_netns("snbd-sw", &["ip", "ping", "iperf3"]);
    // Each network: a namespace holding the host's end of a veth; netbackd takes the other.
    let nets: Vec<Netns> = ["snbd-swa", "snbd-swb"]
        .iter()
        .map(|t| root_netns(t, &["ip"]))
        .collect();
    for (net, x) in nets.iter().zip(["a", "b"]) {
        let (wire, host) = (format!("w{x}"), format!("h{x}"));
        ns.ip(&[
            "link",
            "add",
            &wire,
            "type",
            "veth",
            "peer",
            "name",
            &host,
            "netns",
            net.name(),
        ])
        .unwrap();
        ns.ip(&["link", "set", &wire, "up"]).unwrap();
        net.ip(&["addr", "add", HOST, "dev", &host]).unwrap();
        net.ip(&["link", "set", &host, "up"]).unwrap();
    }
    let (net_a, net_b) = (&nets[0], &nets[1]);
    let (ha, hb) = (mac_of(net_a, "ha"), mac_of(net_b, "hb"));

    let dir = std::env::temp_dir();
    let tag = std::process::id();
    let pcap_a = dir.join(format!("netbackd-sw-a-{tag}.pcap"));
    let pcap_b = dir.join(format!("netbackd-sw-b-{tag}.pcap"));
    let json = dir.join(format!("netbackd-sw-{tag}.json"));
    let mut d = Daemon::start(
        &ns,
        &[
            "--guests",
            "3",
            "--guest-net",
            "10.199.41.0/24",
            "--uplink",
            "nic:wa,switch=a",
            "--uplink",
            "nic:wb,switch=b",
            "--switch",
            "lonely",
            "--guest-bridge",
            "a,b,nope",
            "--pcap",
            &format!("nic:wa:{}", pcap_a.display()),
            "--pcap",
            &format!("nic:wb:{}", pcap_b.display()),
            "--stats-json",
            &json.to_string_lossy(),
        ],
    );
    // Within a switch: each network reaches its own guest, TCP included.
    assert!(
        answers_within(net_a, G1, Duration::from_secs(20)),
        "guest 1 never answered on switch a:\n{}",
        d.kill_and_log()
    );
    assert!(
        answers_within(net_b, G2, Duration::from_secs(20)),
        "guest 2 never answered on switch b:\n{}",
        d.kill_and_log()
    );
    assert!(iperf3(net_a, G1, &["-t", "1"]) > 0);
    assert!(iperf3(net_b, G2, &["-t", "1", "-R"]) > 0);
    // Across: nothing. Each side's ARP broadcasts for the other side's guest find nobody.
    for _ in 0..3 {
        assert!(!pings(net_a, G2), "switch a reached guest 2 on switch b");
        assert!(!pings(net_b, G1), "switch b reached guest 1 on switch a");
    }
    // The guest naming no switch is not reachable from either side.
    assert!(!pings(net_a, "10.199.41.4") && !pings(net_b, "10.199.41.4"));

    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}:\n{err}", out.status);

    // What each switch carried (written out at exit): its own network's and guest's frames,
    // none of the other's, broadcast or not.
    let (on_a, on_b) = (sources(&pcap_a), sources(&pcap_b));
    assert!(on_a.contains(&ha) && on_a.contains(&G1_MAC), "{on_a:02x?}");
    assert!(on_b.contains(&hb) && on_b.contains(&G2_MAC), "{on_b:02x?}");
    assert!(
        !on_a.contains(&hb) && !on_a.contains(&G2_MAC),
        "switch b's frames reached switch a"
    );
    assert!(
        !on_b.contains(&ha) && !on_b.contains(&G1_MAC),
        "switch a's frames reached switch b"
    );

    // The refusal: netbackd's log says why and what to do, the guest failed, and no switch
    // (xenbr0 least of all) has a port for it.
    assert!(
        err.contains(
            "vif3.0: refusing the device: no splitnet switch named \"nope\" (this backend has \
             xenbr0, lonely, a, b): start netbackd with an uplink on it (--uplink ...,switch=nope)"
        ),
        "{err}"
    );
    assert!(
        err.contains("guest 3 (10.199.41.4): its vif3.0 failed: the backend refused it"),
        "{err}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the counters at exit")).unwrap();
    let ports = |name: &str| {
        report["backend"]["switches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no switch {name}: {report}"))["bridge"]["ports"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(
        (ports("a"), ports("b"), ports("xenbr0"), ports("lonely")),
        (2, 2, 0, 0)
    );
    let g3 = &report["guests"][2];
    assert!(
        g3["error"].as_str().is_some_and(|e| e.contains("nope")),
        "{g3}"
    );
    for f in [&pcap_a, &pcap_b, &json] {
        let _ = std::fs::remove_file(f);
    }
}
