//! The rows of the hostile table (`docs/SECURITY.md`) that no other test showed: one test per
//! Xen security advisory whose bug class reaches netback, and per Linux netback drop/fatal rule
//! left uncovered. Each builds the advisory's shape of input from a hostile frontend `h` and
//! checks that netback contains it: the packet dropped with a counter or the vif disabled with
//! its reason, every slot answered (or, once disabled, none), nothing outside granted memory
//! touched, and a well-behaved pair `a` → `b` on the same backend still passing traffic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etherparse::PacketBuilder;
use hypervisor::PAGE_SIZE;
use hypervisor::ringpage::own_ring;
use netback::{Config, Fatal, RxMode};
use netif_ring::netif::{
    ExtraInfo, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_CSUM_BLANK,
    NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, RxRequest, RxResponse, TxRequest,
    XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_EXTRA_TYPE_HASH, XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
    XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
};
use netif_ring::{FrontRing, RingError, TxRing, raw};
use testkit::{Guest, MidPass, Nb, RawFront, broadcast, frame};
use xen_model::{DomainHandle, Hypercall, Hypervisor};

/// A hostile frontend `h` and a well-behaved pair `a` → `b` on one backend.
struct Scene {
    xen: Hypervisor,
    dom0: DomainHandle,
    nb: Nb,
    h: RawFront,
    a: RawFront,
    b: RawFront,
}

fn scene(cfg: Config, pool_pages: usize) -> Scene {
    let mut s = testkit::Scene::with_pool(cfg, pool_pages);
    let mut a = s.front(Guest::mac(1));
    let mut b = s.front(Guest::mac(2));
    a.post_rx(8);
    b.post_rx(64);
    // b announces its MAC, so a's frames to it are unicast; h connects afterwards, so it starts
    // with an empty queue and the pool with every page free.
    b.send(&frame(2, 1, 60, 0));
    s.nb.poll().unwrap();
    b.reap_tx();
    assert_eq!(a.recv().len(), 1);
    let h = s.front(Guest::mac(9));
    let testkit::Scene { xen, dom0, nb } = s;
    Scene {
        xen,
        dom0,
        nb,
        h,
        a,
        b,
    }
}

impl Scene {
    /// The good pair still passes traffic, byte-exact.
    #[track_caller]
    fn others_carry_on(&mut self) {
        let f = frame(1, 2, 1500, 42);
        self.a.send(&f);
        self.nb.poll().unwrap();
        self.a.reap_tx();
        let got = self.b.recv();
        assert_eq!(got.len(), 1, "the well-behaved vif still receives");
        assert!(got[0].as_ref().is_ok_and(|g| *g == f));
        assert!(self.nb.vif_stats(self.a.id()).unwrap().fatal.is_none());
        assert!(self.nb.vif_stats(self.b.id()).unwrap().fatal.is_none());
    }

    fn stats(&self) -> netback::VifStats {
        self.nb.vif_stats(self.h.id()).unwrap()
    }

    /// Pushes hand-built requests (and extra-info slots) from `h` and runs a pass.
    fn push(&mut self, slots: &[Slot]) {
        for s in slots {
            match s {
                Slot::Req(r) => self.h.tx.put_request(*r).unwrap(),
                Slot::Extra(e) => self.h.tx.put_request_as(*e).unwrap(),
            };
        }
        self.h.push_tx();
        self.nb.poll().unwrap();
    }

    /// `h`'s responses since the last call, as (id, status).
    fn responses(&mut self) -> Vec<(u16, i16)> {
        self.h.tx_responses.clear();
        self.h.reap_tx();
        self.h
            .tx_responses
            .iter()
            .map(|r| (r.id, r.status))
            .collect()
    }
}

/// One tx slot: a request or an extra-info slot.
#[derive(Clone, Copy)]
enum Slot {
    Req(TxRequest),
    Extra(ExtraInfo),
}

/// `data` cut at `cuts` into slots of `f`, each piece in its own granted page at offset 0,
/// ids from `first_id`; `flags` on the first request (with `NETTXF_more_data` chained as the
/// protocol wants).
fn split(f: &mut RawFront, data: &[u8], cuts: &[usize], flags: u16, first_id: u16) -> Vec<Slot> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(data.len());
    let n = bounds.len() - 1;
    (0..n)
        .map(|i| {
            let piece = &data[bounds[i]..bounds[i + 1]];
            let gref = f.tx_page(0, piece);
            let more = if i + 1 < n { NETTXF_MORE_DATA } else { 0 };
            Slot::Req(TxRequest {
                gref: gref.0,
                offset: 0,
                flags: more | if i == 0 { flags } else { 0 },
                id: first_id + i as u16,
                size: if i == 0 {
                    data.len() as u16
                } else {
                    piece.len() as u16
                },
            })
        })
        .collect()
}

