//! One virtual interface: a frontend's rings, event channel, rx queue and counters
//! (Linux's `interface.c`).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bridge_lite::{MacAddr, PortId};
use hypervisor::ringpage::mapped_ring;
use hypervisor::{BackendDomain, DomId, EventChannel, GrantOps, GrantRef, Port};
use netif_ring::netif::{ExtraError, RxMode};
use netif_ring::{BackRing, PageRing, RingError, RxRing, TxRing};

use crate::hash::{RxHash, VifHash};
use crate::mcast::McastFilter;
use crate::pool::NetFrame;

/// A vif's identity: frontend domain and device id (`vif<domid>.<devid>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
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
    /// A packet chaining more slots than `Config::tx_slots_fatal` after its first.
    TooManySlots {
        /// Slots after the first that the packet claimed (at least).
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
    /// The ctrl ring's producer index is beyond what the ring holds.
    CtrlRing(RingError),
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Ring(e) => write!(f, "{e}"),
            Fatal::TooManySlots { slots, limit } => write!(
                f,
                "tx packet chains {slots} slots after its first, more than the fatal limit \
                 {limit} (a malicious frontend, as Linux's fatal_skb_slots judges)"
            ),
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
            Fatal::CtrlRing(e) => write!(f, "ctrl ring: {e}"),
        }
    }
}

/// Per-vif counters, named as Linux's vif stats are: `tx_*` is guest → backend, `rx_*` is
/// backend → guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VifStats {
    /// Packets taken from the tx ring and handed to the switch.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Tx packets answered with an error and dropped: the first slot's own data (the packet's
    /// size less what the later slots carry) is shorter than an Ethernet header, as Linux checks.
    pub tx_runt: u64,
    /// Tx packets dropped for chaining more than `tx_slots_drop` slots after their first.
    pub tx_too_many_slots: u64,
    /// Tx packets dropped because a later slot was bigger than the bytes left in the packet.
    pub tx_oversize_slot: u64,
    /// Tx packets dropped because a grant copy failed (bad gref, permissions, ...).
    pub tx_copy_errors: u64,
    /// Tx packets dropped for want of backend buffers.
    pub tx_no_buffer: u64,
    /// Multicast add/remove requests (extra-info only, no data), answered and not forwarded.
    pub tx_mcast_requests: u64,
    /// Multicast adds refused because the vif's list already held 64 addresses (answered
    /// `NETIF_RSP_ERROR`, as Linux answers them).
    pub tx_mcast_errors: u64,
    /// Tx packets answered OK and dropped because their checksum setup failed (offload flags
    /// that do not match their headers), as Linux drops them.
    pub tx_csum_errors: u64,
    /// Tx super-frames (a GSO extra-info slot) taken from the guest.
    pub tx_gso_frames: u64,
    /// Times the guest's transmit stopped to wait for credit (its `rate` limit): each is a
    /// pass that left requests on the ring until the next credit window.
    pub tx_rate_limited: u64,
    /// Frames put on the guest's ring (a slot whose copy or transfer then failed is answered
    /// with an error and counted in `rx_copy_errors` too).
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames dropped because the vif's rx queue was at its byte cap or its share of the
    /// backend's pages.
    pub rx_queue_full: u64,
    /// Grant copies or page transfers into the guest that failed (bad gref, permissions, ...);
    /// each failed slot is answered with `NETIF_RSP_ERROR`.
    pub rx_copy_errors: u64,
    /// Frames dropped because they waited in the rx queue longer than `rx_drain_timeout`
    /// (the guest posted no buffers for them in time).
    pub rx_expired: u64,
    /// Frames dropped unsent because the vif was disabled or disconnected: those still queued
    /// then, and those switched to it afterwards.
    pub rx_discarded: u64,
    /// Frames copied privately before being flipped (flooded frames another vif also holds).
    pub rx_private_copies: u64,
    /// Super-frames delivered whole, with a GSO extra-info slot.
    pub rx_gso_frames: u64,
    /// Frames delivered with a hash extra-info slot (the guest set hashing up).
    pub rx_hash_extras: u64,
    /// Multicast frames the vif's filter kept from the guest (it asked for multicast control
    /// and did not subscribe to their group).
    pub rx_mcast_filtered: u64,
    /// Frames dropped because they could not be fitted to what the frontend takes: longer than a
    /// page without `feature-sg`, offload metadata not matching the headers, or no backend
    /// buffers for software segmentation or for a flip-mode guest's private copy, or (flip
    /// mode) the unused end of its last page could not be cleared.
    pub rx_unfit: u64,
    /// The most bytes the rx queue has held at once (at most `Config::rx_queue_bytes`).
    pub rx_queue_peak_bytes: u64,
    /// The most backend pages the rx queue's frames have pinned at once (at most the vif's
    /// share of the frame pool).
    pub rx_queue_peak_pages: u64,
    /// Notifications sent to the frontend.
    pub notifies: u64,
    /// Events from the frontend that found no work (lateeoi accounting, XSA-332).
    pub spurious_events: u64,
    /// Times the end of interrupt was delayed because events kept finding no work.
    pub eoi_delayed: u64,
    /// Grant-copy or transfer hypercalls made for this vif.
    pub hypercalls: u64,
    /// Grant operations (copies and transfers) submitted for this vif.
    pub grant_ops: u64,
    /// Requests answered on the ctrl ring.
    pub ctrl_requests: u64,
    /// Ctrl requests answered `INVALID_PARAMETER` (a bad size, offset, grant, queue number or
    /// algorithm).
    pub ctrl_invalid: u64,
    /// Ctrl requests answered `NOT_SUPPORTED` (an unknown type, the grant-mapping types, hash
    /// flags asked for before an algorithm was set).
    pub ctrl_not_supported: u64,
    /// Grant copies of a key or mapping table from the guest that failed (each also answered
    /// `INVALID_PARAMETER`).
    pub ctrl_copy_errors: u64,
    /// Set when the vif was disabled.
    #[serde(serialize_with = "fatal_as_text")]
    pub fatal: Option<Fatal>,
}

