//! [`RawFront`]: a frontend that speaks the netif ring protocol by hand, with no netfront in
//! the way, so a test can follow the protocol ([`RawFront::send`], [`RawFront::post_rx`],
//! [`RawFront::recv`]: `tx.rs`, `rx.rs`) or break it: write any request or extra-info slot at
//! any ring index, publish any `req_prod` (`netif_ring::raw`), name any grant reference, grant,
//! re-grant and revoke its pages in any order.

mod ctrl;
mod rx;
mod tx;
mod xenbus;

use std::collections::{HashMap, VecDeque};

use bridge_lite::MacAddr;
use hypervisor::ringpage::{OwnRingPage, own_ring};
use hypervisor::{DomId, GrantRef, Pfn, Port};
use netback::{FrontendKeys, FrontendOffloads, RxMode, VifId};
use netif_ring::netif::{ExtraInfo, TxResponse};
use netif_ring::{CtrlRing, FrontRing, PageRing, RxRing, Slot, TxRing, raw};
use xen_model::{DomainHandle, EvtchnHandle, Hypervisor};

use crate::Nb;
use crate::frame::mac;

pub use rx::{DRAIN_POSTED, RxFrame};

/// A frontend's tx ring over one of its own pages.
pub type TxFront = FrontRing<TxRing, PageRing<OwnRingPage<DomainHandle>>>;
/// A frontend's rx ring over one of its own pages.
pub type RxFront = FrontRing<RxRing, PageRing<OwnRingPage<DomainHandle>>>;
/// A frontend's ctrl ring over one of its own pages.
pub type CtrlFront = FrontRing<CtrlRing, PageRing<OwnRingPage<DomainHandle>>>;

/// The guest a [`RawFront`] is: override fields of [`Guest::DEFAULT`] (or of [`Guest::mac`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guest {
    /// Its MAC number (see [`mac`](crate::mac)).
    pub mac: u8,
    /// How it asks for rx (`request-rx-copy`).
    pub mode: RxMode,
    /// Its reservation, in pages: two ring pages, the rest for buffers.
    pub pages: u64,
    /// What it takes on its rx ring.
    pub offload: FrontendOffloads,
    /// The domain its [`GrantKind::Foreign`] grants name (not the backend).
    pub foreign: Option<DomId>,
}

impl Guest {
    /// MAC 1, copy mode, 1024 pages, scatter-gather only: a frontend driven by hand reassembles
    /// multi-slot frames but takes no partial checksums or super-frames unless a test says so.
    pub const DEFAULT: Guest = Guest {
        mac: 1,
        mode: RxMode::Copy,
        pages: 1024,
        offload: FrontendOffloads {
            sg: true,
            csum: false,
            ipv6_csum: false,
            gso_tcpv4: false,
            gso_tcpv6: false,
        },
        foreign: None,
    };

    /// [`Guest::DEFAULT`] with MAC number `mac`.
    pub const fn mac(mac: u8) -> Guest {
        Guest {
            mac,
            ..Guest::DEFAULT
        }
    }
}

impl Default for Guest {
    fn default() -> Self {
        Guest::DEFAULT
    }
}

/// What a grant lets its grantee do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// Writable, to the backend.
    Rw,
    /// Read-only, to the backend.
    Ro,
    /// Writable, to [`Guest::foreign`]: the backend may not use it.
    Foreign,
    /// Accept a page transfer from the backend (flip mode's rx buffers).
    Accept,
}

impl GrantKind {
    /// All kinds.
    pub const ALL: [GrantKind; 4] = [Self::Rw, Self::Ro, Self::Foreign, Self::Accept];

    /// Whether the backend may write the page through such a grant.
    pub fn backend_writes(self) -> bool {
        matches!(self, GrantKind::Rw | GrantKind::Accept)
    }

