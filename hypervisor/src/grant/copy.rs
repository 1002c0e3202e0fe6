//! `GNTTABOP_copy`: batched copies between grant references and the caller's own pages.
//!
//! Per op, as Xen: unknown flags or offset + len beyond the page → `bad_copy_arg`; a local side
//! whose domid is not `DOMID_SELF` → `permission_denied`; unknown domain → `bad_domain`; gref
//! beyond the table → `bad_gntref`; entry not a permit-access grant → `general_error`; granted
//! to another domain, or a read-only grant used as destination → `permission_denied` (Xen says
//! general_error for the latter two; the issue asks for permission_denied); a local pfn outside
//! the caller's reservation → `bad_page`; a local destination page borrowed → `general_error`.
//! Domain lookups are cached across consecutive ops on the same domain, as Xen's
//! `gnttab_copy_buf` does.

use std::sync::Arc;

use xenoprof::Class;

use super::{acquire, release};
use crate::abi::*;
use crate::domain::{Domain, DomainHandle};
use crate::error::Result;
use crate::machine::Stats;
use crate::types::{DOMID_SELF, DomId, GrantRef, Mfn, PAGE_SIZE, Pfn};

/// The last domain looked up for one side of the batch.
pub(crate) struct DomCache {
    cached: Option<Arc<Domain>>,
}

impl DomCache {
    pub fn new() -> Self {
        Self { cached: None }
    }

    /// The domain `domid` (`DOMID_SELF` = caller), from the cache or the domain table.
    pub fn get(&mut self, caller: &Arc<Domain>, domid: DomId) -> Option<&Arc<Domain>> {
        let id = if domid == DOMID_SELF {
            caller.id
        } else {
            domid
        };
        if self.cached.as_ref().is_none_or(|d| d.id != id) {
            self.cached = Some(if id == caller.id {
                caller.clone()
            } else {
                caller.machine.find_domain(id)?
            });
        }
        self.cached.as_ref()
    }
}

/// One claimed side of a copy.
struct Claim<'a> {
    dom: &'a Domain,
    gref: Option<GrantRef>,
    pfn: Pfn,
    mfn: Mfn,
    write: bool,
}

impl Claim<'_> {
    fn release(self) {
        match self.gref {
            Some(g) => release(self.dom, g, self.write),
            None if self.write => self.dom.view.write_end(self.pfn),
            None => {}
        }
    }
}

