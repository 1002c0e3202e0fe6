//! IP anti-spoofing of a port: the `ip` key's half of what Xen's vif scripts do with iptables.
//!
//! libxl writes the vif's configured addresses into the backend's `ip` key (space separated);
//! `vif-common.sh` (`handle_iptable`) then inserts one `FORWARD -m physdev --physdev-in <vif>
//! -s <addr> -j ACCEPT` rule per address plus one for DHCP (`-p udp --sport 68 --dport 67`),
//! so that with a dropping FORWARD policy a guest's IPv4 leaves only from its own addresses.
//! Those rules see IPv4 only: ARP goes through arptables, IPv6 through ip6tables, and the script
//! touches neither, so ARP, IPv6 and every other EtherType pass unfiltered.
//!
//! [`Bridge::set_port_ips`](crate::Bridge::set_port_ips) puts that filter in the switch, for all
//! of a locked port's traffic:
//!
//! - **IPv4**: the source is one of the port's IPv4 addresses, or the frame is a DHCP client
//!   message from 0.0.0.0 (UDP 68 to 67, first fragment). vif-common accepts UDP 68 to 67 from
//!   any source; a client only ever sends it from 0.0.0.0 (before it has an address) or from
//!   its own address (renewing, covered by the address rule), so nothing else is needed.
//! - **ARP**: Ethernet/IPv4 ARP only; the sender protocol address is one of the port's IPv4
//!   addresses or 0.0.0.0 (an RFC 5227 probe), and the sender hardware address is the frame's
//!   source MAC (so a guest cannot point other hosts' caches at a third station).
//! - **IPv6**: the source is one of the port's IPv6 addresses, `::` (duplicate address
//!   detection) or link-local (fe80::/10). Link-local is allowed because the guest chooses its
//!   own (EUI-64, RFC 7217 stable-privacy or random interface ids) and the toolstack does not
//!   know it, while neighbour discovery, router solicitation, MLD and DHCPv6 all need it. When
//!   the port's addresses include link-local ones, only those are allowed. The upper layer is
//!   found through the extension headers: a Router Advertisement or Redirect is dropped unless
//!   the port is a router ([`IpLockOptions::router`]), and a Neighbour Advertisement must name
//!   as target one of the port's IPv6 addresses or the link-local address it is sent from (the
//!   guest's own: Linux answers from the target address itself).
//! - **VLAN tags** (0x8100, 0x88a8, 0x9100): dropped; the switch is not VLAN-aware and does not
//!   look inside.
//! - **Anything else**: dropped unless [`IpLockOptions::other_ethertypes`].
//!
//! Where this differs from the vif scripts, and why:
//!
//! - Both families are locked once any address is given. vif-common leaves IPv6 alone, so
//!   under xen-netback a guest with `ip=` can still send IPv6 from any address and advertise
//!   itself as the segment's router, taking the IPv6 traffic of every other guest (most of which
//!   enable IPv6 by default); closing only IPv4 would leave that open. A guest whose global
//!   IPv6 addresses are not in its `ip` key gets link-local IPv6 only.
//! - Other EtherTypes are dropped by default. vif-common does not drop them on purpose: the
//!   iptables FORWARD chain simply never sees them. A protocol the switch cannot read can carry
//!   IP from any address (MPLS, PPPoE), and a guest confined to its addresses has no use for
//!   802.3/LLC, STP or LLDP towards other guests; a port that needs them gets the option.
//! - What is still possible: with any link-local source allowed, a guest can send a Neighbour
//!   (or Router) Solicitation from another host's link-local address with its own MAC in the
//!   source link-layer option, and the host it solicits updates its neighbour entry for that
//!   address. Naming the guest's link-local address in its `ip` key closes this (only listed
//!   link-locals are then allowed). The link-layer address options of neighbour discovery are
//!   not compared with the source MAC (ARP's sender MAC is); they lie beyond any frame head
//!   that netback lends.
//!
//! The check reads only header bytes, at fixed offsets, from what the handle lends
//! ([`crate::Frame::bytes`]), and never reads past the frame (an IPv6 header's payload length
//! bounds what counts as its packet). A field beyond the frame (or the IPv6 payload) is a
//! malformed frame ([`DropReason::IpMalformed`]); a field inside the frame but beyond what the
//! handle lends cannot be decided and is dropped as [`DropReason::IpHeadShort`].

use std::net::IpAddr;

use crate::frame::ETH_HLEN;
use crate::port::DropReason;

/// Most IPv6 extension headers walked to find the upper layer; a longer chain is dropped as
/// malformed (RFC 8200 allows each header once, Destination Options twice: seven in all).
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// The pre-802.1ad QinQ tag some switches still use.
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

const IPPROTO_UDP: u8 = 17;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_ICMP: u8 = 58;
const IPV6_DEST_OPTS: u8 = 60;