    /// `dom` revokes its grant `gref` of this kind: ends access, or the transfer. Refused
    /// while the grantee holds it (a copy or mapping in progress).
    pub fn end(self, dom: &DomainHandle, gref: GrantRef) -> hypervisor::Result<()> {
        match self {
            GrantKind::Accept => dom.end_transfer(gref).map(|_| ()),
            _ => dom.end_access(gref),
        }
    }
}

/// A guest whose frontend is driven by hand. See the module documentation.
///
/// The well-behaved helpers go through `tx` and `rx` (their private producers); the raw ones
/// write the shared page and leave those producers alone, so a test uses one kind or the other
/// on a ring.
#[derive(Debug)]
pub struct RawFront {
    /// The guest.
    pub dom: DomainHandle,
    /// Its event-channel handle.
    pub evtchn: EvtchnHandle,
    /// Its port to the backend.
    pub port: Port,
    /// The backend's domain.
    pub backend: DomId,
    /// Its tx ring.
    pub tx: TxFront,
    /// Its rx ring.
    pub rx: RxFront,
    /// What it would write to xenstore (a test may change `mode` or `offload` before connecting).
    pub keys: FrontendKeys,
    /// Its MAC number.
    pub mac: u8,
    /// Every tx response [`RawFront::reap_tx`] collected (a test clears it at will).
    pub tx_responses: Vec<TxResponse>,
    /// Its ctrl ring and that ring's port, once [`RawFront::make_ctrl_ring`] made them.
    pub ctrl: Option<(CtrlFront, Port)>,
    foreign: Option<DomId>,
    /// Tx pages by request id.
    tx_pages: HashMap<u16, (Pfn, GrantRef)>,
    /// Rx buffers by request id.
    rx_bufs: HashMap<u16, (Pfn, GrantRef)>,
    /// Rx request ids in the order they were posted (responses come back in that order).
    rx_order: VecDeque<u16>,
    next_id: u16,
    /// The frame being reassembled by `recv`.
    partial_frame: Option<RxFrame>,
    /// The frame being reassembled has a failed slot, with this status.
    rx_error: Option<i16>,
    /// The next rx response is an extra-info slot.
    rx_extras_pending: bool,
}

impl RawFront {
    /// A new domain of `xen` as `guest` says, with both rings granted to `backend` and an
    /// unbound port for it; not connected.
    #[track_caller]
    pub fn new(xen: &Hypervisor, backend: DomId, guest: Guest) -> RawFront {
        let dom = xen
            .create_domain(guest.pages)
            .expect("the machine has room for the guest");
        let txp = dom.alloc_page().expect("tx ring page");
        let rxp = dom.alloc_page().expect("rx ring page");
        let tx = FrontRing::init(own_ring(&dom, txp).expect("pin the tx ring"));
        let rx = FrontRing::init(own_ring(&dom, rxp).expect("pin the rx ring"));
        let tx_ring_ref = dom.grant_access(backend, txp, false).expect("grant");
        let rx_ring_ref = dom.grant_access(backend, rxp, false).expect("grant");
        let evtchn = dom.open_evtchn();
        let port = evtchn.alloc_unbound(backend).expect("port");
        RawFront {
            dom,
            evtchn,
            port,
            backend,
            tx,
            rx,
            keys: FrontendKeys::single(tx_ring_ref, rx_ring_ref, port, guest.mode, guest.offload),
            mac: guest.mac,
            tx_responses: Vec::new(),
            ctrl: None,
            foreign: guest.foreign,
            tx_pages: HashMap::new(),
            rx_bufs: HashMap::new(),
            rx_order: VecDeque::new(),
            next_id: 0,
            partial_frame: None,
            rx_error: None,
            rx_extras_pending: false,
        }
    }

    /// Its vif's id.
    pub fn id(&self) -> VifId {
        VifId {
            domid: self.dom.domid(),
            devid: 0,
        }
    }

    /// Connects it to `nb` directly (no xenbus).
    #[track_caller]
    pub fn connect(&self, nb: &mut Nb) {
        nb.connect_vif(self.id(), self.keys.clone())
            .expect("the backend connects the vif");
    }

