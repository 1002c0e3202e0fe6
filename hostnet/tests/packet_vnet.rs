//! AF_PACKET sockets with the virtio-net header (`PACKET_VNET_HDR`) on a veth pair, against the
//! real Linux stack, in a namespace of the test's own: what the kernel hands up (a TSO
//! super-frame, a partial checksum) and what it does with what we send (completes the checksum,
//! segments the super-frame) for an interface that cannot.

mod common;

use std::io::{IoSlice, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Instant;

use ::offload::virtio::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM as FLAG_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE as GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4 as GSO_TCPV4, VirtioNetHdr,
};
use common::{HOST_MAC, PATIENCE, eventually, root_netns, split_vnet, wait_readable};
use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use hostnet::netns::Netns;
use hostnet::vnet::HdrLen;
use hostnet::{PacketConfig, PacketSocket, RecvBatch};

const LINUX_IP: [u8; 4] = [10, 199, 21, 1];
const HOST_IP: [u8; 4] = [10, 199, 21, 2];
const HDR: usize = 10;

/// The ones'-complement sum of `data` as 16-bit big-endian words, folded, not complemented.
fn ones_sum(mut acc: u32, data: &[u8]) -> u16 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u32::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Whether the IPv4 TCP/UDP frame's L4 checksum is complete and right.
fn l4_checksum_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = &ip[ihl..total];
    let pseudo = ones_sum(u32::from(ip[9]) + l4.len() as u32, &ip[12..20]);
    ones_sum(u32::from(pseudo), l4) == 0xffff
}

/// Writes the pseudo-header sum into the L4 checksum field of an IPv4 frame, as a stack that
/// leaves the rest to the device does; returns (csum_start, csum_offset).
fn make_partial(frame: &mut [u8]) -> (u16, u16) {
    let ihl = usize::from(frame[14] & 0xf) * 4;
    let start = 14 + ihl;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let l4_len = total - ihl;
    let offset = match frame[23] {
        6 => 16,
        17 => 6,
        p => panic!("protocol {p}"),
    };
    let pseudo = ones_sum(u32::from(frame[23]) + l4_len as u32, &frame[26..34]);
    frame[start + offset..start + offset + 2].copy_from_slice(&pseudo.to_be_bytes());
    (start as u16, offset as u16)
}

