//! pcap capture: files written by the bridge read back with the same crate, and (by hand) with
//! tshark.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Duration;

use bridge_lite::testkit::udp_frame;
use bridge_lite::{
    Bridge, BridgeConfig, BridgeError, CaptureDirection, MacAddr, Output, PortId, PortKind, inspect,
};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;

/// A file in the system temp dir, removed on drop.
struct TempFile(PathBuf);
impl TempFile {
    fn new(tag: &str) -> Self {
        Self(std::env::temp_dir().join(format!("bridge-lite-{tag}-{}.pcap", std::process::id())))
    }
}
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Every packet in a pcap file: (timestamp, original length, data).
fn read_back(path: &PathBuf) -> (DataLink, Vec<(Duration, u32, Vec<u8>)>) {
    let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
    let link = r.header().datalink;
    let mut pkts = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        pkts.push((p.timestamp, p.orig_len, p.data.into_owned()));
    }
    (link, pkts)
}

fn setup() -> (Bridge, PortId, PortId, PortId) {
    let mut br = Bridge::new(BridgeConfig {
        hash_seed: Some(5),
        ..BridgeConfig::default()
    })
    .unwrap();
    let up = br.add_port(PortKind::Uplink).unwrap();
    let v1 = br
        .add_port(PortKind::Vif {
            domid: 1,
            handle: 0,
        })
        .unwrap();
    let v2 = br
        .add_port(PortKind::Vif {
            domid: 2,
            handle: 0,
        })
        .unwrap();
    (br, up, v1, v2)
}

#[test]
fn captures_read_back_with_the_frames_in_order() {
    let (mut br, up, v1, v2) = setup();
    let tx_file = TempFile::new("tx");
    let rx_file = TempFile::new("rx");
    br.start_capture(
        v1,
        BufWriter::new(File::create(&tx_file.0).unwrap()),
        CaptureDirection::Tx,
    )
    .unwrap();
    br.start_capture(
        up,
        BufWriter::new(File::create(&rx_file.0).unwrap()),
        CaptureDirection::Rx,
    )
    .unwrap();
    assert!(matches!(
        br.start_capture(v1, std::io::sink(), CaptureDirection::Both),
        Err(BridgeError::CaptureRunning { .. })
    ));

    let (guest, remote) = (MacAddr::local(1), MacAddr::local(2));
    let frames: Vec<Vec<u8>> = vec![
        udp_frame(remote, MacAddr::BROADCAST, 60, 1),
        udp_frame(remote, guest, 1514, 2),
        vec![0xff; 9], // too short: dropped, but an rx capture still sees it
    ];
    let mut out = Output::new();
    let mut batch: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    br.forward(up, &mut batch, Duration::from_secs(1), &mut out)
        .unwrap();
    // The guest now speaks from v2: what follows for it goes to v2 and must not appear in
    // v1's file.
    let hello = udp_frame(guest, remote, 60, 3);
    let reply = udp_frame(remote, guest, 100, 4);
    br.forward(
        v2,
        &mut vec![hello.as_slice()],
        Duration::from_secs(2),
        &mut out,
    )
    .unwrap();
    out.clear();
    br.forward(
        up,
        &mut vec![reply.as_slice()],
        Duration::from_secs(3),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        out.queue(v2).len(),
        1,
        "guest moved to v2: reply goes there"
    );

    assert_eq!(br.stop_capture(v1).unwrap().frames, 2);
    assert_eq!(br.stop_capture(up).unwrap().frames, 4);
    assert!(matches!(
        br.stop_capture(v1),
        Err(BridgeError::NoCapture { .. })
    ));

    let (link, tx) = read_back(&tx_file.0);
    assert_eq!(link, DataLink::ETHERNET);
    // v1 saw the broadcast and the unknown-unicast flood of the 1514-byte frame, nothing more.
    assert_eq!(tx.len(), 2);
    assert_eq!(tx[0].2, frames[0]);
    assert_eq!(tx[1].2, frames[1]);
    assert_eq!(tx[1].1, 1514);
    let info = inspect(&tx[1].2).unwrap();
    assert_eq!((info.src, info.dst), (remote, guest));
    assert_eq!((info.network, info.transport), (Some("ipv4"), Some("udp")));

    let (_, rx) = read_back(&rx_file.0);
    let lens: Vec<usize> = rx.iter().map(|p| p.2.len()).collect();
    assert_eq!(lens, vec![60, 1514, 9, 100]);
    // Timestamps follow the caller's clock: 1 s, 1 s, 1 s, 3 s after an arbitrary origin.
    assert_eq!(rx[0].0, rx[2].0);
    assert_eq!(rx[3].0 - rx[0].0, Duration::from_secs(2));
    assert!(
        rx[0].0 > Duration::from_secs(1_600_000_000),
        "reads as a real date"
    );
}

