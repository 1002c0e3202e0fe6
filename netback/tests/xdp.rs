//! XDP headroom as Linux 6.1's netback gives it (`feature-xdp-headroom`, `xdp-headroom`,
//! `read_xenbus_frontend_xdp`, `xenvif_rx_data_slot`): the frontend writes `xdp-headroom` and
//! goes Reconfiguring (7), the backend answers Reconfigured (8); from then on every rx data slot
//! starts that many bytes into its buffer, and each frame carries an XDP extra with the
//! headroom. The value is clamped to `XEN_NETIF_MAX_XDP_HEADROOM`; a frame that cannot fit the
//! buffers the headroom leaves is dropped and counted.

use hypervisor::{VifConfig, VifPaths, XenbusState};
use netback::{Config, RxMode};
use netif_ring::netif::{
    ExtraRepr, NETRXF_EXTRA_INFO, XEN_NETIF_EXTRA_TYPE_XDP, XEN_NETIF_MAX_XDP_HEADROOM,
};
use testkit::{Guest, RawFront, Scene, frame, mac_string};

#[track_caller]
fn settle(s: &mut Scene) {
    for _ in 0..64 {
        if !s.nb.poll().unwrap() {
            return;
        }
    }
    panic!("the backend never settled");
}

/// A sender `a` and a receiver `r` whose keys say `headroom`, connected directly.
fn pair(headroom: u16, mode: RxMode) -> (Scene, RawFront, RawFront) {
    let mut s = Scene::new(Config::default());
    let a = s.front(Guest::mac(1));
    let mut r = s.guest(Guest {
        mode,
        ..Guest::mac(2)
    });
    r.keys.xdp_headroom = headroom;
    r.connect(&mut s.nb);
    (s, a, r)
}

fn xdp_extra(e: &[u8; 8]) -> Option<u16> {
    match ExtraRepr::parse(&netif_ring::netif::ExtraInfo {
        type_: e[0],
        flags: e[1],
        u: [e[2], e[3], e[4], e[5], e[6], e[7]],
    }) {
        Ok(ExtraRepr::Xdp { headroom }) => Some(headroom),
        _ => None,
    }
}

#[test]
fn rx_data_starts_at_the_headroom_in_every_buffer() {
    let (mut s, mut a, mut r) = pair(256, RxMode::Copy);
    r.post_rx(64);
    let small = frame(1, 2, 1000, 1);
    // 9000 bytes: 3 buffers of 3840 bytes each at most.
    let jumbo = frame(1, 2, 9000, 2);
    // Exactly what one buffer holds past the headroom, and one byte more.
    let full = frame(1, 2, 4096 - 256, 3);
    let over = frame(1, 2, 4096 - 256 + 1, 4);
    for f in [&small, &jumbo, &full, &over] {
        a.send(f);
    }
    s.nb.poll().unwrap();
    let got = r.recv_meta();
    assert_eq!(got.len(), 4);
    for (g, (want, slots)) in got
        .iter()
        .zip([(&small, 1), (&jumbo, 3), (&full, 1), (&over, 2)])
    {
        assert_eq!(&g.data, want, "byte-exact");
        assert_eq!(g.slots, slots, "{} bytes", want.len());
        assert!(g.offsets.iter().all(|o| *o == 256), "{:?}", g.offsets);
        assert!(g.first_flags & NETRXF_EXTRA_INFO != 0);
        assert_eq!(g.extras.len(), 1);
        assert_eq!(g.extras[0][0], XEN_NETIF_EXTRA_TYPE_XDP);
        assert_eq!(xdp_extra(&g.extras[0]), Some(256));
    }
    assert_eq!(
        s.nb.vifs()
            .find(|v| v.id() == r.id())
            .unwrap()
            .xdp_headroom(),
        256
    );
}

#[test]
fn no_headroom_no_offset_no_extra() {
    let (mut s, mut a, mut r) = pair(0, RxMode::Copy);
    r.post_rx(8);
    let f = frame(1, 2, 5000, 1);
    a.send(&f);
    s.nb.poll().unwrap();
    let got = r.recv_meta();
    assert_eq!(got[0].data, f);
    assert_eq!(
        (got[0].offsets.clone(), got[0].extras.len()),
        (vec![0, 0], 0)
    );
}

