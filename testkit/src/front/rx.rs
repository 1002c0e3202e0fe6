//! The well-behaved receive side of [`RawFront`]: buffers posted as granted pages (copy) or
//! accept-transfer entries (flip), responses taken in request order, chains joined.

use netback::RxMode;
use netif_ring::netif::{
    ExtraInfo, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, RxRequest, RxResponse,
    XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_EXTRA_TYPE_GSO,
};

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
    /// Every extra-info slot's bytes, in ring order (GSO, hash, XDP as netback lays them out).
    pub extras: Vec<[u8; 8]>,
    /// Data slots it took.
    pub slots: usize,
    /// Each data slot's offset in its buffer.
    pub offsets: Vec<u16>,
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

    /// Received frames (multi-slot chains joined, extra-info slots skipped); a failed slot as
    /// `Err(status)`, which also drops the rest of its chain. Panics on a response to a request
    /// never posted.
    #[track_caller]
    pub fn recv(&mut self) -> Vec<Result<Vec<u8>, i16>> {
        let mut out = Vec::new();
        for f in self.recv_slots() {
            match f {
                Ok(f) => out.push(Ok(f.data)),
                Err(st) => out.push(Err(st)),
            }
        }
        out
    }

    /// The responses that arrived, as frames (an error slot as its status: it ends its frame,
    /// whose other slots are dropped).
    #[track_caller]
    fn recv_slots(&mut self) -> Vec<Result<RxFrame, i16>> {
        let mut out = Vec::new();
        loop {
            if self.rx_extras_pending {
                // An extra-info slot overlays the response to the request posted in its ring
                // slot; that buffer carries nothing.
                let Some(&id) = self.rx_order.front() else {
                    break;
                };
                let Some(e) = self
                    .rx
                    .next_response_as::<ExtraInfo>()
                    .expect("the backend's rx responses are well-formed")
                else {
                    break;
                };
                self.rx_order.pop_front();
                let (pfn, gref) = self.rx_bufs.remove(&id).expect("a posted buffer");
                self.end_rx_grant(gref);
                self.dom.free_page(pfn).expect("free");
                self.rx_extras_pending = e.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0;
                let f = self.partial_frame.get_or_insert_with(RxFrame::default);
                let bytes = extra_bytes(&e);
                if e.type_ == XEN_NETIF_EXTRA_TYPE_GSO {
                    f.extra = Some(bytes);
                }
                f.extras.push(bytes);
                if !self.rx_extras_pending && f.first_flags & NETRXF_MORE_DATA == 0 {
                    self.finish_rx_frame(&mut out);
                }
                continue;
            }
            let Some(rsp) = self
                .rx
                .next_response()
                .expect("the backend's rx responses are well-formed")
            else {
                break;
            };
            let rsp: RxResponse = rsp;
            let Some((pfn, gref)) = self.rx_bufs.remove(&rsp.id) else {
                panic!(
                    "the backend answered rx id {} that was never posted",
                    rsp.id
                );
            };
            assert_eq!(
                self.rx_order.pop_front(),
                Some(rsp.id),
                "responses come back in request order"
            );
            self.end_rx_grant(gref);
            let first = self.partial_frame.is_none();
            let f = self.partial_frame.get_or_insert_with(|| RxFrame {
                first_flags: rsp.flags,
                ..RxFrame::default()
            });
            if rsp.status < 0 {
                f.slots = usize::MAX; // marks the frame failed
                self.rx_error = Some(rsp.status);
            } else if f.slots != usize::MAX {
                let mut buf = vec![0u8; rsp.status as usize];
                self.dom
                    .read(pfn, rsp.offset as usize, &mut buf)
                    .expect("the response lies in the page");
                f.data.extend_from_slice(&buf);
                f.slots += 1;
                f.offsets.push(rsp.offset);
            }
            self.dom.free_page(pfn).expect("free");
            self.rx_extras_pending = first && rsp.flags & NETRXF_EXTRA_INFO != 0;
            if rsp.flags & NETRXF_MORE_DATA == 0 && !self.rx_extras_pending {
                self.finish_rx_frame(&mut out);
            }
        }
        out
    }

    fn finish_rx_frame(&mut self, out: &mut Vec<Result<RxFrame, i16>>) {
        let Some(f) = self.partial_frame.take() else {
            return;
        };
        match self.rx_error.take() {
            Some(st) => out.push(Err(st)),
            None => out.push(Ok(f)),
        }
    }

    /// Received frames with their offload metadata, checking the rx protocol as netfront relies
    /// on it: one response per request, in request order (an extra-info slot consumes the
    /// request posted after the frame's first), and no error.
    #[track_caller]
    pub fn recv_meta(&mut self) -> Vec<RxFrame> {
        self.recv_slots()
            .into_iter()
            .map(|f| f.unwrap_or_else(|st| panic!("an rx error: {st}")))
            .collect()
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
