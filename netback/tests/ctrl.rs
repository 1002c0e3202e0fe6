//! The ctrl ring as Linux 6.1's netback serves it (`process_ctrl_request`, `hash.c`): every
//! message, good and malformed (sizes, grants, offsets, unknown types), from a raw frontend
//! that can send anything; a hostile `req_prod`; the features and keys through xenbus; and an
//! event storm on the ctrl port.

use std::time::Duration;

use netback::{Config, Fatal, FrontendError, MAX_HASH_KEY, MAX_HASH_MAPPING};
use netif_ring::RingError;
use netif_ring::ctrl::*;
use testkit::{GrantKind, Guest, RawFront, Scene, frame};

/// Microsoft's standard RSS key.
const KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// A backend and a guest with a ctrl ring, connected directly (one queue).
fn setup() -> (Scene, RawFront) {
    let mut s = Scene::new(Config::default());
    let mut g = s.guest(Guest::mac(1));
    g.make_ctrl_ring();
    g.connect(&mut s.nb);
    (s, g)
}

/// Sends one request, runs a pass, returns its (status, data) after checking the response
/// echoes its id and type.
#[track_caller]
fn ctrl(s: &mut Scene, g: &mut RawFront, type_: u16, data: [u32; 3]) -> (u32, u32) {
    let id = g.ctrl_request(type_, data);
    s.nb.poll().unwrap();
    let r = g.ctrl_responses();
    assert_eq!(r.len(), 1, "one response per request");
    assert_eq!((r[0].id, r[0].type_), (id, type_), "id and type echoed");
    (r[0].status, r[0].data)
}

const OK: u32 = XEN_NETIF_CTRL_STATUS_SUCCESS;
const INVALID: u32 = XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
const UNSUPPORTED: u32 = XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED;

fn settings(s: &Scene, g: &RawFront) -> netback::HashSettings {
    let id = g.id();
    s.nb.vifs().find(|v| v.id() == id).unwrap().hash_settings()
}

#[test]
fn hash_algorithm_and_flags_as_linux() {
    let (mut s, mut g) = setup();
    // Flags need an algorithm first (xenvif_get/set_hash_flags).
    assert_eq!(
        ctrl(&mut s, &mut g, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS, [0; 3]),
        (UNSUPPORTED, 0)
    );
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS,
            [1, 0, 0]
        ),
        (INVALID, 0)
    );
    // Only none and Toeplitz are algorithms.
    for bad in [2, 3, u32::MAX] {
        assert_eq!(
            ctrl(
                &mut s,
                &mut g,
                XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
                [bad, 0, 0]
            ),
            (INVALID, 0),
            "algorithm {bad}"
        );
    }
    for alg in [
        XEN_NETIF_CTRL_HASH_ALGORITHM_NONE,
        XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
    ] {
        assert_eq!(
            ctrl(
                &mut s,
                &mut g,
                XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
                [alg, 0, 0]
            ),
            (OK, 0)
        );
    }
    assert_eq!(
        ctrl(&mut s, &mut g, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS, [0; 3]),
        (OK, XEN_NETIF_CTRL_HASH_TYPE_ALL),
        "IPv4, IPv4+TCP, IPv6, IPv6+TCP"
    );
    // A flag the header does not define is refused; the four it does are taken.
    for bad in [0x10, 0x8000_0000, u32::MAX] {
        assert_eq!(
            ctrl(
                &mut s,
                &mut g,
                XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS,
                [bad, 0, 0]
            ),
            (INVALID, 0)
        );
    }
    assert_eq!(settings(&s, &g).flags, 0, "a refused set changes nothing");
    let v4 = XEN_NETIF_CTRL_HASH_TYPE_IPV4 | XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP;
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS,
            [v4, 0, 0]
        ),
        (OK, 0)
    );
    let set = settings(&s, &g);
    assert_eq!(
        (set.algorithm, set.flags),
        (XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ, v4)
    );
    let st = s.nb.vif_stats(g.id()).unwrap();
    assert_eq!(
        (st.ctrl_requests, st.ctrl_invalid, st.ctrl_not_supported),
        (12, 7, 1)
    );
}

