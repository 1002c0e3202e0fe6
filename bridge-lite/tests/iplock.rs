//! IP anti-spoofing (`Bridge::set_port_ips`): what a guest with configured addresses may send,
//! what is dropped and under which counter, and that ports without an IP lock are unaffected.
//! Frames are built with etherparse; the switch does not verify checksums, so frames patched by
//! hand (extension headers, odd fields) keep stale ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use bridge_lite::{
    Bridge, BridgeConfig, BridgeError, DropReason, Frame, IpLockOptions, MacAddr, Output, PortId,
    PortKind,
};
use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder, VlanId};
use proptest::prelude::*;

const GUEST_MAC: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0x00, 0x00, 0x05]);
const OTHER_MAC: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0x00, 0x00, 0x09]);
const REMOTE_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);

const GUEST_V4: [u8; 4] = [10, 0, 0, 5];
const GUEST_V4_2: [u8; 4] = [192, 0, 2, 5];
const FOREIGN_V4: [u8; 4] = [10, 0, 0, 6];
const REMOTE_V4: [u8; 4] = [10, 0, 0, 1];
const ZERO_V4: [u8; 4] = [0; 4];

const GUEST_V6: [u8; 16] = v6(0x2001_0db8_0000_0000_0000_0000_0000_0005);
const FOREIGN_V6: [u8; 16] = v6(0x2001_0db8_0000_0000_0000_0000_0000_0006);
const REMOTE_V6: [u8; 16] = v6(0x2001_0db8_0000_0000_0000_0000_0000_0001);
/// The guest's link-local address (any: the switch does not know it).
const GUEST_LL: [u8; 16] = v6(0xfe80_0000_0000_0000_1234_5678_9abc_def0);
/// Another host's link-local address (the router's, typically).
const ROUTER_LL: [u8; 16] = v6(0xfe80_0000_0000_0000_0000_0000_0000_0001);
const UNSPECIFIED_V6: [u8; 16] = [0; 16];
const ALL_NODES: [u8; 16] = v6(0xff02_0000_0000_0000_0000_0000_0000_0001);

const fn v6(a: u128) -> [u8; 16] {
    a.to_be_bytes()
}

fn guest_ips() -> Vec<IpAddr> {
    vec![
        Ipv4Addr::from(GUEST_V4).into(),
        Ipv4Addr::from(GUEST_V4_2).into(),
        Ipv6Addr::from(GUEST_V6).into(),
    ]
}

struct Rig {
    br: Bridge,
    uplink: PortId,
    /// MAC-locked to GUEST_MAC and IP-locked to `guest_ips()`.
    guest: PortId,
    /// Neither MAC- nor IP-locked.
    open: PortId,
}

fn rig() -> Rig {
    let mut br = Bridge::new(BridgeConfig {
        hash_seed: Some(3),
        ..BridgeConfig::default()
    })
    .unwrap();
    let uplink = br.add_port(PortKind::Uplink).unwrap();
    let guest = br
        .add_port(PortKind::Vif {
            domid: 1,
            handle: 0,
        })
        .unwrap();
    let open = br
        .add_port(PortKind::Vif {
            domid: 2,
            handle: 0,
        })
        .unwrap();
    // What netback does with the toolstack's `mac` and `ip` keys.
    br.add_static(GUEST_MAC, guest).unwrap();
    br.set_port_locked(guest, true).unwrap();
    br.set_port_ips(guest, &guest_ips()).unwrap();
    Rig {
        br,
        uplink,
        guest,
        open,
    }
}

/// Forwards one frame from `port`; returns the drop reason, or `None` when it left the switch.
#[track_caller]
fn verdict<H: Frame>(br: &mut Bridge, port: PortId, frame: H) -> Option<DropReason> {
    let before = br.port_stats(port).unwrap().drops;
    let mut out = Output::new();
    br.forward(port, &mut vec![frame], Duration::ZERO, &mut out)
        .unwrap();
    let after = br.port_stats(port).unwrap().drops;
    let reasons: Vec<DropReason> = DropReason::ALL
        .into_iter()
        .filter(|&r| after.get(r) != before.get(r))
        .collect();
    match reasons[..] {
        [] => {
            assert!(!out.is_empty(), "neither forwarded nor counted as dropped");
            None
        }
        [r] => {
            assert!(out.is_empty(), "counted as {r:?} and forwarded");
            Some(r)
        }
        _ => panic!("one frame counted under {reasons:?}"),
    }
}

#[track_caller]
fn from_guest(r: &mut Rig, frame: Vec<u8>) -> Option<DropReason> {
    verdict(&mut r.br, r.guest, Arc::<[u8]>::from(frame))
}

