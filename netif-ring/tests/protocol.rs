//! Single-threaded protocol tests: indices, event suppression, hostile producers.

use netif_ring::netif::{
    ExtraInfo, NETIF_RSP_ERROR, NETIF_RSP_OKAY, RxRequest, TxRequest, TxResponse,
};
use netif_ring::{BackRing, FrontRing, OwnedRing, RingError, RingKind, RxRing, TxRing, raw};

const REQ: TxRequest = TxRequest {
    gref: 10,
    offset: 0,
    flags: 0,
    id: 0,
    size: 60,
};

fn tx_pair(
    slots: u32,
) -> (
    FrontRing<TxRing, &'static OwnedRing>,
    BackRing<TxRing, &'static OwnedRing>,
) {
    let mem: &'static OwnedRing = Box::leak(Box::new(OwnedRing::new::<TxRing>(slots)));
    (FrontRing::init(mem), BackRing::attach(mem))
}

#[track_caller]
fn req(id: u16) -> TxRequest {
    TxRequest { id, ..REQ }
}

#[test]
fn page_rings_have_256_slots() {
    assert_eq!(TxRing::PAGE_RING_SIZE, 256);
    assert_eq!(RxRing::PAGE_RING_SIZE, 256);
    let mem = OwnedRing::page();
    assert_eq!(FrontRing::<TxRing, _>::init(&mem).size(), 256);
    assert_eq!(BackRing::<RxRing, _>::attach(&mem).size(), 256);
}

#[test]
fn requests_and_responses_flow_in_order() {
    let (mut front, mut back) = tx_pair(8);
    for id in 0..5 {
        front.put_request(req(id)).unwrap();
    }
    assert_eq!(
        back.unconsumed_requests(),
        Ok(0),
        "nothing visible before the push"
    );
    front.push_requests();
    assert_eq!(back.unconsumed_requests(), Ok(5));
    for id in 0..5 {
        let r = back.next_request().unwrap().unwrap();
        assert_eq!(r, req(id));
        back.put_response(TxResponse {
            id,
            status: NETIF_RSP_OKAY,
        })
        .unwrap();
    }
    assert_eq!(back.next_request(), Ok(None));
    back.push_responses();
    for id in 0..5 {
        assert_eq!(front.next_response().unwrap().unwrap().id, id);
    }
    assert_eq!(front.next_response(), Ok(None));
    assert_eq!(front.free_requests(), 8);
}

#[test]
fn full_ring_hands_the_request_back() {
    let (mut front, _back) = tx_pair(4);
    for id in 0..4 {
        front.put_request(req(id)).unwrap();
    }
    assert!(front.is_full());
    assert_eq!(front.put_request(req(99)), Err(req(99)));
}

#[test]
fn backend_cannot_consume_past_its_unanswered_responses() {
    // UNCONSUMED_REQUESTS is bounded by free response slots: consumed-but-unanswered requests
    // occupy the ring.
    let (mut front, mut back) = tx_pair(4);
    for round in 0..3u16 {
        for id in 0..4 {
            front.put_request(req(round * 4 + id)).unwrap();
        }
        front.push_requests();
        for _ in 0..4 {
            back.next_request().unwrap().unwrap();
        }
        assert_eq!(back.unconsumed_requests(), Ok(0));
        for id in 0..4 {
            back.put_response(TxResponse { id, status: 0 }).unwrap();
        }
        assert!(
            back.put_response(TxResponse::default()).is_err(),
            "no request left to answer"
        );
        back.push_responses();
        while front.next_response().unwrap().is_some() {}
    }
}

#[test]
fn notify_only_when_the_peer_asked() {
    let (mut front, mut back) = tx_pair(8);
    // Fresh ring: req_event = 1, so the first push notifies.
    front.put_request(req(0)).unwrap();
    assert!(front.push_requests_and_check_notify());
    // The backend has not re-armed (req_event still 1): further pushes stay quiet.
    front.put_request(req(1)).unwrap();
    assert!(!front.push_requests_and_check_notify());
    while back.next_request().unwrap().is_some() {
        back.put_response(TxResponse::default()).unwrap();
    }
    // Final check re-arms req_event at req_cons + 1 = 3: the next push notifies.
    assert_eq!(back.final_check_for_requests(), Ok(false));
    front.put_request(req(2)).unwrap();
    assert!(front.push_requests_and_check_notify());

    // Responses symmetric: rsp_event starts at 1.
    assert!(back.push_responses_and_check_notify());
    back.next_request().unwrap().unwrap();
    back.put_response(TxResponse::default()).unwrap();
    assert!(
        !back.push_responses_and_check_notify(),
        "frontend has not re-armed"
    );
    while front.next_response().unwrap().is_some() {}
    assert_eq!(front.final_check_for_responses(), Ok(false));
}

