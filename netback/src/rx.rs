//! The receive path, switch → guest (Linux's `rx.c`), in copy or flip mode.
//!
//! Frames wait in the vif's queue (capped in bytes). A pass delivers up to `rx_batch_packets`
//! frames while the frontend has posted enough buffers: a frame of `len` bytes takes
//! `ceil(len / 4096)` slots, one per backend page, with `NETRXF_more_data` on all but the last.
//! Copy mode builds one grant-copy op per slot (chunks stop at both page boundaries: backend
//! pages and guest buffers both start at offset 0) and flushes in batches; flip mode transfers
//! the backend page itself. Responses are put as the ops are built, failures are patched in after
//! the flush, and the frontend is notified once per pass.

use std::time::Instant;

use hypervisor::{DomainHandle, GnttabCopy, GnttabCopyPtr, GnttabTransfer, GrantRef, PAGE_SIZE};
use ring::netif::{NETIF_RSP_ERROR, NETRXF_MORE_DATA, RxRequest, RxResponse};

use crate::batch::CopyBatch;
use crate::config::Config;
use crate::pool::{BufPool, NetFrame};
use crate::vif::{Fatal, RxMode, Vif};

/// Working storage of an rx pass, kept in the vif so a pass allocates nothing once warm.
#[derive(Default)]
pub(crate) struct RxScratch {
    /// Frames whose copies or transfers are queued: their pages stay out of the pool until the
    /// pass has flushed.
    inflight: Vec<NetFrame>,
    /// Page transfers waiting for their hypercall (flip mode).
    transfers: Vec<GnttabTransfer>,
    /// Each transfer's owner: its response's position in `puts`.
    transfer_rsp: Vec<u32>,
    /// Responses put this pass, by position: a failed op's owner is its position here.
    puts: Vec<(u32, RxResponse)>,
}

/// Slots a frame of `len` bytes needs.
pub(crate) fn slots_for(len: usize) -> u32 {
    len.div_ceil(PAGE_SIZE) as u32
}

