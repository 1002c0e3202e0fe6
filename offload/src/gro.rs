//! Receive coalescing (GRO) as Linux's NAPI does it: consecutive TCP segments of one flow
//! arriving in one poll are merged into one super-frame, so everything after the driver pays per
//! 64 KiB instead of per 1.5 KiB.
//!
//! A driver's poll feeds every frame to the engine in arrival order and flushes it at the end of
//! the poll. Two ways in, one set of rules:
//!
//! - [`GroEngine`] decides and keeps each held flow's headers; the frames themselves stay in the
//!   caller's storage behind a [`GroSink`]. A NIC driver's sink holds a flow's first segment in
//!   the very buffer the device wrote it into, has each later segment's payload appended to that
//!   buffer (one copy of the payload, into memory that is handed on as it is), recycles the
//!   merged segment's buffer, and writes the patched headers back when the flow completes.
//!   Frames that are not held go back through the sink untouched.
//! - [`Gro`] is that engine over byte slices, with engine-owned flow buffers: a frame that starts
//!   a flow is copied once into that flow's buffer, each later segment's payload appended there,
//!   and the super-frame lent to the caller's `out` closure at completion; frames that are not
//!   held are lent straight back from the caller's buffer with no copy. [`Gro`] owns
//!   [`MAX_FLOWS`] buffers of [`MAX_FRAME_LEN`] bytes, allocated once in [`Gro::new`]; neither
//!   way allocates per frame.
//!
//! # When frames merge
//!
//! Exactly when Linux's `dev_gro_receive` → `inet_gro_receive`/`ipv6_gro_receive` →
//! `tcp_gro_receive` would: same Ethernet header (MACs, EtherType, VLAN tag), same IP addresses
//! (and IPv6 flow label), same ports; IPv4 without options, valid header checksum, no fragment
//! bits, same TOS, TTL and DF, ids incrementing by one per segment (or, for a DF flow whose
//! second segment repeats the first id, fixed); IPv6 without extension headers, same traffic class
//! and hop limit; the IP length matching the frame (no Ethernet padding); a valid TCP checksum
//! (verified through the sink unless the meta says `Validated` or `Partial`); TCP seq exactly
//! continuing, same ack, same data offset, window and flags except CWR/FIN/PSH, CWR not set on
//! the new segment, options byte-identical; payload 1..=MSS, the MSS being the first segment's
//! payload; the IP datagram staying below 64 KiB. A segment with PSH or FIN, or shorter than the
//! MSS, is merged and then ends the flow. A segment with SYN, RST or URG never merges and never
//! starts a flow, nor does a segment without payload, nor a frame that is itself GSO (Linux
//! merges those when their MSS matches; no uplink here delivers them to GRO). A segment the sink
//! cannot append (out of buffers) ends its flow and starts a new one, as a merge Linux refuses.
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

use core::marker::PhantomData;
use core::ops::Range;

use crate::csum;
use crate::gso::MAX_FRAME_LEN;
use crate::parse::{self, L3Kind, L4Kind, L4Loc, field, tcp_flags};
use crate::{Csum, Gso, GsoKind, OffloadMeta};

/// Flows held at once, as Linux's `MAX_GRO_SKBS`.
pub const MAX_FLOWS: usize = 8;

/// Header bytes the engine keeps per held flow: the most a mergeable frame has (Ethernet with
/// one 802.1Q tag, IPv6 without extension headers, TCP with 40 bytes of options).
pub const MAX_HDR: usize = 18 + 40 + 60;

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

