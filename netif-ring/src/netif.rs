//! Wire structs and constants of Xen's `io/netif.h`, byte-exact.
//!
//! Every struct is `#[repr(C)]` with zerocopy derives, so it is read from and written to ring
//! slots without hand-written casts; the assertions at the bottom pin every size and field offset
//! to the C header. Fields are in the guest's byte order, which on every architecture Xen's netif
//! runs on (x86, Arm) is little-endian; a big-endian build is refused at compile time.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[cfg(target_endian = "big")]
compile_error!("netif wire structs are little-endian; splitnet does not support big-endian hosts");

/// `netif_tx_request_t`: one slot of a packet the frontend transmits.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct TxRequest {
    /// Grant reference of the page holding this slot's data.
    pub gref: u32,
    /// Offset of the data within the page.
    pub offset: u16,
    /// `NETTXF_*` flags.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// First slot: total packet size. Later slots: this fragment's size.
    pub size: u16,
}

/// `netif_tx_response_t`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct TxResponse {
    /// The request's `id`.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// `netif_rx_request_t`: an empty buffer the frontend posts for the backend to fill.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct RxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Padding (`pad` in netif.h).
    pub pad: u16,
    /// Grant reference of the buffer page (copy mode) or of the accept-transfer entry (flip mode).
    pub gref: u32,
}

/// `netif_rx_response_t`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct RxResponse {
    /// The request's `id`.
    pub id: u16,
    /// Offset of the data within the page.
    pub offset: u16,
    /// `NETRXF_*` flags.
    pub flags: u16,
    /// Negative: `NETIF_RSP_*` error. Otherwise the number of bytes in this slot.
    pub status: i16,
}

/// `netif_extra_info_t`: an extra-info slot that follows a request with `NETTXF_extra_info` (or a
/// response with `NETRXF_extra_info`). The union `u` is kept as raw bytes; [`ExtraRepr`] parses it.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The union: gso, mcast or hash, by `type_`.
    pub u: [u8; 6],
}

/// The `gso` member of the extra-info union.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GsoInfo {
    /// Maximum payload size of each segment.
    pub size: u16,
    /// `XEN_NETIF_GSO_TYPE_*`.
    pub type_: u8,
    /// Padding.
    pub pad: u8,
    /// `XEN_NETIF_GSO_FEAT_*` (none defined).
    pub features: u16,
}

/// The `hash` member of the extra-info union.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct HashInfo {
    /// `_XEN_NETIF_CTRL_HASH_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
    pub algorithm: u8,
    /// The hash value.
    pub value: [u8; 4],
}

// NETTXF_*: flags of a tx request.
/// Protocol checksum field is blank in the packet (hardware offload).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// Packet data has been validated against protocol checksum.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// Packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// Packet to be followed by an extra-info slot.
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

// NETRXF_*: flags of an rx response.
/// Packet data has been validated against protocol checksum.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// Protocol checksum field is blank in the packet.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// Packet continues in the next response.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// Packet to be followed by an extra-info slot.
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// Deprecated GSO prefix slot.
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

// XEN_NETIF_EXTRA_TYPE_*.
/// Never valid.
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// GSO: `u.gso`.
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// Multicast address add: `u.mcast`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// Multicast address delete: `u.mcast`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// Hash: `u.hash`.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// XDP headroom: `u.xdp` (Linux 5.9+).
pub const XEN_NETIF_EXTRA_TYPE_XDP: u8 = 5;
/// One past the last valid type (6 since the XDP type; older headers said 5).
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 6;
/// Another extra-info slot follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;

// XEN_NETIF_GSO_TYPE_*.
/// No GSO.
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// TCP over IPv4.
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// TCP over IPv6.
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

// NETIF_RSP_*: response status.
/// The backend dropped the packet.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// The request was malformed.
pub const NETIF_RSP_ERROR: i16 = -1;
/// Done.
pub const NETIF_RSP_OKAY: i16 = 0;
/// Answers an extra-info slot (no status of its own).
pub const NETIF_RSP_NULL: i16 = 1;

