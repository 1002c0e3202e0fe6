//! Receive-side steering a guest sets up over its ctrl ring, as Linux 6.1's netback does it:
//! with Toeplitz on, a frame goes to the queue `mapping[hash % size]` names
//! (`xenvif_select_queue`) and arrives with a `XEN_NETIF_EXTRA_TYPE_HASH` extra after its first
//! data slot (`xenvif_rx_next_skb`), behind the GSO extra of a super-frame; a guest that did not
//! set hashing up gets no hash extra. The receiver here has four queues: its raw frontend's own
//! rings are queue 0, the test makes three more.

use std::collections::VecDeque;

use etherparse::PacketBuilder;
use hypervisor::ringpage::own_ring;
use hypervisor::{GrantRef, Pfn, Port};
use netback::{Config, FrontendOffloads, QueueKeys};
use netif_ring::ctrl::*;
use netif_ring::netif::{
    ExtraInfo, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    RxRequest, RxResponse, XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_EXTRA_TYPE_GSO,
    XEN_NETIF_EXTRA_TYPE_HASH, XEN_NETIF_GSO_TYPE_TCPV4,
};
use netif_ring::{FrontRing, RxRing, TxRing};
use testkit::{Guest, RawFront, RxFront, Scene, TxFront};

/// Microsoft's standard RSS key.
const KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

const QUEUES: usize = 4;

/// A frame as one of the receiver's queues got it: data and extra-info slots.
#[derive(Debug)]
struct Got {
    data: Vec<u8>,
    first_flags: u16,
    extras: Vec<ExtraInfo>,
}

/// The receiver's queues 1..: rings the test made, with their posted buffers in order.
struct MoreQueues {
    rings: Vec<(TxFront, RxFront, Port)>,
    /// Each queue's posted (id, page, grant), queue 0's included, in posting order.
    posted: Vec<VecDeque<(u16, Pfn, GrantRef)>>,
}

/// Gives `f` `n` more queues (rings granted, ports unbound) in its keys; connect afterwards.
fn add_queues(f: &mut RawFront, n: usize) -> MoreQueues {
    let mut rings = Vec::new();
    for _ in 0..n {
        let txp = f.dom.alloc_page().unwrap();
        let rxp = f.dom.alloc_page().unwrap();
        let tx: TxFront = FrontRing::<TxRing, _>::init(own_ring(&f.dom, txp).unwrap());
        let rx: RxFront = FrontRing::<RxRing, _>::init(own_ring(&f.dom, rxp).unwrap());
        let tx_ref = f.dom.grant_access(f.backend, txp, false).unwrap();
        let rx_ref = f.dom.grant_access(f.backend, rxp, false).unwrap();
        let port = f.evtchn.alloc_unbound(f.backend).unwrap();
        f.keys.queues.push(QueueKeys {
            tx_ring_ref: tx_ref,
            rx_ring_ref: rx_ref,
            event_channel: port,
            event_channel_rx: None,
        });
        rings.push((tx, rx, port));
    }
    MoreQueues {
        rings,
        posted: vec![VecDeque::new(); n + 1],
    }
}

impl MoreQueues {
    fn ring<'a>(&'a mut self, f: &'a mut RawFront, q: usize) -> (&'a mut RxFront, Port) {
        if q == 0 {
            (&mut f.rx, f.port)
        } else {
            let (_, rx, port) = &mut self.rings[q - 1];
            (rx, *port)
        }
    }

    /// Posts `n` buffers on queue `q`.
    fn post(&mut self, f: &mut RawFront, q: usize, n: usize) {
        let (dom, backend) = (f.dom.clone(), f.backend);
        let mut posted = Vec::new();
        let (ring, port) = self.ring(f, q);
        for _ in 0..n {
            let pfn = dom.alloc_page().unwrap();
            let gref = dom.grant_access(backend, pfn, false).unwrap();
            let id = ring.req_prod_pvt() as u16;
            ring.put_request(RxRequest {
                id,
                pad: 0,
                gref: gref.0,
            })
            .unwrap();
            posted.push((id, pfn, gref));
        }
        if ring.push_requests_and_check_notify() {
            f.evtchn.notify(port).unwrap();
        }
        self.posted[q].extend(posted);
    }

    /// Every frame that arrived on queue `q`, checking responses come in request order.
    fn recv(&mut self, f: &mut RawFront, q: usize) -> Vec<Got> {
        let dom = f.dom.clone();
        let mut posted = std::mem::take(&mut self.posted[q]);
        let (ring, _) = self.ring(f, q);
        let mut out = Vec::new();
        let mut cur: Option<Got> = None;
        let mut extras_pending = false;
        while let Some(&(id, pfn, gref)) = posted.front() {
            if extras_pending {
                let Some(e) = ring.next_response_as::<ExtraInfo>().unwrap() else {
                    break;
                };
                extras_pending = e.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0;
                let g = cur.as_mut().unwrap();
                g.extras.push(e);
                if !extras_pending && g.first_flags & NETRXF_MORE_DATA == 0 {
                    out.push(cur.take().unwrap());
                }
            } else {
                let Some(r) = ring.next_response().unwrap() else {
                    break;
                };
                let r: RxResponse = r;
                assert_eq!(r.id, id, "responses in request order");
                assert!(r.status >= 0, "an rx error {}", r.status);
                let mut buf = vec![0u8; r.status as usize];
                dom.read(pfn, r.offset as usize, &mut buf).unwrap();
                let first = cur.is_none();
                let g = cur.get_or_insert_with(|| Got {
                    data: Vec::new(),
                    first_flags: r.flags,
                    extras: Vec::new(),
                });
                g.data.extend_from_slice(&buf);
                extras_pending = first && r.flags & NETRXF_EXTRA_INFO != 0;
                if r.flags & NETRXF_MORE_DATA == 0 && !extras_pending {
                    out.push(cur.take().unwrap());
                }
            }
            posted.pop_front();
            dom.end_access(gref).unwrap();
            dom.free_page(pfn).unwrap();
        }
        assert!(cur.is_none(), "frames arrive whole");
        self.posted[q] = posted;
        out
    }
}