#[test]
fn headroom_is_clamped_as_linux_and_frames_that_cannot_fit_are_dropped() {
    // More than the maximum is clamped to it; nothing fits a page then.
    let (mut s, mut a, mut r) = pair(u16::MAX, RxMode::Copy);
    assert_eq!(
        s.nb.vifs()
            .find(|v| v.id() == r.id())
            .unwrap()
            .xdp_headroom(),
        XEN_NETIF_MAX_XDP_HEADROOM
    );
    r.post_rx(32);
    a.send(&frame(1, 2, 100, 1));
    s.nb.poll().unwrap();
    assert!(r.recv().is_empty());
    assert_eq!(s.nb.vif_stats(r.id()).unwrap().rx_unfit, 1);

    // A large headroom leaves little room: a frame needing more than 18 buffers (Linux
    // netfront's most) is dropped, one needing fewer is delivered.
    let (mut s, mut a, mut r) = pair(4000, RxMode::Copy);
    r.post_rx(64);
    let fits = frame(1, 2, 18 * 96, 1);
    a.send(&fits);
    a.send(&frame(1, 2, 18 * 96 + 1, 2));
    s.nb.poll().unwrap();
    let got = r.recv_meta();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].data.clone(), got[0].slots), (fits, 18));
    assert_eq!(s.nb.vif_stats(r.id()).unwrap().rx_unfit, 1);

    // A frontend without feature-sg takes one buffer a frame: with a headroom, less than a page.
    let mut s = Scene::new(Config::default());
    let mut a = s.front(Guest::mac(1));
    let mut r = s.guest(Guest::mac(2));
    r.keys.offload.sg = false;
    r.keys.xdp_headroom = 256;
    r.connect(&mut s.nb);
    r.post_rx(8);
    let fits = frame(1, 2, 4096 - 256, 1);
    a.send(&fits);
    a.send(&frame(1, 2, 4096 - 255, 2));
    s.nb.poll().unwrap();
    assert_eq!(r.recv(), [Ok(fits)]);
    assert_eq!(s.nb.vif_stats(r.id()).unwrap().rx_unfit, 1);
}

#[test]
fn flip_mode_gives_whole_pages_and_ignores_the_headroom() {
    let (mut s, mut a, mut r) = pair(256, RxMode::Flip);
    r.post_rx(8);
    let f = frame(1, 2, 1000, 1);
    a.send(&f);
    s.nb.poll().unwrap();
    let got = r.recv_meta();
    assert_eq!(got[0].data, f);
    assert_eq!((got[0].offsets.clone(), got[0].extras.len()), (vec![0], 0));
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
fn the_reconfiguring_handshake_applies_the_headroom_as_linux_netfront_asks() {
    let mut s = Scene::new(Config::default());
    let (mut a, _) = attach(&mut s, Guest::mac(1));
    let (mut r, pr) = attach(&mut s, Guest::mac(2));
    assert_eq!(
        r.backend_node(&pr, "feature-xdp-headroom").as_deref(),
        Some("1")
    );
    let xs = r.dom.xenstore();
    let fe = |k: &str| format!("{}/{k}", pr.frontend);
    let send_and_offsets = |s: &mut Scene, a: &mut RawFront, r: &mut RawFront| {
        r.post_rx(4);
        a.send(&frame(1, 2, 500, 1));
        settle(s);
        let got = r.recv_meta();
        assert_eq!(got.len(), 1);
        got[0].offsets[0]
    };
    assert_eq!(send_and_offsets(&mut s, &mut a, &mut r), 0);
    // Linux netfront's xennet_xdp_set: Reconfiguring, xdp-headroom, wait for Reconfigured,
    // Connected.
    xs.write(&fe("state"), XenbusState::Reconfiguring.as_str())
        .unwrap();
    xs.write(&fe("xdp-headroom"), "256").unwrap();
    settle(&mut s);
    assert_eq!(
        r.backend_node(&pr, "state").as_deref(),
        Some("8"),
        "Reconfigured"
    );
    xs.write(&fe("state"), XenbusState::Connected.as_str())
        .unwrap();
    settle(&mut s);
    assert_eq!(r.backend_node(&pr, "state").as_deref(), Some("4"));
    assert_eq!(send_and_offsets(&mut s, &mut a, &mut r), 256);
    // And back (XDP detached), junk reading as 0, as Linux's %hu scan.
    for (value, want) in [("0", 0), ("junk", 0), ("65792", 256), ("40000", 0x7FFF)] {
        xs.write(&fe("xdp-headroom"), value).unwrap();
        xs.write(&fe("state"), XenbusState::Reconfiguring.as_str())
            .unwrap();
        settle(&mut s);
        assert_eq!(r.backend_node(&pr, "state").as_deref(), Some("8"));
        xs.write(&fe("state"), XenbusState::Connected.as_str())
            .unwrap();
        settle(&mut s);
        let id = r.id();
        assert_eq!(
            s.nb.vifs().find(|v| v.id() == id).unwrap().xdp_headroom(),
            want,
            "xdp-headroom {value:?}"
        );
    }
    // Read at connect too: a frontend that connects with one has it from the first frame.
    let (mut c, _) = {
        let mut g = s.guest(Guest::mac(3));
        g.keys.xdp_headroom = 128;
        let p = g.add_vif(&s.xen, &VifConfig::new(&mac_string(testkit::mac(3))));
        settle(&mut s);
        g.publish(&p);
        settle(&mut s);
        (g, p)
    };
    c.post_rx(4);
    a.send(&frame(1, 3, 700, 1));
    settle(&mut s);
    assert_eq!(c.recv_meta()[0].offsets, [128]);
}
