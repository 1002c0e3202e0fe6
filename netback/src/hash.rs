//! Receive-side hashing a guest sets up over its ctrl ring (Linux's `hash.c`): the algorithm
//! (Toeplitz or none), the packet types to hash, the key, and the table mapping a hash to one of
//! the vif's queues. With hashing on, a frame from the switch goes to `mapping[hash % size]` (or
//! `hash % queues` with no table), as Linux's `xenvif_select_queue`, and reaches the guest with a
//! `XEN_NETIF_EXTRA_TYPE_HASH` extra carrying the value. With hashing off (the default, and every
//! vif without a ctrl ring) nothing here runs: the vif has no `VifHash` at all.
//!
//! The hash input is netif.h's (and `xenvif_set_skb_hash`'s): for IPv4 the source and
//! destination addresses, then for TCP (not a fragment) the source and destination ports, all
//! as they lie in the packet; IPv6 likewise, after its extension headers. The "maximal" type the
//! guest enabled wins: a TCP packet is hashed with its ports when the guest asked for the TCP
//! type, else by addresses alone when it asked for that; a packet of a protocol whose types are
//! all off (ARP, or IPv6 when only IPv4 is on) gets no hash, and goes to queue `mapping[0]`.

use netif_ring::ctrl::{
    _XEN_NETIF_CTRL_HASH_TYPE_IPV4, _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
    _XEN_NETIF_CTRL_HASH_TYPE_IPV6, _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP,
    XEN_NETIF_CTRL_HASH_ALGORITHM_NONE, XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
    XEN_NETIF_CTRL_HASH_TYPE_IPV4, XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
    XEN_NETIF_CTRL_HASH_TYPE_IPV6, XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, toeplitz_hash,
};

/// Key bytes kept (Linux's `XEN_NETBK_MAX_HASH_KEY_SIZE`).
pub const MAX_HASH_KEY: usize = 40;
/// Entries of the largest mapping table (Linux's `XEN_NETBK_MAX_HASH_MAPPING_SIZE`).
pub const MAX_HASH_MAPPING: u32 = 128;
/// Extension headers walked in an IPv6 packet before giving up on finding its transport
/// (Linux's `MAX_FLOW_DISSECT_HDRS`).
const MAX_IPV6_EXT: usize = 15;

/// A frame's hash as its `XEN_NETIF_EXTRA_TYPE_HASH` extra carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxHash {
    /// The Toeplitz value.
    pub value: u32,
    /// `_XEN_NETIF_CTRL_HASH_TYPE_*`: which input was hashed.
    pub hash_type: u8,
}

/// A vif's hash settings, as a snapshot ([`crate::Vif::hash_settings`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HashSettings {
    /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
    pub algorithm: u32,
    /// `XEN_NETIF_CTRL_HASH_TYPE_*` mask.
    pub flags: u32,
    /// The key, zero-padded to [`MAX_HASH_KEY`] bytes.
    pub key: Vec<u8>,
    /// The mapping table (empty: `hash % queues`).
    pub mapping: Vec<u32>,
}

/// A vif's hash settings (Linux's `struct xenvif_hash`, without its cache: a Toeplitz hash of
/// at most 36 bytes costs less than looking one up).
#[derive(Debug, Clone)]
pub(crate) struct VifHash {
    pub(crate) alg: u32,
    pub(crate) flags: u32,
    pub(crate) key: [u8; MAX_HASH_KEY],
    /// `size` entries, each below the vif's queue count (checked when set).
    pub(crate) mapping: Vec<u32>,
}

impl Default for VifHash {
    fn default() -> Self {
        Self {
            alg: XEN_NETIF_CTRL_HASH_ALGORITHM_NONE,
            flags: 0,
            key: [0; MAX_HASH_KEY],
            mapping: Vec::new(),
        }
    }
}

impl VifHash {
    /// Whether frames are hashed (the guest chose Toeplitz).
    pub(crate) fn active(&self) -> bool {
        self.alg == XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ
    }

