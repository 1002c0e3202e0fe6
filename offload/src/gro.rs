//! Receive coalescing (GRO) as Linux's NAPI does it: consecutive TCP segments of one flow
//! arriving in one poll are merged into one super-frame, so everything after the driver pays per
//! 64 KiB instead of per 1.5 KiB.
//!
//! A driver's poll feeds every frame to [`Gro::receive`] in arrival order and calls
//! [`Gro::flush`] at the end of the poll. Frames come out through the caller's `out` closure:
//! - a frame Linux would not merge or hold passes straight through, lent back from the caller's
//!   own buffer with no copy;
//! - a frame that starts a flow is copied once into that flow's buffer; each later segment that
//!   continues the flow has its payload appended there (one copy of its payload, the same copy a
//!   driver's copy-break would make; Linux instead chains the page as a fragment);
//! - when a flow ends (a segment that cannot merge, a short or PSH/FIN segment, a full table, the
//!   end of the poll), its super-frame is lent to `out` straight from the engine's buffer, so the
//!   consumer (netback's grant copy, a TAP write) reads it in place, and the buffer is reused.
//!
//! The engine owns [`MAX_FLOWS`] buffers of [`MAX_FRAME_LEN`] bytes, allocated once in
//! [`Gro::new`]; nothing is allocated per frame.
//!
//! # When frames merge
//!
//! Exactly when Linux's `dev_gro_receive` → `inet_gro_receive`/`ipv6_gro_receive` →
//! `tcp_gro_receive` would: same Ethernet header (MACs, EtherType, VLAN tag), same IP addresses
//! (and IPv6 flow label), same ports; IPv4 without options, valid header checksum, no fragment
//! bits, same TOS, TTL and DF, ids incrementing by one per segment (or, for a DF flow whose
//! second segment repeats the first id, fixed); IPv6 without extension headers, same traffic class
//! and hop limit; the IP length matching the frame (no Ethernet padding); a valid TCP checksum
//! (verified here unless the meta says `Validated` or `Partial`); TCP seq exactly continuing,
//! same ack, same data offset, window and flags except CWR/FIN/PSH, CWR not set on the new
//! segment, options byte-identical; payload 1..=MSS, the MSS being the first segment's payload;
//! the IP datagram staying below 64 KiB. A segment with PSH or FIN, or shorter than the MSS, is
//! merged and then ends the flow. A segment with SYN, RST or URG never merges and never starts a
//! flow, nor does a segment without payload, nor a frame that is itself GSO (Linux merges those
//! when their MSS matches; no uplink here delivers them to GRO).
//!
//! Whatever does not merge first flushes the held flow it belongs to, so a flow's frames are
//! never reordered. (Linux skips that flush for an IPv4 frame with options, which it does not
//! parse; here the flow is flushed too.) IPv6 extension headers are not merged (Linux compares
//! and merges them; they do not occur in TCP streams in practice).
//!
//! # What comes out
//!
//! A flow that merged two or more segments comes out as Linux's `tcp4_gro_complete` /
//! `tcp6_gro_complete` leaves it: IPv4 total length and header checksum (or IPv6 payload length)
//! fixed, FIN/PSH of the merged segments ORed into the header, the TCP checksum field holding the
//! pseudo-header sum, and meta `{ csum: Partial { start: tcp header, offset: 16 },
//! gso: Some(Gso { kind, size: MSS, fixed_id }) }`. [`crate::gso::segment`] turns it back into
//! the original segments. A flow that held one segment comes out byte for byte as it went in.

use crate::csum;
use crate::gso::MAX_FRAME_LEN;
use crate::parse::{self, L3Kind, L4Kind, L4Loc, field, tcp_flags};
use crate::{Csum, Gso, GsoKind, OffloadMeta};

/// Flows held at once, as Linux's `MAX_GRO_SKBS`.
pub const MAX_FLOWS: usize = 8;

/// Counters of what the engine did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroStats {
    /// Frames that started a held flow.
    pub held: u64,
    /// Frames merged into a held flow.
    pub merged: u64,
    /// Super-frames (two or more segments) handed out.
    pub super_frames: u64,
    /// Held flows of one segment handed out unchanged.
    pub singles: u64,
    /// Frames passed through without being held.
    pub passed: u64,
    /// Held flows flushed early because the table was full.
    pub evicted: u64,
}

