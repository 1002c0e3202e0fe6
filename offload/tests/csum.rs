//! Checksum offload against etherparse-computed checksums.

mod common;

use common::*;
use offload::csum;
use offload::parse::{self, L3Kind, L4Kind};
use offload::{Error, csum::Checksum};

fn field(frame: &[u8]) -> u16 {
    let loc = parse::locate(frame).expect("locatable");
    u16::from_be_bytes([frame[loc.csum_field()], frame[loc.csum_field() + 1]])
}

/// Blanks the checksum field to the pseudo-header sum (what a partial sender leaves), completes
/// it, and checks the result is etherparse's checksum.
#[track_caller]
fn partial_then_complete_restores(frame: &[u8]) {
    let want = field(frame);
    let mut f = frame.to_vec();
    let loc = csum::set_partial(&mut f).expect("set_partial");
    assert_ne!(field(&f), want, "set_partial must change the field");
    assert_eq!(
        field(&f),
        csum::pseudo(&f, &loc, loc.l4_len()).sum(),
        "field holds the folded pseudo-header sum"
    );
    csum::complete(&mut f).expect("complete");
    assert_eq!(field(&f), want, "completed checksum equals etherparse's");
    assert_eq!(f, frame, "nothing else changed");
}

#[test]
fn completes_tcp_over_ipv4() {
    for len in [0, 1, 7, 1448, 1449] {
        let frame = Tcp {
            payload: pattern(len, 3),
            ..Tcp::default()
        }
        .frame();
        partial_then_complete_restores(&frame);
    }
}