fn extra(type_: u8, flags: u8, u: [u8; 6]) -> Slot {
    Slot::Extra(ExtraInfo { type_, flags, u })
}

/// A TCP/IPv4 frame from `h` (MAC ..:09) to `b` (..:02) with `payload`, its checksum complete.
fn tcp_frame(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 199, 0, 9], [10, 199, 0, 2], 64)
        .tcp(4000, 5201, 1_000_000, 65535)
        .ack(77);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// The frame with only the pseudo-header sum in its TCP checksum, as a guest leaving the
/// checksum to the backend (`NETTXF_csum_blank`) sends it.
fn partial(full: &[u8]) -> Vec<u8> {
    let mut f = full.to_vec();
    offload::csum::set_partial(&mut f).unwrap();
    f
}

// XSA-39 (CVE-2013-0216/0217): malformed packets looped Linux netback on the ring and leaked
// the pages and skbs of their error paths.
#[test]
fn xsa39_every_drop_path_answers_each_slot_and_gives_back_every_page() {
    let mut s = scene(Config::default(), 256);
    let (mut rsp, mut pushed) = (Vec::new(), 0);
    const ROUNDS: u16 = 20;
    for round in 0..ROUNDS {
        let id = round * 64;
        let mut slots = Vec::new();
        // A runt: 10 bytes of first slot.
        let g = s.h.tx_page(0, &[0xab; 10]);
        slots.push(Slot::Req(TxRequest {
            gref: g.0,
            offset: 0,
            flags: 0,
            id,
            size: 10,
        }));
        // A packet of 50 bytes whose second slot carries 100.
        let big = frame(9, 2, 300, 1);
        slots.extend(split(&mut s.h, &big, &[200], 0, id + 1));
        if let Slot::Req(r) = &mut slots[1] {
            r.size = 50;
        }
        // 20 slots in all: dropped (more than 18 after the first).
        let many = frame(9, 2, 2000, 2);
        let cuts: Vec<usize> = (1..20).map(|i| i * 100).collect();
        slots.extend(split(&mut s.h, &many, &cuts, 0, id + 3));
        // A grant the guest never made: the copy fails.
        slots.push(Slot::Req(TxRequest {
            gref: 60_000,
            offset: 0,
            flags: 0,
            id: id + 23,
            size: 100,
        }));
        // And one good packet in two slots, forwarded to b.
        let ok = frame(9, 2, 1000, 3);
        slots.extend(split(&mut s.h, &ok, &[500], 0, id + 24));
        pushed += slots.len();
        s.push(&slots);
        rsp.extend(s.responses());
        assert_eq!(s.b.recv().len(), 1);
        s.b.post_rx(1);
    }
    let st = s.stats();
    assert!(st.fatal.is_none(), "{st:?}");
    let n = u64::from(ROUNDS);
    assert_eq!(
        (
            st.tx_runt,
            st.tx_oversize_slot,
            st.tx_too_many_slots,
            st.tx_copy_errors,
            st.tx_packets
        ),
        (n, n, n, n, n),
        "each drop counted once: {st:?}"
    );
    assert_eq!(rsp.len(), pushed, "every slot answered, none twice");
    let errors = rsp.iter().filter(|r| r.1 == NETIF_RSP_ERROR).count();
    assert_eq!(
        errors,
        ROUNDS as usize * (1 + 2 + 20 + 1),
        "the dropped packets' slots"
    );
    // Nothing of the error paths stays allocated: once the forwarded frames were delivered,
    // every page the pool took is free again.
    assert_eq!(s.nb.pool().free_pages(), s.nb.pool().owned_pages());
    s.others_carry_on();
}