struct Flow {
    buf: Box<[u8]>,
    active: bool,
    /// Hold order; the smallest is the oldest.
    age: u64,
    /// Bytes of `buf` in use: the head frame plus appended payload.
    len: usize,
    loc: L4Loc,
    /// TCP payload bytes of the first segment: the flow's MSS.
    mss: usize,
    /// Segments merged so far, the head included.
    count: u16,
    /// TCP payload bytes held.
    payload: usize,
    fixed_id: bool,
    /// The head's checksum state, handed out when it stays alone.
    csum: Csum,
}

impl core::fmt::Debug for Flow {
    // The 64 KiB buffer is left out: a debug print shows the flow, not its bytes.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Flow")
            .field("active", &self.active)
            .field("age", &self.age)
            .field("len", &self.len)
            .field("loc", &self.loc)
            .field("mss", &self.mss)
            .field("count", &self.count)
            .field("payload", &self.payload)
            .field("fixed_id", &self.fixed_id)
            .field("csum", &self.csum)
            .finish_non_exhaustive()
    }
}

/// The GRO engine of one receive queue. See the [module docs](self).
#[derive(Debug)]
pub struct Gro {
    flows: Vec<Flow>,
    next_age: u64,
    stats: GroStats,
}

impl Default for Gro {
    fn default() -> Gro {
        Gro::new()
    }
}

/// A TCP frame as GRO sees it.
struct Seg {
    loc: L4Loc,
    payload: usize,
    /// Passes the IP-level and checksum checks: may merge or be held.
    clean: bool,
    /// Checksum state to hand on (Validated once verified here).
    csum: Csum,
}

impl Gro {
    /// An engine with [`MAX_FLOWS`] flow buffers of [`MAX_FRAME_LEN`] bytes (about 512 KiB).
    pub fn new() -> Gro {
        let flows = (0..MAX_FLOWS)
            .map(|_| Flow {
                buf: vec![0u8; MAX_FRAME_LEN].into_boxed_slice(),
                active: false,
                age: 0,
                len: 0,
                loc: L4Loc {
                    l3: L3Kind::Ipv4,
                    l4: L4Kind::Tcp,
                    l3_start: 0,
                    csum_start: 0,
                    csum_offset: 0,
                    l4_hdr_len: 0,
                    ip_end: 0,
                },
                mss: 0,
                count: 0,
                payload: 0,
                fixed_id: false,
                csum: Csum::None,
            })
            .collect();
        Gro {
            flows,
            next_age: 0,
            stats: GroStats::default(),
        }
    }

    /// What the engine has done so far.
    pub fn stats(&self) -> GroStats {
        self.stats
    }

    /// Flows currently held.
    pub fn held(&self) -> usize {
        self.flows.iter().filter(|f| f.active).count()
    }

    /// Feeds one received frame. `out` is called zero, one or two times: first with a held flow
    /// this frame ends, then with the frame itself if it is neither merged nor held.
    pub fn receive<F>(&mut self, frame: &[u8], meta: &OffloadMeta, out: &mut F)
    where
        F: FnMut(&[u8], &OffloadMeta),
    {
        let Some(seg) = classify(frame, meta) else {
            self.stats.passed += 1;
            out(frame, meta);
            return;
        };
        if let Some(i) = self.find(frame, &seg.loc) {
            let flow = &mut self.flows[i];
            if seg.clean && try_merge(flow, frame, &seg) {
                self.stats.merged += 1;
                let flags = frame[seg.loc.csum_start + field::TCP_FLAGS];
                if seg.payload < flow.mss || flags & (tcp_flags::PSH | tcp_flags::FIN) != 0 {
                    emit(flow, &mut self.stats, out);
                }
                return;
            }
            emit(flow, &mut self.stats, out);
        }
        let flags = frame[seg.loc.csum_start + field::TCP_FLAGS];
        let ends =
            tcp_flags::URG | tcp_flags::PSH | tcp_flags::RST | tcp_flags::SYN | tcp_flags::FIN;
        if seg.clean && seg.payload > 0 && flags & ends == 0 {
            self.hold(frame, &seg, out);
        } else {
            self.stats.passed += 1;
            let meta = OffloadMeta {
                csum: seg.csum,
                gso: meta.gso,
            };
            out(frame, &meta);
        }
    }

    /// Hands out every held flow, oldest first; the end of a poll.
    pub fn flush<F>(&mut self, out: &mut F)
    where
        F: FnMut(&[u8], &OffloadMeta),
    {
        while let Some(i) = self.oldest() {
            emit(&mut self.flows[i], &mut self.stats, out);
        }
    }

