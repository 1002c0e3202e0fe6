//! `netback_ctrl`: a hostile frontend's ctrl ring against `netback::Netback` on the embedded
//! model, next to a well-behaved pair.
//!
//! The input is a program: ctrl requests of any type with arguments chosen near Linux's limits
//! or raw (grant references of every kind, sizes around 40 and 128, offsets that overflow),
//! raw 16-byte slots, slots rewritten after the push, the ctrl `req_prod` set to anything,
//! grants made and revoked (also in the middle of a pass), key and table pages rewritten,
//! events on the ctrl port, passes and re-arms; and frames from the pair's sender to the
//! hostile guest, whose rx side is well-behaved so its hash extras can be judged.
//!
//! Invariants: netback never panics; the ctrl ring's `rsp_prod` only moves forward, never past
//! the furthest valid `req_prod` the backend was shown; each response's id and type are those
//! of a request image written in its slot, its status one Linux gives, its data 0 except what
//! GET_HASH_FLAGS and GET_HASH_MAPPING_SIZE answer; where the slot held one image, the status is
//! what Linux's `process_ctrl_request` gives for it (exactly, or success/invalid where a grant
//! copy decides), and a key copied is the page's bytes; the settings the vif reports agree with
//! every answer (algorithm, flags, table size; the table all zeros, since the guest has one
//! queue); an invalid ctrl `req_prod` disables the vif, which then gets no further response;
//! once idle, a live vif has answered every pushed request; a frame delivered to the hostile
//! guest carries a hash extra exactly when the settings cover it, with the Toeplitz value of
//! its headers under the key; no sentinel page changed; the pair still exchanges a frame.

use std::time::Duration;

use netback::{Config, HashSettings, RxMode, VifStats};
use netif_ring::ctrl::{
    CtrlRequest, CtrlResponse, XEN_NETIF_CTRL_HASH_ALGORITHM_NONE,
    XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ, XEN_NETIF_CTRL_HASH_TYPE_ALL,
    XEN_NETIF_CTRL_HASH_TYPE_IPV4, XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
    XEN_NETIF_CTRL_HASH_TYPE_IPV6, XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP,
    XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER, XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED,
    XEN_NETIF_CTRL_STATUS_SUCCESS, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS,
    XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
    XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
    XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, toeplitz_hash,
};
use netif_ring::netif::XEN_NETIF_EXTRA_TYPE_HASH;
use testkit::{frame_between, mac};

use crate::hostile::{GrantKind, Hostile, Published};
use crate::scene::{self, FatalWatch};
use crate::world::{self, Base, MAC_A, MAC_H};
use crate::{Input, Scenario};

/// Slots of the ctrl ring.
pub const CTRL_RING: u32 = 128;
/// The hostile guest's data pages (keys and tables); the rest of its memory is rx buffers.
const DATA_PAGES: usize = 12;
/// Key bytes Linux keeps, and its largest table.
const KEY: usize = 40;
const TABLE: u32 = 128;

/// Op codes (first byte of each op, modulo their number).
pub mod op {
    /// `type, data[3]`: one request at the producer (arguments picked near the limits).
    pub const REQ: u8 = 0;
    /// 16 raw bytes at the producer.
    pub const RAW: u8 = 1;
    /// `notify?`: publish the producer.
    pub const PUSH: u8 = 2;
    /// `mode, value`: set the ctrl `req_prod` to anything.
    pub const SET_REQ_PROD: u8 = 3;
    /// `back, 16 bytes`: rewrite an already written slot.
    pub const REWRITE: u8 = 4;
    /// `page, kind`.
    pub const GRANT: u8 = 5;
    /// `grant`.
    pub const REVOKE: u8 = 6;
    /// `page, what`: the guest writes a key or a table into one of its pages.
    pub const WRITE_PAGE: u8 = 7;
    /// One backend pass.
    pub const POLL: u8 = 8;
    /// Passes until the backend has no work, then the completeness check.
    pub const SETTLE: u8 = 9;
    /// The backend's re-arm and a zero-timeout wait.
    pub const WAIT: u8 = 10;
    /// An event on the ctrl port.
    pub const NOTIFY: u8 = 11;
    /// `kind, flow`: the pair's sender sends a frame to the hostile guest, which receives it.
    pub const SEND: u8 = 12;
    /// `grant, call`: a grant revoked during the next pass.
    pub const MID_REVOKE: u8 = 13;
    /// Number of op codes.
    pub const COUNT: u8 = 14;
}

