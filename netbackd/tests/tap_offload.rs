//! The `netbackd` program with its TAP uplink's offloads on (the default), against Linux's TCP
//! stack in a network namespace of the test's own: a stream from a Linux socket crosses the
//! TAP as TSO super-frames (one frame for many segments, longer than the MTU), netback fits them
//! to the guest, and the guest's echo comes back byte-exact. Root only: ignored by default (run
//! as root with `--ignored`, as CI does).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rustix::process::Signal;
use support::daemon::{Daemon, eventually, root_netns};
use support::peers::pcap_records;

const GUEST: &str = "10.199.15.2";
/// The guest's MAC (`Args::guest_mac(1)`).
const GUEST_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x02];

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2 and iputils-ping: run as root with --ignored (CI does)"]
fn a_linux_stream_crosses_the_tap_as_super_frames_and_the_echo_is_byte_exact() {
    let ns = root_netns("snbd-tso", &["ip", "ping"]);
    let dir = std::env::temp_dir();
    let pcap = dir.join(format!("netbackd-tso-{}.pcap", std::process::id()));
    let json = dir.join(format!("netbackd-tso-{}.json", std::process::id()));
    let mut d = Daemon::start(
        &ns,
        &[
            "--guest-net",
            "10.199.15.0/24",
            "--uplink",
            "tap:sntso0,addr=10.199.15.1/24",
            "--pcap",
            &format!("tap:sntso0:{}", pcap.display()),
            "--stats-json",
            &json.to_string_lossy(),
        ],
    );
    let up = eventually(Duration::from_secs(20), || {
        ns.command("ping")
            .args(["-c", "1", "-W", "1", GUEST])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(up, "the guest never answered ping:\n{}", d.kill_and_log());

    // 8 MiB through the guest's echo service.
    let data: Vec<u8> = (0u32..8 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let addr: SocketAddr = format!("{GUEST}:7").parse().unwrap();
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
                writer.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut back = Vec::with_capacity(8 << 20);
            conn.read_to_end(&mut back).expect("read the echo");
            sender.join().expect("sender");
            back
        })
        .unwrap();
    assert_eq!(back.len(), data.len(), "the echo has a different length");
    assert!(back == data, "the echo has different bytes");

    // The counters: nothing refused at the TAP, nothing unfit for the guest.
    let mut report = serde_json::Value::Null;
    let got = eventually(Duration::from_secs(10), || {
        let _ = std::fs::remove_file(&json);
        d.signal(Signal::USR1);
        if !eventually(Duration::from_secs(5), || json.exists()) {
            return false;
        }
        report = std::fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        report["guests"][0]["services"]["echo"]["bytes_in"] == 8 << 20
    });
    assert!(got, "the counters never showed the echo: {report}");
    let tap = &report["backend"]["uplinks"][0][2];
    assert_eq!(tap["rx_errors"], 0, "{tap}");
    assert_eq!(tap["tx_errors"], 0, "{tap}");
    let vif = &report["backend"]["vifs"][0][1];
    assert_eq!(vif["rx_unfit"], 0, "{vif}");
    eprintln!("tap: {tap}\nvif: {vif}");

    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The capture (written out at exit): frames from Linux to the guest longer than the MTU
    // crossed the TAP port whole, each a super-frame of many segments.
    let file = std::fs::read(&pcap).expect("the capture");
    let _ = std::fs::remove_file(&pcap);
    let _ = std::fs::remove_file(&json);
    let to_guest: Vec<usize> = pcap_records(&file)
        .into_iter()
        .filter(|(_, data)| data.get(..6) == Some(&GUEST_MAC[..]))
        .map(|(len, _)| len)
        .collect();
    let big = to_guest.iter().filter(|&&l| l > 1514).count();
    let longest = to_guest.iter().copied().max().unwrap_or(0);
    eprintln!(
        "{} frames to the guest crossed the TAP, {big} longer than 1514 B, the longest {longest} B",
        to_guest.len()
    );
    assert!(big > 0, "no super-frame crossed the TAP");
    assert!(longest <= 65549, "{longest}");
}