/// Where a [`GroEngine`]'s frames live, and where they go: the caller's storage.
///
/// The engine never sees a frame's payload; it reads the headers it is given with each frame
/// and tells the sink what to do with the frames themselves.
pub trait GroSink {
    /// A received frame, as the engine is fed it.
    type In;
    /// A frame the engine holds: a flow's first segment, later payloads appended to it.
    type Held;
    /// Starts holding `frame` as the flow in table slot `slot` (`0..MAX_FLOWS`; the slot's
    /// previous flow, if any, has been completed).
    fn hold(&mut self, slot: usize, frame: Self::In) -> Self::Held;
    /// Appends `frame`'s bytes `payload` (its TCP payload) to `held`, whose frame is `at` bytes
    /// long so far. Returns false if it cannot (no room): the segment is then not merged, and
    /// `held`'s first `at` bytes must be as they were. `frame` is dropped after a successful
    /// append (its storage can be recycled).
    fn append(
        &mut self,
        held: &mut Self::Held,
        at: usize,
        frame: &Self::In,
        payload: Range<usize>,
    ) -> bool;
    /// Whether `frame`'s TCP checksum (at `loc`) is correct: asked only of a frame whose meta
    /// says [`Csum::None`], as Linux's `skb_gro_checksum_validate` checks in software what the
    /// device did not.
    fn verify(&mut self, frame: &Self::In, loc: &L4Loc) -> bool;
    /// Hands on a frame the engine did not hold, unchanged, with the meta it carries now
    /// (`Validated` if `verify` checked it).
    fn pass(&mut self, frame: Self::In, meta: &OffloadMeta);
    /// Hands on a held flow's frame, `len` bytes long. With `headers`, its first
    /// `headers.len()` bytes are to be replaced by them (the headers as `tcp*_gro_complete`
    /// leaves a super-frame's); without, the frame is exactly as it was received.
    fn complete(
        &mut self,
        held: Self::Held,
        len: usize,
        headers: Option<&[u8]>,
        meta: &OffloadMeta,
    );
}

