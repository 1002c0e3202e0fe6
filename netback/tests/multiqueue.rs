//! Multi-queue and split event channels through xenbus, as Linux 6.1's netback and netfront
//! lay them out: the backend offers `multi-queue-max-queues` and
//! `feature-split-event-channels`; a frontend asking for several queues writes
//! `multi-queue-num-queues` and each queue's rings and ports under `queue-N/`, with
//! `event-channel-tx`/`-rx` when split. Flows spread over the queues by hash both ways and stay
//! in order within a flow.

mod threaded;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use netback::{Config, Netback, VifId};
use netfront::{FrontConfig, Netfront};
use smoltcp::phy::{Device, RxToken, TxToken};
use threaded::{Backend, GUARD, guest, mac, node, vif};
use xen_model::{DomainHandle, Hypervisor};

/// A machine whose backend offers `max_queues` queues.
fn machine(max_queues: u32) -> (Hypervisor, Backend) {
    let xen = Hypervisor::new(64 * 1024).expect("machine");
    let dom0 = xen.create_domain(8192).expect("dom0");
    let cfg = Config {
        max_queues,
        ..Config::default()
    };
    (xen, Backend::start_with(dom0, cfg))
}

/// A netfront asking for `queues` queues, split or not.
fn connect(dom: &DomainHandle, queues: u32, split: bool) -> Netfront<DomainHandle> {
    let cfg = FrontConfig {
        rx_buffers: 64,
        rx_refill_batch: 16,
        tx_pages: 64,
        timeout: GUARD,
        max_queues: queues,
        split_event_channels: split,
        // The frames are sent as built, checksum field included (no stack fills it in).
        csum_offload: false,
        ..FrontConfig::default()
    };
    Netfront::connect(dom.clone(), 0, cfg).expect("netfront connects")
}

/// A UDP/IPv4 frame of flow `flow` (its source port), numbered `seq` within the flow.
fn udp(src: [u8; 6], dst: [u8; 6], flow: u16, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + 64) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let sum = offload::csum::Checksum::new().add(&f[14..34]).finish();
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f[34..36].copy_from_slice(&flow.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[38..40].copy_from_slice(&((8 + 64) as u16).to_be_bytes());
    f[42..46].copy_from_slice(&seq.to_be_bytes());
    f
}

fn send(nf: &mut Netfront<DomainHandle>, frame: &[u8]) {
    let start = Instant::now();
    loop {
        if let Some(tok) = nf.transmit(smoltcp::time::Instant::ZERO) {
            tok.consume(frame.len(), |b| b.copy_from_slice(frame));
            return;
        }
        assert!(start.elapsed() < GUARD, "no tx room");
        nf.poll().expect("poll");
        nf.wait(Some(Duration::from_millis(5))).expect("wait");
    }
}

/// Sends `per_flow` frames of each of `flows` flows from `a` to `b` (interleaved) and checks
/// every frame arrives byte-exact and in order within its flow.
fn flows(
    a: &mut Netfront<DomainHandle>,
    b: &mut Netfront<DomainHandle>,
    (ma, mb): ([u8; 6], [u8; 6]),
    flows: u16,
    per_flow: u32,
) {
    let mut want: HashMap<u16, Vec<Vec<u8>>> = HashMap::new();
    for seq in 0..per_flow {
        for flow in 0..flows {
            let f = udp(ma, mb, 40000 + flow, seq);
            send(a, &f);
            want.entry(40000 + flow).or_default().push(f);
        }
    }
    let total = usize::from(flows) * per_flow as usize;
    let mut got: HashMap<u16, Vec<Vec<u8>>> = HashMap::new();
    let start = Instant::now();
    let mut n = 0;
    while n < total {
        a.poll().expect("sender poll");
        b.poll().expect("receiver poll");
        while let Some((rx, _)) = b.receive(smoltcp::time::Instant::ZERO) {
            let f = rx.consume(|x| x.to_vec());
            let flow = u16::from_be_bytes([f[34], f[35]]);
            got.entry(flow).or_default().push(f);
            n += 1;
        }
        assert!(start.elapsed() < GUARD, "{n} of {total} frames arrived");
        b.wait(Some(Duration::from_millis(2))).expect("wait");
    }
    for (flow, frames) in &want {
        let g = got.get(flow).map_or(&[][..], Vec::as_slice);
        assert!(
            g == frames.as_slice(),
            "flow {flow}: {} of {} frames arrived, not all whole and in order",
            g.len(),
            frames.len()
        );
    }
}

