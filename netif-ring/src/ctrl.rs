//! The control ring of `io/netif.h` (`DEFINE_RING_TYPES(xen_netif_ctrl, ...)`): requests and
//! responses byte-exact, the `XEN_NETIF_CTRL_*` constants, and the Toeplitz hash the header
//! defines (`xen_netif_toeplitz_hash`).
//!
//! A frontend that finds `feature-ctrl-ring=1` may grant one more page, initialised as a ring of
//! [`CtrlRing`] (16-byte requests, 12-byte responses, 128 slots), and write `ctrl-ring-ref` and
//! `event-channel-ctrl`. It then sets up receive-side hashing with the messages below: which
//! algorithm, which packet types, the key, and a table mapping `hash % size` to a queue.

use core::mem::size_of;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::sring::RingKind;

/// `struct xen_netif_ctrl_request`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CtrlRequest {
    /// Echoed in the response.
    pub id: u16,
    /// `XEN_NETIF_CTRL_TYPE_*`.
    pub type_: u16,
    /// Arguments, by type.
    pub data: [u32; 3],
}

/// `struct xen_netif_ctrl_response`.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CtrlResponse {
    /// The request's `id`.
    pub id: u16,
    /// The request's `type`.
    pub type_: u16,
    /// `XEN_NETIF_CTRL_STATUS_*`.
    pub status: u32,
    /// The answer, by type (0 when the type has none or the request failed).
    pub data: u32,
}

/// The netif control ring (`xen_netif_ctrl`): frontend → backend requests, one response each.
#[derive(Debug, Clone, Copy)]
pub enum CtrlRing {}
impl RingKind for CtrlRing {
    type Req = CtrlRequest;
    type Rsp = CtrlResponse;
    const SLOT_BYTES: usize = if size_of::<CtrlRequest>() > size_of::<CtrlResponse>() {
        size_of::<CtrlRequest>()
    } else {
        size_of::<CtrlResponse>()
    };
}

// XEN_NETIF_CTRL_TYPE_*.
/// Never valid.
pub const XEN_NETIF_CTRL_TYPE_INVALID: u16 = 0;
/// Which hash types the backend can calculate (`data`: a `XEN_NETIF_CTRL_HASH_TYPE_*` mask).
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS: u16 = 1;
/// Which hash types to calculate (`data[0]`: a mask).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS: u16 = 2;
/// The key (`data[0]`: grant of a page holding it from offset 0, `data[1]`: its length).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_KEY: u16 = 3;
/// The largest mapping table the backend takes (`data`: entries).
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE: u16 = 4;
/// The mapping table's size (`data[0]`: entries; the table becomes all zeros).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE: u16 = 5;
/// Part of the mapping table (`data[0]`: grant of a page of little-endian u32 queue numbers
/// from offset 0, `data[1]`: how many, `data[2]`: the first entry they replace).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING: u16 = 6;
/// The algorithm (`data[0]`: `XEN_NETIF_CTRL_HASH_ALGORITHM_*`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM: u16 = 7;
/// Grant-mapping of receive buffers (Xen's header defines them; Linux answers "not supported").
pub const XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE: u16 = 8;
/// See [`XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE`].
pub const XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING: u16 = 9;
/// See [`XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE`].
pub const XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING: u16 = 10;

// XEN_NETIF_CTRL_STATUS_*.
/// Done.
pub const XEN_NETIF_CTRL_STATUS_SUCCESS: u32 = 0;
/// The backend does not do this.
pub const XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED: u32 = 1;
/// An argument is wrong (a size, a grant, an entry out of range, an algorithm not set).
pub const XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER: u32 = 2;
/// Larger than the backend supports.
pub const XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW: u32 = 3;

// Hash types: `_XEN_NETIF_CTRL_HASH_TYPE_*` are bit numbers (and the `type` of a HASH extra),
// `XEN_NETIF_CTRL_HASH_TYPE_*` the flags.
/// Bit number: IPv4 source and destination addresses (8 bytes of input).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV4: u8 = 0;
/// Bit number: IPv4 addresses and TCP ports (12 bytes).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP: u8 = 1;
/// Bit number: IPv6 addresses (32 bytes).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV6: u8 = 2;
/// Bit number: IPv6 addresses and TCP ports (36 bytes).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP: u8 = 3;
/// Flag of [`_XEN_NETIF_CTRL_HASH_TYPE_IPV4`].
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV4;
/// Flag of [`_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`].
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP;
/// Flag of [`_XEN_NETIF_CTRL_HASH_TYPE_IPV6`].
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV6;
/// Flag of [`_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`].
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;
/// Every hash type the header defines.
pub const XEN_NETIF_CTRL_HASH_TYPE_ALL: u32 = XEN_NETIF_CTRL_HASH_TYPE_IPV4
    | XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP
    | XEN_NETIF_CTRL_HASH_TYPE_IPV6
    | XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;