// Linux's `xenvif_tx_err` when the skb cannot be allocated: the packet is answered with
// errors, the vif lives on.
#[test]
fn a_packet_the_pool_cannot_hold_is_answered_with_errors_not_fatal() {
    // The smallest pool: 17 pages, one maximum-size frame. Two broadcasts wait in h's queue (h
    // posts no buffers) and hold two; a 65 535-byte packet needs 16.
    let mut s = scene(Config::default(), 17);
    for i in 0..2 {
        s.a.send(&broadcast(1, 100, i));
        s.nb.poll().unwrap();
        s.a.reap_tx();
        assert_eq!(s.b.recv().len(), 1);
    }
    let big = frame(9, 2, 65_535, 4);
    let cuts: Vec<usize> = (1..16).map(|i| i * PAGE_SIZE).collect();
    let slots = split(&mut s.h, &big, &cuts, 0, 1);
    s.push(&slots);
    let st = s.stats();
    assert_eq!((st.tx_no_buffer, st.tx_packets), (1, 0), "{st:?}");
    assert!(st.fatal.is_none());
    let rsp = s.responses();
    assert_eq!(rsp.len(), 16, "every slot answered");
    assert!(rsp.iter().all(|r| r.1 == NETIF_RSP_ERROR));
    s.others_carry_on();
}

// Linux's `xenvif_get_extras`: "Missing extra info" is fatal.
#[test]
fn an_extra_info_slot_that_never_comes_is_fatal() {
    for flags in [0, XEN_NETIF_EXTRA_FLAG_MORE] {
        let mut s = scene(Config::default(), 256);
        let mut slots = split(&mut s.h, &frame(9, 2, 100, 0), &[], NETTXF_EXTRA_INFO, 1);
        if flags != 0 {
            // One extra that promises another, which is never pushed.
            slots.push(extra(XEN_NETIF_EXTRA_TYPE_HASH, flags, [0; 6]));
        }
        s.push(&slots);
        assert!(
            matches!(s.stats().fatal, Some(Fatal::TruncatedPacket { .. })),
            "{:?}",
            s.stats().fatal
        );
        // Disabled: nothing of the packet is answered, and nothing later either.
        assert!(s.responses().is_empty());
        let more = split(&mut s.h, &frame(9, 2, 100, 1), &[], 0, 9);
        s.push(&more);
        assert!(s.responses().is_empty(), "a disabled vif is never answered");
        // Frames switched to it are discarded and counted.
        s.a.send(&broadcast(1, 60, 3));
        s.nb.poll().unwrap();
        s.a.reap_tx();
        s.b.recv();
        assert!(s.stats().rx_discarded >= 1, "{:?}", s.stats());
        s.others_carry_on();
    }
}

// Linux's multicast control (`XEN_NETIF_EXTRA_TYPE_MCAST_ADD/DEL`, `xenvif_mcast_add/del`): a
// dummy request, answered and never forwarded. The vif's list holds at most 64 addresses and an
// add beyond that is answered with an error, so a guest sending thousands holds no more memory.
#[test]
fn multicast_control_requests_are_answered_never_forwarded_and_the_list_is_bounded() {
    let mut s = scene(Config::default(), 256);
    let learned = |s: &Scene| -> Vec<u32> {
        let snap = s.nb.snapshot();
        snap.bridge.ports.iter().map(|p| p.learned_macs).collect()
    };
    let before = learned(&s);
    let mut rsp = Vec::new();
    for i in 0..300u16 {
        let mut slots = split(&mut s.h, &frame(9, 2, 60, 0), &[], NETTXF_EXTRA_INFO, i * 2);
        // Adds of 150 different groups, and removes of groups never added.
        let t = if i % 2 == 0 {
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD
        } else {
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL
        };
        slots.push(extra(t, 0, [0x01, 0, 0x5e, 0, (i >> 8) as u8, i as u8]));
        s.push(&slots);
        rsp.extend(s.responses());
    }
    let st = s.stats();
    assert_eq!(st.tx_mcast_requests, 300, "{st:?}");
    assert_eq!(
        st.tx_mcast_errors,
        150 - 64,
        "adds past the 64th are refused"
    );
    assert_eq!(st.tx_packets, 0, "a control request carries no frame");
    assert!(st.fatal.is_none());
    assert_eq!(rsp.len(), 600);
    for (i, p) in rsp.chunks(2).enumerate() {
        let refused = i % 2 == 0 && i / 2 >= 64;
        let want = if refused {
            NETIF_RSP_ERROR
        } else {
            NETIF_RSP_OKAY
        };
        assert_eq!((p[0].1, p[1].1), (want, NETIF_RSP_NULL), "request {i}");
    }
    let id = s.h.id();
    let (_, groups) = s.nb.vifs().find(|v| v.id() == id).unwrap().multicast();
    assert_eq!(groups.len(), netback::MCAST_MAX);
    assert!(s.b.recv().is_empty(), "nothing reached the other guests");
    assert_eq!(learned(&s), before, "no MAC learned from a control request");
    s.others_carry_on();
}