/// What the answers so far say the settings are (`None`: not known, after an answer to a slot
/// that held several images, or a copy the harness cannot judge).
#[derive(Debug, Clone)]
struct Oracle {
    alg: Option<u32>,
    flags: Option<u32>,
    size: Option<u32>,
    key: Option<[u8; KEY]>,
}

struct Scene {
    w: Base,
    h: Hostile,
    /// The guest's own ctrl producer.
    prod: u32,
    /// Per ctrl slot: every image written since its last response was read (a fresh ring page
    /// is zero).
    images: Vec<Vec<CtrlRequest>>,
    ctrl: Published,
    fatal: FatalWatch,
    oracle: Oracle,
    seq: u32,
}

/// A ctrl request type chosen by the input: mostly the ones that do something.
fn pick_type(input: &mut Input<'_>) -> u16 {
    match input.u8() {
        0xff => input.u16(),
        t => u16::from(t % 12),
    }
}

impl Scene {
    fn new(input: &mut Input<'_>) -> Scene {
        let cfg = Config {
            copy_batch_ops: 1 + input.below(64),
            ..Config::default()
        };
        let mut w = world::base(cfg);
        let mut h = Hostile::with_ctrl_ring(
            &w.xen,
            w.dom0.domid(),
            w.a.dom.domid(),
            RxMode::Copy,
            DATA_PAGES,
        );
        h.front.connect(&mut w.nb);
        w.a.connect_pinned(&mut w.nb);
        w.b.connect_pinned(&mut w.nb);
        w.b.post_rx(64);
        w.a.post_rx(64);
        // Page 0 holds the standard RSS key, page 1 zeros (a valid one-queue table), page 2 a
        // table naming queue 1; the rest keep their sentinels. Most are granted.
        h.write_page(0, 0, &RSS_KEY);
        h.write_page(1, 0, &[0; 4096]);
        h.write_page(2, 0, &1u32.to_le_bytes().repeat(1024));
        for i in 0..DATA_PAGES {
            let kind = match i % 4 {
                0 | 1 => GrantKind::Ro,
                2 => GrantKind::Rw,
                _ => GrantKind::Foreign,
            };
            h.grant(i, kind);
        }
        Scene {
            w,
            h,
            prod: 0,
            images: vec![vec![CtrlRequest::default()]; CTRL_RING as usize],
            ctrl: Published { rsp_seen: 0, hi: 0 },
            fatal: FatalWatch::default(),
            oracle: Oracle {
                alg: Some(XEN_NETIF_CTRL_HASH_ALGORITHM_NONE),
                flags: Some(0),
                size: Some(0),
                key: Some([0; KEY]),
            },
            seq: 0,
        }
    }

    fn stats(&self) -> VifStats {
        scene::stats(&self.w, &self.h)
    }

    fn settings(&self) -> HashSettings {
        let id = self.h.id();
        self.w
            .nb
            .vifs()
            .find(|v| v.id() == id)
            .expect("the hostile vif stays connected")
            .hash_settings()
    }

    fn put(&mut self, req: CtrlRequest) {
        self.write(self.prod, req);
        self.prod = self.prod.wrapping_add(1);
    }

    fn write(&mut self, idx: u32, req: CtrlRequest) {
        self.h.front.write_ctrl_at(idx, req);
        self.images[(idx % CTRL_RING) as usize].push(req);
    }

    /// A data word chosen by the input: a grant reference, a size or offset near the limits,
    /// an algorithm or flags, or raw.
    fn pick_data(&self, input: &mut Input<'_>) -> u32 {
        match input.below(8) {
            0 => self.h.pick_gref(input),
            1 => [0, 1, 4, 39, 40, 41, 4096, u32::MAX][input.below(8)],
            2 => [0, 1, 8, 64, 127, 128, 129, 1024, 1025][input.below(9)],
            3 => u32::MAX - u32::from(input.u8()),
            4 => 0x8000_0000 + u32::from(input.u8()),
            5 => input.below(20) as u32,
            6 => XEN_NETIF_CTRL_HASH_TYPE_ALL >> input.below(4),
            _ => input.u32(),
        }
    }