/// A fatal reason as its message (or null).
fn fatal_as_text<S: serde::Serializer>(f: &Option<Fatal>, s: S) -> Result<S::Ok, S::Error> {
    match f {
        Some(f) => s.collect_str(f),
        None => s.serialize_none(),
    }
}

/// One queue's keys, from the frontend's directory (or its `queue-N/` subdirectory when it
/// asked for several queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueKeys {
    /// `tx-ring-ref`.
    pub tx_ring_ref: GrantRef,
    /// `rx-ring-ref`.
    pub rx_ring_ref: GrantRef,
    /// `event-channel`, or `event-channel-tx` with split event channels (the frontend's
    /// unbound port for its transmit side).
    pub event_channel: Port,
    /// `event-channel-rx` with split event channels: the frontend's port for its receive side.
    pub event_channel_rx: Option<Port>,
}

/// What the frontend wrote to xenstore, enough to connect a vif.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendKeys {
    /// Each queue's rings and event channels (`multi-queue-num-queues` of them, at least one).
    pub queues: Vec<QueueKeys>,
    /// From `request-rx-copy`.
    pub mode: RxMode,
    /// What the frontend takes on its rx ring.
    pub offload: FrontendOffloads,
    /// `ctrl-ring-ref` and `event-channel-ctrl`, if the frontend made a ctrl ring.
    pub ctrl: Option<crate::ctrl::CtrlKeys>,
    /// `request-multicast-control`: only subscribed multicast groups reach the guest.
    pub multicast_control: bool,
    /// `xdp-headroom`: bytes left free before the data in each rx buffer (copy mode), at most
    /// `XEN_NETIF_MAX_XDP_HEADROOM`.
    pub xdp_headroom: u16,
}