const ICMPV6_ROUTER_ADVERT: u8 = 134;
const ICMPV6_NEIGHBOUR_ADVERT: u8 = 136;
const ICMPV6_REDIRECT: u8 = 137;

const DHCP_CLIENT_PORT: u16 = 68;
const DHCP_SERVER_PORT: u16 = 67;

/// Offsets from the start of the frame (untagged Ethernet II).
mod field {
    use super::ETH_HLEN;
    use std::ops::Range;

    pub const ETHERTYPE: Range<usize> = 12..ETH_HLEN;
    pub const SRC_MAC: Range<usize> = 6..12;
    /// The fixed IPv4 header (options follow).
    pub const IPV4: Range<usize> = ETH_HLEN..ETH_HLEN + 20;
    /// The Ethernet/IPv4 ARP packet.
    pub const ARP: Range<usize> = ETH_HLEN..ETH_HLEN + 28;
    /// The fixed IPv6 header.
    pub const IPV6: Range<usize> = ETH_HLEN..ETH_HLEN + 40;
}

/// A port's IP lock choices besides its addresses (both default to off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IpLockOptions {
    /// The guest is a router: its ICMPv6 Router Advertisements and Redirects are forwarded.
    /// Off, they are dropped as [`DropReason::NotARouter`]: a guest that advertises itself as
    /// a router (or redirects hosts to one) would take other guests' IPv6 traffic.
    pub router: bool,
    /// Forward EtherTypes the lock cannot check (anything but IPv4, ARP, IPv6 and VLAN tags)
    /// unchecked. Off, they are dropped as [`DropReason::EtherTypeNotAllowed`]: a protocol the
    /// switch cannot read (MPLS, PPPoE, ...) can carry IP from any address.
    pub other_ethertypes: bool,
}

/// One port's IP lock: the addresses it may send from, and its options. No addresses: no lock.
#[derive(Debug, Clone, Default)]
pub(crate) struct IpLock {
    v4: Vec<[u8; 4]>,
    v6: Vec<[u8; 16]>,
    /// Some of `v6` are link-local: then only those are allowed as link-local sources.
    link_local_listed: bool,
    pub(crate) opts: IpLockOptions,
}

