//! virtio_net_hdr mapping, both directions.

mod common;

use common::*;
use offload::virtio::{
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VirtioNetHdr,
};
use offload::{Csum, Error, Gso, GsoKind, OffloadMeta, csum};

fn partial_super(t: &Tcp) -> (Vec<u8>, OffloadMeta) {
    let mut f = t.frame();
    let loc = csum::set_partial(&mut f).expect("partial");
    let kind = if t.v6 { GsoKind::Tcpv6 } else { GsoKind::Tcpv4 };
    let meta = OffloadMeta {
        csum: Csum::Partial {
            start: loc.csum_start as u16,
            offset: 16,
        },
        gso: Some(Gso::new(kind, MSS as u16)),
    };
    (f, meta)
}

fn big(v6: bool, cwr: bool) -> Tcp {
    Tcp {
        v6,
        cwr,
        payload: pattern(10 * MSS, 3),
        ..Tcp::default()
    }
}

#[test]
fn header_bytes_are_the_legacy_little_endian_layout() {
    let h = VirtioNetHdr {
        flags: 1,
        gso_type: 0x81,
        hdr_len: 0x0042,
        gso_size: 0x05a8,
        csum_start: 0x0022,
        csum_offset: 0x0010,
    };
    let b = h.to_bytes();
    assert_eq!(
        b,
        [0x01, 0x81, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00]
    );
    assert_eq!(VirtioNetHdr::from_bytes(&b), h);
}

#[test]
fn emits_what_linux_virtio_net_hdr_from_skb_emits() {
    let (f, meta) = partial_super(&big(false, false));
    let h = VirtioNetHdr::from_meta(&meta, &f).expect("emit");
    assert_eq!(
        h,
        VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 14 + 20 + 32,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
    );
    let (f6, meta6) = partial_super(&big(true, true));
    let h6 = VirtioNetHdr::from_meta(&meta6, &f6).expect("emit");
    assert_eq!(
        h6.gso_type,
        VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN,
        "CWR → ECN"
    );
    assert_eq!(h6.hdr_len, 14 + 40 + 32);
    assert_eq!(h6.csum_start, 54);

    let plain = Tcp::default().frame();
    assert_eq!(
        VirtioNetHdr::from_meta(&OffloadMeta::VALIDATED, &plain),
        Ok(VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_DATA_VALID,
            ..VirtioNetHdr::default()
        })
    );
    assert_eq!(
        VirtioNetHdr::from_meta(&OffloadMeta::NONE, &plain),
        Ok(VirtioNetHdr::default())
    );
}

#[test]
fn meta_survives_a_round_trip_through_the_header() {
    for (t, ecn) in [(big(false, false), false), (big(true, true), true)] {
        let (f, meta) = partial_super(&t);
        let h = VirtioNetHdr::from_meta(&meta, &f).expect("emit");
        assert_eq!(h.gso_type & VIRTIO_NET_HDR_GSO_ECN != 0, ecn);
        let back = VirtioNetHdr::from_bytes(&h.to_bytes());
        assert_eq!(back.to_meta(&f), Ok(meta));
    }
    let plain = Tcp::default().frame();
    for meta in [OffloadMeta::VALIDATED, OffloadMeta::NONE] {
        let h = VirtioNetHdr::from_meta(&meta, &plain).expect("emit");
        assert_eq!(h.to_meta(&plain), Ok(meta));
    }
}

#[test]
fn refuses_what_linux_refuses() {
    let (f, meta) = partial_super(&big(false, false));
    let good = VirtioNetHdr::from_meta(&meta, &f).expect("emit");
    let zero = VirtioNetHdr {
        gso_size: 0,
        ..good
    };
    assert_eq!(zero.to_meta(&f), Err(Error::GsoSizeZero));
    let udp = VirtioNetHdr {
        gso_type: VIRTIO_NET_HDR_GSO_UDP,
        ..good
    };
    assert_eq!(udp.to_meta(&f), Err(Error::VirtioGsoType(3)));
    let ecn_only = VirtioNetHdr {
        gso_type: VIRTIO_NET_HDR_GSO_ECN,
        ..good
    };
    assert_eq!(ecn_only.to_meta(&f), Err(Error::VirtioGsoType(0x80)));
    let off = VirtioNetHdr {
        csum_offset: 6,
        ..good
    };
    assert_eq!(off.to_meta(&f), Err(Error::VirtioCsumOffset(6)));
    let beyond = VirtioNetHdr {
        gso_type: 0,
        csum_start: (f.len() - 1) as u16,
        ..good
    };
    assert!(matches!(
        beyond.to_meta(&f),
        Err(Error::CsumOutOfRange { .. })
    ));
    // GSO without NEEDS_CSUM: the headers are probed and must match the type.
    let probe = VirtioNetHdr {
        flags: 0,
        gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
        csum_start: 0,
        csum_offset: 0,
        ..good
    };
    assert_eq!(
        probe.to_meta(&f),
        Err(Error::GsoMismatch {
            kind: GsoKind::Tcpv6
        })
    );
    let probe4 = VirtioNetHdr {
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        ..probe
    };
    assert_eq!(
        probe4.to_meta(&f),
        Ok(OffloadMeta {
            csum: Csum::None,
            gso: Some(Gso::new(GsoKind::Tcpv4, 1448)),
        })
    );
}

#[test]
fn a_gso_header_on_a_frame_within_one_mss_is_not_gso() {
    // Linux compares the bytes after a bare 20-byte TCP header with the MSS, so options count.
    for (options, payload, gso) in [
        (vec![], MSS, false),
        (vec![], MSS + 1, true),
        (TS_OPTS.to_vec(), MSS - 12, false),
        (TS_OPTS.to_vec(), MSS - 11, true),
    ] {
        let t = Tcp {
            options,
            payload: pattern(payload, 0),
            ..Tcp::default()
        };
        let (f, meta) = partial_super(&t);
        let h = VirtioNetHdr::from_meta(&meta, &f).expect("emit");
        let got = h.to_meta(&f).expect("valid");
        assert_eq!(got.gso.is_some(), gso, "payload {payload}");
        assert_eq!(got.csum, meta.csum);
    }
}
