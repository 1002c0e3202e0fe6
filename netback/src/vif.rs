//! One virtual interface: a frontend's rings, event channel, rx queue and counters
//! (Linux's `interface.c`).

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use bridge_lite::PortId;
use hypervisor::ringpage::mapped_ring;
use hypervisor::{DomId, DomainHandle, GrantMapping, GrantRef, Port};
use ring::netif::ExtraError;
use ring::{BackRing, PageRing, RingError, RxRing, TxRing};

use crate::pool::NetFrame;

/// How the frontend wants received frames delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxMode {
    /// Grant copy into buffers the guest posts (`request-rx-copy=1`).
    Copy,
    /// Page flip: transfer the backend page into the guest (`request-rx-copy=0`).
    Flip,
}

/// A vif's identity: frontend domain and device id (`vif<domid>.<devid>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VifId {
    /// The frontend domain.
    pub domid: DomId,
    /// The device id (`handle`).
    pub devid: u32,
}

impl fmt::Display for VifId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vif{}.{}", self.domid, self.devid)
    }
}

/// Why a vif was disabled: the frontend broke the protocol in a way Linux netback treats as
/// fatal (`xenvif_fatal_tx_err` and friends). The vif stops being served; others carry on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    /// A producer index beyond what the ring holds.
    Ring(RingError),
    /// A packet using more slots than `Config::tx_slots_fatal`.
    TooManySlots {
        /// Slots the packet claimed (at least).
        slots: usize,
        /// The limit.
        limit: usize,
    },
    /// A tx slot whose data crosses its page (`offset + size > 4096`).
    SlotCrossesPage {
        /// The slot's offset.
        offset: u16,
        /// The slot's size.
        size: u16,
    },
    /// A malformed extra-info slot.
    BadExtra(ExtraError),
    /// A packet whose `more_data` chain (or extra-info chain) runs past the requests the
    /// frontend pushed.
    TruncatedPacket {
        /// Slots of the packet read before the pushed requests ran out.
        got: usize,
    },
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Ring(e) => write!(f, "{e}"),
            Fatal::TooManySlots { slots, limit } => {
                write!(
                    f,
                    "tx packet uses {slots} slots, more than the fatal limit {limit}"
                )
            }
            Fatal::SlotCrossesPage { offset, size } => write!(
                f,
                "tx slot offset {offset} + size {size} crosses the 4096-byte page"
            ),
            Fatal::BadExtra(e) => write!(f, "{e}"),
            Fatal::TruncatedPacket { got } => write!(
                f,
                "tx packet chain continues after {got} slots but no further request was pushed \
                 (a frontend must push whole packets)"
            ),
        }
    }
}

/// Per-vif counters, named as Linux's vif stats are: `tx_*` is guest → backend, `rx_*` is
/// backend → guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VifStats {
    /// Packets taken from the tx ring and handed to the switch.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Tx packets answered with an error and dropped: the first slot's own data (the packet's
    /// size less what the later slots carry) is shorter than an Ethernet header, as Linux checks.
    pub tx_runt: u64,
    /// Tx packets dropped for using more than `tx_slots_drop` slots.
    pub tx_too_many_slots: u64,
    /// Tx packets dropped because a later slot was bigger than the bytes left in the packet.
    pub tx_oversize_slot: u64,
    /// Tx packets dropped because a grant copy failed (bad gref, permissions, ...).
    pub tx_copy_errors: u64,
    /// Tx packets dropped for want of backend buffers.
    pub tx_no_buffer: u64,
    /// Frames delivered into the guest.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames dropped because the vif's rx queue was at its byte cap.
    pub rx_queue_full: u64,
    /// Grant copies or page transfers into the guest that failed (bad gref, permissions, ...);
    /// each failed slot is answered with `NETIF_RSP_ERROR`.
    pub rx_copy_errors: u64,
    /// Frames dropped by draining a stalled queue (the guest posted no buffers in time).
    pub rx_drained: u64,
    /// Notifications sent to the frontend.
    pub notifies: u64,
    /// Events from the frontend that found no work (lateeoi accounting, XSA-332).
    pub spurious_events: u64,
    /// Grant-copy or transfer hypercalls made for this vif.
    pub hypercalls: u64,
    /// Set when the vif was disabled.
    pub fatal: Option<Fatal>,
}

