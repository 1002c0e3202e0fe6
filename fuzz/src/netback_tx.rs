//! `netback_tx`: a hostile frontend's tx ring against `netback::Netback` on the embedded model,
//! next to a well-behaved pair.
//!
//! The input is a program: raw tx requests (any gref, offset, flags, id, size), extra-info slots
//! of arbitrary bytes, whole chains, slots rewritten after they were pushed, `req_prod` set to
//! anything, event indices scribbled on, grants made, revoked and re-made between passes, pages
//! rewritten, and backend passes; and TCP super-frames with any MSS, for the pair's receiver,
//! which takes neither `feature-sg` nor GSO, so software GSO cuts them.
//!
//! Invariants: netback never panics; `rsp_prod` only moves forward, never past the furthest
//! valid `req_prod` the backend was shown (no response to an unpushed request, none answered
//! twice); each response's id is one the backend could have read in that slot and its status a
//! `NETIF_RSP_*`; an invalid `req_prod` disables the vif with `RequestOverflow`; a disabled vif
//! has its reason recorded and gets no further responses; once the backend has nothing left to
//! do and the guest has notified its pushed requests, a vif that is not disabled has answered
//! every one; the counters agree with the
//! responses and the switch (`tx_packets + drops ≤ responses`, OK responses ≥ packets and
//! accepted multicast requests, error responses ≥ drops and refused multicast adds, switch rx =
//! `tx_packets`); no sentinel page of the guest or of dom0 changed; the pair still exchanges a
//! frame byte-exact. A super-frame that reaches the switch for the pair's receiver is dropped
//! uncut and counted once if it would make more than `MAX_GSO_SEGS` segments, and otherwise
//! never counted so.

use std::time::Duration;

use netback::{Config, RxMode, VifStats};
use netif_ring::netif::{
    ExtraInfo, ExtraRepr, NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY,
    NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, TxRequest,
    TxResponse, XEN_NETIF_GSO_TYPE_TCPV4,
};
use netif_ring::raw;
use testkit::{frame_between, mac};

use crate::hostile::{GrantKind, Hostile, Published};
use crate::scene::{self, FatalWatch};
use crate::world::{Base, MAC_A, MAC_B, MAC_H, RING_SIZE};
use crate::{Input, Scenario};

/// Op codes (first byte of each op, modulo their number).
pub mod op {
    /// `gref, offset, flags, id, size`: one raw request at the producer.
    pub const PUT_REQ: u8 = 0;
    /// 8 raw bytes: an extra-info slot at the producer.
    pub const PUT_EXTRA: u8 = 1;
    /// `notify?`: publish the producer.
    pub const PUSH: u8 = 2;
    /// `mode, value`: set `req_prod` to anything.
    pub const SET_REQ_PROD: u8 = 3;
    /// `back, 12 bytes`: rewrite an already written slot.
    pub const REWRITE: u8 = 4;
    /// `page, kind`.
    pub const GRANT: u8 = 5;
    /// `grant`.
    pub const REVOKE: u8 = 6;
    /// `page, offset, size, dst`: the guest writes a frame into one of its pages.
    pub const WRITE_PAGE: u8 = 7;
    /// One backend pass.
    pub const POLL: u8 = 8;
    /// Passes until the backend has no work, then the completeness check.
    pub const SETTLE: u8 = 9;
    /// The backend's re-arm and a zero-timeout wait.
    pub const WAIT: u8 = 10;
    /// An event from the guest.
    pub const NOTIFY: u8 = 11;
    /// `which, value`: scribble on an event index.
    pub const SET_EVENTS: u8 = 12;
    /// `slots, extra?, [8 bytes], gref, size...`: a well-formed chain, pushed.
    pub const CHAIN: u8 = 13;
    /// The pair exchanges a frame mid-sequence.
    pub const PAIR: u8 = 14;
    /// `grant, call`: the guest revokes a grant during the next pass, before the backend's
    /// `1 + call % 4`-th grant hypercall of it.
    pub const MID_REVOKE: u8 = 15;
    /// `dst?, mss kind, mss, len`: a TCP/IPv4 super-frame (`csum_blank`, a GSO extra of that
    /// MSS) written across the first data pages and pushed as one chain, then settled.
    pub const GSO: u8 = 16;
    /// Number of op codes.
    pub const COUNT: u8 = 17;
}

