//! The receive path, switch → guest (Linux's `rx.c`), in copy or flip mode.
//!
//! Frames wait in the vif's queue (capped in bytes, each stamped when queued). One pass
//! per queue ([`Queue::rx_action`], Linux's `xenvif_rx_action`):
//! - drops frames that waited longer than `rx_drain_timeout` (`xenvif_rx_queue_drop_expired`);
//! - while the frontend has posted enough buffers for the head frame
//!   ([`Queue::rx_slots_available`]), delivers it ([`Queue::rx_skb`]): a frame of `len` bytes takes
//!   `ceil(len / room)` data requests (`room` = 4096 less the vif's `xdp-headroom`, whole pages
//!   without one), answered in request order with `NETRXF_more_data` on all but the last, and
//!   one request per extra-info slot (GSO, hash, XDP, in Linux's order, right after the first
//!   data slot); copy mode queues one grant copy per piece of a slot that lies in one backend
//!   page (the data lands at the headroom's offset in each buffer), flip mode one page transfer;
//! - flushes the copies and transfers, patching each failed op into its response
//!   ([`Queue::rx_flush`]), then pushes the responses and notifies once ([`Queue::rx_complete`]).

use std::time::Instant;

use hypervisor::{BackendDomain, CopyOp, CopyPtr, GrantRef, GrantStatus, PAGE_SIZE, TransferOp};
use netif_ring::ctrl::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ;
use netif_ring::netif::{
    ExtraInfo, ExtraRepr, NETIF_RSP_ERROR, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, RxMode, RxRequest,
    RxResponse, XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_NR_SLOTS_MIN,
};
use netif_ring::{BackRing, PageRing, RxRing};

use crate::batch::{CopyBatch, Owner};
use crate::config::Config;
use crate::hash::RxHash;
use crate::pool::NetFrame;
use crate::vif::{Fatal, Queue, VifStats};

/// Working storage of an rx pass, kept in the vif so a pass allocates nothing once warm.
pub(crate) struct RxScratch<D: BackendDomain> {
    /// Frames whose copies or transfers are queued: their pages stay out of the pool until the
    /// pass has flushed.
    inflight: Vec<NetFrame<D>>,
    /// Page transfers waiting for their hypercall (flip mode), with each one's owner (its
    /// response's position in `puts`).
    transfers: Vec<TransferOp>,
    transfer_rsp: Vec<u32>,
    /// Responses put this pass, by position: a failed op's owner is its position here.
    puts: Vec<(u32, RxResponse)>,
    /// Frames delivered this pass (between build and finish).
    delivered: usize,
}

/// How a frame is laid out on the rx ring: its data slots and its extra-info slots.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Data slots: `ceil(len / room)`.
    data: u32,
    /// Extra-info slots (GSO, hash, XDP).
    extras: u32,
}

impl<D: BackendDomain> Default for RxScratch<D> {
    fn default() -> Self {
        Self {
            inflight: Vec::new(),
            transfers: Vec::new(),
            transfer_rsp: Vec::new(),
            puts: Vec::new(),
            delivered: 0,
        }
    }
}

impl<D: BackendDomain> Queue<D> {
    /// Data bytes each rx buffer takes: a page, less the headroom.
    fn rx_room(&self) -> usize {
        PAGE_SIZE.saturating_sub(usize::from(self.rx_headroom))
    }

    /// The slots a frame takes on this queue's ring, or `None` if it cannot be delivered: more
    /// data slots than a frontend takes (one without `feature-sg`; `XEN_NETIF_NR_SLOTS_MIN`,
    /// Linux netfront's limit, with it: only a large headroom gets there) or no room at all.
    fn rx_layout(&self, f: &NetFrame<D>, hashed: bool) -> Option<Layout> {
        let room = self.rx_room();
        if room == 0 {
            return None;
        }
        let data = f.len().div_ceil(room).max(1);
        let max = if self.rx_sg {
            XEN_NETIF_NR_SLOTS_MIN as usize
        } else {
            1
        };
        if data > max {
            return None;
        }
        let extras = u32::from(f.meta().gso.is_some())
            + u32::from(hashed)
            + u32::from(self.rx_headroom != 0);
        Some(Layout {
            data: data as u32,
            extras,
        })
    }

