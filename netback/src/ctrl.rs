//! The control ring (`feature-ctrl-ring`; Linux's `xenvif_ctrl_action` and
//! `process_ctrl_request` in `netback.c`, with `hash.c`'s handlers): a frontend that wrote
//! `ctrl-ring-ref` and `event-channel-ctrl` sets up receive-side hashing ([`crate::hash`]).
//!
//! Every `XEN_NETIF_CTRL_TYPE_*` Linux 6.1 implements is served with Linux's limits and status
//! codes; the grant-mapping types (8-10) and anything unknown are answered `NOT_SUPPORTED`.
//! The key and the mapping table are fetched from the guest's grant by one grant copy each into
//! a page of the backend's own, then validated and applied whole: a request that fails (a bad
//! grant, a size or offset out of range, a queue number the vif does not have) is answered
//! `INVALID_PARAMETER` and changes nothing (Linux may leave part of a failed key copied). Each
//! request is read from the ring once; each is answered in ring order with its id and type.
//! A `req_prod` beyond what the ring holds disables the vif, as for its data rings.
//!
//! The port is the vif's own (neither queue's) and has its late end of interrupt like theirs, so
//! a guest notifying its ctrl channel in a loop is throttled (XSA-332).

use std::time::{Duration, Instant};

use hypervisor::ringpage::mapped_ring;
use hypervisor::{BackendDomain, CopyOp, CopyPtr, DomId, EventChannel, GrantRef, GrantStatus};
use hypervisor::{GrantOps, Pfn, Port};
use netif_ring::ctrl::{
    CtrlRequest, CtrlResponse, XEN_NETIF_CTRL_HASH_ALGORITHM_NONE,
    XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ, XEN_NETIF_CTRL_HASH_TYPE_ALL,
    XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER, XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED,
    XEN_NETIF_CTRL_STATUS_SUCCESS, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS,
    XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
    XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
    XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
};
use netif_ring::{BackRing, CtrlRing, PageRing, RingError};

use crate::error::FrontendError;
use crate::hash::{MAX_HASH_KEY, MAX_HASH_MAPPING, VifHash};
use crate::vif::{Fatal, Vif, VifId, VifStats};

/// Requests answered per pass at most (a ring's worth): a guest refilling its ctrl ring as fast
/// as it is served cannot hold a pass.
const REQUESTS_PER_PASS: usize = 128;

/// The keys a frontend writes for its ctrl ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtrlKeys {
    /// `ctrl-ring-ref`: the grant of the ring page.
    pub ring_ref: GrantRef,
    /// `event-channel-ctrl`: the frontend's unbound port for it.
    pub event_channel: Port,
}

/// A connected ctrl ring.
pub(crate) struct Ctrl<D: BackendDomain> {
    ring: BackRing<CtrlRing, PageRing<<D as GrantOps>::Mapping>>,
    /// The local port.
    pub(crate) port: Port,
    eoi: hypervisor::LateEoi,
    /// Requests were served since the port's last end-of-interrupt decision.
    did_work: bool,
    /// A page of the backend's own memory: where keys and mapping tables are copied to.
    scratch: Pfn,
    /// To free `scratch`.
    dom0: D,
}

impl<D: BackendDomain> Drop for Ctrl<D> {
    fn drop(&mut self) {
        // The page was only ever a copy destination; nothing else refers to it.
        let _ = self.dom0.free_page(self.scratch);
    }
}

impl<D: BackendDomain> Ctrl<D> {
    /// Maps the ring and binds its channel (Linux's `xenvif_connect_ctrl`): a ring whose
    /// `req_prod` is already more than a ring ahead of `rsp_prod` is refused.
    pub(crate) fn connect(
        dom0: &D,
        evtchn: &D::Evtchn,
        id: VifId,
        keys: CtrlKeys,
    ) -> Result<Self, FrontendError> {
        use FrontendError::Connect;
        let map = dom0
            .map_grant_ref(id.domid, keys.ring_ref)
            .map_err(Connect)?;
        let mut ring = BackRing::attach(mapped_ring(map).map_err(Connect)?);
        ring.unconsumed_requests()
            .map_err(|why| FrontendError::RingIndices { ring: "ctrl", why })?;
        let scratch = dom0.alloc_page().map_err(Connect)?;
        let port = match evtchn.bind_interdomain(id.domid, keys.event_channel) {
            Ok(p) => p,
            Err(e) => {
                let _ = dom0.free_page(scratch);
                return Err(Connect(e));
            }
        };
        Ok(Self {
            ring,
            port,
            eoi: hypervisor::LateEoi::new(),
            did_work: false,
            scratch,
            dom0: dom0.clone(),
        })
    }

