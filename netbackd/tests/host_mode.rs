//! Host mode end to end, as on a Xen host that keeps its network as it was: a Linux bridge
//! `xenbr0` with the host's address, guests whose vifs name `script=vif-bridge`, netbackd making
//! each vif's netdev `vif<domid>.0` and its embedded toolstack doing what `vif-bridge` does.
//! Linux's own ping and the stock iperf3 client reach the guests through the kernel bridge; a
//! stop leaves the netdevs for the next netbackd, which takes them over; `--close-on-exit`
//! removes them. Root only: ignored by default, run with `--ignored` as root (CI does).

mod support;

use std::time::Duration;

use rustix::process::Signal;
use support::daemon::{Daemon, Netns, root_netns, run};
use support::peers::{answers_within, iperf3, pings};

const NET: &str = "10.199.40.0/24";
const G1: &str = "10.199.40.2";
const G2: &str = "10.199.40.3";

/// `ip -d link show DEV` in `ns`, or why not.
fn link(ns: &Netns, dev: &str) -> Result<String, String> {
    ns.ip(&["-d", "link", "show", dev])
        .map_err(|e| e.to_string())
}

/// Starts netbackd with two host-mode guests on `xenbr0` and waits until both answer.
fn start(ns: &Netns, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--guests",
        "2",
        "--guest-net",
        NET,
        "--guest-script",
        "vif-bridge",
    ];
    args.extend_from_slice(extra);
    let mut d = Daemon::start(ns, &args);
    for g in [G1, G2] {
        assert!(
            answers_within(ns, g, Duration::from_secs(20)),
            "guest {g} never answered ping through xenbr0:\n{}",
            d.kill_and_log()
        );
    }
    d
}

/// Stops `d` with SIGTERM; its log, after checking it exited 0 with every frame back.
#[track_caller]
fn stop(d: Daemon) -> String {
    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {}:\n{err}", out.status);
    assert!(
        err.contains("every frame is back with the machine"),
        "no clean exit line:\n{err}"
    );
    err
}

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2, iputils-ping and iperf3: run as root with --ignored (CI does)"]
fn host_mode_vifs_are_ports_of_a_linux_bridge_and_outlive_a_restart() {
    let ns = root_netns("snbd-host", &["ip", "ping", "iperf3", "bridge"]);
    ns.ip(&["link", "add", "xenbr0", "type", "bridge"]).unwrap();
    ns.ip(&["addr", "add", "10.199.40.1/24", "dev", "xenbr0"])
        .unwrap();
    ns.ip(&["link", "set", "xenbr0", "up"]).unwrap();

    // Two guests, MTU 1500 (libxl writes no mtu key): their netdevs join xenbr0.
    let d = start(&ns, &[]);
    run(ns.command("ping").args(["-c", "3", "-W", "5", G1]));
    run(ns.command("ping").args(["-c", "3", "-W", "5", G2]));
    for vif in ["vif1.0", "vif2.0"] {
        let l = link(&ns, vif).unwrap();
        assert!(l.contains("master xenbr0"), "{l}");
        assert!(l.contains("mtu 1500 "), "{l}");
        assert!(l.contains("link/ether fe:ff:ff:ff:ff:ff"), "{l}");
        assert!(
            l.contains("tun type tap") && l.contains("vnet_hdr on"),
            "{l}"
        );
        assert!(l.contains("persist on"), "{l}");
    }
    let ports = ns.exec("bridge", &["link", "show"]).unwrap();
    assert!(
        ports.contains("vif1.0") && ports.contains("vif2.0") && ports.contains("master xenbr0"),
        "{ports}"
    );
    // The stock iperf3 client, into a guest and out of the other, through the kernel bridge.
    assert!(
        iperf3(&ns, G1, &["-t", "2"]) > 1 << 20,
        "guest 1 received little"
    );
    assert!(
        iperf3(&ns, G2, &["-t", "2", "-R"]) > 1 << 20,
        "guest 2 sent little"
    );

    // SIGTERM without --close-on-exit: the devices are left, the netdevs persist (no carrier)
    // and keep their place in the bridge.
    let err = stop(d);
    assert!(err.contains("leaving 2 device(s) as they are"), "{err}");
    assert!(!err.contains("Connected -> Closing"), "{err}");
    for vif in ["vif1.0", "vif2.0"] {
        let l = link(&ns, vif).unwrap_or_else(|e| panic!("{vif} went with netbackd: {e}"));
        assert!(
            l.contains("NO-CARRIER") && l.contains("master xenbr0"),
            "{l}"
        );
    }

    // The next netbackd takes the netdevs over, here with MTU 9000 from the mtu key: jumbo
    // frames cross whole both ways. With --close-on-exit its stop removes them.
    let d = start(&ns, &["--mtu", "9000", "--close-on-exit"]);
    for vif in ["vif1.0", "vif2.0"] {
        let l = link(&ns, vif).unwrap();
        assert!(l.contains("mtu 9000 "), "{l}");
        assert!(l.contains("master xenbr0"), "{l}");
    }
    // The host's side of the bridge, as an admin raises it for jumbo frames.
    ns.ip(&["link", "set", "xenbr0", "mtu", "9000"]).unwrap();
    run(ns
        .command("ping")
        .args(["-c", "2", "-W", "5", "-M", "do", "-s", "8000", G1]));
    assert!(iperf3(&ns, G2, &["-t", "1"]) > 0);
    let err = stop(d);
    assert!(
        err.contains("attached to the existing netdev vif1.0"),
        "the restart made a new netdev instead of taking over:\n{err}"
    );
    assert!(
        err.contains("vif1.0: backend Connected -> Closing"),
        "{err}"
    );
    assert!(err.contains("vif1.0: netdev vif1.0 removed"), "{err}");
    for vif in ["vif1.0", "vif2.0"] {
        assert!(
            link(&ns, vif).is_err(),
            "{vif} is still there after --close-on-exit"
        );
    }
}

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2 and iputils-ping: run as root with --ignored (CI does)"]
fn a_vif_bridge_without_its_bridge_fails_the_guest_saying_what_to_do() {
    let ns = root_netns("snbd-nobr", &["ip", "ping"]);
    ns.ip(&["link", "add", "xenbr0", "type", "bridge"]).unwrap();
    ns.ip(&["addr", "add", "10.199.42.1/24", "dev", "xenbr0"])
        .unwrap();
    ns.ip(&["link", "set", "xenbr0", "up"]).unwrap();
    // Guest 1 on xenbr0, guest 2 on a bridge that does not exist.
    let d = Daemon::start(
        &ns,
        &[
            "--guests",
            "2",
            "--guest-net",
            "10.199.42.0/24",
            "--guest-script",
            "vif-bridge",
            "--guest-bridge",
            "xenbr0,br-missing",
        ],
    );
    assert!(answers_within(&ns, "10.199.42.2", Duration::from_secs(20)));
    assert!(
        !pings(&ns, "10.199.42.3"),
        "guest 2 answers without its bridge"
    );
    let err = stop(d);
    assert!(
        err.contains("guest 2 (10.199.42.3): its vif2.0 failed")
            && err.contains("no bridge br-missing: create it (ip link add br-missing type bridge"),
        "{err}"
    );
    // The failed device was removed again, its netdev with it, as libxl removes it.
    assert!(err.contains("vif2.0: netdev vif2.0 removed"), "{err}");
    assert!(
        link(&ns, "vif2.0").is_err(),
        "the failed vif's netdev stayed"
    );
    // Guest 1's netdev stays for the next netbackd (no --close-on-exit).
    assert!(link(&ns, "vif1.0").is_ok());
}
