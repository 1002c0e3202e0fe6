//! The double's grant tables: per domain, entries in a mutex-guarded table (the guest's side,
//! [`GrantTable`]), and the backend's copies and maps through them ([`GrantOps`]).
//!
//! An entry is "in use" while a copy or a mapping holds it (Xen's `GTF_reading`/`GTF_writing`):
//! ending it is refused with [`Error::GrantInUse`] meanwhile. Per-op copy statuses follow Xen:
//! `bad_copy_arg` for a side crossing its page (or two local sides), `bad_virt_addr` for a local
//! address outside the caller's allocated pages, `bad_domain`, `bad_gntref` beyond the table,
//! `general_error` for an entry that is not an access grant (or a page that cannot be touched
//! now: pinned as a ring, borrowed), `permission_denied` for a grant to another domain or a
//! read-only grant used as destination. Transfers are not offered (`can_transfer` is false).

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::memory;
use super::{Dom, DomState, Machine};
use crate::abi::GrantStatus;
use crate::error::{Error, Result};
use crate::ops::{CopyOp, CopyPtr};
use crate::traits::{GrantOps, GrantTable};
use crate::types::{
    DOMID_SELF, DomId, GNTTAB_NR_RESERVED_ENTRIES, GrantRef, Mfn, NR_GRANT_ENTRIES, PAGE_SIZE, Pfn,
    TransferState,
};

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `grant_access`.
    Access {
        remote: DomId,
        pfn: Pfn,
        readonly: bool,
    },
    /// `grant_accept_transfer` (never completed: the double cannot transfer).
    Accept { pfn: Pfn },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    /// Copies and mappings holding the entry.
    in_use: u32,
}

#[derive(Debug)]
struct Inner {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
}

/// One domain's grant table.
#[derive(Debug)]
pub(super) struct Table {
    inner: Mutex<Inner>,
}

impl Table {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                slots: vec![None; NR_GRANT_ENTRIES],
                free: (GNTTAB_NR_RESERVED_ENTRIES..NR_GRANT_ENTRIES as u32)
                    .rev()
                    .collect(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries made and not ended.
    pub fn in_use(&self) -> usize {
        self.lock().slots.iter().flatten().count()
    }

    /// The hypervisor's side: holds `gref` for `caller` to read (or write) through it; returns
    /// the granted page.
    fn claim(&self, gref: GrantRef, caller: DomId, write: bool) -> Result<Pfn, GrantStatus> {
        let mut t = self.lock();
        let slot = t
            .slots
            .get_mut(gref.0 as usize)
            .ok_or(GrantStatus::BadGntref)?;
        let Some(e) = slot.as_mut() else {
            return Err(GrantStatus::GeneralError);
        };
        let Kind::Access {
            remote,
            pfn,
            readonly,
        } = e.kind
        else {
            return Err(GrantStatus::GeneralError);
        };
        if remote != caller || (write && readonly) {
            return Err(GrantStatus::PermissionDenied);
        }
        e.in_use += 1;
        Ok(pfn)
    }

    /// Ends a [`Table::claim`].
    fn release(&self, gref: GrantRef) {
        if let Some(Some(e)) = self.lock().slots.get_mut(gref.0 as usize) {
            e.in_use = e.in_use.saturating_sub(1);
        }
    }
}

impl Dom {
    /// Makes an entry for `pfn` (noted in the arena, so the page cannot be freed meanwhile).
    fn make_entry(&self, pfn: Pfn, kind: Kind, writable: bool) -> Result<GrantRef> {
        let mut t = self.d.grants.lock();
        let r = t.free.pop().ok_or(Error::GrantTableFull {
            entries: NR_GRANT_ENTRIES,
        })?;
        if let Err(e) = self.d.mem.add_grant(pfn, writable) {
            t.free.push(r);
            return Err(e);
        }
        t.slots[r as usize] = Some(Entry { kind, in_use: 0 });
        Ok(GrantRef(r))
    }

