//! The ctrl ring, multicast control and XDP headroom end to end: the embedded netfront sets each
//! up as a Windows guest (hashing, multicast) or Linux's netfront (XDP headroom) would, through
//! xenbus, against netback on its own thread.

mod threaded;

use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use netback::{Config, Netback};
use netfront::{Error, FrontConfig, HashConfig, Netfront};
use netif_ring::ctrl::{
    _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
    XEN_NETIF_CTRL_HASH_TYPE_ALL, toeplitz_hash,
};
use smoltcp::phy::{Device, RxToken, TxToken};
use threaded::{Backend, GUARD, guest, mac, node, vif};
use xen_model::{DomainHandle, Hypervisor};

/// Microsoft's standard RSS key.
const KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];
const T0: smoltcp::time::Instant = smoltcp::time::Instant::ZERO;

fn machine(max_queues: u32) -> (Hypervisor, Backend) {
    let xen = Hypervisor::new(64 * 1024).expect("machine");
    let dom0 = xen.create_domain(8192).expect("dom0");
    let cfg = Config {
        max_queues,
        ..Config::default()
    };
    (xen, Backend::start_with(dom0, cfg))
}

fn front(f: impl FnOnce(&mut FrontConfig)) -> FrontConfig {
    let mut c = FrontConfig {
        rx_buffers: 64,
        rx_refill_batch: 16,
        tx_pages: 64,
        timeout: GUARD,
        // Frames are sent as built, checksums included.
        csum_offload: false,
        ..FrontConfig::default()
    };
    f(&mut c);
    c
}

fn send(nf: &mut Netfront<DomainHandle>, frame: &[u8]) {
    let start = Instant::now();
    loop {
        if let Some(tok) = nf.transmit(T0) {
            tok.consume(frame.len(), |b| b.copy_from_slice(frame));
            return;
        }
        assert!(start.elapsed() < GUARD, "no tx room");
        nf.poll().expect("poll");
        nf.wait(Some(Duration::from_millis(5))).expect("wait");
    }
}

/// The queue a frame came on and its hash extra's (value, type).
type Arrival = (usize, Option<(u32, u8)>);

/// The next frame `nf` receives, with where it came on.
fn recv(nf: &mut Netfront<DomainHandle>) -> (Vec<u8>, Arrival) {
    let start = Instant::now();
    loop {
        nf.poll().expect("poll");
        if let Some((rx, _)) = nf.receive(T0) {
            let f = rx.consume(|b| b.to_vec());
            return (f, nf.last_rx().expect("a frame was taken"));
        }
        assert!(start.elapsed() < GUARD, "no frame: {:?}", nf.stats());
        nf.wait(Some(Duration::from_millis(5))).expect("wait");
    }
}

/// Whatever arrives within `quiet` of the last frame.
fn drain(nf: &mut Netfront<DomainHandle>, quiet: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        nf.poll().expect("poll");
        while let Some((rx, _)) = nf.receive(T0) {
            out.push(rx.consume(|b| b.to_vec()));
            last = Instant::now();
        }
        nf.wait(Some(Duration::from_millis(5))).expect("wait");
    }
    out
}

/// A TCP/IPv4 frame from `src` (10.0.0.3) to `dst` (10.0.0.2) of flow `sport`.
fn tcp(src: [u8; 6], dst: [u8; 6], sport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src, dst)
        .ipv4([10, 0, 0, 3], [10, 0, 0, 2], 64)
        .tcp(sport, 445, 1, 65535);
    let mut out = Vec::new();
    b.write(&mut out, &[0xab; 200]).unwrap();
    out
}

fn toeplitz_of(sport: u16) -> u32 {
    let mut input = vec![10, 0, 0, 3, 10, 0, 0, 2];
    input.extend_from_slice(&sport.to_be_bytes());
    input.extend_from_slice(&445u16.to_be_bytes());
    toeplitz_hash(&KEY, &input)
}

