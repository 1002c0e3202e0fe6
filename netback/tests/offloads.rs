//! Checksum offload and GSO through netback, as Linux netback does them: partial checksums from
//! a guest (`NETTXF_csum_blank`) pass through to a frontend that takes them and are completed
//! for one that does not; a TCP super-frame is delivered with Linux's exact rx layout to a
//! frontend that negotiated GSO and cut into segments for one that did not; offload metadata
//! that does not match the headers drops the packet after answering it OK.

use etherparse::PacketBuilder;
use netback::{Config, FrontendOffloads};
use netif_ring::netif::{
    ExtraRepr, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETTXF_CSUM_BLANK,
    NETTXF_DATA_VALIDATED, XEN_NETIF_GSO_TYPE_TCPV4,
};
use offload::csum;
use testkit::{Guest, Nb, RawFront, RxFrame, Scene};

const A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// A TCP (or UDP) frame from A to B over IPv4 or IPv6, its checksum complete.
fn frame(v6: bool, udp: bool, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(A_MAC, B_MAC);
    let ip = if v6 {
        eth.ipv6([0xfe; 16], [0xfd; 16], 64)
    } else {
        eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
    };
    let mut out = Vec::new();
    if udp {
        let b = ip.udp(4000, 5000);
        out.reserve(b.size(payload.len()));
        b.write(&mut out, payload).unwrap();
    } else {
        let b = ip
            .tcp(4000, 5201, 1_000_000, 65535)
            .ack(77)
            .psh()
            .options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
            .unwrap();
        out.reserve(b.size(payload.len()));
        b.write(&mut out, payload).unwrap();
    }
    out
}

/// The frame with only the pseudo-header sum in its checksum field, as Linux netfront sends.
fn partial(full: &[u8]) -> Vec<u8> {
    let mut f = full.to_vec();
    csum::set_partial(&mut f).unwrap();
    f
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

/// A sender A and a receiver B taking `b` on its rx ring.
fn pair(b: FrontendOffloads) -> (Nb, RawFront, RawFront, xen_model::Hypervisor) {
    let mut s = Scene::new(Config::default());
    let a = s.front(Guest::mac(1));
    let mut rb = s.front(Guest {
        offload: b,
        ..Guest::mac(2)
    });
    rb.post_rx(64);
    // B announces its MAC so frames to it are unicast.
    let mut hello = frame(false, true, b"hello");
    hello[..6].copy_from_slice(&[0xff; 6]);
    hello[6..12].copy_from_slice(&B_MAC);
    rb.send(&hello);
    s.nb.poll().unwrap();
    rb.reap_tx();
    (s.nb, a, rb, s.xen)
}

fn one(frames: Vec<RxFrame>) -> RxFrame {
    assert_eq!(frames.len(), 1, "{frames:?}");
    frames.into_iter().next().unwrap()
}

#[test]
fn partial_checksums_are_completed_for_a_frontend_that_wants_them_whole() {
    let whole = FrontendOffloads {
        sg: true,
        ..FrontendOffloads::default()
    };
    for (v6, udp) in [(false, false), (true, false), (false, true), (true, true)] {
        let (mut nb, mut a, mut b, _xen) = pair(whole);
        let full = frame(v6, udp, &payload(1000));
        a.send_with(
            &partial(&full),
            NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
            None,
        );
        nb.poll().unwrap();
        a.reap_tx();
        assert!(a.tx_responses.iter().all(|r| r.status == NETIF_RSP_OKAY));
        let got = one(b.recv_meta());
        assert_eq!(
            got.data, full,
            "v6 {v6} udp {udp}: completed to etherparse's checksum"
        );
        assert_eq!(
            got.first_flags, NETRXF_DATA_VALIDATED,
            "validated, no longer blank"
        );
    }
}

#[test]
fn partial_checksums_pass_through_to_a_frontend_that_takes_them() {
    let (mut nb, mut a, mut b, _xen) = pair(FrontendOffloads::ALL);
    for v6 in [false, true] {
        let p = partial(&frame(v6, false, &payload(1400)));
        a.send_with(&p, NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, None);
        nb.poll().unwrap();
        let got = one(b.recv_meta());
        assert_eq!(got.data, p, "handed on untouched");
        assert_eq!(got.first_flags, NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED);
        b.post_rx(4);
    }
    // Only IPv4 checksum offload negotiated: an IPv6 partial checksum is completed.
    let (mut nb, mut a, mut b, _xen) = pair(FrontendOffloads {
        ipv6_csum: false,
        ..FrontendOffloads::ALL
    });
    let full = frame(true, false, &payload(700));
    a.send_with(
        &partial(&full),
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
        None,
    );
    nb.poll().unwrap();
    assert_eq!(one(b.recv_meta()).data, full);
}

/// The 65 226-byte TCPv4 super-frame of Linux's example: 45 segments of MSS 1448 behind 66
/// bytes of headers (TCP with a timestamp option), partial checksum.
fn super_frame() -> (Vec<u8>, netif_ring::netif::ExtraInfo) {
    let f = partial(&frame(false, false, &payload(45 * 1448)));
    assert_eq!(f.len(), 65_226);
    let gso = ExtraRepr::Gso {
        size: 1448,
        gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
        features: 0,
    }
    .emit(false);
    (f, gso)
}

#[test]
fn a_super_frame_is_laid_out_exactly_as_linux_netback_does() {
    let (mut nb, mut a, mut b, _xen) = pair(FrontendOffloads::ALL);
    let (f, gso) = super_frame();
    a.send_with(&f, NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, Some(gso));
    nb.poll().unwrap();
    a.reap_tx();
    assert!(
        a.tx_responses.iter().all(|r| r.status >= 0),
        "{:?}",
        a.tx_responses
    );
    let got = one(b.recv_meta());
    assert_eq!(
        got.first_flags, 0x0F,
        "more_data|extra_info|csum_blank|data_validated"
    );
    assert_eq!(
        got.extra,
        Some([0x01, 0x00, 0xa8, 0x05, 0x01, 0x00, 0x00, 0x00]),
        "type GSO, flags 0, size 1448, TCPv4, pad, features 0"
    );
    assert_eq!(got.slots, 16, "16 data slots");
    assert_eq!(got.data, f, "byte-exact");
    let st = nb.vif_stats(b.id()).unwrap();
    assert_eq!((st.rx_gso_frames, st.rx_packets), (1, 1), "{st:?}");
    assert_eq!(
        st.grant_ops,
        1 + 16,
        "its hello, then one copy per data slot, none for the extra"
    );
    assert_eq!(nb.vif_stats(a.id()).unwrap().tx_gso_frames, 1);
}

#[test]
fn a_super_frame_is_segmented_for_a_frontend_without_gso() {
    let (mut nb, mut a, mut b, _xen) = pair(FrontendOffloads {
        sg: true,
        ..FrontendOffloads::default()
    });
    b.post_rx(64);
    let (f, gso) = super_frame();
    a.send_with(&f, NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, Some(gso));
    nb.poll().unwrap();
    let mut segs = b.recv_meta();
    while segs.len() < 45 {
        nb.poll().unwrap();
        b.post_rx(64);
        nb.poll().unwrap();
        let more = b.recv_meta();
        assert!(!more.is_empty(), "segments stopped after {}", segs.len());
        segs.extend(more);
    }
    assert_eq!(segs.len(), 45);
    let mut joined = Vec::new();
    for s in &segs {
        assert!(csum::verify(&s.data), "each segment's checksum is complete");
        assert_eq!(s.first_flags & NETRXF_CSUM_BLANK, 0);
        assert!(s.extra.is_none());
        let p = etherparse::SlicedPacket::from_ethernet(&s.data).unwrap();
        let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("a TCP segment");
        };
        joined.extend_from_slice(tcp.payload());
    }
    assert_eq!(
        joined,
        payload(45 * 1448),
        "payloads concatenate to the original"
    );
}