impl Vif {
    /// Delivers queued frames into the guest. Returns whether any frame was delivered.
    pub(crate) fn rx_action(
        &mut self,
        dom0: &DomainHandle,
        pool: &BufPool,
        cfg: &Config,
        batch: &mut CopyBatch,
        now: Instant,
    ) -> bool {
        if self.is_disabled() || self.rx_queue.is_empty() {
            return false;
        }
        let _s = xenoprof::scope(xenoprof::Class::NETBACK);
        // Every pass flushes the shared batch before returning, so no other vif's ops wait in it.
        debug_assert!(
            batch.is_empty(),
            "a previous pass left grant copies unflushed"
        );
        let hc = batch.hypercalls;
        let mut fatal: Option<Fatal> = None;
        let mut sc = std::mem::take(&mut self.rx_scratch);
        let RxScratch {
            inflight,
            transfers,
            transfer_rsp,
            puts,
        } = &mut sc;
        puts.clear();
        let mut delivered = 0usize;
        'frames: while delivered < cfg.rx_batch_packets {
            let Some(len) = self.rx_queue.front().map(|f| f.len()) else {
                break;
            };
            let needed = slots_for(len);
            match self.rx_slots_available(needed) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    // Not `return`: the ops already queued for earlier frames must be flushed
                    // (or their pages would go back to the pool while still named as sources).
                    fatal = Some(Fatal::Ring(e));
                    break;
                }
            }
            let Some(mut frame) = self.rx_queue.pop_front() else {
                break;
            };
            self.rx_queued_bytes -= len;
            if self.mode == RxMode::Flip && !frame.is_exclusive() {
                // Another vif holds the same frame (a flood): give the guest a private copy, as
                // Linux's flipping netback copied shared skbs.
                match private_copy(dom0, pool, &frame) {
                    Some(f) => frame = f,
                    None => {
                        self.stats.rx_copy_errors += 1;
                        continue;
                    }
                }
            }
            let pages = frame.0.pages();
            for (i, pfn) in pages.iter().enumerate() {
                // `rx_slots_available` validated `needed` requests, and each consumed request is
                // answered at once below, so neither the ring nor put_response can come up short.
                let req: RxRequest = match self.rx.next_request() {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        debug_assert!(false, "validated rx request vanished");
                        break 'frames;
                    }
                    Err(e) => {
                        fatal = Some(Fatal::Ring(e));
                        break 'frames;
                    }
                };
                let chunk = (len - i * PAGE_SIZE).min(PAGE_SIZE);
                let last = i + 1 == pages.len();
                let rsp = RxResponse {
                    id: req.id,
                    offset: 0,
                    flags: if last { 0 } else { NETRXF_MORE_DATA },
                    status: chunk as i16,
                };
                let Ok(idx) = self.rx.put_response(rsp) else {
                    debug_assert!(false, "a consumed rx request had no response slot");
                    break 'frames;
                };
                let owner = puts.len() as u32;
                puts.push((idx, rsp));
                match self.mode {
                    RxMode::Copy => {
                        let op = GnttabCopy::new(
                            GnttabCopyPtr::local(*pfn, 0),
                            GnttabCopyPtr::gref(self.id.domid, GrantRef(req.gref), 0),
                            chunk as u16,
                        );
                        let (rx, stats) = (&mut self.rx, &mut self.stats);
                        // A failed hypercall reports every op of the batch as failed, so the
                        // error itself needs no handling here.
                        let _ = batch
                            .push(dom0, op, owner, &mut |o, _| patch_error(rx, puts, o, stats));
                    }
                    RxMode::Flip => {
                        transfers.push(GnttabTransfer::new(
                            *pfn,
                            self.id.domid,
                            GrantRef(req.gref),
                        ));
                        transfer_rsp.push(owner);
                        if transfers.len() >= cfg.flip_batch_pages {
                            self.flush_transfers(dom0, transfers, transfer_rsp, puts);
                        }
                    }
                }
            }
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
            inflight.push(frame);
            delivered += 1;
        }
        {
            let (rx, stats) = (&mut self.rx, &mut self.stats);
            let _ = batch.flush(dom0, &mut |o, _| patch_error(rx, puts, o, stats));
        }
        self.flush_transfers(dom0, transfers, transfer_rsp, puts);
        self.stats.hypercalls += batch.hypercalls - hc;
        // The copies are done (or the pages given away): the backend buffers can be reused.
        inflight.clear();
        self.rx_scratch = sc;
        if let Some(f) = fatal {
            if self.rx.rsp_prod_pvt() != self.rx.req_cons() {
                debug_assert!(false, "fatal rx pass left a request unanswered");
            }
            self.rx.push_responses();
            self.disable(f);
            return delivered > 0;
        }
        if delivered > 0 {
            self.did_work = true;
            self.rx_stalled_since = None;
            if self.rx.push_responses_and_check_notify() {
                self.notify(dom0);
            }
        } else if !self.rx_queue.is_empty() {
            self.check_rx_stall(cfg, now);
        }
        delivered > 0
    }

    /// Whether `needed` rx requests are posted. If not, asks the frontend to notify when they
    /// are (`req_event = req_cons + needed`; Linux's `xenvif_rx_ring_slots_available` arms
    /// `req_prod + 1` and re-checks on every event instead) and checks once more, so a posting
    /// that raced with us is not missed.
    fn rx_slots_available(&mut self, needed: u32) -> Result<bool, ring::RingError> {
        if self.rx.unconsumed_requests()? >= needed {
            return Ok(true);
        }
        let event = self.rx.req_cons().wrapping_add(needed);
        self.rx.set_req_event(event);
        Ok(self.rx.unconsumed_requests()? >= needed)
    }

    /// One `GNTTABOP_transfer` for the collected pages; a failed transfer's response becomes an
    /// error. The hypervisor gives the backend a replacement frame for every page it gave away.
    fn flush_transfers(
        &mut self,
        dom0: &DomainHandle,
        transfers: &mut Vec<GnttabTransfer>,
        owners: &mut Vec<u32>,
        puts: &[(u32, RxResponse)],
    ) {
        if transfers.is_empty() {
            return;
        }
        self.stats.hypercalls += 1;
        let r = dom0.grant_transfer(transfers);
        for (t, o) in transfers.iter().zip(owners.iter()) {
            if r.is_err() || t.status() != hypervisor::GrantStatus::Okay {
                patch_error(&mut self.rx, puts, *o, &mut self.stats);
            }
        }
        transfers.clear();
        owners.clear();
    }

    /// Drains the rx queue if the frontend has posted no buffers for `rx_drain_timeout`
    /// (XSA-392: a guest that stops receiving must not pin backend memory forever).
    fn check_rx_stall(&mut self, cfg: &Config, now: Instant) {
        let since = *self.rx_stalled_since.get_or_insert(now);
        if now.duration_since(since) >= cfg.rx_drain_timeout {
            self.stats.rx_drained += self.rx_queue.len() as u64;
            self.rx_queue.clear();
            self.rx_queued_bytes = 0;
            self.rx_stalled_since = None;
        }
    }
}

/// Rewrites the response put at position `owner` of this pass with `NETIF_RSP_ERROR`.
fn patch_error(
    rx: &mut ring::BackRing<ring::RxRing, ring::PageRing<hypervisor::GrantMapping>>,
    puts: &[(u32, RxResponse)],
    owner: u32,
    stats: &mut crate::vif::VifStats,
) {
    stats.rx_copy_errors += 1;
    if let Some(&(idx, rsp)) = puts.get(owner as usize) {
        // Cannot fail: the response was put this pass and is pushed only after the flush.
        let _ = rx.patch_response(
            idx,
            RxResponse {
                status: NETIF_RSP_ERROR,
                ..rsp
            },
        );
    }
}

/// Copies a shared frame into fresh backend pages with one local grant copy, for flip mode.
fn private_copy(dom0: &DomainHandle, pool: &BufPool, frame: &NetFrame) -> Option<NetFrame> {
    let mut buf = pool.alloc(frame.len())?;
    let mut ops: Vec<GnttabCopy> = frame
        .0
        .pages()
        .iter()
        .zip(buf.pages())
        .enumerate()
        .map(|(i, (src, dst))| {
            let chunk = (frame.len() - i * PAGE_SIZE).min(PAGE_SIZE);
            GnttabCopy::new(
                GnttabCopyPtr::local(*src, 0),
                GnttabCopyPtr::local(*dst, 0),
                chunk as u16,
            )
        })
        .collect();
    dom0.grant_copy(&mut ops).ok()?;
    if ops
        .iter()
        .any(|o| o.status() != hypervisor::GrantStatus::Okay)
    {
        return None;
    }
    buf.load_head().ok()?;
    Some(NetFrame::new(buf))
}
