//! The guest services against real Linux peers: a smoltcp guest on a TAP device inside a
//! network namespace of the test's own, reached from that namespace by `ping`, a Linux TCP
//! socket and the stock `iperf3` client. Root only; skips (with a message) otherwise.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::thread;
use std::time::Duration;

use netbackd::guest::{ECHO_PORT, ServicesConfig};
use smoltcp::wire::Ipv4Address;
use support::netns::{Guest, Netns, netns, run};

const TAP: &str = "svc0";
const HOST: &str = "10.199.5.1/24";
const GUEST: Ipv4Address = Ipv4Address::new(10, 199, 5, 2);
const GUEST_STR: &str = "10.199.5.2";

/// A namespace with a TAP device whose far end is a guest serving `Services`.
fn setup(ns: Netns) -> (Netns, Guest) {
    let guest = Guest::start(&ns, TAP, GUEST, ServicesConfig::default());
    run(ns.command("ip").args(["addr", "add", HOST, "dev", TAP]));
    run(ns.command("ip").args(["link", "set", TAP, "up"]));
    run(ns.command("ip").args(["link", "set", "lo", "up"]));
    (ns, guest)
}

/// Wait for a child, killing it after `limit` (a hang guard, not a performance threshold).
fn wait_bounded(mut child: Child, limit: Duration) -> std::process::Output {
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while child.try_wait().expect("try_wait").is_none() {
        if waited >= limit {
            let _ = child.kill();
            break;
        }
        thread::sleep(step);
        waited += step;
    }
    child.wait_with_output().expect("wait")
}

/// Run the stock iperf3 client in `ns` with `args`; return its JSON report.
fn iperf3(ns: &Netns, args: &[&str]) -> serde_json::Value {
    let child = ns
        .command("iperf3")
        .args(["-c", GUEST_STR, "-J"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn iperf3");
    let out = wait_bounded(child, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("iperf3 {args:?} printed no JSON ({e}):\n{stdout}"));
    assert!(
        report.get("error").is_none(),
        "iperf3 {args:?} reported an error: {}",
        report["error"]
    );
    report
}

/// Bytes and Gb/s the client reports as received by the receiving side.
fn received(report: &serde_json::Value) -> (u64, f64) {
    let sum = &report["end"]["sum_received"];
    let bytes = sum["bytes"].as_u64().expect("end.sum_received.bytes");
    let bps = sum["bits_per_second"].as_f64().unwrap_or(0.0);
    (bytes, bps / 1e9)
}

#[test]
fn tap_guest_answers_ping_and_echoes_8_mib_byte_exact() {
    let ns = match netns("snsvc-echo", &["ip", "ping"]) {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIP tap_guest_answers_ping_and_echoes_8_mib_byte_exact: {why}");
            return;
        }
    };
    let (ns, guest) = setup(ns);

    // ICMP echo is smoltcp's Interface's own; -W bounds each wait, no timing is asserted.
    run(ns.command("ping").args(["-c", "3", "-W", "5", GUEST_STR]));

    // 8 MiB through TCP echo, written and read concurrently by a Linux socket in the namespace.
    let data: Vec<u8> = (0u32..8 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let expected = data.clone();
    let nsref = &ns;
    let back = thread::scope(|s| {
        s.spawn(move || {
            nsref.enter().expect("enter namespace");
            let addr = SocketAddr::from((GUEST.octets(), ECHO_PORT));
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .expect("connect to echo");
            conn.set_read_timeout(Some(Duration::from_secs(60)))
                .expect("timeout");
            let mut writer = conn.try_clone().expect("clone");
            let sender = thread::spawn(move || {
                writer.write_all(&data).expect("send 8 MiB");
                writer
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
            });
            let mut back = Vec::with_capacity(8 << 20);
            conn.read_to_end(&mut back).expect("read echo back");
            sender.join().expect("sender");
            back
        })
        .join()
        .expect("echo client")
    });
    assert_eq!(
        back.len(),
        expected.len(),
        "echo returned a different length"
    );
    assert!(back == expected, "echo returned different bytes");

    let stats = guest.wait_for(Duration::from_secs(10), |s| s.echo.bytes_out == 8 << 20);
    drop(guest);
    assert_eq!(stats.echo.connections, 1);
    assert_eq!(stats.echo.bytes_in, 8 << 20);
    assert_eq!(stats.echo.bytes_out, 8 << 20);
    assert_eq!(stats.protocol_errors, 0);
}

#[test]
fn tap_guest_serves_stock_iperf3_normal_reverse_and_again() {
    let ns = match netns("snsvc-iperf3", &["ip", "iperf3"]) {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIP tap_guest_serves_stock_iperf3_normal_reverse_and_again: {why}");
            return;
        }
    };
    let (ns, guest) = setup(ns);
    // Reachability first (ARP resolved), so iperf3's own connect does not race the link.
    let _ = ns
        .command("ping")
        .args(["-c", "1", "-W", "5", GUEST_STR])
        .output();

    let normal = iperf3(&ns, &["-t", "2"]);
    let (bytes, gbps) = received(&normal);
    assert!(bytes > 0, "normal test: server received nothing");
    assert_eq!(normal["start"]["test_start"]["reverse"], 0);
    eprintln!("iperf3 -t 2 (client sends, guest receives): {bytes} bytes, {gbps:.2} Gb/s");

    let reverse = iperf3(&ns, &["-t", "2", "-R"]);
    let (rbytes, rgbps) = received(&reverse);
    assert!(rbytes > 0, "reverse test: client received nothing");
    assert_eq!(reverse["start"]["test_start"]["reverse"], 1);
    let sent = reverse["end"]["sum_sent"]["bytes"]
        .as_u64()
        .expect("sum_sent");
    assert!(
        sent >= rbytes,
        "guest reported {sent} sent, client received {rbytes}"
    );
    eprintln!("iperf3 -t 2 -R (guest sends, client receives): {rbytes} bytes, {rgbps:.2} Gb/s");

    // A second test right after the first ones: the server is ready again.
    let again = iperf3(&ns, &["-t", "2", "-P", "1"]);
    assert!(
        received(&again).0 > 0,
        "third test: server received nothing"
    );

    let stats = guest.wait_for(Duration::from_secs(10), |s| {
        s.iperf3_tests_completed + s.iperf3_tests_aborted >= 3
    });
    drop(guest);
    assert_eq!(stats.iperf3_tests_completed, 3, "{stats:?}");
    assert_eq!(stats.iperf3_tests_aborted, 0, "{stats:?}");
    assert_eq!(stats.protocol_errors, 0, "{stats:?}");
    assert!(stats.iperf3.bytes_in >= bytes, "{stats:?}");
    assert!(stats.iperf3.bytes_out >= sent, "{stats:?}");
}
