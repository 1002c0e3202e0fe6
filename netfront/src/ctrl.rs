//! The frontend's side of the ctrl ring, multicast control and XDP headroom, as a Windows guest
//! uses the first two (xenvif's `controller.c` and multicast requests on the transmitter) and
//! Linux's netfront the third (`xennet_xdp_set`).
//!
//! - **Hashing** ([`FrontConfig::hashing`](crate::FrontConfig::hashing)): a ctrl ring page is
//!   made, granted and written as `ctrl-ring-ref` with its port in `event-channel-ctrl` before
//!   Connected; once connected, requests go one at a time, each waited for: algorithm
//!   Toeplitz, the flags (checked against what the backend says it supports), the key (from a
//!   page granted read-only for the request), the table's size and contents (from another).
//!   Anything but success fails the connect, naming the request and the status.
//! - **Multicast** ([`FrontConfig::multicast`](crate::FrontConfig::multicast)):
//!   `request-multicast-control=1` before Connected, then an MCAST_ADD request per group on
//!   queue 0's tx ring, each answered before connect returns. [`Netfront::subscribe`] and
//!   [`Netfront::unsubscribe`] change the list later.
//! - **XDP headroom** ([`FrontConfig::xdp_headroom`](crate::FrontConfig::xdp_headroom),
//!   [`Netfront::set_xdp_headroom`]): `xdp-headroom`, Reconfiguring, wait for the backend's
//!   Reconfigured, Connected.
//!
//! Waiting for an answer never takes events from the data path: data ports a wait collects
//! are marked delivered for their queues' late end of interrupt, as `Netfront::wait` does; the
//! ctrl port is unmasked only while a request waits, after an event that brought its answer.

use std::time::{Duration, Instant};

use hypervisor::{EventChannel, FrontendDomain, GrantRef, Pfn, Port, XenStore};
use netif_ring::CtrlRing;
use netif_ring::FrontRing;
use netif_ring::ctrl::{
    CtrlRequest, CtrlResponse, XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
    XEN_NETIF_CTRL_STATUS_SUCCESS, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS,
    XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
    XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
    XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
};

use crate::config::HashConfig;
use crate::device::Netfront;
use crate::error::{Error, Result};
use crate::ringmem::{GuestRing, guest_ring};
use crate::xenbus::{self, XenbusState};

/// The frontend's ctrl ring: its page and grant, its port.
#[derive(Debug)]
pub(crate) struct CtrlChannel<D: FrontendDomain> {
    pub(crate) ring: FrontRing<CtrlRing, GuestRing<D>>,
    pub(crate) page: (Pfn, GrantRef),
    pub(crate) port: Port,
}

impl<D: FrontendDomain> CtrlChannel<D> {
    /// Allocates, initialises and grants the ring page and allocates its port. On failure what
    /// was made is recorded in `pages`/`grants` for the caller to undo.
    pub(crate) fn new(
        dom: &D,
        evtchn: &D::Evtchn,
        backend: hypervisor::DomId,
        pages: &mut Vec<Pfn>,
        grants: &mut Vec<GrantRef>,
    ) -> Result<Self> {
        let pfn = dom
            .alloc_page()
            .map_err(Error::hv("alloc_page(ctrl ring)"))?;
        pages.push(pfn);
        // Initialise before granting, as for the data rings.
        let ring = FrontRing::init(guest_ring(dom, pfn)?);
        let gref = dom
            .grant_access(backend, pfn, false)
            .map_err(Error::hv("grant ctrl ring"))?;
        grants.push(gref);
        let port = evtchn
            .alloc_unbound(backend)
            .map_err(Error::hv("alloc_unbound(ctrl)"))?;
        Ok(Self {
            ring,
            page: (pfn, gref),
            port,
        })
    }
}

/// How long one answer is waited for between looks at the ring (the ctrl port may stay masked
/// after an event outside a request: the wait then ends by this).
const LOOK: Duration = Duration::from_millis(1);

