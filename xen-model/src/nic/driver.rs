//! The NIC model's driver in the backend: [`WireNic`], a NAPI-style poll over the device's
//! completed receive descriptors, with GRO, and the transmit side towards the remote host.
//!
//! Receive, per poll: take completed descriptors (at most 256 and within the backend's byte
//! budget); each names a posted buffer (backend pages the device wrote one frame into) and
//! carries the frame's first 128 bytes; shorten the buffer to the frame's length and feed it,
//! with those headers, to GRO ([`GroEngine`], charged to class `gro`). Buffers stay in the
//! driver's table while GRO works on them (it names them by descriptor id). GRO holds the first
//! segment of each flow in its own buffer and appends later segments' payloads to it (pages are
//! added from the pool as it grows), so a merged segment costs one copy of its payload through
//! the backend's memory, and its buffer goes straight back on the ring (as Linux drivers reuse
//! rx pages). At the end of the poll (or when a flow ends) the headers are patched in place as
//! `tcp4_gro_complete` leaves them and the super-frame goes to the switch. Then repost the
//! merged segments' buffers, post fresh ones for the descriptors whose buffers went to the
//! switch (class `nic`, as the seed profile charged `e1000`), and wake the device if it waits
//! for them.

use std::sync::Arc;

use hypervisor::{BackendDomain, EventChannel, GuestMemory, Pfn, Port};
use offload::gro::{GroEngine, GroSink};
use offload::parse::L4Loc;
use offload::{Csum, OffloadMeta};

use netback::pool::{Buf, BufPool, MAX_FRAME_PAGES, NetFrame};
use netback::{Uplink, UplinkIo, UplinkStats, Wakeup};

use super::wire::{HDR_BYTES, RxDesc, Shared, WIRE_SLOTS};

/// Backend pages the driver keeps posted at most (fewer when the pool is small: at most a
/// quarter of its limit).
pub const RX_RING_PAGES: usize = 1024;
/// Completions taken per poll at most (a NAPI budget).
const POLL_BUDGET: usize = 256;

/// The backend's end of the NIC model: its driver. See the [module docs](self).
pub struct WireNic<D: GuestMemory> {
    shared: Arc<Shared>,
    /// The backend's port bound to the wire's.
    port: Port,
    nic: xenoprof::Class,
    gro_class: xenoprof::Class,
    /// Largest frame the wire carries (the budget check's unit, and each buffer's size).
    max_frame: usize,
    /// Descriptors kept posted.
    ring: usize,
    /// Receive buffers by descriptor id: posted to the device, or (during a poll) the driver's.
    bufs: Vec<Option<Buf<D>>>,
    /// Which ids the device holds: a completion for any other is refused.
    posted: Vec<bool>,
    /// Ids whose buffer went to the switch: they need a fresh one.
    free_ids: Vec<u16>,
    /// Ids whose buffer GRO emptied (its payload merged elsewhere): posted again as they are.
    reuse: Vec<u16>,
    /// `None`: GRO is off and frames go to the switch as the device delivered them.
    gro: Option<GroEngine<u16>>,
    stats: UplinkStats,
}

