//! `extra_parse`: `netif_ring::netif::ExtraRepr::parse` on arbitrary 8-byte extra-info slots.
//!
//! Invariants: parsing never panics; the accepted types are exactly 1..=5, and a GSO slot is
//! accepted exactly when its size is non-zero and its GSO type is TCPv4 or TCPv6; each rejection
//! names the right reason; an accepted slot emits back to a slot that parses to the same value,
//! keeps the type, the `MORE` flag and every meaningful byte of the union, and zeroes the rest.

use netif_ring::netif::{
    ExtraError, ExtraInfo, ExtraRepr, XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_EXTRA_TYPE_GSO,
    XEN_NETIF_EXTRA_TYPE_HASH, XEN_NETIF_EXTRA_TYPE_MCAST_ADD, XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
    XEN_NETIF_EXTRA_TYPE_XDP, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6,
};

use crate::Input;

/// The slot the first 8 bytes of `data` spell (zero-padded).
pub fn slot(data: &[u8]) -> ExtraInfo {
    let b: [u8; 8] = Input::new(data).array();
    ExtraInfo {
        type_: b[0],
        flags: b[1],
        u: [b[2], b[3], b[4], b[5], b[6], b[7]],
    }
}

/// Checks one slot; panics on a broken invariant.
pub fn check(info: &ExtraInfo) {
    let t = info.type_;
    let gso_size = u16::from_le_bytes([info.u[0], info.u[1]]);
    let gso_type = info.u[2];
    let parsed = ExtraRepr::parse(info);
    match parsed {
        Err(e) => {
            let want = if t == 0 || t > XEN_NETIF_EXTRA_TYPE_XDP {
                ExtraError::BadType(t)
            } else if t == XEN_NETIF_EXTRA_TYPE_GSO && gso_size == 0 {
                ExtraError::GsoSizeZero
            } else if t == XEN_NETIF_EXTRA_TYPE_GSO
                && gso_type != XEN_NETIF_GSO_TYPE_TCPV4
                && gso_type != XEN_NETIF_GSO_TYPE_TCPV6
            {
                ExtraError::BadGsoType(gso_type)
            } else {
                panic!("{info:?} rejected ({e}) but it is a valid slot");
            };
            assert_eq!(e, want, "{info:?} rejected for the wrong reason");
            assert!(!e.to_string().is_empty());
        }
        Ok(repr) => {
            assert!(
                (1..=5).contains(&t),
                "{info:?}: type {t} accepted, only 1..=5 are valid"
            );
            if t == XEN_NETIF_EXTRA_TYPE_GSO {
                assert!(gso_size != 0, "{info:?}: GSO size 0 accepted");
                assert!(
                    gso_type == XEN_NETIF_GSO_TYPE_TCPV4 || gso_type == XEN_NETIF_GSO_TYPE_TCPV6,
                    "{info:?}: GSO type {gso_type} accepted"
                );
            }
            let more = info.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0;
            let out = repr.emit(more);
            assert_eq!(
                ExtraRepr::parse(&out),
                Ok(repr),
                "{info:?}: parse(emit(parse(x))) differs"
            );
            assert_eq!(out.type_, t, "{info:?}: emit changed the type");
            assert_eq!(
                out.flags,
                if more { XEN_NETIF_EXTRA_FLAG_MORE } else { 0 },
                "{info:?}: emit must carry exactly the MORE flag"
            );
            // Which union bytes carry meaning for the type (the rest are padding, emitted 0).
            let meaningful: &[usize] = match t {
                XEN_NETIF_EXTRA_TYPE_GSO => &[0, 1, 2, 4, 5],
                XEN_NETIF_EXTRA_TYPE_MCAST_ADD
                | XEN_NETIF_EXTRA_TYPE_MCAST_DEL
                | XEN_NETIF_EXTRA_TYPE_HASH => &[0, 1, 2, 3, 4, 5],
                XEN_NETIF_EXTRA_TYPE_XDP => &[0, 1],
                _ => unreachable!("checked above"),
            };
            for i in 0..6 {
                let want = if meaningful.contains(&i) {
                    info.u[i]
                } else {
                    0
                };
                assert_eq!(out.u[i], want, "{info:?}: emitted union byte {i}");
            }
        }
    }
}

/// The target.
pub fn run(data: &[u8]) {
    check(&slot(data));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_and_gso_edge_passes() {
        for t in 0..=255u8 {
            for (size, gt) in [
                (0u16, 1u8),
                (1, 0),
                (1, 1),
                (1, 2),
                (1448, 3),
                (u16::MAX, 2),
            ] {
                let s = size.to_le_bytes();
                for flags in [0, 1, 0xff] {
                    check(&ExtraInfo {
                        type_: t,
                        flags,
                        u: [s[0], s[1], gt, 0xaa, 0x55, 0x11],
                    });
                }
            }
        }
    }
}