    pub(crate) fn settings(&self) -> HashSettings {
        HashSettings {
            algorithm: self.alg,
            flags: self.flags,
            key: self.key.to_vec(),
            mapping: self.mapping.clone(),
        }
    }

    /// The frame's hash, if the guest enabled a type that covers it (`xenvif_set_skb_hash`).
    /// `head` is the frame's first bytes; `more` reads up to [`crate::pool::HDR_PEEK`] of them
    /// when an IPv6 extension-header chain runs past `head` (rare; never for IPv4).
    pub(crate) fn hash(
        &self,
        head: &[u8],
        more: impl FnOnce(&mut [u8]) -> usize,
    ) -> Option<RxHash> {
        let mut input = [0u8; 36];
        let (len, hash_type) = match hash_input(head, self.flags, &mut input) {
            Input::Some(len, t) => (len, t),
            Input::None => return None,
            Input::Truncated => {
                let mut buf = [0u8; crate::pool::HDR_PEEK];
                let n = more(&mut buf);
                match hash_input(&buf[..n], self.flags, &mut input) {
                    Input::Some(len, t) => (len, t),
                    // The packet ends inside its extension headers: Linux's dissector gives
                    // up on it (no hash).
                    Input::Truncated if n < buf.len() => return None,
                    // Headers longer than a header read covers: hashed by addresses alone,
                    // if that type is on.
                    Input::Truncated => hash_input_l3_only(&buf[..n], self.flags, &mut input)?,
                    Input::None => return None,
                }
            }
        };
        Some(RxHash {
            value: toeplitz_hash(&self.key, &input[..len]),
            hash_type,
        })
    }

    /// The queue a frame goes to with hashing on, and its hash (`xenvif_select_queue`): no hash
    /// counts as 0, so such frames take `mapping[0]` (queue 0 without a table).
    pub(crate) fn select(
        &self,
        head: &[u8],
        more: impl FnOnce(&mut [u8]) -> usize,
        queues: usize,
    ) -> (usize, Option<RxHash>) {
        let h = self.hash(head, more);
        let raw = h.map_or(0, |h| h.value) as usize;
        let q = if self.mapping.is_empty() {
            raw % queues
        } else {
            // Entries were checked against the queue count when set; the queue count never
            // changes while the vif is connected.
            self.mapping[raw % self.mapping.len()] as usize
        };
        (if q < queues { q } else { 0 }, h)
    }
}

/// What a frame's headers give to hash.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    /// `len` bytes of input in the buffer, of `_XEN_NETIF_CTRL_HASH_TYPE_*` type.
    Some(usize, u8),
    /// Nothing to hash: not IP, a type the guest did not enable, or malformed headers.
    None,
    /// The headers run past the bytes given.
    Truncated,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Fills `out` with the frame's hash input for the enabled `flags`.
