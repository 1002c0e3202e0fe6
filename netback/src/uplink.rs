//! Uplinks: bridge-lite ports backed by something other than a guest, and the NIC model.
//!
//! An [`Uplink`] moves frames between the switch and the outside: the embedded NIC model
//! ([`WireNic`], whose far end is a remote host on a [`Wire`]), or, in the `netbackd` program,
//! a Linux TAP device or an `AF_PACKET` socket on a real NIC. Several may be attached at once;
//! each is a switch port with counters and pcap like any other. Each says how it wakes the
//! backend ([`Wakeup`]): an event-channel port on the backend's handle, or a descriptor the
//! backend's loop polls together with its event channels.
//!
//! The NIC model: the far end (a remote host, running as its own pseudo-domain) hands frames
//! to the NIC through a bounded queue of recycled buffers; the backend's NIC driver copies each
//! into backend pages (the DMA of a real NIC, charged to class `nic` as the seed profile charged
//! `e1000`) and feeds the switch. Frames the switch sends to the uplink go the other way. Each
//! side wakes the other through a real event channel, and only when the other asked to be woken
//! (a want-event flag set before it sleeps and re-checked after a full fence: ring.h's final
//! check, in miniature), so a busy stream sends almost no events.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use hypervisor::{BackendDomain, EventChannel, Port, XenDomain};

use crate::pool::{BufPool, NetFrame};

/// How an uplink wakes the backend when it has work.
#[derive(Debug, Clone, Copy)]
pub enum Wakeup<'a> {
    /// An event-channel port bound on the backend's own handle.
    Port(Port),
    /// A descriptor the backend polls (readable: frames wait).
    Fd(BorrowedFd<'a>),
}

/// An uplink's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UplinkStats {
    /// Frames received from outside and handed to the switch.
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames dropped for want of backend buffers.
    pub rx_no_buffer: u64,
    /// Frames dropped because writing them into backend pages failed.
    pub rx_fill_errors: u64,
    /// Frames the device handed over damaged (truncated, or with a header that does not parse).
    pub rx_errors: u64,
    /// Frames sent outside.
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames dropped because the device was full.
    pub tx_dropped: u64,
    /// Frames that could not be read out of backend pages or written to the device, or fixed
    /// up for it (a checksum to complete, a super-frame to segment).
    pub tx_errors: u64,
}

/// What an uplink may use while the backend runs it.
#[derive(Debug)]
pub struct UplinkIo<'a, D: BackendDomain> {
    /// The backend's frame pool: received frames go into its pages.
    pub pool: &'a BufPool<D>,
    /// The backend's event-channel handle (for uplinks woken through a port).
    pub evtchn: &'a D::Evtchn,
}

/// A switch port backed by something outside the guests.
pub trait Uplink<D: BackendDomain> {
    /// A name for logs and reports (`wire`, `tap:sn0`, `nic:eth0`).
    fn name(&self) -> &str;
    /// The largest frame it delivers: the unit of the receive budget.
    fn max_frame(&self) -> usize;
    /// Takes frames from outside into backend buffers (appended to `out`), at most `budget`
    /// bytes; returns whether it took any.
    fn receive(&mut self, io: &UplinkIo<'_, D>, out: &mut Vec<NetFrame<D>>, budget: usize) -> bool;
    /// Sends the frames the switch queued for this port (draining `frames`).
    fn transmit(&mut self, io: &UplinkIo<'_, D>, frames: &mut Vec<NetFrame<D>>);
    /// Before the backend blocks: arranges to be woken when frames arrive, and says whether
    /// some already wait.
    fn arm(&mut self) -> bool;
    /// How this uplink wakes the backend.
    fn wakeup(&self) -> Wakeup<'_>;
    /// Counters.
    fn stats(&self) -> UplinkStats;
    /// What it takes as is (partial checksums, super-frames); anything else is fixed up in
    /// software before `transmit` sees it. A plain NIC takes whole frames only.
    fn accepts(&self) -> crate::Accepts {
        crate::Accepts::NONE
    }
}

/// Frames in flight per direction on a [`Wire`].
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

/// The backend's end of the NIC model: its driver.
pub struct WireNic {
    shared: Arc<Shared>,
    /// The backend's port bound to the wire's.
    port: Port,
    nic: xenoprof::Class,
    /// Largest frame the wire carries (the budget check's unit).
    max_frame: usize,
    stats: UplinkStats,
}

impl std::fmt::Debug for WireNic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireNic")
            .field("port", &self.port)
            .field("stats", &self.stats)
            .finish()
    }
}

/// The wire's far end, for the remote host's thread: frames to and from the NIC, and the
/// remote domain's own event-channel handle to wait on.
pub struct Wire<D: XenDomain> {
    shared: Arc<Shared>,
    evtchn: D::Evtchn,
    port: Port,
    delivered: Vec<Port>,
}