#[test]
fn netfront_sets_up_toeplitz_and_each_flow_arrives_on_the_queue_its_mapping_names() {
    let (xen, be) = machine(4);
    let (dr, pr) = guest(&xen, 1, 0, mac(2));
    let (ds, _) = guest(&xen, 2, 0, mac(3));
    let mapping = vec![3, 1, 3, 2, 3, 1, 3, 2];
    let mut r = Netfront::connect(
        dr.clone(),
        0,
        front(|c| {
            c.max_queues = 4;
            c.hashing = Some(HashConfig {
                key: KEY.to_vec(),
                flags: XEN_NETIF_CTRL_HASH_TYPE_ALL,
                mapping: mapping.clone(),
            });
        }),
    )
    .expect("netfront connects and sets up hashing");
    let mut s = Netfront::connect(ds, 0, front(|_| {})).expect("sender connects");
    assert!(r.has_ctrl_ring());
    assert_eq!(r.num_queues(), 4);
    assert!(!node(&xen, &format!("{}/ctrl-ring-ref", pr.frontend)).is_empty());
    assert!(!node(&xen, &format!("{}/event-channel-ctrl", pr.frontend)).is_empty());
    // Algorithm, flags asked and set, key, table size asked and set, table.
    assert_eq!(r.stats().ctrl_requests, 7);
    let settings = be.run(|nb: &mut Netback<DomainHandle>| {
        nb.vifs()
            .find(|v| v.id() == vif(1, 0))
            .map(|v| v.hash_settings())
    });
    let settings = settings.expect("the vif is connected");
    assert_eq!(
        (settings.algorithm, settings.flags, settings.key.as_slice()),
        (
            XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
            XEN_NETIF_CTRL_HASH_TYPE_ALL,
            &KEY[..]
        )
    );
    assert_eq!(settings.mapping, mapping);
    let mut per_queue = [0u32; 4];
    for sport in 5000..5040u16 {
        let f = tcp(mac(3), mac(2), sport);
        send(&mut s, &f);
        let (got, (q, hash)) = recv(&mut r);
        assert_eq!(got, f);
        let h = toeplitz_of(sport);
        assert_eq!(hash, Some((h, _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP)));
        assert_eq!(
            q,
            mapping[h as usize % mapping.len()] as usize,
            "flow {sport}"
        );
        per_queue[q] += 1;
    }
    assert_eq!(per_queue[0], 0, "the table names no queue 0");
    assert_eq!(r.stats().rx_hash, 40);
    assert_eq!(
        r.queue_stats()
            .iter()
            .map(|s| s.rx_packets)
            .collect::<Vec<_>>(),
        per_queue.iter().map(|n| u64::from(*n)).collect::<Vec<_>>()
    );
    // The sender set nothing up: its frames carry no hash.
    send(&mut r, &tcp(mac(2), mac(3), 80));
    let (_, (_, hash)) = recv(&mut s);
    assert_eq!(hash, None);
    r.close().unwrap();
    s.close().unwrap();
}

#[test]
fn an_empty_mapping_fills_the_backends_table_with_the_queues_round_robin() {
    let (xen, be) = machine(4);
    let (dr, _) = guest(&xen, 1, 0, mac(2));
    let (ds, _) = guest(&xen, 2, 0, mac(3));
    let mut r = Netfront::connect(
        dr,
        0,
        front(|c| {
            c.max_queues = 2;
            c.hashing = Some(HashConfig {
                key: KEY.to_vec(),
                flags: XEN_NETIF_CTRL_HASH_TYPE_ALL,
                mapping: Vec::new(),
            });
        }),
    )
    .unwrap();
    let mut s = Netfront::connect(ds, 0, front(|_| {})).unwrap();
    let mapping = be
        .run(|nb: &mut Netback<DomainHandle>| {
            nb.vifs()
                .find(|v| v.id() == vif(1, 0))
                .map(|v| v.hash_settings().mapping)
        })
        .unwrap();
    assert_eq!(mapping, (0..128).map(|i| i % 2).collect::<Vec<u32>>());
    for sport in 100..110 {
        send(&mut s, &tcp(mac(3), mac(2), sport));
        let (_, (q, _)) = recv(&mut r);
        assert_eq!(q, toeplitz_of(sport) as usize % 128 % 2);
    }
    r.close().unwrap();
    s.close().unwrap();
}

const G: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
const H: [u8; 6] = [0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa];