#[test]
fn hash_key_at_most_40_bytes_copied_from_the_guest() {
    let (mut s, mut g) = setup();
    let key = g.grant_bytes(&KEY);
    // Longer than Linux keeps: refused, and nothing copied.
    for len in [41, 4096, u32::MAX] {
        assert_eq!(
            ctrl(
                &mut s,
                &mut g,
                XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
                [key.0, len, 0]
            ),
            (INVALID, 0),
            "{len} bytes"
        );
    }
    assert_eq!(settings(&s, &g).key, vec![0; MAX_HASH_KEY]);
    assert_eq!(s.nb.vif_stats(g.id()).unwrap().ctrl_copy_errors, 0);
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
            [key.0, 40, 0]
        ),
        (OK, 0)
    );
    assert_eq!(settings(&s, &g).key, KEY.to_vec());
    // A shorter key replaces the whole key: the rest reads as zeros.
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
            [key.0, 4, 0]
        ),
        (OK, 0)
    );
    let mut short = [0u8; 40];
    short[..4].copy_from_slice(&KEY[..4]);
    assert_eq!(settings(&s, &g).key, short.to_vec());
    // Length 0 clears it without touching the grant (any gref will do).
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
            [0xdead, 0, 0]
        ),
        (OK, 0)
    );
    assert_eq!(settings(&s, &g).key, vec![0; 40]);
}

#[test]
fn a_bad_grant_is_invalid_counted_and_changes_nothing() {
    let (mut s, mut g) = setup();
    let key = g.grant_bytes(&KEY);
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
            [key.0, 40, 0]
        ),
        (OK, 0)
    );
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
            [16, 0, 0]
        ),
        (OK, 0)
    );
    // A gref never granted, one beyond the table, one revoked, one granted to another domain.
    let page = g.dom.alloc_page().unwrap();
    g.dom.write(page, 0, &[0xaa; 40]).unwrap();
    let revoked = g.grant(page, GrantKind::Ro).unwrap();
    g.revoke(revoked, GrantKind::Ro).unwrap();
    let other = s.xen.create_domain(16).unwrap();
    let foreign = g.dom.grant_access(other.domid(), page, true).unwrap();
    let bad = [900, u32::MAX, revoked.0, foreign.0];
    for gref in bad {
        assert_eq!(
            ctrl(
                &mut s,
                &mut g,
                XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
                [gref, 40, 0]
            ),
            (INVALID, 0),
            "key from gref {gref}"
        );
        assert_eq!(
            ctrl(
                &mut s,
                &mut g,
                XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
                [gref, 16, 0]
            ),
            (INVALID, 0),
            "mapping from gref {gref}"
        );
    }
    let set = settings(&s, &g);
    assert_eq!(set.key, KEY.to_vec(), "the key stands");
    assert_eq!(set.mapping, vec![0; 16], "the table stands");
    let st = s.nb.vif_stats(g.id()).unwrap();
    assert_eq!(st.ctrl_copy_errors, 8);
    assert_eq!(st.ctrl_invalid, 8);
    assert!(
        st.fatal.is_none(),
        "a bad grant is the request's failure, not the vif's"
    );
}

