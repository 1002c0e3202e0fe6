//! GRO: what merges, what does not, and that merging is undone exactly by segmentation.

mod common;

use common::*;
use offload::gro::{Gro, MAX_FLOWS};
use offload::gso::{self, MAX_FRAME_LEN, SegCsum};
use offload::{Csum, Gso, GsoKind, OffloadMeta, csum};

type Out = Vec<(Vec<u8>, OffloadMeta)>;

/// Feeds the frames (all `Validated` unless given) in order as one poll, then flushes.
fn poll_with(frames: &[(Vec<u8>, OffloadMeta)]) -> (Out, Gro) {
    let mut gro = Gro::new();
    let mut out = Vec::new();
    let mut sink = |f: &[u8], m: &OffloadMeta| out.push((f.to_vec(), *m));
    for (f, m) in frames {
        gro.receive(f, m, &mut sink);
    }
    gro.flush(&mut sink);
    assert_eq!(gro.held(), 0, "flush empties the table");
    (out, gro)
}

fn poll(segs: &[Tcp]) -> Out {
    let frames: Vec<_> = segs
        .iter()
        .map(|t| (t.frame(), OffloadMeta::VALIDATED))
        .collect();
    poll_with(&frames).0
}

fn resegment(frame: &[u8], meta: &OffloadMeta) -> Vec<Vec<u8>> {
    let mut scratch = vec![0u8; MAX_FRAME_LEN];
    let mut segs = Vec::new();
    gso::segment(
        frame,
        meta,
        SegCsum::Complete,
        &mut scratch,
        &mut |s: &[u8], _: &OffloadMeta| segs.push(s.to_vec()),
    )
    .expect("segment");
    segs
}

/// Expands every output back into wire segments.
fn expand(out: &Out) -> Vec<Vec<u8>> {
    out.iter()
        .flat_map(|(f, m)| {
            if m.gso.is_some() {
                resegment(f, m)
            } else {
                vec![f.clone()]
            }
        })
        .collect()
}

/// How many segments each output holds.
fn shape(out: &Out) -> Vec<usize> {
    out.iter()
        .map(|(f, m)| {
            if m.gso.is_some() {
                resegment(f, m).len()
            } else {
                1
            }
        })
        .collect()
}

#[test]
fn merges_a_flow_up_to_64k_in_linux_layout() {
    let segs = flow(&Tcp::default(), 50, MSS);
    let out = poll(&segs);
    // 45 segments fill 65 212 bytes of IPv4; the 46th would pass 64 KiB and starts a new flow.
    assert_eq!(shape(&out), vec![45, 5]);
    let (f, m) = &out[0];
    assert_eq!(f.len(), 65_226);
    assert_eq!(
        *m,
        OffloadMeta {
            csum: Csum::Partial {
                start: 34,
                offset: 16
            },
            gso: Some(Gso::new(GsoKind::Tcpv4, MSS as u16)),
        }
    );
    let p = parse_tcp(f);
    assert_eq!(p.ip_total_or_payload_len, 65_212);
    assert!(p.ip_header_ok);
    assert_eq!(p.ip_id, segs[0].ip_id);
    assert_eq!(p.tcp.sequence_number, segs[0].seq);
    let loc = offload::parse::locate(f).expect("merged frame parses");
    assert_eq!(
        p.tcp.checksum,
        csum::pseudo(f, &loc, loc.l4_len()).sum(),
        "tcp4_gro_complete: the field holds the pseudo-header sum"
    );
    let mut done = f.clone();
    csum::complete(&mut done).expect("complete");
    assert_eq!(parse_tcp(&done).tcp.checksum, p.tcp_checksum_expected);
    let payload: Vec<u8> = segs[..45].iter().flat_map(|s| s.payload.clone()).collect();
    assert_eq!(p.payload, payload);
}

#[test]
fn round_trip_through_segmentation_restores_the_segments() {
    for v6 in [false, true] {
        let first = Tcp {
            v6,
            cwr: true,
            ece: true,
            ..Tcp::default()
        };
        let mut segs = flow(&first, 30, MSS);
        for s in &mut segs[1..] {
            s.cwr = false;
        }
        segs[29].psh = true;
        segs.push(segs[29].next(pattern(700, 99))); // PSH ended the flow; this one is alone
        let out = poll(&segs);
        assert_eq!(shape(&out), vec![30, 1]);
        let want: Vec<Vec<u8>> = segs.iter().map(Tcp::frame).collect();
        assert_eq!(expand(&out), want, "v6={v6}");
    }
}

