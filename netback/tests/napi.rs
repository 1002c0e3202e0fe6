//! Per-queue NAPI on the tx side: a guest whose tx ring stays idle past `busy_poll` has the
//! ring armed (`req_event` set, the final check done) and passes skip it; its next request is
//! served as soon as its notification is collected, which a backend that never gets to wait
//! (it always has work) does before each pass. The backend here is driven by hand, pass by
//! pass, and never waits.

use std::time::{Duration, Instant};

use hypervisor::VifConfig;
use netback::{Config, VifId};
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

fn attach(s: &mut Scene, n: u8) -> RawFront {
    let f = s.guest(Guest::mac(n));
    let mut c = VifConfig::new(&mac_string(testkit::mac(n)));
    c.script = Some("vif-splitnet".into());
    let p = f.add_vif(&s.xen, &c);
    settle(s);
    f.publish(&p);
    settle(s);
    f
}

fn armed(s: &Scene, id: VifId) -> bool {
    let d = s.nb.vif_dump(id).expect("connected");
    d.queues.iter().all(|q| q.tx_armed)
}

#[test]
fn an_idle_ring_is_armed_skipped_and_served_once_its_guest_notifies() {
    let cfg = Config::default();
    let idle = cfg.busy_poll;
    let mut s = Scene::new(cfg);
    let mut a = attach(&mut s, 1);
    let mut b = attach(&mut s, 2);
    b.post_rx(16);
    settle(&mut s);
    // A frame from A: A's ring worked, so it is not armed yet.
    let t0 = Instant::now() + Duration::from_millis(1);
    a.send(&testkit::frame(1, 2, 100, 0));
    s.nb.poll_at(t0).unwrap();
    assert!(!armed(&s, a.id()), "a ring that just worked is not armed");
    assert_eq!(b.recv().len(), 1);
    // Idle for longer than busy_poll: the next pass arms it.
    let t1 = t0 + idle + Duration::from_micros(1);
    s.nb.poll_at(t1).unwrap();
    assert!(armed(&s, a.id()), "{:?}", s.nb.vif_dump(a.id()));
    // Requests pushed into an armed ring notify (req_event asked for them); the backend never
    // waits here, only passes: the notification must still be collected.
    for seq in 1..=3u32 {
        a.send(&testkit::frame(1, 2, 200, seq));
        let mut t = t1 + Duration::from_millis(u64::from(seq));
        let mut got = Vec::new();
        for _ in 0..4 {
            s.nb.poll_at(t).unwrap();
            got.extend(b.recv());
            t += Duration::from_micros(1);
        }
        assert_eq!(
            got.len(),
            1,
            "frame {seq} from an armed ring was not served"
        );
        assert_eq!(
            got[0].as_deref().unwrap(),
            &testkit::frame(1, 2, 200, seq)[..]
        );
        // Idle again past busy_poll: armed again.
        s.nb.poll_at(t + idle + Duration::from_micros(1)).unwrap();
        assert!(armed(&s, a.id()));
    }
    let st = s.nb.vif_stats(a.id()).unwrap();
    assert_eq!(st.tx_packets, 4, "{st:?}");
}
