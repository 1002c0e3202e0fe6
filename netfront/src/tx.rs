//! The transmit path: checksum offload flags, frames into pool pages, one read-only grant per
//! slot, revoked on the response.

use std::sync::Arc;

use hypervisor::{DomId, GrantRef, Pfn, Port};
use hypervisor::{EventChannel, FrontendDomain};
use netif_ring::netif::{
    ExtraRepr, NETIF_RSP_NULL, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO,
    NETTXF_MORE_DATA, TxRequest, TxResponse,
};
use netif_ring::{PAGE_SIZE, RingError, TxFrontRing};
use offload::parse::L3Kind;

use crate::error::{Error, Result};
use crate::ringmem::GuestRing;
use crate::stats::Stats;

/// Slots of the largest frame (`XEN_NETIF_MAX_TX_SIZE` bytes).
const MAX_SLOTS: usize = (netif_ring::netif::XEN_NETIF_MAX_TX_SIZE as usize).div_ceil(PAGE_SIZE);

/// Checksum offload on transmit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxCsum {
    /// Checksum offload: smoltcp leaves TCP/UDP checksums to us (see [`TxPath::offload`]).
    pub(crate) offload: bool,
    /// The backend takes IPv6 partial checksums (`feature-ipv6-csum-offload`).
    pub(crate) ipv6: bool,
}

/// Transmit state: the ring, the page pool and the grants in flight.
#[derive(Debug)]
pub(crate) struct TxPath<D: FrontendDomain> {
    pub(crate) dom: D,
    pub(crate) backend: DomId,
    pub(crate) port: Port,
    pub(crate) evtchn: Arc<D::Evtchn>,
    pub(crate) ring: TxFrontRing<GuestRing<D>>,
    /// One page per request id.
    pub(crate) pages: Vec<Pfn>,
    /// The grant of each id while its request is outstanding.
    pub(crate) grefs: Vec<Option<GrantRef>>,
    /// Ids free for new requests.
    free_ids: Vec<u16>,
    /// Answered requests whose grant the backend still held; retried on every reclaim.
    pub(crate) busy: Vec<(u16, GrantRef)>,
    /// Ids of multicast control requests in flight (no page, no grant).
    control: Vec<bool>,
    /// Multicast control requests answered so far, and of those refused.
    pub(crate) mcast_answered: (u64, u64),
    /// Where smoltcp writes a frame before it goes into pages (reused, never reallocated).
    pub(crate) scratch: Vec<u8>,
    max_slots: usize,
    max_frame: usize,
    csum: TxCsum,
    pub(crate) broken: Option<RingError>,
    pub(crate) stats: Stats,
}