#[test]
fn a_super_frame_sent_without_csum_blank_gets_its_pseudo_header_sum() {
    let (mut nb, mut a, mut b, _xen) = pair(FrontendOffloads::ALL);
    let (f, gso) = super_frame();
    // A frontend that sent GSO with a stale checksum and no csum_blank (netback's fixup case).
    let mut stale = f.clone();
    stale[50] ^= 0x5a;
    a.send_with(&stale, 0, Some(gso));
    nb.poll().unwrap();
    let got = one(b.recv_meta());
    assert_eq!(got.data, f, "the field holds the pseudo-header sum again");
    assert_eq!(
        got.first_flags & 0x3,
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
    );
}

#[test]
fn offload_metadata_that_does_not_match_is_answered_ok_and_dropped() {
    let (mut nb, mut a, mut b, _xen) = pair(FrontendOffloads::ALL);
    // csum_blank on an ARP frame (not TCP/UDP).
    let mut arp = vec![0u8; 60];
    arp[..6].copy_from_slice(&B_MAC);
    arp[6..12].copy_from_slice(&A_MAC);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    a.send_with(&arp, NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, None);
    // A TCPv4 GSO slot on an IPv6 frame.
    let (_, gso) = super_frame();
    let v6 = partial(&frame(true, false, &payload(3000)));
    a.send_with(&v6, NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, Some(gso));
    nb.poll().unwrap();
    a.reap_tx();
    assert!(
        a.tx_responses
            .iter()
            .filter(|r| r.status != netif_ring::netif::NETIF_RSP_NULL)
            .all(|r| r.status == NETIF_RSP_OKAY),
        "answered OK, as Linux does: {:?}",
        a.tx_responses
    );
    let st = nb.vif_stats(a.id()).unwrap();
    assert_eq!(st.tx_csum_errors, 2, "{st:?}");
    assert!(st.fatal.is_none());
    assert!(b.recv_meta().is_empty(), "nothing delivered");
}