#[test]
fn mapping_size_and_sub_tables_as_linux() {
    let (mut s, mut g) = setup();
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE,
            [0; 3]
        ),
        (OK, MAX_HASH_MAPPING)
    );
    for bad in [129, 4096, u32::MAX] {
        assert_eq!(
            ctrl(
                &mut s,
                &mut g,
                XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
                [bad, 0, 0]
            ),
            (INVALID, 0)
        );
    }
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
            [128, 0, 0]
        ),
        (OK, 0)
    );
    assert_eq!(settings(&s, &g).mapping, vec![0; 128]);
    // One queue: every entry must be 0. A table of zeros at any offset inside is taken; one
    // naming queue 1 is refused whole, wherever the bad entry is.
    let zeros = g.grant_bytes(&[0u8; 4096]);
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
            [zeros.0, 64, 64]
        ),
        (OK, 0)
    );
    let mut table = [0u8; 32];
    table[28] = 1; // the 8th entry is queue 1
    let bad_entry = g.grant_bytes(&table);
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
            [bad_entry.0, 8, 0]
        ),
        (INVALID, 0)
    );
    // Out of the table: past its end, overflowing, longer than a page.
    for (len, off) in [(1, 128), (2, 127), (129, 0), (1025, 0), (1, u32::MAX)] {
        assert_eq!(
            ctrl(
                &mut s,
                &mut g,
                XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
                [zeros.0, len, off]
            ),
            (INVALID, 0),
            "{len} at {off}"
        );
    }
    // Nothing to copy: taken without touching the grant, if it lies inside.
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
            [0xdead, 0, 128]
        ),
        (OK, 0)
    );
    // A smaller size makes a new, zeroed table.
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
            [3, 0, 0]
        ),
        (OK, 0)
    );
    assert_eq!(settings(&s, &g).mapping, vec![0; 3]);
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
            [zeros.0, 4, 0]
        ),
        (INVALID, 0)
    );
    assert_eq!(s.nb.vif_stats(g.id()).unwrap().ctrl_copy_errors, 0);
}

#[test]
fn gref_mapping_and_unknown_types_are_not_supported() {
    let (mut s, mut g) = setup();
    for t in [
        XEN_NETIF_CTRL_TYPE_INVALID,
        XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE,
        XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING,
        XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING,
        11,
        0x8000,
        u16::MAX,
    ] {
        assert_eq!(
            ctrl(&mut s, &mut g, t, [1, 2, 3]),
            (UNSUPPORTED, 0),
            "type {t}"
        );
    }
    assert_eq!(s.nb.vif_stats(g.id()).unwrap().ctrl_not_supported, 7);
}