fn build(b: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    b(&mut v);
    v
}

fn udp4(mac: MacAddr, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(mac.0, REMOTE_MAC.0)
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(v, &[0; 18])
            .unwrap()
    })
}

fn ipv4(src: [u8; 4]) -> Vec<u8> {
    udp4(GUEST_MAC, src, REMOTE_V4, 5000, 53)
}

fn arp(frame_src: MacAddr, sha: MacAddr, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(frame_src.0, MacAddr::BROADCAST.0)
            .arp(
                ArpPacket::new(
                    ArpHardwareId::ETHERNET,
                    EtherType::IPV4,
                    ArpOperation::REQUEST,
                    &sha.0,
                    &spa,
                    &[0; 6],
                    &tpa,
                )
                .unwrap(),
            )
            .write(v)
            .unwrap()
    })
}

fn udp6(src: [u8; 16]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(GUEST_MAC.0, REMOTE_MAC.0)
            .ipv6(src, REMOTE_V6, 64)
            .udp(5000, 53)
            .write(v, &[0; 8])
            .unwrap()
    })
}

/// An ICMPv6 message: type, the 4 bytes after the checksum, and the body after them.
fn icmp6(src: [u8; 16], dst: [u8; 16], ty: u8, word: [u8; 4], body: &[u8]) -> Vec<u8> {
    build(|v| {
        PacketBuilder::ethernet2(GUEST_MAC.0, [0x33, 0x33, 0, 0, 0, 1])
            .ipv6(src, dst, 255)
            .icmpv6_raw(ty, 0, word)
            .write(v, body)
            .unwrap()
    })
}

/// Neighbour Advertisement for `target` (solicited, override) with a target link-layer option.
fn na(src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let mut body = target.to_vec();
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&GUEST_MAC.0);
    icmp6(src, ALL_NODES, 136, [0x60, 0, 0, 0], &body)
}

/// Neighbour Solicitation for `target`.
fn ns(src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let dst = v6(0xff02_0000_0000_0000_0000_0001_ff00_0000 | u128::from(target[15]));
    icmp6(src, dst, 135, [0; 4], &target)
}

/// Router Advertisement: hop limit 64, router lifetime 1800 s.
fn ra(src: [u8; 16]) -> Vec<u8> {
    icmp6(src, ALL_NODES, 134, [64, 0, 0x07, 0x08], &[0; 8])
}

/// Inserts an 8-byte IPv6 extension header of type `ext` (hop-by-hop, destination options)
/// between the fixed header and the payload.
fn with_ext_header(mut f: Vec<u8>, ext: u8) -> Vec<u8> {
    let next = f[20];
    f[20] = ext;
    let plen = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    // Next header, length 0 (8 bytes), a PadN option of 4 bytes.
    f.splice(54..54, [next, 0, 1, 4, 0, 0, 0, 0]);
    f
}

/// A VLAN-tagged IPv4 frame from the guest's own address.
fn tagged(tpid: u16) -> Vec<u8> {
    let mut f = build(|v| {
        PacketBuilder::ethernet2(GUEST_MAC.0, REMOTE_MAC.0)
            .single_vlan(VlanId::try_new(10).unwrap())
            .ipv4(GUEST_V4, REMOTE_V4, 64)
            .udp(5000, 53)
            .write(v, &[0; 18])
            .unwrap()
    });
    f[12..14].copy_from_slice(&tpid.to_be_bytes());
    f
}

fn ethertype(et: u16) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&REMOTE_MAC.0);
    f[6..12].copy_from_slice(&GUEST_MAC.0);
    f[12..14].copy_from_slice(&et.to_be_bytes());
    f
}

/// A handle lending only the first `head` bytes, as netback's `NetFrame` does (64).
#[derive(Clone)]
struct Head {
    data: Arc<[u8]>,
    head: usize,
}

impl Frame for Head {
    fn bytes(&self) -> &[u8] {
        &self.data[..self.head.min(self.data.len())]
    }
    fn frame_len(&self) -> usize {
        self.data.len()
    }
}

fn head(frame: Vec<u8>, head: usize) -> Head {
    Head {
        data: frame.into(),
        head,
    }
}

use DropReason::*;

