//! netif flags and GSO extra-info slots, both directions.

mod common;

use common::*;
use netif_ring::netif::{
    ExtraError, ExtraInfo, NETRXF_DATA_VALIDATED, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    NETTXF_EXTRA_INFO,
};
use offload::gro::Gro;
use offload::netif::{from_rx, from_tx, to_rx, to_tx};
use offload::{Csum, Error, Gso, GsoKind, OffloadMeta, csum};

fn bytes(e: &ExtraInfo) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = e.type_;
    b[1] = e.flags;
    b[2..].copy_from_slice(&e.u);
    b
}

fn gso_slot(size: u16, gso_type: u8) -> ExtraInfo {
    let s = size.to_le_bytes();
    ExtraInfo {
        type_: 1,
        flags: 0,
        u: [s[0], s[1], gso_type, 0, 0, 0],
    }
}

/// A super-frame out of GRO: 45 segments of 1448 bytes.
fn gro_super_frame() -> (Vec<u8>, OffloadMeta) {
    let mut gro = Gro::new();
    let mut out = Vec::new();
    let mut sink = |f: &[u8], m: &OffloadMeta| out.push((f.to_vec(), *m));
    for s in flow(&Tcp::default(), 45, MSS) {
        gro.receive(&s.frame(), &OffloadMeta::VALIDATED, &mut sink);
    }
    gro.flush(&mut sink);
    assert_eq!(out.len(), 1);
    out.remove(0)
}

#[test]
fn rx_layout_of_a_gso_frame_is_byte_exact() {
    let (frame, meta) = gro_super_frame();
    assert_eq!(frame.len(), 65_226);
    let (flags, extra) = to_rx(&meta, frame.len());
    // data_validated | csum_blank | more_data | extra_info
    assert_eq!(flags, 0x0F);
    let extra = extra.expect("GSO extra slot");
    assert_eq!(
        bytes(&extra),
        [0x01, 0x00, 0xa8, 0x05, 0x01, 0x00, 0x00, 0x00]
    );
}

#[test]
fn rx_flags_of_plain_frames() {
    let partial = OffloadMeta {
        csum: Csum::Partial {
            start: 34,
            offset: 16,
        },
        gso: None,
    };
    assert_eq!(to_rx(&partial, 1514), (0x03, None));
    assert_eq!(to_rx(&OffloadMeta::VALIDATED, 1514), (0x01, None));
    assert_eq!(to_rx(&OffloadMeta::NONE, 60), (0x00, None));
    assert_eq!(
        to_rx(&OffloadMeta::NONE, 4096),
        (0x00, None),
        "one full page: no more_data"
    );
    assert_eq!(to_rx(&OffloadMeta::NONE, 4097), (0x04, None));
    let v6 = OffloadMeta {
        gso: Some(Gso::new(GsoKind::Tcpv6, 1428)),
        ..partial
    };
    let (flags, extra) = to_rx(&v6, 3000);
    assert_eq!(
        flags, 0x0B,
        "extra_info without more_data when it fits one page"
    );
    assert_eq!(
        bytes(&extra.expect("extra")),
        [1, 0, 0x94, 0x05, 2, 0, 0, 0]
    );
}

#[test]
fn tx_flags_as_netfront_sends_them() {
    let (frame, meta) = gro_super_frame();
    let (flags, extra) = to_tx(&meta);
    assert_eq!(
        flags,
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED | NETTXF_EXTRA_INFO
    );
    let extra = extra.expect("extra");
    assert_eq!(bytes(&extra), [1, 0, 0xa8, 0x05, 1, 0, 0, 0]);
    // And netback reads back what netfront meant.
    let mut f = frame.clone();
    assert_eq!(from_tx(flags, Some(&extra), &mut f), Ok(meta));
    assert_eq!(f, frame, "a partial frame is not rewritten");
    assert_eq!(
        to_tx(&OffloadMeta::VALIDATED),
        (NETTXF_DATA_VALIDATED, None)
    );
}