// The rx ring's producer is checked too (Linux's rx path only compares `req_prod - req_cons`
// with the slots it needs): a frontend that claims more buffers than the ring holds is
// disabled before a slot is read.
#[test]
fn rx_ring_overflow_is_fatal() {
    let mut s = scene(Config::default(), 256);
    raw::set_req_prod(s.h.rx.mem(), 10_000);
    // A broadcast gives the backend a frame to deliver to h.
    s.a.send(&broadcast(1, 300, 5));
    s.nb.poll().unwrap();
    s.a.reap_tx();
    s.b.recv();
    assert!(
        matches!(
            s.stats().fatal,
            Some(Fatal::Ring(RingError::RequestOverflow { .. }))
        ),
        "{:?}",
        s.stats().fatal
    );
    assert_eq!(s.stats().rx_packets, 0);
    s.others_carry_on();
}

// XSA-155 (CVE-2015-8550): backends read a request from the shared page more than once, so a
// guest rewriting it between the check and the use got an unchecked value past the check.
#[test]
fn xsa155_requests_rewritten_after_netback_read_them_change_nothing() {
    let mut s = testkit::Scene::new(Config::default());
    // The moment after netback has read and validated a tx pass's requests and before it uses
    // them: its first page allocation (the pool grows on demand while building the copies) or
    // grant copy (the copies follow).
    let hook = MidPass::install(
        &s.dom0,
        &[Hypercall::AllocPage, Hypercall::GrantCopy],
        |guest_acts: &mut Box<dyn FnMut() + Send>| guest_acts(),
    );
    let mut h = s.front(Guest::mac(9));
    let mut b = s.front(Guest::mac(2));
    b.post_rx(8);
    // The hostile guest's tx ring, shared with the hook (its RawFront keeps a spare one).
    let spare = h.dom.alloc_page().unwrap();
    let tx = Arc::new(Mutex::new(std::mem::replace(
        &mut h.tx,
        FrontRing::init(own_ring(&h.dom, spare).unwrap()),
    )));
    // A 3000-byte frame to b in two slots (b's MAC is unknown: flooded to b alone).
    let data = frame(9, 2, 3000, 7);
    let slots = split(&mut h, &data, &[2000], 0, 1);
    {
        let mut t = tx.lock().unwrap();
        for slot in &slots {
            if let Slot::Req(r) = slot {
                t.put_request(*r).unwrap();
            }
        }
    }
    // Once netback has read the slots, the guest rewrites every field of both.
    let evil = [
        TxRequest {
            gref: 59_999,
            offset: 4000,
            flags: NETTXF_MORE_DATA | NETTXF_EXTRA_INFO,
            id: 0x7001,
            size: 60_000,
        },
        TxRequest {
            gref: 59_998,
            offset: 3000,
            flags: NETTXF_MORE_DATA,
            id: 0x7002,
            size: 4000,
        },
    ];
    {
        let tx = tx.clone();
        hook.begin();
        hook.schedule(
            1,
            Box::new(move || {
                let t = tx.lock().unwrap();
                for (i, r) in evil.iter().enumerate() {
                    raw::write_slot_at::<TxRing, TxRequest>(t.mem(), t.size(), i as u32, *r);
                }
            }),
        );
    }
    if tx.lock().unwrap().push_requests_and_check_notify() {
        h.evtchn.notify(h.port).unwrap();
    }
    s.nb.poll().unwrap();
    let fired: Vec<Hypercall> = hook.end().into_iter().map(|(call, _)| call).collect();
    assert_eq!(
        fired,
        [Hypercall::AllocPage],
        "the rewrite must land between netback's checks and its copies (the pool grows while \
         the copies are built); if the pool stopped growing on demand, move the hook"
    );
    let mut rsp = Vec::new();
    while let Some(r) = tx.lock().unwrap().next_response().unwrap() {
        rsp.push((r.id, r.status));
    }
    assert_eq!(
        rsp,
        [(1, NETIF_RSP_OKAY), (2, NETIF_RSP_OKAY)],
        "answered with the ids netback read"
    );
    let st = s.nb.vif_stats(h.id()).unwrap();
    assert!(st.fatal.is_none(), "{st:?}");
    assert_eq!((st.tx_packets, st.tx_bytes), (1, 3000), "{st:?}");
    assert_eq!(st.tx_copy_errors, 0, "the rewritten grants were never used");
    let got = b.recv();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].as_ref().is_ok_and(|g| *g == data),
        "the frame as read"
    );
}