#[test]
fn ipv4_passes_from_the_ports_addresses_only() {
    let mut r = rig();
    assert_eq!(from_guest(&mut r, ipv4(GUEST_V4)), None);
    assert_eq!(from_guest(&mut r, ipv4(GUEST_V4_2)), None);
    assert_eq!(from_guest(&mut r, ipv4(FOREIGN_V4)), Some(SrcIpNotAllowed));
    assert_eq!(from_guest(&mut r, ipv4(REMOTE_V4)), Some(SrcIpNotAllowed));
    assert_eq!(from_guest(&mut r, ipv4(ZERO_V4)), Some(SrcIpNotAllowed));
    // A spoofed MAC is still the MAC lock's drop, checked first.
    let spoofed_mac = udp4(OTHER_MAC, GUEST_V4, REMOTE_V4, 5000, 53);
    assert_eq!(from_guest(&mut r, spoofed_mac), Some(SrcNotAllowed));
}

#[test]
fn dhcp_from_zero_passes_and_nothing_else_does() {
    let mut r = rig();
    let bcast = [255; 4];
    let discover = udp4(GUEST_MAC, ZERO_V4, bcast, 68, 67);
    assert_eq!(from_guest(&mut r, discover.clone()), None);
    // Renewing from the port's own address is plain IPv4.
    assert_eq!(
        from_guest(&mut r, udp4(GUEST_MAC, GUEST_V4, REMOTE_V4, 68, 67)),
        None
    );
    // vif-common accepts UDP 68 -> 67 from any source; a client never needs a foreign one.
    assert_eq!(
        from_guest(&mut r, udp4(GUEST_MAC, FOREIGN_V4, bcast, 68, 67)),
        Some(SrcIpNotAllowed)
    );
    for (sport, dport) in [(67, 68), (68, 68), (5000, 67)] {
        let f = udp4(GUEST_MAC, ZERO_V4, bcast, sport, dport);
        assert_eq!(
            from_guest(&mut r, f),
            Some(SrcIpNotAllowed),
            "{sport}->{dport}"
        );
    }
    // Ports 68 -> 67 in a later fragment are payload bytes, not a UDP header.
    let mut frag = discover.clone();
    frag[20..22].copy_from_slice(&0x0001u16.to_be_bytes());
    assert_eq!(from_guest(&mut r, frag), Some(SrcIpNotAllowed));
    // Not UDP.
    let mut tcp = discover.clone();
    tcp[23] = 6;
    assert_eq!(from_guest(&mut r, tcp), Some(SrcIpNotAllowed));
    // A total length too short for the UDP header: the ports are Ethernet padding.
    let mut short = discover.clone();
    short[16..18].copy_from_slice(&20u16.to_be_bytes());
    assert_eq!(from_guest(&mut r, short), Some(SrcIpNotAllowed));
    // With IPv4 options the UDP header moves; the check follows the header length.
    let mut opts = discover;
    opts[14] = 0x46;
    let tot = u16::from_be_bytes([opts[16], opts[17]]) + 4;
    opts[16..18].copy_from_slice(&tot.to_be_bytes());
    opts.splice(34..34, [1, 1, 1, 0]);
    assert_eq!(from_guest(&mut r, opts), None);
}

#[test]
fn arp_needs_the_ports_address_and_its_own_mac() {
    let mut r = rig();
    let gm = GUEST_MAC;
    assert_eq!(from_guest(&mut r, arp(gm, gm, GUEST_V4, REMOTE_V4)), None);
    // RFC 5227 probe (sender 0.0.0.0) and announcement (sender = target = own).
    assert_eq!(from_guest(&mut r, arp(gm, gm, ZERO_V4, GUEST_V4)), None);
    assert_eq!(from_guest(&mut r, arp(gm, gm, GUEST_V4, GUEST_V4)), None);
    // Claiming another station's address (a gratuitous ARP for the gateway, say).
    assert_eq!(
        from_guest(&mut r, arp(gm, gm, REMOTE_V4, REMOTE_V4)),
        Some(SrcIpNotAllowed)
    );
    // Pointing caches at another station's MAC, from the guest's own MAC and address.
    assert_eq!(
        from_guest(&mut r, arp(gm, OTHER_MAC, GUEST_V4, REMOTE_V4)),
        Some(ArpSenderMac)
    );
    assert_eq!(
        from_guest(&mut r, arp(gm, OTHER_MAC, ZERO_V4, REMOTE_V4)),
        Some(ArpSenderMac)
    );
    // ARP for another hardware or protocol type: its sender fields are not where we read.
    let mut other = arp(gm, gm, GUEST_V4, REMOTE_V4);
    other[15] = 6; // htype IEEE 802
    assert_eq!(from_guest(&mut r, other), Some(IpMalformed));
    let cut = arp(gm, gm, GUEST_V4, REMOTE_V4)[..40].to_vec();
    assert_eq!(from_guest(&mut r, cut), Some(IpMalformed));
}

