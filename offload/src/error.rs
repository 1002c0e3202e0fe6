//! The crate's one error type.

use core::fmt;

use crate::GsoKind;

/// Why a frame or a piece of offload metadata was refused.
///
/// Everything a peer controls ends here rather than in a panic. [`Error::is_fatal`] tells a
/// backend which of them Linux's netback treats as a misbehaving frontend (disable the vif) rather
/// than a bad packet (drop it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The frame ends before a header it claims to have, or before the length its IP header
    /// declares.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The Ethernet type is neither IPv4 nor IPv6 (after at most one 802.1Q tag).
    NotIp {
        /// The EtherType found.
        ethertype: u16,
    },
    /// The IP header is malformed: wrong version, IHL below 5, or a total length shorter than
    /// the header.
    BadIpHeader(&'static str),
    /// The packet is an IP fragment: its L4 checksum covers bytes this frame does not hold.
    Fragment,
    /// The L4 protocol (after IPv6 extension headers) is neither TCP nor UDP, or an extension
    /// header Linux does not walk came first.
    NotTcpUdp {
        /// The IP protocol / next-header value found.
        proto: u8,
    },
    /// The TCP data offset is below 5 words.
    BadTcpHeader,
    /// A partial checksum's start and offset point outside the frame.
    CsumOutOfRange {
        /// `csum_start`.
        start: usize,
        /// `csum_offset`.
        offset: usize,
        /// Frame length.
        len: usize,
    },
    /// Segmentation was asked of a frame whose metadata has no GSO.
    NotGso,
    /// GSO size 0.
    GsoSizeZero,
    /// The GSO kind does not match the frame (TCPv4 on an IPv6 frame, or on UDP).
    GsoMismatch {
        /// The kind the metadata claims.
        kind: GsoKind,
    },
    /// The caller's scratch buffer cannot hold one segment.
    ScratchTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// A netif extra-info slot was malformed (Linux netback: fatal for the vif).
    Extra(netif_ring::netif::ExtraError),
    /// A netif extra-info slot was valid but not a GSO slot where one was expected.
    NotGsoExtra {
        /// The slot's type.
        extra_type: u8,
    },
    /// A `virtio_net_hdr` asked for a GSO type this crate does not offer (UDP, USO, unknown).
    VirtioGsoType(u8),
    /// A `virtio_net_hdr` GSO frame whose checksum offset is not TCP's.
    VirtioCsumOffset(u16),
}

impl Error {
    /// True for the errors Linux netback answers by disabling the vif (a malformed extra-info
    /// slot); every other error drops only the packet.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Extra(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated { what, need, have } => write!(
                f,
                "frame too short for its {what}: need {need} bytes, have {have}; drop the frame"
            ),
            Error::NotIp { ethertype } => write!(
                f,
                "EtherType {ethertype:#06x} is not IPv4 or IPv6, so there is no TCP/UDP checksum \
                 to offload; send such frames without offload flags"
            ),
            Error::BadIpHeader(why) => write!(f, "malformed IP header: {why}; drop the frame"),
            Error::Fragment => f.write_str(
                "IP fragment: its TCP/UDP checksum spans other fragments and cannot be set up \
                 here; send fragments without checksum offload",
            ),
            Error::NotTcpUdp { proto } => write!(
                f,
                "IP protocol {proto} is not TCP (6) or UDP (17); checksum offload and GSO cover \
                 only those"
            ),
            Error::BadTcpHeader => {
                f.write_str("TCP data offset below 5 words (20 bytes); drop the frame")
            }
            Error::CsumOutOfRange { start, offset, len } => write!(
                f,
                "checksum start {start} + offset {offset} + 2 lies beyond the {len}-byte frame; \
                 the sender's offload metadata is wrong, drop the frame"
            ),
            Error::NotGso => {
                f.write_str("segmentation asked of a frame without GSO metadata; send it as it is")
            }
            Error::GsoSizeZero => f.write_str("GSO size (MSS) 0; drop the frame"),
            Error::GsoMismatch { kind } => write!(
                f,
                "GSO type {kind:?} does not match the frame's headers; the sender's metadata is \
                 wrong, drop the frame"
            ),
            Error::ScratchTooSmall { need, have } => write!(
                f,
                "segmentation scratch buffer has {have} bytes but one segment needs {need}; \
                 give gso::segment a buffer of gso::MAX_FRAME_LEN bytes"
            ),
            Error::Extra(e) => write!(f, "{e}"),
            Error::NotGsoExtra { extra_type } => write!(
                f,
                "extra-info slot of type {extra_type} where a GSO slot (type 1) was expected; \
                 the peer is misbehaving"
            ),
            Error::VirtioGsoType(t) => write!(
                f,
                "virtio_net_hdr GSO type {t:#04x} is not offered (only TCPv4 1 and TCPv6 4, with \
                 the ECN bit 0x80); turn off UFO/USO on the TAP device (TUNSETOFFLOAD)"
            ),
            Error::VirtioCsumOffset(o) => write!(
                f,
                "virtio_net_hdr TCP GSO frame with checksum offset {o}, TCP's is 16; drop the \
                 frame"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<netif_ring::netif::ExtraError> for Error {
    fn from(e: netif_ring::netif::ExtraError) -> Error {
        Error::Extra(e)
    }
}