fn hash_input(f: &[u8], flags: u32, out: &mut [u8; 36]) -> Input {
    const L3: usize = 14;
    match be16(f, 12) {
        Some(0x0800)
            if flags & (XEN_NETIF_CTRL_HASH_TYPE_IPV4 | XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP) != 0 =>
        {
            let Some(ip) = f.get(L3..L3 + 20) else {
                return Input::None;
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl < 20 {
                return Input::None;
            }
            out[..8].copy_from_slice(&ip[12..20]);
            // A fragment (more fragments, or an offset) carries no ports worth hashing.
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            if ip[9] == 6 && !fragment && flags & XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP != 0 {
                // Ports the packet is too short to hold read as zeros, as Linux's dissector
                // leaves them.
                if let Some(p) = f.get(L3 + ihl..L3 + ihl + 4) {
                    out[8..12].copy_from_slice(p);
                } else {
                    out[8..12].fill(0);
                }
                Input::Some(12, _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP)
            } else if flags & XEN_NETIF_CTRL_HASH_TYPE_IPV4 != 0 {
                Input::Some(8, _XEN_NETIF_CTRL_HASH_TYPE_IPV4)
            } else {
                Input::None
            }
        }
        Some(0x86dd)
            if flags & (XEN_NETIF_CTRL_HASH_TYPE_IPV6 | XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP) != 0 =>
        {
            let Some(ip) = f.get(L3..L3 + 40) else {
                return Input::None;
            };
            out[..32].copy_from_slice(&ip[8..40]);
            let tcp_wanted = flags & XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP != 0;
            let transport = if tcp_wanted {
                match ipv6_transport(f, L3 + 40, ip[6]) {
                    Some(t) => t,
                    None => return Input::Truncated,
                }
            } else {
                None
            };
            if let Some(at) = transport {
                if let Some(p) = f.get(at..at + 4) {
                    out[32..36].copy_from_slice(p);
                } else {
                    out[32..36].fill(0);
                }
                Input::Some(36, _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP)
            } else if flags & XEN_NETIF_CTRL_HASH_TYPE_IPV6 != 0 {
                Input::Some(32, _XEN_NETIF_CTRL_HASH_TYPE_IPV6)
            } else {
                Input::None
            }
        }
        _ => Input::None,
    }
}

/// The address-only input of an IP frame, for headers too long to follow to the transport.
fn hash_input_l3_only(f: &[u8], flags: u32, out: &mut [u8; 36]) -> Option<(usize, u8)> {
    match hash_input(
        f,
        flags & !(XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP | XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP),
        out,
    ) {
        Input::Some(len, t) => Some((len, t)),
        _ => None,
    }
}

/// Follows IPv6 extension headers from `at` (next header `nh`): `Some(Some(offset))` of a TCP
/// header that is not in a fragment, `Some(None)` for any other transport, `None` when the chain
/// runs past the bytes given (the caller decides with more bytes whether the packet itself ends
/// there).
fn ipv6_transport(f: &[u8], mut at: usize, mut nh: u8) -> Option<Option<usize>> {
    for _ in 0..MAX_IPV6_EXT {
        match nh {
            6 => return Some(Some(at)),
            // Hop-by-hop, routing, destination options: (length + 1) * 8 bytes.
            0 | 43 | 60 => {
                let (&next, &len) = (f.get(at)?, f.get(at + 1)?);
                nh = next;
                at += (usize::from(len) + 1) * 8;
            }
            // A fragment header (44) or any other transport: not TCP, as Linux's dissector
            // stops at fragments.
            _ => return Some(None),
        }
    }
    // More headers than the dissector walks: not TCP.
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netif_ring::ctrl::XEN_NETIF_CTRL_HASH_TYPE_ALL;

    const KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    fn hashing(flags: u32) -> VifHash {
        VifHash {
            alg: XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
            flags,
            key: KEY,
            mapping: Vec::new(),
        }
    }

    /// An Ethernet + IPv4 frame from 66.9.149.187:2794 to 161.142.100.80:1766 (the first RSS
    /// vector) of protocol `proto`, with `frag` as its fragment field.
    fn ipv4(proto: u8, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[14 + 6..14 + 8].copy_from_slice(&frag.to_be_bytes());
        f[14 + 9] = proto;
        f[14 + 12..14 + 16].copy_from_slice(&[66, 9, 149, 187]);
        f[14 + 16..14 + 20].copy_from_slice(&[161, 142, 100, 80]);
        f[34..36].copy_from_slice(&2794u16.to_be_bytes());
        f[36..38].copy_from_slice(&1766u16.to_be_bytes());
        f
    }

    fn none(_: &mut [u8]) -> usize {
        0
    }

    #[test]
    fn tcp_over_ipv4_takes_the_maximal_type_the_guest_enabled() {
        let f = ipv4(6, 0);
        let all = hashing(XEN_NETIF_CTRL_HASH_TYPE_ALL).hash(&f, none);
        assert_eq!(
            all,
            Some(RxHash {
                value: 0x51ccc178,
                hash_type: _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP
            })
        );
        let l3 = hashing(XEN_NETIF_CTRL_HASH_TYPE_IPV4).hash(&f, none);
        assert_eq!(
            l3,
            Some(RxHash {
                value: 0x323e8fc2,
                hash_type: _XEN_NETIF_CTRL_HASH_TYPE_IPV4
            })
        );
        // Only the TCP type: UDP gets nothing, a fragment of TCP gets nothing.
        let tcp_only = hashing(XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
        assert_eq!(tcp_only.hash(&ipv4(17, 0), none), None);
        assert_eq!(tcp_only.hash(&ipv4(6, 0x2000), none), None);
        // A fragment with the IPv4 type too is hashed by its addresses.
        let both = hashing(XEN_NETIF_CTRL_HASH_TYPE_IPV4 | XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
        assert_eq!(
            both.hash(&ipv4(6, 0x0010), none).map(|h| h.value),
            Some(0x323e8fc2)
        );
        // IPv6 types do not cover IPv4.
        assert_eq!(hashing(XEN_NETIF_CTRL_HASH_TYPE_IPV6).hash(&f, none), None);
    }

    #[test]
    fn frames_that_are_not_ip_or_cut_short_get_no_hash_and_never_panic() {
        let h = hashing(XEN_NETIF_CTRL_HASH_TYPE_ALL);
        let mut arp = ipv4(6, 0);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(h.hash(&arp, none), None);
        let f = ipv4(6, 0);
        for n in 0..f.len() {
            let _ = h.hash(&f[..n], none);
        }
        // IHL under 5 is malformed.
        let mut bad = ipv4(6, 0);
        bad[14] = 0x44;
        assert_eq!(h.hash(&bad, none), None);
    }

    #[test]
    fn ipv6_walks_extension_headers_to_tcp_and_stops_at_fragments() {
        let src: [u8; 16] = "3ffe:2501:200:1fff::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let dst: [u8; 16] = "3ffe:2501:200:3::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let frame = |ext: &[u8], first_nh: u8| {
            let mut f = vec![0u8; 14];
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[6] = first_nh;
            ip[8..24].copy_from_slice(&src);
            ip[24..40].copy_from_slice(&dst);
            f.extend_from_slice(&ip);
            f.extend_from_slice(ext);
            f.extend_from_slice(&2794u16.to_be_bytes());
            f.extend_from_slice(&1766u16.to_be_bytes());
            f.extend_from_slice(&[0; 16]);
            f
        };
        let h = hashing(XEN_NETIF_CTRL_HASH_TYPE_ALL);
        let plain = frame(&[], 6);
        assert_eq!(h.hash(&plain, none).map(|h| h.value), Some(0x40207d3d));
        // A hop-by-hop header (8 bytes, next TCP) in front of TCP: same 4-tuple hash.
        let hop = frame(&[6, 0, 0, 0, 0, 0, 0, 0], 0);
        assert_eq!(h.hash(&hop, none).map(|h| h.value), Some(0x40207d3d));
        // A fragment header: addresses only.
        let frag = frame(&[6, 0, 0, 0, 0, 0, 0, 0], 44);
        assert_eq!(
            h.hash(&frag, none),
            Some(RxHash {
                value: 0x2cc18cd5,
                hash_type: _XEN_NETIF_CTRL_HASH_TYPE_IPV6
            })
        );
        // A chain running past the head asks for more bytes, and uses them.
        let head = &hop[..14 + 40 + 1];
        let got = h.hash(head, |buf| {
            buf[..hop.len()].copy_from_slice(&hop);
            hop.len()
        });
        assert_eq!(got.map(|h| h.value), Some(0x40207d3d));
    }

    #[test]
    fn the_mapping_table_chooses_the_queue() {
        let f = ipv4(6, 0); // hash 0x51ccc178
        let mut h = hashing(XEN_NETIF_CTRL_HASH_TYPE_ALL);
        assert_eq!(h.select(&f, none, 4).0, 0x51ccc178 % 4);
        h.mapping = vec![0, 1, 2, 3, 3, 2, 1];
        let idx = 0x51ccc178usize % 7;
        assert_eq!(h.select(&f, none, 4).0, h.mapping[idx] as usize);
        // No hash (ARP): mapping[0].
        h.mapping[0] = 2;
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(h.select(&arp, none, 4), (2, None));
    }
}