#[test]
fn ipv6_passes_from_the_ports_addresses_unspecified_and_link_local() {
    let mut r = rig();
    assert_eq!(from_guest(&mut r, udp6(GUEST_V6)), None);
    assert_eq!(from_guest(&mut r, udp6(GUEST_LL)), None);
    assert_eq!(from_guest(&mut r, udp6(FOREIGN_V6)), Some(SrcIpNotAllowed));
    assert_eq!(from_guest(&mut r, udp6(REMOTE_V6)), Some(SrcIpNotAllowed));
    // An IPv4-mapped form of the guest's IPv4 address is not its IPv6 address.
    let mapped = Ipv4Addr::from(GUEST_V4).to_ipv6_mapped().octets();
    assert_eq!(from_guest(&mut r, udp6(mapped)), Some(SrcIpNotAllowed));
    // Duplicate address detection: a solicitation for a tentative address, from ::.
    assert_eq!(from_guest(&mut r, ns(UNSPECIFIED_V6, GUEST_V6)), None);
    assert_eq!(from_guest(&mut r, ns(GUEST_LL, REMOTE_V6)), None);
    // Version nibble not 6.
    let mut bad = udp6(GUEST_V6);
    bad[14] = 0x40;
    assert_eq!(from_guest(&mut r, bad), Some(IpMalformed));
}

#[test]
fn listing_a_link_local_address_allows_only_the_listed_ones() {
    let mut r = rig();
    // Any link-local source passes while none is listed: a guest can claim the router's.
    assert_eq!(from_guest(&mut r, ns(ROUTER_LL, REMOTE_V6)), None);
    let mut ips = guest_ips();
    ips.push(Ipv6Addr::from(GUEST_LL).into());
    r.br.set_port_ips(r.guest, &ips).unwrap();
    assert_eq!(from_guest(&mut r, ns(GUEST_LL, REMOTE_V6)), None);
    assert_eq!(from_guest(&mut r, na(GUEST_LL, GUEST_LL)), None);
    assert_eq!(
        from_guest(&mut r, ns(ROUTER_LL, REMOTE_V6)),
        Some(SrcIpNotAllowed)
    );
    assert_eq!(
        from_guest(&mut r, na(ROUTER_LL, ROUTER_LL)),
        Some(SrcIpNotAllowed)
    );
    // Duplicate address detection still works.
    assert_eq!(from_guest(&mut r, ns(UNSPECIFIED_V6, GUEST_LL)), None);
}

#[test]
fn neighbour_advertisements_name_only_the_ports_own_addresses() {
    let mut r = rig();
    assert_eq!(from_guest(&mut r, na(GUEST_V6, GUEST_V6)), None);
    assert_eq!(from_guest(&mut r, na(GUEST_LL, GUEST_V6)), None);
    // Its own link-local, advertised from itself (as Linux sends it).
    assert_eq!(from_guest(&mut r, na(GUEST_LL, GUEST_LL)), None);
    // Someone else's global address, from any allowed source.
    for src in [GUEST_V6, GUEST_LL, UNSPECIFIED_V6] {
        assert_eq!(
            from_guest(&mut r, na(src, REMOTE_V6)),
            Some(NdTargetNotAllowed)
        );
    }
    // The router's link-local from the guest's own addresses.
    assert_eq!(
        from_guest(&mut r, na(GUEST_V6, ROUTER_LL)),
        Some(NdTargetNotAllowed)
    );
    assert_eq!(
        from_guest(&mut r, na(GUEST_LL, ROUTER_LL)),
        Some(NdTargetNotAllowed)
    );
    // Hiding behind an extension header changes nothing.
    for ext in [0, 60] {
        let f = with_ext_header(na(GUEST_LL, REMOTE_V6), ext);
        assert_eq!(from_guest(&mut r, f), Some(NdTargetNotAllowed), "ext {ext}");
        let f = with_ext_header(na(GUEST_LL, GUEST_V6), ext);
        assert_eq!(from_guest(&mut r, f), None, "ext {ext}");
    }
    // Cut before the end of the target.
    let cut = na(GUEST_V6, GUEST_V6)[..70].to_vec();
    assert_eq!(from_guest(&mut r, cut), Some(IpMalformed));
    // A payload length that ends before the target: the bytes after it do not count.
    let mut short = na(GUEST_V6, GUEST_V6);
    short[18..20].copy_from_slice(&8u16.to_be_bytes());
    assert_eq!(from_guest(&mut r, short), Some(IpMalformed));
}

