//! Checksum offload and GSO through netfront, against the test backend laying frames out as Linux
//! netback does.

mod common;

use std::time::Duration;

use common::{Opts, RxFrame, RxLayout, TestBackend, machine};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use netfront::{FrontConfig, Netfront, RxMode, Stats};
use netif_ring::netif::{
    ExtraInfo, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    XEN_NETIF_EXTRA_FLAG_MORE,
};
use offload::GsoKind;
use smoltcp::phy::{Device, RxToken, TxToken};
use smoltcp::time::Instant;
use xen_model::{DomainHandle, Hypervisor};

const T0: Instant = Instant::from_micros_const(0);
const MAC_G: [u8; 6] = [2, 0, 0, 0, 0, 2];
const MAC_P: [u8; 6] = [2, 0, 0, 0, 0, 1];
const IP_G: [u8; 4] = [10, 0, 0, 2];
const IP_P: [u8; 4] = [10, 0, 0, 1];
const IP6_G: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const IP6_P: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The largest TCP payload of one IPv4 packet (total length 65535, no options).
const MAX_V4_PAYLOAD: usize = 65535 - 20 - 20;
/// The first rx slot's flags for a multi-page GSO frame: more_data|extra_info|csum_blank|
/// data_validated.
const GSO_FIRST_FLAGS: u16 = 0x0F;
const BLANK: u16 = NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;

fn cfg() -> FrontConfig {
    FrontConfig {
        timeout: Duration::from_secs(10),
        ..FrontConfig::default()
    }
}

fn connect(opts: Opts, c: FrontConfig) -> (Hypervisor, TestBackend, Netfront<DomainHandle>) {
    let (xen, dom0, g) = machine(1);
    let be = TestBackend::start(&xen, dom0, &[(g[0].domid(), 0)], opts);
    let nf = Netfront::connect(g[0].clone(), 0, c).expect("connect");
    (xen, be, nf)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// An IPv4 TCP frame from the peer to the guest, checksums computed by etherparse.
fn tcp4(
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_P, MAC_G)
        .ipv4(IP_P, IP_G, 64)
        .tcp(40000, 5000, seq, 65535);
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    if !payload.is_empty() {
        b = b.psh();
    }
    let b = b.options(opts).expect("options fit");
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).expect("frame");
    v
}

fn tcp6(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_P, MAC_G)
        .ipv6(IP6_P, IP6_G, 64)
        .tcp(40000, 5000, 7, 65535)
        .ack(1);
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("frame");
    v
}

fn udp4(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_P, MAC_G)
        .ipv4(IP_P, IP_G, 64)
        .udp(4000, 5000);
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("frame");
    v
}

/// An ARP request from the peer for the guest's address.
fn arp_request() -> Vec<u8> {
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr, Ipv4Address,
    };
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(MAC_P),
        source_protocol_addr: Ipv4Address::new(IP_P[0], IP_P[1], IP_P[2], IP_P[3]),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: Ipv4Address::new(IP_G[0], IP_G[1], IP_G[2], IP_G[3]),
    };
    let mut buf = vec![0u8; 14 + arp.buffer_len()];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(MAC_P),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut eth);
    arp.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    buf
}

/// The frame with its checksum field holding only the pseudo-header sum, as a sender that
/// leaves the checksum to an offload writes it.
fn partial(mut f: Vec<u8>) -> Vec<u8> {
    offload::csum::set_partial(&mut f).expect("a TCP/UDP frame");
    f
}

fn blank(data: Vec<u8>) -> RxFrame {
    RxFrame {
        csum_flags: BLANK,
        ..RxFrame::plain(data)
    }
}

/// The folded ones'-complement sum of big-endian 16-bit words (the plain RFC 1071 loop).
fn ones_sum(words: &[u8]) -> u16 {
    let mut s: u32 = words
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u16
}

