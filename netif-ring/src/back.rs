//! The backend's end of a ring: consumes requests, produces responses.
//!
//! Everything read from the shared page is untrusted: `req_prod` is validated against the ring's
//! capacity before use (`REQUEST_PROD_OVERFLOW`) and each request is copied out exactly once.

use core::marker::PhantomData;

use crate::error::RingError;
use crate::sring::{RingKind, RingMem, Slot, geometry, read_slot, write_slot};
use crate::sync::{Ordering, full_barrier, publish_order};

/// `struct NAME##_back_ring`: the backend's private indices over shared ring memory.
///
/// Only backend operations exist here: a `BackRing` cannot produce requests or consume responses.
#[derive(Debug)]
pub struct BackRing<K: RingKind, M: RingMem> {
    mem: M,
    size: u32,
    mask: u32,
    /// Next response slot to fill (private until pushed).
    rsp_prod_pvt: u32,
    /// The last value this side published as `rsp_prod`.
    rsp_prod_pushed: u32,
    /// Next request to consume.
    req_cons: u32,
    /// Requests known to be available past `req_cons` (from the last validated `req_prod`).
    req_avail: u32,
    /// Set once the frontend is caught breaking the protocol; every later call returns it.
    broken: Option<RingError>,
    _kind: PhantomData<K>,
}

impl<K: RingKind, M: RingMem> BackRing<K, M> {
    /// `BACK_RING_ATTACH`: attaches to a ring the frontend initialised, starting at its current
    /// `rsp_prod` (0 for a fresh ring). The value is checked against `req_prod` on first use.
    pub fn attach(mem: M) -> Self {
        let (size, mask) = geometry::<K>(&mem);
        // Relaxed: the start index is re-validated against req_prod (read with Acquire) before
        // any slot is read; a fresh ring reads 0.
        let start = mem.header().rsp_prod.load(Ordering::Relaxed);
        Self {
            mem,
            size,
            mask,
            rsp_prod_pvt: start,
            rsp_prod_pushed: start,
            req_cons: start,
            req_avail: 0,
            broken: None,
            _kind: PhantomData,
        }
    }

