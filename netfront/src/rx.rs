//! The receive path: posting buffers (granted pages or accept-transfer entries), consuming
//! responses, assembling `NETRXF_more_data` chains with their extra-info slots, checking them
//! ([`crate::rxcheck`]), lending frames to the stack.
//!
//! Slot layout, as Linux netback writes it (`xenvif_rx_skb`): the first data slot carries the
//! frame's checksum flags and, for GSO, `NETRXF_extra_info`; the extra-info slot(s) come right
//! after it, each in a ring slot whose request (and buffer) it consumed; then the remaining data
//! slots, `NETRXF_more_data` on all but the last. Buffers are found by ring index: one response
//! per request, in request order. Linux netback publishes a frame's responses together
//! (`xenvif_rx_complete`), so a frame still unfinished when the responses run out is dropped,
//! as Linux netfront does ("Missing extra info", "Need more slots").

use std::collections::VecDeque;

use std::sync::Arc;

use hypervisor::{DomId, GrantRef, Pfn, Port};
use hypervisor::{EventChannel, FrontendDomain};
use netif_ring::netif::{
    ExtraInfo, ExtraRepr, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, RxRequest, RxResponse,
    XEN_NETIF_EXTRA_FLAG_MORE,
};
use netif_ring::{PAGE_SIZE, RingError, RxFrontRing};

use crate::config::RxMode;
use crate::error::{Error, Result};
use crate::ringmem::GuestRing;
use crate::rxcheck::{self, Bad, Delivered, FrameSource, RxPolicy};
use crate::stats::Stats;

/// A posted buffer: the page and its grant (copy) or accept-transfer entry (flip).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxBuf {
    pub(crate) pfn: Pfn,
    pub(crate) gref: GrantRef,
}

/// One slot of a received frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frag {
    pub(crate) pfn: Pfn,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// A complete frame: the next `nfrags` entries of `frags`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub(crate) nfrags: usize,
    pub(crate) len: usize,
    /// Its hash extra's (value, `_XEN_NETIF_CTRL_HASH_TYPE_*`), if one came.
    pub(crate) hash: Option<(u32, u8)>,
}

/// The frame being assembled from responses.
#[derive(Debug, Default)]
struct Partial {
    nfrags: usize,
    len: usize,
    bad: Option<Bad>,
    active: bool,
    /// The first slot's flags (checksum bits, `extra_info`).
    flags: u16,
    /// The last data slot had `more_data`.
    more: bool,
    /// The GSO extra-info slot.
    gso: Option<ExtraInfo>,
    /// The hash extra's (value, type).
    hash: Option<(u32, u8)>,
    /// The XDP extra's headroom.
    xdp: Option<u16>,
}

/// A frame's fragments in the domain's pages.
struct PageFrags<'a, D> {
    dom: &'a D,
    frags: std::collections::vec_deque::Iter<'a, Frag>,
}

impl<D: FrontendDomain> FrameSource for PageFrags<'_, D> {
    fn visit(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        for fr in self.frags.clone() {
            let go_on = self
                .dom
                .with_page(fr.pfn, |p| f(&p[fr.offset..fr.offset + fr.len]));
            match go_on {
                Ok(true) => {}
                Ok(false) => return true,
                Err(_) => return false,
            }
        }
        true
    }
}

