//! The `virtio_net_hdr` a TAP device opened with `IFF_VNET_HDR` puts before every frame, and its
//! mapping to [`OffloadMeta`] both ways, as Linux's `virtio_net_hdr_to_skb` (frames written to
//! the TAP) and `virtio_net_hdr_from_skb` (frames read from it) do it.
//!
//! The header is the 10-byte legacy layout, little-endian: the byte order of a legacy header on
//! every host this workspace builds for (it refuses big-endian hosts), and of a TAP set to
//! `TUNSETVNETLE`.
//!
//! | field | offset | |
//! |---|---|---|
//! | flags | 0 | `NEEDS_CSUM` 1 ↔ [`Csum::Partial`], `DATA_VALID` 2 ↔ [`Csum::Validated`] |
//! | gso_type | 1 | `TCPV4` 1, `TCPV6` 4 ↔ [`GsoKind`]; `ECN` 0x80 accepted, emitted when the frame has CWR |
//! | hdr_len | 2 | Ethernet + IP + TCP header length on emit; ignored on read |
//! | gso_size | 4 | ↔ [`Gso::size`] |
//! | csum_start | 6 | ↔ `Partial::start` |
//! | csum_offset | 8 | ↔ `Partial::offset` |
//!
//! UDP fragmentation (`UDP` 3) and UDP segmentation (`UDP_L4` 5) are refused: do not enable
//! `TUN_F_UFO`/`TUN_F_USO*` on the device.

use crate::parse::{self, field, tcp_flags};
use crate::{Csum, Error, Gso, GsoKind, OffloadMeta};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start` to the end, store at
/// `csum_start + csum_offset`.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum has been verified.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO; refused here).
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`: the super-frame's first segment carries CWR.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr`, the legacy 10-byte header, as plain fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with `VIRTIO_NET_HDR_GSO_ECN`.
    pub gso_type: u8,
    /// Length of the headers (a hint for how much to keep linear).
    pub hdr_len: u16,
    /// MSS of a GSO frame.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the Ethernet frame.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// Size of the header on the wire.
    pub const LEN: usize = 10;

    /// Reads the header from its 10 bytes.
    pub fn from_bytes(b: &[u8; 10]) -> VirtioNetHdr {
        let le = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        }
    }

    /// The header's 10 bytes.
    pub fn to_bytes(&self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// The offload metadata of `frame`, which arrived behind this header (read from a TAP, or
    /// to be written into one). Follows `virtio_net_hdr_to_skb`: GSO size 0 or an unknown or UDP
    /// GSO type is refused; the checksum range must lie in the frame (and reach past the TCP
    /// header for GSO); a TCP GSO frame's checksum offset must be 16; a GSO frame whose payload
    /// fits in one MSS is not GSO (Linux counts the bytes after a bare 20-byte TCP header, so
    /// options count as payload here); a GSO frame without `NEEDS_CSUM` must be TCP over the IP
    /// version its type names.
    pub fn to_meta(&self, frame: &[u8]) -> Result<OffloadMeta, Error> {
        let kind = match self.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
            _ if self.gso_type == VIRTIO_NET_HDR_GSO_NONE => None,
            VIRTIO_NET_HDR_GSO_TCPV4 => Some(GsoKind::Tcpv4),
            VIRTIO_NET_HDR_GSO_TCPV6 => Some(GsoKind::Tcpv6),
            _ => return Err(Error::VirtioGsoType(self.gso_type)),
        };
        if kind.is_some() && self.gso_size == 0 {
            return Err(Error::GsoSizeZero);
        }
        let thlen = if kind.is_some() { 20 } else { 0 };
        let (csum, payload_off) = if self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            let start = usize::from(self.csum_start);
            let offset = usize::from(self.csum_offset);
            if start + thlen.max(offset + 2) > frame.len() {
                return Err(Error::CsumOutOfRange {
                    start,
                    offset,
                    len: frame.len(),
                });
            }
            if kind.is_some() && offset != field::TCP_CSUM {
                return Err(Error::VirtioCsumOffset(self.csum_offset));
            }
            let csum = Csum::Partial {
                start: self.csum_start,
                offset: self.csum_offset,
            };
            (csum, start + thlen)
        } else {
            let csum = if self.flags & VIRTIO_NET_HDR_F_DATA_VALID != 0 {
                Csum::Validated
            } else {
                Csum::None
            };
            let mut payload_off = 0;
            if let Some(kind) = kind {
                // Linux probes the headers of a GSO frame that names no checksum range.
                let loc = parse::locate(frame)?;
                if loc.gso_kind() != Some(kind) {
                    return Err(Error::GsoMismatch { kind });
                }
                payload_off = loc.csum_start + thlen;
            }
            (csum, payload_off)
        };
        // "Too small packets are not really GSO ones."
        let gso = kind
            .filter(|_| frame.len().saturating_sub(payload_off) > usize::from(self.gso_size))
            .map(|kind| Gso::new(kind, self.gso_size));
        Ok(OffloadMeta { csum, gso })
    }

    /// The header to put before `frame` for its offload metadata, as `virtio_net_hdr_from_skb`
    /// with `has_data_valid`: `NEEDS_CSUM` and the range for a partial checksum, `DATA_VALID`
    /// for a validated one; for GSO the type (with `ECN` when the frame's TCP header has CWR),
    /// the MSS and `hdr_len` = Ethernet + IP + TCP header length.
    pub fn from_meta(meta: &OffloadMeta, frame: &[u8]) -> Result<VirtioNetHdr, Error> {
        let mut h = VirtioNetHdr::default();
        if let Some(g) = meta.gso {
            let loc = parse::locate(frame)?;
            if loc.gso_kind() != Some(g.kind) {
                return Err(Error::GsoMismatch { kind: g.kind });
            }
            h.gso_type = match g.kind {
                GsoKind::Tcpv4 => VIRTIO_NET_HDR_GSO_TCPV4,
                GsoKind::Tcpv6 => VIRTIO_NET_HDR_GSO_TCPV6,
            };
            if frame[loc.csum_start + field::TCP_FLAGS] & tcp_flags::CWR != 0 {
                h.gso_type |= VIRTIO_NET_HDR_GSO_ECN;
            }
            h.gso_size = g.size;
            h.hdr_len = loc.hdr_len() as u16;
        }
        match meta.csum {
            Csum::Partial { start, offset } => {
                h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
                h.csum_start = start;
                h.csum_offset = offset;
            }
            Csum::Validated => h.flags = VIRTIO_NET_HDR_F_DATA_VALID,
            Csum::None => {}
        }
        Ok(h)
    }
}
