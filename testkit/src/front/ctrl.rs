//! [`RawFront`]'s ctrl ring and multicast control, well-behaved or not: requests of any type and
//! arguments, grants of key and mapping pages, any slot at any index and any `req_prod`; and
//! multicast add/remove requests on the tx ring laid out as a Windows frontend lays them out.

use hypervisor::GrantRef;
use hypervisor::ringpage::own_ring;
use netback::CtrlKeys;
use netif_ring::ctrl::{CtrlRequest, CtrlResponse};
use netif_ring::netif::{
    ExtraInfo, NETTXF_EXTRA_INFO, TxRequest, XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
    XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
};
use netif_ring::{CtrlRing, FrontRing, Slot, raw};

use super::RawFront;

impl RawFront {
    /// Makes its ctrl ring: a page initialised as one and granted to the backend, an unbound
    /// port; [`RawFront::keys`] then names them (connect afterwards).
    #[track_caller]
    pub fn make_ctrl_ring(&mut self) {
        let pfn = self.dom.alloc_page().expect("ctrl ring page");
        let ring: super::CtrlFront =
            FrontRing::init(own_ring(&self.dom, pfn).expect("pin the ctrl ring"));
        let gref = self
            .dom
            .grant_access(self.backend, pfn, false)
            .expect("grant");
        let port = self.evtchn.alloc_unbound(self.backend).expect("port");
        self.keys.ctrl = Some(CtrlKeys {
            ring_ref: gref,
            event_channel: port,
        });
        self.ctrl = Some((ring, port));
    }

    fn ctrl_ring(&mut self) -> &mut (super::CtrlFront, hypervisor::Port) {
        self.ctrl
            .as_mut()
            .expect("no ctrl ring: call make_ctrl_ring first")
    }

    /// Puts a ctrl request (id = the ring index it takes), pushes and notifies if asked to;
    /// returns its id.
    #[track_caller]
    pub fn ctrl_request(&mut self, type_: u16, data: [u32; 3]) -> u16 {
        let evtchn = &self.evtchn;
        let (ring, port) = self
            .ctrl
            .as_mut()
            .expect("no ctrl ring: call make_ctrl_ring first");
        let id = ring.req_prod_pvt() as u16;
        ring.put_request(CtrlRequest { id, type_, data })
            .expect("the ctrl ring has room");
        if ring.push_requests_and_check_notify() {
            evtchn
                .notify(*port)
                .expect("the backend's ctrl port is bound");
        }
        id
    }

    /// The ctrl responses that arrived.
    #[track_caller]
    pub fn ctrl_responses(&mut self) -> Vec<CtrlResponse> {
        let (ring, _) = self.ctrl_ring();
        let mut out = Vec::new();
        while let Some(r) = ring
            .next_response()
            .expect("the backend's ctrl responses are well-formed")
        {
            out.push(r);
        }
        out
    }

    /// A page holding `data` from offset 0, granted read-only to the backend (never ended): a
    /// key or a mapping table for the ctrl ring.
    #[track_caller]
    pub fn grant_bytes(&mut self, data: &[u8]) -> GrantRef {
        self.tx_page(0, data)
    }

    /// Writes `v` into the ctrl slot for index `idx`.
    pub fn write_ctrl_at<T: Slot>(&mut self, idx: u32, v: T) {
        let (ring, _) = self.ctrl_ring();
        raw::write_slot_at::<CtrlRing, T>(ring.mem(), ring.size(), idx, v);
    }

    /// Publishes `v` as the ctrl ring's `req_prod`.
    pub fn set_ctrl_req_prod(&mut self, v: u32) {
        let (ring, _) = self.ctrl_ring();
        raw::set_req_prod(ring.mem(), v);
    }

    /// The ctrl ring's shared indices.
    pub fn ctrl_indices(&mut self) -> raw::Indices {
        let (ring, _) = self.ctrl_ring();
        raw::indices(ring.mem())
    }

    /// Signals the backend on the ctrl port.
    pub fn notify_ctrl(&mut self) {
        let port = self.ctrl_ring().1;
        let _ = self.evtchn.notify(port);
    }

    /// Sends a multicast add (`add`) or remove of `addr` as a Windows frontend does: a request
    /// with no data (gref 0, size 0) and `NETTXF_extra_info`, then the extra; pushes. Returns
    /// the request's id.
    #[track_caller]
    pub fn send_mcast(&mut self, add: bool, addr: [u8; 6]) -> u16 {
        let id = self.next_id();
        self.tx
            .put_request(TxRequest {
                gref: 0,
                offset: 0,
                flags: NETTXF_EXTRA_INFO,
                id,
                size: 0,
            })
            .expect("the tx ring has room");
        let type_ = if add {
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD
        } else {
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL
        };
        self.tx
            .put_request_as(ExtraInfo {
                type_,
                flags: 0,
                u: addr,
            })
            .expect("the tx ring has room");
        self.push_tx();
        id
    }
}
