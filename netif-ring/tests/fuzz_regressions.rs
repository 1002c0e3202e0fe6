//! Regressions found by the fuzz targets (`fuzz/`, see its README), as ring-level tests.

use netif_ring::netif::TxRequest;
use netif_ring::{BackRing, OwnedRing, RingError, TxRing, raw};

/// Found by `netback_tx`: the backend read `req_prod = 5` (a re-arm's final check), then the
/// frontend moved it back to 2. After consuming the 5 published requests, and before answering
/// them (so `rsp_prod_pvt` still 0), the backend re-read `req_prod`: `2 - rsp_prod_pvt` is within
/// the ring, so only `REQUEST_PROD_OVERFLOW` passed it, and `2 - req_cons` wrapped to a huge
/// count bounded by the free room: 3 phantom requests out of slots never published (a whole
/// ring's worth on a 256-slot ring). A `req_prod` behind `req_cons` is a protocol violation.
#[test]
fn req_prod_moved_back_behind_consumed_requests_is_rejected() {
    let mem: &'static OwnedRing = Box::leak(Box::new(OwnedRing::new::<TxRing>(8)));
    let mut back: BackRing<TxRing, _> = BackRing::attach(mem);
    for i in 0..5 {
        raw::write_slot_at::<TxRing, TxRequest>(mem, 8, i, TxRequest::default());
    }
    raw::set_req_prod(mem, 5);
    assert_eq!(back.unconsumed_requests(), Ok(5));
    for _ in 0..5 {
        assert!(back.next_request().unwrap().is_some());
    }
    raw::set_req_prod(mem, 2);
    assert_eq!(
        back.next_request(),
        Err(RingError::RequestOverflow {
            req_prod: 2,
            rsp_prod_pvt: 0,
            size: 8
        }),
        "a req_prod behind req_cons hands out slots the frontend never published"
    );
    assert_eq!(back.req_cons(), 5);
}