/// A connected vif.
pub struct Vif {
    pub(crate) id: VifId,
    pub(crate) tx: BackRing<TxRing, PageRing<GrantMapping>>,
    pub(crate) rx: BackRing<RxRing, PageRing<GrantMapping>>,
    pub(crate) port: Port,
    pub(crate) mode: RxMode,
    pub(crate) bridge_port: PortId,
    pub(crate) rx_queue: VecDeque<NetFrame>,
    pub(crate) rx_queued_bytes: usize,
    /// Since when the head of the rx queue has waited for buffers.
    pub(crate) rx_stalled_since: Option<Instant>,
    pub(crate) stats: VifStats,
    /// An event arrived for this vif since the last pass.
    pub(crate) event_pending: bool,
    /// The last pass found work for this vif.
    pub(crate) did_work: bool,
    /// Reused working storage of the tx and rx passes.
    pub(crate) tx_scratch: crate::tx::TxScratch,
    pub(crate) rx_scratch: crate::rx::RxScratch,
}

impl fmt::Debug for Vif {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vif")
            .field("id", &self.id)
            .field("port", &self.port)
            .field("mode", &self.mode)
            .field("rx_queued_bytes", &self.rx_queued_bytes)
            .field("stats", &self.stats)
            .finish()
    }
}

/// What the frontend wrote to xenstore, enough to connect a vif.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontendKeys {
    /// `tx-ring-ref`.
    pub tx_ring_ref: GrantRef,
    /// `rx-ring-ref`.
    pub rx_ring_ref: GrantRef,
    /// `event-channel` (the frontend's unbound port).
    pub event_channel: Port,
    /// From `request-rx-copy`.
    pub mode: RxMode,
}

impl Vif {
    /// Maps the frontend's rings and binds its event channel (`xenvif_connect_data`).
    pub fn connect(
        dom0: &DomainHandle,
        id: VifId,
        keys: FrontendKeys,
        bridge_port: PortId,
    ) -> Result<Vif, hypervisor::Error> {
        let tx_map = dom0.map_grant_ref(id.domid, keys.tx_ring_ref, false)?;
        let rx_map = dom0.map_grant_ref(id.domid, keys.rx_ring_ref, false)?;
        let tx = BackRing::attach(mapped_ring(tx_map)?);
        let rx = BackRing::attach(mapped_ring(rx_map)?);
        let port = dom0.bind_interdomain(id.domid, keys.event_channel)?;
        Ok(Vif {
            id,
            tx,
            rx,
            port,
            mode: keys.mode,
            bridge_port,
            rx_queue: VecDeque::new(),
            rx_queued_bytes: 0,
            rx_stalled_since: None,
            stats: VifStats::default(),
            event_pending: false,
            did_work: false,
            tx_scratch: Default::default(),
            rx_scratch: Default::default(),
        })
    }

    /// The vif's identity.
    pub fn id(&self) -> VifId {
        self.id
    }

    /// The local event-channel port bound to the frontend.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The bridge port the vif is plugged into.
    pub fn bridge_port(&self) -> PortId {
        self.bridge_port
    }

    /// Counters.
    pub fn stats(&self) -> &VifStats {
        &self.stats
    }

    /// Whether the vif was disabled for a fatal frontend error.
    pub fn is_disabled(&self) -> bool {
        self.stats.fatal.is_some()
    }

    /// Disables the vif: logs once, records why, drops its queue. The rings stay mapped until
    /// the frontend disconnects (as Linux keeps them until `xenvif_disconnect`).
    pub(crate) fn disable(&mut self, why: Fatal) {
        if self.stats.fatal.is_none() {
            eprintln!(
                "netback: {}: frontend misbehaved, disabling the vif (carrier off): {why}",
                self.id
            );
            self.stats.fatal = Some(why);
            self.rx_queue.clear();
            self.rx_queued_bytes = 0;
        }
    }

    /// Queues a frame for delivery to the guest, dropping it (counted) at the byte cap.
    pub(crate) fn enqueue_rx(&mut self, frame: NetFrame, cap: usize) {
        if self.is_disabled() {
            return;
        }
        if self.rx_queued_bytes + frame.len() > cap {
            self.stats.rx_queue_full += 1;
            return;
        }
        self.rx_queued_bytes += frame.len();
        self.rx_queue.push_back(frame);
    }

    /// Sends an event to the frontend.
    pub(crate) fn notify(&mut self, dom0: &DomainHandle) {
        self.stats.notifies += 1;
        // A notify to a closed port means the frontend went away; the control plane tears the
        // vif down when it sees the state change.
        let _ = dom0.notify(self.port);
    }
}
