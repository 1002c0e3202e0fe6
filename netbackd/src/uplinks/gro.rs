//! GRO at the egress: a guest that cannot segment (smoltcp, mini-os, many unikernels) sends
//! MTU-sized TCP segments; before they are written to Linux, consecutive in-order segments of
//! one flow are merged into one super-frame with a virtio-net GSO header (`gso_type`
//! TCPV4/TCPV6, `gso_size` the MSS, `NEEDS_CSUM` over the TCP header), so one `write(2)`
//! carries up to 64 KiB instead of 1.5 KiB. Linux segments it again only if the interface
//! behind the TAP needs it; its own stack takes it whole.
//!
//! What merges is exactly what Linux's GRO merges ([`offload::gro`]): same flow, seq exactly
//! continuing, same ack, window and flags, TCP options byte-identical, a valid (or offloaded)
//! checksum; SYN, RST and URG never merge, PSH and FIN merge and end the flow, and a short
//! segment ends it. Everything the frames of one call to [`EgressGro::transmit`] hold is
//! written before it returns: nothing is held from one backend pass to the next, so a segment
//! never waits for the next one.
//!
//! Copies: a held flow's first frame is read out of backend pages into the flow's buffer and
//! each later payload appended there (the same one copy per byte the unmerged path makes into
//! its transmit buffer), then the kernel copies the super-frame once.

use std::io::IoSlice;
use std::marker::PhantomData;
use std::ops::Range;

use hypervisor::GuestMemory;
use netback::UplinkStats;
use netback::pool::{HEAD, NetFrame};
use offload::OffloadMeta;
use offload::gro::{GroEngine, GroSink, MAX_FLOWS};
use offload::gso::MAX_FRAME_LEN;
use offload::parse::L4Loc;

use super::send_one;

/// The coalescer of one egress port: the engine's table and one frame buffer per flow slot
/// (64 KiB each, allocated the first time its slot holds a flow and kept: every host-mode vif
/// has a TAP, and one that never sends a TCP stream needs none).
pub(crate) struct EgressGro {
    engine: GroEngine<usize>,
    bufs: Vec<Box<[u8]>>,
    /// Whether the held flow in each slot was read out of backend memory whole.
    ok: [bool; MAX_FLOWS],
}

impl std::fmt::Debug for EgressGro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressGro")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl EgressGro {
    pub(crate) fn new() -> Self {
        Self {
            engine: GroEngine::new(),
            bufs: (0..MAX_FLOWS).map(|_| Box::default()).collect(),
            ok: [false; MAX_FLOWS],
        }
    }

    /// What the coalescer has merged so far.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> offload::gro::GroStats {
        self.engine.stats()
    }

    /// Sends `frames` (draining it) through `send`, one call per frame or super-frame, each
    /// with its virtio-net header; then flushes, so nothing is held when it returns.
    pub(crate) fn transmit<D: GuestMemory>(
        &mut self,
        frames: &mut Vec<NetFrame<D>>,
        tx_buf: &mut Vec<u8>,
        stats: &mut UplinkStats,
        send: &dyn Fn(&[IoSlice<'_>]) -> std::io::Result<usize>,
    ) {
        if let [f] = frames.as_slice() {
            // Nothing to merge with (a pass of one pure ACK, the common case when the guest
            // receives): straight out, as without the coalescer.
            if f.0.read_into(tx_buf).is_ok() {
                send_one(tx_buf, &f.meta(), super::vnet::HDR_LEN, stats, send);
            } else {
                stats.tx_errors += 1;
            }
            frames.clear();
            return;
        }
        let mut sink = Sink {
            bufs: &mut self.bufs,
            ok: &mut self.ok,
            tx_buf,
            stats,
            send,
            _frames: PhantomData,
        };
        let mut head = [0u8; HEAD];
        for f in frames.drain(..) {
            // The handle's copy of the frame's first bytes: every header a mergeable frame
            // has fits in it (offload::gro::MAX_HDR <= HEAD), so the engine decides on it.
            let h = bridge_lite::Frame::bytes(&f);
            head[..h.len()].copy_from_slice(h);
            let (n, len, meta) = (h.len(), f.len(), f.meta());
            self.engine.receive(f, &head[..n], len, &meta, &mut sink);
        }
        self.engine.flush(&mut sink);
    }
}

// The engine's decisions rest on the handle's head copy holding every mergeable header.
const _: () = assert!(offload::gro::MAX_HDR <= HEAD);

/// The engine's view of backend frames: held flows in the coalescer's buffers, everything
/// written out through `send`.
struct Sink<'a, 'f, D> {
    bufs: &'a mut [Box<[u8]>],
    ok: &'a mut [bool; MAX_FLOWS],
    tx_buf: &'a mut Vec<u8>,
    stats: &'a mut UplinkStats,
    send: &'f dyn Fn(&[IoSlice<'_>]) -> std::io::Result<usize>,
    _frames: PhantomData<D>,
}