/// A namespace with veth va/vb up; vb holds `LINUX_IP` and knows the fake host (`HOST_IP`)
/// behind it at `HOST_MAC`.
fn veth_with_host(test: &str) -> (Netns, [u8; 6]) {
    let ns = root_netns(test);
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"])
        .unwrap();
    ns.ip(&["addr", "add", "10.199.21.1/24", "dev", "vb"])
        .unwrap();
    ns.ip(&["link", "set", "va", "up"]).unwrap();
    ns.ip(&["link", "set", "vb", "up"]).unwrap();
    let mac = HOST_MAC.map(|b| format!("{b:02x}")).join(":");
    ns.ip(&[
        "neigh",
        "add",
        "10.199.21.2",
        "lladdr",
        &mac,
        "dev",
        "vb",
        "nud",
        "permanent",
    ])
    .unwrap();
    let vb_mac = mac_of(&ns, "vb");
    (ns, vb_mac)
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

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn vnet_packet_socket_hands_up_super_frames_and_partial_checksums_with_their_header() {
    let (ns, vb_mac) = veth_with_host(
        "vnet_packet_socket_hands_up_super_frames_and_partial_checksums_with_their_header",
    );
    let sock = ns
        .run(|| PacketSocket::bind_with("va", &PacketConfig { vnet_hdr: true }))
        .unwrap()
        .unwrap();
    assert_eq!(sock.vnet_hdr(), Some(HdrLen::Legacy));
    assert_eq!(sock.vnet_hdr_len(), HDR);
    const MSS: u16 = 1400;

    // A datagram: the veth leaves its checksum to "the device", and the header says so.
    ns.run(|| {
        let s = UdpSocket::bind("10.199.21.1:0").unwrap();
        s.send_to(b"partial, says the header", ("10.199.21.2", 9999))
            .unwrap();
    })
    .unwrap();

    std::thread::scope(|s| {
        let client = s.spawn(|| {
            ns.run(|| {
                let peer = "10.199.21.2:5001".parse().unwrap();
                let stream = TcpStream::connect_timeout(&peer, PATIENCE).unwrap();
                stream.set_nodelay(true).unwrap();
                stream.set_nonblocking(true).unwrap();
                let queued = (&stream).write(&[0x5a; 60000]).unwrap();
                assert!(
                    queued > 2 * usize::from(MSS),
                    "the socket took {queued} bytes"
                );
                stream
            })
            .unwrap()
        });
        // Slots for a 64 KiB frame and its header; a batch of several, so recvmmsg batching
        // is exercised with headers in every slot.
        let mut batch = RecvBatch::new(8, HDR + 65549);
        let deadline = Instant::now() + PATIENCE;
        let mut udp_seen = false;
        let (hdr, frame_len, payload_len) = 'read: loop {
            assert!(
                wait_readable(&sock, deadline),
                "no super-frame came up (datagram seen: {udp_seen})"
            );
            sock.recv_batch(&mut batch).unwrap();
            for f in batch.iter() {
                assert!(!f.truncated);
                let (hdr, frame) = split_vnet(f.data, HdrLen::Legacy).unwrap();
                assert_eq!(f.len, HDR + frame.len(), "the length counts the header");
                let Ok(p) = SlicedPacket::from_ethernet(frame) else {
                    continue;
                };
                match &p.transport {
                    Some(TransportSlice::Udp(u)) if u.destination_port() == 9999 => {
                        assert_eq!(hdr.flags, FLAG_NEEDS_CSUM, "{hdr:?}");
                        assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 6));
                        assert!(!l4_checksum_ok(frame), "the checksum was left to us");
                        udp_seen = true;
                    }
                    Some(TransportSlice::Tcp(t)) if t.destination_port() == 5001 => {
                        if t.syn() {
                            // SYN-ACK (a zero header: a whole frame), our MSS, a 64 KiB window.
                            let mut reply = Vec::new();
                            PacketBuilder::ethernet2(HOST_MAC, vb_mac)
                                .ipv4(HOST_IP, LINUX_IP, 64)
                                .tcp(5001, t.source_port(), 0x1000_0000, 65535)
                                .syn()
                                .ack(t.sequence_number().wrapping_add(1))
                                .options(&[TcpOptionElement::MaximumSegmentSize(MSS)])
                                .unwrap()
                                .write(&mut reply, &[])
                                .unwrap();
                            let zero = VirtioNetHdr::default().to_bytes();
                            sock.send_vectored(&[IoSlice::new(&zero), IoSlice::new(&reply)])
                                .unwrap();
                        } else if hdr.gso_type != GSO_NONE {
                            break 'read (hdr, frame.len(), t.payload().len());
                        }
                    }
                    _ => {}
                }
            }
        };
        drop(client.join().unwrap());
        assert!(udp_seen, "the datagram never came up");
        assert_eq!(hdr.gso_type, GSO_TCPV4);
        assert_eq!(hdr.gso_size, MSS, "gso_size is the peer's MSS");
        assert_eq!(hdr.flags, FLAG_NEEDS_CSUM);
        assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 16));
        assert!(payload_len > usize::from(MSS), "several segments in one");
        assert!(frame_len > 1514, "longer than the MTU: {frame_len}");
    });
}