impl<D: GuestMemory> std::fmt::Debug for WireNic<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireNic")
            .field("port", &self.port)
            .field("ring", &self.ring)
            .field("gro", &self.gro.is_some())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<D: GuestMemory> WireNic<D> {
    /// A driver on `shared`, woken through `port`, with its receive ring posted from `pool`.
    pub(super) fn new(shared: Arc<Shared>, port: Port, pool: &BufPool<D>, mtu: usize) -> Self {
        let pages = mtu.div_ceil(hypervisor::PAGE_SIZE).max(1);
        let ring = (RX_RING_PAGES.min(pool.limit() / 4) / pages).clamp(1, WIRE_SLOTS);
        let mut nic = Self {
            shared,
            port,
            nic: xenoprof::Class::register("nic").unwrap_or(xenoprof::Class::OTHER),
            gro_class: xenoprof::Class::register("gro").unwrap_or(xenoprof::Class::OTHER),
            max_frame: mtu,
            ring,
            bufs: (0..ring).map(|_| None).collect(),
            posted: vec![false; ring],
            free_ids: (0..ring as u16).rev().collect(),
            reuse: Vec::new(),
            gro: (mtu <= hypervisor::PAGE_SIZE).then(GroEngine::new),
            stats: UplinkStats::default(),
        };
        nic.refill(pool);
        nic
    }

    /// Turns GRO on or off. Off, every frame goes to the switch as the device delivered it.
    ///
    /// By default GRO is on where the wire's frames fit a page (Ethernet's 1514 bytes) and off
    /// on jumbo wires: merging here copies each merged payload once (Linux chains the pages
    /// instead), and with 9000-byte frames that copy costs dom0 more than the per-packet work
    /// it saves downstream (measured with `bench tcp-rx --mtu 9000`: about 2 990 against 2 140
    /// dom0 ns per segment, on against off); at 65000 frames are too large to merge at all.
    pub fn set_gro(&mut self, on: bool) {
        // Held flows are flushed at the end of every poll: none is held here.
        self.gro = on.then(GroEngine::new);
    }

    /// Receive descriptors the driver keeps posted.
    pub fn ring_size(&self) -> usize {
        self.ring
    }

    /// Posts again the buffers GRO emptied, and a fresh buffer for every other descriptor not
    /// posted, as far as the pool allows. Returns whether it posted any.
    fn refill(&mut self, pool: &BufPool<D>) -> bool {
        let mut any = false;
        while let Some(id) = self.reuse.pop() {
            let i = usize::from(id);
            let max = self.max_frame;
            if self.bufs[i].as_mut().is_some_and(|b| b.set_len(max)) && self.post(id) {
                any = true;
            } else {
                // It gave pages back when it was shortened: a fresh one instead.
                self.bufs[i] = None;
                self.free_ids.push(id);
            }
        }
        while let Some(&id) = self.free_ids.last() {
            let Some(buf) = pool.alloc(self.max_frame) else {
                // Posted later, when frames have given pages back.
                break;
            };
            self.bufs[usize::from(id)] = Some(buf);
            if !self.post(id) {
                self.bufs[usize::from(id)] = None;
                break;
            }
            self.free_ids.pop();
            any = true;
        }
        any
    }

    /// Hands buffer `id` (in the table, at its full length) to the device.
    fn post(&mut self, id: u16) -> bool {
        let Some(buf) = self.bufs[usize::from(id)].as_ref() else {
            return false;
        };
        let mut desc = RxDesc {
            id,
            n: buf.pages().len() as u8,
            pfns: [Pfn(0); MAX_FRAME_PAGES],
        };
        for (d, p) in desc.pfns.iter_mut().zip(buf.pages()) {
            *d = p.pfn;
        }
        // Release (inside the queue), pairs with the device's pop: our last use of these pages
        // happens before its writes. Cannot fail: at most `ring` ids exist.
        if self.shared.to_dom0.empty.push(desc).is_err() {
            return false;
        }
        self.posted[usize::from(id)] = true;
        true
    }
}

