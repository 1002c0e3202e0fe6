//! The transmit path, guest → switch (Linux's `netback.c` tx half).
//!
//! Each request is copied out of the shared ring once (the ring does that) and validated here as
//! Linux's `xenvif_count_requests` / `xenvif_get_extras` do. Good packets are grant-copied into
//! backend buffers in batches; every slot of every complete packet is answered after the copies,
//! and the frontend is notified once per pass if it asked to be. A fatal error leaves the
//! offending packet's slots unanswered and disables the vif, as Linux's `fatal_tx_err` does.

use std::ops::Range;

use hypervisor::{DomainHandle, GnttabCopy, GnttabCopyPtr, GrantRef, PAGE_SIZE};
use ring::netif::{
    ExtraInfo, ExtraRepr, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_EXTRA_INFO,
    NETTXF_MORE_DATA, TxRequest, TxResponse, XEN_NETIF_EXTRA_FLAG_MORE,
};

use crate::batch::CopyBatch;
use crate::config::Config;
use crate::pool::{BufPool, NetFrame};
use crate::vif::{Fatal, Vif};

/// Ethernet header length: a first slot shorter than this is answered with an error.
const ETH_HLEN: u16 = 14;

/// One packet of the pass: its slots' ids (to answer), how many extra-info slots followed the
/// first, and its fate.
struct Pending {
    /// This packet's slots in `TxScratch::ids`.
    ids: Range<usize>,
    buf: Option<crate::pool::Buf>,
    ok: bool,
}

/// Working storage of a tx pass, kept in the vif so a pass allocates nothing once warm.
#[derive(Default)]
pub(crate) struct TxScratch {
    pending: Vec<Pending>,
    /// Request ids of every slot read this pass, in ring order, and whether each is an
    /// extra-info slot (answered with NETIF_RSP_NULL).
    ids: Vec<(u16, bool)>,
    /// The current packet's requests (first, then its more_data chain).
    slots: Vec<TxRequest>,
    /// The current packet's grant-copy ops.
    ops: Vec<GnttabCopy>,
}

impl Vif {
    /// Takes up to `cfg.tx_batch_packets` packets from the tx ring, copies them into backend
    /// buffers, answers every slot of each packet read whole and appends the good frames to
    /// `frames`. Returns whether any
    /// request was consumed. A fatal frontend error disables the vif.
    pub(crate) fn tx_action(
        &mut self,
        dom0: &DomainHandle,
        pool: &BufPool,
        cfg: &Config,
        batch: &mut CopyBatch,
        frames: &mut Vec<NetFrame>,
    ) -> bool {
        if self.is_disabled() {
            return false;
        }
        let _s = xenoprof::scope(xenoprof::Class::NETBACK);
        debug_assert!(
            batch.is_empty(),
            "a previous pass left grant copies unflushed"
        );
        let hc = batch.hypercalls;
        let mut sc = std::mem::take(&mut self.tx_scratch);
        sc.pending.clear();
        sc.ids.clear();
        let mut fatal = None;
        while sc.pending.len() < cfg.tx_batch_packets {
            match self.take_packet(cfg, pool, batch, dom0, &mut sc) {
                Ok(true) => {}
                Ok(false) => break,
                Err(f) => {
                    fatal = Some(f);
                    break;
                }
            }
        }
        // Finish the copies of this pass; a failed op fails its packet.
        let _ = batch.flush(dom0, &mut |owner, _| {
            if let Some(p) = sc.pending.get_mut(owner as usize) {
                p.ok = false;
            }
        });
        self.stats.hypercalls += batch.hypercalls - hc;
        let consumed = !sc.pending.is_empty();
        for p in sc.pending.drain(..) {
            let status = if p.ok {
                NETIF_RSP_OKAY
            } else {
                NETIF_RSP_ERROR
            };
            for &(id, extra) in &sc.ids[p.ids] {
                let st = if extra { NETIF_RSP_NULL } else { status };
                // Cannot fail: one response per consumed request.
                let _ = self.tx.put_response(TxResponse { id, status: st });
            }
            match (p.ok, p.buf) {
                (true, Some(mut buf)) => {
                    if buf.load_head().is_ok() {
                        self.stats.tx_packets += 1;
                        self.stats.tx_bytes += buf.len() as u64;
                        frames.push(NetFrame::new(buf));
                    } else {
                        self.stats.tx_copy_errors += 1;
                    }
                }
                (false, Some(_)) => self.stats.tx_copy_errors += 1,
                _ => {}
            }
        }
        if consumed && self.tx.push_responses_and_check_notify() {
            self.notify(dom0);
        }
        self.tx_scratch = sc;
        if let Some(f) = fatal {
            self.disable(f);
        }
        self.did_work |= consumed;
        consumed
    }