/// A slot size chosen by the input: runts, page-sized, packet-sized or raw.
pub fn pick_size(input: &mut Input<'_>) -> u16 {
    let s = input.u8();
    match s >> 6 {
        0 => u16::from(s),
        1 => u16::from(s & 63) * 64,
        2 => u16::from(s & 63) * 1024,
        _ => input.u16(),
    }
}

/// A slot offset chosen by the input: 0, aligned, near the page's end, or raw.
pub fn pick_offset(input: &mut Input<'_>) -> u16 {
    let o = input.u8();
    match o >> 6 {
        0 => 0,
        1 => u16::from(o & 63) * 64,
        2 => 4096 - u16::from(o & 63),
        _ => input.u16(),
    }
}

/// A destination MAC chosen by the input.
pub fn pick_dst(input: &mut Input<'_>) -> [u8; 6] {
    match input.below(6) {
        0 => [0xff; 6],
        1 => mac(MAC_B),
        2 => mac(MAC_A),
        3 => mac(MAC_H),
        4 => [0x01, 0x00, 0x5e, 0, 0, 1],
        _ => input.array(),
    }
}

/// A TCP/IPv4 frame from the hostile guest to `dst` with `payload` bytes, its checksum left to
/// the receiver (`csum_blank`: the field's value does not matter to the backend).
fn tcp_frame(dst: [u8; 6], payload: usize, seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&mac(MAC_H));
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_len = (40 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[10, 0, 0, MAC_H, 10, 0, 0, MAC_B]);
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&5201u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload).map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq) as u8));
    f
}

/// The hostile guest's sent traffic and what the backend answered, with the checks.
struct Scene {
    w: Base,
    h: Hostile,
    tx: Published,
    /// OKAY, ERROR (and DROPPED), NULL responses seen.
    ok: u64,
    err: u64,
    null: u64,
    fatal: FatalWatch,
    seq: u32,
}

impl Scene {
    fn new(input: &mut Input<'_>) -> Scene {
        let cfg = Config {
            copy_batch_ops: 1 + input.below(64),
            tx_batch_packets: 1 + input.below(64),
            // An idle tx ring is armed and skipped until its event (NAPI), so the settle check
            // relies on the guest's notify being delivered at once, not held back by the late
            // EOI for up to its wall-clock delay (netback's own tests cover that throttle).
            max_eoi_delay: Duration::ZERO,
            ..Config::default()
        };
        let (w, mut h) = scene::setup(cfg, RxMode::Copy);
        // Data pages hold frames to various destinations; most are granted.
        let dsts = [[0xff; 6], mac(MAC_B), mac(MAC_A), mac(MAC_H), mac(0x33)];
        for i in 0..h.pages.len() {
            let f = frame_between(mac(MAC_H), dsts[i % dsts.len()], 4096, i as u32);
            h.write_page(i, 0, &f);
        }
        for i in 0..24 {
            let kind = match i {
                0..16 => GrantKind::Ro,
                16..20 => GrantKind::Rw,
                20..22 => GrantKind::Foreign,
                _ => GrantKind::Accept,
            };
            h.grant(i, kind);
        }
        Scene {
            w,
            h,
            tx: Published { rsp_seen: 0, hi: 0 },
            ok: 0,
            err: 0,
            null: 0,
            fatal: FatalWatch::default(),
            seq: 0,
        }
    }

    fn stats(&self) -> VifStats {
        scene::stats(&self.w, &self.h)
    }