    /// The first half of an rx pass: drops expired frames, then delivers queued frames into
    /// the guest's posted buffers: responses put, grant copies queued in the pass's `batch` (as
    /// queue `slot` of the pass), page transfers made (flip mode). The pass flushes the batch,
    /// reports this queue's failed copies ([`Queue::rx_failed`]), then [`Queue::rx_finish`]
    /// pushes the responses. Returns how many frames were delivered.
    pub(crate) fn rx_build(
        &mut self,
        slot: u32,
        dom0: &D,
        cfg: &Config,
        batch: &mut CopyBatch,
        now: Instant,
    ) -> usize {
        if self.is_disabled() || self.rx_queue.is_empty() {
            return 0;
        }
        let _s = xenoprof::scope(xenoprof::Class::NETBACK);
        self.stats.rx_expired += self.rx_queue.drop_expired(now, cfg.rx_drain_timeout) as u64;
        let mut sc = std::mem::take(&mut self.rx_scratch);
        sc.puts.clear();
        sc.delivered = 0;
        let mut fatal = None;
        while sc.delivered < cfg.rx_batch_packets {
            let Some((f, hash)) = self.rx_queue.front() else {
                break;
            };
            let Some(layout) = self.rx_layout(f, hash.is_some()) else {
                // Does not fit the frontend's buffers as it set them up (its headroom).
                self.rx_queue.pop();
                self.stats.rx_unfit += 1;
                continue;
            };
            match self.rx_slots_available(layout.data + layout.extras) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    // Not `return`: the ops already queued for earlier frames must be flushed
                    // (or their pages would go back to the pool while still named as sources).
                    fatal = Some(Fatal::Ring(e));
                    break;
                }
            }
            let Some((frame, hash)) = self.rx_queue.pop() else {
                break;
            };
            if let Err(f) = self.rx_skb(slot, dom0, cfg, batch, &mut sc, frame, hash, layout) {
                fatal = Some(f);
                break;
            }
            sc.delivered += 1;
        }
        let delivered = sc.delivered;
        self.rx_scratch = sc;
        self.rx_fatal = fatal;
        delivered
    }

    /// Response `item` of this queue's part of the pass: its grant copy failed.
    pub(crate) fn rx_failed(&mut self, item: u32) {
        patch_error(
            &mut self.rx,
            &mut self.rx_scratch.puts,
            item,
            &mut self.stats,
        );
    }

    /// The second half of an rx pass, after the batch was flushed: the page transfers still
    /// waiting (flip mode) are made, the delivered frames' pages go back, the responses are
    /// pushed and the frontend notified once (or the vif disabled after a fatal error). `calls`
    /// is the hypercalls this queue's copies went in. Returns whether any frame was delivered.
    pub(crate) fn rx_finish(&mut self, dom0: &D, evtchn: &D::Evtchn, calls: u32) -> bool {
        let _s = xenoprof::scope(xenoprof::Class::NETBACK);
        self.stats.hypercalls += u64::from(calls);
        let mut sc = std::mem::take(&mut self.rx_scratch);
        self.rx_flush_transfers(dom0, &mut sc);
        sc.inflight.clear();
        let delivered = std::mem::take(&mut sc.delivered);
        self.rx_scratch = sc;
        let fatal = self.rx_fatal.take();
        self.rx_complete(evtchn, delivered, fatal)
    }

    /// Whether `needed` rx requests are posted. If not, asks the frontend to notify when they
    /// are (`req_event = req_cons + needed`; Linux's `xenvif_rx_ring_slots_available` arms
    /// `req_prod + 1` and re-checks on every event instead) and checks once more, so a posting
    /// that raced with us is not missed.
    fn rx_slots_available(&mut self, needed: u32) -> Result<bool, netif_ring::RingError> {
        if self.rx.unconsumed_requests()? >= needed {
            return Ok(true);
        }
        let event = self.rx.req_cons().wrapping_add(needed);
        self.rx.set_req_event(event);
        Ok(self.rx.unconsumed_requests()? >= needed)
    }

    /// Delivers one frame (Linux's `xenvif_rx_skb`): its data slots in request order, each
    /// answered at once, their copies or transfers queued. The first response carries the
    /// frame's checksum flags and `NETRXF_extra_info` when extras follow; the extra-info slots
    /// come right after it, in Linux's order (GSO, hash, XDP), each consuming a request of its
    /// own (netfront finds buffers by ring index), `XEN_NETIF_EXTRA_FLAG_MORE` on all but the
    /// last. With a headroom, each data slot's bytes start at that offset of its buffer and its
    /// response says so (Linux answers offset 0 and a status that counts the headroom; its
    /// netfront takes the offset from the XDP extra instead, which reads the same here). The
    /// caller checked that enough requests are posted.
    #[allow(clippy::too_many_arguments)]
    fn rx_skb(
        &mut self,
        slot: u32,
        dom0: &D,
        cfg: &Config,
        batch: &mut CopyBatch,
        sc: &mut RxScratch<D>,
        mut frame: NetFrame<D>,
        hash: Option<RxHash>,
        layout: Layout,
    ) -> Result<(), Fatal> {
        let len = frame.len();
        if self.mode == RxMode::Flip && !frame.is_exclusive() {
            // Another vif holds the same frame (a flood): give the guest a private copy, as
            // Linux's flipping netback copied shared skbs.
            match frame.0.duplicate() {
                Some(b) => {
                    self.stats.rx_private_copies += 1;
                    frame = NetFrame::new(b);
                }
                None => {
                    self.stats.rx_unfit += 1;
                    return Ok(());
                }
            }
        }
        if self.mode == RxMode::Flip && !clear_tail(dom0, &frame) {
            self.stats.rx_unfit += 1;
            return Ok(());
        }
        let (first_flags, gso) = offload::netif::to_rx(&frame.meta(), len);
        let headroom = self.rx_headroom;
        let mut extras = [
            gso,
            hash.map(|h| {
                ExtraRepr::Hash {
                    hash_type: h.hash_type,
                    algorithm: XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ as u8,
                    value: h.value.to_le_bytes(),
                }
                .emit(false)
            }),
            (headroom != 0).then(|| ExtraRepr::Xdp { headroom }.emit(false)),
        ];
        self.stats.rx_gso_frames += u64::from(gso.is_some());
        self.stats.rx_hash_extras += u64::from(hash.is_some());
        debug_assert_eq!(
            extras.iter().flatten().count() as u32,
            layout.extras,
            "the layout counted the extras"
        );
        let first_flags = if layout.extras > 0 {
            first_flags | NETRXF_EXTRA_INFO
        } else {
            first_flags & !NETRXF_EXTRA_INFO
        };
        let room = self.rx_room();
        let data_slots = layout.data as usize;
        let pages = frame.0.pages();
        for ds in 0..data_slots {
            // `rx_slots_available` validated enough requests, and each consumed request is
            // answered at once below, so neither the ring nor put_response can come up short.
            let req: RxRequest = match self.rx.next_request() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    debug_assert!(false, "validated rx request vanished");
                    break;
                }
                Err(e) => return Err(Fatal::Ring(e)),
            };
            let start = ds * room;
            let chunk = (len - start).min(room);
            let more = if ds + 1 == data_slots {
                0
            } else {
                NETRXF_MORE_DATA
            };
            let rsp = RxResponse {
                id: req.id,
                offset: headroom,
                flags: if ds == 0 {
                    (first_flags & !NETRXF_MORE_DATA) | more
                } else {
                    more
                },
                status: chunk as i16,
            };
            let Ok(idx) = self.rx.put_response(rsp) else {
                debug_assert!(false, "a consumed rx request had no response slot");
                break;
            };
            let item = sc.puts.len() as u32;
            sc.puts.push((idx, rsp));
            let gref = GrantRef(req.gref);
            match self.mode {
                RxMode::Copy => {
                    // The slot's bytes, cut where a backend page ends (without a headroom a
                    // slot is exactly one page, so one op).
                    let mut done = 0;
                    while done < chunk {
                        let at = start + done;
                        let (page, in_page) = (at / PAGE_SIZE, at % PAGE_SIZE);
                        let n = (chunk - done).min(PAGE_SIZE - in_page);
                        let op = CopyOp::new(
                            CopyPtr::Local(pages[page].addr.add(in_page)),
                            CopyPtr::gref(self.id.domid, gref, headroom + done as u16),
                            n as u16,
                        );
                        self.stats.grant_ops += 1;
                        batch.push(dom0, op, Owner { slot, item });
                        done += n;
                    }
                }
                RxMode::Flip => {
                    // No headroom in flip mode: a slot is a page.
                    sc.transfers
                        .push(TransferOp::new(pages[ds].pfn, self.id.domid, gref));
                    sc.transfer_rsp.push(item);
                    if sc.transfers.len() >= cfg.flip_batch_pages {
                        self.rx_flush_transfers(dom0, sc);
                    }
                }
            }
            if ds == 0 {
                // The extra-info slots right after the first: each consumes a request whose
                // buffer stays unused, and overlays its response.
                let mut left = layout.extras;
                for e in extras.iter_mut().filter_map(Option::take) {
                    left -= 1;
                    let e = ExtraInfo {
                        flags: if left > 0 {
                            e.flags | XEN_NETIF_EXTRA_FLAG_MORE
                        } else {
                            e.flags & !XEN_NETIF_EXTRA_FLAG_MORE
                        },
                        ..e
                    };
                    match self.rx.next_request() {
                        Ok(Some(_)) => {
                            let _ = self.rx.put_response_as(e);
                        }
                        Ok(None) => debug_assert!(false, "validated rx request vanished"),
                        Err(err) => return Err(Fatal::Ring(err)),
                    }
                }
            }
        }
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += len as u64;
        sc.inflight.push(frame);
        Ok(())
    }

    /// One page-transfer call for the collected pages; a failed transfer's response becomes an
    /// error. The hypervisor gives the backend a replacement frame for every page it gave away.
    fn rx_flush_transfers(&mut self, dom0: &D, sc: &mut RxScratch<D>) {
        if sc.transfers.is_empty() {
            return;
        }
        self.stats.hypercalls += 1;
        self.stats.grant_ops += sc.transfers.len() as u64;
        let r = dom0.grant_transfer(&mut sc.transfers);
        for (t, o) in sc.transfers.iter().zip(sc.transfer_rsp.iter()) {
            if r.is_err() || t.status != GrantStatus::Okay {
                patch_error(&mut self.rx, &mut sc.puts, *o, &mut self.stats);
            }
        }
        sc.transfers.clear();
        sc.transfer_rsp.clear();
    }

    /// Pushes the pass's responses and notifies once (or disables the vif after a fatal
    /// error).
    fn rx_complete(&mut self, evtchn: &D::Evtchn, delivered: usize, fatal: Option<Fatal>) -> bool {
        if let Some(f) = fatal {
            debug_assert!(
                self.rx.rsp_prod_pvt() == self.rx.req_cons(),
                "fatal rx pass left a request unanswered"
            );
            self.rx.push_responses();
            self.disable(f);
            return delivered > 0;
        }
        if delivered > 0 {
            self.worked(true);
            if self.rx.push_responses_and_check_notify() {
                self.notify(evtchn, true);
            }
        }
        delivered > 0
    }
}