impl<D: FrontendDomain> Netfront<D> {
    /// Sends one ctrl request and waits for its answer (at most the configured timeout).
    pub fn ctrl_request(&mut self, type_: u16, data: [u32; 3]) -> Result<CtrlResponse> {
        self.check_connected()?;
        let Some(c) = self.ctrl.as_mut() else {
            return Err(Error::FeatureMismatch(
                "no ctrl ring: set FrontConfig::hashing to make one".into(),
            ));
        };
        let id = c.ring.req_prod_pvt() as u16;
        if c.ring.put_request(CtrlRequest { id, type_, data }).is_err() {
            return Err(Error::Ctrl {
                what: "a request",
                why: "the ctrl ring is full of unanswered requests".into(),
            });
        }
        if c.ring.push_requests_and_check_notify() {
            self.evtchn
                .notify(c.port)
                .map_err(Error::hv("notify(ctrl)"))?;
        }
        let start = Instant::now();
        loop {
            let c = self.ctrl.as_mut().expect("checked above");
            match c.ring.next_response() {
                Ok(Some(r)) if r.id == id && r.type_ == type_ => {
                    self.ctrl_answered += 1;
                    return Ok(r);
                }
                Ok(Some(r)) => {
                    return Err(Error::Ctrl {
                        what: "a response",
                        why: format!(
                            "the backend answered id {} type {} to request id {id} type \
                             {type_}: it does not answer in order",
                            r.id, r.type_
                        ),
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(self.disconnect(Error::Ring(e))),
            }
            if start.elapsed() >= self.cfg.timeout {
                return Err(Error::Timeout {
                    what: format!("the backend's answer to ctrl request type {type_}"),
                    waited: self.cfg.timeout,
                });
            }
            self.wait_aside(LOOK)?;
        }
    }

    /// One short wait on the event channel outside the data path's `wait`: data ports it
    /// collects are marked delivered for their queues' late end of interrupt; the ctrl port is
    /// unmasked if its event came, so the next answer wakes us.
    fn wait_aside(&mut self, timeout: Duration) -> Result<()> {
        let mut got = Vec::new();
        self.evtchn
            .wait(Some(timeout), &mut got)
            .map_err(Error::hv("evtchn wait"))?;
        let ctrl_port = self.ctrl.as_ref().map(|c| c.port);
        for p in got {
            if Some(p) == ctrl_port {
                self.evtchn
                    .unmask(&[p])
                    .map_err(Error::hv("evtchn unmask(ctrl)"))?;
            } else {
                self.mark_delivered(p);
            }
        }
        Ok(())
    }

    /// Sets up receive hashing as `h` says (see the module docs).
    pub(crate) fn set_up_hashing(&mut self, h: &HashConfig) -> Result<()> {
        let queues = self.num_queues() as u32;
        let ok = |what: &'static str, r: CtrlResponse| -> Result<u32> {
            if r.status == XEN_NETIF_CTRL_STATUS_SUCCESS {
                Ok(r.data)
            } else {
                Err(Error::Ctrl {
                    what,
                    why: format!("the backend answered status {}", r.status),
                })
            }
        };
        let r = self.ctrl_request(
            XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
            [XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ, 0, 0],
        )?;
        ok("SET_HASH_ALGORITHM (Toeplitz)", r)?;
        let r = self.ctrl_request(XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS, [0; 3])?;
        let supported = ok("GET_HASH_FLAGS", r)?;
        if h.flags & !supported != 0 {
            return Err(Error::FeatureMismatch(format!(
                "hashing flags {:#x} asked for, the backend hashes only {supported:#x}",
                h.flags
            )));
        }
        let r = self.ctrl_request(XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, [h.flags, 0, 0])?;
        ok("SET_HASH_FLAGS", r)?;
        let r = self.with_granted(&h.key, |nf, gref| {
            nf.ctrl_request(
                XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
                [gref.0, h.key.len() as u32, 0],
            )
        })?;
        ok("SET_HASH_KEY", r)?;
        let r = self.ctrl_request(XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, [0; 3])?;
        let max = ok("GET_HASH_MAPPING_SIZE", r)?;
        let mapping: Vec<u32> = if h.mapping.is_empty() {
            (0..max).map(|i| i % queues).collect()
        } else {
            h.mapping.clone()
        };
        if mapping.len() as u64 > u64::from(max) {
            return Err(Error::FeatureMismatch(format!(
                "hashing mapping of {} entries, the backend takes at most {max}",
                mapping.len()
            )));
        }
        if let Some(q) = mapping.iter().find(|q| **q >= queues) {
            return Err(Error::FeatureMismatch(format!(
                "hashing mapping names queue {q}, but {queues} queue(s) were negotiated"
            )));
        }
        let n = mapping.len() as u32;
        let r = self.ctrl_request(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, [n, 0, 0])?;
        ok("SET_HASH_MAPPING_SIZE", r)?;
        if n > 0 {
            let bytes: Vec<u8> = mapping.iter().flat_map(|q| q.to_le_bytes()).collect();
            let r = self.with_granted(&bytes, |nf, gref| {
                nf.ctrl_request(XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, [gref.0, n, 0])
            })?;
            ok("SET_HASH_MAPPING", r)?;
        }
        Ok(())
    }

    /// Runs `f` with `data` in a page of ours granted read-only to the backend from offset 0;
    /// the grant is ended and the page freed afterwards (once the backend lets go of it).
    fn with_granted<R>(
        &mut self,
        data: &[u8],
        f: impl FnOnce(&mut Self, GrantRef) -> Result<R>,
    ) -> Result<R> {
        let pfn = self
            .dom
            .alloc_page()
            .map_err(Error::hv("alloc_page(ctrl data)"))?;
        let granted = self
            .dom
            .write(pfn, 0, data)
            .and_then(|()| self.dom.grant_access(self.backend, pfn, true));
        let gref = match granted {
            Ok(g) => g,
            Err(e) => {
                let _ = self.dom.free_page(pfn);
                return Err(Error::hv("grant ctrl data")(e));
            }
        };
        let r = f(self, gref);
        // The backend copies during the request; once answered it holds nothing. If it still
        // does (a misbehaving backend), the page is kept rather than freed under it.
        if self.dom.end_access(gref).is_ok() {
            let _ = self.dom.free_page(pfn);
        }
        r
    }

    /// Asks for multicast control's group `addr` (an MCAST_ADD request on queue 0) and waits
    /// for the answer. The backend must offer `feature-multicast-control` and the frontend
    /// have written `request-multicast-control=1` ([`crate::FrontConfig::multicast`]).
    pub fn subscribe(&mut self, addr: [u8; 6]) -> Result<()> {
        self.mcast_request(true, addr)
    }

    /// Leaves group `addr` (an MCAST_DEL request), waiting for the answer.
    pub fn unsubscribe(&mut self, addr: [u8; 6]) -> Result<()> {
        self.mcast_request(false, addr)
    }

    fn mcast_request(&mut self, add: bool, addr: [u8; 6]) -> Result<()> {
        self.check_connected()?;
        let start = Instant::now();
        let refused = self.tx[0].mcast_answered.1;
        while !self.tx[0].send_mcast(add, addr)? {
            self.tx[0].reclaim()?;
            if start.elapsed() >= self.cfg.timeout {
                return Err(Error::Timeout {
                    what: "room on the tx ring for a multicast request".into(),
                    waited: self.cfg.timeout,
                });
            }
            self.wait_aside(LOOK)?;
        }
        while self.tx[0].control_in_flight() {
            if let Err(e) = self.tx[0].reclaim() {
                return Err(self.disconnect(e));
            }
            if !self.tx[0].control_in_flight() {
                break;
            }
            if start.elapsed() >= self.cfg.timeout {
                return Err(Error::Timeout {
                    what: "the backend's answer to a multicast request".into(),
                    waited: self.cfg.timeout,
                });
            }
            self.wait_aside(LOOK)?;
        }
        if self.tx[0].mcast_answered.1 > refused {
            return Err(Error::Ctrl {
                what: "MCAST_ADD",
                why: format!(
                    "the backend refused group {} (its list is full: Linux keeps 64)",
                    bridge_lite_mac(addr)
                ),
            });
        }
        Ok(())
    }

    /// Asks the backend for `headroom` bytes before the data in each rx buffer, as Linux's
    /// netfront does when an XDP program is attached (0 gives it back): `xdp-headroom`,
    /// Reconfiguring, the backend's Reconfigured, Connected.
    pub fn set_xdp_headroom(&mut self, headroom: u16) -> Result<()> {
        self.check_connected()?;
        if !self.features.xdp_headroom {
            return Err(Error::FeatureMismatch(
                "xdp headroom wanted but the backend has no feature-xdp-headroom=1".into(),
            ));
        }
        let xs = &self.xs;
        xs.write(
            &format!("{}/xdp-headroom", self.fe_dir),
            &headroom.to_string(),
        )
        .map_err(Error::hv("xenstore write xdp-headroom"))?;
        xenbus::switch_state(xs, &self.fe_dir, XenbusState::Reconfiguring)?;
        let waited = xenbus::wait_for_state(
            xs,
            &self.be_dir,
            "the backend's Reconfigured",
            self.cfg.timeout,
            |s| s == XenbusState::Reconfigured,
        );
        // Back to Connected whatever the answer, so the device stays usable.
        let back = xenbus::switch_state(xs, &self.fe_dir, XenbusState::Connected);
        waited?;
        back?;
        self.xdp_headroom = headroom;
        Ok(())
    }
}

/// A MAC as text, for messages.
fn bridge_lite_mac(a: [u8; 6]) -> String {
    a.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
