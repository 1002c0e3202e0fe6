//! Where a frame's L4 header and checksum field are: Linux's `skb_checksum_setup` walk.
//!
//! [`locate`] reads only headers: it needs the frame's bytes through the TCP (20) or UDP (8)
//! header, not the payload, so a backend can pass the first page of a frame that spans several.
//! The IP header's declared length gives [`L4Loc::ip_end`]; callers that need the whole datagram
//! check the frame reaches it.

use crate::{Error, GsoKind};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// EtherType of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// IPv4 flag "don't fragment" in the flags/fragment-offset word.
pub(crate) const IP_DF: u16 = 0x4000;
/// IPv4 flag "more fragments".
const IP_MF: u16 = 0x2000;
/// IPv4 fragment offset mask.
const IP_OFFSET: u16 = 0x1FFF;

/// Field offsets within the fixed headers (smoltcp `wire` style).
pub(crate) mod field {
    /// Ethernet: EtherType.
    pub const ETH_TYPE: usize = 12;
    /// IPv4: type of service.
    pub const V4_TOS: usize = 1;
    /// IPv4: total length.
    pub const V4_TOTAL_LEN: usize = 2;
    /// IPv4: identification.
    pub const V4_ID: usize = 4;
    /// IPv4: flags and fragment offset.
    pub const V4_FRAG: usize = 6;
    /// IPv4: time to live.
    pub const V4_TTL: usize = 8;
    /// IPv4: protocol.
    pub const V4_PROTO: usize = 9;
    /// IPv4: header checksum.
    pub const V4_CSUM: usize = 10;
    /// IPv4: source address (destination follows).
    pub const V4_SRC: usize = 12;
    /// IPv6: payload length.
    pub const V6_PAYLOAD_LEN: usize = 4;
    /// IPv6: next header.
    pub const V6_NEXT: usize = 6;
    /// IPv6: hop limit.
    pub const V6_HOP_LIMIT: usize = 7;
    /// IPv6: source address (destination follows).
    pub const V6_SRC: usize = 8;
    /// TCP: sequence number.
    pub const TCP_SEQ: usize = 4;
    /// TCP: acknowledgment number.
    pub const TCP_ACK: usize = 8;
    /// TCP: data offset (high nibble).
    pub const TCP_DOFF: usize = 12;
    /// TCP: flags byte.
    pub const TCP_FLAGS: usize = 13;
    /// TCP: checksum.
    pub const TCP_CSUM: usize = 16;
    /// UDP: checksum.
    pub const UDP_CSUM: usize = 6;
}

/// TCP flag bits in the flags byte.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// The network layer of a located frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L3Kind {
    /// IPv4 (with or without options).
    Ipv4,
    /// IPv6 (possibly with extension headers).
    Ipv6,
}

/// The transport layer of a located frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4Kind {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Where a frame's headers and L4 checksum are. All offsets count from the start of the
/// Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4Loc {
    /// IPv4 or IPv6.
    pub l3: L3Kind,
    /// TCP or UDP.
    pub l4: L4Kind,
    /// Start of the IP header (14, or 18 behind an 802.1Q tag).
    pub l3_start: usize,
    /// Start of the TCP/UDP header: `csum_start`.
    pub csum_start: usize,
    /// Offset of the checksum field from `csum_start`: 16 for TCP, 6 for UDP.
    pub csum_offset: usize,
    /// TCP header length (data offset * 4, options included) or 8 for UDP.
    pub l4_hdr_len: usize,
    /// End of the IP datagram as its header declares; bytes beyond it (Ethernet padding) are not
    /// part of the packet.
    pub ip_end: usize,
}

impl L4Loc {
    /// Bytes the L4 checksum covers: header plus payload.
    pub fn l4_len(&self) -> usize {
        self.ip_end - self.csum_start
    }

    /// Length of all headers, Ethernet through TCP/UDP (options included).
    pub fn hdr_len(&self) -> usize {
        self.csum_start + self.l4_hdr_len
    }

