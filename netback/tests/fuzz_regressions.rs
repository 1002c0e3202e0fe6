//! Regressions found by the fuzz targets (`fuzz/`, see its README). Each test is the minimized
//! finding, rewritten against netback's public API, so it runs with the normal test suite.

use std::time::Duration;

use netback::{Config, Fatal};
use netif_ring::RingError;
use netif_ring::ctrl::XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE;
use testkit::{Guest, Scene, broadcast, frame};

/// Found by `netback_tx`: the backend's re-arm (`wait`) read `req_prod = 21`, then the hostile
/// frontend moved it back to 0 before the next pass. The pass consumed the 21 published
/// requests, re-read `req_prod` before answering them, and (the ring checked only
/// `req_prod - rsp_prod_pvt`) took 235 more "requests" from slots never published, answering
/// all 256: responses for requests that were never pushed. Fixed in `netif_ring::BackRing`: a
/// `req_prod` behind `req_cons` is a `RequestOverflow`, and the vif is disabled.
#[test]
fn req_prod_moved_back_after_a_rearm_gets_no_phantom_responses() {
    let mut s = Scene::new(Config::default());
    let h = s.front(Guest::mac(9));
    let mut a = s.front(Guest::mac(1));
    let mut b = s.front(Guest::mac(2));
    b.post_rx(8);
    // 21 zeroed slots published (each a runt, answered with an error), seen by the re-arm.
    h.set_tx_req_prod(21);
    s.nb.wait(Duration::ZERO).unwrap();
    h.set_tx_req_prod(0);
    s.nb.poll().unwrap();
    let rsp_prod = h.tx_indices().rsp_prod;
    assert!(
        rsp_prod <= 21,
        "{rsp_prod} responses for 21 published requests"
    );
    assert!(
        matches!(
            s.nb.vif_stats(h.id()).unwrap().fatal,
            Some(Fatal::Ring(RingError::RequestOverflow { .. }))
        ),
        "a req_prod moved back behind consumed requests disables the vif"
    );
    // The others carry on.
    let f = frame(1, 2, 500, 3);
    a.send(&f);
    s.nb.poll().unwrap();
    assert!(b.recv().iter().any(|g| g.as_ref().is_ok_and(|g| *g == f)));
}

/// Found by `netback_rx`: a guest that posts no rx buffers keeps every frame flooded to it in
/// its rx queue until `rx_drain_timeout` (10 s). The queue is capped in *bytes*
/// (`rx_queue_bytes`, 512 KiB), but each queued frame holds at least one page of the backend's
/// frame pool, which every vif shares: 2 100 broadcasts of 60 bytes (123 KiB, well under the
/// cap) pin 2 100 pages and exhaust a 2 048-page pool. From then on every other vif's transmit
/// is dropped (`tx_no_buffer`) until the stalled guest's frames expire: one guest that simply
/// stops posting buffers cuts two well-behaved guests off from each other.
///
/// Fixed by each vif's rx queue pinning at most its share of the pool's pages
/// (`isolation.rs` checks the share itself).
#[test]
fn a_guest_posting_no_rx_buffers_cannot_starve_the_others_of_pool_pages() {
    let mut s = Scene::new(Config::default());
    let _stalled = s.front(Guest::mac(9));
    let mut a = s.front(Guest::mac(1));
    let mut b = s.front(Guest::mac(2));
    b.post_rx(200);
    // b announces itself so a's unicast to it is switched, not flooded.
    b.send(&frame(2, 1, 60, 0));
    s.nb.poll().unwrap();
    b.reap_tx();

    // `Scene::new` gives the backend a 2 048-page pool.
    let mut sent = 0;
    while sent < 2048 + 52 {
        // 200 at a time: the tx ring holds 256 slots.
        for _ in 0..200 {
            a.send(&broadcast(1, 60, sent));
            sent += 1;
        }
        // b keeps up: everything it receives goes back as a buffer.
        for _ in 0..6 {
            s.nb.poll().unwrap();
            a.reap_tx();
            let n = b.recv().len();
            b.post_rx(n);
        }
    }
    let before = s.nb.vif_stats(a.id()).unwrap().tx_no_buffer;
    let f = frame(1, 2, 1000, 7);
    a.send(&f);
    s.nb.poll().unwrap();
    s.nb.poll().unwrap();
    let got = b.recv();
    let st = s.nb.vif_stats(a.id()).unwrap();
    assert_eq!(
        st.tx_no_buffer, before,
        "a's frame was dropped for want of pool pages, all pinned by the stalled guest's queue"
    );
    assert!(
        got.iter().any(|g| g.as_ref().is_ok_and(|g| *g == f)),
        "b did not receive a's frame"
    );
}

/// Found by `netback_ctrl`: the re-arm (`wait`) counted one ctrl request; the frontend then set
/// the ctrl `req_prod` to 129, a ring and one past the responses it had seen. The pass served
/// the request the re-arm had counted and only then read `req_prod`, judging it against its own
/// unpushed answer, so the overflow passed and the backend read its own responses back as 128
/// more requests. Fixed in netback's ctrl pass: `req_prod` is read afresh when a pass starts.
#[test]
fn a_ctrl_req_prod_overflow_after_a_rearm_is_caught() {
    let mut s = Scene::new(Config::default());
    let mut g = s.guest(Guest::mac(1));
    g.make_ctrl_ring();
    g.connect(&mut s.nb);
    let mut a = s.front(Guest::mac(2));
    let mut b = s.front(Guest::mac(3));
    b.post_rx(8);
    g.ctrl_request(XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, [0; 3]);
    s.nb.wait(Duration::ZERO).unwrap();
    assert!(g.ctrl_responses().is_empty(), "the re-arm answers nothing");
    g.set_ctrl_req_prod(129);
    s.nb.poll().unwrap();
    let st = s.nb.vif_stats(g.id()).unwrap();
    assert!(
        matches!(
            st.fatal,
            Some(Fatal::CtrlRing(RingError::RequestOverflow {
                req_prod: 129,
                ..
            }))
        ),
        "{:?}",
        st.fatal
    );
    assert!(g.ctrl_responses().is_empty(), "{st:?}");
    assert_eq!(st.ctrl_requests, 0);
    // The others carry on.
    let f = frame(2, 3, 1000, 1);
    a.send(&f);
    s.nb.poll().unwrap();
    assert_eq!(b.recv(), [Ok(f)]);
}