/// The TCP pseudo-header sum (not complemented) of a captured IPv4 or IPv6 frame, computed
/// here from the addresses and length, independently of netfront and the offload crate.
fn pseudo_sum(f: &[u8]) -> u16 {
    let mut b = Vec::new();
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => {
            let ihl = usize::from(f[14] & 0x0F) * 4;
            let l4 = u16::from_be_bytes([f[16], f[17]]) as usize - ihl;
            b.extend_from_slice(&f[26..34]);
            b.extend_from_slice(&[0, 6]);
            b.extend_from_slice(&(l4 as u16).to_be_bytes());
        }
        0x86DD => {
            b.extend_from_slice(&f[22..54]);
            b.extend_from_slice(&u32::from(u16::from_be_bytes([f[18], f[19]])).to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 6]);
        }
        t => panic!("ethertype {t:#x}"),
    }
    ones_sum(&b)
}

/// The TCP checksum etherparse computes for a captured frame, and the one in the frame.
fn tcp_checksums(f: &[u8]) -> (u16, u16) {
    let p = SlicedPacket::from_ethernet(f).expect("a frame etherparse reads");
    let Some(TransportSlice::Tcp(tcp)) = p.transport else {
        panic!("not TCP");
    };
    let want = match p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            tcp.calc_checksum_ipv4(h.source(), h.destination())
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            tcp.calc_checksum_ipv6(h.source(), h.destination())
        }
        _ => panic!("not IP"),
    }
    .expect("length fits");
    (want, tcp.checksum())
}

fn recv(nf: &mut Netfront<DomainHandle>) -> Vec<u8> {
    for _ in 0..2000 {
        nf.poll().expect("poll");
        if let Some((rx, _tx)) = nf.receive(T0) {
            return rx.consume(|b| b.to_vec());
        }
        nf.wait(Some(Duration::from_millis(5))).expect("wait");
    }
    panic!("no frame after 2000 waits: {:?}", nf.stats());
}

#[track_caller]
fn poll_until(nf: &mut Netfront<DomainHandle>, done: impl Fn(&Stats) -> bool) {
    for _ in 0..2000 {
        nf.poll().expect("poll");
        if done(&nf.stats()) {
            return;
        }
        nf.wait(Some(Duration::from_millis(5))).expect("wait");
    }
    panic!("condition not reached: {:?}", nf.stats());
}

fn send(nf: &mut Netfront<DomainHandle>, data: &[u8]) {
    for _ in 0..1000 {
        if let Some(tok) = nf.transmit(T0) {
            tok.consume(data.len(), |b| b.copy_from_slice(data));
            return;
        }
        nf.poll().expect("poll");
        nf.wait(Some(Duration::from_millis(5))).expect("wait");
    }
    panic!("no tx room");
}

