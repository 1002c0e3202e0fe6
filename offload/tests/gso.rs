//! Software segmentation, checked by parsing every segment with etherparse.

mod common;

use common::*;
use offload::gso::{self, MAX_FRAME_LEN, SegCsum};
use offload::{Csum, Error, Gso, GsoKind, OffloadMeta, csum};

/// A super-frame as a GSO sender leaves it: IP lengths of the whole, checksum partial.
fn super_frame(t: &Tcp) -> (Vec<u8>, OffloadMeta) {
    let mut f = t.frame();
    let loc = csum::set_partial(&mut f).expect("set_partial");
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

fn run(frame: &[u8], meta: &OffloadMeta, mode: SegCsum) -> Vec<(Vec<u8>, OffloadMeta)> {
    let mut scratch = vec![0u8; MAX_FRAME_LEN];
    let mut segs = Vec::new();
    let n = gso::segment(
        frame,
        meta,
        mode,
        &mut scratch,
        &mut |s: &[u8], m: &OffloadMeta| segs.push((s.to_vec(), *m)),
    )
    .expect("segment");
    assert_eq!(n, segs.len());
    segs
}

/// Checks a segmented 64 KiB super-frame field by field.
#[track_caller]
fn check_segments(t: &Tcp, segs: &[(Vec<u8>, OffloadMeta)]) {
    let n = t.payload.len().div_ceil(MSS);
    assert_eq!(segs.len(), n);
    let mut joined = Vec::new();
    for (i, (seg, meta)) in segs.iter().enumerate() {
        assert_eq!(*meta, OffloadMeta::VALIDATED);
        let p = parse_tcp(seg);
        let len = MSS.min(t.payload.len() - i * MSS);
        assert_eq!(p.payload.len(), len, "segment {i} payload");
        let l3_hdr = if t.v6 { 0 } else { 20 };
        assert_eq!(
            usize::from(p.ip_total_or_payload_len),
            l3_hdr + 20 + t.options.len() + len,
            "segment {i} IP length"
        );
        assert!(p.ip_header_ok, "segment {i} IPv4 header checksum");
        if !t.v6 {
            assert_eq!(p.ip_id, t.ip_id.wrapping_add(i as u16), "segment {i} id");
            assert!(p.df);
        }
        assert_eq!(p.tcp.sequence_number, t.seq.wrapping_add((i * MSS) as u32));
        assert_eq!(p.tcp.acknowledgment_number, t.ack);
        assert_eq!(p.tcp.cwr, i == 0 && t.cwr, "CWR only on the first");
        assert_eq!(p.tcp.fin, i == n - 1 && t.fin, "FIN only on the last");
        assert_eq!(p.tcp.psh, i == n - 1 && t.psh, "PSH only on the last");
        assert!(p.tcp.ack && p.tcp.ece == t.ece);
        assert_eq!(p.tcp.options.as_slice(), &t.options[..]);
        assert_eq!(
            p.tcp.checksum, p.tcp_checksum_expected,
            "segment {i} TCP checksum"
        );
        assert!(csum::verify(seg));
        joined.extend_from_slice(&p.payload);
    }
    assert_eq!(joined, t.payload, "payloads concatenate to the original");
}

fn big(v6: bool) -> Tcp {
    // 65 160 = 45 x 1448: the largest multiple of the MSS in one IPv4 datagram with timestamps;
    // one byte more leaves a short last segment.
    Tcp {
        v6,
        cwr: true,
        ece: true,
        psh: true,
        fin: true,
        seq: 0xffff_0000, // wraps inside the frame
        payload: pattern(45 * MSS, 7),
        ..Tcp::default()
    }
}

#[test]
fn segments_a_64k_tcpv4_super_frame() {
    let t = big(false);
    let (f, meta) = super_frame(&t);
    assert_eq!(f.len(), 65_226);
    check_segments(&t, &run(&f, &meta, SegCsum::Complete));

    let short = Tcp {
        payload: pattern(44 * MSS + 1000, 1),
        ip_id: 0xffff,
        ..t
    };
    let (f, meta) = super_frame(&short);
    check_segments(&short, &run(&f, &meta, SegCsum::Complete));
}

#[test]
fn segments_a_64k_tcpv6_super_frame() {
    let t = Tcp {
        payload: pattern(45 * MSS + 7, 2),
        ..big(true)
    };
    let (f, meta) = super_frame(&t);
    check_segments(&t, &run(&f, &meta, SegCsum::Complete));
}

#[test]
fn partial_mode_leaves_each_segment_completable() {
    let t = big(false);
    let (f, meta) = super_frame(&t);
    let full = run(&f, &meta, SegCsum::Complete);
    let partial = run(&f, &meta, SegCsum::Partial);
    for ((a, _), (b, m)) in full.iter().zip(&partial) {
        assert_eq!(
            *m,
            OffloadMeta {
                csum: Csum::Partial {
                    start: 34,
                    offset: 16
                },
                gso: None
            }
        );
        let loc = offload::parse::locate(b).expect("segment parses");
        let field = u16::from_be_bytes([b[loc.csum_field()], b[loc.csum_field() + 1]]);
        assert_eq!(field, csum::pseudo(b, &loc, loc.l4_len()).sum());
        let mut b = b.clone();
        csum::complete(&mut b).expect("complete");
        assert_eq!(&b, a);
    }
}

#[test]
fn a_frame_within_one_mss_comes_out_unchanged() {
    let t = Tcp {
        psh: true,
        fin: true,
        cwr: true,
        payload: pattern(MSS, 0),
        ..Tcp::default()
    };
    let (f, meta) = super_frame(&t);
    let segs = run(&f, &meta, SegCsum::Complete);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].0, t.frame());
}