    /// The page a live grant readable by the backend names, if `gref` is one.
    fn readable_page(&self, gref: u32) -> Option<Vec<u8>> {
        let g = self
            .h
            .grants
            .iter()
            .rev()
            .find(|g| g.live && g.gref.0 == gref)?;
        if !matches!(g.kind, GrantKind::Ro | GrantKind::Rw) {
            return None;
        }
        let mut buf = vec![0u8; 4096];
        self.h
            .front
            .dom
            .read(self.h.pages[g.page], 0, &mut buf)
            .ok()?;
        Some(buf)
    }

    /// One backend pass and every check on what it did.
    fn poll(&mut self) -> bool {
        let req_prod = self.h.front.ctrl_indices().req_prod;
        self.ctrl.before_pass_of(req_prod, CTRL_RING);
        let (work, revoked) = scene::pass(&mut self.w, &mut self.h);
        let clean = revoked.is_empty();
        let st = self.stats();
        let rsp_prod = self.h.front.ctrl_indices().rsp_prod;
        for j in self.ctrl.after_pass(rsp_prod) {
            let rsp: CtrlResponse = self.h.front.read_ctrl_at(j);
            let slot = (j % CTRL_RING) as usize;
            let images = std::mem::take(&mut self.images[slot]);
            self.judge(j, &rsp, &images, clean);
            let now: CtrlRequest = self.h.front.read_ctrl_at(j);
            self.images[slot] = vec![now];
        }
        self.fatal.check(&st, rsp_prod);
        if st.fatal.is_none() {
            self.check_settings();
        }
        scene::pair_keeps_up(&mut self.w);
        work
    }

    /// Checks one response against the images its slot held.
    fn judge(&mut self, j: u32, rsp: &CtrlResponse, images: &[CtrlRequest], clean: bool) {
        let matching: Vec<&CtrlRequest> = images
            .iter()
            .filter(|r| r.id == rsp.id && r.type_ == rsp.type_)
            .collect();
        assert!(
            !matching.is_empty(),
            "ctrl response {j} ({rsp:?}) answers no request its slot held: {images:?}"
        );
        assert!(
            rsp.status <= XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER,
            "ctrl response {j} has status {}",
            rsp.status
        );
        let data_ok = match (rsp.type_, rsp.status) {
            (XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS, XEN_NETIF_CTRL_STATUS_SUCCESS) => {
                rsp.data == XEN_NETIF_CTRL_HASH_TYPE_ALL
            }
            (XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, _) => rsp.data == TABLE,
            _ => rsp.data == 0,
        };
        assert!(data_ok, "ctrl response {j}: {rsp:?}");
        // Several different images: the backend read one of them, the harness cannot tell
        // which, so what it may have changed is no longer known.
        let distinct = matching.iter().any(|r| r.data != matching[0].data);
        if distinct {
            match rsp.type_ {
                XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM => self.oracle.alg = None,
                XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS => self.oracle.flags = None,
                XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE => self.oracle.size = None,
                XEN_NETIF_CTRL_TYPE_SET_HASH_KEY => self.oracle.key = None,
                _ => {}
            }
            return;
        }
        let req = *matching[0];
        self.expect(j, &req, rsp.status, clean);
    }