/// Receive state.
#[derive(Debug)]
pub(crate) struct RxPath<D: FrontendDomain> {
    pub(crate) dom: D,
    backend: DomId,
    pub(crate) port: Port,
    pub(crate) evtchn: Arc<D::Evtchn>,
    pub(crate) mode: RxMode,
    pub(crate) ring: RxFrontRing<GuestRing<D>>,
    /// The buffer posted in each ring slot (the request id is the slot index, as in Linux).
    pub(crate) posted: Vec<Option<RxBuf>>,
    /// Pages ready to be posted.
    pub(crate) free_pages: Vec<Pfn>,
    /// Buffers whose grant could not be ended (the backend still holds them); never reused.
    pub(crate) stuck: Vec<RxBuf>,
    /// Fragments of completed frames (front) and of the frame in progress (back).
    pub(crate) frags: VecDeque<Frag>,
    pub(crate) ready: VecDeque<Frame>,
    partial: Partial,
    /// The next response is an extra-info slot of the frame in progress.
    extra_pending: bool,
    /// Where multi-slot frames are assembled, and headers copied for checks (reused).
    pub(crate) scratch: Vec<u8>,
    refill_batch: usize,
    /// The largest frame accepted (a GSO super-frame when GSO is negotiated).
    max_frame: usize,
    policy: RxPolicy,
    pub(crate) broken: Option<RingError>,
    pub(crate) stats: Stats,
    /// The hash of the frame the stack took last.
    pub(crate) last_hash: Option<(u32, u8)>,
}