#[test]
#[ignore = "needs root (network namespaces), iproute2 and ethtool: run as root with --ignored (CI does)"]
fn vnet_packet_socket_sends_frames_the_kernel_completes_and_segments() {
    let test = "vnet_packet_socket_sends_frames_the_kernel_completes_and_segments";
    let (ns, vb_mac) = veth_with_host(test);
    // va gets no checksum offload (and so no TSO): the kernel must finish what we send in
    // software before it leaves, as for a NIC without offloads.
    if let Err(e) = ns.exec("ethtool", &["-K", "va", "tx", "off"]) {
        panic!("{test}: cannot run: ethtool is missing or failed (apt-get install ethtool): {e}");
    }
    let (tx, rx) = ns
        .run(|| {
            (
                PacketSocket::bind_with("va", &PacketConfig { vnet_hdr: true }).unwrap(),
                PacketSocket::bind("vb").unwrap(),
            )
        })
        .unwrap();

    // A datagram whose checksum field holds only the pseudo-header sum.
    let mut udp = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, vb_mac)
        .ipv4(HOST_IP, LINUX_IP, 64)
        .udp(4000, 9999)
        .write(&mut udp, b"finish me, kernel")
        .unwrap();
    let (start, offset) = make_partial(&mut udp);
    assert!(!l4_checksum_ok(&udp));
    let hdr = VirtioNetHdr {
        flags: FLAG_NEEDS_CSUM,
        gso_type: GSO_NONE,
        csum_start: start,
        csum_offset: offset,
        ..VirtioNetHdr::default()
    };
    tx.send_vectored(&[IoSlice::new(&hdr.to_bytes()), IoSlice::new(&udp)])
        .unwrap();

    // A TCP super-frame of 10 segments of 1448 bytes: too long for the MTU but for its header.
    const MSS: usize = 1448;
    let payload: Vec<u8> = (0..10 * MSS).map(|i| (i * 7 % 251) as u8).collect();
    let mut tcp = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, vb_mac)
        .ipv4(HOST_IP, LINUX_IP, 64)
        .tcp(4001, 5001, 1000, 65535)
        .ack(1)
        .write(&mut tcp, &payload)
        .unwrap();
    let (start, offset) = make_partial(&mut tcp);
    let hdr = VirtioNetHdr {
        flags: FLAG_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: MSS as u16,
        csum_start: start,
        csum_offset: offset,
    };
    tx.send_vectored(&[IoSlice::new(&hdr.to_bytes()), IoSlice::new(&tcp)])
        .unwrap();

    // vb sees the datagram with its checksum finished, then ten whole segments. The kernel's
    // own frames on a link that just came up (IPv6 router solicitations, MLD reports) may
    // cross too: only IPv4 frames from the sender's MAC are the test's.
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut batch = RecvBatch::new(16, 2048);
    let ours = |f: &[u8]| f.len() >= 14 && f[6..12] == HOST_MAC && f[12..14] == [0x08, 0x00];
    assert!(
        eventually(|| {
            rx.recv_batch(&mut batch).unwrap();
            got.extend(
                batch
                    .iter()
                    .filter(|f| ours(f.data))
                    .map(|f| f.data.to_vec()),
            );
            got.len() >= 11
        }),
        "vb received {} frames",
        got.len()
    );
    assert_eq!(got.len(), 11, "nothing else of the sender's crossed");
    assert_eq!(got[0].len(), udp.len());
    assert!(l4_checksum_ok(&got[0]), "the datagram's checksum is whole");
    let mut data = Vec::new();
    for (i, seg) in got[1..].iter().enumerate() {
        assert!(seg.len() <= 1514, "segment {i}: {} bytes", seg.len());
        assert!(l4_checksum_ok(seg), "segment {i}'s checksum");
        let p = SlicedPacket::from_ethernet(seg).unwrap();
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("segment {i} is not TCP");
        };
        assert_eq!(t.sequence_number(), 1000 + (i * MSS) as u32);
        data.extend_from_slice(t.payload());
    }
    assert!(
        data == payload,
        "the segments carry the super-frame's bytes"
    );
}
