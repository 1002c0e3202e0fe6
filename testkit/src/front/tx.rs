//! The well-behaved transmit side of [`RawFront`]: frames in granted pages, one slot per page,
//! as Linux's netfront lays them out.

use hypervisor::{GrantRef, PAGE_SIZE};
use netif_ring::netif::{ExtraInfo, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, TxRequest};

use super::RawFront;

impl RawFront {
    /// Transmits `data`, one slot per page-sized chunk, and pushes.
    #[track_caller]
    pub fn send(&mut self, data: &[u8]) {
        assert!(
            self.try_send(data),
            "no room to send {} bytes: the tx ring or the guest's memory is full",
            data.len()
        );
    }

    /// Transmits `data` like [`RawFront::send`]; false if the ring or the reservation has no
    /// room (nothing is put then).
    pub fn try_send(&mut self, data: &[u8]) -> bool {
        self.try_send_with(data, 0, None)
    }

    /// Transmits `data` (one slot per page-sized chunk) with offload `flags` on the first
    /// request and, if given, an extra-info slot (GSO) after it, and pushes.
    #[track_caller]
    pub fn send_with(&mut self, data: &[u8], flags: u16, extra: Option<ExtraInfo>) {
        assert!(
            self.try_send_with(data, flags, extra),
            "no room to send {} bytes: the tx ring or the guest's memory is full",
            data.len()
        );
    }

    /// [`RawFront::send_with`]; false if the ring or the reservation has no room (nothing is
    /// put then).
    pub fn try_send_with(&mut self, data: &[u8], flags: u16, extra: Option<ExtraInfo>) -> bool {
        let chunks: Vec<&[u8]> = data.chunks(PAGE_SIZE).collect();
        let slots = chunks.len() + usize::from(extra.is_some());
        if (self.tx.free_requests() as usize) < slots {
            return false;
        }
        let mut reqs = Vec::with_capacity(chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            let Ok(pfn) = self.dom.alloc_page() else {
                for req in reqs {
                    let TxRequest { id, .. } = req;
                    if let Some((pfn, gref)) = self.tx_pages.remove(&id) {
                        let _ = self.dom.end_access(gref);
                        let _ = self.dom.free_page(pfn);
                    }
                }
                return false;
            };
            self.dom
                .write(pfn, 0, c)
                .expect("the guest writes its own page");
            let gref = self
                .dom
                .grant_access(self.backend, pfn, true)
                .expect("grant");
            let id = self.next_id();
            self.tx_pages.insert(id, (pfn, gref));
            let mut f = if i + 1 < chunks.len() {
                NETTXF_MORE_DATA
            } else {
                0
            };
            if i == 0 {
                f |= flags;
                if extra.is_some() {
                    f |= NETTXF_EXTRA_INFO;
                }
            }
            reqs.push(TxRequest {
                gref: gref.0,
                offset: 0,
                flags: f,
                id,
                size: if i == 0 { data.len() } else { c.len() } as u16,
            });
        }
        for (i, req) in reqs.into_iter().enumerate() {
            self.tx.put_request(req).expect("room checked");
            if i == 0
                && let Some(e) = extra
            {
                self.tx.put_request_as(e).expect("room checked");
            }
        }
        self.push_tx();
        true
    }

    /// A page holding `data` at `offset`, granted read-only to the backend, for hand-built
    /// requests (its grant is never ended).
    #[track_caller]
    pub fn tx_page(&mut self, offset: usize, data: &[u8]) -> GrantRef {
        let pfn = self.dom.alloc_page().expect("a page for tx");
        self.dom
            .write(pfn, offset, data)
            .expect("the guest writes its own page");
        self.dom
            .grant_access(self.backend, pfn, true)
            .expect("grant")
    }

    /// Publishes the requests put on the tx ring and notifies if the backend asked for it.
    #[track_caller]
    pub fn push_tx(&mut self) {
        if self.tx.push_requests_and_check_notify() {
            self.evtchn
                .notify(self.port)
                .expect("the backend's port is bound");
        }
    }

    /// Collects tx responses (into [`RawFront::tx_responses`]) and ends the grants of the
    /// pages [`RawFront::send`] used; returns how many arrived.
    #[track_caller]
    pub fn reap_tx(&mut self) -> usize {
        let mut n = 0;
        while let Some(rsp) = self
            .tx
            .next_response()
            .expect("the backend's tx responses are well-formed")
        {
            if let Some((pfn, gref)) = self.tx_pages.remove(&rsp.id) {
                self.dom
                    .end_access(gref)
                    .expect("an answered request's grant is free");
                self.dom.free_page(pfn).expect("free");
            }
            self.tx_responses.push(rsp);
            n += 1;
        }
        n
    }
}
