//! The virtio-net header a TAP opened with `IFF_VNET_HDR` puts before every frame it hands out
//! and expects before every frame written to it (linux/virtio_net.h, `struct virtio_net_hdr`
//! and `struct virtio_net_hdr_mrg_rxbuf`).
//!
//! All fields are little-endian: [`Tap`](crate::tap::Tap) sets `TUNSETVNETLE`, so this holds on
//! any host. Mapping these fields to netif's flags and GSO extras is the caller's business.
//!
//! ```
//! use hostnet::vnet::{HdrLen, VirtioNetHdr, FLAG_NEEDS_CSUM, GSO_NONE};
//!
//! let hdr = VirtioNetHdr::new(FLAG_NEEDS_CSUM, GSO_NONE, 0, 0, 34, 6);
//! let mut buf = [0u8; 12 + 60];
//! hdr.emit(&mut buf, HdrLen::MrgRxbuf).unwrap();
//! let (parsed, frame) = VirtioNetHdr::parse(&buf, HdrLen::MrgRxbuf).unwrap();
//! assert_eq!(parsed, hdr);
//! assert_eq!(frame.len(), 60);
//! ```

use zerocopy::byteorder::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` to the end still has to be
/// computed and stored at `csum_start + csum_offset`; the field holds the pseudo-header sum.
pub const FLAG_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified (received frames only).
pub const FLAG_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_F_RSC_INFO`: `csum_start`/`csum_offset` carry coalescing info instead.
pub const FLAG_RSC_INFO: u8 = 4;

/// `VIRTIO_NET_HDR_GSO_NONE`: not a GSO frame.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`: TCP over IPv4 to be cut into `gso_size`-byte segments.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP`: UDP fragmentation offload (UFO, IPv4 fragments).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`: UDP segmentation (USO), one datagram per segment.
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: set with a TCP type when the TCP header has CWR set.
pub const GSO_ECN: u8 = 0x80;

/// Which header a TAP uses (`TUNSETVNETHDRSZ`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HdrLen {
    /// `struct virtio_net_hdr`, 10 bytes: the legacy header.
    #[default]
    Legacy,
    /// `struct virtio_net_hdr_mrg_rxbuf`, 12 bytes: adds `num_buffers` (the virtio 1.0 layout).
    MrgRxbuf,
}

impl HdrLen {
    /// The header's size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            HdrLen::Legacy => size_of::<VirtioNetHdr>(),
            HdrLen::MrgRxbuf => size_of::<VirtioNetHdrMrgRxbuf>(),
        }
    }
}

/// `struct virtio_net_hdr` (10 bytes, little-endian, no padding).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct VirtioNetHdr {
    /// `FLAG_*`.
    pub flags: u8,
    /// `GSO_*`, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the Ethernet + IP + transport headers (a hint; Linux recomputes it).
    pub hdr_len: U16,
    /// Segment payload size (the MSS) for GSO frames.
    pub gso_size: U16,
    /// Offset from the start of the frame where checksumming starts.
    pub csum_start: U16,
    /// Offset from `csum_start` of the checksum field.
    pub csum_offset: U16,
}

/// `struct virtio_net_hdr_mrg_rxbuf` (12 bytes): the header and `num_buffers`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct VirtioNetHdrMrgRxbuf {
    /// The legacy header.
    pub hdr: VirtioNetHdr,
    /// How many receive buffers the frame spans (a TAP writes 1 or 0; ignored on transmit).
    pub num_buffers: U16,
}

const _: () = {
    use std::mem::offset_of;
    assert!(size_of::<VirtioNetHdr>() == 10);
    assert!(size_of::<VirtioNetHdrMrgRxbuf>() == 12);
    assert!(offset_of!(VirtioNetHdr, flags) == 0);
    assert!(offset_of!(VirtioNetHdr, gso_type) == 1);
    assert!(offset_of!(VirtioNetHdr, hdr_len) == 2);
    assert!(offset_of!(VirtioNetHdr, gso_size) == 4);
    assert!(offset_of!(VirtioNetHdr, csum_start) == 6);
    assert!(offset_of!(VirtioNetHdr, csum_offset) == 8);
    assert!(offset_of!(VirtioNetHdrMrgRxbuf, num_buffers) == 10);
};

