//! The TAP and AF_PACKET uplinks against Linux's TCP stack, driven through netback's `Uplink`
//! trait with frames in backend pages of the embedded hypervisor, inside a network namespace of
//! the test's own. The test plays a TCP peer behind the uplink: Linux's super-frames and partial
//! checksums must come up as offload metadata, and a super-frame with a partial checksum from
//! netback must reach Linux's socket byte-exact. Root only: ignored by default (run as root with
//! `--ignored`, as CI does).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use hypervisor::XenDomain;
use netback::pool::{BufPool, NetFrame};
use netback::{Accepts, Uplink, UplinkIo};
use netbackd::cli::UplinkSpec;
use offload::{Csum, Gso, GsoKind, OffloadMeta};
use support::daemon::{Netns, root_netns};
use xen_model::{DomainHandle, Hypervisor};

const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x09, 0x02];
const LINUX_PORT: u16 = 5001;
const PEER_PORT: u16 = 40001;
/// The MSS the peer announces, and the segment size of its super-frame.
const MSS: u16 = 1448;
/// Bytes the peer sends Linux in one super-frame (20 segments: far over the MTU).
const TO_LINUX: usize = 20 * MSS as usize;
/// Bytes Linux sends the peer.
const FROM_LINUX: usize = 200_000;
/// A hang guard, never a performance bound.
const PATIENCE: Duration = Duration::from_secs(20);