impl<D: FrontendDomain> TxPath<D> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        dom: D,
        backend: DomId,
        port: Port,
        evtchn: Arc<D::Evtchn>,
        ring: TxFrontRing<GuestRing<D>>,
        pages: Vec<Pfn>,
        max_frame: usize,
        csum: TxCsum,
    ) -> Self {
        let n = pages.len();
        Self {
            dom,
            backend,
            port,
            evtchn,
            ring,
            grefs: vec![None; n],
            control: vec![false; n],
            mcast_answered: (0, 0),
            free_ids: (0..n as u16).rev().collect(),
            pages,
            busy: Vec::new(),
            scratch: vec![0; max_frame],
            max_slots: max_frame.div_ceil(PAGE_SIZE),
            max_frame,
            csum,
            broken: None,
            stats: Stats::default(),
        }
    }

    /// The first request's offload flags for the frame in `scratch[..len]`, as Linux netfront's
    /// `xennet_start_xmit` sets them for a `CHECKSUM_PARTIAL` skb. With checksum offload smoltcp
    /// wrote 0 into every TCP/UDP checksum field; this writes the pseudo-header sum there
    /// (`offload::csum::set_partial`: a parse and a 12- or 36-byte sum, no pass over the data) and
    /// returns `csum_blank|data_validated`. An IPv6 frame to a backend without
    /// `feature-ipv6-csum-offload` is completed here instead (one pass, as Linux's stack does
    /// without `NETIF_F_IPV6_CSUM`) and goes without flags, like every frame that is not TCP/UDP
    /// (smoltcp computed its checksums).
    pub(crate) fn offload(&mut self, len: usize) -> u16 {
        if !self.csum.offload {
            return 0;
        }
        let frame = &mut self.scratch[..len];
        match offload::csum::set_partial(frame) {
            Ok(loc) if loc.l3 == L3Kind::Ipv4 || self.csum.ipv6 => {
                NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED
            }
            Ok(_) => {
                if offload::csum::complete(frame).is_ok() {
                    self.stats.tx_csum_filled += 1;
                }
                0
            }
            Err(_) => 0,
        }
    }

    /// Whether a frame of the largest size fits now (ring slots and pages).
    pub(crate) fn has_room(&self) -> bool {
        self.broken.is_none()
            && self.free_ids.len() >= self.max_slots
            && self.ring.free_requests() as usize >= self.max_slots
    }

    /// Sends `scratch[..len]`: writes it into pages, grants them read-only and pushes one
    /// request per page (`NETTXF_more_data` on all but the last; the first carries the total
    /// size and `flags`). Notifies if the backend asked for it.
    pub(crate) fn send_scratch(&mut self, len: usize, flags: u16) -> Result<()> {
        let slots = len.div_ceil(PAGE_SIZE);
        if len == 0 || len > self.max_frame || self.broken.is_some() {
            self.stats.tx_drop += 1;
            return Ok(());
        }
        if slots > self.free_ids.len() || slots > self.ring.free_requests() as usize {
            self.stats.tx_drop += 1;
            return Ok(());
        }
        // Write and grant every page first, so a failure can be undone before any request of
        // the frame is visible (a half-put chain would leave the backend waiting for more).
        let mut ids = [0u16; MAX_SLOTS];
        for i in 0..slots {
            let start = i * PAGE_SIZE;
            let chunk_len = (len - start).min(PAGE_SIZE);
            // Checked above: at least `slots` ids are free.
            let Some(id) = self.free_ids.pop() else {
                self.undo(&ids[..i]);
                self.stats.tx_drop += 1;
                return Ok(());
            };
            let pfn = self.pages[id as usize];
            let granted = self
                .dom
                .write(pfn, 0, &self.scratch[start..start + chunk_len])
                .and_then(|()| self.dom.grant_access(self.backend, pfn, true));
            match granted {
                Ok(g) => self.grefs[id as usize] = Some(g),
                Err(e) => {
                    self.free_ids.push(id);
                    self.undo(&ids[..i]);
                    self.stats.tx_errors += 1;
                    return Err(Error::Hypervisor {
                        op: "grant_access(tx page)",
                        source: e,
                    });
                }
            }
            ids[i] = id;
        }
        for (i, &id) in ids[..slots].iter().enumerate() {
            let chunk_len = (len - i * PAGE_SIZE).min(PAGE_SIZE);
            let gref = self.grefs[id as usize].map_or(0, |g| g.0);
            let more = if i + 1 < slots { NETTXF_MORE_DATA } else { 0 };
            let req = TxRequest {
                gref,
                offset: 0,
                flags: if i == 0 { flags | more } else { more },
                id,
                // Fits: len <= max_frame <= XEN_NETIF_MAX_TX_SIZE (checked by FrontConfig).
                size: if i == 0 { len as u16 } else { chunk_len as u16 },
            };
            // Cannot fail: free_requests was checked above, and nothing was put since.
            let _ = self.ring.put_request(req);
        }
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
        if flags & NETTXF_CSUM_BLANK != 0 {
            self.stats.tx_csum_blank += 1;
        }
        self.push_and_notify()
    }

    /// Sends a multicast add (`add`) or remove of `addr` as Windows' xenvif does: a request
    /// with no data (gref 0, size 0) and `NETTXF_extra_info`, then the MCAST extra. False if
    /// there is no room now.
    pub(crate) fn send_mcast(&mut self, add: bool, addr: [u8; 6]) -> Result<bool> {
        if self.broken.is_some() || self.ring.free_requests() < 2 {
            return Ok(false);
        }
        let Some(id) = self.free_ids.pop() else {
            return Ok(false);
        };
        self.control[id as usize] = true;
        let req = TxRequest {
            gref: 0,
            offset: 0,
            flags: NETTXF_EXTRA_INFO,
            id,
            size: 0,
        };
        let extra = if add {
            ExtraRepr::McastAdd(addr)
        } else {
            ExtraRepr::McastDel(addr)
        };
        // Cannot fail: two requests' room was checked above.
        let _ = self.ring.put_request(req);
        let _ = self.ring.put_request_as(extra.emit(false));
        self.stats.tx_mcast += 1;
        self.push_and_notify()?;
        Ok(true)
    }

    /// Whether a multicast control request is still unanswered.
    pub(crate) fn control_in_flight(&self) -> bool {
        self.control.iter().any(|c| *c)
    }

    /// Revokes the grants of a frame that was never put on the ring.
    fn undo(&mut self, ids: &[u16]) {
        for &id in ids {
            if let Some(g) = self.grefs[id as usize].take() {
                // Never published, so the backend cannot hold it: this ends at once.
                self.end(id, g);
            }
        }
    }

    fn push_and_notify(&mut self) -> Result<()> {
        if self.ring.push_requests_and_check_notify() {
            self.stats.notifies += 1;
            self.evtchn
                .notify(self.port)
                .map_err(Error::hv("notify(tx)"))?;
        }
        Ok(())
    }

    /// Consumes tx responses and revokes their grants; returns how many were consumed.
    pub(crate) fn reclaim(&mut self) -> Result<usize> {
        if let Some(e) = self.broken {
            return Err(Error::Ring(e));
        }
        self.retry_busy();
        let mut n = 0;
        loop {
            let rsp: TxResponse = match self.ring.next_response() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    self.broken = Some(e);
                    return Err(Error::Ring(e));
                }
            };
            n += 1;
            if rsp.status == NETIF_RSP_NULL {
                continue;
            }
            if let Some(c) = self.control.get_mut(rsp.id as usize)
                && *c
            {
                // A multicast control request: no page, no grant.
                *c = false;
                self.free_ids.push(rsp.id);
                self.mcast_answered.0 += 1;
                if rsp.status < 0 {
                    self.mcast_answered.1 += 1;
                    self.stats.tx_mcast_refused += 1;
                }
                continue;
            }
            let Some(gref) = self.grefs.get_mut(rsp.id as usize).and_then(Option::take) else {
                self.stats.tx_bad_response += 1;
                continue;
            };
            if rsp.status < 0 {
                self.stats.tx_errors += 1;
            }
            self.end(rsp.id, gref);
        }
        Ok(n)
    }

    fn end(&mut self, id: u16, gref: GrantRef) {
        match self.dom.end_access(gref) {
            Ok(()) => self.free_ids.push(id),
            Err(_) => {
                // Still read by the backend (it answered early): keep the page out of the pool.
                self.stats.grant_busy += 1;
                self.busy.push((id, gref));
            }
        }
    }

    fn retry_busy(&mut self) {
        let mut i = 0;
        while i < self.busy.len() {
            let (id, gref) = self.busy[i];
            if self.dom.end_access(gref).is_ok() {
                self.free_ids.push(id);
                self.busy.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Every grant still outstanding (requests in flight and busy ones), for teardown.
    pub(crate) fn outstanding(&mut self) -> Vec<(Pfn, GrantRef)> {
        let pages = &self.pages;
        let mut v: Vec<(Pfn, GrantRef)> = self
            .grefs
            .iter_mut()
            .enumerate()
            .filter_map(|(id, g)| g.take().map(|g| (pages[id], g)))
            .collect();
        v.extend(self.busy.drain(..).map(|(id, g)| (pages[id as usize], g)));
        v
    }
}