    /// Removes an entry the `pick` closure accepts; returns its kind.
    fn end_entry(&self, gref: GrantRef, pick: impl Fn(&Kind) -> bool) -> Result<Kind> {
        let mut t = self.d.grants.lock();
        let slot = t
            .slots
            .get_mut(gref.0 as usize)
            .filter(|s| s.is_some_and(|e| pick(&e.kind)))
            .ok_or(Error::BadGrantRef(gref))?;
        if slot.is_some_and(|e| e.in_use > 0) {
            return Err(Error::GrantInUse(gref));
        }
        let kind = slot
            .take()
            .map(|e| e.kind)
            .ok_or(Error::BadGrantRef(gref))?;
        let (pfn, writable) = match kind {
            Kind::Access { pfn, readonly, .. } => (pfn, !readonly),
            Kind::Accept { pfn } => (pfn, true),
        };
        self.d.mem.remove_grant(pfn, writable);
        t.free.push(gref.0);
        Ok(kind)
    }
}

impl GrantTable for Dom {
    fn grant_access(&self, remote: DomId, pfn: Pfn, readonly: bool) -> Result<GrantRef> {
        let kind = Kind::Access {
            remote,
            pfn,
            readonly,
        };
        self.make_entry(pfn, kind, !readonly)
    }
    fn end_access(&self, gref: GrantRef) -> Result<()> {
        self.end_entry(gref, |k| matches!(k, Kind::Access { .. }))
            .map(drop)
    }
    fn grant_accept_transfer(&self, _remote: DomId, pfn: Pfn) -> Result<GrantRef> {
        self.make_entry(pfn, Kind::Accept { pfn }, true)
    }
    fn transfer_state(&self, gref: GrantRef) -> Result<TransferState> {
        match self.d.grants.lock().slots.get(gref.0 as usize) {
            Some(Some(Entry {
                kind: Kind::Accept { .. },
                ..
            })) => Ok(TransferState::Pending),
            _ => Err(Error::BadGrantRef(gref)),
        }
    }
    fn end_transfer(&self, gref: GrantRef) -> Result<Option<Mfn>> {
        self.end_entry(gref, |k| matches!(k, Kind::Accept { .. }))?;
        Ok(None)
    }
}

/// One side of a copy, resolved to a page; a grant side holds its entry until dropped.
struct Side {
    dom: Arc<DomState>,
    pfn: Pfn,
    offset: usize,
    gref: Option<GrantRef>,
}

impl Drop for Side {
    fn drop(&mut self) {
        if let Some(g) = self.gref {
            self.dom.grants.release(g);
        }
    }
}

impl Dom {
    fn side(&self, p: CopyPtr, write: bool) -> Result<Side, GrantStatus> {
        match p {
            CopyPtr::Local(a) => {
                let (pfn, offset) = self.d.mem.pfn_of(a).ok_or(GrantStatus::BadVirtAddr)?;
                Ok(Side {
                    dom: self.d.clone(),
                    pfn,
                    offset,
                    gref: None,
                })
            }
            CopyPtr::Gref {
                domid,
                gref,
                offset,
            } => {
                let id = if domid == DOMID_SELF {
                    self.d.domid
                } else {
                    domid
                };
                let dom = self.m.find(id).ok_or(GrantStatus::BadDomain)?;
                let pfn = dom.grants.claim(gref, self.d.domid, write)?;
                Ok(Side {
                    dom,
                    pfn,
                    offset: offset as usize,
                    gref: Some(gref),
                })
            }
        }
    }

    fn copy_one(&self, op: &CopyOp) -> GrantStatus {
        let len = op.len as usize;
        if op.source.page_offset() + len > PAGE_SIZE || op.dest.page_offset() + len > PAGE_SIZE {
            return GrantStatus::BadCopyArg;
        }
        if matches!((op.source, op.dest), (CopyPtr::Local(_), CopyPtr::Local(_))) {
            return GrantStatus::BadCopyArg;
        }
        let src = match self.side(op.source, false) {
            Ok(s) => s,
            Err(st) => return st,
        };
        let dst = match self.side(op.dest, true) {
            Ok(d) => d,
            Err(st) => return st,
        };
        memory::copy(
            (&src.dom.mem, src.pfn, src.offset),
            (&dst.dom.mem, dst.pfn, dst.offset),
            len,
        )
    }
}

impl GrantOps for Dom {
    type Mapping = Mapping;

    fn grant_copy(&self, ops: &mut [CopyOp]) -> Result<()> {
        for op in ops.iter_mut() {
            op.status = self.copy_one(op);
        }
        Ok(())
    }

    fn map_grant_ref(&self, remote: DomId, gref: GrantRef) -> Result<Mapping> {
        let dom = self
            .m
            .find(remote)
            .ok_or(Error::Grant(GrantStatus::BadDomain))?;
        let pfn = dom
            .grants
            .claim(gref, self.d.domid, true)
            .map_err(Error::Grant)?;
        if let Err(e) = dom.mem.pin(pfn) {
            dom.grants.release(gref);
            return Err(e);
        }
        // Relaxed: a count for leak checks; it publishes nothing (pairs with nothing).
        self.m.mappings.fetch_add(1, Ordering::Relaxed);
        Ok(Mapping {
            dom,
            gref,
            pfn,
            m: self.m.clone(),
        })
    }

    /// The double cannot move pages between domains: no flipping.
    fn can_transfer(&self) -> bool {
        false
    }
}

/// A grant mapped for a shared ring: the granter's page itself, pinned as a ring and its entry
/// held until the mapping drops.
pub struct Mapping {
    dom: Arc<DomState>,
    gref: GrantRef,
    pfn: Pfn,
    m: Arc<Machine>,
}

impl Mapping {
    /// The granter's page (pinned and kept allocated by this mapping).
    pub(super) fn ptr(&self) -> NonNull<u8> {
        self.dom.mem.ptr(self.pfn)
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("granter", &self.dom.domid)
            .field("gref", &self.gref)
            .finish()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        self.dom.mem.unpin(self.pfn);
        self.dom.grants.release(self.gref);
        // Relaxed: as the increment in map_grant_ref.
        self.m.mappings.fetch_sub(1, Ordering::Relaxed);
    }
}
