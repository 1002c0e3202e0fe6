//! The NIC model's shared state and its device side, the [`Wire`]: what the remote host's
//! thread drives.
//!
//! Towards the backend the device works like a real NIC's receive ring: the driver posts
//! descriptors (the pfns of one backend buffer each) on one bounded queue; the device takes the
//! oldest, writes the frame into those pages through the backend domain's memory (DMA), checks
//! the frame's TCP/UDP checksum as a NIC's rx checksum offload does, and puts a completion (the
//! descriptor's id, the frame's length, whether the checksum was found good, and a copy of the
//! frame's first 128 bytes, as a header-split NIC gives the driver its headers) on a second
//! bounded queue. With no posted descriptor the device cannot send: the remote host waits for
//! the driver to post more (it asked for an event first), so nothing is lost. Towards the
//! remote host, frames stay in a queue of recycled buffers.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use hypervisor::{BackendDomain, EventChannel, PAGE_SIZE, Pfn, Port, XenDomain};
use netif_ring::notify::WantEvent;

use netback::pool::{BufPool, MAX_FRAME_PAGES};

use super::driver::WireNic;

/// Frames in flight per direction on a [`Wire`]: the most receive descriptors the driver
/// posts, and the recycled buffers towards the remote host.
pub const WIRE_SLOTS: usize = 1024;

/// A receive buffer the driver posted: the backend pages the device writes one frame into.
#[derive(Clone, Copy, Debug)]
pub(super) struct RxDesc {
    /// The driver's name for the buffer, returned in its completion.
    pub id: u16,
    /// Pages used in `pfns`.
    pub n: u8,
    /// The buffer's pages, in order: byte `i` of the frame goes to page `i / 4096`.
    pub pfns: [Pfn; MAX_FRAME_PAGES],
}

/// Bytes of each frame's start the device also puts in its completion.
pub(super) const HDR_BYTES: usize = 128;
// Every header GRO merges, and the switch's head copy, fit in a completion.
const _: () = assert!(HDR_BYTES >= offload::gro::MAX_HDR && HDR_BYTES >= netback::pool::HEAD);

/// A receive descriptor the device is done with.
#[derive(Clone, Copy, Debug)]
pub(super) struct RxDone {
    /// The descriptor's id.
    pub id: u16,
    /// Bytes of the frame written; 0: the device could not write it (the buffer is returned
    /// unused).
    pub len: u32,
    /// The device found the frame's TCP/UDP checksum correct (`CHECKSUM_UNNECESSARY`); false
    /// for a wrong checksum and for anything it does not check (not TCP/UDP over IP).
    pub csum_ok: bool,
    /// The frame's first `min(len, HDR_BYTES)` bytes, as a header-split NIC writes headers to
    /// a separate buffer (or mlx5 inlines them in the completion): the driver reads the headers
    /// here, without touching the frame's pages.
    pub head: [u8; HDR_BYTES],
}

/// One direction: a queue of items for the consumer (`full`), a queue of items given back to
/// the producer (`empty`), and a want-event flag for each waiting side
/// ([`netif_ring::notify::WantEvent`], the loom-checked handshake: flag, full barrier, re-check).
pub(super) struct Direction<F, E> {
    pub full: ArrayQueue<F>,
    pub empty: ArrayQueue<E>,
    /// The consumer is about to sleep and wants an event for the next item on `full`.
    want_event: WantEvent,
    /// The producer found `empty` empty and wants an event when an item is put back (a NIC's
    /// queue-wake interrupt).
    want_space: WantEvent,
}

impl<F, E> Direction<F, E> {
    fn new() -> Self {
        Self {
            full: ArrayQueue::new(WIRE_SLOTS),
            empty: ArrayQueue::new(WIRE_SLOTS),
            want_event: WantEvent::new(),
            want_space: WantEvent::new(),
        }
    }

    /// Consumer side, after putting items on `empty` (the queue's push releases them): should
    /// the producer be told? Pairs with `arm_space`.
    pub fn check_space_notify(&self) -> bool {
        self.want_space.should_notify()
    }

    /// Producer side, before sleeping on an empty `empty`: ask for an event when an item comes
    /// back, then re-check (the queue's read acquires). True: there is one already.
    pub fn arm_space(&self) -> bool {
        self.want_space.arm(|| !self.empty.is_empty())
    }

    /// Producer side, after pushing to `full` (released by the push): should the consumer be
    /// notified? Pairs with `arm`.
    pub fn check_notify(&self) -> bool {
        self.want_event.should_notify()
    }

    /// Consumer side, before sleeping: ask for an event, then re-check (the queue's read
    /// acquires). True: work arrived.
    pub fn arm(&self) -> bool {
        self.want_event.arm(|| !self.full.is_empty())
    }
}

/// What the driver and the device share.
pub(super) struct Shared {
    /// Device → backend: `full` holds completions, `empty` the posted descriptors.
    pub to_dom0: Direction<RxDone, RxDesc>,
    /// Backend → remote host: frames, and their buffers recycled.
    pub to_wire: Direction<Vec<u8>, Vec<u8>>,
}

/// The wire's far end, for the remote host's thread: the NIC's device side (frames it writes
/// into the backend's posted buffers), frames from the backend, and the remote domain's own
/// event-channel handle to wait on.
pub struct Wire<D: XenDomain> {
    shared: Arc<Shared>,
    evtchn: D::Evtchn,
    port: Port,
    delivered: Vec<Port>,
    /// The backend domain's memory, which the device writes received frames into.
    dma: D,
    /// The device's transmit buffer: the remote host builds each frame here (its own memory)
    /// before the device writes it out.
    fifo: Vec<u8>,
    mtu: usize,
    /// The device's work (DMA, checksum check), on the remote host's thread.
    class: xenoprof::Class,
    dma_errors: u64,
}