impl VirtioNetHdr {
    /// A header from host-order values.
    pub fn new(
        flags: u8,
        gso_type: u8,
        hdr_len: u16,
        gso_size: u16,
        csum_start: u16,
        csum_offset: u16,
    ) -> Self {
        VirtioNetHdr {
            flags,
            gso_type,
            hdr_len: hdr_len.into(),
            gso_size: gso_size.into(),
            csum_start: csum_start.into(),
            csum_offset: csum_offset.into(),
        }
    }

    /// Splits `buf` (as read from a TAP) into its header and the Ethernet frame after it.
    /// `None` when `buf` is shorter than the header. For [`HdrLen::MrgRxbuf`] `num_buffers`
    /// is skipped (a TAP frame always fits one read).
    pub fn parse(buf: &[u8], len: HdrLen) -> Option<(Self, &[u8])> {
        let (hdr, _) = VirtioNetHdr::read_from_prefix(buf).ok()?;
        let frame = buf.get(len.bytes()..)?;
        Some((hdr, frame))
    }

    /// Writes the header at the start of `buf` (`num_buffers` = 0 for [`HdrLen::MrgRxbuf`]).
    /// Returns the header's length, or `None` when `buf` is too short.
    pub fn emit(&self, buf: &mut [u8], len: HdrLen) -> Option<usize> {
        let out = buf.get_mut(..len.bytes())?;
        let (head, rest) = out.split_at_mut(size_of::<VirtioNetHdr>());
        head.copy_from_slice(self.as_bytes());
        rest.fill(0);
        Some(len.bytes())
    }

    /// Whether [`FLAG_NEEDS_CSUM`] is set.
    pub fn needs_csum(&self) -> bool {
        self.flags & FLAG_NEEDS_CSUM != 0
    }

    /// The GSO type without [`GSO_ECN`].
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_linux() {
        assert_eq!(HdrLen::Legacy.bytes(), 10);
        assert_eq!(HdrLen::MrgRxbuf.bytes(), 12);
        assert_eq!(align_of::<VirtioNetHdr>(), 1);
        // Little-endian on the wire, whatever the host.
        let hdr = VirtioNetHdr::new(
            FLAG_NEEDS_CSUM,
            GSO_TCPV4 | GSO_ECN,
            0x0142,
            0x05a8,
            0x0022,
            0x0010,
        );
        assert_eq!(
            hdr.as_bytes(),
            &[1, 0x81, 0x42, 0x01, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00]
        );
        assert_eq!(hdr.gso_kind(), GSO_TCPV4);
        assert!(hdr.needs_csum());
    }

    #[test]
    fn parse_and_emit_round_trip() {
        let hdr = VirtioNetHdr::new(FLAG_DATA_VALID, GSO_TCPV6, 74, 1440, 54, 16);
        for len in [HdrLen::Legacy, HdrLen::MrgRxbuf] {
            let mut buf = [0xffu8; 12 + 4];
            assert_eq!(hdr.emit(&mut buf, len), Some(len.bytes()));
            if len == HdrLen::MrgRxbuf {
                assert_eq!(&buf[10..12], &[0, 0], "num_buffers is zeroed");
            }
            let (back, frame) = VirtioNetHdr::parse(&buf[..len.bytes() + 4], len).unwrap();
            assert_eq!(back, hdr);
            assert_eq!(frame, &[0xff; 4]);
        }
    }

    #[test]
    fn short_buffers_are_refused() {
        let hdr = VirtioNetHdr::default();
        assert_eq!(hdr.emit(&mut [0u8; 11], HdrLen::MrgRxbuf), None);
        assert!(VirtioNetHdr::parse(&[0u8; 9], HdrLen::Legacy).is_none());
        assert!(VirtioNetHdr::parse(&[0u8; 11], HdrLen::MrgRxbuf).is_none());
        let (_, frame) = VirtioNetHdr::parse(&[0u8; 10], HdrLen::Legacy).unwrap();
        assert!(frame.is_empty());
    }
}