fn claim<'a>(
    caller: &'a Arc<Domain>,
    cache: &'a mut DomCache,
    ptr: &GnttabCopyPtr,
    is_gref: bool,
    write: bool,
) -> Result<Claim<'a>, GrantStatus> {
    if is_gref {
        let dom = cache.get(caller, ptr.domid).ok_or(GrantStatus::BadDomain)?;
        let gref = ptr.as_gref();
        let pfn = acquire(dom, gref, caller.id, write)?;
        let Some(mfn) = dom.p2m(pfn) else {
            release(dom, gref, write);
            return Err(GrantStatus::GeneralError);
        };
        Ok(Claim {
            dom,
            gref: Some(gref),
            pfn,
            mfn,
            write,
        })
    } else {
        let pfn = Pfn(ptr.u);
        let mfn = caller.p2m(pfn).ok_or(GrantStatus::BadPage)?;
        if write && !caller.view.write_begin(pfn) {
            return Err(GrantStatus::GeneralError);
        }
        // Re-read after write_begin: a transfer of this pfn cannot start now.
        let mfn = if write {
            caller.p2m(pfn).unwrap_or(mfn)
        } else {
            mfn
        };
        Ok(Claim {
            dom: caller,
            gref: None,
            pfn,
            mfn,
            write,
        })
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook run while both sides of a copy are claimed (entries pinned).
    pub(crate) static MID_COPY_HOOK: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

fn copy_one(
    caller: &Arc<Domain>,
    src_cache: &mut DomCache,
    dst_cache: &mut DomCache,
    op: &GnttabCopy,
) -> GrantStatus {
    if op.flags & !(GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF) != 0 {
        return GrantStatus::BadCopyArg;
    }
    let len = op.len as usize;
    if op.source.offset as usize + len > PAGE_SIZE || op.dest.offset as usize + len > PAGE_SIZE {
        return GrantStatus::BadCopyArg;
    }
    let src_gref = op.flags & GNTCOPY_SOURCE_GREF != 0;
    let dst_gref = op.flags & GNTCOPY_DEST_GREF != 0;
    if (!src_gref && op.source.domid != DOMID_SELF) || (!dst_gref && op.dest.domid != DOMID_SELF) {
        return GrantStatus::PermissionDenied;
    }
    let src = match claim(caller, src_cache, &op.source, src_gref, false) {
        Ok(c) => c,
        Err(s) => return s,
    };
    let dst = match claim(caller, dst_cache, &op.dest, dst_gref, true) {
        Ok(c) => c,
        Err(s) => {
            src.release();
            return s;
        }
    };
    #[cfg(test)]
    MID_COPY_HOOK.with(|h| {
        if let Some(f) = h.borrow_mut().as_mut() {
            f();
        }
    });
    let ok = {
        let _c = xenoprof::scope(Class::COPY);
        caller.machine.mem.copy(
            dst.mfn,
            op.dest.offset as usize,
            src.mfn,
            op.source.offset as usize,
            len,
        )
    };
    dst.release();
    src.release();
    if ok {
        GrantStatus::Okay
    } else {
        GrantStatus::GeneralError
    }
}

impl DomainHandle {
    /// `GNTTABOP_copy` over a batch: each op gets its own status. Never fails as a whole in the
    /// embedded model (the `Result` is for platforms where the hypercall itself can fail).
    pub fn grant_copy(&self, ops: &mut [GnttabCopy]) -> Result<()> {
        let _h = xenoprof::hypercall(Class::GRANT_TABLE);
        let (mut sc, mut dc) = (DomCache::new(), DomCache::new());
        let (mut failed, mut bytes) = (0u64, 0u64);
        for op in ops.iter_mut() {
            let s = copy_one(&self.d, &mut sc, &mut dc, op);
            op.status = s.raw();
            if s == GrantStatus::Okay {
                bytes += op.len as u64;
            } else {
                failed += 1;
            }
        }
        let st = &self.d.machine.stats;
        Stats::add(&st.copy_calls, 1);
        Stats::add(&st.copy_ops, ops.len() as u64);
        Stats::add(&st.copy_failed, failed);
        Stats::add(&st.copy_bytes, bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Hypervisor;
    use crate::error::Error;

    #[test]
    fn end_access_is_refused_while_a_copy_holds_the_entry() {
        let xen = Hypervisor::new(512).unwrap();
        let d0 = xen.create_domain_with_id(0, 16).unwrap();
        let g = xen.create_domain_with_id(1, 16).unwrap();
        let (src, dst) = (d0.alloc_page().unwrap(), g.alloc_page().unwrap());
        let rw = g.grant_access(0, dst, false).unwrap();
        let ro_page = g.alloc_page().unwrap();
        let ro = g.grant_access(0, ro_page, true).unwrap();
        // Op 0 holds `rw` (writing), op 1 holds `ro` (reading): the guest tries to end each
        // while its op is mid-copy.
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        {
            let (g, seen) = (g.clone(), seen.clone());
            MID_COPY_HOOK.with(|h| {
                *h.borrow_mut() = Some(Box::new(move || {
                    let n = seen.borrow().len();
                    let r = g.end_access(if n == 0 { rw } else { ro });
                    seen.borrow_mut().push(r);
                }))
            });
        }
        let mut ops = [
            GnttabCopy::new(
                GnttabCopyPtr::local(src, 0),
                GnttabCopyPtr::gref(1, rw, 0),
                10,
            ),
            GnttabCopy::new(
                GnttabCopyPtr::gref(1, ro, 0),
                GnttabCopyPtr::local(src, 0),
                10,
            ),
        ];
        d0.grant_copy(&mut ops).unwrap();
        MID_COPY_HOOK.with(|h| *h.borrow_mut() = None);
        assert!(ops.iter().all(|o| o.status() == GrantStatus::Okay));
        assert_eq!(
            *seen.borrow(),
            vec![Err(Error::GrantInUse(rw)), Err(Error::GrantInUse(ro))]
        );
        // Released afterwards: both end now.
        assert_eq!(g.end_access(rw), Ok(()));
        assert_eq!(g.end_access(ro), Ok(()));
    }
}
