//! The transmit path, guest → switch (Linux's `netback.c` tx half).
//!
//! One pass per queue ([`Queue::tx_action`], Linux's `xenvif_tx_action`) takes packets while requests wait:
//! - [`Queue::tx_count_requests`] reads a packet's chain (first request, extra-info slots, the
//!   `more_data` slots), each request copied out of the shared ring once, and applies Linux's
//!   fatal checks (`xenvif_count_requests`, `xenvif_get_extras`);
//! - [`Queue::tx_check_packet`] applies the drop checks (too many slots, an oversize later slot,
//!   a runt first slot);
//! - `tx_build_gops` lays out the grant copies into backend pages (`xenvif_tx_build_gops`),
//!   queued in the pass's batch;
//! - after one flush, [`Queue::tx_make_responses`] answers every slot of every packet in ring
//!   order (extras with `NETIF_RSP_NULL`) and hands the good frames to the switch; the frontend
//!   is notified once per pass if it asked to be.
//!
//! A fatal error leaves the offending packet's slots unanswered and disables the vif, as
//! Linux's `xenvif_fatal_tx_err` does. Multicast add/remove requests are dummy requests, taken
//! as Linux's `xenvif_tx_build_gops` takes them: right after their extra-info slots, before any
//! packet check (a Windows frontend sends them with size 0 and no data) and without reading a
//! `more_data` chain; the last add (else the last remove) of the request amends the vif's
//! multicast list ([`crate::mcast`]); answered OK, or an error for an add the full list refuses;
//! never forwarded.

use std::ops::Range;
use std::time::Instant;

use hypervisor::{BackendDomain, CopyOp, CopyPtr, GrantRef, PAGE_SIZE};
use netif_ring::netif::{
    ETH_HLEN, ExtraInfo, ExtraRepr, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY,
    NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, TxRequest,
    TxResponse, XEN_NETIF_EXTRA_FLAG_MORE,
};

use crate::batch::{CopyBatch, Owner};
use crate::config::Config;
use crate::mcast::McastFilter;
use crate::pool::{Buf, BufPool, HDR_PEEK, NetFrame};
use crate::rate::Credit;
use crate::vif::{Fatal, Queue};

/// What becomes of a packet read this pass.
// The buffer is held inline on purpose: boxing it would allocate per packet, and the vector of
// pending packets is reused from pass to pass.
#[allow(clippy::large_enum_variant)]
enum Fate<D: BackendDomain> {
    /// Copies queued into this buffer; becomes a frame unless a copy fails.
    Copying(Buf<D>),
    /// A copy failed.
    CopyFailed,
    /// Dropped by a check (counted when it was dropped); answered with an error.
    Dropped,
    /// A multicast control request: answered OK, no data.
    Dummy,
    /// A multicast add the vif's full list refused: answered with an error, no data.
    Refused,
}

/// One packet of the pass: its slots (to answer), its offload flags and GSO slot, its fate.
struct Pending<D: BackendDomain> {
    /// This packet's slots in `TxScratch::ids`.
    ids: Range<usize>,
    flags: u16,
    gso: Option<ExtraInfo>,
    fate: Fate<D>,
}

/// A packet's chain as read from the ring.
struct Chain {
    first: TxRequest,
    /// Its multicast control, if an add or remove extra came with it (the last add, else the
    /// last remove, as Linux keeps the last extra of each type).
    mcast: Option<McastOp>,
    /// Its GSO extra-info slot, if any.
    gso: Option<ExtraInfo>,
}

/// A multicast list change a tx request asks for.
#[derive(Clone, Copy)]
enum McastOp {
    Add([u8; 6]),
    Del([u8; 6]),
}

/// Working storage of a tx pass, kept in the vif so a pass allocates nothing once warm.
pub(crate) struct TxScratch<D: BackendDomain> {
    /// The packets of the pass, in ring order.
    pending: Vec<Pending<D>>,
    /// Request ids of every slot read this pass, in ring order, and whether each is an
    /// extra-info slot (answered with NETIF_RSP_NULL).
    ids: Vec<(u16, bool)>,
    /// The current packet's data requests (first, then its more_data chain).
    slots: Vec<TxRequest>,
    /// The current packet's grant-copy ops.
    ops: Vec<CopyOp>,
}

impl<D: BackendDomain> Default for TxScratch<D> {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            ids: Vec::new(),
            slots: Vec::new(),
            ops: Vec::new(),
        }
    }
}