// XSA-216 (CVE-2017-10911): a backend handed the frontend bytes of its own memory it never
// meant to (blkback's response padding). Here the whole-page form: a flipped page holds the
// frame and whatever the backend page held past its end.
#[test]
fn xsa216_a_flipped_page_carries_nothing_past_the_frame() {
    let mut s = testkit::Scene::new(Config::default());
    let mut a = s.front(Guest::mac(1));
    let mut c = s.front(Guest::mac(3));
    a.post_rx(8);
    c.post_rx(64);
    c.send(&broadcast(3, 60, 0));
    s.nb.poll().unwrap();
    a.recv();
    // a sends c frames of 4090 bytes (one page each, nearly full of c's traffic): the pool's
    // pages now hold them.
    for i in 0..16 {
        let mut f = frame(1, 3, 4090, i);
        f[14..].fill(0xee);
        a.send(&f);
        s.nb.poll().unwrap();
        a.reap_tx();
        assert_eq!(c.recv().len(), 1);
    }
    // Then a page-flipping guest f connects and receives short frames and a two-page one.
    let mut f = s.front(Guest {
        mode: RxMode::Flip,
        ..Guest::mac(5)
    });
    let mut bufs = Vec::new();
    for i in 0..8u16 {
        let pfn = f.dom.alloc_page().unwrap();
        let gref = f.dom.grant_accept_transfer(s.dom0.domid(), pfn).unwrap();
        f.rx.put_request(RxRequest {
            id: 100 + i,
            pad: 0,
            gref: gref.0,
        })
        .unwrap();
        bufs.push((pfn, gref));
    }
    f.rx.push_requests_and_check_notify();
    let sent: Vec<Vec<u8>> = [60, 1000, 5000]
        .iter()
        .enumerate()
        .map(|(i, &n)| frame(1, 5, n, 0x40 + i as u32))
        .collect();
    for one in &sent {
        a.send(one);
    }
    s.nb.poll().unwrap();
    a.reap_tx();
    let mut got = Vec::new();
    while let Some(rsp) = f.rx.next_response().unwrap() {
        let rsp: RxResponse = rsp;
        let (pfn, gref) = bufs[(rsp.id - 100) as usize];
        assert!(rsp.status > 0, "a flip failed: {rsp:?}");
        f.dom.end_transfer(gref).unwrap();
        let mut page = vec![0u8; PAGE_SIZE];
        f.dom.read(pfn, 0, &mut page).unwrap();
        let end = rsp.offset as usize + rsp.status as usize;
        got.extend_from_slice(&page[rsp.offset as usize..end]);
        assert!(
            page[end..].iter().all(|b| *b == 0),
            "the flipped page holds {} bytes of backend memory past the frame's {} (first: \
             {:#x})",
            page[end..].iter().filter(|b| **b != 0).count(),
            rsp.status,
            page[end..].iter().find(|b| **b != 0).unwrap()
        );
    }
    assert_eq!(got, sent.concat(), "the frames themselves arrived");
}

