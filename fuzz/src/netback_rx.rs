//! `netback_rx`: a hostile frontend's rx ring against `netback::Netback`, while a well-behaved
//! guest floods it.
//!
//! The input is a program: rx requests with any gref (live writable, read-only, granted to
//! another domain, revoked, a ring's, beyond the table, raw) and any id, slots rewritten after
//! the push, `req_prod` set to anything, grants made and revoked between passes, floods of
//! frames of any size from the well-behaved guest, and backend passes. The hostile vif is in
//! copy or flip mode (first input bit).
//!
//! Invariants: netback never panics; `rsp_prod` only moves forward and never past the furthest
//! valid `req_prod` the backend was shown (one response per request, none for a request never
//! posted); each response sits in its request's slot with that request's id (in request order);
//! a response with data (`status >= 0`) answers a request whose gref was a live grant the backend
//! may write, and its bytes are the next chunk of a frame the guest flooded; in copy mode every
//! request whose gref was not such a grant gets `status < 0`, and every error response is a
//! counted copy error; frames arrive whole and in the order they were sent; a disabled vif has its
//! reason and gets no further responses; no sentinel page changed; the pair still exchanges a
//! frame byte-exact.

use std::time::Duration;

use netback::{Config, RxMode, VifStats};
use netif_ring::netif::{NETRXF_MORE_DATA, RxRequest, RxResponse};
use netif_ring::raw;
use testkit::{frame_between, mac};

use crate::hostile::{GrantKind, Hostile, Published};
use crate::netback_tx::pick_dst;
use crate::scene::{self, FatalWatch};
use crate::world::{self, Base, MAC_A, MAC_B, RING_SIZE};
use crate::{Input, Scenario};

/// Op codes (first byte of each op, modulo their number).
pub mod op {
    /// `gref, id, pad`: one raw rx request at the producer.
    pub const PUT_RX: u8 = 0;
    /// `notify?`: publish the producer.
    pub const PUSH: u8 = 1;
    /// `mode, value`: set `req_prod` to anything.
    pub const SET_REQ_PROD: u8 = 2;
    /// `back, 8 bytes`: rewrite an already written slot.
    pub const REWRITE: u8 = 3;
    /// `page, kind`.
    pub const GRANT: u8 = 4;
    /// `grant`.
    pub const REVOKE: u8 = 5;
    /// `count, (size, dst)...`: the well-behaved guest sends frames.
    pub const FLOOD: u8 = 6;
    /// One backend pass.
    pub const POLL: u8 = 7;
    /// Passes until the backend has no work.
    pub const SETTLE: u8 = 8;
    /// The backend's re-arm and a zero-timeout wait.
    pub const WAIT: u8 = 9;
    /// An event from the guest.
    pub const NOTIFY: u8 = 10;
    /// `which, value`: scribble on an event index.
    pub const SET_EVENTS: u8 = 11;
    /// `count`: post that many requests on the live writable grants, and push.
    pub const POST_MANY: u8 = 12;
    /// `grant, call`: the guest revokes a grant during the next pass, before the backend's
    /// `1 + call % 4`-th grant hypercall of it.
    pub const MID_REVOKE: u8 = 13;
    /// Number of op codes.
    pub const COUNT: u8 = 14;
}

struct Scene {
    w: Base,
    h: Hostile,
    mode: RxMode,
    rx: Published,
    /// Frames `a` sent that flood to the hostile vif, in order.
    sent: Vec<Vec<u8>>,
    /// Index in `sent` after the last frame the hostile guest received whole.
    next_sent: usize,
    /// The frame being reassembled; `None` after a failed or unverifiable slot until the
    /// chain ends.
    partial: Option<Vec<u8>>,
    error_responses: u64,
    chain_ends: u64,
    fatal: FatalWatch,
    seq: u32,
    /// Backend pages the frames sent so far may pin (see [`FLOOD_PAGES`]).
    flooded_pages: usize,
}

