//! `GNTTABOP_copy`: batched copies between grant references and the caller's own pages.
//!
//! Per op, as Xen: unknown flags or offset + len beyond the page → `bad_copy_arg`; a local side
//! whose domid is not `DOMID_SELF` → `permission_denied`; unknown domain → `bad_domain`; gref
//! beyond the table → `bad_gntref`; entry not a permit-access grant → `general_error`; granted
//! to another domain, or a read-only grant used as destination → `permission_denied` (Xen says
//! general_error for the latter two; the issue asks for permission_denied); a local pfn outside
//! the caller's reservation → `bad_page`; a local destination page borrowed → `general_error`.
//! As Xen's `gnttab_copy_buf` does, domain lookups are cached across consecutive ops on the same
//! domain, and a grant (or local page) stays claimed while consecutive ops reuse it.

use std::sync::Arc;

use xenoprof::Class;

use super::{acquire, release};
use crate::domain::{Domain, DomainHandle};
use crate::hook::Hypercall;
use crate::machine::Stats;
use hypervisor::abi::*;
use hypervisor::error::Result;
use hypervisor::ops::{CopyOp, CopyPtr};
use hypervisor::types::{DOMID_SELF, DomId, GrantRef, Mfn, PAGE_SIZE, Pfn};

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

/// One side of a copy, decoded: a grant of some domain, or a page of the caller.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ptr {
    Gref {
        domid: DomId,
        gref: GrantRef,
        offset: u16,
    },
    Local {
        pfn: Pfn,
        offset: u16,
    },
}

impl Ptr {
    fn offset(&self) -> usize {
        match self {
            Ptr::Gref { offset, .. } | Ptr::Local { offset, .. } => *offset as usize,
        }
    }

    /// Decodes a side of Xen's `gnttab_copy`: a gref if `is_gref`, else the caller's gmfn
    /// (which must say `DOMID_SELF`).
    fn from_abi(p: &GnttabCopyPtr, is_gref: bool) -> Result<Ptr, GrantStatus> {
        if is_gref {
            Ok(Ptr::Gref {
                domid: p.domid,
                gref: p.as_gref(),
                offset: p.offset,
            })
        } else if p.domid != DOMID_SELF {
            Err(GrantStatus::PermissionDenied)
        } else {
            Ok(Ptr::Local {
                pfn: Pfn(p.u),
                offset: p.offset,
            })
        }
    }

    /// Decodes a side of a neutral [`CopyOp`]: a local address must lie in the caller's view.
    fn from_seam(caller: &Domain, p: &CopyPtr) -> Result<Ptr, GrantStatus> {
        match *p {
            CopyPtr::Gref {
                domid,
                gref,
                offset,
            } => Ok(Ptr::Gref {
                domid,
                gref,
                offset,
            }),
            CopyPtr::Local(a) => {
                let (pfn, offset) = caller.view.pfn_of(a.0).ok_or(GrantStatus::BadVirtAddr)?;
                Ok(Ptr::Local {
                    pfn,
                    offset: offset as u16,
                })
            }
        }
    }
}

/// One claimed side of a copy. Its domain is the side's cached domain (gref) or the caller.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Claim {
    gref: Option<GrantRef>,
    pfn: Pfn,
    mfn: Mfn,
    write: bool,
}

/// One side (source or destination) of the ops in a batch: the domain last looked up and the
/// claim last made. A claim stays held while consecutive ops reuse it (same gref, or same local
/// page, same direction), as Xen's `gnttab_copy_buf` does: a packet split into several ops on
/// one grant pins it once. Everything is released before the hypercall returns.
struct Side {
    cache: DomCache,
    held: Option<Claim>,
}

impl Side {
    fn new() -> Self {
        Self {
            cache: DomCache::new(),
            held: None,
        }
    }

    fn release_held(&mut self, caller: &Domain) {
        let Some(h) = self.held.take() else { return };
        match h.gref {
            Some(g) => {
                if let Some(d) = &self.cache.cached {
                    release(d, g, h.write);
                }
            }
            None if h.write => caller.view.write_end(h.pfn),
            None => {}
        }
    }

