//! Real peers of the program under test, and what they leave behind: the stock iperf3
//! client, ping, pcap files.

use std::process::Stdio;
use std::time::Duration;

use super::daemon::{Netns, eventually, wait_bounded};

/// Runs the stock iperf3 client in `ns` with `args`; returns the bytes the receiving side got
/// and the rate in Gb/s.
pub fn iperf3_rate(ns: &Netns, server: &str, args: &[&str]) -> (u64, f64) {
    let child = ns
        .command("iperf3")
        .args(["-c", server, "-J"])
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
    assert!(report.get("error").is_none(), "iperf3: {}", report["error"]);
    let sum = &report["end"]["sum_received"];
    let gbps = sum["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9;
    eprintln!("iperf3 {server} {args:?}: {gbps:.2} Gb/s");
    (sum["bytes"].as_u64().expect("end.sum_received.bytes"), gbps)
}

/// Runs the stock iperf3 client in `ns` with `args`; returns the bytes the receiving side got.
pub fn iperf3(ns: &Netns, server: &str, args: &[&str]) -> u64 {
    iperf3_rate(ns, server, args).0
}

/// Whether `addr` answers one ping from `ns` (waiting at most a second for it).
pub fn pings(ns: &Netns, addr: &str) -> bool {
    ns.command("ping")
        .args(["-c", "1", "-W", "1", addr])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `addr` answers a ping from `ns` within `limit` (a guest coming up).
pub fn answers_within(ns: &Netns, addr: &str, limit: Duration) -> bool {
    eventually(limit, || pings(ns, addr))
}

/// Every record of a classic pcap file: (original length, the bytes kept).
pub fn pcap_records(file: &[u8]) -> Vec<(usize, &[u8])> {
    let big_endian = match file.get(..4) {
        Some([0xa1, 0xb2, 0xc3, 0xd4]) => true,
        Some([0xd4, 0xc3, 0xb2, 0xa1]) => false,
        magic => panic!("not a classic microsecond pcap: {magic:?}"),
    };
    let u32_at = |b: &[u8]| {
        let w = [b[0], b[1], b[2], b[3]];
        if big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    let len_at = |b: &[u8]| u32_at(b) as usize;
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let (incl, orig) = (len_at(&file[at + 8..]), len_at(&file[at + 12..]));
        let data = &file[at + 16..at + 16 + incl];
        out.push((orig, data));
        at += 16 + incl;
    }
    out
}

/// An interface's MAC address in `ns`, from `ip -o link show`.
pub fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = ns.ip(&["-o", "link", "show", dev]).unwrap();
    let hex = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {out}"));
    let mut mac = [0u8; 6];
    for (b, h) in mac.iter_mut().zip(hex.split(':')) {
        *b = u8::from_str_radix(h, 16).unwrap();
    }
    mac
}