/// `XEN_NETIF_MAX_TX_SIZE`: largest packet a tx request chain may describe.
pub const XEN_NETIF_MAX_TX_SIZE: u32 = 0xFFFF;
/// `XEN_NETIF_NR_SLOTS_MIN`: slots per packet every backend must accept.
pub const XEN_NETIF_NR_SLOTS_MIN: u32 = 18;

/// `XEN_NETIF_MAX_XDP_HEADROOM`: the most `xdp-headroom` a backend honours (Linux clamps a
/// larger value to this).
pub const XEN_NETIF_MAX_XDP_HEADROOM: u16 = 0x7FFF;

/// Length of an Ethernet header (`ETH_HLEN`): a tx packet's first slot carries at least this.
pub const ETH_HLEN: usize = 14;
/// The largest frame either end handles: a maximum (65535-byte) IP packet with its Ethernet
/// header. A tx chain describes at most `XEN_NETIF_MAX_TX_SIZE` bytes (its first `size` is a
/// u16); rx responses carry sizes per slot, so an rx frame may reach this.
pub const MAX_FRAME: usize = 0xFFFF + ETH_HLEN;

/// How the frontend wants received frames delivered (its `request-rx-copy` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxMode {
    /// Grant copy into buffers the frontend posts (`request-rx-copy=1`).
    #[default]
    Copy,
    /// Page flip: the backend transfers its page into the frontend (`request-rx-copy=0`,
    /// offered only with `feature-rx-flip=1`).
    Flip,
}

/// An extra-info slot, parsed. Emit with [`ExtraRepr::emit`], parse with [`ExtraRepr::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraRepr {
    /// Segmentation offload for the packet this slot belongs to.
    Gso {
        /// Segment payload size; 0 is invalid.
        size: u16,
        /// `XEN_NETIF_GSO_TYPE_TCPV4` or `..._TCPV6`.
        gso_type: u8,
        /// Feature bits.
        features: u16,
    },
    /// Add a multicast address to the vif's filter.
    McastAdd([u8; 6]),
    /// Remove a multicast address from the vif's filter.
    McastDel([u8; 6]),
    /// XDP headroom the frontend asks for (`u.xdp.headroom`).
    Xdp {
        /// Bytes of headroom.
        headroom: u16,
    },
    /// A receive-side hash value.
    Hash {
        /// Hash type.
        hash_type: u8,
        /// Hash algorithm.
        algorithm: u8,
        /// The value.
        value: [u8; 4],
    },
}

/// Why an extra-info slot was rejected. Linux netback treats every one of these as fatal for the
/// vif.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtraError {
    /// Type 0 or a type at or above `XEN_NETIF_EXTRA_TYPE_MAX`.
    #[error(
        "extra-info slot has type {0}, valid types are 1..{XEN_NETIF_EXTRA_TYPE_MAX}; the \
         frontend is misbehaving"
    )]
    BadType(u8),
    /// A GSO slot with size 0.
    #[error("GSO extra-info slot has size 0; the frontend is misbehaving")]
    GsoSizeZero,
    /// A GSO slot with a type other than TCPv4/TCPv6.
    #[error(
        "GSO extra-info slot has unknown GSO type {0} (want 1 TCPv4 or 2 TCPv6); the frontend \
         is misbehaving"
    )]
    BadGsoType(u8),
}