#[test]
fn a_full_ring_of_requests_is_answered_in_order_within_a_pass_each() {
    let (mut s, mut g) = setup();
    let ring = g.ctrl.as_ref().unwrap().0.size();
    assert_eq!(ring, 128);
    let mut ids = Vec::new();
    for i in 0..ring {
        ids.push(g.ctrl_request(XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, [i, 0, 0]));
    }
    s.nb.poll().unwrap();
    let r = g.ctrl_responses();
    assert_eq!(r.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    assert!(r.iter().all(|r| r.status == OK && r.data == 128));
    // And again, wrapping around the ring.
    for _ in 0..3 {
        for _ in 0..100 {
            g.ctrl_request(XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, [0; 3]);
        }
        s.nb.poll().unwrap();
        assert_eq!(g.ctrl_responses().len(), 100);
    }
}

#[test]
fn a_ctrl_req_prod_beyond_the_ring_disables_the_vif_and_others_carry_on() {
    let (mut s, mut g) = setup();
    let mut a = s.front(Guest::mac(2));
    let mut b = s.front(Guest::mac(3));
    b.post_rx(8);
    g.set_ctrl_req_prod(129);
    g.notify_ctrl();
    s.nb.poll().unwrap();
    let st = s.nb.vif_stats(g.id()).unwrap();
    assert!(
        matches!(
            st.fatal,
            Some(Fatal::CtrlRing(RingError::RequestOverflow { .. }))
        ),
        "{:?}",
        st.fatal
    );
    assert!(g.ctrl_responses().is_empty(), "no slot was read");
    assert_eq!(st.ctrl_requests, 0);
    let f = frame(2, 3, 1000, 1);
    a.send(&f);
    s.nb.poll().unwrap();
    assert_eq!(b.recv(), [Ok(f)]);
}

#[test]
fn a_ctrl_ring_with_impossible_indices_is_refused_at_connect() {
    let mut s = Scene::new(Config::default());
    let mut g = s.guest(Guest::mac(1));
    g.make_ctrl_ring();
    g.set_ctrl_req_prod(200);
    let err = s.nb.connect_vif(g.id(), g.keys.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            netback::Error::Frontend {
                reason: FrontendError::RingIndices { ring: "ctrl", .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.nb.vifs().count(), 0);
}

#[test]
fn features_and_keys_through_xenbus() {
    let mut s = Scene::new(Config::default());
    let mut g = s.guest(Guest::mac(1));
    let paths = g.add_vif(&s.xen, &hypervisor::VifConfig::default());
    for _ in 0..50 {
        s.nb.poll().unwrap();
    }
    for k in [
        "feature-ctrl-ring",
        "feature-multicast-control",
        "feature-dynamic-multicast-control",
        "feature-xdp-headroom",
    ] {
        assert_eq!(g.backend_node(&paths, k).as_deref(), Some("1"), "{k}");
    }
    // A ctrl-ring-ref without event-channel-ctrl is refused, as Linux's connect_ctrl_ring.
    g.make_ctrl_ring();
    let xs = g.dom.xenstore();
    g.publish(&paths);
    xs.rm(&format!("{}/event-channel-ctrl", paths.frontend))
        .unwrap();
    for _ in 0..50 {
        s.nb.poll().unwrap();
    }
    assert_eq!(g.backend_node(&paths, "state").as_deref(), Some("6"));
    let error = g.backend_node(&paths, "error").unwrap();
    assert!(error.contains("event-channel-ctrl missing"), "{error}");
    assert_eq!(s.nb.vifs().count(), 0);
}

#[test]
fn through_xenbus_the_ctrl_ring_connects_and_a_junk_ref_means_none() {
    for (ring_ref, has_ring) in [(None, true), (Some("not a number"), false)] {
        let mut s = Scene::new(Config::default());
        let mut g = s.guest(Guest::mac(1));
        let paths = g.add_vif(&s.xen, &hypervisor::VifConfig::default());
        for _ in 0..50 {
            s.nb.poll().unwrap();
        }
        g.make_ctrl_ring();
        g.publish(&paths);
        if let Some(v) = ring_ref {
            g.dom
                .xenstore()
                .write(&format!("{}/ctrl-ring-ref", paths.frontend), v)
                .unwrap();
        }
        for _ in 0..50 {
            s.nb.poll().unwrap();
        }
        assert_eq!(g.backend_node(&paths, "state").as_deref(), Some("4"));
        let vif = s.nb.vifs().next().unwrap();
        assert_eq!(vif.has_ctrl_ring(), has_ring, "{ring_ref:?}");
        if has_ring {
            assert_eq!(
                ctrl(
                    &mut s,
                    &mut g,
                    XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE,
                    [0; 3]
                ),
                (OK, 128)
            );
        }
    }
}

#[test]
fn a_storm_on_the_ctrl_port_is_throttled_by_the_late_eoi() {
    let (mut s, mut g) = setup();
    let port = g.ctrl.as_ref().unwrap().1;
    let ev = &g.evtchn;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let sent = std::thread::scope(|t| {
        let notifier = t.spawn(|| {
            let mut n = 0u64;
            // Relaxed: a stop flag; the scope's join orders the rest.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ev.notify(port).unwrap();
                n += 1;
                if n.is_multiple_of(64) {
                    std::thread::yield_now();
                }
            }
            n
        });
        let end = std::time::Instant::now() + Duration::from_millis(300);
        s.nb.run_until(|| std::time::Instant::now() >= end).unwrap();
        // Relaxed: as above.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        notifier.join().unwrap()
    });
    let st = s.nb.vif_stats(g.id()).unwrap();
    assert!(sent > 1000, "the storm ran: {sent} notifies");
    assert!(st.spurious_events > 0 && st.eoi_delayed > 0, "{st:?}");
    assert!(
        st.spurious_events * 20 < sent,
        "{} of {sent} events bought a pass",
        st.spurious_events
    );
    // A real request is still answered.
    assert_eq!(
        ctrl(
            &mut s,
            &mut g,
            XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE,
            [0; 3]
        ),
        (OK, 128)
    );
}