    /// Answers up to [`REQUESTS_PER_PASS`] requests, pushes the responses and notifies if the
    /// frontend asked for it. Returns whether any was served.
    fn action(
        &mut self,
        dom0: &D,
        evtchn: &D::Evtchn,
        domid: DomId,
        hash: &mut VifHash,
        queues: usize,
        stats: &mut VifStats,
    ) -> Result<bool, RingError> {
        let mut served = 0;
        while served < REQUESTS_PER_PASS {
            let Some(req) = self.ring.next_request()? else {
                break;
            };
            let (status, data) = self.process(dom0, domid, &req, hash, queues, stats);
            stats.ctrl_requests += 1;
            match status {
                XEN_NETIF_CTRL_STATUS_SUCCESS => {}
                XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED => stats.ctrl_not_supported += 1,
                _ => stats.ctrl_invalid += 1,
            }
            // Cannot fail: one response per consumed request.
            let _ = self.ring.put_response(CtrlResponse {
                id: req.id,
                type_: req.type_,
                status,
                data,
            });
            served += 1;
        }
        if served > 0 {
            self.did_work = true;
            if self.ring.push_responses_and_check_notify() {
                stats.notifies += 1;
                // A closed port means the frontend went away; the control plane sees it.
                let _ = evtchn.notify(self.port);
            }
        }
        Ok(served > 0)
    }

    /// One request (`process_ctrl_request`): its status and the response's data.
    fn process(
        &mut self,
        dom0: &D,
        domid: DomId,
        req: &CtrlRequest,
        hash: &mut VifHash,
        queues: usize,
        stats: &mut VifStats,
    ) -> (u32, u32) {
        const OK: u32 = XEN_NETIF_CTRL_STATUS_SUCCESS;
        const INVALID: u32 = XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
        let [d0, d1, d2] = req.data;
        match req.type_ {
            XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM => match d0 {
                XEN_NETIF_CTRL_HASH_ALGORITHM_NONE | XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ => {
                    hash.alg = d0;
                    (OK, 0)
                }
                _ => (INVALID, 0),
            },
            XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS
                if hash.alg == XEN_NETIF_CTRL_HASH_ALGORITHM_NONE =>
            {
                (XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED, 0)
            }
            XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS => (OK, XEN_NETIF_CTRL_HASH_TYPE_ALL),
            XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS => {
                if d0 & !XEN_NETIF_CTRL_HASH_TYPE_ALL != 0
                    || hash.alg == XEN_NETIF_CTRL_HASH_ALGORITHM_NONE
                {
                    return (INVALID, 0);
                }
                hash.flags = d0;
                (OK, 0)
            }
            XEN_NETIF_CTRL_TYPE_SET_HASH_KEY => {
                // At most 40 bytes kept; a longer key is refused, as Linux refuses it.
                let len = d1 as usize;
                if len > MAX_HASH_KEY {
                    return (INVALID, 0);
                }
                let mut key = [0u8; MAX_HASH_KEY];
                if len > 0 && !self.copy_in(dom0, domid, GrantRef(d0), &mut key[..len], stats) {
                    return (INVALID, 0);
                }
                hash.key = key;
                (OK, 0)
            }
            XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE => (OK, MAX_HASH_MAPPING),
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE => {
                if d0 > MAX_HASH_MAPPING {
                    return (INVALID, 0);
                }
                hash.mapping.clear();
                hash.mapping.resize(d0 as usize, 0);
                (OK, 0)
            }
            XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING => {
                // data[0] grant, data[1] entries, data[2] first entry: the sub-table must lie
                // inside the table (overflow included, XSA-270) and fit the grant's page.
                let (len, off) = (d1 as usize, d2 as usize);
                match off.checked_add(len) {
                    Some(end) if end <= hash.mapping.len() => {}
                    _ => return (INVALID, 0),
                }
                if len == 0 {
                    return (OK, 0);
                }
                let mut bytes = [0u8; MAX_HASH_MAPPING as usize * 4];
                let bytes = &mut bytes[..len * 4];
                if !self.copy_in(dom0, domid, GrantRef(d0), bytes, stats) {
                    return (INVALID, 0);
                }
                let entries = bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                if entries.clone().any(|q| q as usize >= queues) {
                    return (INVALID, 0);
                }
                for (slot, q) in hash.mapping[off..off + len].iter_mut().zip(entries) {
                    *slot = q;
                }
                (OK, 0)
            }
            // Grant-mapping types (8-10) and anything else.
            _ => (XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED, 0),
        }
    }

