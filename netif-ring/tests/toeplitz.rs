//! `toeplitz_hash` against the published RSS verification suite: Microsoft's "Verifying the RSS
//! Hash Calculation" (the same table is Intel 82599's datasheet section 7.1.2.8.3 and DPDK's
//! `test_thash.c`), with its standard 40-byte key. The input layouts are netif.h's (and Linux
//! netback's `xenvif_set_skb_hash`): source address, destination address, then for the TCP types
//! source port and destination port, all in network byte order.

use std::net::{Ipv4Addr, Ipv6Addr};

use netif_ring::ctrl::toeplitz_hash;

const KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// (destination, destination port, source, source port, IPv4 only, IPv4 with TCP).
const IPV4: [(&str, u16, &str, u16, u32, u32); 5] = [
    (
        "161.142.100.80",
        1766,
        "66.9.149.187",
        2794,
        0x323e8fc2,
        0x51ccc178,
    ),
    (
        "65.69.140.83",
        4739,
        "199.92.111.2",
        14230,
        0xd718262a,
        0xc626b0ea,
    ),
    (
        "12.22.207.184",
        38024,
        "24.19.198.95",
        12898,
        0xd2d0a5de,
        0x5c2b394a,
    ),
    (
        "209.142.163.6",
        2217,
        "38.27.205.30",
        48228,
        0x82989176,
        0xafc7327f,
    ),
    (
        "202.188.127.2",
        1303,
        "153.39.163.191",
        44251,
        0x5d1809c5,
        0x10e828a2,
    ),
];

/// (destination, destination port, source, source port, IPv6 only, IPv6 with TCP).
const IPV6: [(&str, u16, &str, u16, u32, u32); 3] = [
    (
        "3ffe:2501:200:3::1",
        1766,
        "3ffe:2501:200:1fff::7",
        2794,
        0x2cc18cd5,
        0x40207d3d,
    ),
    (
        "ff02::1",
        4739,
        "3ffe:501:8::260:97ff:fe40:efab",
        14230,
        0x0f0c461c,
        0xdde51bbf,
    ),
    (
        "fe80::200:f8ff:fe21:67cf",
        38024,
        "3ffe:1900:4545:3:200:f8ff:fe21:67cf",
        44251,
        0x4b61e985,
        0x02d1feef,
    ),
];

/// netif.h's input: source address, destination address[, source port, destination port].
fn input(src: &[u8], dst: &[u8], ports: Option<(u16, u16)>) -> Vec<u8> {
    let mut v = [src, dst].concat();
    if let Some((sp, dp)) = ports {
        v.extend_from_slice(&sp.to_be_bytes());
        v.extend_from_slice(&dp.to_be_bytes());
    }
    v
}

#[test]
fn ipv4_vectors_with_and_without_ports() {
    for (dst, dport, src, sport, ip, tcp) in IPV4 {
        let (d, s) = (
            dst.parse::<Ipv4Addr>().unwrap().octets(),
            src.parse::<Ipv4Addr>().unwrap().octets(),
        );
        let two = input(&s, &d, None);
        assert_eq!(two.len(), 8);
        assert_eq!(toeplitz_hash(&KEY, &two), ip, "{src} -> {dst}");
        let four = input(&s, &d, Some((sport, dport)));
        assert_eq!(four.len(), 12);
        assert_eq!(
            toeplitz_hash(&KEY, &four),
            tcp,
            "{src}:{sport} -> {dst}:{dport}"
        );
    }
}

#[test]
fn ipv6_vectors_with_and_without_ports() {
    for (dst, dport, src, sport, ip, tcp) in IPV6 {
        let (d, s) = (
            dst.parse::<Ipv6Addr>().unwrap().octets(),
            src.parse::<Ipv6Addr>().unwrap().octets(),
        );
        let two = input(&s, &d, None);
        assert_eq!(two.len(), 32);
        assert_eq!(toeplitz_hash(&KEY, &two), ip, "{src} -> {dst}");
        let four = input(&s, &d, Some((sport, dport)));
        assert_eq!(four.len(), 36);
        assert_eq!(
            toeplitz_hash(&KEY, &four),
            tcp,
            "[{src}]:{sport} -> [{dst}]:{dport}"
        );
    }
}

#[test]
fn a_key_shorter_than_the_input_reads_as_zero_padded() {
    // netif.h: key bytes past its length are zeros, so a 40-byte key and the same key padded
    // with zeros hash alike, and an all-zero key hashes everything to 0.
    let data = [0xa5u8; 36];
    let mut padded = KEY.to_vec();
    padded.extend_from_slice(&[0; 24]);
    assert_eq!(toeplitz_hash(&KEY, &data), toeplitz_hash(&padded, &data));
    assert_eq!(toeplitz_hash(&[0; 40], &data), 0);
}