    /// What Linux's `process_ctrl_request` answers `req` with, given what is known; updates the
    /// oracle with what the answer changed.
    fn expect(&mut self, j: u32, req: &CtrlRequest, status: u32, clean: bool) {
        const OK: u32 = XEN_NETIF_CTRL_STATUS_SUCCESS;
        const INVALID: u32 = XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
        const UNSUPPORTED: u32 = XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED;
        let [d0, d1, d2] = req.data;
        let o = &mut self.oracle;
        let none = o.alg.map(|a| a == XEN_NETIF_CTRL_HASH_ALGORITHM_NONE);
        // The statuses Linux could give: one where the arguments and what is known decide, two
        // where a grant copy (or an algorithm the harness lost track of) does.
        // `refusal`: what Linux answers with no algorithm set.
        let either = |n: Option<bool>, refusal: u32| -> &'static [u32] {
            match (n, refusal) {
                (Some(true), UNSUPPORTED) => &[UNSUPPORTED],
                (Some(true), _) => &[INVALID],
                (Some(false), _) => &[OK],
                (None, UNSUPPORTED) => &[OK, UNSUPPORTED],
                (None, _) => &[OK, INVALID],
            }
        };
        let allowed: &[u32] = match req.type_ {
            XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM if d0 <= 1 => &[OK],
            XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM => &[INVALID],
            XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS => either(none, UNSUPPORTED),
            XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS if d0 & !XEN_NETIF_CTRL_HASH_TYPE_ALL != 0 => {
                &[INVALID]
            }
            XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS => either(none, INVALID),
            XEN_NETIF_CTRL_TYPE_SET_HASH_KEY if d1 as usize > KEY => &[INVALID],
            XEN_NETIF_CTRL_TYPE_SET_HASH_KEY if d1 == 0 => &[OK],
            XEN_NETIF_CTRL_TYPE_SET_HASH_KEY => &[OK, INVALID],
            XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE => &[OK],
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE if d0 > TABLE => &[INVALID],
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE => &[OK],
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING => {
                let inside = o
                    .size
                    .map(|s| u64::from(d2) + u64::from(d1) <= u64::from(s));
                match inside {
                    Some(false) => &[INVALID],
                    Some(true) if d1 == 0 => &[OK],
                    _ => &[OK, INVALID],
                }
            }
            _ => &[UNSUPPORTED],
        };
        assert!(
            allowed.contains(&status),
            "ctrl response {j} to {req:?}: status {status}, Linux gives {allowed:?} ({o:?})"
        );
        if status != OK {
            return;
        }
        match req.type_ {
            XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM => o.alg = Some(d0),
            XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS => o.flags = Some(d0),
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE => o.size = Some(d0),
            XEN_NETIF_CTRL_TYPE_SET_HASH_KEY => {
                let len = d1 as usize;
                let mut key = [0u8; KEY];
                if len == 0 {
                    self.oracle.key = Some(key);
                } else if let Some(page) = clean.then(|| self.readable_page(d0)).flatten() {
                    key[..len].copy_from_slice(&page[..len]);
                    self.oracle.key = Some(key);
                } else {
                    self.oracle.key = None;
                }
            }
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING if d1 > 0 => {
                // One queue: a table taken held only zeros.
                if let Some(page) = clean.then(|| self.readable_page(d0)).flatten() {
                    let n = (d1 as usize * 4).min(4096);
                    assert!(
                        page[..n].iter().all(|b| *b == 0),
                        "ctrl response {j}: a table naming a queue the vif lacks was taken"
                    );
                }
            }
            _ => {}
        }
    }

    /// The settings the vif reports agree with what the answers say.
    fn check_settings(&self) {
        let s = self.settings();
        let o = &self.oracle;
        assert!(s.algorithm <= 1, "{s:?}");
        assert_eq!(s.flags & !XEN_NETIF_CTRL_HASH_TYPE_ALL, 0, "{s:?}");
        assert_eq!(s.key.len(), KEY);
        assert!(s.mapping.len() <= TABLE as usize);
        assert!(
            s.mapping.iter().all(|q| *q == 0),
            "a table entry names a queue the vif lacks: {:?}",
            s.mapping
        );
        if let Some(a) = o.alg {
            assert_eq!(s.algorithm, a);
        }
        if let Some(f) = o.flags {
            assert_eq!(s.flags, f);
        }
        if let Some(n) = o.size {
            assert_eq!(s.mapping.len(), n as usize);
        }
        if let Some(k) = &o.key {
            assert_eq!(
                s.key,
                k.to_vec(),
                "the key is not what the guest's page held"
            );
        }
    }

    fn settle(&mut self) {
        scene::until_idle(|| self.poll());
        let req_prod = self.h.front.ctrl_indices().req_prod;
        if self.stats().fatal.is_none() && req_prod.wrapping_sub(self.ctrl.rsp_seen) <= CTRL_RING {
            assert_eq!(
                self.ctrl.rsp_seen, req_prod,
                "the backend went idle with pushed ctrl requests unanswered"
            );
        }
    }

    /// Op `SEND`: a frame from the pair's sender to the hostile guest, delivered in one pass;
    /// its hash extra is judged against the settings of that pass.
    fn send(&mut self, input: &mut Input<'_>) {
        let kind = input.below(6);
        let flow = input.u16();
        self.seq += 1;
        let f = test_frame(kind, flow, self.seq);
        self.h.front.post_rx_up_to(32);
        if !self.w.a.try_send(&f) {
            return;
        }
        self.poll();
        let got = self.h.front.recv_meta();
        let st = self.stats();
        if st.fatal.is_some() {
            return;
        }
        assert_eq!(got.len(), 1, "the frame to the hostile guest arrived once");
        assert_eq!(got[0].data, f);
        let s = self.settings();
        let extra = got[0]
            .extras
            .iter()
            .find(|e| e[0] == XEN_NETIF_EXTRA_TYPE_HASH);
        let want = (s.algorithm == XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ)
            .then(|| expected_hash(&f, s.flags, &s.key))
            .flatten();
        match (want, extra) {
            (None, None) => {}
            (Some((t, v)), Some(e)) => {
                assert_eq!(e[2], t, "hash type");
                assert_eq!(e[3], XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ as u8);
                assert_eq!(
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                    v,
                    "hash value"
                );
            }
            (w, e) => panic!("hash extra {e:?} for a frame whose settings give {w:?}: {s:?}"),
        }
    }
}