    /// Offset of the checksum field in the frame.
    pub fn csum_field(&self) -> usize {
        self.csum_start + self.csum_offset
    }

    /// The GSO kind a TCP super-frame with these headers needs; `None` for UDP.
    pub fn gso_kind(&self) -> Option<GsoKind> {
        match (self.l3, self.l4) {
            (L3Kind::Ipv4, L4Kind::Tcp) => Some(GsoKind::Tcpv4),
            (L3Kind::Ipv6, L4Kind::Tcp) => Some(GsoKind::Tcpv6),
            (_, L4Kind::Udp) => None,
        }
    }

    /// The IP protocol number of the L4 header.
    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4Kind::Tcp => IPPROTO_TCP,
            L4Kind::Udp => IPPROTO_UDP,
        }
    }
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn need(frame: &[u8], what: &'static str, n: usize) -> Result<(), Error> {
    if frame.len() < n {
        Err(Error::Truncated {
            what,
            need: n,
            have: frame.len(),
        })
    } else {
        Ok(())
    }
}

/// Start of the IP header and its EtherType: Ethernet II, at most one 802.1Q tag.
pub fn l3_start(frame: &[u8]) -> Result<(usize, u16), Error> {
    need(frame, "Ethernet header", 14)?;
    let ethertype = be16(frame, field::ETH_TYPE);
    if ethertype == ETHERTYPE_VLAN {
        need(frame, "802.1Q tag", 18)?;
        Ok((18, be16(frame, 16)))
    } else {
        Ok((14, ethertype))
    }
}

/// Finds the L4 header and checksum field of a TCP or UDP frame, walking the headers Linux's
/// `skb_checksum_setup` walks.
///
/// IPv4: any header length of 5 words or more; a fragment (MF set or a non-zero offset) is
/// [`Error::Fragment`]. IPv6: hop-by-hop, routing, destination-options and AH headers are
/// skipped; a fragment header is skipped when it describes a whole packet (offset 0, MF clear)
/// and is [`Error::Fragment`] otherwise. The frame must hold the bytes through the TCP (20) or
/// UDP (8) header; the payload need not be present.
pub fn locate(frame: &[u8]) -> Result<L4Loc, Error> {
    let (l3, ethertype) = l3_start(frame)?;
    let (kind, proto, l4_start, ip_end) = match ethertype {
        ETHERTYPE_IPV4 => {
            need(frame, "IPv4 header", l3 + 20)?;
            let vihl = frame[l3];
            if vihl >> 4 != 4 {
                return Err(Error::BadIpHeader("IPv4 EtherType but version is not 4"));
            }
            let ihl = usize::from(vihl & 0x0F) * 4;
            if ihl < 20 {
                return Err(Error::BadIpHeader("IPv4 header length below 5 words"));
            }
            need(frame, "IPv4 options", l3 + ihl)?;
            let total = usize::from(be16(frame, l3 + field::V4_TOTAL_LEN));
            if total < ihl {
                return Err(Error::BadIpHeader(
                    "IPv4 total length shorter than its header",
                ));
            }
            if be16(frame, l3 + field::V4_FRAG) & (IP_MF | IP_OFFSET) != 0 {
                return Err(Error::Fragment);
            }
            (
                L3Kind::Ipv4,
                frame[l3 + field::V4_PROTO],
                l3 + ihl,
                l3 + total,
            )
        }
        ETHERTYPE_IPV6 => {
            need(frame, "IPv6 header", l3 + 40)?;
            if frame[l3] >> 4 != 6 {
                return Err(Error::BadIpHeader("IPv6 EtherType but version is not 6"));
            }
            let ip_end = l3 + 40 + usize::from(be16(frame, l3 + field::V6_PAYLOAD_LEN));
            let (proto, off) = walk_ipv6_ext(frame, l3, frame[l3 + field::V6_NEXT], ip_end)?;
            (L3Kind::Ipv6, proto, off, ip_end)
        }
        other => return Err(Error::NotIp { ethertype: other }),
    };
    let (l4, csum_offset, min_hdr) = match proto {
        IPPROTO_TCP => (L4Kind::Tcp, field::TCP_CSUM, 20),
        IPPROTO_UDP => (L4Kind::Udp, field::UDP_CSUM, 8),
        proto => return Err(Error::NotTcpUdp { proto }),
    };
    if l4_start + min_hdr > ip_end {
        return Err(Error::BadIpHeader(
            "IP length ends before the TCP/UDP header does",
        ));
    }
    need(frame, "TCP/UDP header", l4_start + min_hdr)?;
    let l4_hdr_len = match l4 {
        L4Kind::Tcp => {
            let doff = usize::from(frame[l4_start + field::TCP_DOFF] >> 4) * 4;
            if doff < 20 {
                return Err(Error::BadTcpHeader);
            }
            if l4_start + doff > ip_end {
                return Err(Error::BadIpHeader("IP length ends inside the TCP options"));
            }
            doff
        }
        L4Kind::Udp => 8,
    };
    Ok(L4Loc {
        l3: kind,
        l4,
        l3_start: l3,
        csum_start: l4_start,
        csum_offset,
        l4_hdr_len,
        ip_end,
    })
}