#[test]
fn fixed_id_keeps_the_id() {
    let t = big(false);
    let (f, mut meta) = super_frame(&t);
    meta.gso = Some(Gso {
        fixed_id: true,
        ..Gso::new(GsoKind::Tcpv4, MSS as u16)
    });
    for (seg, _) in run(&f, &meta, SegCsum::Complete) {
        assert_eq!(parse_tcp(&seg).ip_id, t.ip_id);
    }
}

#[test]
fn refuses_what_it_cannot_segment() {
    let (f, meta) = super_frame(&big(false));
    let mut scratch = vec![0u8; MAX_FRAME_LEN];
    let mut out = |_: &[u8], _: &OffloadMeta| panic!("no segment expected");
    let no_gso = OffloadMeta { gso: None, ..meta };
    assert_eq!(
        gso::segment(&f, &no_gso, SegCsum::Complete, &mut scratch, &mut out),
        Err(Error::NotGso)
    );
    let v6_kind = OffloadMeta {
        gso: Some(Gso::new(GsoKind::Tcpv6, 1448)),
        ..meta
    };
    assert_eq!(
        gso::segment(&f, &v6_kind, SegCsum::Complete, &mut scratch, &mut out),
        Err(Error::GsoMismatch {
            kind: GsoKind::Tcpv6
        })
    );
    let zero = OffloadMeta {
        gso: Some(Gso::new(GsoKind::Tcpv4, 0)),
        ..meta
    };
    assert_eq!(
        gso::segment(&f, &zero, SegCsum::Complete, &mut scratch, &mut out),
        Err(Error::GsoSizeZero)
    );
    assert_eq!(
        gso::segment(&f, &meta, SegCsum::Complete, &mut scratch[..1000], &mut out),
        Err(Error::ScratchTooSmall {
            need: 66 + MSS,
            have: 1000
        })
    );
    assert!(matches!(
        gso::segment(
            &f[..f.len() - 1],
            &meta,
            SegCsum::Complete,
            &mut scratch,
            &mut out
        ),
        Err(Error::Truncated { .. })
    ));
    let udp = udp_v4(&[0; 3000]);
    assert!(matches!(
        gso::segment(&udp, &meta, SegCsum::Complete, &mut scratch, &mut out),
        Err(Error::GsoMismatch { .. })
    ));
}

/// `meta` with MSS `mss`.
fn with_mss(meta: &OffloadMeta, mss: u16) -> OffloadMeta {
    let g = meta.gso.expect("a super-frame");
    OffloadMeta {
        gso: Some(Gso::new(g.kind, mss)),
        ..*meta
    }
}

#[test]
fn the_segment_cap_is_a_64k_datagram_at_the_smallest_mss_tcp_sends() {
    assert_eq!(gso::MIN_SEND_MSS, 48);
    assert_eq!(gso::MAX_SEGS, 1365);
}

#[test]
fn a_hostile_mss_is_refused_before_any_segment_is_made() {
    for v6 in [false, true] {
        let (f, meta) = super_frame(&big(v6));
        let payload = 45 * MSS;
        for mss in [1u16, 2, 47] {
            let mut scratch = vec![0u8; MAX_FRAME_LEN];
            let mut calls = 0;
            let r = gso::segment(
                &f,
                &with_mss(&meta, mss),
                SegCsum::Complete,
                &mut scratch,
                &mut |_, _| calls += 1,
            );
            let want = payload.div_ceil(usize::from(mss));
            assert!(
                matches!(r, Err(Error::TooManySegments { segs, mss: m, max: 1365 }) if segs == want && m == mss),
                "MSS {mss}: {r:?}"
            );
            assert_eq!(calls, 0, "no segment is made of a refused frame");
            assert!(matches!(
                gso::plan(&f, f.len(), &with_mss(&meta, mss)),
                Err(Error::TooManySegments { .. })
            ));
        }
        // MSS 48 is allowed: ceil(65 160 / 48) = 1358 segments.
        let m48 = with_mss(&meta, 48);
        let plan = gso::plan(&f, f.len(), &m48).expect("within the cap");
        assert_eq!(plan.segs, 1358);
        assert_eq!(plan.largest, plan.hdr_len + 48);
        assert_eq!(run(&f, &m48, SegCsum::Complete).len(), 1358);
    }
}

#[test]
fn plan_says_what_segment_makes_from_the_headers_alone() {
    let (f, meta) = super_frame(&big(false));
    for mss in [48u16, 536, 1448, 9000, 60_000, 65_535] {
        let m = with_mss(&meta, mss);
        let segs = run(&f, &m, SegCsum::Complete);
        // From the first 200 bytes and the length: the same answer as the whole frame gives.
        let plan = gso::plan(&f[..200], f.len(), &m).expect("plan");
        assert_eq!(plan, gso::plan(&f, f.len(), &m).unwrap());
        assert_eq!(plan.segs, segs.len(), "MSS {mss}");
        assert_eq!(
            plan.largest,
            segs.iter().map(|(s, _)| s.len()).max().unwrap(),
            "MSS {mss}"
        );
    }
    // A frame shorter than its IP length says so.
    assert!(matches!(
        gso::plan(&f[..200], 199, &meta),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn segment_while_stops_where_the_egress_says() {
    let (f, meta) = super_frame(&big(false));
    let mut scratch = vec![0u8; MAX_FRAME_LEN];
    let mut seen = 0;
    let n = gso::segment_while(&f, &meta, SegCsum::Complete, &mut scratch, &mut |_, _| {
        seen += 1;
        seen < 3
    })
    .unwrap();
    assert_eq!((n, seen), (3, 3));
}