#[track_caller]
fn wait_frames(be: &TestBackend, n: usize) -> Vec<(usize, Vec<u8>)> {
    for _ in 0..2000 {
        let f = be.frames();
        if f.len() >= n {
            return f;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("backend saw {} frames, wanted {n}", be.frames().len());
}

#[test]
fn handshake_offers_checksum_offload_and_gso_as_linux_netfront_does() {
    for (opts, c) in [
        (Opts::offloads(), cfg()),
        (Opts::default(), cfg()),
        (
            Opts::offloads(),
            FrontConfig {
                csum_offload: false,
                ..cfg()
            },
        ),
    ] {
        let offered = opts.features.len() > Opts::default().features.len();
        let on = c.csum_offload;
        let (xen, be, nf) = connect(opts, c);
        let xs = xen.xenstore();
        let fe = nf.frontend_dir().to_string();
        let rd = |k: &str| xs.read(&format!("{fe}/{k}")).expect("key written");
        let flag = |b: bool| if b { "1" } else { "0" };
        // Linux writes the rx offload keys whatever the backend offers.
        assert_eq!(rd("feature-no-csum-offload"), flag(!on));
        assert_eq!(rd("feature-ipv6-csum-offload"), flag(on));
        assert_eq!(rd("feature-gso-tcpv4"), flag(on));
        assert_eq!(rd("feature-gso-tcpv6"), flag(on));
        let f = nf.backend_features();
        assert_eq!(
            (f.gso_tcpv4, f.gso_tcpv6, f.ipv6_csum_offload),
            (offered, offered, offered)
        );
        let caps = nf.capabilities().checksum;
        // With offload, TCP/UDP checksums are netfront's; the IPv4 header's stays smoltcp's.
        assert_eq!(caps.tcp.rx(), !on);
        assert_eq!(caps.tcp.tx(), !on);
        assert_eq!(caps.udp.rx(), !on);
        assert!(caps.ipv4.rx() && caps.ipv4.tx());
        nf.close().expect("close");
        be.stop();
    }
}

#[test]
fn gso_super_frames_arrive_whole_and_byte_exact_in_copy_and_flip_mode() {
    for mode in [RxMode::Copy, RxMode::Flip] {
        let (xen, be, mut nf) = connect(
            Opts::offloads(),
            FrontConfig {
                rx_mode: mode,
                ..cfg()
            },
        );
        let frames_before = xen.free_frames();
        // 20 super-frames of 18 slots: more than the ring, so extra-slot buffers must be
        // recycled like data buffers.
        let n = 20;
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                partial(tcp4(
                    1 + i * MAX_V4_PAYLOAD as u32,
                    Some(1),
                    false,
                    &[],
                    &pattern(MAX_V4_PAYLOAD, i as u8),
                ))
            })
            .collect();
        assert_eq!(frames[0].len(), 65535 + 14);
        for f in &frames {
            be.inject_rx(0, RxFrame::gso(f.clone(), GsoKind::Tcpv4, 1448));
        }
        for (i, f) in frames.iter().enumerate() {
            let got = recv(&mut nf);
            assert_eq!(got.len(), f.len(), "{mode:?} frame {i}");
            assert!(got == *f, "{mode:?} frame {i} differs");
        }
        // The double laid them out as Linux netback does: 0x0F, then the GSO slot for MSS
        // 1448 TCPv4, then 16 more data slots.
        let l = &be.rx_layouts()[0];
        assert_eq!(
            *l,
            RxLayout {
                first_flags: GSO_FIRST_FLAGS,
                extras: vec![[0x01, 0x00, 0xa8, 0x05, 0x01, 0x00, 0x00, 0x00]],
                slots: 18,
            }
        );
        let s = nf.stats();
        assert_eq!(s.rx_gso, n as u64);
        assert_eq!(s.rx_csum_blank, n as u64);
        assert_eq!(s.rx_packets, n as u64);
        assert_eq!(s.rx_bytes, n as u64 * 65549);
        assert_eq!(s.rx_dropped(), 0);
        assert_eq!(
            nf.capabilities().max_transmission_unit,
            1514,
            "GSO whatever the MTU"
        );
        nf.close().expect("close");
        be.stop();
        assert!(xen.free_frames() >= frames_before, "{mode:?}");
    }
}