/// Walks IPv6 extension headers from `next` at `l3 + 40`; returns the upper-layer protocol and
/// its offset.
fn walk_ipv6_ext(
    frame: &[u8],
    l3: usize,
    mut next: u8,
    ip_end: usize,
) -> Result<(u8, usize), Error> {
    let mut off = l3 + 40;
    // Linux walks while `off <= len`; each header advances `off` by at least 8, so this ends.
    while off <= ip_end {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                need(frame, "IPv6 extension header", off + 2)?;
                next = frame[off];
                off += (usize::from(frame[off + 1]) + 1) * 8;
            }
            IPPROTO_AH => {
                need(frame, "IPv6 authentication header", off + 2)?;
                next = frame[off];
                off += (usize::from(frame[off + 1]) + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                need(frame, "IPv6 fragment header", off + 8)?;
                if be16(frame, off + 2) & 0xFFF9 != 0 {
                    // Offset (high 13 bits) non-zero or M (bit 0) set: a real fragment.
                    return Err(Error::Fragment);
                }
                next = frame[off];
                off += 8;
            }
            _ => return Ok((next, off)),
        }
    }
    Err(Error::BadIpHeader(
        "IPv6 extension headers run past the payload length",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_tcp() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + 4];
        put16(&mut f, 12, ETHERTYPE_IPV4);
        f[14] = 0x45;
        put16(&mut f, 16, 20 + 20 + 4);
        f[14 + 9] = IPPROTO_TCP;
        f[34 + 12] = 5 << 4;
        f
    }

    #[test]
    fn locates_plain_ipv4_tcp() {
        let loc = locate(&v4_tcp()).expect("valid frame");
        assert_eq!(loc.csum_start, 34);
        assert_eq!(loc.csum_offset, 16);
        assert_eq!(loc.ip_end, 14 + 44);
        assert_eq!(loc.hdr_len(), 54);
    }

    #[test]
    fn refuses_fragments_short_frames_and_bad_doff() {
        let mut f = v4_tcp();
        put16(&mut f, 14 + 6, 0x2000);
        assert_eq!(locate(&f), Err(Error::Fragment));
        let f = v4_tcp();
        assert!(matches!(locate(&f[..40]), Err(Error::Truncated { .. })));
        let mut f = v4_tcp();
        f[34 + 12] = 4 << 4;
        assert_eq!(locate(&f), Err(Error::BadTcpHeader));
        let mut f = v4_tcp();
        f[14] = 0x44;
        assert!(matches!(locate(&f), Err(Error::BadIpHeader(_))));
    }

    #[test]
    fn vlan_tag_moves_l3() {
        let base = v4_tcp();
        let mut f = base[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        f.extend_from_slice(&base[12..]);
        let loc = locate(&f).expect("tagged frame");
        assert_eq!(loc.l3_start, 18);
        assert_eq!(loc.csum_start, 38);
    }
}