impl FrontendKeys {
    /// One queue, one event channel: what a frontend without multi-queue writes.
    pub fn single(
        tx_ring_ref: GrantRef,
        rx_ring_ref: GrantRef,
        event_channel: Port,
        mode: RxMode,
        offload: FrontendOffloads,
    ) -> Self {
        Self {
            queues: vec![QueueKeys {
                tx_ring_ref,
                rx_ring_ref,
                event_channel,
                event_channel_rx: None,
            }],
            mode,
            offload,
            ctrl: None,
            multicast_control: false,
            xdp_headroom: 0,
        }
    }
}

/// What a frontend takes on its rx ring, from its `feature-*` keys (Linux's
/// `read_xenbus_vif_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct FrontendOffloads {
    /// `feature-sg`: frames longer than one page (several slots).
    pub sg: bool,
    /// Not `feature-no-csum-offload`: IPv4 TCP/UDP frames with only a partial checksum
    /// (`NETRXF_csum_blank`).
    pub csum: bool,
    /// `feature-ipv6-csum-offload`: the same for IPv6.
    pub ipv6_csum: bool,
    /// `feature-gso-tcpv4`: TCPv4 super-frames with a GSO extra-info slot.
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`: TCPv6 super-frames.
    pub gso_tcpv6: bool,
}

impl FrontendOffloads {
    /// Everything: what this project's netfront and Linux's take.
    pub const ALL: FrontendOffloads = FrontendOffloads {
        sg: true,
        csum: true,
        ipv6_csum: true,
        gso_tcpv4: true,
        gso_tcpv6: true,
    };
}

/// A vif's rx queue: frames waiting for guest buffers, capped in bytes, each stamped with when
/// it was queued so one that waits too long is dropped (as Linux stamps each skb).
pub(crate) struct RxQueue<D: BackendDomain> {
    /// Each frame with when it was queued and its hash (when the guest set hashing up).
    frames: VecDeque<(NetFrame<D>, Instant, Option<RxHash>)>,
    bytes: usize,
    /// Backend pages the queued frames pin (a 60-byte frame pins a whole page).
    pages: usize,
}

/// Pages a frame pins.
fn pages_of(len: usize) -> usize {
    len.div_ceil(hypervisor::PAGE_SIZE)
}

impl<D: BackendDomain> RxQueue<D> {
    pub fn new() -> Self {
        Self {
            frames: VecDeque::new(),
            bytes: 0,
            pages: 0,
        }
    }

    /// Queues a frame, or hands it back if it would take the queue past `cap` bytes or its
    /// `share` of the backend's pages.
    pub fn push(
        &mut self,
        frame: NetFrame<D>,
        now: Instant,
        cap: usize,
        share: usize,
        hash: Option<RxHash>,
    ) -> Result<(), NetFrame<D>> {
        let pages = pages_of(frame.len());
        if self.bytes + frame.len() > cap || self.pages + pages > share {
            return Err(frame);
        }
        self.bytes += frame.len();
        self.pages += pages;
        self.frames.push_back((frame, now, hash));
        Ok(())
    }

    /// The frame at the head, and its hash.
    pub fn front(&self) -> Option<(&NetFrame<D>, Option<RxHash>)> {
        self.frames.front().map(|(f, _, h)| (f, *h))
    }

    /// When the frame at the head was queued.
    pub fn oldest(&self) -> Option<Instant> {
        self.frames.front().map(|(_, at, _)| *at)
    }

    /// Takes the frame at the head, with its hash.
    pub fn pop(&mut self) -> Option<(NetFrame<D>, Option<RxHash>)> {
        let (f, _, h) = self.frames.pop_front()?;
        self.bytes -= f.len();
        self.pages -= pages_of(f.len());
        Some((f, h))
    }

    /// Drops frames at the head queued more than `timeout` before `now`; returns how many.
    pub fn drop_expired(&mut self, now: Instant, timeout: Duration) -> usize {
        let mut n = 0;
        while let Some((f, at, _)) = self.frames.front() {
            if now.saturating_duration_since(*at) < timeout {
                break;
            }
            self.bytes -= f.len();
            self.pages -= pages_of(f.len());
            self.frames.pop_front();
            n += 1;
        }
        n
    }

    /// Drops everything; returns how many frames.
    pub fn clear(&mut self) -> usize {
        let n = self.frames.len();
        self.frames.clear();
        self.bytes = 0;
        self.pages = 0;
        n
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// One of a vif's queues (multi-queue): its own rings, event channel(s), rx queue and counters,
/// served as a unit (Linux's `xenvif_queue`). A vif without multi-queue has one.
pub(crate) struct Queue<D: BackendDomain> {
    /// The vif it belongs to (for logs).
    pub(crate) id: VifId,
    /// Its index among the vif's queues.
    pub(crate) index: u16,
    pub(crate) tx: BackRing<TxRing, PageRing<<D as GrantOps>::Mapping>>,
    pub(crate) rx: BackRing<RxRing, PageRing<<D as GrantOps>::Mapping>>,
    /// The local port its transmit side notifies and is notified on (the only port without
    /// split event channels).
    pub(crate) tx_port: Port,
    /// The local port of its receive side: `tx_port` unless event channels are split.
    pub(crate) rx_port: Port,
    pub(crate) mode: RxMode,
    pub(crate) rx_queue: RxQueue<D>,
    pub(crate) stats: VifStats,
    /// Work was done on each port's side since that port's last end of interrupt was decided
    /// (index 0: `tx_port`, or the only port; 1: `rx_port` when split).
    pub(crate) did_work: [bool; 2],
    /// Each port's late end of interrupt (an event storm is throttled, XSA-332).
    pub(crate) eoi: [hypervisor::LateEoi; 2],
    /// Reused working storage of the tx and rx passes.
    pub(crate) tx_scratch: crate::tx::TxScratch<D>,
    pub(crate) rx_scratch: crate::rx::RxScratch<D>,
    /// The `rate` key's limit on the guest's transmit, if any (each queue has its own credit,
    /// as Linux's).
    pub(crate) rate: Option<crate::rate::Rate>,
    /// Its credit, started at the first pass after the rate was set (with that pass's clock).
    pub(crate) credit: Option<crate::rate::Credit>,
    /// A fatal error found while building this pass's copies, acted on when it finishes.
    pub(crate) tx_fatal: Option<Fatal>,
    pub(crate) rx_fatal: Option<Fatal>,
    /// Bytes left free before the data in each rx buffer (the vif's `xdp-headroom`; 0 in flip
    /// mode, where whole pages change hands).
    pub(crate) rx_headroom: u16,
    /// The frontend takes frames of several slots (`feature-sg`).
    pub(crate) rx_sg: bool,
}

impl<D: BackendDomain> Queue<D> {
    /// Whether its event channels are split (a port per direction).
    pub(crate) fn split(&self) -> bool {
        self.tx_port != self.rx_port
    }

    /// Which EOI slot a side's work counts for: the rx side has its own only when split.
    fn side(&self, rx: bool) -> usize {
        usize::from(rx && self.split())
    }

    /// Work was done on one side of the queue.
    pub(crate) fn worked(&mut self, rx: bool) {
        let s = self.side(rx);
        self.did_work[s] = true;
    }

    /// Counters, the late-EOI ones (kept by the ports' [`hypervisor::LateEoi`]s) included.
    pub(crate) fn stats(&self) -> VifStats {
        VifStats {
            spurious_events: self.eoi.iter().map(|e| e.spurious()).sum(),
            eoi_delayed: self.eoi.iter().map(|e| e.delayed()).sum(),
            ..self.stats.clone()
        }
    }

    /// When a queue whose transmit waits for credit may go on (the backend's wait must not
    /// sleep past it).
    pub(crate) fn tx_waiting_until(&self) -> Option<Instant> {
        self.credit.as_ref().and_then(|c| c.waiting_until())
    }

    /// Whether the queue (and so its vif) was disabled for a fatal frontend error.
    pub(crate) fn is_disabled(&self) -> bool {
        self.stats.fatal.is_some()
    }

    /// Disables the queue: logs once, records why, drops its queue. The vif disables its other
    /// queues after the pass. The rings stay mapped until the frontend disconnects (as Linux
    /// keeps them until `xenvif_disconnect`).
    pub(crate) fn disable(&mut self, why: Fatal) {
        if self.stats.fatal.is_none() {
            crate::ratelimit::guest_log(
                log::Level::Error,
                self.id,
                format_args!(
                    "{} queue {}: frontend misbehaved, disabling the vif (carrier off): {why}",
                    self.id, self.index
                ),
            );
            self.stats.fatal = Some(why);
            self.stats.rx_discarded += self.rx_queue.clear() as u64;
        }
    }

    /// Queues a frame for delivery to the guest, dropping it (counted) at the byte cap.
    pub(crate) fn enqueue_rx(
        &mut self,
        frame: NetFrame<D>,
        now: Instant,
        cap: usize,
        share: usize,
        hash: Option<RxHash>,
    ) {
        if self.is_disabled() {
            self.stats.rx_discarded += 1;
            return;
        }
        match self.rx_queue.push(frame, now, cap, share, hash) {
            Ok(()) => {
                let s = &mut self.stats;
                s.rx_queue_peak_bytes = s.rx_queue_peak_bytes.max(self.rx_queue.bytes as u64);
                s.rx_queue_peak_pages = s.rx_queue_peak_pages.max(self.rx_queue.pages as u64);
            }
            Err(_) => self.stats.rx_queue_full += 1,
        }
    }

    /// Sends an event to the frontend on one side's port.
    pub(crate) fn notify(&mut self, evtchn: &D::Evtchn, rx: bool) {
        self.stats.notifies += 1;
        let port = if rx { self.rx_port } else { self.tx_port };
        // A notify to a closed port means the frontend went away; the control plane tears the
        // vif down when it sees the state change.
        let _ = evtchn.notify(port);
    }

    /// Linux 6.1's check at connect (`xenvif_map_frontend_data_rings`): each ring's requests
    /// past its responses must fit the ring, else the frontend is refused rather than
    /// connected and disabled on its first pass.
    fn check_rings(&mut self) -> Result<(), crate::FrontendError> {
        let bad = |ring, why| crate::FrontendError::RingIndices { ring, why };
        self.tx.unconsumed_requests().map_err(|e| bad("tx", e))?;
        self.rx.unconsumed_requests().map_err(|e| bad("rx", e))?;
        Ok(())
    }
}

/// A connected vif: its queues, and what they share (its switch port, MAC, mode).
pub struct Vif<D: BackendDomain> {
    pub(crate) id: VifId,
    pub(crate) mode: RxMode,
    /// What the frontend takes on its rx ring.
    pub(crate) accepts: crate::Accepts,
    /// The switch it is plugged into, and its port there.
    pub(crate) switch: crate::switch::SwitchId,
    pub(crate) bridge_port: PortId,
    /// The MAC the toolstack configured (`mac` in the backend directory); the vif's bridge
    /// port accepts only this source when set.
    pub(crate) mac: Option<MacAddr>,
    /// At least one.
    pub(crate) queues: Vec<Queue<D>>,
    /// The `rate` key's limit on the guest's transmit, if any.
    pub(crate) rate: Option<crate::rate::Rate>,
    /// Its ctrl ring, if the frontend made one.
    pub(crate) ctrl: Option<Box<crate::ctrl::Ctrl<D>>>,
    /// Receive-side hashing the guest set up over the ctrl ring (off by default).
    pub(crate) hash: VifHash,
    /// Its multicast list and filter.
    pub(crate) mcast: McastFilter,
    /// Counters of the vif as a whole (ctrl ring, multicast filter); the queues keep the rest.
    pub(crate) stats: VifStats,
}

impl<D: BackendDomain> fmt::Debug for Vif<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vif")
            .field("id", &self.id)
            .field("queues", &self.queues.len())
            .field("ports", &self.ports())
            .field("mode", &self.mode)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<D: BackendDomain> Vif<D> {
    /// Maps every queue's rings and binds its event channel(s) on `evtchn`
    /// (`xenvif_connect_data` per queue). On failure nothing stays mapped or bound.
    pub(crate) fn connect(
        dom0: &D,
        evtchn: &D::Evtchn,
        id: VifId,
        keys: &FrontendKeys,
        switch: crate::switch::SwitchId,
        bridge_port: PortId,
        mac: Option<MacAddr>,
    ) -> Result<Vif<D>, crate::FrontendError> {
        // A flipped page carries one slot's data: no super-frames in flip mode.
        let accepts = match keys.mode {
            RxMode::Copy => keys.offload.into(),
            RxMode::Flip => crate::Accepts {
                gso_tcpv4: false,
                gso_tcpv6: false,
                ..keys.offload.into()
            },
        };
        let mut vif = Vif {
            id,
            mode: keys.mode,
            accepts,
            switch,
            bridge_port,
            mac,
            queues: Vec::with_capacity(keys.queues.len()),
            rate: None,
            ctrl: None,
            hash: VifHash::default(),
            mcast: McastFilter::default(),
            stats: VifStats::default(),
        };
        vif.mcast.set_control(keys.multicast_control);
        // As Linux's connect: the ctrl ring first, then the data rings.
        if let Some(c) = keys.ctrl {
            vif.ctrl = Some(Box::new(crate::ctrl::Ctrl::connect(dom0, evtchn, id, c)?));
        }
        for (index, q) in keys.queues.iter().enumerate() {
            match Self::connect_queue(dom0, evtchn, id, index as u16, q, keys.mode) {
                Ok(mut queue) => {
                    queue.rx_sg = accepts.sg;
                    vif.queues.push(queue)
                }
                Err(e) => {
                    vif.unbind(evtchn);
                    return Err(e);
                }
            }
        }
        vif.set_xdp_headroom(keys.xdp_headroom);
        Ok(vif)
    }

    fn connect_queue(
        dom0: &D,
        evtchn: &D::Evtchn,
        id: VifId,
        index: u16,
        keys: &QueueKeys,
        mode: RxMode,
    ) -> Result<Queue<D>, crate::FrontendError> {
        use crate::FrontendError::Connect;
        let tx_map = dom0
            .map_grant_ref(id.domid, keys.tx_ring_ref)
            .map_err(Connect)?;
        let rx_map = dom0
            .map_grant_ref(id.domid, keys.rx_ring_ref)
            .map_err(Connect)?;
        let tx = BackRing::attach(mapped_ring(tx_map).map_err(Connect)?);
        let rx = BackRing::attach(mapped_ring(rx_map).map_err(Connect)?);
        let tx_port = evtchn
            .bind_interdomain(id.domid, keys.event_channel)
            .map_err(Connect)?;
        let rx_port = match keys.event_channel_rx {
            None => tx_port,
            Some(p) => match evtchn.bind_interdomain(id.domid, p) {
                Ok(p) => p,
                Err(e) => {
                    let _ = evtchn.unbind(tx_port);
                    return Err(Connect(e));
                }
            },
        };
        let mut q = Queue {
            id,
            index,
            tx,
            rx,
            tx_port,
            rx_port,
            mode,
            rx_queue: RxQueue::new(),
            stats: VifStats::default(),
            // Binding marks the port pending on real Xen (the event is delivered and unmasked
            // like any other); every pass looks at both rings anyway, events or not.
            did_work: [false; 2],
            eoi: [hypervisor::LateEoi::new(), hypervisor::LateEoi::new()],
            tx_scratch: Default::default(),
            rx_scratch: Default::default(),
            rate: None,
            credit: None,
            tx_fatal: None,
            rx_fatal: None,
            rx_headroom: 0,
            rx_sg: true,
        };
        if let Err(e) = q.check_rings() {
            let _ = evtchn.unbind(q.tx_port);
            if q.split() {
                let _ = evtchn.unbind(q.rx_port);
            }
            return Err(e);
        }
        Ok(q)
    }

    /// Unbinds every queue's ports (the rings unmap when the vif drops).
    pub(crate) fn unbind(&self, evtchn: &D::Evtchn) {
        for p in self.ports() {
            let _ = evtchn.unbind(p);
        }
    }

    /// Every local port of the vif, each once (its queues', then its ctrl ring's).
    pub fn ports(&self) -> Vec<Port> {
        let mut ports = Vec::with_capacity(self.queues.len() * 2 + 1);
        for q in &self.queues {
            ports.push(q.tx_port);
            if q.split() {
                ports.push(q.rx_port);
            }
        }
        if let Some(c) = &self.ctrl {
            ports.push(c.port);
        }
        ports
    }

    /// The vif's identity.
    pub fn id(&self) -> VifId {
        self.id
    }

    /// The local event-channel port of its first queue (its transmit side's when split).
    pub fn port(&self) -> Port {
        self.queues[0].tx_port
    }

    /// How many queues it has.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The bridge port the vif is plugged into.
    pub fn bridge_port(&self) -> PortId {
        self.bridge_port
    }

    /// The switch the vif is plugged into.
    pub fn switch(&self) -> crate::switch::SwitchId {
        self.switch
    }

    /// The MAC its switch port is locked to, if the toolstack configured one.
    pub fn mac(&self) -> Option<MacAddr> {
        self.mac
    }

    /// Counters of all its queues together, and of the vif as a whole.
    pub fn stats(&self) -> VifStats {
        let mut all = self.stats.clone();
        for q in &self.queues {
            all.add(&q.stats());
        }
        all
    }

    /// Its receive-side hash settings (algorithm none unless the guest set hashing up over its
    /// ctrl ring).
    pub fn hash_settings(&self) -> crate::HashSettings {
        self.hash.settings()
    }

    /// Whether it has a ctrl ring.
    pub fn has_ctrl_ring(&self) -> bool {
        self.ctrl.is_some()
    }

    /// The multicast groups it subscribed to, and whether it asked for filtering
    /// (`request-multicast-control`).
    pub fn multicast(&self) -> (bool, Vec<[u8; 6]>) {
        (self.mcast.active(), self.mcast.groups().to_vec())
    }

    /// Its `xdp-headroom` as applied (copy mode; 0 in flip mode).
    pub fn xdp_headroom(&self) -> u16 {
        self.queues[0].rx_headroom
    }

    /// Follows the frontend's `request-multicast-control`.
    pub(crate) fn set_multicast_control(&mut self, on: bool) {
        self.mcast.set_control(on);
    }

    /// Applies the frontend's `xdp-headroom` (clamped to `XEN_NETIF_MAX_XDP_HEADROOM`, as
    /// Linux clamps it) to every queue, from the next frame delivered on; flip mode ignores it.
    pub(crate) fn set_xdp_headroom(&mut self, headroom: u16) {
        let h = match self.mode {
            RxMode::Copy => headroom.min(netif_ring::netif::XEN_NETIF_MAX_XDP_HEADROOM),
            RxMode::Flip => 0,
        };
        for q in &mut self.queues {
            q.rx_headroom = h;
        }
    }

    /// Each queue's counters.
    pub fn queue_stats(&self) -> Vec<VifStats> {
        self.queues.iter().map(Queue::stats).collect()
    }

    /// Limits the guest's transmit to `rate` (`None`: unlimited), from the next pass on with a
    /// full window of credit, as Linux applies a changed `rate` key.
    pub(crate) fn set_rate(&mut self, rate: Option<crate::rate::Rate>) {
        self.rate = rate;
        for q in &mut self.queues {
            q.rate = rate;
            q.credit = None;
        }
    }

    /// The guest's transmit rate limit.
    pub fn rate(&self) -> Option<crate::rate::Rate> {
        self.rate
    }

    /// Whether the vif was disabled for a fatal frontend error (on any queue).
    pub fn is_disabled(&self) -> bool {
        self.queues.iter().any(Queue::is_disabled)
    }

    /// After a pass: a fatal error on one queue disables them all (Linux takes the whole vif's
    /// carrier down).
    pub(crate) fn propagate_fatal(&mut self) {
        let Some(why) = self.queues.iter().find_map(|q| q.stats.fatal.clone()) else {
            return;
        };
        for q in &mut self.queues {
            if q.stats.fatal.is_none() {
                q.stats.fatal = Some(why.clone());
                q.stats.rx_discarded += q.rx_queue.clear() as u64;
            }
        }
    }

    /// Where a frame from the switch goes (Linux's `xenvif_start_xmit` and
    /// `xenvif_select_queue`): `None` if the vif's multicast filter keeps it from the guest
    /// (counted); else its queue and, when the guest set hashing up, its hash. Without hashing
    /// the queue is its flow's hash over the queues.
    #[inline]
    pub(crate) fn rx_select(&mut self, frame: &NetFrame<D>) -> Option<(usize, Option<RxHash>)> {
        let head = bridge_lite::Frame::bytes(frame);
        if self.mcast.active() && !self.mcast.passes(head) {
            self.stats.rx_mcast_filtered += 1;
            return None;
        }
        if self.hash.active() {
            let more = |buf: &mut [u8]| frame.0.peek(buf).unwrap_or(0);
            return Some(self.hash.select(head, more, self.queues.len()));
        }
        if self.queues.len() == 1 {
            return Some((0, None));
        }
        let q = offload::flow::flow_hash(head) % self.queues.len() as u32;
        Some((q as usize, None))
    }
}

impl VifStats {
    /// Adds `o`'s counters to these (peaks take the larger; the first fatal reason stays).
    pub fn add(&mut self, o: &VifStats) {
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_runt += o.tx_runt;
        self.tx_too_many_slots += o.tx_too_many_slots;
        self.tx_oversize_slot += o.tx_oversize_slot;
        self.tx_copy_errors += o.tx_copy_errors;
        self.tx_no_buffer += o.tx_no_buffer;
        self.tx_mcast_requests += o.tx_mcast_requests;
        self.tx_mcast_errors += o.tx_mcast_errors;
        self.tx_csum_errors += o.tx_csum_errors;
        self.tx_gso_frames += o.tx_gso_frames;
        self.tx_rate_limited += o.tx_rate_limited;
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.rx_queue_full += o.rx_queue_full;
        self.rx_copy_errors += o.rx_copy_errors;
        self.rx_expired += o.rx_expired;
        self.rx_discarded += o.rx_discarded;
        self.rx_private_copies += o.rx_private_copies;
        self.rx_gso_frames += o.rx_gso_frames;
        self.rx_hash_extras += o.rx_hash_extras;
        self.rx_mcast_filtered += o.rx_mcast_filtered;
        self.rx_unfit += o.rx_unfit;
        self.rx_queue_peak_bytes = self.rx_queue_peak_bytes.max(o.rx_queue_peak_bytes);
        self.rx_queue_peak_pages = self.rx_queue_peak_pages.max(o.rx_queue_peak_pages);
        self.notifies += o.notifies;
        self.spurious_events += o.spurious_events;
        self.eoi_delayed += o.eoi_delayed;
        self.hypercalls += o.hypercalls;
        self.grant_ops += o.grant_ops;
        self.ctrl_requests += o.ctrl_requests;
        self.ctrl_invalid += o.ctrl_invalid;
        self.ctrl_not_supported += o.ctrl_not_supported;
        self.ctrl_copy_errors += o.ctrl_copy_errors;
        if self.fatal.is_none() {
            self.fatal = o.fatal.clone();
        }
    }
}