/// A writer that fails after `left` bytes.
struct Failing {
    left: usize,
}
impl std::io::Write for Failing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.left {
            return Err(std::io::Error::other("disk full"));
        }
        self.left -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_capture_stops_itself_but_not_forwarding() {
    let (mut br, up, v1, _) = setup();
    br.start_capture(v1, Failing { left: 24 + 16 + 60 }, CaptureDirection::Tx)
        .unwrap();
    let f = udp_frame(MacAddr::local(2), MacAddr::BROADCAST, 60, 0);
    let mut out = Output::new();
    for t in 0..3 {
        br.forward(
            up,
            &mut vec![f.as_slice()],
            Duration::from_secs(t),
            &mut out,
        )
        .unwrap();
    }
    assert_eq!(out.queue(v1).len(), 3, "forwarding unaffected");
    let err = br.stop_capture(v1).unwrap_err();
    assert!(matches!(err, BridgeError::Capture { .. }));
    assert!(err.to_string().contains("writable"), "{err}");
}

/// Manual check that tshark opens a capture: `cargo test -p bridge-lite --test capture --
/// --ignored` (needs `tshark` on PATH; CI does not run it).
#[test]
#[ignore = "needs tshark installed"]
fn tshark_opens_the_capture() {
    let (mut br, up, v1, _) = setup();
    let file = TempFile::new("tshark");
    br.start_capture(v1, File::create(&file.0).unwrap(), CaptureDirection::Tx)
        .unwrap();
    let f = udp_frame(MacAddr::local(2), MacAddr::BROADCAST, 60, 0);
    let mut out = Output::new();
    br.forward(up, &mut vec![f.as_slice(); 5], Duration::ZERO, &mut out)
        .unwrap();
    br.stop_capture(v1).unwrap();
    let o = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&file.0)
        .output()
        .expect("tshark on PATH");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains("UDP"), "{text}");
}

/// A handle that lends only the frame's head, as netback's does (its frames live in hypervisor
/// pages): counters use the full length and captures record the head with the full original
/// length.
#[derive(Clone)]
struct HeadOnly {
    head: Vec<u8>,
    len: usize,
}

impl bridge_lite::Frame for HeadOnly {
    fn bytes(&self) -> &[u8] {
        &self.head
    }
    fn frame_len(&self) -> usize {
        self.len
    }
}

#[test]
fn head_only_handles_count_full_length_and_capture_truncated() {
    let file = TempFile::new("head-only");
    let mut br = Bridge::new(BridgeConfig::default()).unwrap();
    let a = br.add_port(PortKind::Uplink).unwrap();
    let b = br
        .add_port(PortKind::Vif {
            domid: 1,
            handle: 0,
        })
        .unwrap();
    br.start_capture(
        b,
        BufWriter::new(File::create(&file.0).unwrap()),
        CaptureDirection::Tx,
    )
    .unwrap();
    let full = udp_frame(MacAddr::local(1), MacAddr::local(2), 1000, 0);
    let h = HeadOnly {
        head: full[..64].to_vec(),
        len: full.len(),
    };
    let mut out = Output::new();
    br.forward(a, &mut vec![h], Duration::ZERO, &mut out)
        .unwrap();
    assert_eq!(out.queue(b).len(), 1);
    assert_eq!(br.port_stats(a).unwrap().rx_bytes, full.len() as u64);
    assert_eq!(br.port_stats(b).unwrap().tx_bytes, full.len() as u64);
    br.stop_capture(b).unwrap();
    let (_, pkts) = read_back(&file.0);
    assert_eq!(pkts.len(), 1);
    assert_eq!(
        pkts[0].1 as usize,
        full.len(),
        "original length is the full frame"
    );
    assert_eq!(
        pkts[0].2,
        full[..64],
        "captured bytes are the head the handle lends"
    );
}
