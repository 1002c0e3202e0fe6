//! Grant tables v1.
//!
//! Guest side (this file): a domain grants access to one of its pages, ends access, and posts
//! accept-transfer entries, by writing 8-byte entries in its own grant-table frames as Linux's
//! `gnttab_*` helpers do (domid and frame first, then flags with release ordering). These are not
//! hypercalls: they run in the caller's context under class `grant_table`.
//!
//! Hypervisor side: [`copy`], [`map`], [`transfer`]. They pin an entry with Xen's protocol: the
//! first user of a kind (read or write) validates the entry and sets `GTF_reading`/`GTF_writing`
//! with compare-and-swap; the last user clears it. A hypervisor-private pin count per entry (Xen's
//! active entry) lets several users share the bit; a busy bit in it serialises the first/last
//! transitions so the shared bit and the count never disagree.

pub(crate) mod copy;
pub(crate) mod map;
pub(crate) mod transfer;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::{Backoff, CachePadded};
use xenoprof::Class;

use crate::domain::{Domain, DomainHandle};
use crate::mem::{EntryAtomics, GrantFrames, entry_header, header_domid, header_flags};
use hypervisor::abi::*;
use hypervisor::error::{Error, Result};
use hypervisor::types::{
    DOMID_SELF, DomId, GNTTAB_NR_RESERVED_ENTRIES, GrantRef, Mfn, Pfn, TransferState,
};

// Guest-side record per ref (guest kernel state, like Linux's): kind << 60 | pfn.
const META_KIND_SHIFT: u32 = 60;
const META_RO: u64 = 1;
const META_RW: u64 = 2;
const META_ACCEPT: u64 = 3;
/// Set while end_access/end_transfer owns the ref, so two enders cannot both free it.
const META_ENDING: u64 = 1 << 59;
const META_PFN_MASK: u64 = (1 << 59) - 1;

/// The flags half of an entry's header word.
const FLAGS_MASK: u32 = entry_header(u16::MAX, 0);

// Hypervisor pin word per ref: readers in bits 0..15, writers in 15..30, busy bit 31.
const PIN_READ: u32 = 1;
const PIN_WRITE: u32 = 1 << 15;
const PIN_FIELD: u32 = 0x7FFF;
const PIN_BUSY: u32 = 1 << 31;

/// A domain's grant table: entries in its own frames, the guest's free list, and the
/// hypervisor's private pin counts. The free list, locked by the guest for every grant it
/// makes or ends, has a cache line of its own: the hypervisor reads the fields beside it for
/// every grant op.
#[derive(Debug)]
pub(crate) struct GrantTableState {
    frames: GrantFrames,
    free: CachePadded<Mutex<Vec<u32>>>,
    meta: Box<[AtomicU64]>,
    active: Box<[AtomicU32]>,
    pages: usize,
}

impl GrantTableState {
    pub fn new(frames: GrantFrames, pages: usize) -> Self {
        let n = frames.entries();
        Self {
            free: CachePadded::new(Mutex::new(
                (GNTTAB_NR_RESERVED_ENTRIES..n as u32).rev().collect(),
            )),
            meta: (0..n).map(|_| AtomicU64::new(0)).collect(),
            active: (0..n).map(|_| AtomicU32::new(0)).collect(),
            frames,
            pages,
        }
    }

    pub fn frames_mut(&mut self) -> &mut GrantFrames {
        &mut self.frames
    }