impl<D: XenDomain> std::fmt::Debug for Wire<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("port", &self.port)
            .field("mtu", &self.mtu)
            .field("dma_errors", &self.dma_errors)
            .finish()
    }
}

/// Builds the NIC model: the backend's driver, bound on `dom0_evtchn` (the backend's handle),
/// with its first receive buffers from `pool` already posted, and the wire to `remote` (a
/// pseudo-domain for the remote host), whose device writes into `pool`'s domain. `mtu` is the
/// largest Ethernet frame (bytes, header included).
pub fn wire_nic<D: BackendDomain>(
    pool: &BufPool<D>,
    dom0_evtchn: &D::Evtchn,
    remote: &D,
    mtu: usize,
) -> Result<(WireNic<D>, Wire<D>), netback::Error> {
    if !(14..=netif_ring::netif::MAX_FRAME).contains(&mtu) {
        return Err(netback::Error::Config {
            what: "wire MTU",
            why: "must be an Ethernet frame length from 14 to 65549 bytes (header included)",
        });
    }
    let shared = Arc::new(Shared {
        to_dom0: Direction::new(),
        to_wire: Direction::new(),
    });
    for _ in 0..WIRE_SLOTS {
        let _ = shared.to_wire.empty.push(Vec::with_capacity(mtu));
    }
    let dom0 = pool.dom();
    let evtchn = remote.open_evtchn()?;
    let remote_port = evtchn.alloc_unbound(dom0.domid())?;
    let port = dom0_evtchn.bind_interdomain(remote.domid(), remote_port)?;
    let nic = WireNic::new(shared.clone(), port, pool, mtu);
    let class = xenoprof::Class::register("dma").unwrap_or(xenoprof::Class::OTHER);
    Ok((
        nic,
        Wire {
            shared,
            evtchn,
            port: remote_port,
            delivered: Vec::new(),
            dma: dom0.clone(),
            fifo: vec![0; mtu],
            mtu,
            class,
            dma_errors: 0,
        },
    ))
}

impl<D: XenDomain> Wire<D> {
    /// The remote host's event-channel port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// Whether the NIC has a posted buffer for another frame.
    pub fn can_send(&self) -> bool {
        !self.shared.to_dom0.empty.is_empty()
    }

    /// Frames the device could not write into the backend's buffer (longer than the MTU or the
    /// buffer, or a page the backend's memory refused); each was dropped, its buffer returned.
    pub fn dma_errors(&self) -> u64 {
        self.dma_errors
    }

    /// Puts a frame of `len` bytes on the wire, written by `fill` into the device's buffer; the
    /// device then writes it into the oldest buffer the backend posted and completes that
    /// descriptor. Returns `None` (and does not call `fill`) if no buffer is posted. A frame
    /// longer than the wire's MTU is dropped by the device (counted in
    /// [`Wire::dma_errors`]) after `fill` ran.
    pub fn send<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        let d = &self.shared.to_dom0;
        // The pop pairs with the driver's push of the descriptor (the queue's release/acquire):
        // whatever the backend did with these pages before posting them happens before our
        // writes.
        let desc = d.empty.pop()?;
        if self.fifo.len() < len {
            self.fifo.resize(len, 0);
        }
        let frame = &mut self.fifo[..len];
        let r = fill(frame);
        let _s = xenoprof::scope(self.class);
        let fits = len > 0 && len <= self.mtu && len <= usize::from(desc.n) * PAGE_SIZE;
        let written = fits
            && frame
                .chunks(PAGE_SIZE)
                .zip(&desc.pfns[..usize::from(desc.n)])
                .all(|(chunk, pfn)| self.dma.write(*pfn, 0, chunk).is_ok());
        let mut done = RxDone {
            id: desc.id,
            len: 0,
            csum_ok: false,
            head: [0; HDR_BYTES],
        };
        if written {
            done.len = len as u32;
            done.csum_ok = offload::csum::verify(frame);
            let h = len.min(HDR_BYTES);
            done.head[..h].copy_from_slice(&frame[..h]);
        } else {
            self.dma_errors += 1;
        }
        // The push publishes the page writes above (release; the driver's pop acquires). It
        // cannot fail: there are never more completions than descriptors, and both queues
        // hold `WIRE_SLOTS`.
        let pushed = d.full.push(done);
        debug_assert!(pushed.is_ok(), "a completion without room");
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

    /// Before sleeping: asks the backend for an event on the next frame, and, with
    /// `need_room` (the remote host has a frame the device had no buffer for), for an event when
    /// a receive buffer is posted. True if what it asks for is already there: then do not sleep.
    pub fn arm(&self, need_room: bool) -> bool {
        let frame = self.shared.to_wire.arm();
        // The flag is set before the re-check (`WantEvent::arm`), so a buffer posted in between
        // is either seen here or announced by an event.
        let room = need_room && self.shared.to_dom0.arm_space();
        frame || room
    }

    /// Blocks on the remote's event channel until the backend signals (or `timeout`), then
    /// unmasks it for the next event. Returns whether an event arrived.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        self.delivered.clear();
        let _ = self.evtchn.wait(Some(timeout), &mut self.delivered);
        if self.delivered.is_empty() {
            return false;
        }
        let _ = self.evtchn.unmask(&self.delivered);
        true
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