/// At most this many backend pages' worth of frames are flooded per run. A vif that posts no
/// rx buffers keeps every frame queued for it (up to `rx_queue_bytes`, counted in bytes, so
/// small frames pin a page each) until `rx_drain_timeout` (10 s), and the frame pool is shared
/// by every vif: past this budget the hostile guest would starve the pair's transmit path.
/// That starvation is a known netback issue with its own (ignored) regression test in
/// `netback/tests/fuzz_regressions.rs`; the budget keeps the fuzzer looking for new ones.
pub const FLOOD_PAGES: usize = world::POOL_PAGES - 40;

impl Scene {
    fn new(input: &mut Input<'_>) -> Scene {
        let mode = if input.bool() {
            RxMode::Flip
        } else {
            RxMode::Copy
        };
        let cfg = Config {
            rx_batch_packets: 1 + input.below(64),
            copy_batch_ops: 1 + input.below(64),
            flip_batch_pages: 1 + input.below(64),
            ..Config::default()
        };
        let (w, mut h) = scene::setup(cfg, mode);
        let (good, other) = match mode {
            RxMode::Copy => (GrantKind::Rw, GrantKind::Accept),
            RxMode::Flip => (GrantKind::Accept, GrantKind::Rw),
        };
        for i in 0..22 {
            let kind = match i {
                0..12 => good,
                12..16 => GrantKind::Ro,
                16..18 => GrantKind::Foreign,
                _ => other,
            };
            h.grant(i, kind);
        }
        Scene {
            w,
            h,
            mode,
            rx: Published { rsp_seen: 0, hi: 0 },
            sent: Vec::new(),
            next_sent: 0,
            partial: Some(Vec::new()),
            error_responses: 0,
            chain_ends: 0,
            fatal: FatalWatch::default(),
            seq: 0,
            flooded_pages: 0,
        }
    }

    fn writable(&self) -> GrantKind {
        match self.mode {
            RxMode::Copy => GrantKind::Rw,
            RxMode::Flip => GrantKind::Accept,
        }
    }

    fn stats(&self) -> VifStats {
        scene::stats(&self.w, &self.h)
    }

    /// The request the backend answered with response `j`, and the response. Slots are
    /// written only between passes and each is read at most once a pass, so the request is the
    /// last image written there.
    fn answered(&self, j: u32) -> (RxRequest, RxResponse) {
        let rsp: RxResponse = self.h.front.read_rx_at(j);
        let slot = (j % RING_SIZE) as usize;
        (*self.h.rx_images[slot].last().expect("an image"), rsp)
    }

    /// Checks one response against the request the backend read in its slot. `shared`: another
    /// response of the same pass names the same page, so its bytes cannot be checked.
    /// `revoked`: the guest revoked the gref during the pass, so a copy before that was fine
    /// but the page now holds a fresh sentinel.
    fn response(&mut self, j: u32, req: RxRequest, rsp: RxResponse, shared: bool, revoked: bool) {
        let slot = (j % RING_SIZE) as usize;
        assert_eq!(
            rsp.id, req.id,
            "response {j} has id {} but its request had id {} (responses out of order?)",
            rsp.id, req.id
        );
        let page = self.h.live_page(req.gref, self.writable());
        if rsp.status >= 0 && page.is_none() && revoked {
            self.partial = None;
        } else if rsp.status >= 0 {
            let Some(pfn) = page else {
                panic!(
                    "response {j} says {} bytes arrived through gref {}, which is not a live \
                     grant the backend may write",
                    rsp.status, req.gref
                );
            };
            let (off, len) = (rsp.offset as usize, rsp.status as usize);
            assert!(
                off + len <= 4096,
                "response {j}: {len} bytes at offset {off}"
            );
            if shared {
                self.partial = None;
            }
            if let Some(p) = &mut self.partial {
                let mut buf = vec![0u8; len];
                self.h.front.dom.read(pfn, off, &mut buf).expect("own page");
                p.extend_from_slice(&buf);
            }
        } else {
            self.error_responses += 1;
            assert_eq!(
                rsp.status,
                netif_ring::netif::NETIF_RSP_ERROR,
                "response {j}"
            );
            if self.mode == RxMode::Copy {
                assert!(
                    page.is_none(),
                    "response {j}: a copy into live writable gref {} failed",
                    req.gref
                );
            }
            self.partial = None;
        }
        if rsp.flags & NETRXF_MORE_DATA == 0 {
            self.chain_ends += 1;
            if let Some(f) = self.partial.take() {
                let k = self.sent[self.next_sent..]
                    .iter()
                    .position(|s| *s == f)
                    .unwrap_or_else(|| {
                        panic!(
                            "the hostile guest received a {}-byte frame that is not the next \
                             of those sent to it",
                            f.len()
                        )
                    });
                self.next_sent += k + 1;
            }
            self.partial = Some(Vec::new());
        }
        let now: RxRequest = self.h.front.read_rx_at(j);
        self.h.rx_images[slot] = vec![now];
    }

