//! Dynamic multicast control as Linux 6.1's netback does it (`xenvif_mcast_add/del/match`,
//! `feature-dynamic-multicast-control`): a vif that asked for it (`request-multicast-control`)
//! gets the multicast groups it subscribed to with MCAST_ADD requests and no others, broadcast
//! and unicast always; a vif that never asked gets every multicast frame the switch floods; the
//! list holds 64 addresses; the key is followed while connected; a backend that takes a vif
//! over from a previous instance (which kept the list) lets every group through.

use hypervisor::{VifConfig, VifPaths};
use netback::{Config, MCAST_MAX, Netback};
use netif_ring::netif::{
    ExtraInfo, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_EXTRA_INFO,
    NETTXF_MORE_DATA, TxRequest, XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
};
use testkit::{Guest, RawFront, Scene, frame, mac_string};

const G: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
const H: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
const BROADCAST: [u8; 6] = [0xff; 6];

/// A frame from MAC number `src` to `dst`, tagged `seq`.
fn to(dst: [u8; 6], src: u8, seq: u8) -> Vec<u8> {
    let mut f = frame(src, 2, 100, u32::from(seq));
    f[..6].copy_from_slice(&dst);
    f
}

/// (id, status) of each tx response since the last call.
fn responses(f: &mut RawFront) -> Vec<(u16, i16)> {
    f.tx_responses.clear();
    f.reap_tx();
    f.tx_responses.iter().map(|r| (r.id, r.status)).collect()
}

fn multicast(s: &Scene, f: &RawFront) -> (bool, Vec<[u8; 6]>) {
    let id = f.id();
    s.nb.vifs().find(|v| v.id() == id).unwrap().multicast()
}

#[test]
fn a_vif_that_asked_gets_its_groups_not_others_broadcast_always() {
    let mut s = Scene::new(Config::default());
    let mut a = s.front(Guest::mac(1));
    let mut sub = s.guest(Guest::mac(2));
    sub.keys.multicast_control = true;
    sub.connect(&mut s.nb);
    let mut never = s.front(Guest::mac(3));
    sub.post_rx(32);
    never.post_rx(32);
    // sub announces itself, so frames to it are unicast.
    sub.send(&frame(2, 1, 60, 0));
    a.post_rx(8);
    s.nb.poll().unwrap();
    assert_eq!(a.recv().len(), 1);
    never.recv();

    let id = sub.send_mcast(true, G);
    s.nb.poll().unwrap();
    let r = responses(&mut sub);
    assert_eq!(
        r[r.len() - 2..],
        [(id, NETIF_RSP_OKAY), (r[r.len() - 1].0, NETIF_RSP_NULL)]
    );
    assert_eq!(multicast(&s, &sub), (true, vec![G]));

    let (g, h, b, u) = (
        to(G, 1, 1),
        to(H, 1, 2),
        to(BROADCAST, 1, 3),
        frame(1, 2, 100, 4),
    );
    for f in [&g, &h, &b, &u] {
        a.send(f);
    }
    s.nb.poll().unwrap();
    assert_eq!(sub.recv(), [Ok(g.clone()), Ok(b.clone()), Ok(u)]);
    assert_eq!(
        never.recv(),
        [Ok(g.clone()), Ok(h.clone()), Ok(b.clone())],
        "a vif that never asked gets every multicast frame, as before"
    );
    assert_eq!(s.nb.vif_stats(sub.id()).unwrap().rx_mcast_filtered, 1);
    assert_eq!(s.nb.vif_stats(never.id()).unwrap().rx_mcast_filtered, 0);

    // Unsubscribed: G is kept from it too.
    sub.send_mcast(false, G);
    s.nb.poll().unwrap();
    assert_eq!(multicast(&s, &sub), (true, vec![]));
    a.send(&g);
    a.send(&b);
    s.nb.poll().unwrap();
    assert_eq!(sub.recv(), [Ok(b)]);
    assert_eq!(s.nb.vif_stats(sub.id()).unwrap().rx_mcast_filtered, 2);
    let st = s.nb.vif_stats(sub.id()).unwrap();
    assert_eq!((st.tx_mcast_requests, st.tx_packets), (2, 1));
}