#[test]
fn final_check_sees_requests_pushed_before_it() {
    let (mut front, mut back) = tx_pair(8);
    front.put_request(req(0)).unwrap();
    front.push_requests();
    assert_eq!(back.final_check_for_requests(), Ok(true));
}

#[test]
fn hostile_req_prod_is_an_error_not_a_panic() {
    let mem: &'static OwnedRing = Box::leak(Box::new(OwnedRing::new::<TxRing>(8)));
    let mut back: BackRing<TxRing, _> = BackRing::attach(mem);
    // A frontend that claims 9 requests on an 8-slot ring.
    let mut front: FrontRing<TxRing, _> = FrontRing::init(mem);
    for id in 0..8 {
        front.put_request(req(id)).unwrap();
    }
    front.push_requests();
    assert_eq!(back.unconsumed_requests(), Ok(8));
    // Now scribble req_prod directly through a second front handle's view of the same memory:
    // simulate the hostile write by pushing from a re-initialised frontend whose private index we
    // drive past the ring.
    let hostile = HostileFront::new(mem);
    hostile.set_req_prod(9);
    assert_eq!(
        back.unconsumed_requests(),
        Err(RingError::RequestOverflow {
            req_prod: 9,
            rsp_prod_pvt: 0,
            size: 8
        })
    );
    // Sticky: the 8 requests validated earlier are not handed out once the peer is caught.
    assert!(back.next_request().is_err());
    assert!(back.final_check_for_requests().is_err());
    let msg = back.unconsumed_requests().unwrap_err().to_string();
    assert!(msg.contains("disconnect"), "error says what to do: {msg}");
}

#[test]
fn req_prod_behind_req_cons_is_rejected() {
    // A frontend that moves req_prod backwards (wrapping far behind) is rejected the same way.
    let mem: &'static OwnedRing = Box::leak(Box::new(OwnedRing::new::<TxRing>(8)));
    let mut back: BackRing<TxRing, _> = BackRing::attach(mem);
    raw::set_req_prod(mem, u32::MAX - 3);
    assert!(matches!(
        back.unconsumed_requests(),
        Err(RingError::RequestOverflow { .. })
    ));
}

#[test]
fn hostile_rsp_prod_is_an_error_not_a_panic() {
    let mem: &'static OwnedRing = Box::leak(Box::new(OwnedRing::new::<RxRing>(8)));
    let mut front: FrontRing<RxRing, _> = FrontRing::init(mem);
    for id in 0..2 {
        front
            .put_request(RxRequest {
                id,
                pad: 0,
                gref: 1,
            })
            .unwrap();
    }
    front.push_requests();
    let hostile = HostileFront::new(mem);
    // Three responses to two requests.
    hostile.set_rsp_prod(3);
    assert_eq!(
        front.unconsumed_responses(),
        Err(RingError::ResponseOverflow {
            rsp_prod: 3,
            rsp_cons: 0,
            req_prod: 2
        })
    );
    assert!(front.next_response().is_err());
    // Far beyond the ring size.
    hostile.set_rsp_prod(1000);
    assert!(front.final_check_for_responses().is_err());
    hostile.set_rsp_prod(2);
    // The error is sticky: a backend caught lying stays disconnected even if it "fixes" rsp_prod.
    assert!(front.unconsumed_responses().is_err());
    assert!(front.next_response().is_err());
}

#[test]
fn extra_info_shares_the_tx_slot() {
    let (mut front, mut back) = tx_pair(4);
    let extra = ExtraInfo {
        type_: 1,
        flags: 0,
        u: [0xdc, 0x05, 1, 0, 0, 0],
    };
    front.put_request(req(1)).unwrap();
    front.put_request_as(extra).unwrap();
    front.push_requests();
    assert_eq!(back.next_request().unwrap(), Some(req(1)));
    assert_eq!(back.next_request_as::<ExtraInfo>().unwrap(), Some(extra));
}