#[test]
fn router_advertisements_and_redirects_need_the_router_option() {
    let mut r = rig();
    assert_eq!(from_guest(&mut r, ra(GUEST_LL)), Some(NotARouter));
    assert_eq!(
        from_guest(&mut r, with_ext_header(ra(GUEST_LL), 0)),
        Some(NotARouter)
    );
    let redirect = icmp6(GUEST_LL, REMOTE_V6, 137, [0; 4], &[0; 32]);
    assert_eq!(from_guest(&mut r, redirect.clone()), Some(NotARouter));
    // Router solicitations are what a host sends.
    let rs = icmp6(GUEST_LL, v6(0xff02 << 112 | 2), 133, [0; 4], &[]);
    assert_eq!(from_guest(&mut r, rs), None);

    r.br.set_port_ip_options(
        r.guest,
        IpLockOptions {
            router: true,
            ..IpLockOptions::default()
        },
    )
    .unwrap();
    assert!(r.br.port_ip_options(r.guest).unwrap().router);
    assert_eq!(from_guest(&mut r, ra(GUEST_LL)), None);
    assert_eq!(from_guest(&mut r, redirect), None);
    // A router's advertisements still come from its own addresses.
    assert_eq!(from_guest(&mut r, ra(FOREIGN_V6)), Some(SrcIpNotAllowed));
}

#[test]
fn later_fragments_and_other_upper_layers_need_only_the_source() {
    let mut r = rig();
    // A fragment header with offset 8: the upper layer is in the first fragment.
    let mut later = udp6(GUEST_V6);
    later[20] = 44;
    let plen = u16::from_be_bytes([later[18], later[19]]) + 8;
    later[18..20].copy_from_slice(&plen.to_be_bytes());
    later.splice(54..54, [58, 0, 0, 8, 0, 0, 0, 1]);
    assert_eq!(from_guest(&mut r, later.clone()), None);
    // The first fragment of an RA is an RA.
    let mut first = ra(GUEST_LL);
    first[20] = 44;
    let plen = u16::from_be_bytes([first[18], first[19]]) + 8;
    first[18..20].copy_from_slice(&plen.to_be_bytes());
    first.splice(54..54, [58, 0, 0, 1, 0, 0, 0, 1]);
    assert_eq!(from_guest(&mut r, first), Some(NotARouter));
    // A chain of more extension headers than any real packet has.
    let mut long = ra(GUEST_LL);
    for _ in 0..9 {
        long = with_ext_header(long, 60);
    }
    assert_eq!(from_guest(&mut r, long), Some(IpMalformed));
}

#[test]
fn vlan_tagged_frames_are_dropped_on_ip_locked_ports_only() {
    let mut r = rig();
    for tpid in [0x8100, 0x88a8, 0x9100] {
        assert_eq!(
            from_guest(&mut r, tagged(tpid)),
            Some(VlanTagged),
            "{tpid:#x}"
        );
    }
    // Even with other EtherTypes allowed: the inside of a tag is never checked.
    r.br.set_port_ip_options(
        r.guest,
        IpLockOptions {
            other_ethertypes: true,
            ..IpLockOptions::default()
        },
    )
    .unwrap();
    assert_eq!(from_guest(&mut r, tagged(0x8100)), Some(VlanTagged));
    let open = r.open;
    assert_eq!(verdict(&mut r.br, open, Arc::from(tagged(0x8100))), None);
}

#[test]
fn other_ethertypes_are_dropped_unless_the_port_allows_them() {
    let mut r = rig();
    // MPLS, PPPoE session, LLDP, an 802.3 length field.
    let types = [0x8847, 0x8864, 0x88cc, 0x0040];
    for et in types {
        assert_eq!(
            from_guest(&mut r, ethertype(et)),
            Some(EtherTypeNotAllowed),
            "{et:#x}"
        );
    }
    let opts = IpLockOptions {
        other_ethertypes: true,
        ..IpLockOptions::default()
    };
    r.br.set_port_ip_options(r.guest, opts).unwrap();
    for et in types {
        assert_eq!(from_guest(&mut r, ethertype(et)), None, "{et:#x}");
    }
    // IP is still checked.
    assert_eq!(from_guest(&mut r, ipv4(FOREIGN_V4)), Some(SrcIpNotAllowed));
    // Options survive a change of addresses.
    r.br.set_port_ips(r.guest, &[Ipv4Addr::from(FOREIGN_V4).into()])
        .unwrap();
    assert_eq!(r.br.port_ip_options(r.guest).unwrap(), opts);
    assert_eq!(from_guest(&mut r, ipv4(FOREIGN_V4)), None);
}