#[test]
fn a_request_with_no_data_is_taken_before_any_packet_check_as_linux() {
    // Windows' xenvif sends multicast control with size 0 and gref 0. Linux answers it right
    // after its extras, before the packet checks, and reads no more_data chain: a slot after
    // it is the next packet.
    let mut s = Scene::new(Config::default());
    let mut a = s.front(Guest::mac(1));
    let mut b = s.front(Guest::mac(2));
    b.post_rx(8);
    let data = frame(1, 2, 300, 7);
    let gref = a.tx_page(0, &data);
    a.tx.put_request(TxRequest {
        gref: 0,
        offset: 0,
        flags: NETTXF_EXTRA_INFO | NETTXF_MORE_DATA,
        id: 11,
        size: 0,
    })
    .unwrap();
    a.tx.put_request_as(ExtraInfo {
        type_: XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
        flags: 0,
        u: G,
    })
    .unwrap();
    a.tx.put_request(TxRequest {
        gref: gref.0,
        offset: 0,
        flags: 0,
        id: 12,
        size: data.len() as u16,
    })
    .unwrap();
    a.push_tx();
    s.nb.poll().unwrap();
    let r = responses(&mut a);
    assert_eq!(r.len(), 3);
    assert_eq!(
        (r[0], r[1].1, r[2]),
        ((11, NETIF_RSP_OKAY), NETIF_RSP_NULL, (12, NETIF_RSP_OKAY))
    );
    assert_eq!(b.recv(), [Ok(data)]);
    let st = s.nb.vif_stats(a.id()).unwrap();
    assert_eq!((st.tx_mcast_requests, st.tx_runt, st.tx_packets), (1, 0, 1));
    assert!(st.fatal.is_none());
    assert_eq!(multicast(&s, &a).1, vec![G]);
}

#[test]
fn the_list_holds_64_the_next_add_is_refused_and_a_remove_makes_room() {
    let mut s = Scene::new(Config::default());
    let mut a = s.front(Guest::mac(1));
    for i in 0..MCAST_MAX as u8 {
        a.send_mcast(true, [0x01, 0, 0x5e, 0, 1, i]);
    }
    s.nb.poll().unwrap();
    assert!(
        responses(&mut a)
            .chunks(2)
            .all(|p| p[0].1 == NETIF_RSP_OKAY)
    );
    let id = a.send_mcast(true, G);
    s.nb.poll().unwrap();
    assert_eq!(
        responses(&mut a)[0],
        (id, NETIF_RSP_ERROR),
        "the 65th is refused"
    );
    assert_eq!(s.nb.vif_stats(a.id()).unwrap().tx_mcast_errors, 1);
    assert!(!multicast(&s, &a).1.contains(&G));
    a.send_mcast(false, [0x01, 0, 0x5e, 0, 1, 0]);
    let id = a.send_mcast(true, G);
    s.nb.poll().unwrap();
    assert_eq!(responses(&mut a)[2], (id, NETIF_RSP_OKAY));
    let (_, groups) = multicast(&s, &a);
    assert_eq!(groups.len(), MCAST_MAX);
    assert!(groups.contains(&G));
}

/// Passes until one finds nothing to do.
#[track_caller]
fn settle(s: &mut Scene) {
    for _ in 0..64 {
        if !s.nb.poll().unwrap() {
            return;
        }
    }
    panic!("the backend never settled");
}

/// A guest connected through xenbus.
#[track_caller]
fn attach(s: &mut Scene, g: Guest) -> (RawFront, VifPaths) {
    let f = s.guest(g);
    let p = f.add_vif(&s.xen, &VifConfig::new(&mac_string(testkit::mac(g.mac))));
    settle(s);
    f.publish(&p);
    settle(s);
    assert_eq!(f.backend_node(&p, "state").as_deref(), Some("4"));
    (f, p)
}

#[test]
fn request_multicast_control_is_followed_while_connected() {
    let mut s = Scene::new(Config::default());
    let (mut a, _) = attach(&mut s, Guest::mac(1));
    let (mut r, pr) = attach(&mut s, Guest::mac(2));
    r.post_rx(16);
    r.send_mcast(true, G);
    settle(&mut s);
    assert_eq!(
        multicast(&s, &r),
        (false, vec![G]),
        "the list is kept, not applied"
    );
    let xs = r.dom.xenstore();
    let key = format!("{}/request-multicast-control", pr.frontend);
    for (value, on) in [("1", true), ("0", false), ("1", true)] {
        xs.write(&key, value).unwrap();
        settle(&mut s);
        assert_eq!(multicast(&s, &r).0, on, "request-multicast-control={value}");
        a.send(&to(H, 1, 9));
        a.send(&to(G, 1, 9));
        settle(&mut s);
        assert_eq!(r.recv().len(), if on { 1 } else { 2 });
    }
}

#[test]
fn a_backend_taking_a_vif_over_lets_every_group_through() {
    let mut s = Scene::new(Config::default());
    let (mut a, _) = attach(&mut s, Guest::mac(1));
    let mut r = s.guest(Guest::mac(2));
    r.keys.multicast_control = true;
    let pr = r.add_vif(&s.xen, &VifConfig::new(&mac_string(testkit::mac(2))));
    settle(&mut s);
    r.publish(&pr);
    settle(&mut s);
    r.send_mcast(true, G);
    settle(&mut s);
    assert_eq!(multicast(&s, &r), (true, vec![G]));
    // A restart: the list lived in the old instance.
    let fresh = Netback::new(s.dom0.clone(), Config::default(), testkit::POOL_PAGES).unwrap();
    drop(std::mem::replace(&mut s.nb, fresh));
    settle(&mut s);
    assert_eq!(
        multicast(&s, &r),
        (false, vec![]),
        "filtering off rather than groups lost"
    );
    r.post_rx(8);
    a.send(&to(H, 1, 1));
    settle(&mut s);
    assert_eq!(r.recv().len(), 1);
}
