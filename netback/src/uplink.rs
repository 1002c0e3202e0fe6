//! The uplink: a NIC between the switch and the wire, and the wire's far end.
//!
//! The far end (a remote host, running as its own pseudo-domain) hands frames to the NIC through
//! a bounded queue of recycled buffers; dom0's NIC driver copies each into dom0 pages (the DMA of
//! a real NIC, charged to class `nic` as the seed profile charged `e1000`) and feeds the switch.
//! Frames the switch sends to the uplink go the other way. Each side wakes the other through a
//! real event channel, and only when the other asked to be woken (a want-event flag set before it
//! sleeps and re-checked after a full fence: ring.h's final check, in miniature), so a busy
//! stream sends almost no events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};

use bridge_lite::PortId;
use crossbeam_queue::ArrayQueue;
use hypervisor::{DomainHandle, Port};

use crate::pool::{BufPool, NetFrame};

/// Frames in flight per direction.
pub const WIRE_SLOTS: usize = 1024;

struct Direction {
    full: ArrayQueue<Vec<u8>>,
    empty: ArrayQueue<Vec<u8>>,
    /// The receiving side is about to sleep and wants an event for the next frame.
    want_event: AtomicBool,
    /// The sending side found no empty buffer and wants an event when one is returned (a NIC's
    /// queue-wake interrupt).
    want_space: AtomicBool,
}

impl Direction {
    fn new() -> Self {
        Self {
            full: ArrayQueue::new(WIRE_SLOTS),
            empty: ArrayQueue::new(WIRE_SLOTS),
            want_event: AtomicBool::new(false),
            want_space: AtomicBool::new(false),
        }
    }

    /// Consumer side, after returning buffers: should the producer be told there is room?
    fn check_space_notify(&self) -> bool {
        // Full fence: orders our buffer returns before the want_space read; pairs with the fence
        // in `arm_space` between the producer's want_space store and its re-check of `empty`.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence; the swap makes one notification per arming.
        self.want_space.load(Ordering::Relaxed) && self.want_space.swap(false, Ordering::Relaxed)
    }

    /// Producer side, before sleeping on a full queue: ask for an event when a buffer comes
    /// back, then re-check. True: there is room already.
    fn arm_space(&self) -> bool {
        // Relaxed store ordered before the re-check by the fence below.
        self.want_space.store(true, Ordering::Relaxed);
        // Full fence: pairs with the fence in `check_space_notify`.
        fence(Ordering::SeqCst);
        !self.empty.is_empty()
    }

    /// Producer side: after pushing, should the consumer be notified?
    fn check_notify(&self) -> bool {
        // Full fence: orders our push before the want_event read; pairs with the fence in
        // `arm` between the consumer's want_event store and its queue re-check, so either we
        // see the flag or it sees our frame.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence; the swap makes one notification per arming.
        self.want_event.load(Ordering::Relaxed) && self.want_event.swap(false, Ordering::Relaxed)
    }

    /// Consumer side, before sleeping: ask for an event, then re-check. True: work arrived.
    fn arm(&self) -> bool {
        // Relaxed store ordered before the re-check by the fence below.
        self.want_event.store(true, Ordering::Relaxed);
        // Full fence: pairs with the fence in `check_notify`.
        fence(Ordering::SeqCst);
        !self.full.is_empty()
    }
}

struct Shared {
    to_dom0: Direction,
    to_wire: Direction,
}

/// dom0's end: the NIC driver.
pub struct Uplink {
    shared: Arc<Shared>,
    dom0: DomainHandle,
    /// dom0's port bound to the wire's.
    port: Port,
    bridge_port: Option<PortId>,
    nic: xenoprof::Class,
    /// Largest frame the wire carries (the budget check's unit).
    max_frame: usize,
    stats: UplinkStats,
}

/// The NIC driver's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Frames received from the wire.
    pub rx_frames: u64,
    /// Frames dropped for want of dom0 buffers.
    pub rx_no_buffer: u64,
    /// Frames sent to the wire.
    pub tx_frames: u64,
    /// Frames dropped because the wire was full.
    pub tx_dropped: u64,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("port", &self.port)
            .field("stats", &self.stats)
            .finish()
    }
}

/// The wire's far end, for the remote host's thread.
pub struct Wire {
    shared: Arc<Shared>,
    remote: DomainHandle,
    port: Port,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").field("port", &self.port).finish()
    }
}

/// Builds a NIC in `dom0` and the wire to `remote` (a pseudo-domain for the remote host), with an
/// event channel between them. `mtu` is the largest Ethernet frame (bytes, header included).
pub fn uplink(
    dom0: &DomainHandle,
    remote: &DomainHandle,
    mtu: usize,
) -> Result<(Uplink, Wire), hypervisor::Error> {
    let shared = Arc::new(Shared {
        to_dom0: Direction::new(),
        to_wire: Direction::new(),
    });
    for _ in 0..WIRE_SLOTS {
        let _ = shared.to_dom0.empty.push(Vec::with_capacity(mtu));
        let _ = shared.to_wire.empty.push(Vec::with_capacity(mtu));
    }
    let remote_port = remote.alloc_unbound(dom0.domid())?;
    let port = dom0.bind_interdomain(remote.domid(), remote_port)?;
    let nic = xenoprof::Class::register("nic").unwrap_or(xenoprof::Class::OTHER);
    Ok((
        Uplink {
            shared: shared.clone(),
            dom0: dom0.clone(),
            port,
            bridge_port: None,
            nic,
            max_frame: mtu,
            stats: UplinkStats::default(),
        },
        Wire {
            shared,
            remote: remote.clone(),
            port: remote_port,
        },
    ))
}