    /// `RING_SIZE`.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The private request consumer.
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// The private response producer.
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// The shared memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// `RING_UNCONSUMED_REQUESTS` with `RING_REQUEST_PROD_OVERFLOW`: reads `req_prod`, rejects a
    /// value that claims more outstanding requests than the ring holds, and returns how many
    /// requests may be consumed now (never more than there are free response slots for).
    ///
    /// A violation is sticky: once caught, this and every consuming call return the same error.
    pub fn unconsumed_requests(&mut self) -> Result<u32, RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        // Acquire: pairs with the Release store of req_prod in `FrontRing::push_requests`, so the
        // request slots below it are visible to `read_slot`.
        let prod = self.mem.header().req_prod.load(Ordering::Acquire);
        // Also refuse a req_prod moved back behind requests already consumed (Linux netback's
        // "Impossible number of requests": `req_prod - req_cons > size`): within a pass
        // rsp_prod_pvt lags req_cons, so the first check alone would let such a req_prod through
        // and hand out up to a ring of slots the frontend never published.
        if prod.wrapping_sub(self.rsp_prod_pvt) > self.size
            || prod.wrapping_sub(self.req_cons) > self.size
        {
            let e = RingError::RequestOverflow {
                req_prod: prod,
                rsp_prod_pvt: self.rsp_prod_pvt,
                size: self.size,
            };
            self.broken = Some(e);
            self.req_avail = 0;
            return Err(e);
        }
        // Both checks above keep `prod - req_cons` and the room within the ring.
        let unconsumed = prod.wrapping_sub(self.req_cons);
        let room = self.size - self.req_cons.wrapping_sub(self.rsp_prod_pvt);
        self.req_avail = unconsumed.min(room);
        Ok(self.req_avail)
    }

    /// Copies out the next request, if any (`RING_COPY_REQUEST(req_cons++)`): each word of the
    /// slot is read once; validate the returned copy, never the slot.
    #[inline]
    pub fn next_request(&mut self) -> Result<Option<K::Req>, RingError> {
        self.next_request_as()
    }

    /// Like [`next_request`](Self::next_request) for another type that shares the slot, such as
    /// the `netif_extra_info` that follows a tx request with `NETTXF_extra_info`.
    #[inline]
    pub fn next_request_as<T: Slot>(&mut self) -> Result<Option<T>, RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        if self.req_avail == 0 && self.unconsumed_requests()? == 0 {
            return Ok(None);
        }
        let v = read_slot::<K, T>(self.mem.slot_words(), self.req_cons & self.mask);
        self.req_cons = self.req_cons.wrapping_add(1);
        self.req_avail -= 1;
        Ok(Some(v))
    }

    /// Copies out the next request without consuming it (`RING_COPY_REQUEST(req_cons)`, as
    /// Linux's credit check looks at a packet's size before taking it). A later
    /// [`next_request`](Self::next_request) reads the slot again: validate that copy, not this
    /// one, since the peer may have rewritten the slot in between.
    #[inline]
    pub fn peek_request(&mut self) -> Result<Option<K::Req>, RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        if self.req_avail == 0 && self.unconsumed_requests()? == 0 {
            return Ok(None);
        }
        Ok(Some(read_slot::<K, K::Req>(
            self.mem.slot_words(),
            self.req_cons & self.mask,
        )))
    }

    /// Writes a response into the next response slot (`RING_GET_RESPONSE(rsp_prod_pvt++)`),
    /// returning its index. The frontend sees it after a push. Hands the response back if every
    /// consumed request already has a response (a backend bug, not a peer's).
    #[inline]
    pub fn put_response(&mut self, rsp: K::Rsp) -> Result<u32, K::Rsp> {
        self.put_response_as(rsp)
    }

    /// Like [`put_response`](Self::put_response) for another type that shares the slot.
    #[inline]
    pub fn put_response_as<T: Slot>(&mut self, v: T) -> Result<u32, T> {
        if self.rsp_prod_pvt == self.req_cons {
            return Err(v);
        }
        let idx = self.rsp_prod_pvt;
        write_slot::<K, T>(self.mem.slot_words(), idx & self.mask, &v);
        self.rsp_prod_pvt = idx.wrapping_add(1);
        Ok(idx)
    }

    /// Overwrites the response at `idx`, which must be put but not yet pushed; used to patch the
    /// status of a response whose grant copy failed after the batch flushed. Hands the response
    /// back if `idx` is not a private response slot.
    pub fn patch_response(&mut self, idx: u32, rsp: K::Rsp) -> Result<(), K::Rsp> {
        if idx.wrapping_sub(self.rsp_prod_pushed)
            >= self.rsp_prod_pvt.wrapping_sub(self.rsp_prod_pushed)
        {
            return Err(rsp);
        }
        write_slot::<K, K::Rsp>(self.mem.slot_words(), idx & self.mask, &rsp);
        Ok(())
    }

    /// `RING_PUSH_RESPONSES`: publishes every response put so far, without a notify decision.
    pub fn push_responses(&mut self) {
        // Release (ring.h's wmb before the store): makes the slot writes of `put_response`
        // visible before the new producer; pairs with the Acquire load of rsp_prod in
        // `FrontRing::unconsumed_responses`.
        self.mem
            .header()
            .rsp_prod
            .store(self.rsp_prod_pvt, publish_order());
        self.rsp_prod_pushed = self.rsp_prod_pvt;
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: publishes the responses and says whether the
    /// frontend asked to be notified (its `rsp_event` lies in the range just pushed).
    #[inline]
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        let old = self.rsp_prod_pushed;
        let new = self.rsp_prod_pvt;
        self.push_responses();
        // Full barrier (ring.h's mb): orders the rsp_prod store above before the rsp_event load
        // below. Pairs with the full barrier in `FrontRing::final_check_for_responses` between its
        // rsp_event store and its rsp_prod re-read.
        full_barrier();
        // Relaxed: ordered by the barrier above.
        let event = self.mem.header().rsp_event.load(Ordering::Relaxed);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: true if requests are waiting. If none are, asks the
    /// frontend to notify on the next one and checks again, so a request pushed concurrently is
    /// either seen here or announced by an event.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        self.set_req_event(self.req_cons.wrapping_add(1));
        Ok(self.unconsumed_requests()? > 0)
    }

    /// Asks the frontend to notify when `req_prod` passes `event` (netback's rx path uses
    /// `req_cons + needed` to sleep until enough buffers are posted). Re-check the ring after
    /// calling this: a push that raced with it may not have notified.
    pub fn set_req_event(&mut self, event: u32) {
        // Relaxed: ordered before the caller's re-read of req_prod by the barrier below.
        self.mem.header().req_event.store(event, Ordering::Relaxed);
        // Full barrier (ring.h's mb): orders the req_event store before the req_prod re-read.
        // Pairs with the full barrier in `FrontRing::push_requests_and_check_notify` between its
        // req_prod store and its req_event load.
        full_barrier();
    }
}