fn pattern(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// An interface's MAC address, from `ip -o link show`.
fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
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

/// The peer: an uplink with a backend pool of its own, and the addresses of both ends.
struct Peer {
    up: Box<dyn Uplink<DomainHandle>>,
    pool: BufPool<DomainHandle>,
    evtchn: <DomainHandle as XenDomain>::Evtchn,
    linux_mac: [u8; 6],
    linux_ip: [u8; 4],
    peer_ip: [u8; 4],
}

/// What came up from Linux: the frame and its metadata.
struct Received {
    frame: Vec<u8>,
    meta: OffloadMeta,
}

impl Peer {
    /// Sends `frame` through the uplink with `meta`, as the switch would.
    fn send(&mut self, frame: &[u8], meta: OffloadMeta) {
        let mut buf = self.pool.alloc(frame.len()).expect("a backend buffer");
        buf.fill(frame).unwrap();
        buf.set_meta(meta);
        let before = self.up.stats().tx_frames;
        let mut frames = vec![NetFrame::new(buf)];
        let io = UplinkIo {
            pool: &self.pool,
            evtchn: &self.evtchn,
        };
        self.up.transmit(&io, &mut frames);
        let stats = self.up.stats();
        assert_eq!(stats.tx_frames, before + 1, "not sent: {stats:?}");
    }

    /// The frames waiting (none: an empty list), read out of backend pages.
    fn receive(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        let io = UplinkIo {
            pool: &self.pool,
            evtchn: &self.evtchn,
        };
        self.up.receive(&io, &mut out, 4 << 20);
        out.into_iter()
            .map(|f| {
                let mut frame = Vec::new();
                f.0.read_into(&mut frame).unwrap();
                Received {
                    frame,
                    meta: f.meta(),
                }
            })
            .collect()
    }

    /// A TCP frame from the peer to Linux.
    fn tcp(&self, seq: u32, ack: Option<u32>, syn: bool, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(PEER_MAC, self.linux_mac)
            .ipv4(self.peer_ip, self.linux_ip, 64)
            .tcp(PEER_PORT, LINUX_PORT, seq, 65535);
        let b = if syn {
            b.syn()
                .options(&[TcpOptionElement::MaximumSegmentSize(MSS)])
                .unwrap()
        } else {
            b
        };
        let b = match ack {
            Some(a) => b.ack(a),
            None => b,
        };
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        f
    }
}

/// What the exchange saw.
#[derive(Debug, Default)]
struct Seen {
    /// Linux's data frames: (frame length, metadata).
    data_frames: Vec<(usize, OffloadMeta)>,
}

/// One TCP connection from the peer to Linux's listener: the peer sends `TO_LINUX` bytes (one
/// super-frame with a partial checksum when `offload`, MSS-sized whole segments otherwise),
/// Linux reads them and answers `FROM_LINUX` bytes, which the peer acknowledges as they come.
/// Both sides check the bytes; returns what the peer saw.
fn exchange(peer: &mut Peer, listener: TcpListener, offload: bool) -> Seen {
    let to_linux = pattern(TO_LINUX, 1);
    let from_linux = pattern(FROM_LINUX, 2);
    let linux = {
        let (to_linux, from_linux) = (to_linux.clone(), from_linux.clone());
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut got = vec![0u8; to_linux.len()];
            conn.read_exact(&mut got).expect("read the peer's bytes");
            assert!(got == to_linux, "Linux read different bytes");
            conn.write_all(&from_linux).expect("answer");
            // The kernel sends what is queued, then its FIN, after the socket is gone.
            conn.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let deadline = Instant::now() + PATIENCE;
    let wait = |peer: &mut Peer, what: &str| -> Vec<Received> {
        loop {
            let got = peer.receive();
            if !got.is_empty() {
                return got;
            }
            assert!(Instant::now() < deadline, "waited in vain for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    };

    // Handshake.
    let isn: u32 = 0x1000_0000;
    let syn = peer.tcp(isn, None, true, &[]);
    peer.send(&syn, OffloadMeta::NONE);
    let linux_isn = 'synack: loop {
        for r in wait(peer, "the SYN-ACK") {
            let p = SlicedPacket::from_ethernet(&r.frame).unwrap();
            if let Some(TransportSlice::Tcp(t)) = p.transport
                && t.syn()
                && t.ack()
                && t.destination_port() == PEER_PORT
            {
                assert_eq!(t.acknowledgment_number(), isn + 1);
                break 'synack t.sequence_number();
            }
        }
    };
    let mut rcv_next = linux_isn.wrapping_add(1);
    let ack = peer.tcp(isn + 1, Some(rcv_next), false, &[]);
    peer.send(&ack, OffloadMeta::NONE);

    // The peer's data.
    if offload {
        let mut frame = peer.tcp(isn + 1, Some(rcv_next), false, &to_linux);
        let loc = offload::csum::set_partial(&mut frame).unwrap();
        assert!(!offload::csum::verify(&frame), "only the pseudo-header sum");
        let meta = OffloadMeta {
            csum: Csum::Partial {
                start: loc.csum_start as u16,
                offset: loc.csum_offset as u16,
            },
            gso: Some(Gso::new(GsoKind::Tcpv4, MSS)),
        };
        peer.send(&frame, meta);
    } else {
        for (i, chunk) in to_linux.chunks(usize::from(MSS)).enumerate() {
            let seq = isn + 1 + (i * usize::from(MSS)) as u32;
            let frame = peer.tcp(seq, Some(rcv_next), false, chunk);
            peer.send(&frame, OffloadMeta::NONE);
        }
    }

    // Linux's answer, acknowledged as it comes (in order: one namespace, no loss).
    let mut data = Vec::new();
    let mut seen = Seen::default();
    let mut fin = false;
    while !fin || data.len() < FROM_LINUX {
        for r in wait(peer, "Linux's data") {
            let p = SlicedPacket::from_ethernet(&r.frame).unwrap();
            let Some(TransportSlice::Tcp(t)) = p.transport else {
                continue;
            };
            if t.destination_port() != PEER_PORT || t.payload().is_empty() && !t.fin() {
                continue;
            }
            if !t.payload().is_empty() {
                seen.data_frames.push((r.frame.len(), r.meta));
                if t.sequence_number() == rcv_next {
                    data.extend_from_slice(t.payload());
                    rcv_next = rcv_next.wrapping_add(t.payload().len() as u32);
                }
            }
            if t.fin() && t.sequence_number().wrapping_add(t.payload().len() as u32) == rcv_next {
                fin = true;
                rcv_next = rcv_next.wrapping_add(1);
            }
            // Whatever the checksum state, completing it (where partial) leaves a valid one.
            let mut whole = r.frame.clone();
            if let Csum::Partial { .. } = r.meta.csum {
                offload::csum::complete(&mut whole).unwrap();
            }
            assert!(
                offload::csum::verify(&whole),
                "a bad checksum: {:?}",
                r.meta
            );
        }
        let ack = peer.tcp(isn + 1 + TO_LINUX as u32, Some(rcv_next), false, &[]);
        peer.send(&ack, OffloadMeta::NONE);
    }
    assert!(data == from_linux, "the peer got different bytes");
    linux.join().expect("Linux's side");
    let stats = peer.up.stats();
    assert_eq!(stats.rx_errors, 0, "{stats:?}");
    assert_eq!(stats.tx_errors, 0, "{stats:?}");
    seen
}

/// The embedded hypervisor's dom0 and a frame pool in its pages.
fn backend() -> (BufPool<DomainHandle>, <DomainHandle as XenDomain>::Evtchn) {
    let xen = Hypervisor::new(2048).unwrap();
    let dom0 = xen.create_domain_with_id(0, 1024).unwrap();
    let evtchn = XenDomain::open_evtchn(&dom0).unwrap();
    (BufPool::new(dom0, 512), evtchn)
}

/// The namespace for `tag` (the tests are ignored by default; asked to run, they fail with what
/// is missing rather than skip).
fn ns_or_fail(tag: &str) -> Netns {
    root_netns(tag, &["ip"])
}

/// Opens the uplink in the namespace with a listener on `linux_ip`, the peer known at
/// `PEER_MAC` on `dev`, and runs the exchange.
fn run_exchange(ns: &Netns, spec: UplinkSpec, dev: &str, linux: [u8; 4], peer: [u8; 4]) -> Seen {
    let offload = match &spec {
        UplinkSpec::Tap { offload, .. } | UplinkSpec::Nic { offload, .. } => *offload,
    };
    let ip = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_string();
    ns.run(|| {
        let up = netbackd::uplinks::open::<DomainHandle>(&spec, 1500).unwrap();
        let expect = if offload { Accepts::ALL } else { Accepts::NONE };
        assert_eq!(up.accepts(), expect);
        let mac = PEER_MAC.map(|b| format!("{b:02x}")).join(":");
        ns.ip(&[
            "neigh",
            "add",
            &ip(peer),
            "lladdr",
            &mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .unwrap();
        let listener = TcpListener::bind((ip(linux), LINUX_PORT)).unwrap();
        let (pool, evtchn) = backend();
        let mut p = Peer {
            up,
            pool,
            evtchn,
            linux_mac: mac_of(ns, dev),
            linux_ip: linux,
            peer_ip: peer,
        };
        exchange(&mut p, listener, offload)
    })
    .unwrap()
}

fn assert_super_frames(seen: &Seen) {
    let big: Vec<_> = seen
        .data_frames
        .iter()
        .filter(|(len, _)| *len > 1514)
        .collect();
    assert!(
        !big.is_empty(),
        "no frame longer than the MTU came up: {:?}",
        seen.data_frames
    );
    for (len, meta) in big {
        let gso = meta.gso.unwrap_or_else(|| panic!("{len} B without GSO"));
        assert_eq!(gso.kind, GsoKind::Tcpv4);
        assert_eq!(gso.size, MSS, "the MSS the peer announced");
        assert!(matches!(
            meta.csum,
            Csum::Partial {
                start: 34,
                offset: 16
            }
        ));
    }
}

#[test]
#[ignore = "needs root, /dev/net/tun and iproute2: run as root with --ignored (CI does)"]
fn tap_uplink_carries_super_frames_and_partial_checksums_both_ways() {
    let ns = ns_or_fail("snbd-utap");
    let spec = UplinkSpec::Tap {
        name: "snu0".into(),
        addr: Some("10.199.12.1/24".parse().unwrap()),
        mtu: Some(1500),
        offload: true,
        switch: "xenbr0".into(),
    };
    let seen = run_exchange(&ns, spec, "snu0", [10, 199, 12, 1], [10, 199, 12, 2]);
    assert_super_frames(&seen);
}

#[test]
#[ignore = "needs root, /dev/net/tun and iproute2: run as root with --ignored (CI does)"]
fn tap_uplink_with_offload_off_carries_only_whole_frames() {
    let ns = ns_or_fail("snbd-utapoff");
    let spec = UplinkSpec::Tap {
        name: "snu1".into(),
        addr: Some("10.199.13.1/24".parse().unwrap()),
        mtu: Some(1500),
        offload: false,
        switch: "xenbr0".into(),
    };
    let seen = run_exchange(&ns, spec, "snu1", [10, 199, 13, 1], [10, 199, 13, 2]);
    assert!(!seen.data_frames.is_empty());
    for (len, meta) in &seen.data_frames {
        assert!(*len <= 1514, "{len} B");
        assert_eq!(*meta, OffloadMeta::NONE);
    }
}

#[test]
#[ignore = "needs root, /dev/net/tun and iproute2: run as root with --ignored (CI does)"]
fn nic_uplink_carries_super_frames_and_partial_checksums_both_ways() {
    let ns = ns_or_fail("snbd-unic");
    // A veth pair for a NIC and its wire: the uplink on wire0, Linux's stack on host0 (with
    // the veth's default tx checksum offload and TSO).
    ns.ip(&[
        "link", "add", "wire0", "type", "veth", "peer", "name", "host0",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "10.199.14.1/24", "dev", "host0"])
        .unwrap();
    for dev in ["wire0", "host0"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    let spec = UplinkSpec::Nic {
        name: "wire0".into(),
        offload: true,
        switch: "xenbr0".into(),
    };
    let seen = run_exchange(&ns, spec, "host0", [10, 199, 14, 1], [10, 199, 14, 2]);
    assert_super_frames(&seen);
}
