//! The read-only view operators' tools get (`device_list`, `vif_dump`), and the two operator
//! actions: closing one device, and the default rate of vifs without a `rate` key.

use hypervisor::{VifConfig, VifPaths, XenbusState};
use netback::{Config, Rate, VifId, VifMode};
use testkit::{Guest, RawFront, Scene, mac_string};

#[track_caller]
fn settle(s: &mut Scene) {
    for _ in 0..64 {
        if !s.nb.poll().expect("netback polls") {
            return;
        }
    }
    panic!("the backend never settled");
}

#[track_caller]
fn attach(s: &mut Scene, g: Guest, cfg: &VifConfig) -> (RawFront, VifPaths) {
    let f = s.guest(g);
    let p = f.add_vif(&s.xen, cfg);
    settle(s);
    f.publish(&p);
    settle(s);
    (f, p)
}

fn builtin(mac: u8, rate: Option<&str>) -> VifConfig {
    let mut c = VifConfig::new(&mac_string(testkit::mac(mac)));
    c.script = Some("vif-splitnet".into());
    c.rate = rate.map(str::to_string);
    c
}

#[test]
fn the_list_and_a_dump_show_the_vif_as_it_is_served() {
    let mut s = Scene::new(Config::default());
    let (mut a, _pa) = attach(&mut s, Guest::mac(1), &builtin(1, Some("125000,50000")));
    let id = a.id();
    let list = s.nb.device_list();
    assert_eq!(list.len(), 1, "{list:?}");
    let d = &list[0];
    assert_eq!(d.id, id);
    assert_eq!(d.state, Some(XenbusState::Connected));
    assert_eq!(d.mode, VifMode::Builtin);
    assert_eq!(d.switch, "xenbr0");
    assert_eq!(d.mac.as_deref(), Some(mac_string(testkit::mac(1)).as_str()));
    assert!(d.connected && d.disabled.is_none());
    let r = d.rate.expect("its rate key");
    assert_eq!((r.bytes, r.usecs), (125_000, 50_000));
    assert!(!d.rate_is_default);

    // Requests pushed and not yet taken show as pending on the tx ring.
    let before = s.nb.vif_dump(id).expect("connected");
    assert_eq!(before.queues[0].tx.pending_requests, 0);
    a.post_rx(8);
    let dump = s.nb.vif_dump(id).unwrap();
    assert_eq!(
        dump.queues[0].rx.req_prod,
        before.queues[0].rx.req_prod + 8,
        "{dump:?}"
    );
    assert_eq!(
        dump.queues[0].rx.pending_requests,
        before.queues[0].rx.pending_requests + 8
    );
    // Buffers wait on the rx ring until a frame comes for them.
    settle(&mut s);
    assert_eq!(s.nb.vif_dump(id).unwrap().queues[0].rx.pending_requests, 8);
    // A frame sent shows as a pending tx request until a pass takes and answers it.
    a.send(&testkit::broadcast(1, 60, 0));
    let dump = s.nb.vif_dump(id).unwrap();
    assert_eq!(dump.queues[0].tx.pending_requests, 1, "{dump:?}");
    settle(&mut s);
    let dump = s.nb.vif_dump(id).unwrap();
    assert_eq!(dump.queues[0].tx.pending_requests, 0, "{dump:?}");
    assert_eq!(
        dump.queues[0].tx.rsp_prod, dump.queues[0].tx.req_prod,
        "answered: {dump:?}"
    );
    assert_eq!(dump.queues[0].tx.in_flight, 0);
    assert_eq!(dump.queues[0].tx.size, 256);
    assert!(s.nb.vif_dump(VifId { domid: 9, devid: 0 }).is_none());
}

#[test]
fn closing_one_device_leaves_the_others_and_it_may_start_over() {
    let mut s = Scene::new(Config::default());
    let (a, pa) = attach(&mut s, Guest::mac(1), &builtin(1, None));
    let (b, pb) = attach(&mut s, Guest::mac(2), &builtin(2, None));
    assert!(s.nb.close_device(a.id()));
    settle(&mut s);
    assert_eq!(a.backend_node(&pa, "state").as_deref(), Some("6"));
    assert_eq!(b.backend_node(&pb, "state").as_deref(), Some("4"));
    let list = s.nb.device_list();
    let da = list.iter().find(|d| d.id == a.id()).unwrap();
    assert_eq!(da.state, Some(XenbusState::Closed));
    assert!(!da.connected);
    assert!(!s.nb.close_device(VifId { domid: 9, devid: 0 }));
}

#[test]
fn the_default_rate_applies_to_vifs_without_their_own_live() {
    let mut s = Scene::new(Config::default());
    let (a, _) = attach(&mut s, Guest::mac(1), &builtin(1, None));
    let (b, _) = attach(&mut s, Guest::mac(2), &builtin(2, Some("1000,1000")));
    let rate = |s: &Scene, id: VifId| {
        let l = s.nb.device_list();
        let d = l.iter().find(|d| d.id == id).unwrap().clone();
        (d.rate.map(|r| r.bytes), d.rate_is_default)
    };
    assert_eq!(rate(&s, a.id()), (None, false));
    let r = Rate::parse("5000,10000").unwrap();
    s.nb.set_default_rate(r);
    assert_eq!(s.nb.default_rate(), r);
    assert_eq!(rate(&s, a.id()), (Some(5000), true));
    assert_eq!(rate(&s, b.id()), (Some(1000), false), "its own key wins");
    let served = s.nb.vifs().find(|v| v.id() == a.id()).unwrap().rate();
    assert_eq!(served, r, "in force on the connected vif");
    s.nb.set_default_rate(None);
    assert_eq!(rate(&s, a.id()), (None, false));
}