/// Zeroes what lies past the frame in its last page. A flipped page is the guest's whole, and
/// a pool page keeps whatever it carried before (another guest's traffic, or the frame a
/// transfer's replacement held): without this, a flip-mode guest reads up to 4 KiB of backend
/// memory past each frame (the XSA-216 class). False if the page could not be written: the
/// frame must not be flipped then.
fn clear_tail<D: BackendDomain>(dom0: &D, frame: &NetFrame<D>) -> bool {
    static ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
    let used = frame.len() % PAGE_SIZE;
    match frame.0.pages().last() {
        Some(last) if used != 0 => dom0.write(last.pfn, used, &ZEROS[used..]).is_ok(),
        _ => true,
    }
}

/// Rewrites the response put at position `owner` of this pass with `NETIF_RSP_ERROR`, counted
/// once per slot (a slot of a frame delivered with a headroom may take two copies).
fn patch_error<M>(
    rx: &mut BackRing<RxRing, PageRing<M>>,
    puts: &mut [(u32, RxResponse)],
    owner: u32,
    stats: &mut VifStats,
) {
    let Some((idx, rsp)) = puts.get_mut(owner as usize) else {
        return;
    };
    if rsp.status == NETIF_RSP_ERROR {
        return;
    }
    stats.rx_copy_errors += 1;
    rsp.status = NETIF_RSP_ERROR;
    // Cannot fail: the response was put this pass and is pushed only after the flush.
    let _ = rx.patch_response(*idx, *rsp);
}