    /// Reads one packet's slots (first request, extras, more_data chain), validates them and
    /// queues its copies. `Ok(false)`: no request waiting.
    fn take_packet(
        &mut self,
        cfg: &Config,
        pool: &BufPool,
        batch: &mut CopyBatch,
        dom0: &DomainHandle,
        sc: &mut TxScratch,
    ) -> Result<bool, Fatal> {
        let Some(first) = self.tx.next_request().map_err(Fatal::Ring)? else {
            return Ok(false);
        };
        let start = sc.ids.len();
        sc.ids.push((first.id, false));
        // Extra-info slots follow the first request.
        if first.flags & NETTXF_EXTRA_INFO != 0 {
            loop {
                let extra: ExtraInfo = self.tx.next_request_as().map_err(Fatal::Ring)?.ok_or(
                    Fatal::TruncatedPacket {
                        got: sc.ids.len() - start,
                    },
                )?;
                // The extra slot's id field overlays type/flags; answer it by its position with
                // the request id Linux uses (the slot's first u16).
                sc.ids
                    .push((u16::from_le_bytes([extra.type_, extra.flags]), true));
                ExtraRepr::parse(&extra).map_err(Fatal::BadExtra)?;
                if extra.flags & XEN_NETIF_EXTRA_FLAG_MORE == 0 {
                    break;
                }
            }
        }
        let slots = &mut sc.slots;
        slots.clear();
        slots.push(first);
        let mut flags = first.flags;
        while flags & NETTXF_MORE_DATA != 0 {
            if slots.len() >= cfg.tx_slots_fatal {
                return Err(Fatal::TooManySlots {
                    slots: slots.len() + 1,
                    limit: cfg.tx_slots_fatal,
                });
            }
            let next: TxRequest =
                self.tx
                    .next_request()
                    .map_err(Fatal::Ring)?
                    .ok_or(Fatal::TruncatedPacket {
                        got: sc.ids.len() - start,
                    })?;
            sc.ids.push((next.id, false));
            flags = next.flags;
            slots.push(next);
        }
        // Later slots carry their own size; the first carries the packet's total, and its own
        // share is what the others leave (Linux's count_requests subtracts as it goes).
        for s in &slots[1..] {
            if s.offset as usize + s.size as usize > PAGE_SIZE {
                return Err(Fatal::SlotCrossesPage {
                    offset: s.offset,
                    size: s.size,
                });
            }
        }
        let mut p = Pending {
            ids: start..sc.ids.len(),
            buf: None,
            ok: false,
        };
        // Drops: the packet is answered with an error and counted, the vif lives on.
        let total = first.size as usize;
        let rest: usize = slots[1..].iter().map(|s| s.size as usize).sum();
        if slots.len() > cfg.tx_slots_drop {
            self.stats.tx_too_many_slots += 1;
        } else if rest > total {
            self.stats.tx_oversize_slot += 1;
        } else if total - rest < ETH_HLEN as usize {
            // Linux checks the first slot's own share (count_requests has subtracted the rest).
            self.stats.tx_runt += 1;
        } else if first.offset as usize + (total - rest) > PAGE_SIZE {
            return Err(Fatal::SlotCrossesPage {
                offset: first.offset,
                size: (total - rest) as u16,
            });
        } else if let Some(buf) = pool.alloc(total) {
            // The first slot carries what the later ones do not.
            let ops = &mut sc.ops;
            ops.clear();
            let mut dst = 0usize;
            for (i, s) in slots.iter().enumerate() {
                let size = if i == 0 {
                    total - rest
                } else {
                    s.size as usize
                };
                let mut src_off = s.offset as usize;
                let mut left = size;
                while left > 0 {
                    // Chunks stop at the destination page boundary; the source never crosses one
                    // (checked above).
                    let (page, in_page) = (dst / PAGE_SIZE, dst % PAGE_SIZE);
                    let n = left.min(PAGE_SIZE - in_page);
                    ops.push(GnttabCopy::new(
                        GnttabCopyPtr::gref(self.id.domid, GrantRef(s.gref), src_off as u16),
                        GnttabCopyPtr::local(buf.pages()[page], in_page as u16),
                        n as u16,
                    ));
                    src_off += n;
                    dst += n;
                    left -= n;
                }
            }
            p.ok = true;
            p.buf = Some(buf);
            let owner = sc.pending.len() as u32;
            sc.pending.push(p);
            let pending = &mut sc.pending;
            for op in sc.ops.drain(..) {
                // A flush here may report failures of earlier packets of the pass too: each
                // owner is the packet's index in `pending`.
                let _ = batch.push(dom0, op, owner, &mut |o, _| {
                    if let Some(q) = pending.get_mut(o as usize) {
                        q.ok = false;
                    }
                });
            }
            return Ok(true);
        } else {
            self.stats.tx_no_buffer += 1;
        }
        sc.pending.push(p);
        Ok(true)
    }
}