    pub fn entry(&self, gref: GrantRef) -> Option<EntryAtomics<'_>> {
        self.frames.entry(gref.0)
    }

    /// Entries in the table.
    pub fn entries(&self) -> usize {
        self.meta.len()
    }

    fn pop_free(&self) -> Result<u32> {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or(Error::GrantTableFull {
                entries: self.meta.len(),
            })
    }

    fn push_free(&self, r: u32) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    /// Claims the guest record of `gref` for ending; returns (kind, pfn).
    fn claim_meta(&self, gref: GrantRef) -> Result<(u64, Pfn, u64)> {
        let m = self
            .meta
            .get(gref.0 as usize)
            .ok_or(Error::BadGrantRef(gref))?;
        // Acquire: pairs with the Release stores of the record in grant_access/accept.
        let v = m.load(Ordering::Acquire);
        if v == 0 || v & META_ENDING != 0 {
            return Err(Error::BadGrantRef(gref));
        }
        // AcqRel: the claim excludes a concurrent ender (pairs with itself in the other thread).
        m.compare_exchange(v, v | META_ENDING, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| Error::BadGrantRef(gref))?;
        Ok((v >> META_KIND_SHIFT, Pfn(v & META_PFN_MASK), v))
    }

    fn unclaim_meta(&self, gref: GrantRef, v: u64) {
        if let Some(m) = self.meta.get(gref.0 as usize) {
            // Release: restores the record for the next ender (pairs with claim_meta's Acquire).
            m.store(v, Ordering::Release);
        }
    }

    fn clear_meta(&self, gref: GrantRef) {
        if let Some(m) = self.meta.get(gref.0 as usize) {
            // Release: pairs with claim_meta's Acquire; the ref goes back on the free list after.
            m.store(0, Ordering::Release);
        }
        self.push_free(gref.0);
    }
}

/// The checks of Xen's `_set_status` on an entry header, for a use by `caller`: a permit-access
/// grant (`general_error`), to `caller` (`permission_denied`), writable if `write`
/// (`permission_denied`).
fn check_header(h: u32, caller: DomId, write: bool) -> Result<(), GrantStatus> {
    let f = header_flags(h);
    if f & GTF_TYPE_MASK != GTF_PERMIT_ACCESS {
        return Err(GrantStatus::GeneralError);
    }
    if header_domid(h) != caller {
        return Err(GrantStatus::PermissionDenied);
    }
    if write && f & GTF_READONLY != 0 {
        return Err(GrantStatus::PermissionDenied);
    }
    Ok(())
}

/// Checks an entry for a use by `caller` and sets `GTF_reading` or `GTF_writing` (Xen's
/// `_set_status`). Flags and domid are checked and the bit set with one compare-and-swap over
/// both, so the entry cannot change hands between check and claim.
///
/// The first swap guesses the usual entry (granted to `caller`, read-only for a read, writable
/// for a write, neither bit set) instead of reading it first: the entry's cache line was last
/// written by the granting guest on another CPU, and a load then a swap would fetch it twice
/// (shared, then exclusive) where one read-modify-write fetches it once. A wrong guess costs
/// nothing more: the failed swap returns the entry and the checks run on it.
fn set_status(e: &EntryAtomics<'_>, caller: DomId, write: bool) -> Result<(), GrantStatus> {
    let bit = entry_header(if write { GTF_WRITING } else { GTF_READING }, 0);
    let kind = if write { 0 } else { GTF_READONLY };
    let guess = entry_header(GTF_PERMIT_ACCESS | kind, caller);
    // AcqRel (both swaps): acquire pairs with the guest's Release store of the header in
    // grant_access, so the frame written before it is visible; release keeps the swap a full
    // participant in the header's modification order with the guest's end-access CAS.
    let mut h =
        match e
            .header
            .compare_exchange(guess, guess | bit, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Ok(()),
            Err(now) => now,
        };
    loop {
        check_header(h, caller, write)?;
        if h & bit != 0 {
            return Ok(());
        }
        match e
            .header
            .compare_exchange_weak(h, h | bit, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Ok(()),
            Err(now) => h = now,
        }
    }
}