    /// One backend pass and every check on what it did.
    fn poll(&mut self) -> bool {
        let req_prod = self.h.tx_indices().req_prod;
        self.tx.before_pass(req_prod);
        let (work, _) = scene::pass(&mut self.w, &mut self.h);
        let st = self.stats();
        let rsp_prod = self.h.tx_indices().rsp_prod;
        for j in self.tx.after_pass(rsp_prod) {
            let rsp: TxResponse = self.h.front.read_tx_at(j);
            let slot = (j % RING_SIZE) as usize;
            let images = &self.h.tx_images[slot];
            assert!(
                images
                    .iter()
                    .any(|r| r.id == rsp.id || (r.gref & 0xffff) as u16 == rsp.id),
                "response {j} has id {} but slot {slot} never held it: {images:?}",
                rsp.id
            );
            match rsp.status {
                NETIF_RSP_OKAY => self.ok += 1,
                NETIF_RSP_ERROR | NETIF_RSP_DROPPED => self.err += 1,
                NETIF_RSP_NULL => self.null += 1,
                s => panic!("response {j} has status {s}"),
            }
            let now: TxRequest = self.h.front.read_tx_at(j);
            self.h.tx_images[slot] = vec![now];
        }
        self.fatal.check(&st, rsp_prod);
        let drops = st.tx_runt
            + st.tx_too_many_slots
            + st.tx_oversize_slot
            + st.tx_copy_errors
            + st.tx_no_buffer;
        assert!(
            st.tx_packets + st.tx_mcast_requests + drops <= self.ok + self.err,
            "{st:?} counts more packets than the {} OK and {} error responses",
            self.ok,
            self.err
        );
        // A multicast add the full list refuses is answered with an error.
        assert!(st.tx_mcast_errors <= st.tx_mcast_requests, "{st:?}");
        assert!(
            self.ok >= st.tx_packets + st.tx_mcast_requests - st.tx_mcast_errors,
            "{st:?}, {} OK",
            self.ok
        );
        assert!(
            self.err >= drops + st.tx_mcast_errors,
            "{st:?}, {} errors",
            self.err
        );
        let port = self
            .w
            .nb
            .vifs()
            .find(|v| v.id() == self.h.id())
            .map(|v| v.bridge_port())
            .expect("hostile vif");
        let snap = self.w.nb.snapshot();
        let sw = snap
            .bridge
            .ports
            .iter()
            .find(|p| p.id == port)
            .expect("hostile port")
            .stats;
        assert_eq!(sw.rx_frames, st.tx_packets, "switch rx vs vif tx_packets");
        assert_eq!(sw.rx_bytes, st.tx_bytes, "switch rx bytes vs vif tx_bytes");
        scene::pair_keeps_up(&mut self.w);
        work
    }

    /// Passes until the backend has nothing to do; then every valid pushed request of a live
    /// vif is answered.
    fn settle(&mut self) {
        scene::until_idle(|| self.poll());
        // A ring the backend found idle is armed and skipped until its event: a frontend that
        // pushed requests notifies (as `req_event` asks), and then they must all be answered.
        self.h.notify();
        scene::until_idle(|| self.poll());
        let req_prod = self.h.tx_indices().req_prod;
        if self.stats().fatal.is_none() && req_prod.wrapping_sub(self.tx.rsp_seen) <= RING_SIZE {
            assert_eq!(
                self.tx.rsp_seen, req_prod,
                "the backend went idle with pushed requests unanswered"
            );
        }
    }
}

impl Scene {
    /// Op `GSO`: a super-frame through software GSO, and what the receiver's counters say.
    fn gso(&mut self, input: &mut Input<'_>) {
        // Judged only when this frame is alone on the ring: earlier requests all answered, none
        // written and left unpushed.
        self.settle();
        let alone = self.h.tx_indices().req_prod == self.h.tx_prod
            && self.tx.rsp_seen == self.h.tx_prod
            && self.stats().fatal.is_none();
        let to_b = input.below(4) != 0;
        let dst = if to_b { mac(MAC_B) } else { pick_dst(input) };
        let mss = match input.below(4) {
            0 => u16::from(input.u8() % 64),
            1 => 40 + u16::from(input.u8()),
            2 => 1448,
            _ => input.u16(),
        };
        // At most 65 535 bytes (a slot's size field) and 16 pages (the granted run).
        let payload = usize::from(input.u16()) % (65_535 - 54 + 1);
        self.seq += 1;
        let f = tcp_frame(dst, payload, self.seq);
        let pages = f.len().div_ceil(4096);
        let mut slots = Vec::with_capacity(pages);
        for (i, chunk) in f.chunks(4096).enumerate() {
            self.h.write_page(i, 0, chunk);
            let gref = self
                .h
                .grants
                .iter()
                .find(|g| g.live && g.page == i)
                .map_or(0, |g| g.gref.0);
            slots.push((gref, chunk.len() as u16));
        }
        let extra = ExtraRepr::Gso {
            size: mss,
            gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
            features: 0,
        }
        .emit(false);
        for (i, &(gref, size)) in slots.iter().enumerate() {
            let mut flags = if i + 1 < pages { NETTXF_MORE_DATA } else { 0 };
            if i == 0 {
                flags |= NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED | NETTXF_EXTRA_INFO;
            }
            self.seq += 1;
            self.h.put_tx(TxRequest {
                gref,
                offset: 0,
                flags,
                id: self.seq as u16,
                size: if i == 0 { f.len() as u16 } else { size },
            });
            if i == 0 {
                self.h.put_tx_extra(extra);
            }
        }
        let b = self.w.b.id();
        let before = (self.stats(), self.w.nb.vif_stats(b).expect("the pair's b"));
        self.h.set_tx_req_prod(self.h.tx_prod);
        self.h.notify();
        self.settle();
        let after = (self.stats(), self.w.nb.vif_stats(b).expect("the pair's b"));
        let sent = after.0.tx_packets - before.0.tx_packets;
        let capped = after.1.rx_gso_too_many_segs - before.1.rx_gso_too_many_segs;
        if !alone {
            return;
        }
        if sent == 1 && to_b && mss > 0 {
            let segs = payload.div_ceil(usize::from(mss)).max(1);
            assert_eq!(
                capped,
                u64::from(segs > netback::MAX_GSO_SEGS),
                "a super-frame of {segs} segments (MSS {mss}, payload {payload}): {:?}",
                after.1
            );
            if segs <= netback::MAX_GSO_SEGS && 54 + payload.min(usize::from(mss)) > 4096 {
                assert!(
                    after.1.rx_unfit > before.1.rx_unfit,
                    "segments longer than a page for a guest without feature-sg: {:?}",
                    after.1
                );
            }
        } else if sent == 0 {
            assert_eq!(capped, 0, "nothing new reached the switch");
        }
    }
}