// XSA-270 (CVE-2018-15471): Linux netback trusted the frontend's offset and length into its
// hash mapping table, set over the ctrl ring, and wrote out of bounds. Here every sub-table
// that does not lie inside the table (the sum overflowing 32 bits included) is answered
// INVALID_PARAMETER and changes nothing; a hash extra on a tx packet is read and ignored.
#[test]
fn xsa270_hash_mapping_bounds_are_checked_and_tx_hash_extras_are_ignored() {
    use netif_ring::ctrl::{
        XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER as INVALID, XEN_NETIF_CTRL_STATUS_SUCCESS as OK,
        XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING as SET_MAPPING,
        XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE as SET_SIZE,
    };
    let mut s = scene(Config::default(), 256);
    let mut g = RawFront::new(&s.xen, s.dom0.domid(), Guest::mac(7));
    g.make_ctrl_ring();
    g.connect(&mut s.nb);
    let ctrl = |s: &mut Scene, g: &mut RawFront, t: u16, data: [u32; 3]| {
        g.ctrl_request(t, data);
        s.nb.poll().unwrap();
        let r = g.ctrl_responses();
        assert_eq!(r.len(), 1, "one response per request");
        r[0].status
    };
    assert_eq!(ctrl(&mut s, &mut g, SET_SIZE, [128, 0, 0]), OK);
    // Queue numbers of a vif with one queue: only 0 is valid, so the page holds 1s to show any
    // write that got through.
    let ones = g.grant_bytes(&[1u8, 0, 0, 0].repeat(1024));
    for (len, off) in [
        (2, u32::MAX),
        (u32::MAX, 2),
        (0x8000_0000, 0x8000_0000),
        (2, 127),
        (129, 0),
        (1025, 0),
    ] {
        assert_eq!(
            ctrl(&mut s, &mut g, SET_MAPPING, [ones.0, len, off]),
            INVALID,
            "{len} entries at {off}"
        );
    }
    let id = g.id();
    let vif = s.nb.vifs().find(|v| v.id() == id).unwrap();
    assert_eq!(vif.hash_settings().mapping, vec![0; 128], "nothing written");
    assert_eq!(s.nb.vif_stats(id).unwrap().ctrl_invalid, 6);
    assert!(s.nb.vif_stats(id).unwrap().fatal.is_none());

    let data = frame(9, 2, 200, 8);
    let mut slots = split(&mut s.h, &data, &[], NETTXF_EXTRA_INFO, 1);
    // Type, algorithm and value are junk a hash table lookup would trip on.
    slots.push(extra(
        XEN_NETIF_EXTRA_TYPE_HASH,
        0,
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ));
    s.push(&slots);
    // The extra slot is answered in place, its id field overlaid by type and flags.
    assert_eq!(s.responses(), [(1, NETIF_RSP_OKAY), (4, NETIF_RSP_NULL)]);
    let got = s.b.recv();
    assert!(got.len() == 1 && got[0].as_ref().is_ok_and(|g| *g == data));
    s.others_carry_on();
}

// XSA-392 (CVE-2021-28714): a guest keeping exactly one rx slot free never looked stalled to
// Linux netback while every queued packet needed more, so its queue grew without bound.
#[test]
fn xsa392_one_free_rx_slot_does_not_keep_multi_slot_frames_queued() {
    let cfg = Config {
        rx_drain_timeout: Duration::from_secs(1),
        rx_queue_bytes: 100_000,
        ..Config::default()
    };
    let mut s = scene(cfg, 2048);
    // h keeps one buffer posted; every frame for it takes three.
    s.h.post_rx(1);
    // Time is the test's: each flood happens at one instant, however slow the machine.
    let t = std::time::Instant::now();
    let flood = |s: &mut Scene, n: u8, at| {
        for i in 0..n {
            s.a.send(&broadcast(1, 9014, u32::from(i)));
            s.nb.poll_at(at).unwrap();
            s.a.reap_tx();
            s.b.recv();
            s.b.post_rx(3);
        }
    };
    flood(&mut s, 30, t);
    let st = s.stats();
    assert_eq!(st.rx_packets, 0, "one slot fits no frame");
    assert_eq!(
        st.rx_queue_full,
        30 - 11,
        "100 000 bytes hold 11 frames: {st:?}"
    );
    let later = t + Duration::from_millis(1100);
    s.nb.poll_at(later).unwrap();
    let st = s.stats();
    assert_eq!(
        st.rx_expired, 11,
        "queued frames expire although a slot stays free: {st:?}"
    );
    // The queue is usable again, and still capped.
    flood(&mut s, 20, later);
    assert_eq!(s.stats().rx_queue_full, 19 + 9, "{:?}", s.stats());
    assert!(s.stats().fatal.is_none());
    s.others_carry_on();
}