impl ExtraRepr {
    /// Parses an extra-info slot, validating as Linux netback does.
    pub fn parse(info: &ExtraInfo) -> Result<ExtraRepr, ExtraError> {
        match info.type_ {
            XEN_NETIF_EXTRA_TYPE_GSO => {
                let gso: GsoInfo = zerocopy::transmute!(info.u);
                if gso.size == 0 {
                    return Err(ExtraError::GsoSizeZero);
                }
                if gso.type_ != XEN_NETIF_GSO_TYPE_TCPV4 && gso.type_ != XEN_NETIF_GSO_TYPE_TCPV6 {
                    return Err(ExtraError::BadGsoType(gso.type_));
                }
                Ok(ExtraRepr::Gso {
                    size: gso.size,
                    gso_type: gso.type_,
                    features: gso.features,
                })
            }
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD => Ok(ExtraRepr::McastAdd(info.u)),
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL => Ok(ExtraRepr::McastDel(info.u)),
            XEN_NETIF_EXTRA_TYPE_HASH => {
                let h: HashInfo = zerocopy::transmute!(info.u);
                Ok(ExtraRepr::Hash {
                    hash_type: h.type_,
                    algorithm: h.algorithm,
                    value: h.value,
                })
            }
            XEN_NETIF_EXTRA_TYPE_XDP => Ok(ExtraRepr::Xdp {
                headroom: u16::from_le_bytes([info.u[0], info.u[1]]),
            }),
            t => Err(ExtraError::BadType(t)),
        }
    }

    /// Emits this extra-info slot; `more` sets `XEN_NETIF_EXTRA_FLAG_MORE`.
    pub fn emit(&self, more: bool) -> ExtraInfo {
        let flags = if more { XEN_NETIF_EXTRA_FLAG_MORE } else { 0 };
        let (type_, u) = match *self {
            ExtraRepr::Gso {
                size,
                gso_type,
                features,
            } => {
                let g = GsoInfo {
                    size,
                    type_: gso_type,
                    pad: 0,
                    features,
                };
                (XEN_NETIF_EXTRA_TYPE_GSO, zerocopy::transmute!(g))
            }
            ExtraRepr::McastAdd(a) => (XEN_NETIF_EXTRA_TYPE_MCAST_ADD, a),
            ExtraRepr::McastDel(a) => (XEN_NETIF_EXTRA_TYPE_MCAST_DEL, a),
            ExtraRepr::Xdp { headroom } => {
                let h = headroom.to_le_bytes();
                (XEN_NETIF_EXTRA_TYPE_XDP, [h[0], h[1], 0, 0, 0, 0])
            }
            ExtraRepr::Hash {
                hash_type,
                algorithm,
                value,
            } => {
                let h = HashInfo {
                    type_: hash_type,
                    algorithm,
                    value,
                };
                (XEN_NETIF_EXTRA_TYPE_HASH, zerocopy::transmute!(h))
            }
        };
        ExtraInfo { type_, flags, u }
    }
}

