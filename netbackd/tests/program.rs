//! The `netbackd` program against real Linux peers, inside a network namespace of the test's
//! own: `ping`, a Linux TCP socket and the stock `iperf3` client reach its embedded guests
//! through a TAP uplink; SIGUSR1 writes the counters; SIGTERM with `--close-on-exit` closes
//! every device, removes the TAP it created and exits 0 with every frame back. Root only:
//! ignored by default, run with `--ignored` as root (CI does); without root or the tools it
//! fails saying what is missing.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::Signal;
use support::daemon::{Daemon, Netns, eventually, root_netns, run, wait_bounded};
use support::peers::iperf3;

const HOST_NET: &str = "10.199.5.0/24";
const TAP_ADDR: &str = "10.199.5.1/24";
const G1: &str = "10.199.5.2";
const G2: &str = "10.199.5.3";

/// 8 MiB through a guest's TCP echo service, from a Linux socket in the namespace.
fn echo_8_mib(ns: &Netns, server: &str) {
    let data: Vec<u8> = (0u32..8 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let addr: SocketAddr = format!("{server}:7").parse().unwrap();
    let sent = data.clone();
    let back = ns
        .run(move || {
            let mut conn =
                TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut writer = conn.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                writer.write_all(&sent).expect("send 8 MiB");
                writer
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
            });
            let mut back = Vec::with_capacity(8 << 20);
            conn.read_to_end(&mut back).expect("read the echo");
            sender.join().expect("sender");
            back
        })
        .expect("run in the namespace");
    assert_eq!(back.len(), data.len(), "echo returned a different length");
    assert!(back == data, "echo returned different bytes");
}

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2, iputils-ping and iperf3: run as root with --ignored (CI does)"]
fn guests_behind_a_tap_answer_ping_echo_and_iperf3_and_sigterm_leaves_nothing() {
    let ns = root_netns("snbd-prog", &["ip", "ping", "iperf3"]);
    let json = std::env::temp_dir().join(format!("netbackd-test-{}.json", std::process::id()));
    let json_s = json.to_string_lossy().into_owned();
    let mut d = Daemon::start(
        &ns,
        &[
            "--guests",
            "2",
            "--guest-net",
            HOST_NET,
            "--uplink",
            &format!("tap:sn0,addr={TAP_ADDR}"),
            "--stats-json",
            &json_s,
            // This test is about a stop that leaves nothing; host_mode.rs has the default.
            "--close-on-exit",
        ],
    );
    for g in [G1, G2] {
        let up = eventually(Duration::from_secs(20), || {
            ns.command("ping")
                .args(["-c", "1", "-W", "1", g])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(up, "guest {g} never answered ping:\n{}", d.kill_and_log());
    }
    run(ns.command("ping").args(["-c", "3", "-W", "5", G1]));
    run(ns.command("ping").args(["-c", "3", "-W", "5", G2]));

    echo_8_mib(&ns, G1);
    assert!(
        iperf3(&ns, G1, &["-t", "2"]) > 0,
        "guest 1 received nothing"
    );
    assert!(
        iperf3(&ns, G2, &["-t", "2", "-R"]) > 0,
        "guest 2 sent nothing"
    );
    // The server is ready again right after.
    assert!(iperf3(&ns, G1, &["-t", "1"]) > 0, "a second test failed");

    // SIGUSR1: the counters, as JSON too. The guests publish as they work: ask until the last
    // iperf3 test's end has been counted (bounded).
    let mut report = serde_json::Value::Null;
    let done = eventually(Duration::from_secs(10), || {
        let _ = std::fs::remove_file(&json);
        d.signal(Signal::USR1);
        if !eventually(Duration::from_secs(5), || json.exists()) {
            return false;
        }
        report = std::fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        report["guests"][0]["services"]["iperf3_tests_completed"] == 2
    });
    assert!(
        done,
        "the counters never showed both iperf3 tests: {report}"
    );
    let vifs = report["backend"]["vifs"].as_array().expect("vifs");
    assert_eq!(vifs.len(), 2, "{report}");
    let g1 = &report["guests"][0];
    assert_eq!(g1["services"]["echo"]["bytes_in"], 8 << 20, "{g1}");
    assert!(
        report["backend"]["uplinks"][0][2]["rx_frames"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    // Each vif's port is locked to its MAC.
    let ports = report["backend"]["bridge"]["ports"].as_array().unwrap();
    assert_eq!(ports.iter().filter(|p| p["locked"] == true).count(), 2);

    // SIGTERM: every device closed, the TAP removed, every frame back, exit 0.
    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}:\n{err}", out.status);
    assert!(
        err.contains("every frame is back with the machine"),
        "no clean exit line:\n{err}"
    );
    assert!(
        err.contains("vif1.0: backend Connected -> Closing"),
        "{err}"
    );
    let gone = ns.ip(&["link", "show", "sn0"]);
    assert!(gone.is_err(), "the TAP netbackd created is still there");
    let _ = std::fs::remove_file(&json);
}

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2, iputils-ping and iperf3: run as root with --ignored (CI does)"]
fn a_persistent_tap_is_attached_and_kept_and_errors_say_what_to_do() {
    let ns = root_netns("snbd-err", &["ip"]);
    // A persistent TAP someone else made: netbackd attaches and leaves it in place.
    ns.ip(&["tuntap", "add", "sn9", "mode", "tap"]).unwrap();
    ns.ip(&["addr", "add", "10.199.6.1/24", "dev", "sn9"])
        .unwrap();
    // Its address is already there: a clear error, nothing left behind.
    let d = Daemon::start(
        &ns,
        &[
            "--guest-net",
            "10.199.6.0/24",
            "--uplink",
            "tap:sn9,addr=10.199.6.1/24",
        ],
    );
    let out = d.wait(Duration::from_secs(20));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("uplink tap:sn9") && err.contains("ip addr del"),
        "{err}"
    );
    assert!(
        ns.ip(&["link", "show", "sn9"]).is_ok(),
        "the persistent TAP was removed"
    );
    // Attached without an address it serves, and SIGTERM leaves it.
    let mut d = Daemon::start(
        &ns,
        &["--guest-net", "10.199.6.0/24", "--uplink", "tap:sn9"],
    );
    let up = eventually(Duration::from_secs(20), || {
        ns.command("ping")
            .args(["-c", "1", "-W", "1", "10.199.6.2"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        up,
        "guest behind an attached TAP never answered:\n{}",
        d.kill_and_log()
    );
    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ns.ip(&["link", "show", "sn9"]).is_ok(),
        "the persistent TAP was removed"
    );

    // Bad arguments: a clear message and clap's usage exit code, before anything starts.
    let out = run_plain(&["--guest-net", "10.99.0.0/33"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("A.B.C.D/N"));
    let out = run_plain(&["--guests", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1..="));
    let out = run_plain(&["--uplink", "tap:nosuchdevicenameatall"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap rejects a bad uplink at parse time"
    );
}

/// Runs netbackd outside any namespace for an argument check (it exits before touching Linux).
fn run_plain(args: &[&str]) -> std::process::Output {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_netbackd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_bounded(child, Duration::from_secs(10))
}

#[test]
#[ignore = "needs root and util-linux's setpriv to drop to nobody: run as root with --ignored (CI does)"]
fn not_root_is_said_plainly() {
    // Run as nobody (util-linux's setpriv): creating a TAP is refused with what to do.
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    assert!(
        rustix::process::geteuid().is_root() && setpriv.exists(),
        "cannot run: needs root and /usr/bin/setpriv (apt-get install util-linux)"
    );
    let child = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_netbackd"))
        .args(["--uplink", "tap:snnobody0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = wait_bounded(child, Duration::from_secs(20));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("root") || err.contains("CAP_NET_ADMIN"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2, iputils-ping and iperf3: run as root with --ignored (CI does)"]
fn a_nic_uplink_reaches_guests_through_an_existing_interface() {
    // A veth pair stands in for a NIC and its wire: netbackd takes one end with AF_PACKET, the
    // Linux stack holds an address on the other.
    let ns = root_netns("snbd-nic", &["ip", "ping"]);
    ns.ip(&[
        "link", "add", "wire0", "type", "veth", "peer", "name", "host0",
    ])
    .unwrap();
    // The host stack sends out of a veth with partial TCP checksums and TSO super-frames; the
    // packet socket's virtio-net header says so, and netback completes or segments them for
    // the guest.
    ns.ip(&["addr", "add", "10.199.7.1/24", "dev", "host0"])
        .unwrap();
    for dev in ["wire0", "host0"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    let mut d = Daemon::start(
        &ns,
        &["--guest-net", "10.199.7.0/24", "--uplink", "nic:wire0"],
    );
    let up = eventually(Duration::from_secs(20), || {
        ns.command("ping")
            .args(["-c", "1", "-W", "1", "10.199.7.2"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        up,
        "guest behind a nic uplink never answered:\n{}",
        d.kill_and_log()
    );
    echo_8_mib(&ns, "10.199.7.2");
    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ns.ip(&["link", "show", "wire0"]).is_ok(),
        "netbackd removed an interface it did not create"
    );
}

/// The uplink's counters from a SIGUSR1 stats file: (tx_frames, tx_bytes, tx_errors).
fn uplink_tx(d: &mut Daemon, json: &std::path::Path) -> (u64, u64, u64) {
    let mut report = serde_json::Value::Null;
    let got = eventually(Duration::from_secs(10), || {
        let _ = std::fs::remove_file(json);
        d.signal(Signal::USR1);
        if !eventually(Duration::from_secs(5), || json.exists()) {
            return false;
        }
        report = std::fs::read(json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        report["backend"]["uplinks"][0][2]["tx_frames"].is_u64()
    });
    assert!(got, "no uplink counters in the stats: {report}");
    let u = &report["backend"]["uplinks"][0][2];
    let n = |k: &str| u[k].as_u64().unwrap_or_default();
    (n("tx_frames"), n("tx_bytes"), n("tx_errors"))
}

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2, iputils-ping and iperf3: run as root with --ignored (CI does)"]
fn a_guest_that_cannot_segment_leaves_through_the_tap_in_super_frames_byte_exact() {
    const NET: &str = "10.199.6.0/24";
    const GUEST: &str = "10.199.6.2";
    let ns = root_netns("snbd-gro", &["ip", "ping", "iperf3"]);
    let json = std::env::temp_dir().join(format!("netbackd-gro-{}.json", std::process::id()));
    let json_s = json.to_string_lossy().into_owned();
    let mut d = Daemon::start(
        &ns,
        &[
            "--guests",
            "1",
            "--guest-net",
            NET,
            "--uplink",
            "tap:sn0,addr=10.199.6.1/24",
            "--stats-json",
            &json_s,
        ],
    );
    let up = eventually(Duration::from_secs(20), || {
        ns.command("ping")
            .args(["-c", "1", "-W", "1", GUEST])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(up, "the guest never answered ping:\n{}", d.kill_and_log());
    // The guest's smoltcp sends MSS-sized segments; what comes back must be every byte sent,
    // in order, through the coalescing egress.
    echo_8_mib(&ns, GUEST);
    // The stock iperf3 client receiving from the guest (-R): it runs to the end, and the
    // uplink's writes carry several segments each.
    let (f0, b0, _) = uplink_tx(&mut d, &json);
    let got = iperf3(&ns, GUEST, &["-t", "3", "-R"]);
    assert!(got > 0, "the guest sent nothing");
    let (f1, b1, e1) = uplink_tx(&mut d, &json);
    let (frames, bytes) = (f1 - f0, b1 - b0);
    assert!(frames > 0 && bytes >= got, "{frames} frames, {bytes} bytes");
    // Without coalescing each write carries at most one 1514-byte frame.
    assert!(
        bytes / frames > 3 * 1514,
        "{bytes} bytes in {frames} writes: the egress did not coalesce"
    );
    assert_eq!(e1, 0, "frames lost at the uplink");
    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    assert!(out.status.success(), "exit {}", out.status);
    let _ = std::fs::remove_file(&json);
}