// XSA-423 (CVE-2022-3643): a frontend splitting a packet's headers over several slots made
// Linux netback hand the stack an skb whose headers were not in its linear part, and some NICs
// reset. Here every packet is copied into contiguous backend pages before anything reads it.
#[test]
fn xsa423_headers_split_over_slots_are_whole_before_anything_reads_them() {
    let mut s = scene(Config::default(), 256);
    let full = tcp_frame(&(0..1200).map(|i| i as u8).collect::<Vec<_>>());
    // Ethernet header alone, the IPv4 header in two slots, the TCP header in three, then data.
    let cuts = [14, 24, 34, 40, 47, 54, 600];
    let slots = split(
        &mut s.h,
        &partial(&full),
        &cuts,
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
        1,
    );
    s.push(&slots);
    let st = s.stats();
    assert_eq!((st.tx_packets, st.tx_csum_errors), (1, 0), "{st:?}");
    assert!(s.responses().iter().all(|r| r.1 == NETIF_RSP_OKAY));
    // b takes no partial checksums: the backend found the TCP header across the cuts and
    // completed the checksum.
    let got = s.b.recv();
    assert!(got.len() == 1 && got[0].as_ref().is_ok_and(|g| *g == full));
    s.others_carry_on();
}

// XSA-432 (CVE-2023-34319): the XSA-423 fix overran its array for a packet in as many slots as
// the protocol allows yet shorter than the header area it copies (128 bytes).
#[test]
fn xsa432_a_short_packet_in_the_most_slots_allowed_arrives_whole() {
    let mut s = scene(Config::default(), 256);
    // 104 bytes in 19 slots: 14, then 18 of 5 (headers split everywhere).
    let full = tcp_frame(&[0x5a; 50]);
    assert_eq!(full.len(), 104);
    let cuts: Vec<usize> = (0..18).map(|i| 14 + i * 5).collect();
    let slots = split(
        &mut s.h,
        &partial(&full),
        &cuts,
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
        1,
    );
    assert_eq!(slots.len(), 19);
    s.push(&slots);
    let st = s.stats();
    assert_eq!((st.tx_packets, st.tx_too_many_slots), (1, 0), "{st:?}");
    let rsp = s.responses();
    assert_eq!(rsp.len(), 19);
    assert!(rsp.iter().all(|r| r.1 == NETIF_RSP_OKAY));
    let got = s.b.recv();
    assert!(got.len() == 1 && got[0].as_ref().is_ok_and(|g| *g == full));
    // The same in 20 slots is dropped (Linux: more than 18 after the first), not overrun.
    let cuts: Vec<usize> = (0..19).map(|i| 14 + i * 4).collect();
    let slots = split(&mut s.h, &partial(&full), &cuts, NETTXF_CSUM_BLANK, 100);
    s.push(&slots);
    assert_eq!(s.stats().tx_too_many_slots, 1);
    assert!(s.responses().iter().all(|r| r.1 == NETIF_RSP_ERROR));
    s.others_carry_on();
}

// XSA-448 (CVE-2023-46838): zero-length slots after the first became zero-size skb fragments
// and a NULL dereference in Linux's core networking.
#[test]
fn xsa448_zero_length_later_slots_carry_nothing_and_harm_nothing() {
    let mut s = scene(Config::default(), 256);
    let data = frame(9, 2, 300, 9);
    // All of the data in the first slot, then five empty slots, one naming no grant at all.
    let mut slots = split(&mut s.h, &data, &[300, 300, 300, 300, 300], 0, 1);
    if let Slot::Req(r) = &mut slots[3] {
        r.gref = 60_000;
        r.offset = 4096;
    }
    s.push(&slots);
    // And zero-length slots between data slots.
    let data2 = frame(9, 2, 900, 10);
    let slots = split(&mut s.h, &data2, &[100, 100, 400, 400, 900], 0, 10);
    s.push(&slots);
    let st = s.stats();
    assert_eq!(
        (st.tx_packets, st.tx_copy_errors, st.tx_runt),
        (2, 0, 0),
        "{st:?}"
    );
    assert!(st.fatal.is_none());
    let rsp = s.responses();
    assert_eq!(rsp.len(), 12);
    assert!(rsp.iter().all(|r| r.1 == NETIF_RSP_OKAY), "{rsp:?}");
    let got: Vec<Vec<u8>> = s.b.recv().into_iter().map(|g| g.unwrap()).collect();
    assert_eq!(got, [data, data2]);
    s.others_carry_on();
}