    fn claim(&mut self, caller: &Arc<Domain>, ptr: Ptr, write: bool) -> Result<Claim, GrantStatus> {
        if let Some(h) = self.held {
            let same = h.write == write
                && match ptr {
                    Ptr::Gref { domid, gref, .. } => {
                        let id = if domid == DOMID_SELF {
                            caller.id
                        } else {
                            domid
                        };
                        h.gref == Some(gref)
                            && self.cache.cached.as_ref().is_some_and(|d| d.id == id)
                    }
                    Ptr::Local { pfn, .. } => h.gref.is_none() && h.pfn == pfn,
                };
            if same {
                return Ok(h);
            }
            self.release_held(caller);
        }
        let c = match ptr {
            Ptr::Gref { domid, gref, .. } => {
                let dom = self
                    .cache
                    .get(caller, domid)
                    .ok_or(GrantStatus::BadDomain)?;
                let pfn = acquire(dom, gref, caller.id, write)?;
                let Some(mfn) = dom.p2m(pfn) else {
                    release(dom, gref, write);
                    return Err(GrantStatus::GeneralError);
                };
                Claim {
                    gref: Some(gref),
                    pfn,
                    mfn,
                    write,
                }
            }
            Ptr::Local { pfn, .. } => {
                caller.p2m(pfn).ok_or(GrantStatus::BadPage)?;
                if write && !caller.view.write_begin(pfn) {
                    return Err(GrantStatus::GeneralError);
                }
                // Read after write_begin: a transfer of this pfn cannot start while we write it.
                let Some(mfn) = caller.p2m(pfn) else {
                    if write {
                        caller.view.write_end(pfn);
                    }
                    return Err(GrantStatus::BadPage);
                };
                Claim {
                    gref: None,
                    pfn,
                    mfn,
                    write,
                }
            }
        };
        self.held = Some(c);
        Ok(c)
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook run while both sides of a copy are claimed (entries pinned).
    pub(crate) static MID_COPY_HOOK: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Copies `len` bytes between two decoded sides, claiming each (the checks every op shares).
fn copy_one(
    caller: &Arc<Domain>,
    src_side: &mut Side,
    dst_side: &mut Side,
    src: Ptr,
    dst: Ptr,
    len: usize,
) -> GrantStatus {
    if src.offset() + len > PAGE_SIZE || dst.offset() + len > PAGE_SIZE {
        return GrantStatus::BadCopyArg;
    }
    let s = match src_side.claim(caller, src, false) {
        Ok(c) => c,
        Err(s) => return s,
    };
    let d = match dst_side.claim(caller, dst, true) {
        Ok(c) => c,
        Err(s) => return s,
    };
    #[cfg(test)]
    MID_COPY_HOOK.with(|h| {
        if let Some(f) = h.borrow_mut().as_mut() {
            f();
        }
    });
    let _c = xenoprof::scope(Class::COPY);
    let ok = caller
        .machine
        .mem
        .copy(d.mfn, dst.offset(), s.mfn, src.offset(), len);
    if ok {
        GrantStatus::Okay
    } else {
        GrantStatus::GeneralError
    }
}

/// Decodes and checks one ABI op, then copies.
fn copy_abi(caller: &Arc<Domain>, src: &mut Side, dst: &mut Side, op: &GnttabCopy) -> GrantStatus {
    if op.flags & !(GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF) != 0 {
        return GrantStatus::BadCopyArg;
    }
    let len = op.len as usize;
    if op.source.offset as usize + len > PAGE_SIZE || op.dest.offset as usize + len > PAGE_SIZE {
        return GrantStatus::BadCopyArg;
    }
    let s = Ptr::from_abi(&op.source, op.flags & GNTCOPY_SOURCE_GREF != 0);
    let d = Ptr::from_abi(&op.dest, op.flags & GNTCOPY_DEST_GREF != 0);
    match (s, d) {
        (Ok(s), Ok(d)) => copy_one(caller, src, dst, s, d, len),
        (Err(e), _) | (_, Err(e)) => e,
    }
}

/// Decodes and checks one neutral op, then copies. As gntdev requires, at least one side is a
/// grant.
fn copy_seam(caller: &Arc<Domain>, src: &mut Side, dst: &mut Side, op: &CopyOp) -> GrantStatus {
    let len = op.len as usize;
    if op.source.page_offset() + len > PAGE_SIZE || op.dest.page_offset() + len > PAGE_SIZE {
        return GrantStatus::BadCopyArg;
    }
    if matches!((op.source, op.dest), (CopyPtr::Local(_), CopyPtr::Local(_))) {
        return GrantStatus::BadCopyArg;
    }
    let s = Ptr::from_seam(caller, &op.source);
    let d = Ptr::from_seam(caller, &op.dest);
    match (s, d) {
        (Ok(s), Ok(d)) => copy_one(caller, src, dst, s, d, len),
        (Err(e), _) | (_, Err(e)) => e,
    }
}

impl DomainHandle {
    /// `GNTTABOP_copy` over a batch of Xen ABI ops: each op gets its own status. Never fails as
    /// a whole in the embedded model (the `Result` is for platforms where the hypercall itself
    /// can fail).
    pub fn grant_copy_abi(&self, ops: &mut [GnttabCopy]) -> Result<()> {
        self.run_copies(ops, |d, s, t, op| {
            let st = copy_abi(d, s, t, op);
            op.status = st.raw();
            (st, op.len)
        })
    }

    /// The seam's grant copy: neutral ops whose local side is an address in this domain's view
    /// (`GNTST_bad_virt_addr` if it is not), at least one side a grant.
    pub fn grant_copy(&self, ops: &mut [CopyOp]) -> Result<()> {
        self.run_copies(ops, |d, s, t, op| {
            op.status = copy_seam(d, s, t, op);
            (op.status, op.len)
        })
    }

    /// One hypercall: runs `each` over the ops with shared claims, then releases and counts.
    fn run_copies<T>(
        &self,
        ops: &mut [T],
        mut each: impl FnMut(&Arc<Domain>, &mut Side, &mut Side, &mut T) -> (GrantStatus, u16),
    ) -> Result<()> {
        self.before(Hypercall::GrantCopy);
        let _h = xenoprof::hypercall(Class::GRANT_TABLE);
        let (mut src, mut dst) = (Side::new(), Side::new());
        let (mut failed, mut bytes) = (0u64, 0u64);
        for op in ops.iter_mut() {
            let (s, len) = each(&self.d, &mut src, &mut dst, op);
            if s == GrantStatus::Okay {
                bytes += len as u64;
            } else {
                failed += 1;
            }
        }
        dst.release_held(&self.d);
        src.release_held(&self.d);
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
    use hypervisor::error::Error;

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
        d0.grant_copy_abi(&mut ops).unwrap();
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

#[cfg(test)]
mod reuse_tests {
    use super::*;
    use crate::Hypervisor;
    use hypervisor::error::Error;

    #[test]
    fn consecutive_ops_on_one_grant_keep_it_pinned_and_release_it_at_the_end() {
        let xen = Hypervisor::new(512).unwrap();
        let d0 = xen.create_domain_with_id(0, 16).unwrap();
        let g = xen.create_domain_with_id(1, 16).unwrap();
        let (a, b) = (d0.alloc_page().unwrap(), d0.alloc_page().unwrap());
        d0.write(a, 0, &[1; 4096]).unwrap();
        d0.write(b, 0, &[2; 4096]).unwrap();
        let dst = g.alloc_page().unwrap();
        let r = g.grant_access(0, dst, false).unwrap();
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        {
            let (g, seen) = (g.clone(), seen.clone());
            MID_COPY_HOOK.with(|h| {
                *h.borrow_mut() = Some(Box::new(move || seen.borrow_mut().push(g.end_access(r))))
            });
        }
        // A 3-chunk packet into one grant, from two source pages (as a split rx copy).
        let mut ops = [
            GnttabCopy::new(
                GnttabCopyPtr::local(a, 0),
                GnttabCopyPtr::gref(1, r, 0),
                1000,
            ),
            GnttabCopy::new(
                GnttabCopyPtr::local(a, 1000),
                GnttabCopyPtr::gref(1, r, 1000),
                1000,
            ),
            GnttabCopy::new(
                GnttabCopyPtr::local(b, 0),
                GnttabCopyPtr::gref(1, r, 2000),
                1000,
            ),
        ];
        d0.grant_copy_abi(&mut ops).unwrap();
        MID_COPY_HOOK.with(|h| *h.borrow_mut() = None);
        assert!(ops.iter().all(|o| o.status() == GrantStatus::Okay));
        assert_eq!(*seen.borrow(), vec![Err(Error::GrantInUse(r)); 3]);
        assert_eq!(g.end_access(r), Ok(()));
        let mut got = [0u8; 3000];
        g.read(dst, 0, &mut got).unwrap();
        assert!(got[..2000].iter().all(|x| *x == 1) && got[2000..].iter().all(|x| *x == 2));
        // The local pages are released too: they can be borrowed again.
        assert!(d0.borrow_page(a).is_ok() && d0.borrow_page(b).is_ok());
    }
}