impl Uplink {
    pub(crate) fn set_bridge_port(&mut self, port: PortId) {
        self.bridge_port = Some(port);
    }

    /// The switch port the uplink is plugged into, once attached.
    pub fn bridge_port(&self) -> Option<PortId> {
        self.bridge_port
    }

    /// Largest frame the wire carries: the uplink takes a frame only with this much budget.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Counters.
    pub fn stats(&self) -> UplinkStats {
        self.stats
    }

    /// dom0's event-channel port for the wire.
    pub fn port(&self) -> Port {
        self.port
    }

    /// Whether frames wait, arming the wire's event if none do.
    pub(crate) fn has_work(&self) -> bool {
        self.shared.to_dom0.arm()
    }

    /// Takes frames from the wire into dom0 buffers: at most a ring's worth per pass, and no
    /// more than `budget` bytes (a frame that would exceed it stays on the wire).
    pub(crate) fn receive(
        &mut self,
        pool: &BufPool,
        out: &mut Vec<NetFrame>,
        budget: usize,
    ) -> bool {
        let _s = xenoprof::scope(self.nic);
        let d = &self.shared.to_dom0;
        let mut n = 0;
        let mut taken = 0usize;
        while n < 256 {
            // The queue has no peek, so the budget is checked against the largest frame the
            // wire carries: never more than `budget` bytes are taken.
            if taken + self.max_frame > budget {
                break;
            }
            let Some(mut data) = d.full.pop() else { break };
            n += 1;
            taken += data.len();
            match pool.alloc(data.len()) {
                Some(mut buf) => {
                    if buf.fill(&data).is_ok() {
                        self.stats.rx_frames += 1;
                        out.push(NetFrame::new(buf));
                    } else {
                        self.stats.rx_no_buffer += 1;
                    }
                }
                None => self.stats.rx_no_buffer += 1,
            }
            data.clear();
            let _ = d.empty.push(data);
        }
        // The far end may be asleep on a full NIC: tell it there is room again.
        if n > 0 && d.check_space_notify() {
            let _ = self.dom0.notify(self.port);
        }
        n > 0
    }

    /// Sends switched frames to the wire.
    pub(crate) fn transmit(&mut self, frames: impl Iterator<Item = NetFrame>) {
        let _s = xenoprof::scope(self.nic);
        let d = &self.shared.to_wire;
        let mut sent = false;
        for f in frames {
            let Some(mut data) = d.empty.pop() else {
                self.stats.tx_dropped += 1;
                continue;
            };
            if f.0.read_into(&mut data).is_ok() && d.full.push(data).is_ok() {
                self.stats.tx_frames += 1;
                sent = true;
            } else {
                self.stats.tx_dropped += 1;
            }
        }
        if sent && d.check_notify() {
            let _ = self.dom0.notify(self.port);
        }
    }
}

impl Wire {
    /// The remote host's event-channel port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The remote domain.
    pub fn domain(&self) -> &DomainHandle {
        &self.remote
    }

    /// Whether the NIC has room for another frame.
    pub fn can_send(&self) -> bool {
        !self.shared.to_dom0.empty.is_empty()
    }

    /// Puts a frame of `len` bytes on the wire, written by `fill`. Returns `None` (and does not
    /// call `fill`) if the NIC's queue is full.
    pub fn send<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        let d = &self.shared.to_dom0;
        let mut data = d.empty.pop()?;
        data.resize(len, 0);
        let r = fill(&mut data);
        if let Err(back) = d.full.push(data) {
            let _ = d.empty.push(back);
            return None;
        }
        Some(r)
    }

    /// Wakes dom0 if it asked for an event; call after a burst of `send`s.
    pub fn flush(&self) {
        if self.shared.to_dom0.check_notify() {
            let _ = self.remote.notify(self.port);
        }
    }

    /// Takes the next frame from the wire as an owned buffer, recycled when dropped (for a
    /// device whose receive token must outlive the borrow of the wire).
    pub fn take_frame(&mut self) -> Option<WireFrame> {
        let data = self.shared.to_wire.full.pop()?;
        Some(WireFrame {
            data,
            shared: self.shared.clone(),
        })
    }

    /// Before sleeping: asks dom0 for an event on the next frame, and, if the NIC is full, for
    /// an event when it has room again; true if either is already the case.
    pub fn arm(&self) -> bool {
        let frame = self.shared.to_wire.arm();
        let room = !self.can_send() && self.shared.to_dom0.arm_space();
        frame || room
    }
}

/// A frame taken off the wire; its buffer goes back to the NIC when dropped.
pub struct WireFrame {
    data: Vec<u8>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WireFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireFrame")
            .field("len", &self.data.len())
            .finish()
    }
}

impl std::ops::Deref for WireFrame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for WireFrame {
    fn drop(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        let _ = self.shared.to_wire.empty.push(data);
    }
}