impl<D: GuestMemory> GroSink for Sink<'_, '_, D> {
    type In = NetFrame<D>;
    type Held = usize;

    fn hold(&mut self, slot: usize, frame: NetFrame<D>) -> usize {
        let len = frame.len();
        if self.bufs[slot].is_empty() {
            self.bufs[slot] = vec![0u8; MAX_FRAME_LEN].into_boxed_slice();
        }
        self.ok[slot] = self.bufs[slot]
            .get_mut(..len)
            .is_some_and(|dst| frame.0.read_range(0, dst));
        slot
    }

    fn append(
        &mut self,
        held: &mut usize,
        at: usize,
        frame: &NetFrame<D>,
        payload: Range<usize>,
    ) -> bool {
        if !self.ok[*held] {
            return false;
        }
        let Some(dst) = self.bufs[*held].get_mut(at..at + payload.len()) else {
            return false;
        };
        // On failure the flow's first `at` bytes are untouched: the engine completes it as it
        // was and this segment starts afresh.
        frame.0.read_range(payload.start, dst)
    }

    fn verify(&mut self, frame: &NetFrame<D>, loc: &L4Loc) -> bool {
        frame.0.l4_csum_ok(loc)
    }

    fn pass(&mut self, frame: NetFrame<D>, meta: &OffloadMeta) {
        if frame.0.read_into(self.tx_buf).is_err() {
            self.stats.tx_errors += 1;
            return;
        }
        send_one(
            self.tx_buf,
            meta,
            super::vnet::HDR_LEN,
            self.stats,
            self.send,
        );
    }