    fn oldest(&self) -> Option<usize> {
        (0..self.flows.len())
            .filter(|&i| self.flows[i].active)
            .min_by_key(|&i| self.flows[i].age)
    }

    fn find(&self, frame: &[u8], loc: &L4Loc) -> Option<usize> {
        self.flows
            .iter()
            .position(|f| f.active && same_flow(&f.buf[..f.len], &f.loc, frame, loc))
    }

    fn hold<F>(&mut self, frame: &[u8], seg: &Seg, out: &mut F)
    where
        F: FnMut(&[u8], &OffloadMeta),
    {
        let i = match self.flows.iter().position(|f| !f.active) {
            Some(i) => i,
            None => {
                // Table full: as Linux's gro_flush_oldest, the flow held longest goes out.
                let Some(i) = self.oldest() else { return };
                self.stats.evicted += 1;
                emit(&mut self.flows[i], &mut self.stats, out);
                i
            }
        };
        let flow = &mut self.flows[i];
        flow.buf[..frame.len()].copy_from_slice(frame);
        flow.active = true;
        flow.age = self.next_age;
        self.next_age += 1;
        flow.len = frame.len();
        flow.loc = seg.loc;
        flow.mss = seg.payload;
        flow.count = 1;
        flow.payload = seg.payload;
        flow.fixed_id = false;
        flow.csum = seg.csum;
        self.stats.held += 1;
    }
}

/// Parses a frame for GRO; `None` for anything that is not TCP over IP (it cannot belong to a
/// flow).
fn classify(frame: &[u8], meta: &OffloadMeta) -> Option<Seg> {
    let loc = parse::locate(frame).ok()?;
    if loc.l4 != L4Kind::Tcp {
        return None;
    }
    let l3 = loc.l3_start;
    let payload = loc.ip_end.saturating_sub(loc.hdr_len());
    // inet_gro_receive / ipv6_gro_receive: flush unless the IP length is the frame's length.
    let mut clean = frame.len() == loc.ip_end && meta.gso.is_none();
    match loc.l3 {
        L3Kind::Ipv4 => {
            // Only a 20-byte header, a correct header checksum and no flag but DF.
            clean &= frame[l3] == 0x45
                && csum::ipv4_header_ok(frame, l3, 20)
                && parse::be16(frame, l3 + field::V4_FRAG) & !parse::IP_DF == 0;
        }
        L3Kind::Ipv6 => clean &= loc.csum_start == l3 + 40,
    }
    let mut state = meta.csum;
    if clean {
        // tcp4_gro_receive: the checksum must be good (or left to an offload) to merge.
        clean = match meta.csum {
            Csum::Validated => true,
            Csum::Partial { start, offset } => {
                usize::from(start) == loc.csum_start && usize::from(offset) == field::TCP_CSUM
            }
            Csum::None => csum::verify(frame),
        };
        if clean && meta.csum == Csum::None {
            state = Csum::Validated;
        }
    }
    Some(Seg {
        loc,
        payload,
        clean,
        csum: state,
    })
}

/// Same flow: Ethernet header, IP addresses (and IPv6 flow label), TCP ports.
fn same_flow(head: &[u8], hl: &L4Loc, frame: &[u8], fl: &L4Loc) -> bool {
    if hl.l3 != fl.l3 || hl.l3_start != fl.l3_start || head[..hl.l3_start] != frame[..fl.l3_start] {
        return false;
    }
    let (a, b) = (hl.l3_start, fl.l3_start);
    let addrs = match hl.l3 {
        L3Kind::Ipv4 => head[a + 12..a + 20] == frame[b + 12..b + 20],
        L3Kind::Ipv6 => {
            let label = |p: &[u8], at: usize| parse::be32(p, at) & 0xF00F_FFFF;
            label(head, a) == label(frame, b) && head[a + 8..a + 40] == frame[b + 8..b + 40]
        }
    };
    addrs && head[hl.csum_start..hl.csum_start + 4] == frame[fl.csum_start..fl.csum_start + 4]
}

