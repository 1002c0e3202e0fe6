//! TAP devices against the real Linux stack, each test in a namespace of its own.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Instant;

use ::offload::virtio::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM as FLAG_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE as GSO_NONE,
};
use common::{
    HOST_MAC, PATIENCE, eventually, root_netns, split_vnet, sys_class_net, wait_readable,
};
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv4Type, NetSlice, PacketBuilder,
    SlicedPacket, TransportSlice, UdpHeader,
};
use hostnet::tap::offload;
use hostnet::vnet::HdrLen;
use hostnet::{Error, Tap, TapConfig};

const TAP_IP: [u8; 4] = [10, 199, 7, 1];
const HOST_IP: [u8; 4] = [10, 199, 7, 2];

/// If `frame` is an ARP request for `ip`, the requester's MAC and IPv4 address.
fn arp_request_for(frame: &[u8], ip: [u8; 4]) -> Option<([u8; 6], [u8; 4])> {
    let arp = match SlicedPacket::from_ethernet(frame).ok()?.net? {
        NetSlice::Arp(arp) => arp.to_packet(),
        _ => return None,
    };
    let arp = arp.try_eth_ipv4().ok()?;
    (arp.operation == ArpOperation::REQUEST && arp.target_ipv4_addr().octets() == ip)
        .then_some((arp.sender_mac, arp.sender_ipv4))
}