#[test]
fn completes_tcp_over_ipv4_with_ip_options_and_vlan_tag() {
    let frame = Tcp {
        ipv4_options: vec![1, 1, 1, 0], // NOP NOP NOP EOL
        payload: pattern(333, 1),
        ..Tcp::default()
    }
    .frame();
    let loc = parse::locate(&frame).expect("locatable");
    assert_eq!(loc.csum_start, 14 + 24);
    partial_then_complete_restores(&frame);

    let mut tagged = frame[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    tagged.extend_from_slice(&frame[12..]);
    assert_eq!(parse::locate(&tagged).expect("tagged").csum_start, 18 + 24);
    partial_then_complete_restores(&tagged);
}

#[test]
fn completes_udp_over_ipv4() {
    for len in [0, 1, 2, 513] {
        partial_then_complete_restores(&udp_v4(&pattern(len, 9)));
    }
}

#[test]
fn completes_tcp_and_udp_over_ipv6_behind_extension_headers() {
    for ext in [0u8, 60] {
        let tcp = v6_with_ext(ext, 0, 6, &tcp_l4_v6(&pattern(1001, 2)));
        let loc = parse::locate(&tcp).expect("locatable");
        assert_eq!(
            (loc.l3, loc.l4, loc.csum_start),
            (L3Kind::Ipv6, L4Kind::Tcp, 14 + 48)
        );
        partial_then_complete_restores(&tcp);

        let udp = v6_with_ext(ext, 0, 17, &udp_l4_v6(&pattern(77, 5)));
        let loc = parse::locate(&udp).expect("locatable");
        assert_eq!((loc.l4, loc.csum_offset), (L4Kind::Udp, 6));
        partial_then_complete_restores(&udp);
    }
    let plain = Tcp {
        v6: true,
        ..Tcp::default()
    }
    .frame();
    partial_then_complete_restores(&plain);
}

#[test]
fn ipv6_fragment_is_not_checksummable_but_an_atomic_fragment_header_is_walked() {
    let l4 = udp_l4_v6(&pattern(40, 0));
    // More-fragments set.
    let frag = v6_with_ext(44, 0x0001, 17, &l4);
    assert_eq!(parse::locate(&frag), Err(Error::Fragment));
    assert!(!csum::verify(&frag));
    // Offset 0, M clear: a whole packet behind a fragment header (RFC 6946).
    let atomic = v6_with_ext(44, 0, 17, &l4);
    assert_eq!(parse::locate(&atomic).expect("atomic").csum_start, 14 + 48);
    partial_then_complete_restores(&atomic);
}

#[test]
fn odd_chunk_splits_complete_to_the_same_checksum() {
    let frame = Tcp {
        payload: pattern(5000, 4),
        ..Tcp::default()
    }
    .frame();
    let want = field(&frame);
    let mut blank = frame.clone();
    let loc = csum::set_partial(&mut blank).expect("set_partial");
    // Page-like chunks at odd boundaries, one splitting the checksum field itself.
    for cuts in [
        vec![51usize, 4096, 4097],
        vec![1, 2, 3, 1001, 3333],
        vec![loc.csum_field() + 1, 999],
    ] {
        let mut f = blank.clone();
        let mut rest: &mut [u8] = &mut f;
        let mut chunks: Vec<&mut [u8]> = Vec::new();
        let mut at = 0;
        for c in cuts {
            let (a, b) = rest.split_at_mut(c - at);
            chunks.push(a);
            rest = b;
            at = c;
        }
        chunks.push(rest);
        let sum = csum::sum_chunks(chunks.iter().map(|c| &**c), loc.csum_start..loc.ip_end);
        assert_eq!(
            sum.sum(),
            Checksum::new()
                .add(&blank[loc.csum_start..loc.ip_end])
                .sum()
        );
        csum::complete_chunks(&mut chunks, loc.csum_start, loc.csum_offset, loc.ip_end)
            .expect("complete_chunks");
        assert_eq!(field(&f), want);
        assert_eq!(f, frame);
    }
}

#[test]
fn udp_checksum_that_computes_to_zero_is_sent_as_ffff() {
    // Choose the last payload word so the checksum computes to 0.
    let mut payload = pattern(64, 8);
    payload[62] = 0;
    payload[63] = 0;
    let c0 = field(&udp_v4(&payload));
    payload[62..64].copy_from_slice(&c0.to_be_bytes());
    let frame = udp_v4(&payload);
    assert_eq!(field(&frame), 0xFFFF, "etherparse sends 0 as 0xFFFF too");
    let mut f = frame.clone();
    csum::set_partial(&mut f).expect("set_partial");
    csum::complete(&mut f).expect("complete");
    assert_eq!(field(&f), 0xFFFF);
    assert!(csum::verify(&f));
}

#[test]
fn verify_accepts_good_and_rejects_a_flipped_byte() {
    let frames = [
        Tcp::default().frame(),
        Tcp {
            v6: true,
            ..Tcp::default()
        }
        .frame(),
        udp_v4(&pattern(99, 1)),
        v6_with_ext(0, 0, 17, &udp_l4_v6(&pattern(31, 2))),
    ];
    for frame in frames {
        assert!(csum::verify(&frame));
        let loc = parse::locate(&frame).expect("locatable");
        for at in [loc.csum_start + 1, loc.csum_field(), loc.ip_end - 1] {
            let mut bad = frame.clone();
            bad[at] ^= 0x40;
            assert!(!csum::verify(&bad), "flipped byte {at} accepted");
        }
        assert!(
            !csum::verify(&frame[..frame.len() - 1]),
            "truncated frame accepted"
        );
    }
}

#[test]
fn udp_zero_checksum_means_none_over_ipv4_only() {
    let mut v4 = udp_v4(&pattern(20, 0));
    let at = parse::locate(&v4).expect("udp").csum_field();
    v4[at..at + 2].fill(0);
    assert!(csum::verify(&v4));
    let mut v6 = v6_with_ext(60, 0, 17, &udp_l4_v6(&pattern(20, 0)));
    let at = parse::locate(&v6).expect("udp").csum_field();
    v6[at..at + 2].fill(0);
    assert!(!csum::verify(&v6));
}

#[test]
fn ethernet_padding_is_not_summed() {
    let frame = udp_v4(&[1, 2, 3]);
    assert!(frame.len() < 60);
    let mut padded = frame.clone();
    padded.resize(60, 0xAA);
    assert!(csum::verify(&padded));
    let mut p = padded.clone();
    csum::set_partial(&mut p).expect("set_partial");
    csum::complete(&mut p).expect("complete");
    assert_eq!(p, padded);
}

#[test]
fn not_tcp_udp_and_truncated_frames_are_errors() {
    let mut icmp = udp_v4(&[0; 8]);
    icmp[14 + 9] = 1;
    assert_eq!(
        csum::set_partial(&mut icmp),
        Err(Error::NotTcpUdp { proto: 1 })
    );
    let arp = [0u8; 42];
    let mut arp = arp.to_vec();
    arp[12] = 0x08;
    arp[13] = 0x06;
    assert_eq!(parse::locate(&arp), Err(Error::NotIp { ethertype: 0x0806 }));
    let mut f = Tcp::default().frame();
    let n = f.len();
    assert!(matches!(
        csum::complete(&mut f[..n - 1]),
        Err(Error::Truncated { .. })
    ));
}
