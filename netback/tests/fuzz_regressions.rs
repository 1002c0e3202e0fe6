//! Regressions found by the fuzz targets (`fuzz/`, see its README). Each test is the minimized
//! finding, rewritten against netback's public API, so it runs with the normal test suite.

mod common;

use std::time::Duration;

use common::{RawFront, frame, machine};
use netback::{Config, Fatal, RxMode};
use netif_ring::{RingError, raw};

/// Found by `netback_tx`: the backend's re-arm (`wait`) read `req_prod = 21`, then the hostile
/// frontend moved it back to 0 before the next pass. The pass consumed the 21 published
/// requests, re-read `req_prod` before answering them, and (the ring checked only
/// `req_prod - rsp_prod_pvt`) took 235 more "requests" from slots never published, answering
/// all 256: responses for requests that were never pushed. Fixed in `netif_ring::BackRing`: a
/// `req_prod` behind `req_cons` is a `RequestOverflow`, and the vif is disabled.
#[test]
fn req_prod_moved_back_after_a_rearm_gets_no_phantom_responses() {
    let (xen, dom0, mut nb) = machine(Config::default());
    let h = RawFront::new(&xen, &dom0, 9, RxMode::Copy);
    h.connect(&mut nb);
    let mut a = RawFront::new(&xen, &dom0, 1, RxMode::Copy);
    let mut b = RawFront::new(&xen, &dom0, 2, RxMode::Copy);
    a.connect(&mut nb);
    b.connect(&mut nb);
    b.post_rx(8);
    // 21 zeroed slots published (each a runt, answered with an error), seen by the re-arm.
    raw::set_req_prod(h.tx.mem(), 21);
    nb.wait(Duration::ZERO).unwrap();
    raw::set_req_prod(h.tx.mem(), 0);
    nb.poll().unwrap();
    let rsp_prod = raw::indices(h.tx.mem()).rsp_prod;
    assert!(
        rsp_prod <= 21,
        "{rsp_prod} responses for 21 published requests"
    );
    assert!(
        matches!(
            nb.vif_stats(h.id()).unwrap().fatal,
            Some(Fatal::Ring(RingError::RequestOverflow { .. }))
        ),
        "a req_prod moved back behind consumed requests disables the vif"
    );
    // The others carry on.
    let f = frame(1, 2, 500, 3);
    a.send(&f);
    nb.poll().unwrap();
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
    let (xen, dom0, mut nb) = machine(Config::default());
    let stalled = RawFront::new(&xen, &dom0, 9, RxMode::Copy);
    let mut a = RawFront::new(&xen, &dom0, 1, RxMode::Copy);
    let mut b = RawFront::new(&xen, &dom0, 2, RxMode::Copy);
    stalled.connect(&mut nb);
    a.connect(&mut nb);
    b.connect(&mut nb);
    b.post_rx(200);
    // b announces itself so a's unicast to it is switched, not flooded.
    b.send(&frame(2, 1, 60, 0));
    nb.poll().unwrap();
    b.reap_tx();

    // `machine` gives the backend a 2 048-page pool.
    let mut sent = 0;
    while sent < 2048 + 52 {
        // 200 at a time: the tx ring holds 256 slots.
        for _ in 0..200 {
            let mut f = frame(1, 0xff, 60, sent as u8);
            f[..6].copy_from_slice(&[0xff; 6]);
            a.send(&f);
            sent += 1;
        }
        // b keeps up: everything it receives goes back as a buffer.
        for _ in 0..6 {
            nb.poll().unwrap();
            a.reap_tx();
            let n = b.recv().len();
            b.post_rx(n);
        }
    }
    let before = nb.vif_stats(a.id()).unwrap().tx_no_buffer;
    let f = frame(1, 2, 1000, 7);
    a.send(&f);
    nb.poll().unwrap();
    nb.poll().unwrap();
    let got = b.recv();
    let st = nb.vif_stats(a.id()).unwrap();
    assert_eq!(
        st.tx_no_buffer, before,
        "a's frame was dropped for want of pool pages, all pinned by the stalled guest's queue"
    );
    assert!(
        got.iter().any(|g| g.as_ref().is_ok_and(|g| *g == f)),
        "b did not receive a's frame"
    );
}
