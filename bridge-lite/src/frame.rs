//! Frame handles and the fixed Ethernet header the hot path reads.
//!
//! The switch never copies frame bytes: it moves *handles*. A handle is any cheaply clonable value
//! that can lend the frame's bytes ([`Frame`]). Flooding clones a handle once per extra egress
//! port, so cloning must be cheap: a `Copy` borrow ([`FrameRef`], `&[u8]`) or a refcount
//! (`Arc<[u8]>`, `Rc<[u8]>`).
//!
//! Why a generic handle and not an index into a pool the bridge owns: netback owns the buffers
//! (its tx path copies guest frames into backend pages) and decides when they are recycled. A
//! generic `H: Frame` lets netback pick the cheapest handle for its pool: within one pass the pool
//! is borrowed, so [`FrameRef`] (slot number plus a borrowed slice) is `Copy` and needs no
//! refcount at all; the borrow checker proves the buffers outlive every queued handle, and the
//! pass frees its slots when the queues are drained. A refcounted handle works too, for a caller
//! whose queues outlive the pass.

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use crate::error::BridgeError;

/// Length of the fixed Ethernet II header: destination, source, EtherType.
pub const ETH_HLEN: usize = 14;

/// Mask of the 48 bits a packed MAC address occupies in a `u64`.
pub const MAC_MASK: u64 = 0x0000_ffff_ffff_ffff;

/// The group (multicast) bit of a MAC packed big-endian into a `u64`: the least significant bit
/// of the first octet.
pub const MAC_GROUP_BIT: u64 = 1 << 40;

/// A handle to one frame that the switch can move between queues.
///
/// `Clone` must be cheap (a copy or a refcount increment): flooding clones the handle once per
/// extra egress port. The switch reads `bytes()` only for the length and the first
/// [`ETH_HLEN`] bytes, except when a capture is running on a port the frame crosses.
pub trait Frame: Clone {
    /// The frame's bytes, starting at the Ethernet destination address (no FCS). A handle may
    /// lend only a head of the frame (at least the 14-byte header when the frame has one): a
    /// backend whose frames live in hypervisor pages keeps just the header in the handle, as an
    /// skb keeps a pointer to its MAC header. Captures record what `bytes()` lends, with the
    /// frame's full [`frame_len`](Frame::frame_len) as the original length.
    fn bytes(&self) -> &[u8];

    /// The frame's full length; `bytes().len()` unless the handle lends only a head.
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.bytes().len()
    }
}

impl Frame for &[u8] {
    #[inline(always)]
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Frame for Arc<[u8]> {
    #[inline(always)]
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Frame for Rc<[u8]> {
    #[inline(always)]
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A `Copy` handle into a caller's buffer pool: the slot the frame lives in and a borrow of its
/// bytes. This is the handle netback is expected to use: the slot tells it which backend buffer
/// (and so which guest tx request) a queued frame came from, the borrow ties every queued handle
/// to the pool's lifetime.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Caller-defined slot number (for example the index of a backend buffer).
    pub slot: u32,
    /// The frame's bytes.
    pub data: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// A handle for `data` living in pool slot `slot`.
    pub const fn new(slot: u32, data: &'a [u8]) -> Self {
        Self { slot, data }
    }
}

impl Frame for FrameRef<'_> {
    #[inline(always)]
    fn bytes(&self) -> &[u8] {
        self.data
    }
}

impl fmt::Debug for FrameRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameRef")
            .field("slot", &self.slot)
            .field("len", &self.data.len())
            .finish()
    }
}

/// A 48-bit IEEE MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00 (never a valid source).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The address packed big-endian into the low 48 bits of a `u64` (the table's key form).
    #[inline(always)]
    pub const fn to_u64(self) -> u64 {
        let [a, b, c, d, e, f] = self.0;
        u64::from_be_bytes([0, 0, a, b, c, d, e, f])
    }

    /// The inverse of [`MacAddr::to_u64`]; bits above 48 are ignored.
    #[inline(always)]
    pub const fn from_u64(v: u64) -> Self {
        let [_, _, a, b, c, d, e, f] = v.to_be_bytes();
        MacAddr([a, b, c, d, e, f])
    }

    /// True for group addresses (multicast and broadcast).
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    /// True for ff:ff:ff:ff:ff:ff.
    pub const fn is_broadcast(self) -> bool {
        self.to_u64() == MAC_MASK
    }

    /// A locally administered unicast address built from a number, for tests and tools:
    /// `02:00:nn:nn:nn:nn`.
    pub const fn local(n: u32) -> Self {
        let [a, b, c, d] = n.to_be_bytes();
        MacAddr([0x02, 0x00, a, b, c, d])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl std::str::FromStr for MacAddr {
    type Err = BridgeError;

    /// Parses `aa:bb:cc:dd:ee:ff` (hex, case-insensitive), as xenstore's `mac` node holds it.
    fn from_str(s: &str) -> Result<Self, BridgeError> {
        let bad = || BridgeError::BadMacString(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.trim().split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// Reads the destination and source MAC of a frame, packed as in [`MacAddr::to_u64`], or `None`
/// when the frame is shorter than [`ETH_HLEN`]. This is all the hot path parses.
#[inline(always)]
pub fn read_macs(frame: &[u8]) -> Option<(u64, u64)> {
    let hdr: &[u8; ETH_HLEN] = frame.get(..ETH_HLEN)?.try_into().ok()?;
    let [d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5, _, _] = *hdr;
    let dst = u64::from_be_bytes([0, 0, d0, d1, d2, d3, d4, d5]);
    let src = u64::from_be_bytes([0, 0, s0, s1, s2, s3, s4, s5]);
    Some((dst, src))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_packing_round_trips_and_keeps_the_group_bit() {
        let m = MacAddr([0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa]);
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert!(m.is_multicast());
        assert_ne!(m.to_u64() & MAC_GROUP_BIT, 0);
        let u = MacAddr::local(7);
        assert!(!u.is_multicast());
        assert_eq!(u.to_u64() & MAC_GROUP_BIT, 0);
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert_eq!(u.to_string(), "02:00:00:00:00:07");
    }

    #[test]
    fn read_macs_rejects_short_frames() {
        assert_eq!(read_macs(&[0u8; 13]), None);
        let mut f = [0u8; 14];
        f[..6].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        f[6..12].copy_from_slice(&[7, 8, 9, 10, 11, 12]);
        let (d, s) = read_macs(&f).unwrap();
        assert_eq!(MacAddr::from_u64(d), MacAddr([1, 2, 3, 4, 5, 6]));
        assert_eq!(MacAddr::from_u64(s), MacAddr([7, 8, 9, 10, 11, 12]));
    }
}

#[cfg(test)]
mod mac_tests {
    use super::*;

    #[test]
    fn mac_strings_parse_like_xenstore_writes_them() {
        let m: MacAddr = "00:16:3e:0A:00:02".parse().unwrap();
        assert_eq!(m, MacAddr([0x00, 0x16, 0x3e, 0x0a, 0x00, 0x02]));
        assert_eq!(m.to_string(), "00:16:3e:0a:00:02");
        for bad in [
            "",
            "00:16:3e:00:00",
            "00:16:3e:00:00:02:03",
            "00:16:3e:00:00:2g",
            "0016:3e:00:00:02:03:",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
    }
}