struct Flow<T> {
    /// The frame, while the flow is held.
    held: Option<T>,
    /// Hold order; the smallest is the oldest.
    age: u64,
    /// The first segment's headers, patched as segments merge.
    hdr: [u8; MAX_HDR],
    /// Bytes of the held frame: the head frame plus appended payload.
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

/// The GRO engine of one receive queue, over frames of type `T` kept by a [`GroSink`]. See the
/// [module docs](self).
pub struct GroEngine<T> {
    flows: Vec<Flow<T>>,
    next_age: u64,
    stats: GroStats,
}

impl<T> core::fmt::Debug for GroEngine<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GroEngine")
            .field("held", &self.held())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T> Default for GroEngine<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A TCP frame as GRO sees it.
struct Seg {
    loc: L4Loc,
    payload: usize,
    /// Passes the IP-level and checksum checks: may merge or be held.
    clean: bool,
    /// Checksum state to hand on (Validated once verified through the sink).
    csum: Csum,
}

impl<T> GroEngine<T> {
    /// An engine with an empty table of [`MAX_FLOWS`] flows.
    pub fn new() -> Self {
        let flows = (0..MAX_FLOWS)
            .map(|_| Flow {
                held: None,
                age: 0,
                hdr: [0; MAX_HDR],
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
        Self {
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
        self.flows.iter().filter(|f| f.held.is_some()).count()
    }

    /// Feeds one received frame of `len` bytes. `headers` is its beginning: at least through
    /// its TCP header for it to be merged or held (the whole frame will do; a NIC driver reads
    /// the first few hundred bytes of the first page). The sink is told, in order, to complete
    /// the held flow this frame ends (if any), then to append, hold or pass the frame itself
    /// (and to complete its flow when the frame ends it).
    pub fn receive<S: GroSink<Held = T>>(
        &mut self,
        frame: S::In,
        headers: &[u8],
        len: usize,
        meta: &OffloadMeta,
        sink: &mut S,
    ) {
        let Some(seg) = classify(headers, len, meta, &frame, sink) else {
            self.stats.passed += 1;
            sink.pass(frame, meta);
            return;
        };
        let th = seg.loc.csum_start;
        let flags = headers[th + field::TCP_FLAGS];
        if let Some(i) = self.find(headers, &seg.loc) {
            let flow = &mut self.flows[i];
            if seg.clean
                && let Some(fixed_id) = mergeable(flow, headers, &seg)
                && let Some(held) = flow.held.as_mut()
                && sink.append(held, flow.len, &frame, seg.loc.hdr_len()..seg.loc.ip_end)
            {
                flow.len += seg.payload;
                flow.payload += seg.payload;
                flow.count += 1;
                flow.fixed_id = fixed_id;
                flow.hdr[th + field::TCP_FLAGS] |= flags & (tcp_flags::FIN | tcp_flags::PSH);
                self.stats.merged += 1;
                if seg.payload < flow.mss || flags & (tcp_flags::PSH | tcp_flags::FIN) != 0 {
                    complete(flow, &mut self.stats, sink);
                }
                return;
            }
            complete(flow, &mut self.stats, sink);
        }
        let ends =
            tcp_flags::URG | tcp_flags::PSH | tcp_flags::RST | tcp_flags::SYN | tcp_flags::FIN;
        if seg.clean && seg.payload > 0 && flags & ends == 0 {
            self.hold(frame, headers, &seg, sink);
        } else {
            self.stats.passed += 1;
            let meta = OffloadMeta {
                csum: seg.csum,
                gso: meta.gso,
            };
            sink.pass(frame, &meta);
        }
    }

    /// Completes every held flow, oldest first: the end of a poll.
    pub fn flush<S: GroSink<Held = T>>(&mut self, sink: &mut S) {
        while let Some(i) = self.oldest() {
            complete(&mut self.flows[i], &mut self.stats, sink);
        }
    }

    fn oldest(&self) -> Option<usize> {
        (0..self.flows.len())
            .filter(|&i| self.flows[i].held.is_some())
            .min_by_key(|&i| self.flows[i].age)
    }

    fn find(&self, headers: &[u8], loc: &L4Loc) -> Option<usize> {
        self.flows
            .iter()
            .position(|f| f.held.is_some() && same_flow(&f.hdr, &f.loc, headers, loc))
    }

    fn hold<S: GroSink<Held = T>>(
        &mut self,
        frame: S::In,
        headers: &[u8],
        seg: &Seg,
        sink: &mut S,
    ) {
        let i = match self.flows.iter().position(|f| f.held.is_none()) {
            Some(i) => i,
            None => {
                // Table full: as Linux's gro_flush_oldest, the flow held longest goes out.
                let Some(i) = self.oldest() else { return };
                self.stats.evicted += 1;
                complete(&mut self.flows[i], &mut self.stats, sink);
                i
            }
        };
        let flow = &mut self.flows[i];
        let hl = seg.loc.hdr_len();
        flow.hdr[..hl].copy_from_slice(&headers[..hl]);
        flow.held = Some(sink.hold(i, frame));
        flow.age = self.next_age;
        self.next_age += 1;
        flow.len = seg.loc.ip_end;
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
fn classify<S: GroSink>(
    headers: &[u8],
    len: usize,
    meta: &OffloadMeta,
    frame: &S::In,
    sink: &mut S,
) -> Option<Seg> {
    let loc = parse::locate(headers).ok()?;
    if loc.l4 != L4Kind::Tcp {
        return None;
    }
    let l3 = loc.l3_start;
    let payload = loc.ip_end.saturating_sub(loc.hdr_len());
    // inet_gro_receive / ipv6_gro_receive: flush unless the IP length is the frame's length.
    // The whole header must be at hand (and fit the flow's copy) to be compared.
    let mut clean = len == loc.ip_end
        && meta.gso.is_none()
        && loc.hdr_len() <= headers.len()
        && loc.hdr_len() <= MAX_HDR;
    match loc.l3 {
        L3Kind::Ipv4 => {
            // Only a 20-byte header, a correct header checksum and no flag but DF.
            clean &= headers[l3] == 0x45
                && csum::ipv4_header_ok(headers, l3, 20)
                && parse::be16(headers, l3 + field::V4_FRAG) & !parse::IP_DF == 0;
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
            Csum::None => sink.verify(frame, &loc),
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

/// `tcp_gro_receive` and the network-layer flush checks: whether the segment whose headers are
/// `frame` may be appended to `flow`, and if so whether the flow then keeps fixed IPv4 ids.
fn mergeable<T>(flow: &Flow<T>, frame: &[u8], seg: &Seg) -> Option<bool> {
    let (hl, fl) = (&flow.loc, &seg.loc);
    if hl.csum_start != fl.csum_start {
        return None;
    }
    let head = &flow.hdr[..];
    let l3 = fl.l3_start;
    let mut fixed_id = flow.fixed_id;
    match fl.l3 {
        L3Kind::Ipv4 => {
            let same = |at: usize| head[l3 + at] == frame[l3 + at];
            let df = |p: &[u8]| parse::be16(p, l3 + field::V4_FRAG) & parse::IP_DF != 0;
            // inet_gro_flush: TTL, TOS and DF equal.
            if !same(field::V4_TTL) || !same(field::V4_TOS) || df(head) != df(frame) {
                return None;
            }
            let offset = parse::be16(frame, l3 + field::V4_ID)
                .wrapping_sub(parse::be16(head, l3 + field::V4_ID));
            // The second segment decides: a DF flow repeating its id keeps a fixed id.
            if flow.count == 1 && df(frame) && offset == 0 {
                fixed_id = true;
            }
            let want = if fixed_id && df(frame) { 0 } else { flow.count };
            if offset != want {
                return None;
            }
        }
        L3Kind::Ipv6 => {
            // ipv6_gro_flush: traffic class and hop limit equal.
            let tclass = |p: &[u8]| parse::be32(p, l3) & 0x0FF0_0000;
            if tclass(head) != tclass(frame)
                || head[l3 + field::V6_HOP_LIMIT] != frame[l3 + field::V6_HOP_LIMIT]
            {
                return None;
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
        return None;
    }
    // Equal data offsets (checked above), so both headers hold these bytes.
    let doff = fl.l4_hdr_len;
    if head[th + field::TCP_ACK..th + 12] != frame[th + field::TCP_ACK..th + 12]
        || head[th + 20..th + doff] != frame[th + 20..th + doff]
    {
        return None;
    }
    let next_seq = parse::be32(head, th + field::TCP_SEQ).wrapping_add(flow.payload as u32);
    let len = seg.payload;
    if len == 0
        || len > flow.mss
        || parse::be32(frame, th + field::TCP_SEQ) != next_seq
        || flow.len - l3 + len >= 65_536
    {
        return None;
    }
    Some(fixed_id)
}

/// Hands a held flow on (`napi_gro_complete`) and frees its slot.
fn complete<T, S: GroSink<Held = T>>(flow: &mut Flow<T>, stats: &mut GroStats, sink: &mut S) {
    let Some(held) = flow.held.take() else {
        return;
    };
    if flow.count == 1 {
        stats.singles += 1;
        let meta = OffloadMeta {
            csum: flow.csum,
            gso: None,
        };
        sink.complete(held, flow.len, None, &meta);
        return;
    }
    stats.super_frames += 1;
    let loc = flow.loc;
    let l3 = loc.l3_start;
    let ip_len = flow.len - l3;
    let hdr = &mut flow.hdr[..loc.hdr_len()];
    let kind = match loc.l3 {
        L3Kind::Ipv4 => {
            parse::put16(hdr, l3 + field::V4_TOTAL_LEN, ip_len as u16);
            csum::fill_ipv4_header(hdr, l3, 20);
            GsoKind::Tcpv4
        }
        L3Kind::Ipv6 => {
            parse::put16(hdr, l3 + field::V6_PAYLOAD_LEN, (ip_len - 40) as u16);
            GsoKind::Tcpv6
        }
    };
    let th = loc.csum_start;
    let p = csum::pseudo(hdr, &loc, flow.len - th).sum();
    parse::put16(hdr, th + field::TCP_CSUM, p);
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
    sink.complete(held, flow.len, Some(hdr), &meta);
}

/// The GRO engine over byte slices, with its own flow buffers. See the [module docs](self).
pub struct Gro {
    engine: GroEngine<usize>,
    /// One buffer of [`MAX_FRAME_LEN`] bytes per flow slot.
    bufs: Vec<Box<[u8]>>,
}

impl core::fmt::Debug for Gro {
    // The 64 KiB buffers are left out: a debug print shows the flows, not their bytes.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gro")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Default for Gro {
    fn default() -> Gro {
        Gro::new()
    }
}

impl Gro {
    /// An engine with [`MAX_FLOWS`] flow buffers of [`MAX_FRAME_LEN`] bytes (about 512 KiB).
    pub fn new() -> Gro {
        Gro {
            engine: GroEngine::new(),
            bufs: (0..MAX_FLOWS)
                .map(|_| vec![0u8; MAX_FRAME_LEN].into_boxed_slice())
                .collect(),
        }
    }

    /// What the engine has done so far.
    pub fn stats(&self) -> GroStats {
        self.engine.stats()
    }

    /// Flows currently held.
    pub fn held(&self) -> usize {
        self.engine.held()
    }

    /// Feeds one received frame. `out` is called zero, one or two times: first with a held flow
    /// this frame ends, then with the frame itself if it is neither merged nor held (or with its
    /// flow, if it merged and ended it).
    pub fn receive<F>(&mut self, frame: &[u8], meta: &OffloadMeta, out: &mut F)
    where
        F: FnMut(&[u8], &OffloadMeta),
    {
        let mut sink = Slices {
            bufs: &mut self.bufs,
            out,
            _in: PhantomData,
        };
        self.engine
            .receive(frame, frame, frame.len(), meta, &mut sink);
    }

    /// Hands out every held flow, oldest first; the end of a poll.
    pub fn flush<F>(&mut self, out: &mut F)
    where
        F: FnMut(&[u8], &OffloadMeta),
    {
        let mut sink = Slices {
            bufs: &mut self.bufs,
            out,
            _in: PhantomData,
        };
        self.engine.flush(&mut sink);
    }
}

/// [`Gro`]'s sink: held flows in its buffers (by slot), everything lent to `out`.
struct Slices<'a, 'b, F> {
    bufs: &'b mut [Box<[u8]>],
    out: &'b mut F,
    _in: PhantomData<&'a [u8]>,
}

impl<'a, F> GroSink for Slices<'a, '_, F>
where
    F: FnMut(&[u8], &OffloadMeta),
{
    type In = &'a [u8];
    type Held = usize;

    fn hold(&mut self, slot: usize, frame: &'a [u8]) -> usize {
        // A held frame is one whole IP datagram: at most MAX_FRAME_LEN bytes.
        self.bufs[slot][..frame.len()].copy_from_slice(frame);
        slot
    }

    fn append(
        &mut self,
        held: &mut usize,
        at: usize,
        frame: &&'a [u8],
        payload: Range<usize>,
    ) -> bool {
        let n = payload.len();
        let Some(dst) = self.bufs[*held].get_mut(at..at + n) else {
            return false;
        };
        dst.copy_from_slice(&frame[payload]);
        true
    }

    fn verify(&mut self, frame: &&'a [u8], _loc: &L4Loc) -> bool {
        csum::verify(frame)
    }

    fn pass(&mut self, frame: &'a [u8], meta: &OffloadMeta) {
        (self.out)(frame, meta);
    }

    fn complete(&mut self, held: usize, len: usize, headers: Option<&[u8]>, meta: &OffloadMeta) {
        let frame = &mut self.bufs[held][..len];
        if let Some(h) = headers {
            frame[..h.len()].copy_from_slice(h);
        }
        (self.out)(frame, meta);
    }
}