impl<D: BackendDomain> Queue<D> {
    /// The first half of a tx pass: takes up to `cfg.tx_batch_packets` packets from the tx
    /// ring and queues their grant copies into backend buffers in the pass's `batch` (as queue
    /// `slot` of the pass). Returns whether any request was consumed. The pass flushes the
    /// batch, reports this queue's failed copies ([`Queue::tx_failed`]), then
    /// [`Queue::tx_finish`] answers the slots.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tx_build(
        &mut self,
        slot: u32,
        dom0: &D,
        pool: &BufPool<D>,
        cfg: &Config,
        batch: &mut CopyBatch,
        mcast: &mut McastFilter,
        now: Instant,
    ) -> bool {
        if self.is_disabled() {
            return false;
        }
        if let Some(rate) = self.rate
            && self.credit.is_none()
        {
            self.credit = Some(Credit::new(rate, now));
        }
        let _s = xenoprof::scope(xenoprof::Class::NETBACK);
        let mut sc = std::mem::take(&mut self.tx_scratch);
        sc.ids.clear();
        sc.pending.clear();
        let mut fatal = None;
        while sc.pending.len() < cfg.tx_batch_packets {
            // The rate limit looks at the next packet's size before taking it, as Linux's
            // credit check does; the packet is charged by the size it is then read with.
            let charged = match self.tx_credit(now) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(f) => {
                    fatal = Some(f);
                    break;
                }
            };
            let start = sc.ids.len();
            let chain = match self.tx_count_requests(cfg, &mut sc) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(f) => {
                    fatal = Some(f);
                    break;
                }
            };
            if let Some(c) = &mut self.credit {
                c.correct(charged, u64::from(chain.first.size));
            }
            let ids = start..sc.ids.len();
            let (flags, gso) = (chain.first.flags, chain.gso);
            if let Some(op) = chain.mcast {
                self.stats.tx_mcast_requests += 1;
                let fate = match op {
                    McastOp::Add(a) if !mcast.add(a) => {
                        self.stats.tx_mcast_errors += 1;
                        Fate::Refused
                    }
                    McastOp::Add(_) => Fate::Dummy,
                    McastOp::Del(a) => {
                        mcast.del(a);
                        Fate::Dummy
                    }
                };
                sc.pending.push(Pending {
                    ids,
                    flags,
                    gso,
                    fate,
                });
                continue;
            }
            let fate = match self.tx_check_packet(cfg, &chain, &sc.slots) {
                Err(f) => {
                    fatal = Some(f);
                    break;
                }
                Ok(false) => Fate::Dropped,
                Ok(true) => match pool.alloc(chain.first.size as usize) {
                    Some(buf) => {
                        tx_build_gops(self.id.domid, &buf, &chain, &sc.slots, &mut sc.ops);
                        let owner = Owner {
                            slot,
                            item: sc.pending.len() as u32,
                        };
                        sc.pending.push(Pending {
                            ids,
                            flags,
                            gso,
                            fate: Fate::Copying(buf),
                        });
                        self.stats.grant_ops += sc.ops.len() as u64;
                        for op in sc.ops.drain(..) {
                            batch.push(dom0, op, owner);
                        }
                        continue;
                    }
                    None => {
                        self.stats.tx_no_buffer += 1;
                        Fate::Dropped
                    }
                },
            };
            sc.pending.push(Pending {
                ids,
                flags,
                gso,
                fate,
            });
        }
        let consumed = !sc.pending.is_empty();
        self.tx_scratch = sc;
        self.tx_fatal = fatal;
        consumed
    }

    /// Packet `item` of this queue's part of the pass: a grant copy of it failed.
    pub(crate) fn tx_failed(&mut self, item: u32) {
        if let Some(p) = self.tx_scratch.pending.get_mut(item as usize)
            && matches!(p.fate, Fate::Copying(_))
        {
            p.fate = Fate::CopyFailed;
        }
    }

    /// The second half of a tx pass, after the batch was flushed: answers every slot of each
    /// packet read whole, appends the good frames to `frames`, notifies the frontend once if it
    /// asked, and disables the vif after a fatal error. `calls` is the hypercalls this queue's
    /// copies went in.
    pub(crate) fn tx_finish(
        &mut self,
        evtchn: &D::Evtchn,
        frames: &mut Vec<NetFrame<D>>,
        calls: u32,
    ) {
        let _s = xenoprof::scope(xenoprof::Class::NETBACK);
        self.stats.hypercalls += u64::from(calls);
        let mut sc = std::mem::take(&mut self.tx_scratch);
        let mut pending = std::mem::take(&mut sc.pending);
        let consumed = !pending.is_empty();
        self.tx_make_responses(&sc, &mut pending, frames);
        sc.pending = pending;
        if consumed && self.tx.push_responses_and_check_notify() {
            self.notify(evtchn, false);
        }
        self.tx_scratch = sc;
        if let Some(f) = self.tx_fatal.take() {
            self.disable(f);
        }
        if consumed {
            self.worked(false);
        }
    }

    /// The rate limit's gate before a packet: `Ok(Some(charged))` if it may be taken (charged
    /// by the size its first request shows now; 0 when the vif is not limited), `Ok(None)` if
    /// it waits for credit (counted) or no request waits.
    fn tx_credit(&mut self, now: Instant) -> Result<Option<u64>, Fatal> {
        let Some(credit) = &mut self.credit else {
            return Ok(Some(0));
        };
        let Some(first) = self.tx.peek_request().map_err(Fatal::Ring)? else {
            return Ok(None);
        };
        let size = u64::from(first.size);
        if credit.take(size, now) {
            Ok(Some(size))
        } else {
            self.stats.tx_rate_limited += 1;
            Ok(None)
        }
    }

    /// Reads one packet's chain: the first request, its extra-info slots and its `more_data`
    /// slots (into `sc.slots`), recording every slot's id in `sc.ids`. `Ok(None)`: no request
    /// waits. Fatal as Linux's `xenvif_count_requests`/`xenvif_get_extras`: a chain running past
    /// the pushed requests, a bad extra, more than `tx_slots_fatal` slots after the first, a
    /// later slot crossing its page.
    fn tx_count_requests(
        &mut self,
        cfg: &Config,
        sc: &mut TxScratch<D>,
    ) -> Result<Option<Chain>, Fatal> {
        let Some(first) = self.tx.next_request().map_err(Fatal::Ring)? else {
            return Ok(None);
        };
        let start = sc.ids.len();
        sc.ids.push((first.id, false));
        let truncated = |sc: &TxScratch<D>| Fatal::TruncatedPacket {
            got: sc.ids.len() - start,
        };
        let (mut add, mut del) = (None, None);
        let mut gso = None;
        if first.flags & NETTXF_EXTRA_INFO != 0 {
            loop {
                let extra: ExtraInfo = self
                    .tx
                    .next_request_as()
                    .map_err(Fatal::Ring)?
                    .ok_or_else(|| truncated(sc))?;
                // The extra slot's id field overlays type/flags; its response goes in its
                // position with whatever id the slot holds, as Linux's make_tx_response does.
                sc.ids
                    .push((u16::from_le_bytes([extra.type_, extra.flags]), true));
                match ExtraRepr::parse(&extra).map_err(Fatal::BadExtra)? {
                    ExtraRepr::McastAdd(a) => add = Some(a),
                    ExtraRepr::McastDel(a) => del = Some(a),
                    ExtraRepr::Gso { .. } => gso = Some(extra),
                    ExtraRepr::Hash { .. } | ExtraRepr::Xdp { .. } => {}
                }
                if extra.flags & XEN_NETIF_EXTRA_FLAG_MORE == 0 {
                    break;
                }
            }
        }
        sc.slots.clear();
        sc.slots.push(first);
        // A multicast control request ends with its extras (Linux answers it before counting
        // any data slots; a more_data slot after it starts the next packet).
        let mcast = add.map(McastOp::Add).or(del.map(McastOp::Del));
        if mcast.is_some() {
            return Ok(Some(Chain { first, mcast, gso }));
        }
        let mut more = first.flags & NETTXF_MORE_DATA != 0;
        while more {
            // Slots read after the first; Linux checks before reading the next one.
            let after_first = sc.slots.len() - 1;
            if after_first >= cfg.tx_slots_fatal {
                return Err(Fatal::TooManySlots {
                    slots: after_first + 1,
                    limit: cfg.tx_slots_fatal,
                });
            }
            let next: TxRequest = self
                .tx
                .next_request()
                .map_err(Fatal::Ring)?
                .ok_or_else(|| truncated(sc))?;
            sc.ids.push((next.id, false));
            if next.offset as usize + next.size as usize > PAGE_SIZE {
                return Err(Fatal::SlotCrossesPage {
                    offset: next.offset,
                    size: next.size,
                });
            }
            more = next.flags & NETTXF_MORE_DATA != 0;
            sc.slots.push(next);
        }
        Ok(Some(Chain {
            first,
            mcast: None,
            gso,
        }))
    }

    /// The drop checks on a whole chain. `Ok(false)`: dropped (counted); `Err`: the first slot
    /// crosses its page (fatal, as Linux).
    fn tx_check_packet(
        &mut self,
        cfg: &Config,
        chain: &Chain,
        slots: &[TxRequest],
    ) -> Result<bool, Fatal> {
        let total = chain.first.size as usize;
        let rest: usize = slots[1..].iter().map(|s| s.size as usize).sum();
        if slots.len() - 1 > cfg.tx_slots_drop {
            self.stats.tx_too_many_slots += 1;
            return Ok(false);
        }
        if rest > total {
            self.stats.tx_oversize_slot += 1;
            return Ok(false);
        }
        // The first slot carries what the later ones do not (Linux's count_requests subtracts).
        let own = total - rest;
        if own < ETH_HLEN {
            self.stats.tx_runt += 1;
            return Ok(false);
        }
        if chain.first.offset as usize + own > PAGE_SIZE {
            return Err(Fatal::SlotCrossesPage {
                offset: chain.first.offset,
                size: own as u16,
            });
        }
        Ok(true)
    }

    /// Answers every slot of the pass in ring order and hands good frames to the switch.
    fn tx_make_responses(
        &mut self,
        sc: &TxScratch<D>,
        pending: &mut Vec<Pending<D>>,
        frames: &mut Vec<NetFrame<D>>,
    ) {
        for p in pending.drain(..) {
            let status = match &p.fate {
                Fate::Copying(_) | Fate::Dummy => NETIF_RSP_OKAY,
                Fate::CopyFailed | Fate::Dropped | Fate::Refused => NETIF_RSP_ERROR,
            };
            for &(id, extra) in &sc.ids[p.ids] {
                let st = if extra { NETIF_RSP_NULL } else { status };
                // Cannot fail: one response per consumed request.
                let _ = self.tx.put_response(TxResponse { id, status: st });
            }
            match p.fate {
                Fate::Copying(mut buf) => match tx_checksum_setup(&mut buf, p.flags, p.gso) {
                    Ok(()) => {
                        self.stats.tx_packets += 1;
                        self.stats.tx_bytes += buf.len() as u64;
                        self.stats.tx_gso_frames += u64::from(p.gso.is_some());
                        frames.push(NetFrame::new(buf));
                    }
                    // Answered OK already; Linux drops such a packet silently too.
                    Err(SetupError::Offload) => self.stats.tx_csum_errors += 1,
                    Err(SetupError::Read) => self.stats.tx_copy_errors += 1,
                },
                Fate::CopyFailed => self.stats.tx_copy_errors += 1,
                Fate::Dropped | Fate::Dummy | Fate::Refused => {}
            }
        }
    }
}