#[test]
fn ports_without_an_ip_lock_are_unaffected() {
    let mut r = rig();
    let open = r.open;
    let mac = MacAddr::local(77);
    let frames = [
        udp4(mac, FOREIGN_V4, REMOTE_V4, 1, 2),
        udp4(mac, ZERO_V4, REMOTE_V4, 1, 2),
        arp(mac, OTHER_MAC, REMOTE_V4, REMOTE_V4),
        ra(ROUTER_LL),
        na(REMOTE_V6, REMOTE_V6),
        tagged(0x8100),
        ethertype(0x8847),
        vec![0xaa; 14],
    ];
    for f in frames {
        let mut f = f;
        f[6..12].copy_from_slice(&mac.0);
        assert_eq!(verdict(&mut r.br, open, Arc::from(f)), None);
    }
    // So is a port whose lock was removed with an empty list.
    r.br.set_port_ips(r.guest, &[]).unwrap();
    assert!(r.br.port_ips(r.guest).unwrap().is_empty());
    assert_eq!(from_guest(&mut r, ipv4(FOREIGN_V4)), None);
    assert_eq!(from_guest(&mut r, ra(ROUTER_LL)), None);
    // The uplink was never locked.
    let up = r.uplink;
    let spoof = udp4(MacAddr::local(99), GUEST_V4, REMOTE_V4, 1, 2);
    assert_eq!(verdict(&mut r.br, up, Arc::from(spoof)), None);
}

#[test]
fn drops_are_counted_on_the_ingress_port_by_reason() {
    let mut r = rig();
    let gm = GUEST_MAC;
    let batch: Vec<Arc<[u8]>> = [
        ipv4(GUEST_V4),
        ipv4(FOREIGN_V4),
        udp6(FOREIGN_V6),
        arp(gm, gm, REMOTE_V4, REMOTE_V4),
        arp(gm, OTHER_MAC, GUEST_V4, REMOTE_V4),
        na(GUEST_LL, REMOTE_V6),
        ra(GUEST_LL),
        tagged(0x8100),
        ethertype(0x8847),
        ethertype(0x8847),
        udp6(GUEST_V6)[..40].to_vec(),
    ]
    .into_iter()
    .map(Arc::from)
    .collect();
    let n = batch.len() as u64;
    let mut out = Output::new();
    r.br.forward(r.guest, &mut batch.clone(), Duration::ZERO, &mut out)
        .unwrap();
    let st = r.br.port_stats(r.guest).unwrap();
    assert_eq!(st.rx_frames, n);
    let expect = [
        (SrcIpNotAllowed, 3),
        (ArpSenderMac, 1),
        (NdTargetNotAllowed, 1),
        (NotARouter, 1),
        (VlanTagged, 1),
        (EtherTypeNotAllowed, 2),
        (IpMalformed, 1),
    ];
    for (reason, count) in expect {
        assert_eq!(st.drops.get(reason), count, "{}", reason.name());
    }
    assert_eq!(st.drops.total(), n - 1);
    // Only the frame from the guest's address, flooded to the uplink and the other vif.
    assert_eq!(out.queue(r.uplink).len(), 1);
    assert_eq!(out.len(), 2);
    // Every other port's counters are untouched, and the names are distinct.
    assert_eq!(r.br.port_stats(r.open).unwrap().drops.total(), 0);
    let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), DropReason::ALL.len());
}

#[test]
fn a_head_too_short_to_decide_is_dropped_with_its_own_counter() {
    let mut r = rig();
    let g = r.guest;
    // netback's handles lend 64 bytes: enough for IPv4, ARP, an IPv6 source and the ICMPv6
    // type; a Neighbour Advertisement's target (bytes 62..78) is beyond it.
    assert_eq!(verdict(&mut r.br, g, head(ipv4(GUEST_V4), 64)), None);
    assert_eq!(
        verdict(
            &mut r.br,
            g,
            head(arp(GUEST_MAC, GUEST_MAC, GUEST_V4, GUEST_V4), 64)
        ),
        None
    );
    assert_eq!(verdict(&mut r.br, g, head(udp6(GUEST_V6), 64)), None);
    assert_eq!(
        verdict(&mut r.br, g, head(ra(GUEST_LL), 64)),
        Some(NotARouter)
    );
    assert_eq!(
        verdict(&mut r.br, g, head(na(GUEST_V6, GUEST_V6), 64)),
        Some(IpHeadShort)
    );
    assert_eq!(
        verdict(&mut r.br, g, head(na(GUEST_V6, GUEST_V6), 78)),
        None
    );
    assert_eq!(
        verdict(&mut r.br, g, head(na(GUEST_V6, REMOTE_V6), 78)),
        Some(NdTargetNotAllowed)
    );
    // A head of just the Ethernet header decides nothing (but the MAC lock).
    assert_eq!(
        verdict(&mut r.br, g, head(ipv4(GUEST_V4), 14)),
        Some(IpHeadShort)
    );
    // The same bytes missing from the frame itself make it malformed, not undecidable.
    let cut = ipv4(GUEST_V4)[..20].to_vec();
    assert_eq!(verdict(&mut r.br, g, head(cut, 64)), Some(IpMalformed));
}