#[test]
fn queues_and_split_event_channels_are_negotiated_as_linux_lays_them_out() {
    let (xen, be) = machine(4);
    let (da, pa) = guest(&xen, 1, 0, mac(2));
    let (db, pb) = guest(&xen, 2, 0, mac(3));
    let mut a = connect(&da, 4, true);
    let mut b = connect(&db, 2, false);
    assert_eq!(
        node(&xen, &format!("{}/multi-queue-max-queues", pa.backend)),
        "4"
    );
    assert_eq!(
        node(
            &xen,
            &format!("{}/feature-split-event-channels", pa.backend)
        ),
        "1"
    );
    // a: four queues, split; b: two queues, one port each.
    assert_eq!((a.num_queues(), a.split_event_channels()), (4, true));
    assert_eq!((b.num_queues(), b.split_event_channels()), (2, false));
    assert_eq!(
        node(&xen, &format!("{}/multi-queue-num-queues", pa.frontend)),
        "4"
    );
    for n in 0..4 {
        let q = format!("{}/queue-{n}", pa.frontend);
        for key in [
            "tx-ring-ref",
            "rx-ring-ref",
            "event-channel-tx",
            "event-channel-rx",
        ] {
            assert!(!node(&xen, &format!("{q}/{key}")).is_empty(), "{q}/{key}");
        }
        assert!(node(&xen, &format!("{q}/event-channel")).is_empty());
    }
    assert!(
        node(&xen, &format!("{}/tx-ring-ref", pa.frontend)).is_empty(),
        "no flat keys"
    );
    assert!(!node(&xen, &format!("{}/queue-1/event-channel", pb.frontend)).is_empty());
    let (qa, qb, ports_a) = be.run(|nb: &mut Netback<DomainHandle>| {
        let q = |id: VifId| nb.vifs().find(|v| v.id() == id).map(|v| v.num_queues());
        let ports = nb
            .vifs()
            .find(|v| v.id() == vif(1, 0))
            .map(|v| v.ports().len());
        (q(vif(1, 0)), q(vif(2, 0)), ports)
    });
    assert_eq!((qa, qb, ports_a), (Some(4), Some(2), Some(8)));
    // Traffic both ways, spread over every queue.
    flows(&mut a, &mut b, (mac(2), mac(3)), 16, 20);
    flows(&mut b, &mut a, (mac(3), mac(2)), 16, 20);
    let per_queue = be.run(|nb: &mut Netback<DomainHandle>| {
        let v = nb.vifs().find(|v| v.id() == vif(1, 0)).unwrap();
        v.queue_stats()
            .iter()
            .map(|s| (s.tx_packets, s.rx_packets))
            .collect::<Vec<_>>()
    });
    assert!(
        per_queue.iter().all(|&(tx, rx)| tx > 0 && rx > 0),
        "16 flows leave and arrive on all 4 queues: {per_queue:?}"
    );
    a.close().unwrap();
    b.close().unwrap();
}

#[test]
fn more_queues_than_offered_is_refused_and_one_queue_keeps_its_keys_flat() {
    let (xen, _be) = machine(2);
    let (da, pa) = guest(&xen, 1, 0, mac(2));
    // netfront asks for at most what is offered: one queue asked, flat keys.
    let a = connect(&da, 1, true);
    assert_eq!(a.num_queues(), 1);
    assert!(!node(&xen, &format!("{}/tx-ring-ref", pa.frontend)).is_empty());
    assert!(!node(&xen, &format!("{}/event-channel-rx", pa.frontend)).is_empty());
    a.close().unwrap();
    // A frontend writing more than the maximum is refused (Linux's "guest requested %u queues,
    // exceeding the maximum of %u").
    let (db, pb) = guest(&xen, 2, 0, mac(3));
    let xs = db.xenstore();
    threaded::wait_node(&xen, &format!("{}/state", pb.backend), "2");
    xs.write(&format!("{}/multi-queue-num-queues", pb.frontend), "3")
        .unwrap();
    xs.write(&format!("{}/state", pb.frontend), "4").unwrap();
    threaded::wait_node(&xen, &format!("{}/state", pb.backend), "6");
    let err = node(&xen, &format!("{}/error", pb.backend));
    assert!(err.contains("multi-queue-num-queues 3"), "{err}");
}
