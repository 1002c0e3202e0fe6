//! The crate's one error type.

use crate::GsoKind;

/// Why a frame or a piece of offload metadata was refused.
///
/// Everything a peer controls ends here rather than in a panic. [`Error::is_fatal`] tells a
/// backend which of them Linux's netback treats as a misbehaving frontend (disable the vif) rather
/// than a bad packet (drop it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The frame ends before a header it claims to have, or before the length its IP header
    /// declares.
    #[error("frame too short for its {what}: need {need} bytes, have {have}; drop the frame")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The Ethernet type is neither IPv4 nor IPv6 (after at most one 802.1Q tag).
    #[error(
        "EtherType {ethertype:#06x} is not IPv4 or IPv6, so there is no TCP/UDP checksum to \
         offload; send such frames without offload flags"
    )]
    NotIp {
        /// The EtherType found.
        ethertype: u16,
    },
    /// The IP header is malformed: wrong version, IHL below 5, or a total length shorter than
    /// the header.
    #[error("malformed IP header: {0}; drop the frame")]
    BadIpHeader(&'static str),
    /// The packet is an IP fragment: its L4 checksum covers bytes this frame does not hold.
    #[error(
        "IP fragment: its TCP/UDP checksum spans other fragments and cannot be set up here; send \
         fragments without checksum offload"
    )]
    Fragment,
    /// The L4 protocol (after IPv6 extension headers) is neither TCP nor UDP, or an extension
    /// header Linux does not walk came first.
    #[error(
        "IP protocol {proto} is not TCP (6) or UDP (17); checksum offload and GSO cover only \
         those"
    )]
    NotTcpUdp {
        /// The IP protocol / next-header value found.
        proto: u8,
    },
    /// The TCP data offset is below 5 words.
    #[error("TCP data offset below 5 words (20 bytes); drop the frame")]
    BadTcpHeader,
    /// A partial checksum's start and offset point outside the frame.
    #[error(
        "checksum start {start} + offset {offset} + 2 lies beyond the {len}-byte frame; the \
         sender's offload metadata is wrong, drop the frame"
    )]
    CsumOutOfRange {
        /// `csum_start`.
        start: usize,
        /// `csum_offset`.
        offset: usize,
        /// Frame length.
        len: usize,
    },
    /// Segmentation was asked of a frame whose metadata has no GSO.
    #[error("segmentation asked of a frame without GSO metadata; send it as it is")]
    NotGso,
    /// GSO size 0.
    #[error("GSO size (MSS) 0; drop the frame")]
    GsoSizeZero,
    /// The GSO kind does not match the frame (TCPv4 on an IPv6 frame, or on UDP).
    #[error(
        "GSO type {kind:?} does not match the frame's headers; the sender's metadata is wrong, \
         drop the frame"
    )]
    GsoMismatch {
        /// The kind the metadata claims.
        kind: GsoKind,
    },
    /// Cutting the super-frame would make more segments than [`crate::gso::MAX_SEGS`]: its MSS
    /// is below what any TCP sender uses (a hostile `gso_size`, such as 1 on a 64 KiB frame).
    #[error(
        "GSO super-frame would be cut into {segs} segments (MSS {mss}), more than the {max} a \
         TCP sender's smallest MSS gives; drop the frame"
    )]
    TooManySegments {
        /// Segments it would make.
        segs: usize,
        /// Its MSS.
        mss: u16,
        /// The cap.
        max: usize,
    },
    /// The caller's scratch buffer cannot hold one segment.
    #[error(
        "segmentation scratch buffer has {have} bytes but one segment needs {need}; give \
         gso::segment a buffer of gso::MAX_FRAME_LEN bytes"
    )]
    ScratchTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// A netif extra-info slot was malformed (Linux netback: fatal for the vif).
    // Not `#[from]`: source() stays None, as before (the message is the slot's own).
    #[error("{0}")]
    Extra(netif_ring::netif::ExtraError),
    /// A netif extra-info slot was valid but not a GSO slot where one was expected.
    #[error(
        "extra-info slot of type {extra_type} where a GSO slot (type 1) was expected; the peer \
         is misbehaving"
    )]
    NotGsoExtra {
        /// The slot's type.
        extra_type: u8,
    },
    /// A `virtio_net_hdr` asked for a GSO type this crate does not offer (UDP, USO, unknown).
    ///
    /// The header may come from a TAP or from a packet socket with `PACKET_VNET_HDR` (netbackd
    /// reads both through [`crate::virtio::VirtioNetHdr::to_meta`]), so the advice names both.
    #[error(
        "virtio_net_hdr GSO type {0:#04x} is not offered (only TCPv4 1 and TCPv6 4, with the ECN \
         bit 0x80); turn off UFO/USO on the TAP device (TUNSETOFFLOAD) or, for a packet socket, \
         its interface's UDP segmentation and UDP GRO offloads (ethtool -K)"
    )]
    VirtioGsoType(u8),
    /// A `virtio_net_hdr` GSO frame whose checksum offset is not TCP's.
    #[error("virtio_net_hdr TCP GSO frame with checksum offset {0}, TCP's is 16; drop the frame")]
    VirtioCsumOffset(u16),
}

impl Error {
    /// True for the errors Linux netback answers by disabling the vif (a malformed extra-info
    /// slot); every other error drops only the packet.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Extra(_))
    }
}

impl From<netif_ring::netif::ExtraError> for Error {
    fn from(e: netif_ring::netif::ExtraError) -> Error {
        Error::Extra(e)
    }
}