    fn poll(&mut self) -> bool {
        let req_prod = self.h.rx_indices().req_prod;
        self.rx.before_pass(req_prod);
        let (work, revoked) = scene::pass(&mut self.w, &mut self.h);
        let rsp_prod = self.h.rx_indices().rsp_prod;
        let answered: Vec<(u32, RxRequest, RxResponse)> = self
            .rx
            .after_pass(rsp_prod)
            .map(|j| {
                let (req, rsp) = self.answered(j);
                (j, req, rsp)
            })
            .collect();
        let kind = self.writable();
        for &(j, req, rsp) in &answered {
            let page = self.h.live_page(req.gref, kind);
            let shared = page.is_some()
                && answered
                    .iter()
                    .filter(|(_, r, _)| self.h.live_page(r.gref, kind) == page)
                    .count()
                    > 1;
            self.response(j, req, rsp, shared, revoked.contains(&req.gref));
        }
        let st = self.stats();
        self.fatal.check(&st, rsp_prod);
        if self.mode == RxMode::Copy {
            assert_eq!(
                st.rx_copy_errors, self.error_responses,
                "copy errors counted vs error responses"
            );
        } else {
            assert!(st.rx_copy_errors >= self.error_responses);
        }
        assert!(
            st.rx_packets <= self.chain_ends,
            "{st:?}: more packets than completed chains ({})",
            self.chain_ends
        );
        assert_eq!(st.tx_packets, 0, "the hostile guest sent nothing");
        scene::pair_keeps_up(&mut self.w);
        work
    }

    fn settle(&mut self) {
        scene::until_idle(|| self.poll());
    }
}

impl Scenario for Scene {
    const OPS: usize = 512;

    fn start(input: &mut Input<'_>) -> Scene {
        Scene::new(input)
    }