    /// Connects it to `nb` directly and pins its MAC to its switch port, which it locks, as
    /// the backend does for a vif whose `mac` the toolstack wrote: another guest's frames
    /// claiming this MAC are dropped.
    #[track_caller]
    pub fn connect_pinned(&self, nb: &mut Nb) {
        self.connect(nb);
        let port = nb
            .vifs()
            .find(|v| v.id() == self.id())
            .map(|v| v.bridge_port())
            .expect("a connected vif has a port");
        let br = nb.bridge();
        br.add_static(MacAddr(mac(self.mac)), port)
            .expect("pin the MAC");
        br.set_port_locked(port, true).expect("lock the port");
    }

    /// Signals the backend.
    pub fn notify(&self) {
        let _ = self.evtchn.notify(self.port);
    }

    fn next_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    // --- grants ---

    /// Grants page `pfn` as `kind`.
    pub fn grant(&self, pfn: Pfn, kind: GrantKind) -> hypervisor::Result<GrantRef> {
        match kind {
            GrantKind::Rw => self.dom.grant_access(self.backend, pfn, false),
            GrantKind::Ro => self.dom.grant_access(self.backend, pfn, true),
            GrantKind::Foreign => {
                let other = self
                    .foreign
                    .expect("a foreign grant names Guest::foreign, which is not set");
                self.dom.grant_access(other, pfn, false)
            }
            GrantKind::Accept => self.dom.grant_accept_transfer(self.backend, pfn),
        }
    }

    /// Revokes grant `gref` of `kind`: ends access, or the transfer. Refused while the
    /// grantee holds it (a copy or mapping in progress).
    pub fn revoke(&self, gref: GrantRef, kind: GrantKind) -> hypervisor::Result<()> {
        kind.end(&self.dom, gref)
    }

    // --- the shared rings, raw ---

    /// Writes `v` (a request, an extra-info slot, any 12 bytes or fewer) into the tx slot for
    /// index `idx`; the rest of the slot stays.
    pub fn write_tx_at<T: Slot>(&self, idx: u32, v: T) {
        raw::write_slot_at::<TxRing, T>(self.tx.mem(), self.tx.size(), idx, v);
    }

    /// Reads the tx slot for index `idx` as `T` (a request or a response).
    pub fn read_tx_at<T: Slot>(&self, idx: u32) -> T {
        raw::read_slot_at::<TxRing, T>(self.tx.mem(), self.tx.size(), idx)
    }

    /// Publishes `v` as the tx ring's `req_prod`.
    pub fn set_tx_req_prod(&self, v: u32) {
        raw::set_req_prod(self.tx.mem(), v);
    }

    /// The tx ring's shared indices.
    pub fn tx_indices(&self) -> raw::Indices {
        raw::indices(self.tx.mem())
    }

    /// Writes `v` into the rx slot for index `idx`.
    pub fn write_rx_at<T: Slot>(&self, idx: u32, v: T) {
        raw::write_slot_at::<RxRing, T>(self.rx.mem(), self.rx.size(), idx, v);
    }

    /// Reads the rx slot for index `idx` as `T`.
    pub fn read_rx_at<T: Slot>(&self, idx: u32) -> T {
        raw::read_slot_at::<RxRing, T>(self.rx.mem(), self.rx.size(), idx)
    }

    /// Publishes `v` as the rx ring's `req_prod`.
    pub fn set_rx_req_prod(&self, v: u32) {
        raw::set_req_prod(self.rx.mem(), v);
    }

    /// The rx ring's shared indices.
    pub fn rx_indices(&self) -> raw::Indices {
        raw::indices(self.rx.mem())
    }
}

/// The 8 bytes of an extra-info slot.
fn extra_bytes(e: &ExtraInfo) -> [u8; 8] {
    let u = e.u;
    [e.type_, e.flags, u[0], u[1], u[2], u[3], u[4], u[5]]
}