#[test]
fn a_short_segment_merges_and_ends_the_flow() {
    let mut segs = flow(&Tcp::default(), 3, MSS);
    segs[1] = segs[0].next(pattern(500, 1));
    segs[2] = segs[1].next(pattern(MSS, 2));
    let out = poll(&segs);
    assert_eq!(shape(&out), vec![2, 1]);
    assert_eq!(
        expand(&out),
        segs.iter().map(Tcp::frame).collect::<Vec<_>>()
    );
}

#[test]
fn fin_and_psh_merge_then_end_the_flow_as_linux_does() {
    for which in ["fin", "psh"] {
        let mut segs = flow(&Tcp::default(), 4, MSS);
        match which {
            "fin" => segs[1].fin = true,
            _ => segs[1].psh = true,
        }
        let out = poll(&segs);
        assert_eq!(shape(&out), vec![2, 2], "{which}");
        assert_eq!(
            expand(&out),
            segs.iter().map(Tcp::frame).collect::<Vec<_>>()
        );
    }
}

/// The second segment differs as `change` says: the first comes out alone and unchanged, then
/// the second.
#[track_caller]
fn refuses(what: &str, change: impl Fn(&mut Tcp)) {
    let segs = flow(&Tcp::default(), 2, MSS);
    let mut second = segs[1].clone();
    change(&mut second);
    let frames = [segs[0].frame(), second.frame()];
    let out = poll(&[segs[0].clone(), second]);
    assert_eq!(shape(&out), vec![1, 1], "{what} must not merge");
    assert_eq!(out[0].0, frames[0], "{what}: first frame unchanged");
    assert_eq!(out[1].0, frames[1], "{what}: second frame unchanged");
    assert!(out.iter().all(|(_, m)| m.gso.is_none()));
}

#[test]
fn does_not_merge_what_linux_does_not() {
    refuses("out-of-order seq", |t| t.seq = t.seq.wrapping_add(1));
    refuses("retransmitted seq", |t| {
        t.seq = t.seq.wrapping_sub(MSS as u32)
    });
    refuses("other port", |t| t.sport += 1);
    refuses("other MAC", |t| t.src_mac = [2, 0, 0, 0, 0, 0x0c]);
    refuses("SYN", |t| t.syn = true);
    refuses("RST", |t| t.rst = true);
    refuses("URG", |t| t.urg = true);
    refuses("CWR on a later segment", |t| t.cwr = true);
    refuses("changed timestamp", |t| t.options[8] ^= 1);
    refuses("changed option length", |t| t.options = vec![1, 1, 1, 0]);
    refuses("other ack", |t| t.ack += 1);
    refuses("other window", |t| t.window += 1);
    refuses("IPv4 options", |t| t.ipv4_options = vec![1, 1, 1, 0]);
    refuses("other TTL", |t| t.ttl -= 1);
    refuses("other TOS", |t| t.tos = 0x10);
    refuses("DF dropped", |t| t.df = false);
    refuses("id not incrementing", |t| t.ip_id = t.ip_id.wrapping_add(5));
    refuses("larger than the first", |t| t.payload = pattern(MSS + 1, 0));
    refuses("no payload", |t| t.payload.clear());
}

#[test]
fn a_frame_with_a_bad_checksum_is_not_merged_and_stays_unverified() {
    let segs = flow(&Tcp::default(), 2, MSS);
    let good = segs[0].frame();
    let mut bad = segs[1].frame();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let (out, _) = poll_with(&[
        (good.clone(), OffloadMeta::NONE),
        (bad.clone(), OffloadMeta::NONE),
    ]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], (good, OffloadMeta::VALIDATED), "verified here");
    assert_eq!(
        out[1],
        (bad, OffloadMeta::NONE),
        "left for the stack to drop"
    );
}

#[test]
fn unverified_good_frames_merge() {
    let segs = flow(&Tcp::default(), 3, MSS);
    let frames: Vec<_> = segs
        .iter()
        .map(|t| (t.frame(), OffloadMeta::NONE))
        .collect();
    let (out, gro) = poll_with(&frames);
    assert_eq!(shape(&out), vec![3]);
    assert_eq!(gro.stats().merged, 2);
}

#[test]
fn fixed_ids_merge_in_a_df_flow_and_survive_the_round_trip() {
    let mut segs = flow(&Tcp::default(), 4, MSS);
    for s in &mut segs {
        s.ip_id = 0;
    }
    let out = poll(&segs);
    assert_eq!(shape(&out), vec![4]);
    assert!(out[0].1.gso.expect("gso").fixed_id);
    assert_eq!(
        expand(&out),
        segs.iter().map(Tcp::frame).collect::<Vec<_>>()
    );

    // Without DF a repeated id is not an atomic flow: no merge.
    for s in &mut segs {
        s.df = false;
    }
    assert_eq!(shape(&poll(&segs)), vec![1, 1, 1, 1]);
}