    fn op(&mut self, input: &mut Input<'_>) {
        match input.u8() % op::COUNT {
            op::PUT_RX => {
                let gref = self.h.pick_gref(input);
                let id = input.u16();
                let pad = if input.bool() { input.u16() } else { 0 };
                self.h.put_rx(RxRequest { id, pad, gref });
            }
            op::PUSH => {
                self.h.set_rx_req_prod(self.h.rx_prod);
                if input.bool() {
                    self.h.notify();
                }
            }
            op::SET_REQ_PROD => {
                let v = match input.below(4) {
                    0 => self.h.rx_prod,
                    1 => self.h.rx_prod.wrapping_add(input.u8() as i8 as u32),
                    2 => self
                        .rx
                        .rsp_seen
                        .wrapping_add(RING_SIZE)
                        .wrapping_add(u32::from(input.u8() % 4)),
                    _ => input.u32(),
                };
                self.h.set_rx_req_prod(v);
            }
            op::REWRITE => {
                let back = u32::from(input.u8());
                let idx = self.h.rx_prod.wrapping_sub(1 + back);
                let b: [u8; 8] = input.array();
                self.h.write_rx(
                    idx,
                    RxRequest {
                        id: u16::from_le_bytes([b[0], b[1]]),
                        pad: u16::from_le_bytes([b[2], b[3]]),
                        gref: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                    },
                );
            }
            op::GRANT => self.h.grant_from(input),
            op::REVOKE => scene::revoke(&self.w, &mut self.h, input),
            op::FLOOD => {
                let n = 1 + input.below(4);
                for _ in 0..n {
                    let s = input.u8();
                    let len = match s >> 6 {
                        0 => 14 + usize::from(s),
                        1 => usize::from(s & 63) * 128 + 60,
                        2 => usize::from(s & 63) * 1024 + 1,
                        _ => usize::from(input.u16()).clamp(14, 65535),
                    };
                    let mut dst = pick_dst(input);
                    if dst == mac(MAC_B) || dst == mac(MAC_A) {
                        dst = [0xff; 6];
                    }
                    let pages = len.div_ceil(4096);
                    if self.flooded_pages + pages > FLOOD_PAGES {
                        continue;
                    }
                    self.seq += 1;
                    let f = frame_between(mac(MAC_A), dst, len, self.seq);
                    if self.w.a.try_send(&f) {
                        self.flooded_pages += pages;
                        self.sent.push(f);
                    }
                }
            }
            op::POLL => {
                self.poll();
            }
            op::SETTLE => self.settle(),
            op::WAIT => {
                self.w.nb.wait(Duration::ZERO).expect("netback wait");
            }
            op::NOTIFY => self.h.notify(),
            op::SET_EVENTS => {
                let v = input.u32();
                match input.below(2) {
                    0 => raw::set_req_event(self.h.front.rx.mem(), v),
                    _ => raw::set_rsp_event(self.h.front.rx.mem(), v),
                }
            }
            op::POST_MANY => {
                let n = 1 + input.below(64);
                let kind = self.writable();
                let live: Vec<u32> = self
                    .h
                    .grants
                    .iter()
                    .filter(|g| g.live && g.kind == kind)
                    .map(|g| g.gref.0)
                    .collect();
                if live.is_empty() {
                    return;
                }
                for i in 0..n {
                    self.seq += 1;
                    self.h.put_rx(RxRequest {
                        id: self.seq as u16,
                        pad: 0,
                        gref: live[i % live.len()],
                    });
                }
                self.h.set_rx_req_prod(self.h.rx_prod);
                self.h.notify();
            }
            op::MID_REVOKE => scene::mid_revoke(&self.w, &mut self.h, input),
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
        crate::input::replay(&crate::seeds::all()[4].1[seed])
    }

    /// The first seed really delivers flooded frames into the hostile guest and verifies them.
    #[test]
    fn seed_frames_arrive_and_are_checked() {
        let s = play(0);
        assert_eq!(s.sent.len(), 2);
        assert_eq!(
            s.next_sent, 2,
            "both frames verified byte-exact in the guest"
        );
        assert_eq!(s.stats().rx_packets, 2);
        s.finish();
    }

    /// Buffers revoked between two batched copies of one pass fail their copy (and only
    /// those), and their pages keep the fresh pattern laid at revocation.
    #[test]
    fn seed_mid_pass_revocations_fail_exactly_their_copies() {
        let s = play(6);
        assert_eq!(s.error_responses, 2);
        assert!(!s.h.grants[1].live && !s.h.grants[2].live);
        assert_eq!(
            s.next_sent, 4,
            "the frames in the other buffers arrived whole"
        );
        s.h.check_sentinels();
        s.finish();
    }

    /// Bad grefs (beyond the table, read-only, foreign) get error responses, counted as copy
    /// errors; three frames use the first three requests.
    #[test]
    fn seed_bad_grefs_get_errors() {
        let s = play(3);
        assert_eq!(s.error_responses, 3);
        assert_eq!(s.stats().rx_copy_errors, 3);
        s.finish();
    }
}