// XEN_NETIF_CTRL_HASH_ALGORITHM_*.
/// No hashing: the backend steers packets as it likes.
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_NONE: u32 = 0;
/// Toeplitz ([`toeplitz_hash`]).
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ: u32 = 1;

/// `xen_netif_toeplitz_hash`: the Toeplitz hash of `buf` under `key` (bytes past the key's end
/// count as zeros), as netif.h defines it and Microsoft's RSS specifies it. For each bit of the
/// input, most significant first, a set bit XORs the key's current left-most 32 bits into the
/// result; then the key shifts left by one bit.
pub fn toeplitz_hash(key: &[u8], buf: &[u8]) -> u32 {
    let key_byte = |i: usize| u64::from(key.get(i).copied().unwrap_or(0));
    // The key's next 64 bits: the upper 32 are the window XORed in, the lower 32 feed it as it
    // shifts. One new key byte enters per input byte.
    let mut window = (0..8).fold(0u64, |w, i| (w << 8) | key_byte(i));
    let mut hash = 0u64;
    for (i, &byte) in buf.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window <<= 1;
        }
        window |= key_byte(i + 8);
    }
    (hash >> 32) as u32
}

// ABI assertions against io/netif.h.
const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<CtrlRequest>() == 16);
    assert!(offset_of!(CtrlRequest, id) == 0);
    assert!(offset_of!(CtrlRequest, type_) == 2);
    assert!(offset_of!(CtrlRequest, data) == 4);
    assert!(size_of::<CtrlResponse>() == 12);
    assert!(offset_of!(CtrlResponse, id) == 0);
    assert!(offset_of!(CtrlResponse, type_) == 2);
    assert!(offset_of!(CtrlResponse, status) == 4);
    assert!(offset_of!(CtrlResponse, data) == 8);
    // (4096 - 64) / 16 = 252 slots, rounded down to 128, as __RING_SIZE gives.
    assert!(CtrlRing::SLOT_BYTES == 16);
    assert!(CtrlRing::PAGE_RING_SIZE == 128);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_structs_match_the_c_layout() {
        assert_eq!(memoffset::span_of!(CtrlRequest, data), 4..16);
        assert_eq!(memoffset::span_of!(CtrlResponse, status..=data), 4..12);
        let req = CtrlRequest {
            id: 0x0201,
            type_: XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
            data: [0x0605_0403, 8, 16],
        };
        assert_eq!(
            req.as_bytes(),
            &[1, 2, 6, 0, 3, 4, 5, 6, 8, 0, 0, 0, 16, 0, 0, 0]
        );
        let rsp = CtrlResponse {
            id: 7,
            type_: XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE,
            status: XEN_NETIF_CTRL_STATUS_SUCCESS,
            data: 128,
        };
        assert_eq!(rsp.as_bytes(), &[7, 0, 4, 0, 0, 0, 0, 0, 128, 0, 0, 0]);
    }

    #[test]
    fn a_page_holds_128_ctrl_slots_and_requests_round_trip() {
        use crate::{BackRing, FrontRing, OwnedRing};
        use std::sync::Arc;
        let mem = Arc::new(OwnedRing::page());
        let mut front = FrontRing::<CtrlRing, _>::init(mem.clone());
        let mut back = BackRing::<CtrlRing, _>::attach(mem);
        assert_eq!((front.size(), back.size()), (128, 128));
        let req = CtrlRequest {
            id: 3,
            type_: XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
            data: [17, 40, 0],
        };
        front.put_request(req).unwrap();
        front.push_requests();
        assert_eq!(back.next_request().unwrap(), Some(req));
        let rsp = CtrlResponse {
            id: 3,
            type_: req.type_,
            status: XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER,
            data: 0,
        };
        back.put_response(rsp).unwrap();
        back.push_responses();
        assert_eq!(front.next_response().unwrap(), Some(rsp));
    }

    #[test]
    fn toeplitz_of_nothing_or_with_no_key_is_zero() {
        assert_eq!(toeplitz_hash(&[0xff; 40], &[]), 0);
        assert_eq!(toeplitz_hash(&[], &[0xff; 36]), 0);
        // One set bit at the input's start XORs the key's first 32 bits.
        assert_eq!(toeplitz_hash(&[1, 2, 3, 4, 5], &[0x80]), 0x0102_0304);
        // ... and the key's bits one further along for the next input bit.
        assert_eq!(toeplitz_hash(&[1, 2, 3, 4, 0x80], &[0x40]), 0x0204_0609);
    }
}