#[test]
fn dropped_frames_teach_the_table_nothing() {
    let mut r = rig();
    // An IP lock without a MAC lock: the port learns, but not from frames it drops.
    let open = r.open;
    r.br.set_port_ips(open, &[Ipv4Addr::from(FOREIGN_V4).into()])
        .unwrap();
    let mac = MacAddr::local(42);
    let spoof = udp4(mac, REMOTE_V4, REMOTE_V4, 1, 2);
    assert_eq!(
        verdict(&mut r.br, open, Arc::from(spoof)),
        Some(SrcIpNotAllowed)
    );
    assert_eq!(r.br.lookup(mac, Duration::ZERO), None);
    let ok = udp4(mac, FOREIGN_V4, REMOTE_V4, 1, 2);
    assert_eq!(verdict(&mut r.br, open, Arc::from(ok)), None);
    assert_eq!(r.br.lookup(mac, Duration::ZERO), Some(open));
}

#[test]
fn configuration_is_checked_reported_and_reset_with_the_port() {
    let mut r = rig();
    let mut got = r.br.port_ips(r.guest).unwrap();
    got.sort();
    let mut want = guest_ips();
    want.sort();
    assert_eq!(got, want);
    let snap = r.br.snapshot();
    assert_eq!(snap.ports[r.guest.index()].ips.len(), 3);
    assert!(snap.ports[r.open.index()].ips.is_empty());
    // Duplicates are kept once.
    let dup: IpAddr = Ipv4Addr::from(GUEST_V4).into();
    r.br.set_port_ips(r.guest, &[dup, dup]).unwrap();
    assert_eq!(r.br.port_ips(r.guest).unwrap(), vec![dup]);
    for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"] {
        let bad: IpAddr = bad.parse().unwrap();
        let e = r.br.set_port_ips(r.guest, &[dup, bad]).unwrap_err();
        assert!(matches!(e, BridgeError::InvalidConfig { .. }), "{bad}: {e}");
        assert_eq!(r.br.port_ips(r.guest).unwrap(), vec![dup], "unchanged");
    }
    let gone = r.open;
    r.br.remove_port(gone).unwrap();
    assert!(r.br.set_port_ips(gone, &[dup]).is_err());
    // A port that reuses the number starts without a lock or options.
    r.br.set_port_ip_options(
        r.guest,
        IpLockOptions {
            router: true,
            other_ethertypes: true,
        },
    )
    .unwrap();
    r.br.remove_port(r.guest).unwrap();
    let again = r.br.add_port(PortKind::Uplink).unwrap();
    assert_eq!(again, r.guest);
    assert!(r.br.port_ips(again).unwrap().is_empty());
    assert_eq!(
        r.br.port_ip_options(again).unwrap(),
        IpLockOptions::default()
    );
}

// ---- Property: arbitrary frames never panic, and pass a locked port only by a rule. ----

/// What the rules allow, written from the rule list with etherparse finding the IPv6 upper
/// layer (an implementation independent of the switch's own header walk). Returns why a frame
/// may pass, or `None` when no rule admits it.
fn admitted(f: &[u8], ips: &[IpAddr], opts: IpLockOptions) -> Option<&'static str> {
    let v4 = |a: &[u8]| {
        ips.iter()
            .any(|ip| matches!(ip, IpAddr::V4(x) if x.octets()[..] == *a))
    };
    let v6 = |a: &[u8]| {
        ips.iter()
            .any(|ip| matches!(ip, IpAddr::V6(x) if x.octets()[..] == *a))
    };
    let link_local = |a: &[u8]| a[0] == 0xfe && a[1] & 0xc0 == 0x80;
    let et = u16::from_be_bytes([f[12], f[13]]);
    match et {
        0x0800 => {
            let src = f.get(26..30)?;
            if v4(src) {
                return Some("ipv4 source");
            }
            let ihl = usize::from(f[14] & 0xf) * 4;
            let udp = f.get(14 + ihl..14 + ihl + 4)?;
            (src == [0; 4] && f[23] == 17 && udp == [0, 68, 0, 67]).then_some("dhcp")
        }
        0x0806 => {
            let spa = f.get(28..32)?;
            let ok = (spa == [0; 4] || v4(spa)) && f[22..28] == f[6..12];
            ok.then_some("arp")
        }
        0x86dd => {
            let src = f.get(22..38)?;
            let ll_listed = ips
                .iter()
                .any(|ip| matches!(ip, IpAddr::V6(x) if link_local(&x.octets())));
            if !(v6(src) || src == [0; 16] || (link_local(src) && !ll_listed)) {
                return None;
            }
            let p = etherparse::LaxSlicedPacket::from_ethernet(f).ok()?;
            if let Some(etherparse::TransportSlice::Icmpv6(icmp)) = &p.transport {
                match icmp.type_u8() {
                    134 | 137 if !opts.router => return None,
                    136 => {
                        let t = icmp.payload().get(..16)?;
                        if !(v6(t) || (link_local(t) && t == src)) {
                            return None;
                        }
                    }
                    _ => {}
                }
            }
            Some("ipv6")
        }
        0x8100 | 0x88a8 | 0x9100 => None,
        _ => opts.other_ethertypes.then_some("other"),
    }
}