    /// Copies `out.len()` bytes from the start of the guest's grant `gref` (one grant copy into
    /// the scratch page, then a read of it). False if the copy failed (counted).
    fn copy_in(
        &self,
        dom0: &D,
        domid: DomId,
        gref: GrantRef,
        out: &mut [u8],
        stats: &mut VifStats,
    ) -> bool {
        let _s = xenoprof::scope(xenoprof::Class::NETBACK);
        let Ok(local) = dom0.local_addr(self.scratch) else {
            stats.ctrl_copy_errors += 1;
            return false;
        };
        let mut op = [CopyOp::new(
            CopyPtr::gref(domid, gref, 0),
            CopyPtr::Local(local),
            out.len() as u16,
        )];
        stats.hypercalls += 1;
        stats.grant_ops += 1;
        let copied = dom0.grant_copy(&mut op).is_ok()
            && op[0].status == GrantStatus::Okay
            && dom0.read(self.scratch, 0, out).is_ok();
        if !copied {
            stats.ctrl_copy_errors += 1;
        }
        copied
    }
}

impl<D: BackendDomain> Vif<D> {
    /// Serves the ctrl ring, if the frontend has one (nothing for a disabled vif). A ring
    /// overflow disables the vif. Returns whether requests were served.
    pub(crate) fn ctrl_action(&mut self, dom0: &D, evtchn: &D::Evtchn) -> bool {
        let Some(c) = self.ctrl.as_mut() else {
            return false;
        };
        if self.queues.iter().any(|q| q.is_disabled()) {
            return false;
        }
        let queues = self.queues.len();
        match c.action(
            dom0,
            evtchn,
            self.id.domid,
            &mut self.hash,
            queues,
            &mut self.stats,
        ) {
            Ok(worked) => worked,
            Err(e) => {
                self.queues[0].disable(Fatal::CtrlRing(e));
                self.propagate_fatal();
                false
            }
        }
    }

    /// Before blocking: the ctrl ring's final check. True if requests arrived.
    pub(crate) fn ctrl_rearm(&mut self) -> bool {
        let disabled = self.is_disabled();
        let Some(c) = self.ctrl.as_mut() else {
            return false;
        };
        if disabled {
            return false;
        }
        match c.ring.final_check_for_requests() {
            Ok(more) => more,
            Err(e) => {
                self.queues[0].disable(Fatal::CtrlRing(e));
                self.propagate_fatal();
                false
            }
        }
    }

    /// A wait delivered these ports: note the ctrl port's event.
    pub(crate) fn ctrl_delivered(&mut self, delivered: &[Port]) {
        if let Some(c) = self.ctrl.as_mut()
            && delivered.contains(&c.port)
        {
            c.eoi.delivered();
        }
    }

    /// The ctrl port's late end of interrupt: as a queue's port, an event that found no
    /// requests twice in a row holds the unmask back (taken out of `delivered`), and a
    /// held-back one that came due is put in.
    pub(crate) fn ctrl_end_of_interrupt(
        &mut self,
        now: Instant,
        max_delay: Duration,
        delivered: &mut Vec<Port>,
    ) {
        let Some(c) = self.ctrl.as_mut() else {
            return;
        };
        match c.eoi.end_of_interrupt(c.did_work, now, max_delay) {
            hypervisor::Eoi::Idle | hypervisor::Eoi::Spurious => {}
            hypervisor::Eoi::Worked => c.did_work = false,
            hypervisor::Eoi::Delayed => delivered.retain(|p| *p != c.port),
        }
        if c.eoi.take_due(now) {
            delivered.push(c.port);
        }
        self.stats.spurious_events = c.eoi.spurious();
        self.stats.eoi_delayed = c.eoi.delayed();
    }

    /// When the ctrl port's held-back end of interrupt comes due.
    pub(crate) fn ctrl_deadline(&self) -> Option<Instant> {
        self.ctrl.as_ref().and_then(|c| c.eoi.deadline())
    }
}