/// The ARP reply of the fake host, owner of `HOST_IP`, to `to_mac`/`to_ip`.
fn arp_reply(to_mac: [u8; 6], to_ip: [u8; 4]) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REPLY,
        &HOST_MAC,
        &HOST_IP,
        &to_mac,
        &to_ip,
    )
    .unwrap();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, to_mac)
        .arp(arp)
        .write(&mut out)
        .unwrap();
    out
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn tap_carries_icmp_both_ways() {
    let ns = root_netns("tap_carries_icmp_both_ways");
    let tap = ns
        .run(|| Tap::open("tap0", &TapConfig::default()))
        .unwrap()
        .unwrap();
    assert!(tap.created());
    assert_eq!(tap.name(), "tap0");
    assert_eq!(tap.vnet_hdr_len(), 0);
    tap.set_up().unwrap();
    tap.add_ipv4(Ipv4Addr::from(TAP_IP), 24).unwrap();
    let tap_mac = tap.mac().unwrap();
    let link = ns.ip(&["link", "show", "tap0"]).unwrap();
    assert!(
        link.starts_with(&format!("{}: tap0:", tap.ifindex())),
        "{link}"
    );

    // The fake host pings the kernel. With a packet-information prefix (no IFF_NO_PI) the
    // kernel would read our first 4 bytes as that prefix and never see an echo request.
    let payload = b"hostnet: echo through a TAP";
    let mut request = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, tap_mac)
        .ipv4(HOST_IP, TAP_IP, 64)
        .icmpv4_echo_request(0x4e54, 7)
        .write(&mut request, payload)
        .unwrap();
    assert_eq!(tap.send(&request).unwrap(), request.len());

    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + PATIENCE;
    let mut answered_arp = false;
    loop {
        assert!(
            wait_readable(&tap, deadline),
            "no echo reply within {PATIENCE:?} (ARP answered: {answered_arp})"
        );
        while let Some(n) = tap.recv(&mut buf).unwrap() {
            let frame = &buf[..n];
            if let Some((mac, ip)) = arp_request_for(frame, HOST_IP) {
                assert_eq!(
                    (mac, ip),
                    (tap_mac, TAP_IP),
                    "the kernel asks from the TAP's own MAC and address"
                );
                assert_eq!(tap.send(&arp_reply(mac, ip)).unwrap(), 42);
                answered_arp = true;
                continue;
            }
            let Ok(p) = SlicedPacket::from_ethernet(frame) else {
                continue;
            };
            let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
                continue;
            };
            let Icmpv4Type::EchoReply(echo) = icmp.icmp_type() else {
                continue;
            };
            // Frames start at the Ethernet header: nothing before the destination MAC.
            assert_eq!(&frame[..6], &HOST_MAC);
            assert_eq!(&frame[6..12], &tap_mac);
            let Some(NetSlice::Ipv4(ip)) = &p.net else {
                panic!("echo reply without IPv4")
            };
            assert_eq!(ip.header().source(), TAP_IP);
            assert_eq!(ip.header().destination(), HOST_IP);
            assert_eq!((echo.id, echo.seq), (0x4e54, 7));
            assert_eq!(icmp.payload(), payload);
            assert!(
                answered_arp,
                "the kernel replied without resolving the fake host"
            );
            return;
        }
    }
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn tap_attaches_to_a_persistent_tap_and_removes_only_what_it_created() {
    let ns = root_netns("tap_attaches_to_a_persistent_tap_and_removes_only_what_it_created");
    ns.ip(&["tuntap", "add", "dev", "ptap0", "mode", "tap"])
        .unwrap();
    let config = TapConfig::default();
    let (attached, created) = ns
        .run(|| (Tap::open("ptap0", &config), Tap::open("ctap0", &config)))
        .unwrap();
    let attached = attached.unwrap();
    let created = created.unwrap();
    assert!(
        !attached.created(),
        "ptap0 existed before: attached, not created"
    );
    assert!(created.created());
    let names = sys_class_net(&ns);
    assert!(
        names.iter().any(|n| n == "ptap0") && names.iter().any(|n| n == "ctap0"),
        "{names:?}"
    );

    // A TAP has one reader: a second open, while ours is attached, is refused.
    match ns.run(|| Tap::open("ptap0", &config)).unwrap() {
        Err(e @ Error::TapBusy { .. }) => assert!(e.to_string().contains("ptap0"), "{e}"),
        other => panic!("second attach to ptap0: {other:?}"),
    }

    drop(created);
    drop(attached);
    assert!(
        eventually(|| !sys_class_net(&ns).iter().any(|n| n == "ctap0")),
        "the TAP we created outlived its handle"
    );
    assert!(
        sys_class_net(&ns).iter().any(|n| n == "ptap0"),
        "the persistent TAP must stay"
    );

    // Closed, the persistent TAP can be attached again. (Retried: a parallel test's child
    // process may hold a copy of our descriptor between its fork and its exec.)
    let mut again = ns.run(|| Tap::open("ptap0", &config)).unwrap();
    assert!(
        eventually(|| {
            if again.is_err() {
                again = ns.run(|| Tap::open("ptap0", &config)).unwrap();
            }
            again.is_ok()
        }),
        "{again:?}"
    );
    assert!(!again.unwrap().created());
}

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

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn tap_vnet_header_carries_the_partial_udp_checksum() {
    for len in [HdrLen::Legacy, HdrLen::MrgRxbuf] {
        let ns = root_netns("tap_vnet_header_carries_the_partial_udp_checksum");
        let config = TapConfig {
            vnet_hdr: Some(len),
            offload: offload::CSUM | offload::TSO4 | offload::TSO6,
            mtu: Some(9000),
            ..TapConfig::default()
        };
        let tap = ns.run(|| Tap::open("vtap0", &config)).unwrap().unwrap();
        assert_eq!(tap.vnet_hdr_len(), len.bytes());
        tap.set_up().unwrap();
        tap.add_ipv4(Ipv4Addr::from(TAP_IP), 24).unwrap();
        assert!(
            ns.ip(&["link", "show", "vtap0"])
                .unwrap()
                .contains("mtu 9000")
        );
        let host = "10.199.7.2";
        let mac = HOST_MAC.map(|b| format!("{b:02x}")).join(":");
        ns.ip(&[
            "neigh",
            "add",
            host,
            "lladdr",
            &mac,
            "dev",
            "vtap0",
            "nud",
            "permanent",
        ])
        .unwrap();

        let payload = b"a datagram whose checksum the TAP reader finishes";
        let sport = ns
            .run(|| {
                let s = UdpSocket::bind("10.199.7.1:0").unwrap();
                s.send_to(payload, (host, 9999)).unwrap();
                s.local_addr().unwrap().port()
            })
            .unwrap();

        let mut buf = vec![0u8; Tap::RECV_BUF_LEN];
        let deadline = Instant::now() + PATIENCE;
        let (hdr, frame) = 'found: loop {
            assert!(
                wait_readable(&tap, deadline),
                "{len:?}: the datagram never reached the TAP"
            );
            while let Some(n) = tap.recv(&mut buf).unwrap() {
                let (hdr, frame) = split_vnet(&buf[..n], len).expect("header");
                let Ok(p) = SlicedPacket::from_ethernet(frame) else {
                    continue;
                };
                if let Some(TransportSlice::Udp(udp)) = &p.transport
                    && udp.destination_port() == 9999
                {
                    break 'found (hdr, frame.to_vec());
                }
            }
        };

        assert_eq!(hdr.flags, FLAG_NEEDS_CSUM, "{len:?}: {hdr:?}");
        assert_eq!(hdr.gso_type, GSO_NONE);
        // Checksumming starts at the UDP header (14 + 20) and the field is 6 bytes into it.
        assert_eq!(hdr.csum_start, 34);
        assert_eq!(hdr.csum_offset, 6);
        let field_at = 34 + 6;
        let field = u16::from_be_bytes([frame[field_at], frame[field_at + 1]]);
        let udp = &frame[34..];
        assert_eq!(
            usize::from(u16::from_be_bytes([udp[4], udp[5]])),
            8 + payload.len()
        );
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), sport);

        // The frame carries only the pseudo-header sum...
        let udp_len = udp.len() as u32;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&TAP_IP);
        pseudo.extend_from_slice(&HOST_IP);
        let pseudo_sum = ones_sum(17 + udp_len, &pseudo);
        assert_eq!(field, pseudo_sum, "partial checksum");
        let (udp_hdr, _) = UdpHeader::from_slice(udp).unwrap();
        let full = udp_hdr
            .calc_checksum_ipv4_raw(TAP_IP, HOST_IP, &udp[8..])
            .unwrap();
        assert_ne!(field, full, "the kernel left the checksum to us");
        // ...and summing from csum_start with that field in place completes it, as a NIC would.
        let finished = !ones_sum(0, udp);
        assert_eq!(finished, full);
    }
}