impl Scenario for Scene {
    const OPS: usize = 512;

    fn start(input: &mut Input<'_>) -> Scene {
        Scene::new(input)
    }

    fn op(&mut self, input: &mut Input<'_>) {
        match input.u8() % op::COUNT {
            op::PUT_REQ => {
                let gref = self.h.pick_gref(input);
                let offset = pick_offset(input);
                let flags = u16::from(input.u8());
                let id = input.u16();
                let size = pick_size(input);
                self.h.put_tx(TxRequest {
                    gref,
                    offset,
                    flags,
                    id,
                    size,
                });
            }
            op::PUT_EXTRA => {
                let b: [u8; 8] = input.array();
                self.h.put_tx_extra(ExtraInfo {
                    type_: b[0],
                    flags: b[1],
                    u: [b[2], b[3], b[4], b[5], b[6], b[7]],
                });
            }
            op::PUSH => {
                self.h.set_tx_req_prod(self.h.tx_prod);
                if input.bool() {
                    self.h.notify();
                }
            }
            op::SET_REQ_PROD => {
                let v = match input.below(4) {
                    0 => self.h.tx_prod,
                    1 => self.h.tx_prod.wrapping_add(input.u8() as i8 as u32),
                    2 => self
                        .tx
                        .rsp_seen
                        .wrapping_add(RING_SIZE)
                        .wrapping_add(u32::from(input.u8() % 4)),
                    _ => input.u32(),
                };
                self.h.set_tx_req_prod(v);
            }
            op::REWRITE => {
                let back = u32::from(input.u8());
                let idx = self.h.tx_prod.wrapping_sub(1 + back);
                let b: [u8; 12] = input.array();
                let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
                self.h.write_tx(
                    idx,
                    TxRequest {
                        gref: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                        offset: le(4),
                        flags: le(6),
                        id: le(8),
                        size: le(10),
                    },
                );
            }
            op::GRANT => self.h.grant_from(input),
            op::REVOKE => scene::revoke(&self.w, &mut self.h, input),
            op::WRITE_PAGE => {
                let page = input.u8() as usize;
                let offset = pick_offset(input) as usize;
                let len = (pick_size(input) as usize).clamp(14, 4096);
                let dst = pick_dst(input);
                self.seq += 1;
                let f = frame_between(mac(MAC_H), dst, len, self.seq);
                self.h.write_page(page, offset, &f);
            }
            op::POLL => {
                self.poll();
            }
            op::SETTLE => self.settle(),
            op::WAIT => {
                // The re-arm reads req_prod: what it saw may be consumed later.
                let req_prod = self.h.tx_indices().req_prod;
                self.tx.before_pass(req_prod);
                self.w.nb.wait(Duration::ZERO).expect("netback wait");
            }
            op::NOTIFY => self.h.notify(),
            op::SET_EVENTS => {
                let v = input.u32();
                match input.below(4) {
                    0 => raw::set_req_event(self.h.front.tx.mem(), v),
                    1 => raw::set_rsp_event(self.h.front.tx.mem(), v),
                    2 => raw::set_req_event(self.h.front.rx.mem(), v),
                    _ => raw::set_rsp_event(self.h.front.rx.mem(), v),
                }
            }
            op::CHAIN => {
                let n = 1 + input.below(24);
                let extra = input.bool().then(|| input.array::<8>());
                let slots: Vec<(u32, u16, u16)> = (0..n)
                    .map(|_| {
                        let gref = self.h.pick_gref(input);
                        let off = pick_offset(input) % 4096;
                        let size = pick_size(input).min(4096 - off);
                        (gref, off, size)
                    })
                    .collect();
                let total: u32 = slots.iter().map(|s| u32::from(s.2)).sum();
                for (i, &(gref, offset, size)) in slots.iter().enumerate() {
                    let mut flags = if i + 1 < n { NETTXF_MORE_DATA } else { 0 };
                    if i == 0 && extra.is_some() {
                        flags |= NETTXF_EXTRA_INFO;
                    }
                    self.seq += 1;
                    let id = self.seq as u16;
                    let size = if i == 0 {
                        total.min(u32::from(u16::MAX)) as u16
                    } else {
                        size
                    };
                    self.h.put_tx(TxRequest {
                        gref,
                        offset,
                        flags,
                        id,
                        size,
                    });
                    if i == 0
                        && let Some(b) = extra
                    {
                        self.h.put_tx_extra(ExtraInfo {
                            type_: b[0],
                            flags: b[1],
                            u: [b[2], b[3], b[4], b[5], b[6], b[7]],
                        });
                    }
                }
                self.h.set_tx_req_prod(self.h.tx_prod);
                self.h.notify();
            }
            op::PAIR => {
                self.seq += 1;
                let f = frame_between(
                    mac(MAC_A),
                    mac(MAC_B),
                    60 + self.seq as usize % 3000,
                    self.seq,
                );
                self.w.a.try_send(&f);
                self.w.b.drain();
            }
            op::MID_REVOKE => scene::mid_revoke(&self.w, &mut self.h, input),
            op::GSO => self.gso(input),
            _ => unreachable!(),
        }
    }