/// Pins `gref` of `dom` for reading or writing on behalf of `caller` (Xen's
/// `acquire_grant_for_copy`). Returns the granted pfn.
pub(crate) fn acquire(
    dom: &Domain,
    gref: GrantRef,
    caller: DomId,
    write: bool,
) -> Result<Pfn, GrantStatus> {
    let gt = &dom.gnttab;
    let (Some(e), Some(pin)) = (gt.entry(gref), gt.active.get(gref.0 as usize)) else {
        return Err(GrantStatus::BadGntref);
    };
    let inc = if write { PIN_WRITE } else { PIN_READ };
    let backoff = Backoff::new();
    loop {
        // Acquire: pairs with the Release stores/CASes on the pin word below (other pinners).
        let c = pin.load(Ordering::Acquire);
        if c & PIN_BUSY != 0 {
            // Another thread is between a first-pin/last-unpin transition (a few instructions).
            backoff.snooze();
            continue;
        }
        let count = (c / inc) & PIN_FIELD;
        if count > 0 {
            if count == PIN_FIELD {
                return Err(GrantStatus::NoSpace);
            }
            // The bit is set and the entry cannot end meanwhile; still check it is ours.
            // Acquire: pairs with the guest's Release store of the header in grant_access.
            check_header(e.header.load(Ordering::Acquire), caller, write)?;
            // AcqRel: joins the pin word's release sequence (pairs with release()).
            if pin
                .compare_exchange_weak(c, c + inc, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break;
            }
        } else {
            // Acquire: we now own the transition; pairs with the Release store ending the
            // previous one.
            if pin
                .compare_exchange_weak(c, c | PIN_BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let r = set_status(&e, caller, write);
            // Release: ends the transition (pairs with the Acquire loads above).
            pin.store(if r.is_ok() { c + inc } else { c }, Ordering::Release);
            r?;
            break;
        }
    }
    // Relaxed: the entry is pinned (flags acquired above), so the guest cannot change frame.
    let pfn = Pfn(e.frame.load(Ordering::Relaxed) as u64);
    if pfn.index() >= gt.pages {
        release(dom, gref, write);
        return Err(GrantStatus::GeneralError);
    }
    Ok(pfn)
}

/// Unpins (Xen's `release_grant_for_copy`); the last user clears the status bit.
pub(crate) fn release(dom: &Domain, gref: GrantRef, write: bool) {
    let gt = &dom.gnttab;
    let (Some(e), Some(pin)) = (gt.entry(gref), gt.active.get(gref.0 as usize)) else {
        return;
    };
    let inc = if write { PIN_WRITE } else { PIN_READ };
    let bit = entry_header(if write { GTF_WRITING } else { GTF_READING }, 0);
    let backoff = Backoff::new();
    loop {
        // Acquire: pairs with the Release operations on the pin word.
        let c = pin.load(Ordering::Acquire);
        if c & PIN_BUSY != 0 {
            backoff.snooze();
            continue;
        }
        let count = (c / inc) & PIN_FIELD;
        if count == 0 {
            return;
        }
        if count > 1 {
            // AcqRel: our accesses to the frame happen-before the last releaser's clear.
            if pin
                .compare_exchange_weak(c, c - inc, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
            continue;
        }
        // AcqRel: own the last-unpin transition, acquiring earlier releasers' accesses.
        if pin
            .compare_exchange_weak(c, c | PIN_BUSY, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        // Release: our copy/mapping accesses happen-before the guest's end-access CAS that
        // sees the bit clear (pairs with its Acquire).
        e.header.fetch_and(!bit, Ordering::Release);
        // Release: ends the transition.
        pin.store(c - inc, Ordering::Release);
        return;
    }
}

impl DomainHandle {
    /// Grants `remote` access to page `pfn` (`gnttab_grant_foreign_access`). A writable grant
    /// holds the page against borrowing until access ends.
    pub fn grant_access(&self, remote: DomId, pfn: Pfn, readonly: bool) -> Result<GrantRef> {
        let _s = xenoprof::scope(Class::GRANT_TABLE);
        let d = &self.d;
        if pfn.0 >= d.pages {
            return Err(Error::PfnOutOfRange {
                pfn,
                pages: d.pages,
            });
        }
        let ok = if readonly {
            d.view.grant_ro_begin(pfn)
        } else {
            d.view.grant_rw_begin(pfn)
        };
        if !ok {
            return Err(Error::PageBusy(pfn));
        }
        let undo = || {
            if readonly {
                d.view.grant_ro_end(pfn)
            } else {
                d.view.write_end(pfn)
            }
        };
        let r = match d.gnttab.pop_free() {
            Ok(r) => r,
            Err(e) => {
                undo();
                return Err(e);
            }
        };
        let gref = GrantRef(r);
        let Some(e) = d.gnttab.entry(gref) else {
            undo();
            return Err(Error::BadGrantRef(gref));
        };
        let kind = if readonly { META_RO } else { META_RW };
        if let Some(m) = d.gnttab.meta.get(r as usize) {
            // Release: pairs with claim_meta's Acquire.
            m.store(kind << META_KIND_SHIFT | pfn.0, Ordering::Release);
        }
        let remote = if remote == DOMID_SELF { d.id } else { remote };
        // Relaxed: published by the Release store of the header below.
        e.frame.store(pfn.0 as u32, Ordering::Relaxed);
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        // Release: the write barrier before flags (written with domid, as one word); pairs with
        // set_status's and check_header's Acquire.
        e.header
            .store(entry_header(flags, remote), Ordering::Release);
        Ok(gref)
    }

    /// Ends access (`gnttab_end_foreign_access_ref`): fails with [`Error::GrantInUse`] while the
    /// hypervisor has `reading`/`writing` set (a copy in flight or a live mapping).
    pub fn end_access(&self, gref: GrantRef) -> Result<()> {
        let _s = xenoprof::scope(Class::GRANT_TABLE);
        let d = &self.d;
        let (kind, pfn, v) = d.gnttab.claim_meta(gref)?;
        if kind != META_RO && kind != META_RW {
            d.gnttab.unclaim_meta(gref, v);
            return Err(Error::BadGrantRef(gref));
        }
        let Some(e) = d.gnttab.entry(gref) else {
            return Err(Error::BadGrantRef(gref));
        };
        // Acquire: pairs with release()'s Release fetch_and, so the hypervisor's accesses to
        // the page happen-before ours.
        let mut h = e.header.load(Ordering::Acquire);
        loop {
            if header_flags(h) & (GTF_READING | GTF_WRITING) != 0 {
                d.gnttab.unclaim_meta(gref, v);
                return Err(Error::GrantInUse(gref));
            }
            // AcqRel: as above, and our revocation is ordered before later reuse of the page.
            // Flags go to zero; domid stays, as Linux's 16-bit swap of flags leaves it.
            match e
                .header
                .compare_exchange(h, h & !FLAGS_MASK, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => h = now,
            }
        }
        if kind == META_RO {
            d.view.grant_ro_end(pfn);
        } else {
            d.view.write_end(pfn);
        }
        d.gnttab.clear_meta(gref);
        Ok(())
    }

    /// Posts an accept-transfer entry (`gnttab_grant_foreign_transfer`): `remote` may give this
    /// domain a page, which will replace the frame at `pfn`. The pfn must be otherwise unused
    /// (no grants, no borrow) until [`DomainHandle::end_transfer`].
    pub fn grant_accept_transfer(&self, remote: DomId, pfn: Pfn) -> Result<GrantRef> {
        let _s = xenoprof::scope(Class::GRANT_TABLE);
        let d = &self.d;
        if pfn.0 >= d.pages {
            return Err(Error::PfnOutOfRange {
                pfn,
                pages: d.pages,
            });
        }
        if !d.view.target_begin(pfn) {
            return Err(Error::PageBusy(pfn));
        }
        let r = match d.gnttab.pop_free() {
            Ok(r) => r,
            Err(e) => {
                d.view.target_end(pfn);
                return Err(e);
            }
        };
        let gref = GrantRef(r);
        let Some(e) = d.gnttab.entry(gref) else {
            d.view.target_end(pfn);
            return Err(Error::BadGrantRef(gref));
        };
        if let Some(m) = d.gnttab.meta.get(r as usize) {
            // Release: pairs with claim_meta's Acquire.
            m.store(META_ACCEPT << META_KIND_SHIFT | pfn.0, Ordering::Release);
        }
        let remote = if remote == DOMID_SELF { d.id } else { remote };
        // Relaxed: published by the Release store of the header.
        e.frame.store(pfn.0 as u32, Ordering::Relaxed);
        // Release: pairs with the transfer path's Acquire load and CAS of the header.
        e.header
            .store(entry_header(GTF_ACCEPT_TRANSFER, remote), Ordering::Release);
        Ok(gref)
    }

    /// Where a transfer into accept entry `gref` stands.
    pub fn transfer_state(&self, gref: GrantRef) -> Result<TransferState> {
        let d = &self.d;
        let m = d
            .gnttab
            .meta
            .get(gref.0 as usize)
            .ok_or(Error::BadGrantRef(gref))?;
        // Acquire: pairs with the Release store of the record.
        let v = m.load(Ordering::Acquire);
        if v >> META_KIND_SHIFT != META_ACCEPT {
            return Err(Error::BadGrantRef(gref));
        }
        let e = d.gnttab.entry(gref).ok_or(Error::BadGrantRef(gref))?;
        // Acquire: pairs with the transfer's Release set of completed (after the p2m update).
        let f = header_flags(e.header.load(Ordering::Acquire));
        let pfn = Pfn(v & META_PFN_MASK);
        Ok(if f & GTF_TRANSFER_COMPLETED != 0 {
            TransferState::Completed {
                pfn,
                mfn: d.p2m(pfn).unwrap_or_default(),
            }
        } else if f & GTF_TRANSFER_COMMITTED != 0 {
            TransferState::Committed
        } else {
            TransferState::Pending
        })
    }

    /// Ends an accept-transfer entry (`gnttab_end_foreign_transfer_ref`): returns the new frame
    /// if a transfer completed, None if none happened (the entry is revoked either way), or
    /// [`Error::TransferInProgress`] if one is committed but not completed (retry).
    pub fn end_transfer(&self, gref: GrantRef) -> Result<Option<Mfn>> {
        let _s = xenoprof::scope(Class::GRANT_TABLE);
        let d = &self.d;
        let (kind, pfn, v) = d.gnttab.claim_meta(gref)?;
        if kind != META_ACCEPT {
            d.gnttab.unclaim_meta(gref, v);
            return Err(Error::BadGrantRef(gref));
        }
        let Some(e) = d.gnttab.entry(gref) else {
            return Err(Error::BadGrantRef(gref));
        };
        // Acquire: pairs with the transfer's Release updates of the header.
        let mut h = e.header.load(Ordering::Acquire);
        let done = loop {
            let f = header_flags(h);
            if f & GTF_TRANSFER_COMMITTED == 0 {
                // Not claimed yet: revoke with CAS so a racing transfer either sees the entry
                // or fails (Linux does the same).
                match e.header.compare_exchange(
                    h,
                    h & !FLAGS_MASK,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break None,
                    Err(now) => h = now,
                }
            } else if f & GTF_TRANSFER_COMPLETED == 0 {
                d.gnttab.unclaim_meta(gref, v);
                return Err(Error::TransferInProgress(gref));
            } else {
                // Release: pairs with the next user's Acquire; completed entries are ours.
                e.header.fetch_and(!FLAGS_MASK, Ordering::Release);
                break d.p2m(pfn);
            }
        };
        d.view.target_end(pfn);
        d.gnttab.clear_meta(gref);
        Ok(done)
    }

    /// Grant entries in this domain's table.
    pub fn grant_entries(&self) -> usize {
        self.d.gnttab.entries()
    }

    /// Grant entries this domain has in use (granted, or accepting a transfer), for leak checks.
    pub fn grants_in_use(&self) -> usize {
        let gt = &self.d.gnttab;
        let free = gt.free.lock().unwrap_or_else(|e| e.into_inner()).len();
        gt.entries() - GNTTAB_NR_RESERVED_ENTRIES as usize - free
    }
}