#[test]
fn patch_response_only_touches_private_slots() {
    let (mut front, mut back) = tx_pair(4);
    for id in 0..3 {
        front.put_request(req(id)).unwrap();
    }
    front.push_requests();
    let mut idx = Vec::new();
    for _ in 0..3 {
        let r = back.next_request().unwrap().unwrap();
        idx.push(
            back.put_response(TxResponse {
                id: r.id,
                status: NETIF_RSP_OKAY,
            })
            .unwrap(),
        );
    }
    let failed = TxResponse {
        id: 1,
        status: NETIF_RSP_ERROR,
    };
    back.patch_response(idx[1], failed).unwrap();
    assert!(
        back.patch_response(idx[2] + 1, failed).is_err(),
        "not put yet"
    );
    back.push_responses();
    assert!(
        back.patch_response(idx[0], failed).is_err(),
        "already pushed"
    );
    let got: Vec<_> = std::iter::from_fn(|| front.next_response().unwrap()).collect();
    assert_eq!(got[1], failed);
    assert_eq!(got[0].status, NETIF_RSP_OKAY);
}

#[test]
fn indices_wrap_around_u32() {
    // Drive the free-running indices across 2^32 on a tiny ring: a back ring attached at
    // rsp_prod = 2^32 - 3 (as after a long uptime) must keep working.
    let mem: &'static OwnedRing = Box::leak(Box::new(OwnedRing::new::<TxRing>(4)));
    let hostile = HostileFront::new(mem);
    let start = u32::MAX - 2;
    hostile.set_req_prod(start);
    hostile.set_rsp_prod(start);
    let mut back: BackRing<TxRing, _> = BackRing::attach(mem);
    let mut prod = start;
    for round in 0..4u16 {
        for i in 0..3u16 {
            hostile.write_tx_request(prod, req(round * 3 + i));
            prod = prod.wrapping_add(1);
        }
        hostile.set_req_prod(prod);
        for i in 0..3u16 {
            assert_eq!(back.next_request().unwrap(), Some(req(round * 3 + i)));
            back.put_response(TxResponse::default()).unwrap();
        }
        back.push_responses();
    }
    assert_eq!(back.req_cons(), start.wrapping_add(12));
}

/// Direct access to a ring's shared memory, as a peer in another domain has it.
struct HostileFront(&'static OwnedRing);

impl HostileFront {
    fn new(mem: &'static OwnedRing) -> Self {
        Self(mem)
    }
    fn set_req_prod(&self, v: u32) {
        raw::set_req_prod(self.0, v);
    }
    fn set_rsp_prod(&self, v: u32) {
        raw::set_rsp_prod(self.0, v);
    }
    fn write_tx_request(&self, idx: u32, r: TxRequest) {
        raw::write_slot_at::<TxRing, _>(self.0, 4, idx, r);
    }
}

#[test]
fn peek_shows_the_next_request_without_consuming_it() {
    let (mut front, mut back) = tx_pair(8);
    assert_eq!(back.peek_request(), Ok(None));
    front.put_request(req(1)).unwrap();
    front.put_request(req(2)).unwrap();
    front.push_requests();
    assert_eq!(back.peek_request(), Ok(Some(req(1))));
    assert_eq!(
        back.peek_request(),
        Ok(Some(req(1))),
        "peeking twice moves nothing"
    );
    assert_eq!(back.next_request(), Ok(Some(req(1))));
    assert_eq!(back.peek_request(), Ok(Some(req(2))));
    assert_eq!(back.next_request(), Ok(Some(req(2))));
    assert_eq!(back.peek_request(), Ok(None));
}

#[test]
fn peek_refuses_a_hostile_req_prod_as_consuming_does() {
    let (_front, mut back) = tx_pair(8);
    raw::set_req_prod(back.mem(), 100);
    assert!(matches!(
        back.peek_request(),
        Err(RingError::RequestOverflow { .. })
    ));
    assert!(back.next_request().is_err(), "the violation is sticky");
}