fn to(dst: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = threaded::Guest::frame(mac(3), dst, 120, u32::from(tag));
    f[..6].copy_from_slice(&dst);
    f
}

#[test]
fn netfront_subscribes_its_groups_and_gets_only_those_and_broadcast() {
    let (xen, _be) = machine(1);
    let (dr, pr) = guest(&xen, 1, 0, mac(2));
    let (ds, _) = guest(&xen, 2, 0, mac(3));
    let (dn, _) = guest(&xen, 3, 0, mac(4));
    let mut r = Netfront::connect(dr, 0, front(|c| c.multicast = Some(vec![G]))).unwrap();
    let mut s = Netfront::connect(ds, 0, front(|_| {})).unwrap();
    let mut n = Netfront::connect(dn, 0, front(|_| {})).unwrap();
    assert_eq!(
        node(&xen, &format!("{}/request-multicast-control", pr.frontend)),
        "1"
    );
    assert_eq!(r.stats().tx_mcast, 1);
    let (g, h, b) = (to(G, 1), to(H, 2), to([0xff; 6], 3));
    for f in [&g, &h, &b] {
        send(&mut s, f);
    }
    let quiet = Duration::from_millis(300);
    assert_eq!(drain(&mut r, quiet), [g.clone(), b.clone()]);
    assert_eq!(
        drain(&mut n, quiet),
        [g.clone(), h.clone(), b.clone()],
        "a guest that never asked gets every group"
    );
    r.unsubscribe(G).unwrap();
    r.subscribe(H).unwrap();
    for f in [&g, &h] {
        send(&mut s, f);
    }
    assert_eq!(drain(&mut r, quiet), std::slice::from_ref(&h));
    assert_eq!(drain(&mut n, quiet).len(), 2);
    // Linux's list holds 64: the 65th add is refused, and said so.
    for i in 0..63u8 {
        r.subscribe([0x01, 0, 0x5e, 1, 0, i]).unwrap();
    }
    let err = r.subscribe(G).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Ctrl {
                what: "MCAST_ADD",
                ..
            }
        ) && err.to_string().contains("full"),
        "{err}"
    );
    let st = r.stats();
    assert_eq!((st.tx_mcast, st.tx_mcast_refused), (67, 1));
    for nf in [r, s, n] {
        nf.close().unwrap();
    }
}

#[test]
fn netfront_asks_for_xdp_headroom_through_reconfiguring_and_gets_it() {
    let (xen, be) = machine(1);
    let (dr, pr) = guest(&xen, 1, 0, mac(2));
    let (ds, _) = guest(&xen, 2, 0, mac(3));
    let mut r = Netfront::connect(dr, 0, front(|c| c.xdp_headroom = 256)).unwrap();
    let mut s = Netfront::connect(ds, 0, front(|_| {})).unwrap();
    assert_eq!(r.xdp_headroom(), 256);
    assert_eq!(node(&xen, &format!("{}/xdp-headroom", pr.frontend)), "256");
    assert_eq!(node(&xen, &format!("{}/state", pr.frontend)), "4");
    // The backend answered Reconfigured, then went back to Connected with the frontend.
    let start = Instant::now();
    while node(&xen, &format!("{}/state", pr.backend)) != "4" {
        assert!(
            start.elapsed() < GUARD,
            "the backend's state node stays Reconfigured"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let applied = be.run(|nb: &mut Netback<DomainHandle>| {
        nb.vifs()
            .find(|v| v.id() == vif(1, 0))
            .map(|v| v.xdp_headroom())
    });
    assert_eq!(applied, Some(256));
    for len in [64, 1000, 1514] {
        let f = threaded::Guest::frame(mac(3), mac(2), len, len as u32);
        send(&mut s, &f);
        assert_eq!(recv(&mut r).0, f, "{len} bytes after the headroom");
    }
    assert_eq!(r.stats().rx_xdp, 3);
    r.set_xdp_headroom(0).unwrap();
    let f = threaded::Guest::frame(mac(3), mac(2), 500, 9);
    send(&mut s, &f);
    assert_eq!(recv(&mut r).0, f);
    assert_eq!(r.stats().rx_xdp, 3, "no headroom, no XDP extra");
    r.close().unwrap();
    s.close().unwrap();
}