#[test]
fn interleaved_flows_merge_separately_and_never_reorder_within_a_flow() {
    let a = flow(&Tcp::default(), 12, MSS);
    let b = flow(
        &Tcp {
            sport: 40001,
            seq: 5,
            ..Tcp::default()
        },
        12,
        MSS,
    );
    let c = flow(
        &Tcp {
            v6: true,
            ..Tcp::default()
        },
        12,
        MSS,
    );
    let mut input = Vec::new();
    for i in 0..12 {
        input.push(a[i].clone());
        input.push(b[i].clone());
        let mut ci = c[i].clone();
        if i == 6 {
            ci.ack += 1; // an unmergeable frame mid-flow
        }
        input.push(ci);
    }
    let out = poll(&input);
    assert!(
        out.len() < input.len() / 3,
        "flows were merged: {:?}",
        shape(&out)
    );
    let frames = expand(&out);
    assert_eq!(frames.len(), input.len());
    for (flow_frames, port, v6) in [(&a, 40000, false), (&b, 40001, false), (&c, 40000, true)] {
        let got: Vec<u32> = frames
            .iter()
            .map(|f| (f, parse_tcp(f)))
            .filter(|(f, p)| p.tcp.source_port == port && (f[12] == 0x86) == v6)
            .map(|(_, p)| p.tcp.sequence_number)
            .collect();
        let want: Vec<u32> = flow_frames.iter().map(|t| t.seq).collect();
        assert_eq!(got, want, "flow {port} v6={v6} in order");
    }
}

#[test]
fn an_unmergeable_frame_flushes_its_flow_first() {
    let segs = flow(&Tcp::default(), 3, MSS);
    let ack_only = Tcp {
        payload: Vec::new(),
        ..segs[2].clone()
    };
    let mut gro = Gro::new();
    let mut out: Vec<(Vec<u8>, OffloadMeta)> = Vec::new();
    let mut sink = |f: &[u8], m: &OffloadMeta| out.push((f.to_vec(), *m));
    gro.receive(&segs[0].frame(), &OffloadMeta::VALIDATED, &mut sink);
    gro.receive(&segs[1].frame(), &OffloadMeta::VALIDATED, &mut sink);
    gro.receive(&ack_only.frame(), &OffloadMeta::VALIDATED, &mut sink);
    assert_eq!(gro.held(), 0);
    assert_eq!(out.len(), 2);
    assert!(out[0].1.gso.is_some(), "the held flow first");
    assert_eq!(out[1].0, ack_only.frame(), "then the pure ACK");
}

#[test]
fn a_full_table_flushes_the_oldest_flow() {
    let flows: Vec<Vec<Tcp>> = (0..=MAX_FLOWS as u16)
        .map(|i| {
            flow(
                &Tcp {
                    sport: 1000 + i,
                    ..Tcp::default()
                },
                2,
                MSS,
            )
        })
        .collect();
    let mut gro = Gro::new();
    let mut out: Vec<(Vec<u8>, OffloadMeta)> = Vec::new();
    for f in &flows {
        gro.receive(
            &f[0].frame(),
            &OffloadMeta::VALIDATED,
            &mut |f: &[u8], m: &OffloadMeta| out.push((f.to_vec(), *m)),
        );
    }
    assert_eq!(gro.held(), MAX_FLOWS);
    assert_eq!(gro.stats().evicted, 1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, flows[0][0].frame(), "the oldest went out");
    let mut sink = |f: &[u8], m: &OffloadMeta| out.push((f.to_vec(), *m));
    for f in &flows[1..] {
        gro.receive(&f[1].frame(), &OffloadMeta::VALIDATED, &mut sink);
    }
    gro.flush(&mut sink);
    assert_eq!(out.len(), 1 + MAX_FLOWS);
    assert!(out[1..].iter().all(|(_, m)| m.gso.is_some()));
    let mut again = Vec::new();
    gro.flush(&mut |f: &[u8], _: &OffloadMeta| again.push(f.to_vec()));
    assert!(again.is_empty(), "a second flush has nothing left");
}

#[test]
fn non_tcp_frames_pass_through_untouched() {
    let udp = udp_v4(&pattern(100, 1));
    let (out, gro) = poll_with(&[(udp.clone(), OffloadMeta::NONE)]);
    assert_eq!(out, vec![(udp, OffloadMeta::NONE)]);
    assert_eq!(gro.stats().passed, 1);
}