impl<D: XenDomain> std::fmt::Debug for Wire<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").field("port", &self.port).finish()
    }
}

/// Builds the NIC model: the backend's driver, bound on `dom0_evtchn` (the backend's handle),
/// and the wire to `remote` (a pseudo-domain for the remote host). `mtu` is the largest
/// Ethernet frame (bytes, header included).
pub fn wire_nic<D: XenDomain>(
    dom0: hypervisor::DomId,
    dom0_evtchn: &D::Evtchn,
    remote: &D,
    mtu: usize,
) -> Result<(WireNic, Wire<D>), hypervisor::Error> {
    let shared = Arc::new(Shared {
        to_dom0: Direction::new(),
        to_wire: Direction::new(),
    });
    for _ in 0..WIRE_SLOTS {
        let _ = shared.to_dom0.empty.push(Vec::with_capacity(mtu));
        let _ = shared.to_wire.empty.push(Vec::with_capacity(mtu));
    }
    let evtchn = remote.open_evtchn()?;
    let remote_port = evtchn.alloc_unbound(dom0)?;
    let port = dom0_evtchn.bind_interdomain(remote.domid(), remote_port)?;
    let nic = xenoprof::Class::register("nic").unwrap_or(xenoprof::Class::OTHER);
    Ok((
        WireNic {
            shared: shared.clone(),
            port,
            nic,
            max_frame: mtu,
            stats: UplinkStats::default(),
        },
        Wire {
            shared,
            evtchn,
            port: remote_port,
            delivered: Vec::new(),
        },
    ))
}

impl<D: BackendDomain> Uplink<D> for WireNic {
    fn name(&self) -> &str {
        "wire"
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Takes frames from the wire into backend buffers: at most a ring's worth per pass, and no
    /// more than `budget` bytes (a frame that would exceed it stays on the wire).
    fn receive(&mut self, io: &UplinkIo<'_, D>, out: &mut Vec<NetFrame<D>>, budget: usize) -> bool {
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
            match io.pool.alloc(data.len()) {
                Some(mut buf) => {
                    if buf.fill(&data).is_ok() {
                        self.stats.rx_frames += 1;
                        self.stats.rx_bytes += data.len() as u64;
                        out.push(NetFrame::new(buf));
                    } else {
                        self.stats.rx_fill_errors += 1;
                    }
                }
                None => self.stats.rx_no_buffer += 1,
            }
            data.clear();
            let _ = d.empty.push(data);
        }
        // The far end may be asleep on a full NIC: tell it there is room again.
        if n > 0 && d.check_space_notify() {
            let _ = io.evtchn.notify(self.port);
        }
        n > 0
    }

    fn transmit(&mut self, io: &UplinkIo<'_, D>, frames: &mut Vec<NetFrame<D>>) {
        let _s = xenoprof::scope(self.nic);
        let d = &self.shared.to_wire;
        let mut sent = false;
        for f in frames.drain(..) {
            let Some(mut data) = d.empty.pop() else {
                self.stats.tx_dropped += 1;
                continue;
            };
            if f.0.read_into(&mut data).is_err() {
                self.stats.tx_errors += 1;
                data.clear();
                let _ = d.empty.push(data);
                continue;
            }
            let len = data.len() as u64;
            if d.full.push(data).is_ok() {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += len;
                sent = true;
            } else {
                self.stats.tx_dropped += 1;
            }
        }
        if sent && d.check_notify() {
            let _ = io.evtchn.notify(self.port);
        }
    }

    fn arm(&mut self) -> bool {
        self.shared.to_dom0.arm()
    }

    fn wakeup(&self) -> Wakeup<'_> {
        Wakeup::Port(self.port)
    }

    fn stats(&self) -> UplinkStats {
        self.stats
    }
}

impl<D: XenDomain> Wire<D> {
    /// The remote host's event-channel port.
    pub fn port(&self) -> Port {
        self.port
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

    /// Wakes the backend if it asked for an event; call after a burst of `send`s.
    pub fn flush(&self) {
        if self.shared.to_dom0.check_notify() {
            let _ = self.evtchn.notify(self.port);
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

    /// Before sleeping: asks the backend for an event on the next frame, and, if the NIC is
    /// full, for an event when it has room again; true if either is already the case.
    pub fn arm(&self) -> bool {
        let frame = self.shared.to_wire.arm();
        let room = !self.can_send() && self.shared.to_dom0.arm_space();
        frame || room
    }

    /// Blocks on the remote's event channel until the backend signals (or `timeout`), then
    /// unmasks it for the next event.
    pub fn wait(&mut self, timeout: Duration) {
        self.delivered.clear();
        let _ = self.evtchn.wait(Some(timeout), &mut self.delivered);
        if !self.delivered.is_empty() {
            let _ = self.evtchn.unmask(&self.delivered);
        }
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