/// Microsoft's standard RSS key.
const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// A frame from the pair's sender to the hostile guest: TCP/IPv4, UDP/IPv4, a TCP fragment,
/// TCP/IPv6, UDP/IPv6, or not IP. Checksums are not filled in (nobody checks them here).
fn test_frame(kind: usize, flow: u16, seq: u32) -> Vec<u8> {
    let mut f = frame_between(mac(MAC_A), mac(MAC_H), 200, seq);
    let (et, l3) = match kind {
        0..=2 => (0x0800u16, 20),
        3 | 4 => (0x86dd, 40),
        _ => return f,
    };
    f[12..14].copy_from_slice(&et.to_be_bytes());
    let ip = &mut f[14..14 + l3];
    let proto = if kind == 1 || kind == 4 { 17 } else { 6 };
    if l3 == 20 {
        ip[0] = 0x45;
        ip[6..8].copy_from_slice(&(if kind == 2 { 0x2000u16 } else { 0 }).to_be_bytes());
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[10, 0, (seq >> 8) as u8, seq as u8]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 9]);
    } else {
        ip[0] = 0x60;
        ip[6] = proto;
        ip[8] = 0xfd;
        ip[22..24].copy_from_slice(&(seq as u16).to_be_bytes());
        ip[24] = 0xfd;
        ip[39] = 9;
    }
    let l4 = 14 + l3;
    f[l4..l4 + 2].copy_from_slice(&flow.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&443u16.to_be_bytes());
    f
}

/// The hash extra Linux's netback sends for `f` under `flags` and `key`: (type, value).
fn expected_hash(f: &[u8], flags: u32, key: &[u8]) -> Option<(u8, u32)> {
    let et = u16::from_be_bytes([f[12], f[13]]);
    let (addrs, proto, l4, tcp_flag, l3_flag, tcp_type, l3_type) = match et {
        0x0800 => {
            let frag = u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0;
            let proto = if frag { 0 } else { f[23] };
            (
                &f[26..34],
                proto,
                34,
                XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
                XEN_NETIF_CTRL_HASH_TYPE_IPV4,
                1,
                0,
            )
        }
        0x86dd => (
            &f[22..54],
            f[20],
            54,
            XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP,
            XEN_NETIF_CTRL_HASH_TYPE_IPV6,
            3,
            2,
        ),
        _ => return None,
    };
    let mut input = addrs.to_vec();
    if proto == 6 && flags & tcp_flag != 0 {
        input.extend_from_slice(&f[l4..l4 + 4]);
        Some((tcp_type, toeplitz_hash(key, &input)))
    } else if flags & l3_flag != 0 {
        Some((l3_type, toeplitz_hash(key, &input)))
    } else {
        None
    }
}

impl Scenario for Scene {
    const OPS: usize = 384;

    fn start(input: &mut Input<'_>) -> Scene {
        Scene::new(input)
    }