#[test]
fn tx_checksum_flags_map_as_netback_reads_them() {
    let mut f = Tcp::default().frame();
    csum::set_partial(&mut f).expect("partial");
    let partial = OffloadMeta {
        csum: Csum::Partial {
            start: 34,
            offset: 16,
        },
        gso: None,
    };
    assert_eq!(from_tx(NETTXF_CSUM_BLANK, None, &mut f), Ok(partial));
    assert_eq!(
        from_tx(NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, None, &mut f),
        Ok(partial)
    );
    assert_eq!(
        from_tx(NETTXF_DATA_VALIDATED, None, &mut f),
        Ok(OffloadMeta::VALIDATED)
    );
    assert_eq!(from_tx(0, None, &mut f), Ok(OffloadMeta::NONE));
    // Only the headers are needed.
    assert_eq!(from_tx(NETTXF_CSUM_BLANK, None, &mut f[..66]), Ok(partial));
    let mut udp = udp_v4(&pattern(10, 0));
    assert_eq!(
        from_tx(NETTXF_CSUM_BLANK, None, &mut udp).map(|m| m.csum),
        Ok(Csum::Partial {
            start: 34,
            offset: 6
        })
    );
}

#[test]
fn malformed_gso_slots_are_fatal_and_bad_packets_are_not() {
    let mut f = Tcp::default().frame();
    let flags = NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED | NETTXF_EXTRA_INFO;
    let e = from_tx(flags, Some(&gso_slot(0, 1)), &mut f).expect_err("size 0");
    assert_eq!(e, Error::Extra(ExtraError::GsoSizeZero));
    assert!(e.is_fatal());
    let e = from_tx(flags, Some(&gso_slot(1448, 3)), &mut f).expect_err("type 3");
    assert_eq!(e, Error::Extra(ExtraError::BadGsoType(3)));
    assert!(e.is_fatal());
    let none = ExtraInfo {
        type_: 0,
        ..gso_slot(1448, 1)
    };
    assert!(
        from_tx(flags, Some(&none), &mut f)
            .expect_err("type 0")
            .is_fatal()
    );

    // A TCPv6 slot on an IPv4 frame, and csum_blank on a non-TCP/UDP frame: drop, not fatal.
    let e = from_tx(flags, Some(&gso_slot(1448, 2)), &mut f).expect_err("mismatch");
    assert_eq!(
        e,
        Error::GsoMismatch {
            kind: GsoKind::Tcpv6
        }
    );
    assert!(!e.is_fatal());
    let mut icmp = udp_v4(&[0; 8]);
    icmp[14 + 9] = 1;
    let e = from_tx(NETTXF_CSUM_BLANK, None, &mut icmp).expect_err("icmp");
    assert!(!e.is_fatal());
    let mcast = ExtraInfo {
        type_: 2,
        flags: 0,
        u: [1, 0, 0x5e, 0, 0, 1],
    };
    assert_eq!(
        from_tx(flags, Some(&mcast), &mut f),
        Err(Error::NotGsoExtra { extra_type: 2 })
    );
}

#[test]
fn gso_without_csum_blank_gets_its_pseudo_header_sum_recalculated() {
    let t = Tcp {
        payload: pattern(3 * MSS, 1),
        ..Tcp::default()
    };
    let full = t.frame();
    let mut f = full.clone();
    let meta = from_tx(NETTXF_EXTRA_INFO, Some(&gso_slot(1448, 1)), &mut f).expect("fixup");
    assert_eq!(
        meta,
        OffloadMeta {
            csum: Csum::Partial {
                start: 34,
                offset: 16
            },
            gso: Some(Gso::new(GsoKind::Tcpv4, 1448)),
        }
    );
    let mut want = full.clone();
    csum::set_partial(&mut want).expect("partial");
    assert_ne!(f, full);
    assert_eq!(f, want);
}

#[test]
fn rx_round_trip_through_netfront() {
    let (frame, meta) = gro_super_frame();
    let (flags, extra) = to_rx(&meta, frame.len());
    let mut f = frame.clone();
    assert_eq!(from_rx(flags, extra.as_ref(), &mut f), Ok(meta));
    let mut plain = Tcp::default().frame();
    assert_eq!(
        from_rx(NETRXF_DATA_VALIDATED, None, &mut plain),
        Ok(OffloadMeta::VALIDATED)
    );
}