impl<D: FrontendDomain> RxPath<D> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        dom: D,
        backend: DomId,
        port: Port,
        evtchn: Arc<D::Evtchn>,
        mode: RxMode,
        ring: RxFrontRing<GuestRing<D>>,
        pages: Vec<Pfn>,
        refill_batch: usize,
        max_frame: usize,
        policy: RxPolicy,
    ) -> Self {
        let size = ring.size() as usize;
        Self {
            dom,
            evtchn,
            backend,
            port,
            mode,
            ring,
            posted: vec![None; size],
            free_pages: pages,
            stuck: Vec::new(),
            frags: VecDeque::with_capacity(size),
            ready: VecDeque::with_capacity(size),
            partial: Partial::default(),
            extra_pending: false,
            scratch: vec![0; max_frame],
            refill_batch: refill_batch.min(size),
            max_frame,
            policy,
            broken: None,
            stats: Stats::default(),
            last_hash: None,
        }
    }

    fn outstanding(&self) -> usize {
        (self.ring.size() - self.ring.free_requests()) as usize
    }

    /// Posts free pages when a batch's worth is free (or the ring runs low), with one push and
    /// one notify decision. Returns whether a notification is owed (the caller sends it once
    /// the backend is connected) and how many were posted.
    pub(crate) fn refill(&mut self, notify: bool) -> Result<usize> {
        if self.broken.is_some() {
            return Ok(0);
        }
        let room = (self.ring.free_requests() as usize).min(self.free_pages.len());
        if room == 0 || (room < self.refill_batch && self.outstanding() >= self.refill_batch) {
            return Ok(0);
        }
        let mask = self.ring.size() - 1;
        let mut n = 0;
        let mut failure = None;
        while n < room {
            let Some(pfn) = self.free_pages.pop() else {
                break;
            };
            let slot = self.ring.req_prod_pvt() & mask;
            let granted = match self.mode {
                RxMode::Copy => self.dom.grant_access(self.backend, pfn, false),
                RxMode::Flip => self.dom.grant_accept_transfer(self.backend, pfn),
            };
            let gref = match granted {
                Ok(g) => g,
                Err(e) => {
                    self.free_pages.push(pfn);
                    failure = Some(e);
                    break;
                }
            };
            let req = RxRequest {
                id: slot as u16,
                pad: 0,
                gref: gref.0,
            };
            if self.ring.put_request(req).is_err() {
                // Cannot happen (room checked); undo rather than leak.
                let _ = self.end_buf(RxBuf { pfn, gref });
                self.free_pages.push(pfn);
                break;
            }
            self.posted[slot as usize] = Some(RxBuf { pfn, gref });
            n += 1;
        }
        if n > 0 {
            self.stats.rx_posted += n as u64;
            if self.ring.push_requests_and_check_notify() && notify {
                self.stats.notifies += 1;
                self.evtchn
                    .notify(self.port)
                    .map_err(Error::hv("notify(rx refill)"))?;
            }
        }
        match failure {
            Some(source) if n == 0 => Err(Error::Hypervisor {
                op: "grant rx buffer",
                source,
            }),
            _ => Ok(n),
        }
    }

    /// Posts every free page without notifying (before the backend is connected).
    pub(crate) fn refill_all(&mut self) -> Result<usize> {
        self.refill(false)
    }

    /// Ends a posted buffer's grant. `Ok(true)`: the page holds data for us (copy mode always;
    /// flip mode if a page was transferred). `Err`: the backend still holds the grant.
    fn end_buf(&self, buf: RxBuf) -> std::result::Result<bool, hypervisor::Error> {
        match self.mode {
            RxMode::Copy => self.dom.end_access(buf.gref).map(|()| true),
            RxMode::Flip => self.dom.end_transfer(buf.gref).map(|m| m.is_some()),
        }
    }

    /// Takes the buffer of the response just consumed at ring index `idx` and ends its grant.
    fn take_buf(&mut self, idx: u32) -> Option<(RxBuf, bool)> {
        let slot = (idx & (self.ring.size() - 1)) as usize;
        let buf = self.posted.get_mut(slot).and_then(Option::take)?;
        match self.end_buf(buf) {
            Ok(has_data) => Some((buf, has_data)),
            Err(_) => {
                self.stats.grant_busy += 1;
                self.stuck.push(buf);
                None
            }
        }
    }

    /// Consumes every available response; returns how many.
    pub(crate) fn process(&mut self) -> Result<usize> {
        if let Some(e) = self.broken {
            return Err(Error::Ring(e));
        }
        let mut n = 0;
        loop {
            let idx = self.ring.rsp_cons();
            if self.extra_pending {
                let x: ExtraInfo = match self.ring.next_response_as() {
                    Ok(Some(x)) => x,
                    Ok(None) => break,
                    Err(e) => return Err(self.fail(e)),
                };
                n += 1;
                self.on_extra(idx, x);
                continue;
            }
            let rsp: RxResponse = match self.ring.next_response() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return Err(self.fail(e)),
            };
            n += 1;
            self.on_response(idx, rsp);
        }
        if self.partial.active {
            // The responses ran out inside a frame: a backend publishes whole frames, so the
            // rest will not come (and what comes next is another frame's first slot).
            self.extra_pending = false;
            self.partial.bad.get_or_insert(Bad::Incomplete);
            self.finish_frame();
        }
        Ok(n)
    }

    /// An extra-info slot of the frame in progress: its request's buffer holds no data and goes
    /// back to the pool. A GSO slot is kept for the checks, a hash slot's value recorded, an XDP
    /// slot's headroom applied; anything else condemns the frame.
    fn on_extra(&mut self, idx: u32, x: ExtraInfo) {
        if let Some((buf, _)) = self.take_buf(idx) {
            self.free_pages.push(buf.pfn);
        }
        self.extra_pending = x.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0;
        let p = &mut self.partial;
        // A malformed slot (type 0 or >= MAX, GSO size 0, unknown GSO type), a multicast type
        // (a frontend's to send, never to receive), or a second slot of one type is a backend
        // bug.
        match ExtraRepr::parse(&x) {
            Ok(ExtraRepr::Gso { .. }) if p.gso.is_none() => p.gso = Some(x),
            Ok(ExtraRepr::Hash {
                hash_type, value, ..
            }) if p.hash.is_none() => p.hash = Some((u32::from_le_bytes(value), hash_type)),
            Ok(ExtraRepr::Xdp { headroom }) if p.xdp.is_none() => {
                p.xdp = Some(headroom);
                // Linux's netback answers offset 0 and counts the headroom in the status, and
                // Linux's netfront takes the offset from this slot: data that a response says
                // starts before the headroom starts at it (a backend that says where the data
                // is, as this project's does, is left alone).
                let n = self.frags.len();
                for f in self.frags.range_mut(n - p.nfrags..) {
                    p.len -= skip_headroom(f, headroom);
                }
            }
            _ => {
                p.bad.get_or_insert(Bad::Extra);
            }
        }
        if !self.extra_pending && !p.more {
            self.finish_frame();
        }
    }

    fn on_response(&mut self, idx: u32, rsp: RxResponse) {
        let first = !self.partial.active;
        let status = rsp.status;
        let offset = rsp.offset as usize;
        let mut bad = None;
        match self.take_buf(idx) {
            Some((buf, has_data)) => {
                if !has_data {
                    bad = Some(Bad::NoTransfer);
                } else if status < 0 {
                    bad = Some(Bad::Status);
                } else if offset + status as usize > PAGE_SIZE {
                    bad = Some(Bad::Slot);
                }
                let len = if bad.is_none() { status as usize } else { 0 };
                let mut frag = Frag {
                    pfn: buf.pfn,
                    offset: offset.min(PAGE_SIZE),
                    len,
                };
                let p = &mut self.partial;
                let skipped = p.xdp.map_or(0, |h| skip_headroom(&mut frag, h));
                self.frags.push_back(frag);
                p.nfrags += 1;
                p.len += len - skipped;
                if p.len > self.max_frame {
                    bad = bad.or(Some(Bad::TooLong));
                }
            }
            // The grant is stuck (or the slot was never posted, impossible after the ring's
            // checks): the frame cannot be trusted.
            None => bad = Some(Bad::Slot),
        }
        let p = &mut self.partial;
        p.active = true;
        if p.bad.is_none() {
            p.bad = bad;
        }
        p.more = rsp.flags & NETRXF_MORE_DATA != 0;
        if first {
            p.flags = rsp.flags;
            // Extra-info slots follow the first slot only (Linux netfront reads the flag there).
            self.extra_pending = rsp.flags & NETRXF_EXTRA_INFO != 0;
        }
        if !p.more && !self.extra_pending {
            self.finish_frame();
        }
    }

    /// Ends the frame in progress: checks it and queues it for the stack, or drops it and
    /// counts why.
    fn finish_frame(&mut self) {
        let p = std::mem::take(&mut self.partial);
        let mut bad = p.bad;
        if bad.is_none() && p.nfrags == 0 {
            bad = Some(Bad::Status);
        }
        if bad.is_none() {
            let src = PageFrags {
                dom: &self.dom,
                frags: self.frags.range(self.frags.len() - p.nfrags..),
            };
            let r = rxcheck::check(
                &src,
                p.len,
                p.flags,
                p.gso.as_ref(),
                &self.policy,
                &mut self.scratch,
            );
            match r {
                Ok(how) => {
                    self.count_delivered(how);
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += p.len as u64;
                    self.stats.rx_hash += u64::from(p.hash.is_some());
                    self.stats.rx_xdp += u64::from(p.xdp.is_some());
                    self.ready.push_back(Frame {
                        nfrags: p.nfrags,
                        len: p.len,
                        hash: p.hash,
                    });
                    return;
                }
                Err(b) => bad = Some(b),
            }
        }
        let s = &mut self.stats;
        match bad {
            Some(Bad::Status) | None => s.rx_drop_status += 1,
            Some(Bad::Slot) => s.rx_drop_bad_slot += 1,
            Some(Bad::TooLong) => s.rx_drop_too_long += 1,
            Some(Bad::NoTransfer) => s.rx_drop_no_transfer += 1,
            Some(Bad::Incomplete) => s.rx_drop_incomplete += 1,
            Some(Bad::Extra) => s.rx_drop_bad_extra += 1,
            Some(Bad::NotNegotiated) => s.rx_drop_not_negotiated += 1,
            Some(Bad::GsoMismatch) => s.rx_drop_gso_mismatch += 1,
            Some(Bad::CsumBlank) => s.rx_drop_csum_blank += 1,
            Some(Bad::Csum) => s.rx_drop_csum += 1,
        }
        for _ in 0..p.nfrags {
            if let Some(f) = self.frags.pop_back() {
                self.free_pages.push(f.pfn);
            }
        }
    }

    fn count_delivered(&mut self, how: Delivered) {
        let s = &mut self.stats;
        match how {
            Delivered::Gso => {
                s.rx_gso += 1;
                s.rx_csum_blank += 1;
            }
            Delivered::Blank => s.rx_csum_blank += 1,
            Delivered::Validated => s.rx_csum_validated += 1,
            Delivered::Verified => s.rx_csum_verified += 1,
            Delivered::Plain => {}
        }
    }

    fn fail(&mut self, e: RingError) -> Error {
        self.broken = Some(e);
        Error::Ring(e)
    }

    /// Hands the next complete frame to `f` (lent from the page when it is one slot), then
    /// returns its pages to the pool and refills if a batch is free.
    pub(crate) fn consume<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> R {
        let mut f = Some(f);
        let Some(frame) = self.ready.pop_front() else {
            // smoltcp only gets a token when a frame is ready; an empty frame is its own drop.
            return f
                .take()
                .map(|f| f(&[]))
                .unwrap_or_else(|| unreachable_call());
        };
        self.last_hash = frame.hash;
        let mut out = None;
        if frame.nfrags == 1
            && let Some(fr) = self.frags.front().copied()
        {
            let lent = self.dom.with_page(fr.pfn, |page| {
                let f = f.take();
                f.map(|f| f(&page[fr.offset..fr.offset + fr.len]))
            });
            if let Ok(Some(r)) = lent {
                out = Some(r);
            }
        }
        if out.is_none() {
            // Multi-slot (or the page could not be lent): assemble into scratch.
            let mut at = 0;
            let mut ok = true;
            for i in 0..frame.nfrags {
                let Some(fr) = self.frags.get(i).copied() else {
                    ok = false;
                    break;
                };
                let dst = &mut self.scratch[at..at + fr.len];
                ok &= self.dom.read(fr.pfn, fr.offset, dst).is_ok();
                at += fr.len;
            }
            let data = if ok {
                &self.scratch[..frame.len]
            } else {
                &[][..]
            };
            out = f.take().map(|f| f(data));
        }
        let _s = xenoprof::scope(xenoprof::Class::NETFRONT);
        for _ in 0..frame.nfrags {
            if let Some(fr) = self.frags.pop_front() {
                self.free_pages.push(fr.pfn);
            }
        }
        // A refill failure here is retried by the next poll; the frame was delivered.
        let _ = self.refill(true);
        out.unwrap_or_else(|| unreachable_call())
    }

    /// Every posted buffer (for teardown).
    pub(crate) fn take_posted(&mut self) -> Vec<RxBuf> {
        let mut v: Vec<RxBuf> = self.posted.iter_mut().filter_map(Option::take).collect();
        v.append(&mut self.stuck);
        v
    }

    /// Pages owned by the frontend outright (free, or holding received data).
    pub(crate) fn take_owned_pages(&mut self) -> Vec<Pfn> {
        let mut v: Vec<Pfn> = self.free_pages.drain(..).collect();
        v.extend(self.frags.drain(..).map(|f| f.pfn));
        self.ready.clear();
        v
    }

    /// Ends one buffer's grant at teardown.
    pub(crate) fn end_for_teardown(
        &self,
        buf: RxBuf,
    ) -> std::result::Result<(), hypervisor::Error> {
        self.end_buf(buf).map(|_| ())
    }
}

/// Moves a slot whose data the response says starts before `headroom` to start at it (see
/// `on_extra`); returns the bytes it lost.
fn skip_headroom(f: &mut Frag, headroom: u16) -> usize {
    let h = usize::from(headroom);
    if f.offset >= h {
        return 0;
    }
    let shift = (h - f.offset).min(f.len);
    f.offset += shift;
    f.len -= shift;
    shift
}

/// `f` is called exactly once on every path of `consume`; this marks the impossible case.
#[cold]
fn unreachable_call<R>() -> R {
    unreachable!("netfront rx: frame callback not called exactly once")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_info_flag_more_is_bit_zero() {
        // `on_extra` relies on this (netif.h XEN_NETIF_EXTRA_FLAG_MORE).
        assert_eq!(XEN_NETIF_EXTRA_FLAG_MORE, 1);
    }
}