// ABI assertions against io/netif.h (x86_64 and arm64 agree: no pointers, natural alignment).
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<TxRequest>() == 12);
    assert!(offset_of!(TxRequest, gref) == 0);
    assert!(offset_of!(TxRequest, offset) == 4);
    assert!(offset_of!(TxRequest, flags) == 6);
    assert!(offset_of!(TxRequest, id) == 8);
    assert!(offset_of!(TxRequest, size) == 10);

    assert!(size_of::<TxResponse>() == 4);
    assert!(offset_of!(TxResponse, id) == 0);
    assert!(offset_of!(TxResponse, status) == 2);

    assert!(size_of::<RxRequest>() == 8);
    assert!(offset_of!(RxRequest, id) == 0);
    assert!(offset_of!(RxRequest, pad) == 2);
    assert!(offset_of!(RxRequest, gref) == 4);

    assert!(size_of::<RxResponse>() == 8);
    assert!(offset_of!(RxResponse, id) == 0);
    assert!(offset_of!(RxResponse, offset) == 2);
    assert!(offset_of!(RxResponse, flags) == 4);
    assert!(offset_of!(RxResponse, status) == 6);

    assert!(size_of::<ExtraInfo>() == 8);
    assert!(offset_of!(ExtraInfo, type_) == 0);
    assert!(offset_of!(ExtraInfo, flags) == 1);
    assert!(offset_of!(ExtraInfo, u) == 2);

    // The union members, at their offsets within `u` (which sits at byte 2).
    assert!(size_of::<GsoInfo>() == 6 && align_of::<GsoInfo>() == 2);
    assert!(offset_of!(GsoInfo, size) == 0);
    assert!(offset_of!(GsoInfo, type_) == 2);
    assert!(offset_of!(GsoInfo, pad) == 3);
    assert!(offset_of!(GsoInfo, features) == 4);
    assert!(size_of::<HashInfo>() == 6);
    assert!(offset_of!(HashInfo, type_) == 0);
    assert!(offset_of!(HashInfo, algorithm) == 1);
    assert!(offset_of!(HashInfo, value) == 2);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_spans_match_netif_h() {
        // memoffset's span_of! is not const, so the spans a reader checks by eye live here; the
        // offsets and sizes above are compile-time assertions.
        assert_eq!(memoffset::span_of!(TxRequest, gref), 0..4);
        assert_eq!(memoffset::span_of!(TxRequest, offset..=size), 4..12);
        assert_eq!(memoffset::span_of!(RxRequest, gref), 4..8);
        assert_eq!(memoffset::span_of!(RxResponse, id..=status), 0..8);
        assert_eq!(memoffset::span_of!(ExtraInfo, u), 2..8);
    }

    #[test]
    fn tx_request_bytes_match_the_c_layout() {
        let req = TxRequest {
            gref: 0x0403_0201,
            offset: 0x0605,
            flags: NETTXF_MORE_DATA | NETTXF_CSUM_BLANK,
            id: 0x0a09,
            size: 0x0c0b,
        };
        assert_eq!(
            req.as_bytes(),
            &[1, 2, 3, 4, 5, 6, 5, 0, 9, 10, 11, 12],
            "little-endian fields at netif.h offsets"
        );
        assert_eq!(TxRequest::read_from_bytes(req.as_bytes()).unwrap(), req);
    }

    #[test]
    fn extra_gso_round_trips_and_sits_at_byte_two() {
        let repr = ExtraRepr::Gso {
            size: 1448,
            gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
            features: 0,
        };
        let info = repr.emit(true);
        let b = info.as_bytes();
        assert_eq!(b[0], XEN_NETIF_EXTRA_TYPE_GSO);
        assert_eq!(b[1], XEN_NETIF_EXTRA_FLAG_MORE);
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 1448);
        assert_eq!(b[4], XEN_NETIF_GSO_TYPE_TCPV4);
        assert_eq!(ExtraRepr::parse(&info), Ok(repr));
    }

    #[test]
    fn extra_validation_rejects_what_netback_rejects() {
        let mut info = ExtraInfo::default();
        assert_eq!(ExtraRepr::parse(&info), Err(ExtraError::BadType(0)));
        info.type_ = XEN_NETIF_EXTRA_TYPE_MAX;
        assert_eq!(ExtraRepr::parse(&info), Err(ExtraError::BadType(6)));
        // Type 5 (XDP) is valid since XEN_NETIF_EXTRA_TYPE_MAX became 6, as Linux 5.9+ has it.
        info.type_ = XEN_NETIF_EXTRA_TYPE_XDP;
        info.u = [0x00, 0x01, 0, 0, 0, 0];
        let xdp = ExtraRepr::parse(&info).unwrap();
        assert_eq!(xdp, ExtraRepr::Xdp { headroom: 256 });
        assert_eq!(xdp.emit(false).as_bytes(), info.as_bytes());
        info.u = [0; 6];
        info.type_ = XEN_NETIF_EXTRA_TYPE_GSO;
        assert_eq!(ExtraRepr::parse(&info), Err(ExtraError::GsoSizeZero));
        info.u = [0xdc, 0x05, 7, 0, 0, 0];
        assert_eq!(ExtraRepr::parse(&info), Err(ExtraError::BadGsoType(7)));
        for t in [
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
        ] {
            info.type_ = t;
            assert!(ExtraRepr::parse(&info).is_ok());
            assert_eq!(ExtraRepr::parse(&info).unwrap().emit(false), info);
        }
    }
}