/// A TCP/IPv4 frame from `a` (MAC 1) to the receiver (MAC 2) of flow `sport`.
fn tcp(sport: u16, payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([66, 9, 149, 187], [161, 142, 100, 80], 64)
        .tcp(sport, 1766, 1, 65535);
    let mut out = Vec::new();
    b.write(&mut out, &vec![0x5a; payload]).unwrap();
    out
}

/// The hash Linux computes for such a frame with IPv4+TCP on: source, destination, ports.
fn toeplitz_of(sport: u16) -> u32 {
    let mut input = vec![66, 9, 149, 187, 161, 142, 100, 80];
    input.extend_from_slice(&sport.to_be_bytes());
    input.extend_from_slice(&1766u16.to_be_bytes());
    toeplitz_hash(&KEY, &input)
}

/// A backend with a sender `a` (MAC 1) and a receiver `r` (MAC 2) of four queues with a ctrl
/// ring, connected directly; `r` announced its MAC so frames to it are unicast.
fn setup(offload: FrontendOffloads) -> (Scene, RawFront, RawFront, MoreQueues) {
    let mut s = Scene::new(Config {
        max_queues: QUEUES as u32,
        ..Config::default()
    });
    let mut a = s.front(Guest::mac(1));
    let mut r = s.guest(Guest {
        offload,
        ..Guest::mac(2)
    });
    let q = add_queues(&mut r, QUEUES - 1);
    r.make_ctrl_ring();
    r.connect(&mut s.nb);
    a.post_rx(8);
    r.send(&testkit::frame(2, 1, 60, 0));
    s.nb.poll().unwrap();
    r.reap_tx();
    assert_eq!(a.recv().len(), 1);
    (s, a, r, q)
}

#[track_caller]
fn ctrl(s: &mut Scene, g: &mut RawFront, type_: u16, data: [u32; 3]) -> u32 {
    g.ctrl_request(type_, data);
    s.nb.poll().unwrap();
    let r = g.ctrl_responses();
    assert_eq!(r.len(), 1);
    r[0].status
}

/// Toeplitz with `flags`, the standard key, and `mapping` as the table.
fn set_up_hashing(s: &mut Scene, r: &mut RawFront, flags: u32, mapping: &[u32]) {
    let ok = XEN_NETIF_CTRL_STATUS_SUCCESS;
    let t = XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ;
    assert_eq!(
        ctrl(s, r, XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM, [t, 0, 0]),
        ok
    );
    assert_eq!(
        ctrl(s, r, XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, [flags, 0, 0]),
        ok
    );
    let key = r.grant_bytes(&KEY);
    assert_eq!(
        ctrl(s, r, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, [key.0, 40, 0]),
        ok
    );
    let n = mapping.len() as u32;
    assert_eq!(
        ctrl(s, r, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, [n, 0, 0]),
        ok
    );
    if n > 0 {
        let bytes: Vec<u8> = mapping.iter().flat_map(|q| q.to_le_bytes()).collect();
        let table = r.grant_bytes(&bytes);
        assert_eq!(
            ctrl(s, r, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, [table.0, n, 0]),
            ok
        );
    }
}

fn hash_extra(e: &ExtraInfo) -> Option<(u8, u8, u32)> {
    (e.type_ == XEN_NETIF_EXTRA_TYPE_HASH).then(|| {
        let v = u32::from_le_bytes([e.u[2], e.u[3], e.u[4], e.u[5]]);
        (e.u[0], e.u[1], v)
    })
}