#[test]
fn csum_blank_validated_and_plain_frames_are_each_checked_once_at_most() {
    // MTU 9000: the 3 KB frames take one or two slots, so verification sums across pages.
    let (_xen, be, mut nf) = connect(Opts::offloads(), FrontConfig { mtu: 9000, ..cfg() });
    let good = tcp4(5, Some(1), false, &[], &pattern(3000, 1));
    let mut wrong = good.clone();
    wrong[1000] ^= 1;
    // csum_blank: the partial field is handed on untouched (smoltcp does not verify TCP).
    let p = partial(good.clone());
    be.inject_rx(0, blank(p.clone()));
    assert!(recv(&mut nf) == p);
    // data_validated: not looked at, even with a wrong checksum (the backend vouched).
    be.inject_rx(
        0,
        RxFrame {
            csum_flags: NETRXF_DATA_VALIDATED,
            ..RxFrame::plain(wrong.clone())
        },
    );
    assert!(recv(&mut nf) == wrong);
    // No flags: netfront verifies; the correct one passes, the wrong one is dropped.
    be.inject(0, wrong);
    be.inject(0, good.clone());
    assert!(recv(&mut nf) == good);
    let s = nf.stats();
    assert_eq!(
        (
            s.rx_csum_blank,
            s.rx_csum_validated,
            s.rx_csum_verified,
            s.rx_drop_csum
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(s.rx_dropped(), 1);
    nf.close().expect("close");
    be.stop();
}

#[test]
fn ipv6_gso_super_frame_arrives_whole_and_a_mismatched_type_is_dropped() {
    let (_xen, be, mut nf) = connect(Opts::offloads(), cfg());
    let f6 = partial(tcp6(&pattern(65000, 9)));
    be.inject_rx(0, RxFrame::gso(f6.clone(), GsoKind::Tcpv6, 1428));
    assert!(recv(&mut nf) == f6);
    assert_eq!(
        be.rx_layouts()[0].extras,
        vec![[0x01, 0x00, 0x94, 0x05, 0x02, 0x00, 0x00, 0x00]]
    );
    assert_eq!(be.rx_layouts()[0].first_flags, GSO_FIRST_FLAGS);
    // TCPv4 GSO on an IPv6 frame.
    be.inject_rx(0, RxFrame::gso(f6.clone(), GsoKind::Tcpv4, 1428));
    poll_until(&mut nf, |s| s.rx_drop_gso_mismatch == 1);
    let next = tcp4(1, Some(1), false, &[], &pattern(100, 1));
    be.inject(0, next.clone());
    assert!(recv(&mut nf) == next);
    let s = nf.stats();
    assert_eq!((s.rx_gso, s.rx_dropped()), (1, 1));
    nf.close().expect("close");
    be.stop();
}

/// What one hostile frame should be dropped as.
struct Case {
    name: &'static str,
    frame: RxFrame,
    counter: fn(&Stats) -> u64,
}

fn hostile_cases() -> Vec<Case> {
    let big = partial(tcp4(1, Some(1), false, &[], &pattern(MAX_V4_PAYLOAD, 3)));
    let with_extra = |x: ExtraInfo| RxFrame {
        extras: vec![x],
        ..blank(big.clone())
    };
    let raw = |type_: u8, u: [u8; 6]| ExtraInfo { type_, flags: 0, u };
    let gso_more = ExtraInfo {
        flags: XEN_NETIF_EXTRA_FLAG_MORE,
        ..raw(1, [0xa8, 5, 1, 0, 0, 0])
    };
    // A multicast extra is the frontend's to send, never the backend's (a hash extra after the
    // GSO slot is what Linux's netback sends to a guest that set hashing up: taken).
    let mcast = raw(2, [1, 0, 0x5e, 0, 0, 1]);
    let mut bad_csum = tcp4(9, Some(1), false, &[], &pattern(1200, 4));
    bad_csum[500] ^= 0x80;
    vec![
        Case {
            name: "extra type 0",
            frame: with_extra(raw(0, [0xa8, 5, 1, 0, 0, 0])),
            counter: |s| s.rx_drop_bad_extra,
        },
        Case {
            name: "extra type 7",
            frame: with_extra(raw(7, [0xa8, 5, 1, 0, 0, 0])),
            counter: |s| s.rx_drop_bad_extra,
        },
        Case {
            name: "GSO size 0",
            frame: with_extra(raw(1, [0, 0, 1, 0, 0, 0])),
            counter: |s| s.rx_drop_bad_extra,
        },
        Case {
            name: "GSO type 3",
            frame: with_extra(raw(1, [0xa8, 5, 3, 0, 0, 0])),
            counter: |s| s.rx_drop_bad_extra,
        },
        Case {
            name: "GSO slot chained to a multicast slot",
            frame: RxFrame {
                extras: vec![gso_more, mcast],
                ..blank(big.clone())
            },
            counter: |s| s.rx_drop_bad_extra,
        },
        Case {
            name: "GSO TCPv4 on a UDP frame",
            frame: RxFrame {
                extras: RxFrame::gso(big.clone(), GsoKind::Tcpv4, 1448).extras,
                ..blank(partial(udp4(&pattern(65000, 5))))
            },
            counter: |s| s.rx_drop_gso_mismatch,
        },
        Case {
            name: "csum_blank on ARP",
            frame: blank(arp_request()),
            counter: |s| s.rx_drop_csum_blank,
        },
        Case {
            name: "wrong TCP checksum, no flags",
            frame: RxFrame::plain(bad_csum),
            counter: |s| s.rx_drop_csum,
        },
        Case {
            name: "extra slot at the ring's end, no data after it",
            frame: RxFrame {
                truncate_after_extras: true,
                ..RxFrame::gso(big.clone(), GsoKind::Tcpv4, 1448)
            },
            counter: |s| s.rx_drop_incomplete,
        },
    ]
}

#[test]
fn hostile_offload_metadata_is_dropped_and_counted_and_the_ring_stays_in_step() {
    let (_xen, be, mut nf) = connect(Opts::offloads(), cfg());
    let cases = hostile_cases();
    // Three rounds of mostly 18-slot frames: the ring wraps, so every consumed slot's buffer
    // (data, extra, or cut short) must have come back.
    let rounds = 3;
    for round in 0..rounds {
        for (i, c) in cases.iter().enumerate() {
            let before = (c.counter)(&nf.stats());
            be.inject_rx(0, c.frame.clone());
            poll_until(&mut nf, |s| (c.counter)(s) == before + 1);
            let good = tcp4(
                (round * 100 + i) as u32,
                Some(1),
                false,
                &[],
                &pattern(1000, i as u8),
            );
            be.inject(0, good.clone());
            let got = recv(&mut nf);
            assert!(got == good, "round {round}, after {}", c.name);
        }
    }
    let s = nf.stats();
    let n = (rounds * cases.len()) as u64;
    assert_eq!(s.rx_packets, n, "only the good frames");
    assert_eq!(s.rx_dropped(), n, "one drop per hostile frame: {s:?}");
    assert_eq!(s.rx_drop_bad_extra, 5 * rounds as u64);
    nf.close().expect("close");
    be.stop();
}

#[test]
fn offloads_the_frontend_did_not_negotiate_are_dropped() {
    let (_xen, be, mut nf) = connect(
        Opts::offloads(),
        FrontConfig {
            csum_offload: false,
            ..cfg()
        },
    );
    let small = partial(tcp4(1, Some(1), false, &[], &pattern(1000, 1)));
    be.inject_rx(0, blank(small.clone()));
    be.inject_rx(0, RxFrame::gso(small, GsoKind::Tcpv4, 536));
    poll_until(&mut nf, |s| s.rx_drop_not_negotiated == 2);
    // Plain frames go to smoltcp, which verifies them itself.
    let good = tcp4(1, Some(1), false, &[], &pattern(1000, 2));
    be.inject(0, good.clone());
    assert!(recv(&mut nf) == good);
    assert_eq!(nf.stats().rx_csum_verified, 0);
    nf.close().expect("close");
    be.stop();
}

#[test]
fn tx_tcp_leaves_with_csum_blank_and_the_pseudo_header_sum() {
    for opts in [Opts::default(), Opts::offloads()] {
        let ipv6_offload = opts.features.len() > Opts::default().features.len();
        // MTU 9000: the IPv4 frame takes two tx slots (the flags go on the first).
        let (_xen, be, mut nf) = connect(opts, FrontConfig { mtu: 9000, ..cfg() });
        // What smoltcp writes with TCP tx checksums off: the field is 0.
        let zeroed = |mut f: Vec<u8>| {
            let loc = offload::parse::locate(&f).expect("TCP");
            f[loc.csum_field()..loc.csum_field() + 2].fill(0);
            f
        };
        let v4 = tcp4(1, Some(1), false, &[], &pattern(3000, 1));
        let v6 = tcp6(&pattern(2000, 2));
        let arp = arp_request();
        send(&mut nf, &zeroed(v4.clone()));
        send(&mut nf, &zeroed(v6.clone()));
        send(&mut nf, &arp);
        let got = wait_frames(&be, 3);
        let flags = be.tx_flags();
        let both = NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
        // IPv4 TCP: csum_blank|data_validated and the pseudo-header sum, which the backend
        // completes to what etherparse computes.
        assert_eq!(flags[0], both);
        let (want, field) = tcp_checksums(&got[0].1);
        assert_eq!(
            field,
            pseudo_sum(&got[0].1),
            "the field holds the pseudo-header sum"
        );
        let mut done = got[0].1.clone();
        offload::csum::complete(&mut done).expect("completes");
        assert_eq!(tcp_checksums(&done), (want, want));
        assert!(done == v4);
        // IPv6 TCP: partial only if the backend takes IPv6 partial checksums.
        let (want6, field6) = tcp_checksums(&got[1].1);
        if ipv6_offload {
            assert_eq!((flags[1], field6), (both, pseudo_sum(&got[1].1)));
        } else {
            assert_eq!((flags[1], field6), (0, want6));
            assert!(got[1].1 == v6);
        }
        // Not TCP/UDP: as written, no flags.
        assert_eq!(flags[2], 0);
        assert!(got[2].1 == arp);
        let s = nf.stats();
        assert_eq!(s.tx_csum_blank, if ipv6_offload { 2 } else { 1 });
        assert_eq!(s.tx_csum_filled, if ipv6_offload { 0 } else { 1 });
        nf.close().expect("close");
        be.stop();
    }
}

#[test]
fn tx_without_checksum_offload_sends_frames_as_smoltcp_wrote_them() {
    let (xen, be, mut nf) = connect(
        Opts::offloads(),
        FrontConfig {
            csum_offload: false,
            mtu: 9000,
            ..cfg()
        },
    );
    let fe = nf.frontend_dir().to_string();
    assert_eq!(
        xen.xenstore()
            .read(&format!("{fe}/feature-no-csum-offload"))
            .expect("written"),
        "1"
    );
    let v4 = tcp4(1, Some(1), false, &[], &pattern(3000, 1));
    send(&mut nf, &v4);
    let got = wait_frames(&be, 1);
    assert_eq!(be.tx_flags()[0], 0);
    assert!(got[0].1 == v4);
    let (want, field) = tcp_checksums(&got[0].1);
    assert_eq!(want, field);
    assert_eq!(nf.stats().tx_csum_blank, 0);
    nf.close().expect("close");
    be.stop();
}

mod smoltcp_receiver {
    use super::*;
    use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
    use smoltcp::socket::tcp;
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

    struct Guest {
        nf: Netfront<DomainHandle>,
        iface: Interface,
        sockets: SocketSet<'static>,
        tcp: SocketHandle,
        clock: std::time::Instant,
    }

    impl Guest {
        fn new(nf: Netfront<DomainHandle>) -> Guest {
            let mut nf = nf;
            let mut c = Config::new(HardwareAddress::Ethernet(EthernetAddress(MAC_G)));
            c.random_seed = 7;
            let mut iface = Interface::new(c, &mut nf, Instant::ZERO);
            iface.update_ip_addrs(|a| {
                a.push(IpCidr::new(
                    IpAddress::v4(IP_G[0], IP_G[1], IP_G[2], IP_G[3]),
                    24,
                ))
                .expect("room");
            });
            let mut sockets = SocketSet::new(vec![]);
            let mut sock = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 256 * 1024]),
                tcp::SocketBuffer::new(vec![0; 16 * 1024]),
            );
            sock.listen(5000).expect("listen");
            let tcp = sockets.add(sock);
            Guest {
                nf,
                iface,
                sockets,
                tcp,
                clock: std::time::Instant::now(),
            }
        }

        /// Runs the stack until `done` (with the bytes read so far) holds.
        #[track_caller]
        fn run_until(&mut self, got: &mut Vec<u8>, done: impl Fn(&Self, &[u8]) -> bool) {
            for _ in 0..4000 {
                let now = Instant::from_micros(self.clock.elapsed().as_micros() as i64);
                self.iface.poll(now, &mut self.nf, &mut self.sockets);
                let s = self.sockets.get_mut::<tcp::Socket<'_>>(self.tcp);
                while s.can_recv() {
                    let n = s
                        .recv(|b| {
                            got.extend_from_slice(b);
                            (b.len(), b.len())
                        })
                        .expect("recv");
                    if n == 0 {
                        break;
                    }
                }
                self.nf.poll().expect("poll");
                if done(self, got) {
                    return;
                }
                self.nf.wait(Some(Duration::from_millis(1))).expect("wait");
            }
            panic!("stack did not get there: {:?}", self.nf.stats());
        }
    }

    /// The TCP segments the guest sent, parsed: (seq, ack, syn, frame index).
    fn guest_segments(be: &TestBackend) -> Vec<(u32, u32, bool, usize)> {
        be.frames()
            .iter()
            .enumerate()
            .filter_map(|(i, (_, f))| {
                let p = SlicedPacket::from_ethernet(f).ok()?;
                match p.transport {
                    Some(TransportSlice::Tcp(t)) => {
                        Some((t.sequence_number(), t.acknowledgment_number(), t.syn(), i))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    #[test]
    fn smoltcp_receiver_acks_a_64k_gso_super_frame() {
        let (_xen, be, nf) = connect(Opts::offloads(), cfg());
        let mut g = Guest::new(nf);
        let mut got = Vec::new();
        // ARP first: smoltcp learns the peer's MAC from a request aimed at it.
        be.inject(0, arp_request());
        g.run_until(&mut got, |_, _| !be.frames().is_empty());
        let peer_isn = 1000u32;
        be.inject(
            0,
            tcp4(
                peer_isn,
                None,
                true,
                &[
                    TcpOptionElement::MaximumSegmentSize(1460),
                    TcpOptionElement::WindowScale(7),
                ],
                &[],
            ),
        );
        g.run_until(&mut got, |_, _| guest_segments(&be).iter().any(|s| s.2));
        let (isn, ack, _, i) = guest_segments(&be)
            .into_iter()
            .find(|s| s.2)
            .expect("SYN-ACK");
        assert_eq!(ack, peer_isn + 1);
        // smoltcp's SYN-ACK left with csum_blank|data_validated and the pseudo-header sum,
        // which completes to the checksum etherparse computes.
        assert_eq!(be.tx_flags()[i], NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED);
        let synack = be.frames()[i].1.clone();
        let (want, field) = tcp_checksums(&synack);
        assert_eq!(field, pseudo_sum(&synack));
        let mut done = synack.clone();
        offload::csum::complete(&mut done).expect("completes");
        assert_eq!(tcp_checksums(&done), (want, want));

        be.inject(0, tcp4(peer_isn + 1, Some(isn + 1), false, &[], &[]));
        let payload = pattern(MAX_V4_PAYLOAD, 42);
        let sf = partial(tcp4(peer_isn + 1, Some(isn + 1), false, &[], &payload));
        assert_eq!(sf.len(), 65549);
        be.inject_rx(0, RxFrame::gso(sf, GsoKind::Tcpv4, 1448));
        let end = peer_isn + 1 + payload.len() as u32;
        g.run_until(&mut got, |_, got| {
            got.len() >= payload.len() && guest_segments(&be).iter().any(|s| s.1 == end)
        });
        assert_eq!(got.len(), payload.len());
        assert!(got == payload, "the super-frame's bytes reached the socket");
        let s = g.nf.stats();
        assert_eq!(s.rx_gso, 1);
        assert!(s.rx_csum_verified >= 2, "SYN and ACK came plain: {s:?}");
        assert_eq!(s.rx_dropped(), 0);

        // A plain segment with a wrong checksum is dropped by netfront (smoltcp's TCP
        // verification is off), so the socket never sees it.
        let mut bad = tcp4(end, Some(isn + 1), false, &[], &pattern(100, 1));
        bad[60] ^= 0x10;
        be.inject(0, bad);
        g.run_until(&mut got, |g, _| g.nf.stats().rx_drop_csum == 1);
        g.run_until(&mut got, |_, _| true);
        assert_eq!(got.len(), payload.len());
        drop((g.iface, g.sockets));
        g.nf.close().expect("close");
        be.stop();
    }
}

/// A hash extra-info slot (Toeplitz, type `t`, value `v`) and an XDP one (headroom `h`).
fn hash_extra(t: u8, v: u32, more: bool) -> ExtraInfo {
    netif_ring::netif::ExtraRepr::Hash {
        hash_type: t,
        algorithm: 1,
        value: v.to_le_bytes(),
    }
    .emit(more)
}

fn xdp_extra(h: u16) -> ExtraInfo {
    netif_ring::netif::ExtraRepr::Xdp { headroom: h }.emit(false)
}

#[test]
fn hash_extras_are_recorded_and_counted_and_frames_arrive_whole() {
    let (_xen, be, mut nf) = connect(Opts::offloads(), cfg());
    let f = tcp4(1, Some(1), false, &[], &pattern(1200, 3));
    be.inject_rx(
        0,
        RxFrame {
            extras: vec![hash_extra(1, 0x51cc_c178, false)],
            ..RxFrame::plain(f.clone())
        },
    );
    assert_eq!(recv(&mut nf), f);
    assert_eq!(nf.last_rx(), Some((0, Some((0x51cc_c178, 1)))));
    // Behind a GSO slot, as Linux's netback orders them.
    let big = partial(tcp4(2, Some(1), false, &[], &pattern(20_000, 4)));
    let mut gso = RxFrame::gso(big.clone(), GsoKind::Tcpv4, 1448);
    gso.extras[0].flags = XEN_NETIF_EXTRA_FLAG_MORE;
    gso.extras.push(hash_extra(1, 7, false));
    be.inject_rx(0, gso);
    assert_eq!(recv(&mut nf), big);
    assert_eq!(nf.last_rx(), Some((0, Some((7, 1)))));
    // A frame without one has none.
    let plain = tcp4(3, Some(1), false, &[], &pattern(100, 5));
    be.inject_rx(0, RxFrame::plain(plain.clone()));
    assert_eq!(recv(&mut nf), plain);
    assert_eq!(nf.last_rx(), Some((0, None)));
    let s = nf.stats();
    assert_eq!((s.rx_hash, s.rx_packets, s.rx_dropped()), (2, 3, 0));
    // Two hash slots on one frame is a backend bug: dropped and counted.
    be.inject_rx(
        0,
        RxFrame {
            extras: vec![hash_extra(1, 1, true), hash_extra(1, 2, false)],
            ..RxFrame::plain(plain.clone())
        },
    );
    poll_until(&mut nf, |s| s.rx_drop_bad_extra == 1);
}

#[test]
fn data_after_a_headroom_arrives_whole_as_this_backend_and_as_linux_lay_it_out() {
    let jumbo = FrontConfig { mtu: 9000, ..cfg() };
    let (_xen, be, mut nf) = connect(Opts::offloads(), jumbo);
    for linux in [false, true] {
        // One slot, and (this backend's way) three slots of 3840 bytes.
        for len in [1000, 9000] {
            if linux && len > 4096 - 256 {
                // Linux's netfront drops multi-slot frames under XDP; its netback's later
                // slots are not laid out for anyone to read.
                continue;
            }
            let mut f = pattern(len, len as u8);
            f[12..14].copy_from_slice(&[0x88, 0xb5]);
            be.inject_rx(
                0,
                RxFrame {
                    extras: vec![xdp_extra(256)],
                    headroom: 256,
                    linux_headroom: linux,
                    ..RxFrame::plain(f.clone())
                },
            );
            assert_eq!(recv(&mut nf), f, "linux layout {linux}, {len} bytes");
        }
    }
    let s = nf.stats();
    assert_eq!((s.rx_xdp, s.rx_dropped()), (3, 0));
}