/// What Linux hands a TAP reader that accepts TSO: one TCP super-frame for many segments, its
/// header describing how to cut it. The test plays a TCP peer just far enough (SYN-ACK, a
/// window) for the kernel to send a burst, then looks at the frames.
#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn tap_tso_hands_out_tcp_super_frames() {
    use ::offload::virtio::VIRTIO_NET_HDR_GSO_TCPV4 as GSO_TCPV4;
    use etherparse::TcpOptionElement;
    use std::io::Write;
    use std::net::TcpStream;

    let ns = root_netns("tap_tso_hands_out_tcp_super_frames");
    let config = TapConfig {
        vnet_hdr: Some(HdrLen::Legacy),
        offload: offload::CSUM | offload::TSO4 | offload::TSO6,
        mtu: None,
        ..TapConfig::default()
    };
    let tap = ns.run(|| Tap::open("gtap0", &config)).unwrap().unwrap();
    tap.set_up().unwrap();
    tap.add_ipv4(Ipv4Addr::from(TAP_IP), 24).unwrap();
    let mac = HOST_MAC.map(|b| format!("{b:02x}")).join(":");
    ns.ip(&[
        "neigh",
        "add",
        "10.199.7.2",
        "lladdr",
        &mac,
        "dev",
        "gtap0",
        "nud",
        "permanent",
    ])
    .unwrap();
    let tap_mac = tap.mac().unwrap();
    const MSS: u16 = 1400;

    std::thread::scope(|s| {
        let client = s.spawn(|| {
            ns.run(|| {
                let peer = "10.199.7.2:5001".parse().unwrap();
                let stream = TcpStream::connect_timeout(&peer, PATIENCE).unwrap();
                stream.set_nodelay(true).unwrap();
                stream.set_nonblocking(true).unwrap();
                let queued = (&stream).write(&[0x5a; 60000]).unwrap();
                (stream, queued)
            })
            .unwrap()
        });

        let mut buf = vec![0u8; Tap::RECV_BUF_LEN];
        let deadline = Instant::now() + PATIENCE;
        let mut data_frames = Vec::new();
        'read: loop {
            assert!(
                wait_readable(&tap, deadline),
                "no TCP data from the kernel: {data_frames:?}"
            );
            while let Some(n) = tap.recv(&mut buf).unwrap() {
                let (hdr, frame) = split_vnet(&buf[..n], HdrLen::Legacy).unwrap();
                let Ok(p) = SlicedPacket::from_ethernet(frame) else {
                    continue;
                };
                let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                    continue;
                };
                if tcp.destination_port() != 5001 {
                    continue;
                }
                if tcp.syn() {
                    // SYN-ACK: a plain frame (zero header), our MSS, a 64 KiB window.
                    let mut reply = vec![0u8; 10];
                    PacketBuilder::ethernet2(HOST_MAC, tap_mac)
                        .ipv4(HOST_IP, TAP_IP, 64)
                        .tcp(5001, tcp.source_port(), 0x1000_0000, 65535)
                        .syn()
                        .ack(tcp.sequence_number().wrapping_add(1))
                        .options(&[TcpOptionElement::MaximumSegmentSize(MSS)])
                        .unwrap()
                        .write(&mut reply, &[])
                        .unwrap();
                    tap.send(&reply).unwrap();
                } else if !tcp.payload().is_empty() {
                    data_frames.push((hdr, frame.len(), tcp.payload().len()));
                    if hdr.gso_type != GSO_NONE {
                        break 'read;
                    }
                }
            }
        }
        let (_stream, queued) = client.join().unwrap();
        assert!(
            queued > 2 * usize::from(MSS),
            "the socket took only {queued} bytes"
        );

        let &(hdr, frame_len, payload_len) = data_frames.last().unwrap();
        eprintln!(
            "GSO frame: {hdr:?}, frame {frame_len} B, payload {payload_len} B; before it: {data_frames:?}"
        );
        assert_eq!(hdr.gso_type, GSO_TCPV4);
        assert_eq!(hdr.gso_size, MSS, "gso_size is the MSS the peer announced");
        assert_eq!(
            hdr.flags, FLAG_NEEDS_CSUM,
            "a super-frame's checksum is always partial"
        );
        assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 16));
        assert_eq!(
            usize::from(hdr.hdr_len),
            14 + 20 + 20,
            "Ethernet + IPv4 + TCP headers"
        );
        assert!(
            payload_len > usize::from(MSS),
            "one frame carries several segments"
        );
        assert_eq!(
            frame_len,
            54 + payload_len,
            "the frame is whole, not cut at the MTU"
        );
    });
}