/// Why a copied packet cannot go on.
enum SetupError {
    /// Its offload flags or GSO slot do not match its headers.
    Offload,
    /// Its first page could not be read back.
    Read,
}

/// Reads the packet's offload flags and GSO slot against its headers (Linux's
/// `checksum_setup` and `xenvif_set_skb_gso`), stores the result in the buffer and loads the
/// switch's copy of its head. A GSO frame sent without `csum_blank` gets its pseudo-header sum
/// written, as netback's fixup does.
fn tx_checksum_setup<D: BackendDomain>(
    buf: &mut Buf<D>,
    flags: u16,
    gso: Option<ExtraInfo>,
) -> Result<(), SetupError> {
    if flags & (NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED) == 0 && gso.is_none() {
        return buf.load_head().map_err(|_| SetupError::Read);
    }
    let mut hdr = [0u8; HDR_PEEK];
    let n = buf.peek(&mut hdr).map_err(|_| SetupError::Read)?;
    let meta = offload::netif::from_tx(flags, gso.as_ref(), &mut hdr[..n])
        .map_err(|_| SetupError::Offload)?;
    // from_tx writes into the headers only for a GSO frame sent without csum_blank (its
    // pseudo-header sum): only then do the pages need them back.
    if gso.is_some() && flags & NETTXF_CSUM_BLANK == 0 {
        buf.poke(0, &hdr[..n]).map_err(|_| SetupError::Read)?;
    }
    buf.set_meta(meta);
    buf.set_head(&hdr[..n]);
    Ok(())
}

/// The grant copies of a checked chain into `buf`: one op per piece of a slot that fits in the
/// current backend page (the source never crosses a page: checked).
fn tx_build_gops<D: BackendDomain>(
    domid: hypervisor::DomId,
    buf: &Buf<D>,
    chain: &Chain,
    slots: &[TxRequest],
    ops: &mut Vec<CopyOp>,
) {
    let total = chain.first.size as usize;
    let rest: usize = slots[1..].iter().map(|s| s.size as usize).sum();
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
            let (page, in_page) = (dst / PAGE_SIZE, dst % PAGE_SIZE);
            let n = left.min(PAGE_SIZE - in_page);
            ops.push(CopyOp::new(
                CopyPtr::gref(domid, GrantRef(s.gref), src_off as u16),
                CopyPtr::Local(buf.pages()[page].addr.add(in_page)),
                n as u16,
            ));
            src_off += n;
            dst += n;
            left -= n;
        }
    }
}