/// Whether `a` is link-local unicast, fe80::/10.
#[inline]
fn is_link_local(a: &[u8]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// `head[start..end]`, or why it cannot be read: past `limit` (the end of the frame or of the
/// packet) the frame is malformed; inside it but past what the handle lends, undecidable.
#[inline]
fn get(head: &[u8], limit: usize, start: usize, end: usize) -> Result<&[u8], DropReason> {
    if end > limit {
        Err(DropReason::IpMalformed)
    } else {
        head.get(start..end).ok_or(DropReason::IpHeadShort)
    }
}

impl IpLock {
    /// Replaces the addresses (keeping the options); duplicates are kept once.
    pub(crate) fn set_addrs(&mut self, addrs: &[IpAddr]) {
        self.v4.clear();
        self.v6.clear();
        for a in addrs {
            match a {
                IpAddr::V4(a) if !self.v4.contains(&a.octets()) => self.v4.push(a.octets()),
                IpAddr::V6(a) if !self.v6.contains(&a.octets()) => self.v6.push(a.octets()),
                _ => {}
            }
        }
        self.link_local_listed = self.v6.iter().any(|a| is_link_local(a));
    }

    /// Whether the port has an IP lock.
    #[inline(always)]
    pub(crate) fn is_on(&self) -> bool {
        !(self.v4.is_empty() && self.v6.is_empty())
    }

    /// The port's addresses, IPv4 first, in the order given.
    pub(crate) fn addrs(&self) -> Vec<IpAddr> {
        let v4 = self.v4.iter().map(|&a| IpAddr::from(a));
        v4.chain(self.v6.iter().map(|&a| IpAddr::from(a))).collect()
    }

    fn has_v4(&self, a: &[u8]) -> bool {
        self.v4.iter().any(|x| x[..] == *a)
    }

    fn has_v6(&self, a: &[u8]) -> bool {
        self.v6.iter().any(|x| x[..] == *a)
    }

    /// Whether a frame from the port may pass: `head` is what its handle lends (at least the
    /// 14-byte Ethernet header), `frame_len` its full length. `Err` names the drop reason.
    /// Kept out of line: the forwarding loop of a port without an IP lock stays as it was.
    #[inline(never)]
    pub(crate) fn check(&self, head: &[u8], frame_len: usize) -> Result<(), DropReason> {
        let limit = frame_len.max(ETH_HLEN);
        let Some(et) = head.get(field::ETHERTYPE) else {
            return Err(DropReason::TooShort);
        };
        match u16::from_be_bytes([et[0], et[1]]) {
            ETHERTYPE_IPV4 => self.check_ipv4(head, limit),
            ETHERTYPE_ARP => self.check_arp(head, limit),
            ETHERTYPE_IPV6 => self.check_ipv6(head, limit),
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => Err(DropReason::VlanTagged),
            _ if self.opts.other_ethertypes => Ok(()),
            _ => Err(DropReason::EtherTypeNotAllowed),
        }
    }

    fn check_ipv4(&self, head: &[u8], limit: usize) -> Result<(), DropReason> {
        let ip = get(head, limit, field::IPV4.start, field::IPV4.end)?;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < 20 {
            return Err(DropReason::IpMalformed);
        }
        let src = &ip[12..16];
        if self.has_v4(src) {
            return Ok(());
        }
        if src != [0; 4] {
            return Err(DropReason::SrcIpNotAllowed);
        }
        // From 0.0.0.0 only a DHCP client message: UDP 68 -> 67 in a first fragment whose
        // total length holds the UDP header.
        let first_fragment = be16(ip, 6) & 0x1fff == 0;
        if ip[9] != IPPROTO_UDP || !first_fragment || usize::from(be16(ip, 2)) < ihl + 8 {
            return Err(DropReason::SrcIpNotAllowed);
        }
        let udp_at = field::IPV4.start + ihl;
        let udp = get(head, limit, udp_at, udp_at + 4)?;
        if be16(udp, 0) == DHCP_CLIENT_PORT && be16(udp, 2) == DHCP_SERVER_PORT {
            Ok(())
        } else {
            Err(DropReason::SrcIpNotAllowed)
        }
    }

    fn check_arp(&self, head: &[u8], limit: usize) -> Result<(), DropReason> {
        let arp = get(head, limit, field::ARP.start, field::ARP.end)?;
        // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4: the only ARP an Ethernet IPv4 host
        // speaks, and the only layout whose sender fields are where we read them.
        if arp[..6] != [0, 1, 0x08, 0x00, 6, 4] {
            return Err(DropReason::IpMalformed);
        }
        let spa = &arp[14..18];
        if spa != [0; 4] && !self.has_v4(spa) {
            return Err(DropReason::SrcIpNotAllowed);
        }
        if arp[8..14] != head[field::SRC_MAC] {
            return Err(DropReason::ArpSenderMac);
        }
        Ok(())
    }

    fn check_ipv6(&self, head: &[u8], limit: usize) -> Result<(), DropReason> {
        let ip = get(head, limit, field::IPV6.start, field::IPV6.end)?;
        if ip[0] >> 4 != 6 {
            return Err(DropReason::IpMalformed);
        }
        let src = &ip[8..24];
        let unlisted_link_local = is_link_local(src) && !self.link_local_listed;
        if !(self.has_v6(src) || src == [0; 16] || unlisted_link_local) {
            return Err(DropReason::SrcIpNotAllowed);
        }
        // What follows the fixed header counts only up to the payload length: bytes after it
        // are Ethernet padding (or a lie).
        let limit = limit.min(field::IPV6.end + usize::from(be16(ip, 4)));
        let mut next = ip[6];
        let mut at = field::IPV6.end;
        for _ in 0..MAX_IPV6_EXT_HEADERS {
            match next {
                IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                    let h = get(head, limit, at, at + 2)?;
                    next = h[0];
                    at += (usize::from(h[1]) + 1) * 8;
                }
                IPV6_AH => {
                    let h = get(head, limit, at, at + 2)?;
                    next = h[0];
                    at += (usize::from(h[1]) + 2) * 4;
                }
                IPV6_FRAGMENT => {
                    let h = get(head, limit, at, at + 8)?;
                    if be16(h, 2) & 0xfff8 != 0 {
                        // A later fragment: its upper-layer header is in the first one, and
                        // neighbour discovery is never fragmented (RFC 6980).
                        return Ok(());
                    }
                    next = h[0];
                    at += 8;
                }
                IPV6_ICMP => return self.check_icmpv6(head, limit, at, src),
                // TCP, UDP, ESP (opaque), no next header, ...: the source was all to check.
                _ => return Ok(()),
            }
        }
        Err(DropReason::IpMalformed)
    }

    fn check_icmpv6(
        &self,
        head: &[u8],
        limit: usize,
        at: usize,
        src: &[u8],
    ) -> Result<(), DropReason> {
        match get(head, limit, at, at + 1)?[0] {
            ICMPV6_ROUTER_ADVERT | ICMPV6_REDIRECT if !self.opts.router => {
                Err(DropReason::NotARouter)
            }
            ICMPV6_NEIGHBOUR_ADVERT => {
                // Type, code, checksum, flags and reserved: the target follows at 8.
                let target = get(head, limit, at + 8, at + 24)?;
                if self.has_v6(target) || (is_link_local(target) && target == src) {
                    Ok(())
                } else {
                    Err(DropReason::NdTargetNotAllowed)
                }
            }
            _ => Ok(()),
        }
    }
}