    fn finish(mut self) {
        self.settle();
        scene::check_end(&mut self.w, &self.h);
    }
}

/// The target.
pub fn run(data: &[u8]) {
    crate::input::run::<Scene>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(seed: usize) -> Scene {
        crate::input::replay(&crate::seeds::all()[3].1[seed])
    }

    #[test]
    fn seed_chain_is_transmitted() {
        let s = play(1);
        // Taken whole; its bytes are not a TCP frame, so checksum setup then drops it (counted,
        // answered OK), as Linux's netback drops a GSO packet whose headers do not parse.
        let st = s.stats();
        assert_eq!(st.tx_packets + st.tx_csum_errors, 1, "{st:?}");
        assert_eq!(
            (s.ok, s.null),
            (3, 1),
            "three data slots OK, the GSO extra NULL"
        );
        s.finish();
    }

    #[test]
    fn seed_bogus_req_prod_is_fatal() {
        let mut s = play(9);
        s.settle();
        assert!(s.stats().fatal.is_some());
        s.finish();
    }

    /// The three software-GSO seeds, last in the list.
    fn gso_seed(k: usize) -> Scene {
        let n = crate::seeds::all()[3].1.len();
        play(n - 3 + k)
    }

    #[test]
    fn seed_gso_hostile_mss_is_dropped_uncut() {
        let s = gso_seed(0);
        assert_eq!(s.stats().tx_packets, 1, "the super-frame reached the switch");
        let b = s.w.nb.vif_stats(s.w.b.id()).unwrap();
        assert_eq!(b.rx_gso_too_many_segs, 1, "{b:?}");
        assert_eq!(b.rx_packets, 0, "not one of its 65 000 segments");
        s.finish();
    }

    #[test]
    fn seed_gso_is_cut_for_the_pair_receiver() {
        let s = gso_seed(1);
        let b = s.w.nb.vif_stats(s.w.b.id()).unwrap();
        assert_eq!(b.rx_gso_too_many_segs, 0, "{b:?}");
        assert_eq!(b.rx_packets, 14, "20 000 bytes at MSS 1448: {b:?}");
        s.finish();
    }

    #[test]
    fn seed_gso_segments_over_a_page_are_kept_from_a_guest_without_sg() {
        let s = gso_seed(2);
        let b = s.w.nb.vif_stats(s.w.b.id()).unwrap();
        assert_eq!((b.rx_unfit, b.rx_packets), (1, 0), "{b:?}");
        s.finish();
    }

    #[test]
    fn seed_22_slots_are_fatal() {
        let s = play(3);
        assert!(s.stats().fatal.is_some());
        s.finish();
    }
}