    fn op(&mut self, input: &mut Input<'_>) {
        match input.u8() % op::COUNT {
            op::REQ => {
                let type_ = pick_type(input);
                let data = [
                    self.pick_data(input),
                    self.pick_data(input),
                    self.pick_data(input),
                ];
                self.seq += 1;
                let id = self.seq as u16;
                self.put(CtrlRequest { id, type_, data });
            }
            op::RAW => {
                let b: [u8; 16] = input.array();
                let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                self.put(CtrlRequest {
                    id: u16::from_le_bytes([b[0], b[1]]),
                    type_: u16::from_le_bytes([b[2], b[3]]),
                    data: [w(4), w(8), w(12)],
                });
            }
            op::PUSH => {
                self.h.front.set_ctrl_req_prod(self.prod);
                if input.bool() {
                    self.h.front.notify_ctrl();
                }
            }
            op::SET_REQ_PROD => {
                let v = match input.below(4) {
                    0 => self.prod,
                    1 => self.prod.wrapping_add(input.u8() as i8 as u32),
                    2 => self
                        .ctrl
                        .rsp_seen
                        .wrapping_add(CTRL_RING)
                        .wrapping_add(u32::from(input.u8() % 4)),
                    _ => input.u32(),
                };
                self.h.front.set_ctrl_req_prod(v);
            }
            op::REWRITE => {
                let back = u32::from(input.u8() % 8);
                let idx = self.prod.wrapping_sub(1 + back);
                let b: [u8; 16] = input.array();
                let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                // Mostly keep id and type, so the answer is judged against the right images.
                let old: CtrlRequest = self.h.front.read_ctrl_at(idx);
                let (id, type_) = if b[0] & 1 == 0 {
                    (old.id, old.type_)
                } else {
                    (
                        u16::from_le_bytes([b[0], b[1]]),
                        u16::from_le_bytes([b[2], b[3]]),
                    )
                };
                self.write(
                    idx,
                    CtrlRequest {
                        id,
                        type_,
                        data: [w(4), w(8), w(12)],
                    },
                );
            }
            op::GRANT => self.h.grant_from(input),
            op::REVOKE => scene::revoke(&self.w, &mut self.h, input),
            op::WRITE_PAGE => {
                let page = input.u8() as usize;
                let data = match input.below(4) {
                    0 => RSS_KEY.to_vec(),
                    1 => vec![0; 512],
                    2 => (0..128u32).flat_map(|q| (q % 2).to_le_bytes()).collect(),
                    _ => {
                        let n = input.below(64);
                        input.bytes(n).to_vec()
                    }
                };
                self.h.write_page(page, 0, &data);
            }
            op::POLL => {
                self.poll();
            }
            op::SETTLE => self.settle(),
            op::WAIT => {
                // The re-arm reads req_prod: what it saw may be consumed later.
                let req_prod = self.h.front.ctrl_indices().req_prod;
                self.ctrl.before_pass_of(req_prod, CTRL_RING);
                self.w.nb.wait(Duration::ZERO).expect("netback wait");
            }
            op::NOTIFY => self.h.front.notify_ctrl(),
            op::SEND => self.send(input),
            op::MID_REVOKE => scene::mid_revoke(&self.w, &mut self.h, input),
            _ => unreachable!(),
        }
    }

    fn finish(mut self) {
        self.settle();
        scene::check_end(&mut self.w, &self.h);
    }
}

/// Plays `data`.
pub fn run(data: &[u8]) {
    crate::input::run::<Scene>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(seed: usize) -> Scene {
        let seeds = crate::seeds::all();
        let (_, s) = seeds
            .iter()
            .find(|(n, _)| *n == "netback_ctrl")
            .expect("netback_ctrl seeds");
        crate::input::replay(&s[seed])
    }

    #[test]
    fn seed_hashing_set_up_is_applied_and_frames_carry_their_hash() {
        let s = play(0);
        let set = s.settings();
        assert_eq!(set.algorithm, XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
        assert_eq!(set.key, RSS_KEY.to_vec());
        assert_eq!(set.mapping.len(), 8);
        assert!(s.stats().rx_hash_extras >= 1, "{:?}", s.stats());
        s.finish();
    }

    #[test]
    fn seed_bogus_ctrl_req_prod_is_fatal() {
        let mut s = play(1);
        s.settle();
        assert!(s.stats().fatal.is_some());
        s.finish();
    }

    #[test]
    fn seed_bad_arguments_are_refused() {
        let s = play(2);
        let st = s.stats();
        assert!(st.ctrl_invalid >= 4 && st.ctrl_not_supported >= 2, "{st:?}");
        assert!(st.fatal.is_none());
        s.finish();
    }
}
