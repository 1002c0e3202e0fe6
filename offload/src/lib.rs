//! Checksum offload, GSO and GRO as Linux lays them out, so per-packet costs are paid once per
//! frame of up to 64 KiB.
//!
//! Everything here is pure and allocation-free on the per-frame path: functions take the frame's
//! bytes (or the caller's scratch buffer) and never allocate. The pieces:
//!
//! - [`OffloadMeta`]: the neutral metadata carried beside an Ethernet frame: what is known about
//!   its L4 checksum ([`Csum`]) and whether it is a TCP super-frame to be cut into segments
//!   ([`Gso`]). It is Linux's `skb->ip_summed`/`csum_start`/`csum_offset` and
//!   `skb_shinfo(skb)->gso_{type,size}`, without the skb.
//! - [`csum`]: a fast RFC 1071 internet checksum with an accumulator that takes non-contiguous
//!   chunks ([`csum::Checksum`]); pseudo-header sums; completing a partial checksum, writing one,
//!   verifying one; variants over page-sized chunks.
//! - [`parse::locate`]: where the L4 header and its checksum field are (Linux's
//!   `skb_checksum_setup` walk: Ethernet II, one optional 802.1Q tag, IPv4 with options, IPv6
//!   with hop-by-hop, routing, destination-options, AH and atomic-fragment headers; TCP or UDP).
//! - [`gso::segment`]: software segmentation for an egress that cannot take a super-frame
//!   (Linux's `tcp_gso_segment`), into the caller's one scratch buffer.
//! - [`gro::GroEngine`]: receive coalescing as Linux's NAPI GRO does it (`tcp_gro_receive`,
//!   `inet_gro_receive`, `tcp4_gro_complete`) over frames the caller keeps behind a
//!   [`gro::GroSink`] (a NIC driver's own buffers); [`gro::Gro`] is the same engine over byte
//!   slices, with engine-owned flow buffers lent to the caller.
//! - [`flow::flow_hash`]: a frame's flow as one number, to keep a flow on one queue.
//! - [`netif`]: `NETTXF_*`/`NETRXF_*` flags and the GSO extra-info slot, both directions, as
//!   Linux's netback and netfront lay them out.
//! - [`virtio`]: the 10-byte `virtio_net_hdr` a TAP device with `IFF_VNET_HDR` carries, both
//!   directions, as Linux's `virtio_net_hdr_{to,from}_skb` map it.
//!
//! Every function that reads a frame treats it as hostile: a malformed frame is an [`Error`],
//! never a panic.
#![forbid(unsafe_code)]

pub mod csum;
mod error;
pub mod flow;
pub mod gro;
pub mod gso;
pub mod netif;
pub mod parse;
pub mod virtio;

pub use error::Error;

/// What is known about a frame's L4 (TCP or UDP) checksum; Linux's `skb->ip_summed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Csum {
    /// Nothing is known: the receiver must verify the checksum (`CHECKSUM_NONE`).
    #[default]
    None,
    /// The checksum field holds only the pseudo-header sum (folded, not complemented) and must be
    /// completed before the frame leaves through an egress that cannot do it
    /// (`CHECKSUM_PARTIAL`). `start` is the offset of the L4 header from the start of the
    /// Ethernet frame, `offset` the offset of the checksum field within it (16 for TCP, 6 for
    /// UDP).
    Partial {
        /// Offset of the first byte the checksum covers (the L4 header) in the frame.
        start: u16,
        /// Offset of the checksum field from `start`.
        offset: u16,
    },
    /// The checksum has been verified, or the data is known good (`CHECKSUM_UNNECESSARY`).
    Validated,
}

/// Which segmentation a super-frame needs; Linux's `SKB_GSO_TCPV4`/`SKB_GSO_TCPV6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// TCP over IPv4.
    Tcpv4,
    /// TCP over IPv6.
    Tcpv6,
}

/// Segmentation offload of one TCP super-frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gso {
    /// TCP over IPv4 or IPv6.
    pub kind: GsoKind,
    /// The MSS: TCP payload bytes per segment (`gso_size`). Never 0 in a valid meta.
    pub size: u16,
    /// Every segment keeps the super-frame's IPv4 id instead of incrementing it
    /// (`SKB_GSO_TCP_FIXEDID`), as GRO sets for a DF flow whose ids did not change. Neither netif
    /// nor virtio can carry this bit: across them the segments get incrementing ids, as Linux's
    /// TSO does when it may mangle ids.
    pub fixed_id: bool,
}

impl Gso {
    /// A GSO descriptor with incrementing IPv4 ids.
    pub const fn new(kind: GsoKind, size: u16) -> Gso {
        Gso {
            kind,
            size,
            fixed_id: false,
        }
    }
}

/// Per-frame offload metadata carried beside an Ethernet frame.
///
/// A GSO frame is normally [`Csum::Partial`] (Linux requires it); a GSO frame with another
/// checksum state is still segmented correctly by [`gso::segment`], which computes every
/// segment's checksum from scratch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OffloadMeta {
    /// The L4 checksum's state.
    pub csum: Csum,
    /// Segmentation, if this is a TCP super-frame.
    pub gso: Option<Gso>,
}

impl OffloadMeta {
    /// A plain frame whose checksum nobody has looked at.
    pub const NONE: OffloadMeta = OffloadMeta {
        csum: Csum::None,
        gso: None,
    };

    /// A plain frame whose checksum is known good.
    pub const VALIDATED: OffloadMeta = OffloadMeta {
        csum: Csum::Validated,
        gso: None,
    };
}