#[test]
fn frames_arrive_on_the_queue_the_mapping_names_with_their_hash() {
    let (mut s, mut a, mut r, mut q) = setup(Guest::DEFAULT.offload);
    // An uneven table: queue 3 gets half the entries, queue 0 none.
    let mapping = [3, 1, 3, 2, 3, 1, 3, 2];
    set_up_hashing(&mut s, &mut r, XEN_NETIF_CTRL_HASH_TYPE_ALL, &mapping);
    for k in 0..QUEUES {
        q.post(&mut r, k, 64);
    }
    let mut want = vec![Vec::new(); QUEUES];
    for sport in 1000..1048u16 {
        let f = tcp(sport, 100);
        let h = toeplitz_of(sport);
        want[mapping[h as usize % mapping.len()] as usize].push((f.clone(), h));
        a.send(&f);
    }
    s.nb.poll().unwrap();
    a.reap_tx();
    assert!(want[0].is_empty(), "no entry names queue 0");
    assert!(
        want[1..].iter().all(|w| !w.is_empty()),
        "the flows cover queues 1-3"
    );
    for (k, want) in want.iter().enumerate() {
        let got = q.recv(&mut r, k);
        assert_eq!(got.len(), want.len(), "queue {k}");
        for (g, (f, h)) in got.iter().zip(want) {
            assert_eq!(&g.data, f, "queue {k}: byte-exact, in flow order");
            assert!(g.first_flags & NETRXF_EXTRA_INFO != 0);
            assert_eq!(g.extras.len(), 1);
            assert_eq!(
                hash_extra(&g.extras[0]),
                Some((
                    _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
                    XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ as u8,
                    *h
                )),
                "queue {k}"
            );
            assert_eq!(g.extras[0].flags, 0, "the only extra: no MORE");
        }
    }
    assert_eq!(s.nb.vif_stats(r.id()).unwrap().rx_hash_extras, 48);
}

#[test]
fn without_a_table_the_hash_picks_the_queue_modulo() {
    let (mut s, mut a, mut r, mut q) = setup(Guest::DEFAULT.offload);
    set_up_hashing(&mut s, &mut r, XEN_NETIF_CTRL_HASH_TYPE_ALL, &[]);
    for k in 0..QUEUES {
        q.post(&mut r, k, 32);
    }
    let mut want = [0usize; QUEUES];
    for sport in 2000..2040u16 {
        want[toeplitz_of(sport) as usize % QUEUES] += 1;
        a.send(&tcp(sport, 64));
    }
    s.nb.poll().unwrap();
    assert!(
        want.iter().all(|n| *n > 0),
        "the flows cover every queue: {want:?}"
    );
    for (k, n) in want.iter().enumerate() {
        assert_eq!(q.recv(&mut r, k).len(), *n, "queue {k}");
    }
}

#[test]
fn hash_extras_only_when_the_guest_set_hashing_up_and_its_types_cover_the_frame() {
    let (mut s, mut a, mut r, mut q) = setup(Guest::DEFAULT.offload);
    let all_queues = |q: &mut MoreQueues, r: &mut RawFront| -> Vec<Got> {
        (0..QUEUES).flat_map(|k| q.recv(r, k)).collect()
    };
    for k in 0..QUEUES {
        q.post(&mut r, k, 64);
    }
    // Nothing set up: no extras (flow hashing still spreads the queues).
    for sport in 0..8 {
        a.send(&tcp(3000 + sport, 64));
    }
    s.nb.poll().unwrap();
    let got = all_queues(&mut q, &mut r);
    assert_eq!(got.len(), 8);
    assert!(
        got.iter()
            .all(|g| g.extras.is_empty() && g.first_flags & NETRXF_EXTRA_INFO == 0)
    );

    // Toeplitz but no types: no hash, so every frame takes mapping[0] and has no extra.
    set_up_hashing(&mut s, &mut r, 0, &[2, 0, 1]);
    for sport in 0..8 {
        a.send(&tcp(3000 + sport, 64));
    }
    s.nb.poll().unwrap();
    assert_eq!(q.recv(&mut r, 2).len(), 8, "all on mapping[0]");
    assert!(all_queues(&mut q, &mut r).is_empty());

    // IPv4 only (no TCP type): TCP frames are hashed by their addresses; a non-IP frame gets
    // no hash and goes to mapping[0].
    let v4 = XEN_NETIF_CTRL_HASH_TYPE_IPV4;
    assert_eq!(
        ctrl(
            &mut s,
            &mut r,
            XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS,
            [v4, 0, 0]
        ),
        XEN_NETIF_CTRL_STATUS_SUCCESS
    );
    for k in 0..QUEUES {
        q.post(&mut r, k, 8);
    }
    a.send(&tcp(3000, 64));
    a.send(&testkit::frame(1, 2, 100, 5));
    s.nb.poll().unwrap();
    let l3 = toeplitz_hash(&KEY, &[66, 9, 149, 187, 161, 142, 100, 80]);
    let mapping = [2usize, 0, 1];
    let on = mapping[l3 as usize % 3];
    let got = q.recv(&mut r, on);
    assert_eq!(
        hash_extra(&got[0].extras[0]),
        Some((
            _XEN_NETIF_CTRL_HASH_TYPE_IPV4,
            XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ as u8,
            l3
        ))
    );
    let plain = if on == 2 {
        got.get(1).map(|g| g.extras.len())
    } else {
        q.recv(&mut r, 2).first().map(|g| g.extras.len())
    };
    assert_eq!(
        plain,
        Some(0),
        "the non-IP frame went to mapping[0] without a hash"
    );

    // Back to no algorithm: no extras again.
    assert_eq!(
        ctrl(
            &mut s,
            &mut r,
            XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
            [XEN_NETIF_CTRL_HASH_ALGORITHM_NONE, 0, 0]
        ),
        XEN_NETIF_CTRL_STATUS_SUCCESS
    );
    for k in 0..QUEUES {
        q.post(&mut r, k, 8);
    }
    a.send(&tcp(3000, 64));
    s.nb.poll().unwrap();
    let got = all_queues(&mut q, &mut r);
    assert_eq!(got.len(), 1);
    assert!(got[0].extras.is_empty());
}