    fn complete(&mut self, held: usize, len: usize, headers: Option<&[u8]>, meta: &OffloadMeta) {
        if !self.ok[held] {
            // Its first frame could not be read; nothing was merged into it.
            self.stats.tx_errors += 1;
            return;
        }
        let frame = &mut self.bufs[held][..len];
        if let Some(h) = headers {
            frame[..h.len()].copy_from_slice(h);
        }
        send_one(frame, meta, super::vnet::HDR_LEN, self.stats, self.send);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use netback::pool::BufPool;
    use offload::gso::{SegCsum, segment};
    use offload::virtio::{
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
        VirtioNetHdr,
    };
    use offload::{Csum, csum};
    use xen_model::{DomainHandle, Hypervisor};

    use super::*;

    const MSS: usize = 1448;
    const HDRS: usize = 14 + 20 + 32;
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;
    const PSH: u8 = 0x08;
    const ACK: u8 = 0x10;
    const URG: u8 = 0x20;

    /// One segment as the guest sends it: Ethernet, IPv4 (DF, id `id`), TCP from port
    /// `sport` with the timestamp option `ts`, `len` payload bytes that depend on their
    /// sequence number; a full checksum.
    #[derive(Clone, Copy)]
    struct Seg {
        sport: u16,
        seq: u32,
        len: usize,
        flags: u8,
        ts: u32,
        ack: u32,
        id: u16,
    }

    const SEG: Seg = Seg {
        sport: 40000,
        seq: 1000,
        len: MSS,
        flags: ACK,
        ts: 77,
        ack: 5,
        id: 0,
    };

    fn payload_byte(seq: u32) -> u8 {
        (seq.wrapping_mul(2_654_435_761) >> 24) as u8
    }

    fn frame(s: Seg) -> Vec<u8> {
        let mut f = vec![0u8; HDRS + s.len];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + 32 + s.len) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&s.id.to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 199, 98, 2]);
        ip[16..20].copy_from_slice(&[10, 199, 98, 1]);
        let tcp = &mut f[34..HDRS];
        tcp[0..2].copy_from_slice(&s.sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&s.seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&s.ack.to_be_bytes());
        tcp[12] = 8 << 4;
        tcp[13] = s.flags;
        tcp[14..16].copy_from_slice(&4096u16.to_be_bytes());
        // NOP, NOP, timestamps (kind 8, length 10).
        tcp[20..24].copy_from_slice(&[1, 1, 8, 10]);
        tcp[24..28].copy_from_slice(&s.ts.to_be_bytes());
        for (i, b) in f[HDRS..].iter_mut().enumerate() {
            *b = payload_byte(s.seq.wrapping_add(i as u32));
        }
        csum::fill_ipv4_header(&mut f, 14, 20);
        csum::fill(&mut f).unwrap();
        f
    }

    /// The segment as a guest with checksum offload sends it (`csum_blank`).
    fn partial(s: Seg) -> (Vec<u8>, OffloadMeta) {
        let mut f = frame(s);
        let loc = csum::set_partial(&mut f).unwrap();
        let meta = OffloadMeta {
            csum: Csum::Partial {
                start: loc.csum_start as u16,
                offset: 16,
            },
            gso: None,
        };
        (f, meta)
    }

    /// One write to the TAP: its virtio-net header and frame.
    struct Write {
        hdr: VirtioNetHdr,
        frame: Vec<u8>,
    }

    /// Runs one `transmit` per batch over frames in backend pages; returns the writes.
    fn transmit(gro: &mut EgressGro, batches: &[Vec<(Vec<u8>, OffloadMeta)>]) -> Vec<Write> {
        let xen = Hypervisor::new(2048).unwrap();
        let dom0 = xen.create_domain_with_id(0, 1024).unwrap();
        let pool: BufPool<DomainHandle> = BufPool::new(dom0, 512);
        let writes = RefCell::new(Vec::new());
        let send = |parts: &[IoSlice<'_>]| {
            let all: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            let (hdr, frame) = all.split_first_chunk::<10>().unwrap();
            writes.borrow_mut().push(Write {
                hdr: VirtioNetHdr::from_bytes(hdr),
                frame: frame.to_vec(),
            });
            Ok(all.len())
        };
        let mut stats = UplinkStats::default();
        let mut tx_buf = Vec::new();
        for batch in batches {
            let mut frames: Vec<NetFrame<DomainHandle>> = batch
                .iter()
                .map(|(f, meta)| {
                    let mut b = pool.alloc(f.len()).unwrap();
                    b.fill(f).unwrap();
                    b.set_meta(*meta);
                    NetFrame::new(b)
                })
                .collect();
            gro.transmit(&mut frames, &mut tx_buf, &mut stats, &send);
            assert!(frames.is_empty(), "transmit drains its frames");
            assert_eq!(gro.engine.held(), 0, "nothing is held after a transmit");
        }
        assert_eq!(stats.tx_errors, 0, "{stats:?}");
        let w = writes.into_inner();
        assert_eq!(stats.tx_frames, w.len() as u64, "one write per frame sent");
        w
    }

    /// The TCP payload of a written frame.
    fn payload(w: &Write) -> &[u8] {
        &w.frame[HDRS..]
    }

    /// The expected payload bytes from `seq` on, `len` of them.
    fn bytes_from(seq: u32, len: usize) -> Vec<u8> {
        (0..len as u32).map(|i| payload_byte(seq + i)).collect()
    }

    fn run(segs: &[(Vec<u8>, OffloadMeta)]) -> Vec<Write> {
        transmit(&mut EgressGro::new(), &[segs.to_vec()])
    }

    fn train(n: usize) -> Vec<(Vec<u8>, OffloadMeta)> {
        (0..n)
            .map(|i| {
                partial(Seg {
                    seq: SEG.seq + (i * MSS) as u32,
                    ..SEG
                })
            })
            .collect()
    }

    #[test]
    fn in_order_segments_of_one_flow_leave_as_one_super_frame() {
        let w = run(&train(10));
        assert_eq!(w.len(), 1, "ten segments, one write");
        let h = &w[0].hdr;
        assert_eq!(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(h.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(usize::from(h.gso_size), MSS);
        assert_eq!(usize::from(h.hdr_len), HDRS);
        assert_eq!((h.csum_start, h.csum_offset), (34, 16));
        assert_eq!(payload(&w[0]), bytes_from(SEG.seq, 10 * MSS));
        let ip_len = u16::from_be_bytes([w[0].frame[16], w[0].frame[17]]);
        assert_eq!(usize::from(ip_len), 20 + 32 + 10 * MSS);
        assert!(csum::ipv4_header_ok(&w[0].frame, 14, 20));
        // What Linux does with it if it must segment: the original segments, checksums right.
        let meta = VirtioNetHdr::from_bytes(&h.to_bytes())
            .to_meta(&w[0].frame)
            .unwrap();
        let mut scratch = vec![0u8; offload::gso::MAX_FRAME_LEN];
        let mut got = Vec::new();
        let n = segment(
            &w[0].frame,
            &meta,
            SegCsum::Complete,
            &mut scratch,
            &mut |s: &[u8], _: &OffloadMeta| {
                assert!(csum::verify(s));
                got.push(s.to_vec());
            },
        )
        .unwrap();
        assert_eq!(n, 10);
        for (i, s) in got.iter().enumerate() {
            let orig = frame(Seg {
                seq: SEG.seq + (i * MSS) as u32,
                ..SEG
            });
            assert_eq!(s[HDRS..], orig[HDRS..], "segment {i}'s payload");
            assert_eq!(s[38..42], orig[38..42], "segment {i}'s seq");
        }
    }

    #[test]
    fn flow_buffers_are_allocated_only_when_a_flow_is_held() {
        let mut gro = EgressGro::new();
        let allocated = |g: &EgressGro| g.bufs.iter().filter(|b| !b.is_empty()).count();
        assert_eq!(allocated(&gro), 0);
        // A pure ACK pass and a pass of two ACKs hold nothing.
        let ack = partial(Seg { len: 0, ..SEG });
        transmit(&mut gro, &[vec![ack.clone()], vec![ack.clone(), ack]]);
        assert_eq!(allocated(&gro), 0);
        transmit(&mut gro, &[train(3)]);
        assert_eq!(allocated(&gro), 1, "one flow, one buffer");
    }

    #[test]
    fn a_long_train_is_cut_below_64_kib() {
        let w = run(&train(50));
        assert_eq!(
            w.len(),
            2,
            "45 segments fit one IP datagram, 5 go in the next"
        );
        let mut all = Vec::new();
        for x in &w {
            let ip_len = u16::from_be_bytes([x.frame[16], x.frame[17]]);
            assert_eq!(usize::from(ip_len) + 14, x.frame.len());
            all.extend_from_slice(payload(x));
        }
        assert_eq!(
            all,
            bytes_from(SEG.seq, 50 * MSS),
            "in order, byte for byte"
        );
    }

    #[test]
    fn nothing_is_held_from_one_pass_to_the_next() {
        let t = train(2);
        let w = transmit(
            &mut EgressGro::new(),
            &[vec![t[0].clone()], vec![t[1].clone()]],
        );
        assert_eq!(w.len(), 2, "each pass writes what it was given");
        for x in &w {
            assert_eq!(x.hdr.gso_type, VIRTIO_NET_HDR_GSO_NONE);
        }
    }

    /// Writes for `a` then `b` in one pass, and whether each came out as it went in.
    #[track_caller]
    fn apart(a: Seg, b: Seg) {
        let (fa, fb) = (partial(a), partial(b));
        let w = run(&[fa.clone(), fb.clone()]);
        assert_eq!(w.len(), 2, "these two must not merge");
        assert_eq!(w[0].frame, fa.0, "the first goes out as it came");
        assert_eq!(w[1].frame, fb.0, "the second goes out as it came");
        assert_eq!(w[0].hdr.gso_type, VIRTIO_NET_HDR_GSO_NONE);
    }

    #[test]
    fn what_must_not_merge_leaves_as_it_came() {
        let next = Seg {
            seq: SEG.seq + MSS as u32,
            id: SEG.id,
            ..SEG
        };
        // A gap in the sequence, and a retransmission.
        apart(
            SEG,
            Seg {
                seq: next.seq + 1,
                ..next
            },
        );
        apart(next, SEG);
        // Another flow.
        apart(
            SEG,
            Seg {
                sport: 40001,
                ..next
            },
        );
        // RST and URG never merge.
        apart(
            SEG,
            Seg {
                flags: ACK | RST,
                ..next
            },
        );
        apart(
            SEG,
            Seg {
                flags: ACK | URG,
                ..next
            },
        );
        // Options other than the first's (a later timestamp), another ack.
        apart(SEG, Seg { ts: 78, ..next });
        apart(SEG, Seg { ack: 6, ..next });
        // A first segment with PSH or FIN is not held.
        apart(
            Seg {
                flags: ACK | PSH,
                ..SEG
            },
            next,
        );
        apart(
            Seg {
                flags: ACK | FIN,
                ..SEG
            },
            next,
        );
    }

    #[test]
    fn psh_and_a_short_segment_end_the_super_frame() {
        let mut segs = train(3);
        segs[1] = partial(Seg {
            seq: SEG.seq + MSS as u32,
            flags: ACK | PSH,
            ..SEG
        });
        segs.push(partial(Seg {
            seq: SEG.seq + 3 * MSS as u32,
            len: 100,
            ..SEG
        }));
        segs.push(partial(Seg {
            seq: SEG.seq + 3 * MSS as u32 + 100,
            ..SEG
        }));
        let w = run(&segs);
        assert_eq!(w.len(), 3, "[0 1+PSH] [2 3(short)] [4]");
        assert_eq!(w[0].frame[34 + 13] & PSH, PSH, "the merged PSH is kept");
        assert_eq!(payload(&w[0]).len(), 2 * MSS);
        assert_eq!(payload(&w[1]).len(), MSS + 100);
        let all: Vec<u8> = w.iter().flat_map(|x| payload(x).to_vec()).collect();
        assert_eq!(all, bytes_from(SEG.seq, 4 * MSS + 100));
    }

    #[test]
    fn interleaved_flows_merge_each_in_its_own_order() {
        let b = |i: usize| Seg {
            sport: 40001,
            seq: 9000 + (i * MSS) as u32,
            ..SEG
        };
        let a = |i: usize| Seg {
            seq: SEG.seq + (i * MSS) as u32,
            ..SEG
        };
        let segs: Vec<_> = [a(0), b(0), a(1), b(1), a(2)]
            .into_iter()
            .map(partial)
            .collect();
        let w = run(&segs);
        assert_eq!(w.len(), 2);
        assert_eq!(payload(&w[0]), bytes_from(SEG.seq, 3 * MSS));
        assert_eq!(payload(&w[1]), bytes_from(9000, 2 * MSS));
    }

    #[test]
    fn full_checksums_are_checked_before_merging() {
        let good: Vec<_> = (0..3)
            .map(|i| {
                (
                    frame(Seg {
                        seq: SEG.seq + (i * MSS) as u32,
                        ..SEG
                    }),
                    OffloadMeta::NONE,
                )
            })
            .collect();
        let w = run(&good);
        assert_eq!(w.len(), 1, "checked and merged");
        assert_eq!(payload(&w[0]), bytes_from(SEG.seq, 3 * MSS));
        // A segment whose checksum is wrong is not merged into good data: it leaves as it came,
        // for the receiver to drop.
        let mut bad = good.clone();
        bad[1].0[HDRS + 7] ^= 0x40;
        let w = run(&bad);
        assert_eq!(w.len(), 3);
        assert_eq!(w[1].frame, bad[1].0);
        assert!(!csum::verify(&w[1].frame));
    }

    #[test]
    fn frames_that_are_not_tcp_pass_untouched_in_order() {
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let t = train(2);
        let w = run(&[t[0].clone(), (arp.clone(), OffloadMeta::NONE), t[1].clone()]);
        // The ARP frame is not part of the flow: the flow stays held around it (as Linux's
        // GRO lets other traffic by), and comes out after it.
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].frame, arp);
        assert_eq!(payload(&w[1]), bytes_from(SEG.seq, 2 * MSS));
        assert_eq!(EgressGro::new().stats().merged, 0);
    }
}
