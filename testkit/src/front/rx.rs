//! The well-behaved receive side of [`RawFront`]: buffers posted as granted pages (copy) or
//! accept-transfer entries (flip), responses taken in request order, chains joined.

use netback::RxMode;
use netif_ring::netif::{ExtraInfo, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, RxRequest, RxResponse};

use super::{RawFront, extra_bytes};

/// Rx buffers [`RawFront::drain`] keeps posted.
pub const DRAIN_POSTED: usize = 64;

/// A frame received with its rx metadata.
#[derive(Debug, Default, Clone)]
pub struct RxFrame {
    /// The frame.
    pub data: Vec<u8>,
    /// The first slot's flags.
    pub first_flags: u16,
    /// The GSO extra-info slot's bytes, if one followed.
    pub extra: Option<[u8; 8]>,
    /// Data slots it took.
    pub slots: usize,
}

impl RawFront {
    /// Posts `n` rx buffers (copy: granted pages; flip: accept-transfer entries) and pushes.
    #[track_caller]
    pub fn post_rx(&mut self, n: usize) {
        let posted = self.post_rx_up_to(n);
        assert_eq!(
            posted, n,
            "posted {posted} of {n} rx buffers: the rx ring or the guest's memory is full"
        );
    }

    /// Posts up to `n` rx buffers, as many as the ring and the reservation have room for, and
    /// pushes; returns how many.
    #[track_caller]
    pub fn post_rx_up_to(&mut self, n: usize) -> usize {
        let mut posted = 0;
        while posted < n && !self.rx.is_full() {
            let Ok(pfn) = self.dom.alloc_page() else {
                break;
            };
            let gref = match self.keys.mode {
                RxMode::Copy => self.dom.grant_access(self.backend, pfn, false),
                RxMode::Flip => self.dom.grant_accept_transfer(self.backend, pfn),
            }
            .expect("grant");
            let id = self.next_id();
            self.rx_bufs.insert(id, (pfn, gref));
            self.rx_order.push_back(id);
            self.rx
                .put_request(RxRequest {
                    id,
                    pad: 0,
                    gref: gref.0,
                })
                .expect("not full");
            posted += 1;
        }
        if self.rx.push_requests_and_check_notify() {
            self.evtchn
                .notify(self.port)
                .expect("the backend's port is bound");
        }
        posted
    }

    /// Rx buffers posted and not yet answered.
    pub fn posted(&self) -> usize {
        self.rx_bufs.len()
    }

    /// Takes what arrived ([`RawFront::recv`]) and posts buffers back up to [`DRAIN_POSTED`]: a
    /// guest that keeps up.
    #[track_caller]
    pub fn drain(&mut self) -> Vec<Result<Vec<u8>, i16>> {
        let got = self.recv();
        let want = DRAIN_POSTED.saturating_sub(self.posted());
        self.post_rx_up_to(want);
        got
    }

    /// Received frames (multi-slot chains joined); a failed slot as `Err(status)`, which also
    /// drops the rest of its chain. Panics on a response to a request never posted.
    #[track_caller]
    pub fn recv(&mut self) -> Vec<Result<Vec<u8>, i16>> {
        let mut out = Vec::new();
        while let Some(rsp) = self
            .rx
            .next_response()
            .expect("the backend's rx responses are well-formed")
        {
            let rsp: RxResponse = rsp;
            let Some((pfn, gref)) = self.rx_bufs.remove(&rsp.id) else {
                panic!(
                    "the backend answered rx id {} that was never posted",
                    rsp.id
                );
            };
            self.rx_order.retain(|i| *i != rsp.id);
            self.end_rx_grant(gref);
            if rsp.status < 0 {
                self.partial.clear();
                out.push(Err(rsp.status));
            } else {
                let mut buf = vec![0u8; rsp.status as usize];
                self.dom
                    .read(pfn, rsp.offset as usize, &mut buf)
                    .expect("the response lies in the page");
                self.partial.extend_from_slice(&buf);
                if rsp.flags & NETRXF_MORE_DATA == 0 {
                    out.push(Ok(std::mem::take(&mut self.partial)));
                }
            }
            self.dom.free_page(pfn).expect("free");
        }
        out
    }

    /// Received frames with their offload metadata, checking the rx protocol as netfront relies
    /// on it: one response per request, in request order (an extra-info slot consumes the
    /// request posted after the frame's first).
    #[track_caller]
    pub fn recv_meta(&mut self) -> Vec<RxFrame> {
        let mut out = Vec::new();
        let mut cur: Option<RxFrame> = None;
        let mut want_extra = false;
        while let Some(&id) = self.rx_order.front() {
            let (pfn, gref) = self.rx_bufs[&id];
            if want_extra {
                // The extra-info slot overlays this request's response; its buffer is unused.
                let Some(e) = self
                    .rx
                    .next_response_as::<ExtraInfo>()
                    .expect("the backend's rx responses are well-formed")
                else {
                    break;
                };
                want_extra = false;
                let f = cur.as_mut().expect("an extra slot follows a first slot");
                f.extra = Some(extra_bytes(&e));
                self.end_rx_grant(gref);
                if f.first_flags & NETRXF_MORE_DATA == 0 {
                    out.push(cur.take().expect("a frame in progress"));
                }
            } else {
                let Some(rsp) = self
                    .rx
                    .next_response()
                    .expect("the backend's rx responses are well-formed")
                else {
                    break;
                };
                let rsp: RxResponse = rsp;
                assert_eq!(rsp.id, id, "responses come back in request order");
                assert!(rsp.status >= 0, "an rx error: {}", rsp.status);
                self.end_rx_grant(gref);
                let mut buf = vec![0u8; rsp.status as usize];
                self.dom
                    .read(pfn, rsp.offset as usize, &mut buf)
                    .expect("the response lies in the page");
                let f = cur.get_or_insert_with(|| RxFrame {
                    first_flags: rsp.flags,
                    ..RxFrame::default()
                });
                f.data.extend_from_slice(&buf);
                f.slots += 1;
                want_extra = f.slots == 1 && rsp.flags & NETRXF_EXTRA_INFO != 0;
                if rsp.flags & NETRXF_MORE_DATA == 0 && !want_extra {
                    out.push(cur.take().expect("a frame in progress"));
                }
            }
            self.rx_bufs.remove(&id);
            self.rx_order.pop_front();
            self.dom.free_page(pfn).expect("free");
        }
        if self.rx_order.is_empty() {
            assert!(
                self.rx
                    .next_response()
                    .expect("the backend's rx responses are well-formed")
                    .is_none(),
                "a response for no posted request"
            );
        }
        out
    }

    /// Ends an answered buffer's grant: access in copy mode, the transfer in flip mode.
    #[track_caller]
    fn end_rx_grant(&self, gref: hypervisor::GrantRef) {
        match self.keys.mode {
            RxMode::Copy => self
                .dom
                .end_access(gref)
                .expect("an answered buffer's grant is free"),
            RxMode::Flip => {
                self.dom
                    .end_transfer(gref)
                    .expect("an answered buffer's transfer ends");
            }
        }
    }
}