/// Frames worth throwing at the lock: valid ones of every kind with addresses drawn from the
/// port's own and others', then mutated, truncated, or replaced by noise.
fn frames() -> impl Strategy<Value = Vec<u8>> {
    let v4s = prop::sample::select(vec![GUEST_V4, FOREIGN_V4, ZERO_V4, REMOTE_V4]);
    let v6s = prop::sample::select(vec![
        GUEST_V6,
        FOREIGN_V6,
        GUEST_LL,
        ROUTER_LL,
        UNSPECIFIED_V6,
    ]);
    let macs = prop::sample::select(vec![GUEST_MAC, OTHER_MAC]);
    let template = prop_oneof![
        (v4s.clone(), any::<bool>()).prop_map(|(a, dhcp)| udp4(
            GUEST_MAC,
            a,
            REMOTE_V4,
            68,
            if dhcp { 67 } else { 53 }
        )),
        (macs, v4s).prop_map(|(m, a)| arp(GUEST_MAC, m, a, REMOTE_V4)),
        v6s.clone().prop_map(udp6),
        (v6s.clone(), v6s.clone()).prop_map(|(s, t)| na(s, t)),
        v6s.clone().prop_map(ra),
        (v6s, 0u8..4).prop_map(|(s, ext)| with_ext_header(ra(s), [0, 43, 60, 51][ext as usize])),
        prop::sample::select(vec![0x8100u16, 0x88a8, 0x9100]).prop_map(tagged),
        any::<u16>().prop_map(ethertype),
    ];
    let mutated = (
        template,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(mut f, flips, cut, truncate)| {
            for (i, b) in flips {
                let i = i.index(f.len());
                f[i] = b;
            }
            if truncate {
                f.truncate(cut.index(f.len() + 1));
            }
            f
        });
    let noise = (
        prop::sample::select(vec![0x0800u16, 0x0806, 0x86dd, 0x8100, 0x1234]),
        prop::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(et, mut f)| {
            if f.len() >= 14 {
                f[12..14].copy_from_slice(&et.to_be_bytes());
            }
            f
        });
    prop_oneof![3 => mutated, 1 => noise, 1 => prop::collection::vec(any::<u8>(), 0..100)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_frames_never_panic_and_pass_only_by_a_rule(
        frame in frames(),
        head_len in prop_oneof![Just(usize::MAX), Just(64usize), 0usize..100],
        router in any::<bool>(),
        other_ethertypes in any::<bool>(),
        list_link_local in any::<bool>(),
    ) {
        let mut br = Bridge::new(BridgeConfig { hash_seed: Some(1), ..BridgeConfig::default() })
            .unwrap();
        let locked = br.add_port(PortKind::Vif { domid: 1, handle: 0 }).unwrap();
        let _other = br.add_port(PortKind::Uplink).unwrap();
        let mut ips = guest_ips();
        if list_link_local {
            ips.push(Ipv6Addr::from(GUEST_LL).into());
        }
        let opts = IpLockOptions { router, other_ethertypes };
        br.set_port_ips(locked, &ips).unwrap();
        br.set_port_ip_options(locked, opts).unwrap();
        let mut out = Output::new();
        let h = head(frame.clone(), head_len);
        br.forward(locked, &mut vec![h], Duration::ZERO, &mut out).unwrap();
        let st = br.port_stats(locked).unwrap();
        prop_assert_eq!(st.rx_frames, 1);
        prop_assert_eq!(st.drops.total() + out.len() as u64, 1);
        if !out.is_empty() {
            prop_assert!(
                admitted(&frame, &ips, opts).is_some(),
                "forwarded without a rule: {:02x?}", frame
            );
        }
    }
}
