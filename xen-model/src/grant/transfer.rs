//! `GNTTABOP_transfer`: page flipping.
//!
//! For each op the caller gives away its page `mfn` (a pfn of its own): the page must be unused
//! (no grants, no borrow, no local write in flight), else `bad_page` and nothing moves. The
//! caller's pfn gets a replacement frame from the allocator (class `page_alloc`) and a real remap
//! (class `mm`). Then the receiver is looked up (`bad_domain`), its entry checked (`bad_gntref`
//! beyond the table; `general_error` unless it accepts a transfer from the caller and is not yet
//! committed) and committed with CAS; the receiver's p2m entry at the accepting pfn is pointed at
//! the given frame and the frame is mapped over the old one with `MAP_FIXED` (page-table update
//! and TLB flush by the host kernel); the receiver's old frame goes back to the allocator (its
//! reservation size is unchanged); finally the entry is marked completed. As in Xen, once the
//! page has left the caller it is not returned on a later failure: it goes to the allocator.
//! Deviation: if the allocator has no replacement frame the op fails with `no_space` before
//! anything moves.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use xenoprof::Class;

use super::copy::DomCache;
use crate::domain::{Domain, DomainHandle};
use crate::hook::Hypercall;
use crate::machine::Stats;
use crate::mem::{entry_header, header_domid, header_flags};
use hypervisor::abi::*;
use hypervisor::error::Result;
use hypervisor::ops::TransferOp;
use hypervisor::types::{DomId, GrantRef, Mfn, Pfn};

fn steal_page(caller: &Domain, pfn: Pfn) -> Result<Mfn, GrantStatus> {
    if pfn.0 >= caller.pages || !caller.view.moving_begin(pfn) {
        return Err(GrantStatus::BadPage);
    }
    let Some(repl) = caller.machine.alloc.alloc_one() else {
        caller.view.moving_end(pfn);
        return Err(GrantStatus::NoSpace);
    };
    let r = {
        let _l = caller.mm_lock.lock().unwrap_or_else(|e| e.into_inner());
        caller.set_p2m(pfn, repl)
    };
    caller.view.moving_end(pfn);
    r.map_err(|_| {
        caller.machine.alloc.free(&[repl]);
        GrantStatus::GeneralError
    })
}

fn transfer_one(
    caller: &Arc<Domain>,
    cache: &mut DomCache,
    pfn: Pfn,
    domid: DomId,
    gref: GrantRef,
) -> GrantStatus {
    let page = match steal_page(caller, pfn) {
        Ok(m) => m,
        Err(s) => return s,
    };
    let give_up = |s: GrantStatus| {
        caller.machine.alloc.free(&[page]);
        s
    };
    let Some(rd) = cache.get(caller, domid) else {
        return give_up(GrantStatus::BadDomain);
    };
    if rd.is_dying() {
        return give_up(GrantStatus::GeneralError);
    }
    let Some(e) = rd.gnttab.entry(gref) else {
        return give_up(GrantStatus::BadGntref);
    };
    // Prepare for transfer: an accept-transfer entry for us, not yet committed; commit with CAS
    // over flags and domid together, so the entry cannot change hands between check and commit.
    // Acquire: pairs with the receiver's Release store of the header (the frame visible).
    let mut h = e.header.load(Ordering::Acquire);
    loop {
        let f = header_flags(h);
        if f & GTF_TYPE_MASK != GTF_ACCEPT_TRANSFER
            || f & (GTF_TRANSFER_COMMITTED | GTF_TRANSFER_COMPLETED) != 0
            || header_domid(h) != caller.id
        {
            return give_up(GrantStatus::GeneralError);
        }
        // AcqRel: pairs with the receiver's end_transfer CAS (one of us wins the entry).
        match e.header.compare_exchange(
            h,
            h | entry_header(GTF_TRANSFER_COMMITTED, 0),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => break,
            Err(now) => h = now,
        }
    }
    // Relaxed: the entry is committed to us; the receiver cannot change it now.
    let at = Pfn(e.frame.load(Ordering::Relaxed) as u64);
    let old = {
        let _l = rd.mm_lock.lock().unwrap_or_else(|e| e.into_inner());
        rd.set_p2m(at, page)
    };
    match old {
        Ok(old) => caller.machine.alloc.free(&[old]),
        Err(_) => {
            // A bad frame in a committed entry: complete it unchanged, drop the page.
            caller.machine.alloc.free(&[page]);
            // Release: pairs with the receiver's Acquire load in transfer_state/end_transfer.
            e.header
                .fetch_or(entry_header(GTF_TRANSFER_COMPLETED, 0), Ordering::Release);
            return GrantStatus::GeneralError;
        }
    }
    // Release: the p2m update and remap happen-before the receiver sees completed.
    e.header
        .fetch_or(entry_header(GTF_TRANSFER_COMPLETED, 0), Ordering::Release);
    GrantStatus::Okay
}

impl DomainHandle {
    /// `GNTTABOP_transfer` over a batch of Xen ABI ops (page flip); each op gets its own status.
    pub fn grant_transfer_abi(&self, ops: &mut [GnttabTransfer]) -> Result<()> {
        self.run_transfers(ops, |d, c, op| {
            let s = transfer_one(d, c, Pfn(op.mfn), op.domid, GrantRef(op.gref));
            op.status = s.raw();
            s
        })
    }

    /// The seam's page transfer.
    pub fn grant_transfer(&self, ops: &mut [TransferOp]) -> Result<()> {
        self.run_transfers(ops, |d, c, op| {
            op.status = transfer_one(d, c, op.pfn, op.domid, op.gref);
            op.status
        })
    }

    fn run_transfers<T>(
        &self,
        ops: &mut [T],
        mut each: impl FnMut(&Arc<Domain>, &mut DomCache, &mut T) -> GrantStatus,
    ) -> Result<()> {
        self.before(Hypercall::GrantTransfer);
        let _h = xenoprof::hypercall(Class::GRANT_TABLE);
        let mut cache = DomCache::new();
        let mut failed = 0;
        for op in ops.iter_mut() {
            failed += (each(&self.d, &mut cache, op) != GrantStatus::Okay) as u64;
        }
        let st = &self.d.machine.stats;
        Stats::add(&st.transfer_ops, ops.len() as u64);
        Stats::add(&st.transfer_failed, failed);
        Ok(())
    }
}