#[test]
fn the_hash_extra_follows_the_gso_extra_as_linux_lays_them_out() {
    let (mut s, mut a, mut r, mut q) = setup(FrontendOffloads::ALL);
    set_up_hashing(&mut s, &mut r, XEN_NETIF_CTRL_HASH_TYPE_ALL, &[1]);
    q.post(&mut r, 1, 64);
    // A 20 000-byte TCP super-frame from a: its GSO extra, then the hash extra.
    let f = tcp(4242, 20_000);
    let gso = netif_ring::netif::ExtraRepr::Gso {
        size: 1448,
        gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
        features: 0,
    }
    .emit(false);
    let mut partial = f.clone();
    // netfront's way: only the pseudo-header sum in the TCP checksum field.
    offload::csum::set_partial(&mut partial).unwrap();
    a.send_with(
        &partial,
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
        Some(gso),
    );
    s.nb.poll().unwrap();
    let got = q.recv(&mut r, 1);
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.data.len(), f.len());
    assert_eq!(g.extras.len(), 2);
    assert_eq!(g.extras[0].type_, XEN_NETIF_EXTRA_TYPE_GSO);
    assert_eq!(
        g.extras[0].flags, XEN_NETIF_EXTRA_FLAG_MORE,
        "more extras follow"
    );
    assert_eq!(
        hash_extra(&g.extras[1]).map(|(t, _, v)| (t, v)),
        Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, toeplitz_of(4242)))
    );
    assert_eq!(g.extras[1].flags, 0, "the last extra");
}

#[test]
fn mapping_entries_must_name_a_queue_of_the_vif_and_a_refused_table_changes_nothing() {
    let (mut s, _a, mut r, _q) = setup(Guest::DEFAULT.offload);
    let ok = XEN_NETIF_CTRL_STATUS_SUCCESS;
    let invalid = XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    assert_eq!(
        ctrl(
            &mut s,
            &mut r,
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
            [8, 0, 0]
        ),
        ok
    );
    let table = |r: &mut RawFront, entries: &[u32]| {
        let bytes: Vec<u8> = entries.iter().flat_map(|q| q.to_le_bytes()).collect();
        r.grant_bytes(&bytes)
    };
    let good = table(&mut r, &[3, 2, 1, 0]);
    assert_eq!(
        ctrl(
            &mut s,
            &mut r,
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
            [good.0, 4, 2]
        ),
        ok
    );
    let id = r.id();
    let mapping = |s: &Scene| {
        s.nb.vifs()
            .find(|v| v.id() == id)
            .unwrap()
            .hash_settings()
            .mapping
    };
    assert_eq!(mapping(&s), [0, 0, 3, 2, 1, 0, 0, 0]);
    for bad in [[0, 1, 4, 0], [u32::MAX, 0, 0, 0], [0, 0, 0, 0x100]] {
        let t = table(&mut r, &bad);
        assert_eq!(
            ctrl(
                &mut s,
                &mut r,
                XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
                [t.0, 4, 4]
            ),
            invalid,
            "{bad:?}"
        );
        assert_eq!(
            mapping(&s),
            [0, 0, 3, 2, 1, 0, 0, 0],
            "unchanged by {bad:?}"
        );
    }
}