// Linux's rx stall (`rx_stall_timeout_msecs`, and CVE-2021-28715 of XSA-392): a guest that
// posts no buffers is taken off the carrier, so frames for it are dropped early instead of
// holding up everything. Here no guest ever holds the uplinks back: frames for a guest whose
// queue is full are dropped at its queue, long before they would expire, from the first pass.
#[test]
fn a_stalled_guest_does_not_hold_the_wire_back_for_the_others() {
    let cfg = Config {
        rx_queue_bytes: 70_000,
        // Expiry would free the queue only after this: far past the end of the test.
        rx_drain_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let mut s = testkit::Scene::new(cfg);
    let mut wire = s.nic(1514);
    let h = s.front(Guest::mac(9));
    let mut a = s.front(Guest::mac(1));
    a.post_rx(64);
    // Four queues' worth of broadcasts from the wire; h posts no buffers at all.
    const N: usize = 200;
    let (mut sent, mut got, mut passes) = (0, 0, 0);
    for _ in 0..5000 {
        passes += 1;
        while sent < N {
            let f = broadcast(0x33, 1514, sent as u32);
            if wire.send(f.len(), |b| b.copy_from_slice(&f)).is_none() {
                break;
            }
            sent += 1;
        }
        wire.flush();
        s.nb.poll().unwrap();
        let n = a.recv().len();
        a.post_rx(n);
        got += n;
        if got == N {
            break;
        }
    }
    assert_eq!(got, N, "the other guest got every frame the wire sent");
    // No clock involved: the wire's 200 frames cross in a few passes (its queue holds 64).
    assert!(
        passes <= 10,
        "{passes} passes: something held the wire back"
    );
    let hs = s.nb.vif_stats(h.id()).unwrap();
    assert_eq!(
        hs.rx_queue_full,
        (N - 46) as u64,
        "h's queue holds 46 frames of 1514 bytes; the rest were dropped at it: {hs:?}"
    );
    assert_eq!(hs.rx_expired, 0);
    assert!(hs.fatal.is_none());
}

// Linux's `connect`/`connect_data_rings` end in `xenbus_dev_fatal` when the frontend's keys are
// missing or name rings and channels that cannot be mapped or bound: the device goes Closed
// with an `error` node and no vif is made.
#[test]
fn bad_ring_refs_and_event_channels_are_refused_with_an_error_node() {
    // (key, its value or none, what the error node must say)
    let cases = [
        ("tx-ring-ref", Some("junk"), "tx-ring-ref"),
        ("rx-ring-ref", None, "rx-ring-ref missing"),
        ("tx-ring-ref", Some("60000"), "bad_gntref"),
        ("event-channel", Some("4000"), "binding its channel"),
    ];
    for (case, (key, value, says)) in cases.into_iter().enumerate() {
        let mut s = scene(Config::default(), 256);
        let g = RawFront::new(&s.xen, s.dom0.domid(), Guest::mac(7));
        let paths = s
            .xen
            .add_vif(g.dom.domid(), s.dom0.domid(), 0, "02:00:00:00:00:07")
            .unwrap();
        let xs = s.dom0.xenstore();
        let be = |k: &str| xs.read(&format!("{}/{k}", paths.backend)).ok();
        let settle = |nb: &mut Nb, want: &str| {
            for _ in 0..50 {
                nb.poll().unwrap();
                if be("state").as_deref() == Some(want) {
                    return;
                }
            }
            panic!("case {case}: the backend never reached state {want}");
        };
        settle(&mut s.nb, "2");
        let gx = g.dom.xenstore();
        let k = &g.keys.queues[0];
        for (name, v) in [
            ("tx-ring-ref", k.tx_ring_ref.0.to_string()),
            ("rx-ring-ref", k.rx_ring_ref.0.to_string()),
            ("event-channel", k.event_channel.0.to_string()),
            ("request-rx-copy", "1".into()),
        ] {
            let v = if name == key {
                value.map(str::to_string)
            } else {
                Some(v)
            };
            if let Some(v) = v {
                gx.write(&format!("{}/{name}", paths.frontend), &v).unwrap();
            }
        }
        gx.write(&format!("{}/state", paths.frontend), "4").unwrap();
        settle(&mut s.nb, "6");
        let err = be("error").unwrap_or_default();
        assert!(err.contains(says), "case {case}: {err}");
        assert!(
            s.nb.vifs().all(|v| v.id().domid != g.dom.domid()),
            "case {case}: no vif for the refused frontend"
        );
        s.others_carry_on();
    }
}