impl<D: BackendDomain> Uplink<D> for WireNic<D> {
    fn name(&self) -> &str {
        "wire"
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Takes completed frames into the switch's hands: at most `POLL_BUDGET` per pass, and no
    /// more than `budget` bytes (a frame that would exceed it stays completed on the ring).
    fn receive(&mut self, io: &UplinkIo<'_, D>, out: &mut Vec<NetFrame<D>>, budget: usize) -> bool {
        let _s = xenoprof::scope(self.nic);
        let d = &self.shared.to_dom0;
        let mut n = 0;
        let mut taken = 0usize;
        let mut gro = self.gro.take();
        while n < POLL_BUDGET {
            // The queue has no peek, so the budget is checked against the largest frame the
            // wire carries: never more than `budget` bytes are taken.
            if taken + self.max_frame > budget {
                break;
            }
            // The pop acquires what the device's push released: its writes into the pages.
            let Some(done) = d.full.pop() else { break };
            n += 1;
            let i = usize::from(done.id);
            if !self.posted.get(i).copied().unwrap_or(false) {
                // A completion for a descriptor not posted: the device is broken; ignore it.
                self.stats.rx_errors += 1;
                continue;
            }
            self.posted[i] = false;
            let len = done.len as usize;
            let Some(buf) = self.bufs[i].as_mut() else {
                // Every posted id has its buffer; should one not, it gets a fresh one.
                self.free_ids.push(done.id);
                continue;
            };
            if !buf.truncate(len) {
                // The device could not write the frame (or claims more than the buffer holds):
                // the buffer is posted again as it is.
                self.stats.rx_errors += 1;
                self.reuse.push(done.id);
                continue;
            }
            taken += len;
            let hdr = &done.head[..len.min(HDR_BYTES)];
            buf.set_head(hdr);
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += len as u64;
            let meta = if done.csum_ok {
                OffloadMeta::VALIDATED
            } else {
                OffloadMeta::NONE
            };
            let mut sink = ToSwitch {
                bufs: &mut self.bufs,
                free_ids: &mut self.free_ids,
                reuse: &mut self.reuse,
                out,
                stats: &mut self.stats,
            };
            match &mut gro {
                Some(engine) => {
                    let _g = xenoprof::scope(self.gro_class);
                    engine.receive(done.id, hdr, len, &meta, &mut sink);
                }
                None => sink.pass(done.id, &meta),
            }
        }
        if let Some(engine) = &mut gro {
            let _g = xenoprof::scope(self.gro_class);
            engine.flush(&mut ToSwitch {
                bufs: &mut self.bufs,
                free_ids: &mut self.free_ids,
                reuse: &mut self.reuse,
                out,
                stats: &mut self.stats,
            });
        }
        self.gro = gro;
        // The device may be asleep for want of buffers: tell it there are more.
        if self.refill(io.pool) && self.shared.to_dom0.check_space_notify() {
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

/// GRO's sink in the driver: frames are receive buffers named by descriptor id, in the
/// driver's table; what comes out goes to the switch.
struct ToSwitch<'a, D: GuestMemory> {
    bufs: &'a mut [Option<Buf<D>>],
    free_ids: &'a mut Vec<u16>,
    reuse: &'a mut Vec<u16>,
    out: &'a mut Vec<NetFrame<D>>,
    stats: &'a mut UplinkStats,
}

impl<D: GuestMemory> ToSwitch<'_, D> {
    /// Takes buffer `id` out of the table for the switch; its descriptor needs a fresh one.
    fn take(&mut self, id: u16) -> Option<Buf<D>> {
        self.free_ids.push(id);
        self.bufs[usize::from(id)].take()
    }
}

impl<D: GuestMemory> GroSink for ToSwitch<'_, D> {
    type In = u16;
    type Held = u16;

    fn hold(&mut self, _slot: usize, frame: u16) -> u16 {
        frame
    }

    fn append(
        &mut self,
        held: &mut u16,
        at: usize,
        frame: &u16,
        payload: std::ops::Range<usize>,
    ) -> bool {
        let (h, f) = (usize::from(*held), usize::from(*frame));
        // Two entries of one table: split it between them (GRO never merges a frame into
        // itself).
        let (dst, src) = if h < f {
            let (a, b) = self.bufs.split_at_mut(f);
            (&mut a[h], &b[0])
        } else {
            let (a, b) = self.bufs.split_at_mut(h);
            (&mut b[0], &a[f])
        };
        let (Some(dst), Some(src)) = (dst.as_mut(), src.as_ref()) else {
            return false;
        };
        debug_assert_eq!(dst.len(), at, "GRO appends at the end of the held frame");
        if !dst.append_from(src, payload) {
            return false;
        }
        self.stats.rx_gro_merged += 1;
        // Its payload lives on in the held frame: the buffer can take another frame.
        self.reuse.push(*frame);
        true
    }

    fn verify(&mut self, frame: &u16, loc: &L4Loc) -> bool {
        self.bufs[usize::from(*frame)]
            .as_ref()
            .is_some_and(|b| b.l4_csum_ok(loc))
    }

    fn pass(&mut self, frame: u16, meta: &OffloadMeta) {
        if let Some(mut buf) = self.take(frame) {
            buf.set_meta(*meta);
            self.out.push(NetFrame::new(buf));
        }
    }

    fn complete(&mut self, held: u16, len: usize, headers: Option<&[u8]>, meta: &OffloadMeta) {
        let Some(mut buf) = self.take(held) else {
            return;
        };
        debug_assert_eq!(buf.len(), len);
        if let Some(h) = headers {
            if buf.poke(0, h).is_err() {
                self.stats.rx_fill_errors += 1;
                return;
            }
            buf.set_head(h);
            self.stats.rx_gro_super += 1;
        }
        debug_assert!(headers.is_none() || matches!(meta.csum, Csum::Partial { .. }));
        buf.set_meta(*meta);
        self.out.push(NetFrame::new(buf));
    }
}