#[test]
fn a_single_held_frame_comes_out_unchanged_with_its_meta() {
    let t = Tcp::default();
    let mut f = t.frame();
    let loc = csum::set_partial(&mut f).expect("set_partial");
    let meta = OffloadMeta {
        csum: Csum::Partial {
            start: loc.csum_start as u16,
            offset: 16,
        },
        gso: None,
    };
    let (out, _) = poll_with(&[(f.clone(), meta)]);
    assert_eq!(out, vec![(f, meta)]);
}

/// A sink over owned frames, as a driver's would be: held frames grow in place, merged frames
/// are counted as recycled, and appends can be refused.
#[derive(Default)]
struct Owned {
    out: Out,
    recycled: usize,
    /// Appends allowed before the sink runs out of room (`None`: unlimited).
    room: Option<usize>,
}

impl offload::gro::GroSink for Owned {
    type In = Vec<u8>;
    type Held = Vec<u8>;

    fn hold(&mut self, _slot: usize, frame: Vec<u8>) -> Vec<u8> {
        frame
    }

    fn append(
        &mut self,
        held: &mut Vec<u8>,
        at: usize,
        frame: &Vec<u8>,
        payload: std::ops::Range<usize>,
    ) -> bool {
        assert_eq!(held.len(), at, "appends go at the end of the held frame");
        match &mut self.room {
            Some(0) => return false,
            Some(n) => *n -= 1,
            None => {}
        }
        held.extend_from_slice(&frame[payload]);
        self.recycled += 1;
        true
    }

    fn verify(&mut self, frame: &Vec<u8>, _loc: &offload::parse::L4Loc) -> bool {
        csum::verify(frame)
    }

    fn pass(&mut self, frame: Vec<u8>, meta: &OffloadMeta) {
        self.out.push((frame, *meta));
    }

    fn complete(
        &mut self,
        mut held: Vec<u8>,
        len: usize,
        headers: Option<&[u8]>,
        meta: &OffloadMeta,
    ) {
        assert_eq!(held.len(), len);
        if let Some(h) = headers {
            held[..h.len()].copy_from_slice(h);
        }
        self.out.push((held, *meta));
    }
}

/// Feeds `frames` to an engine over owned frames, giving it only each frame's first 128 bytes as
/// headers (as a driver reading the start of its first page does).
fn poll_owned(frames: &[(Vec<u8>, OffloadMeta)], room: Option<usize>) -> Owned {
    let mut engine = offload::gro::GroEngine::<Vec<u8>>::new();
    let mut sink = Owned {
        room,
        ..Owned::default()
    };
    for (f, m) in frames {
        let hdr = f[..f.len().min(128)].to_vec();
        engine.receive(f.clone(), &hdr, f.len(), m, &mut sink);
    }
    engine.flush(&mut sink);
    assert_eq!(engine.held(), 0);
    sink
}

#[test]
fn the_engine_over_caller_storage_gives_what_gro_gives() {
    let a = flow(&Tcp::default(), 60, MSS);
    let b = flow(
        &Tcp {
            v6: true,
            sport: 40001,
            ..Tcp::default()
        },
        20,
        MSS,
    );
    let mut input: Vec<(Vec<u8>, OffloadMeta)> = Vec::new();
    for (i, s) in a.iter().enumerate() {
        input.push((s.frame(), OffloadMeta::VALIDATED));
        if let Some(t) = b.get(i) {
            // Unverified: the sink checks it.
            input.push((t.frame(), OffloadMeta::NONE));
        }
        if i == 30 {
            input.push((udp_v4(&pattern(64, 9)), OffloadMeta::NONE));
        }
    }
    let (want, _) = poll_with(&input);
    let got = poll_owned(&input, None);
    assert_eq!(got.out, want);
    let merged = shape(&got.out).iter().map(|n| n - 1).sum::<usize>();
    assert_eq!(
        got.recycled, merged,
        "every merged frame's storage is given back"
    );
}

#[test]
fn a_refused_append_ends_the_flow_and_starts_another_in_order() {
    let segs = flow(&Tcp::default(), 6, MSS);
    let input: Vec<_> = segs
        .iter()
        .map(|t| (t.frame(), OffloadMeta::VALIDATED))
        .collect();
    // Room for two appends: segments 0-2 merge, 3 cannot and starts a flow, 4 and 5 cannot
    // merge into it either.
    let got = poll_owned(&input, Some(2));
    assert_eq!(shape(&got.out), vec![3, 1, 1, 1]);
    assert_eq!(
        expand(&got.out),
        segs.iter().map(Tcp::frame).collect::<Vec<_>>()
    );
}
