//! AF_PACKET sockets on a veth pair inside a namespace of the test's own.

mod common;

use common::{eventually, root_netns};
use hostnet::netns::Netns;
use hostnet::{PacketSocket, RecvBatch};

/// IEEE 802 local experimental EtherType: nothing in the kernel answers it.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
/// `PACKET_OTHERHOST`: a unicast frame for a MAC that is not the interface's.
const PACKET_OTHERHOST: u8 = 3;
const GUEST_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x01];
const REMOTE_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x07, 0x09];

/// A frame from `src` to `dst`, `len` bytes, its payload numbered `n` and patterned so that a
/// byte out of place shows.
fn frame(dst: [u8; 6], src: [u8; 6], n: u8, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.extend((0..len - 14).map(|i| n.wrapping_mul(31).wrapping_add(i as u8)));
    f
}

/// A namespace with veth pair va/vb up, IPv6 off so no frame but ours crosses, and a socket on
/// each end.
fn veth_pair(test: &str) -> (Netns, PacketSocket, PacketSocket) {
    let ns = root_netns(test);
    // /proc/sys/net is the namespace's own for a thread inside it.
    ns.run(|| {
        for conf in ["all", "default"] {
            let knob = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            std::fs::write(&knob, "1").unwrap_or_else(|e| panic!("{knob}: {e}"));
        }
    })
    .unwrap();
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"])
        .unwrap();
    ns.ip(&["link", "set", "va", "up"]).unwrap();
    ns.ip(&["link", "set", "vb", "up"]).unwrap();
    let addrs = ns.ip(&["addr", "show", "va"]).unwrap();
    assert!(!addrs.contains("inet6"), "IPv6 still on: {addrs}");
    let (a, b) = ns
        .run(|| {
            (
                PacketSocket::bind("va").unwrap(),
                PacketSocket::bind("vb").unwrap(),
            )
        })
        .unwrap();
    (ns, a, b)
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn packet_socket_batches_both_ways_and_sees_only_arriving_frames() {
    let (ns, a, b) = veth_pair("packet_socket_batches_both_ways_and_sees_only_arriving_frames");
    assert_eq!(a.name(), "va");
    // Promiscuous, so a NIC hands up frames for the guests' MACs.
    let details = ns.ip(&["-d", "link", "show", "va"]).unwrap();
    assert!(details.contains("promiscuity 1"), "{details}");

    // Frames into the far end arrive at `a` together, byte-exact, in order.
    let inbound: Vec<Vec<u8>> = (0..16u8)
        .map(|n| frame(GUEST_MAC, REMOTE_MAC, n, 60 + usize::from(n) * 90))
        .collect();
    let refs: Vec<&[u8]> = inbound.iter().map(Vec::as_slice).collect();
    assert_eq!(b.send_batch(&refs).unwrap(), inbound.len());
    assert!(
        eventually(|| a.stats().unwrap().packets >= inbound.len() as u64),
        "only {:?} reached va",
        a.stats()
    );
    let mut batch = RecvBatch::new(32, 2048);
    assert_eq!(
        a.recv_batch(&mut batch).unwrap(),
        inbound.len(),
        "all queued frames in one call"
    );
    for (got, sent) in batch.iter().zip(&inbound) {
        assert_eq!(got.data, sent.as_slice());
        assert_eq!(got.len, sent.len());
        assert!(!got.truncated);
        assert_eq!(got.pkttype, PACKET_OTHERHOST);
    }
    assert_eq!(
        a.recv_batch(&mut batch).unwrap(),
        0,
        "nothing else was waiting"
    );
    assert!(batch.is_empty());

    // Frames from `a` (a batch and a single one) go out of va and arrive at vb.
    let outbound: Vec<Vec<u8>> = (0..5u8)
        .map(|n| frame(REMOTE_MAC, GUEST_MAC, 100 + n, 1514 - usize::from(n)))
        .collect();
    let refs: Vec<&[u8]> = outbound.iter().map(Vec::as_slice).collect();
    assert_eq!(a.send_batch(&refs[..4]).unwrap(), 4);
    assert_eq!(a.send(refs[4]).unwrap(), outbound[4].len());
    let mut got = Vec::new();
    assert!(
        eventually(|| {
            b.recv_batch(&mut batch).unwrap();
            got.extend(batch.iter().map(|f| f.data.to_vec()));
            got.len() >= outbound.len()
        }),
        "vb received {} of {} frames",
        got.len(),
        outbound.len()
    );
    // Exactly ours: `b` saw none of its own 16 transmits either.
    assert_eq!(got, outbound);

    // `a` sees neither its own transmits nor them arriving at vb (it is bound to va only).
    // Had they been queued to it, that happened before vb received them.
    assert_eq!(a.recv_batch(&mut batch).unwrap(), 0);

    // Nor frames that others send out of va (the host's stack, other sockets): Linux never
    // loops a socket's own frames back, but shows everyone else's outgoing frames to every
    // ETH_P_ALL socket unless PACKET_IGNORE_OUTGOING is set. A second socket on va sends.
    let other = ns.run(|| PacketSocket::bind("va").unwrap()).unwrap();
    let by_other = frame(REMOTE_MAC, GUEST_MAC, 200, 300);
    assert_eq!(other.send(&by_other).unwrap(), by_other.len());
    got.clear();
    assert!(eventually(|| {
        b.recv_batch(&mut batch).unwrap();
        got.extend(batch.iter().map(|f| f.data.to_vec()));
        !got.is_empty()
    }));
    assert_eq!(got, [by_other]);
    assert_eq!(
        a.recv_batch(&mut batch).unwrap(),
        0,
        "another sender's frame came up on va"
    );
    let stats = a.stats().unwrap();
    assert_eq!(stats.packets, inbound.len() as u64, "{stats:?}");
    assert_eq!(stats.drops, 0);
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and iproute2: run as root with --ignored (CI does)"]
fn packet_socket_reports_truncated_frames() {
    let (_ns, a, b) = veth_pair("packet_socket_reports_truncated_frames");
    let long = frame(GUEST_MAC, REMOTE_MAC, 1, 1000);
    let short = frame(GUEST_MAC, REMOTE_MAC, 2, 100);
    assert_eq!(b.send_batch(&[&long, &short]).unwrap(), 2);
    assert!(eventually(|| a.stats().unwrap().packets >= 2));

    let mut batch = RecvBatch::new(4, 128);
    assert_eq!(a.recv_batch(&mut batch).unwrap(), 2);
    let cut = batch.get(0).unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.len, 1000, "the full length is kept");
    assert_eq!(cut.data, &long[..128]);
    let whole = batch.get(1).unwrap();
    assert!(!whole.truncated);
    assert_eq!(whole.data, short.as_slice());
    assert!(batch.get(2).is_none());
}