/// `tcp_gro_receive` and the network-layer flush checks; appends the payload when they pass.
fn try_merge(flow: &mut Flow, frame: &[u8], seg: &Seg) -> bool {
    let (hl, fl) = (&flow.loc, &seg.loc);
    if hl.csum_start != fl.csum_start {
        return false;
    }
    let head = &flow.buf[..flow.len];
    let l3 = fl.l3_start;
    match fl.l3 {
        L3Kind::Ipv4 => {
            let same = |at: usize| head[l3 + at] == frame[l3 + at];
            let df = |p: &[u8]| parse::be16(p, l3 + field::V4_FRAG) & parse::IP_DF != 0;
            // inet_gro_flush: TTL, TOS and DF equal.
            if !same(field::V4_TTL) || !same(field::V4_TOS) || df(head) != df(frame) {
                return false;
            }
            let offset = parse::be16(frame, l3 + field::V4_ID)
                .wrapping_sub(parse::be16(head, l3 + field::V4_ID));
            // The second segment decides: a DF flow repeating its id keeps a fixed id.
            if flow.count == 1 && df(frame) && offset == 0 {
                flow.fixed_id = true;
            }
            let want = if flow.fixed_id && df(frame) {
                0
            } else {
                flow.count
            };
            if offset != want {
                return false;
            }
        }
        L3Kind::Ipv6 => {
            // ipv6_gro_flush: traffic class and hop limit equal.
            let tclass = |p: &[u8]| parse::be32(p, l3) & 0x0FF0_0000;
            if tclass(head) != tclass(frame)
                || head[l3 + field::V6_HOP_LIMIT] != frame[l3 + field::V6_HOP_LIMIT]
            {
                return false;
            }
        }
    }
    let th = fl.csum_start;
    let nf = frame[th + field::TCP_FLAGS];
    let hf = head[th + field::TCP_FLAGS];
    let loose = tcp_flags::CWR | tcp_flags::FIN | tcp_flags::PSH;
    let flags_ok = nf & tcp_flags::CWR == 0
        && (nf ^ hf) & !loose == 0
        // Data offset, reserved bits and window: the rest of tcp_flag_word.
        && head[th + 12] == frame[th + 12]
        && head[th + 14..th + 16] == frame[th + 14..th + 16];
    if !flags_ok {
        return false;
    }
    // Equal data offsets (checked above), so both headers hold these bytes.
    let doff = fl.l4_hdr_len;
    if head[th + field::TCP_ACK..th + 12] != frame[th + field::TCP_ACK..th + 12]
        || head[th + 20..th + doff] != frame[th + 20..th + doff]
    {
        return false;
    }
    let next_seq = parse::be32(head, th + field::TCP_SEQ).wrapping_add(flow.payload as u32);
    let len = seg.payload;
    if len == 0
        || len > flow.mss
        || parse::be32(frame, th + field::TCP_SEQ) != next_seq
        || flow.len - l3 + len >= 65_536
    {
        return false;
    }
    let start = flow.len;
    flow.buf[start..start + len].copy_from_slice(&frame[fl.hdr_len()..fl.ip_end]);
    flow.len += len;
    flow.payload += len;
    flow.count += 1;
    flow.buf[th + field::TCP_FLAGS] |= nf & (tcp_flags::FIN | tcp_flags::PSH);
    true
}

/// Hands a held flow out (`napi_gro_complete`) and frees its slot.
fn emit<F>(flow: &mut Flow, stats: &mut GroStats, out: &mut F)
where
    F: FnMut(&[u8], &OffloadMeta),
{
    flow.active = false;
    let frame = &mut flow.buf[..flow.len];
    if flow.count == 1 {
        stats.singles += 1;
        let meta = OffloadMeta {
            csum: flow.csum,
            gso: None,
        };
        out(frame, &meta);
        return;
    }
    stats.super_frames += 1;
    let loc = flow.loc;
    let l3 = loc.l3_start;
    let ip_len = frame.len() - l3;
    let kind = match loc.l3 {
        L3Kind::Ipv4 => {
            parse::put16(frame, l3 + field::V4_TOTAL_LEN, ip_len as u16);
            csum::fill_ipv4_header(frame, l3, 20);
            GsoKind::Tcpv4
        }
        L3Kind::Ipv6 => {
            parse::put16(frame, l3 + field::V6_PAYLOAD_LEN, (ip_len - 40) as u16);
            GsoKind::Tcpv6
        }
    };
    let th = loc.csum_start;
    let p = csum::pseudo(frame, &loc, frame.len() - th).sum();
    parse::put16(frame, th + field::TCP_CSUM, p);
    let meta = OffloadMeta {
        csum: Csum::Partial {
            start: th as u16,
            offset: field::TCP_CSUM as u16,
        },
        gso: Some(Gso {
            kind,
            size: flow.mss as u16,
            fixed_id: flow.fixed_id,
        }),
    };
    out(frame, &meta);
}
