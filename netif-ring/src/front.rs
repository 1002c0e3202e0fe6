//! The frontend's end of a ring: produces requests, consumes responses.

use core::marker::PhantomData;

use crate::error::RingError;
use crate::sring::{RingKind, RingMem, Slot, geometry, read_slot, write_slot};
use crate::sync::{Ordering, full_barrier, publish_order};

/// `struct NAME##_front_ring`: the frontend's private indices over shared ring memory.
///
/// Only frontend operations exist here: a `FrontRing` cannot consume requests or produce
/// responses.
#[derive(Debug)]
pub struct FrontRing<K: RingKind, M: RingMem> {
    mem: M,
    size: u32,
    mask: u32,
    /// Next request slot to fill (private until pushed).
    req_prod_pvt: u32,
    /// The last value this side published as `req_prod` (kept privately: the shared copy could be
    /// scribbled on by the peer).
    req_prod_pushed: u32,
    /// Next response to consume.
    rsp_cons: u32,
    /// Last `rsp_prod` read from the page (validated): responses up to here may be consumed.
    rsp_prod_seen: u32,
    /// Set once the backend is caught breaking the protocol; every later call returns it.
    broken: Option<RingError>,
    _kind: PhantomData<K>,
}

impl<K: RingKind, M: RingMem> FrontRing<K, M> {
    /// `SHARED_RING_INIT` + `FRONT_RING_INIT`: initialises the shared header and attaches. Do this
    /// before granting the page to the backend.
    pub fn init(mem: M) -> Self {
        mem.header().init();
        let (size, mask) = geometry::<K>(&mem);
        Self {
            mem,
            size,
            mask,
            req_prod_pvt: 0,
            req_prod_pushed: 0,
            rsp_cons: 0,
            rsp_prod_seen: 0,
            broken: None,
            _kind: PhantomData,
        }
    }

    /// `RING_SIZE`.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The private request producer.
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// The private response consumer.
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// The shared memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// `RING_FREE_REQUESTS`: request slots not holding an outstanding request.
    pub fn free_requests(&self) -> u32 {
        self.size - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// `RING_FULL`.
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Writes `req` into the next request slot (`RING_GET_REQUEST(req_prod_pvt++)`). The backend
    /// sees it after a push. Hands the request back if the ring is full.
    #[inline]
    pub fn put_request(&mut self, req: K::Req) -> Result<u32, K::Req> {
        self.put_request_as(req)
    }

    /// Like [`put_request`](Self::put_request) for another type that shares the slot, such as
    /// `netif_extra_info` in a tx ring.
    #[inline]
    pub fn put_request_as<T: Slot>(&mut self, v: T) -> Result<u32, T> {
        if self.is_full() {
            return Err(v);
        }
        let idx = self.req_prod_pvt;
        write_slot::<K, T>(self.mem.slot_words(), idx & self.mask, &v);
        self.req_prod_pvt = idx.wrapping_add(1);
        Ok(idx)
    }

    /// `RING_PUSH_REQUESTS`: publishes every request put so far, without a notify decision.
    pub fn push_requests(&mut self) {
        // Release (ring.h's wmb before the store): makes the slot writes of `put_request` visible
        // before the new producer; pairs with the Acquire load of `req_prod` in
        // `BackRing::unconsumed_requests`.
        self.mem
            .header()
            .req_prod
            .store(self.req_prod_pvt, publish_order());
        self.req_prod_pushed = self.req_prod_pvt;
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes the requests and says whether the backend
    /// asked to be notified (its `req_event` lies in the range just pushed).
    #[inline]
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_prod_pushed;
        let new = self.req_prod_pvt;
        self.push_requests();
        let hdr = self.mem.header();
        // Full barrier (ring.h's mb): orders the req_prod store above before the req_event load
        // below. Pairs with the full barrier in `BackRing::final_check_for_requests` between its
        // req_event store and its req_prod re-read: either we see its new req_event or it sees our
        // new req_prod, so a wakeup is never lost.
        full_barrier();
        // Relaxed: ordered by the barrier above.
        let event = hdr.req_event.load(Ordering::Relaxed);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Reads and validates the shared `rsp_prod`, remembering it for `next_response`.
    fn refresh_rsp_prod(&mut self) -> Result<u32, RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        // Acquire: pairs with the Release store of rsp_prod in `BackRing::push_responses`, so the
        // response slots below it are visible to `read_slot`.
        let prod = self.mem.header().rsp_prod.load(Ordering::Acquire);
        // Only pushed requests can have responses: bounding by req_prod_pvt would let a hostile
        // backend make us read slots we have put but not yet published.
        let outstanding = self.req_prod_pushed.wrapping_sub(self.rsp_cons);
        if prod.wrapping_sub(self.rsp_cons) > outstanding {
            let e = RingError::ResponseOverflow {
                rsp_prod: prod,
                rsp_cons: self.rsp_cons,
                req_prod: self.req_prod_pushed,
            };
            self.broken = Some(e);
            self.rsp_prod_seen = self.rsp_cons;
            return Err(e);
        }
        self.rsp_prod_seen = prod;
        Ok(prod)
    }

    /// `RING_HAS_UNCONSUMED_RESPONSES`: how many responses are waiting. A protocol violation is
    /// sticky: once caught, this and every consuming call return the same error.
    pub fn unconsumed_responses(&mut self) -> Result<u32, RingError> {
        Ok(self.refresh_rsp_prod()?.wrapping_sub(self.rsp_cons))
    }

    /// Copies out the next response, if any (`RING_GET_RESPONSE(rsp_cons++)`).
    #[inline]
    pub fn next_response(&mut self) -> Result<Option<K::Rsp>, RingError> {
        self.next_response_as()
    }

    /// Like [`next_response`](Self::next_response) for another type that shares the slot (an
    /// extra-info response).
    #[inline]
    pub fn next_response_as<T: Slot>(&mut self) -> Result<Option<T>, RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        if self.rsp_cons == self.rsp_prod_seen && self.refresh_rsp_prod()? == self.rsp_cons {
            return Ok(None);
        }
        let v = read_slot::<K, T>(self.mem.slot_words(), self.rsp_cons & self.mask);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(v))
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: true if responses are waiting. If none are, asks the
    /// backend to notify on the next one and checks again, so a response pushed concurrently is
    /// either seen here or announced by an event.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        // Relaxed: ordered before the re-read by the barrier below.
        self.mem
            .header()
            .rsp_event
            .store(self.rsp_cons.wrapping_add(1), Ordering::Relaxed);
        // Full barrier (ring.h's mb): orders the rsp_event store before the rsp_prod re-read.
        // Pairs with the full barrier in `BackRing::push_responses_and_check_notify` between its
        // rsp_prod store and its rsp_event load.
        full_barrier();
        Ok(self.unconsumed_responses()? > 0)
    }
}
