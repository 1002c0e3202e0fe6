//! A test's hook into a domain's hypercall path: what a guest on another vCPU does at an exact
//! moment of a backend's work (a grant revoked between two batched copies of one pass, a ring
//! slot rewritten after the backend read it), without wrapping the domain's handle.
//!
//! A domain has at most one hook, set once ([`DomainHandle::on_hypercall`]) and kept for the
//! domain's life. Before each of the domain's grant copies, grant transfers and page
//! allocations the model runs it on the calling thread, outside every lock and profiling scope
//! of the call. With no hook set the call pays one acquire load (a `OnceLock` read): the
//! benchmark's grant copies go through here.

use std::sync::Arc;

use crate::domain::DomainHandle;

/// The calls a hook runs before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hypercall {
    /// `GNTTABOP_copy`: [`DomainHandle::grant_copy`] or [`DomainHandle::grant_copy_abi`], once
    /// per call (a batch), not per op.
    GrantCopy,
    /// `GNTTABOP_transfer`: [`DomainHandle::grant_transfer`] or
    /// [`DomainHandle::grant_transfer_abi`], once per call.
    GrantTransfer,
    /// A page taken from the domain's reservation: [`DomainHandle::alloc_page`] (a backend's
    /// frame pool grows through it while it builds a pass's copies).
    AllocPage,
}

/// A hook: called with the call about to run. It must not make the hooked calls of its own
/// domain (that would run it again from inside itself); it may act as any other domain.
pub type HypercallHook = Arc<dyn Fn(Hypercall) + Send + Sync>;

impl DomainHandle {
    /// Sets this domain's hook, run before each of its grant copies, grant transfers and page
    /// allocations (see [`Hypercall`]) on the calling thread, for as long as the domain lives.
    /// A domain has one hook at most: if one is set already, `hook` is handed back.
    ///
    /// The hook lives in the domain: a hook holding a handle of its own domain keeps the domain
    /// alive after the hypervisor drops it (hold other domains' handles only).
    pub fn on_hypercall(&self, hook: HypercallHook) -> Result<(), HypercallHook> {
        self.d.hook.set(hook)
    }

    /// Runs the hook, if any, before `call`.
    #[inline]
    pub(crate) fn before(&self, call: Hypercall) {
        if let Some(hook) = self.d.hook.get() {
            hook(call);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::Hypervisor;
    use hypervisor::{CopyOp, CopyPtr, GrantStatus, TransferOp};

    #[test]
    fn the_hook_runs_before_each_hooked_call_and_only_those() {
        let xen = Hypervisor::new(512).unwrap();
        let d0 = xen.create_domain(32).unwrap();
        let g = xen.create_domain(32).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        d0.on_hypercall(Arc::new(move |c| s.lock().unwrap().push(c)))
            .unwrap_or_else(|_| panic!("the first hook is taken"));
        let src = d0.alloc_page().unwrap();
        let dst = g.alloc_page().unwrap();
        let gref = g.grant_access(d0.domid(), dst, false).unwrap();
        let mut ops = [CopyOp::new(
            CopyPtr::Local(d0.local_addr(src).unwrap()),
            CopyPtr::gref(g.domid(), gref, 0),
            8,
        )];
        d0.grant_copy(&mut ops).unwrap();
        d0.grant_copy(&mut ops).unwrap();
        let give = d0.alloc_page().unwrap();
        let acc = g.alloc_page().unwrap();
        let tgref = g.grant_accept_transfer(d0.domid(), acc).unwrap();
        let mut t = [TransferOp::new(give, g.domid(), tgref)];
        d0.grant_transfer(&mut t).unwrap();
        // Not hooked: the guest's own calls, reads and writes, maps.
        g.alloc_page().unwrap();
        d0.write(src, 0, b"x").unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                Hypercall::AllocPage,
                Hypercall::GrantCopy,
                Hypercall::GrantCopy,
                Hypercall::AllocPage,
                Hypercall::GrantTransfer
            ]
        );
        assert!(
            d0.on_hypercall(Arc::new(|_| {})).is_err(),
            "a second hook is handed back"
        );
    }

    #[test]
    fn a_revocation_in_the_hook_lands_before_the_copy() {
        let xen = Hypervisor::new(512).unwrap();
        let d0 = xen.create_domain(32).unwrap();
        let g = xen.create_domain(32).unwrap();
        let dst = g.alloc_page().unwrap();
        let gref = g.grant_access(d0.domid(), dst, false).unwrap();
        let guest = g.clone();
        d0.on_hypercall(Arc::new(move |c| {
            if c == Hypercall::GrantCopy {
                let _ = guest.end_access(gref);
            }
        }))
        .unwrap_or_else(|_| panic!("the first hook is taken"));
        let src = d0.alloc_page().unwrap();
        let mut ops = [CopyOp::new(
            CopyPtr::Local(d0.local_addr(src).unwrap()),
            CopyPtr::gref(g.domid(), gref, 0),
            8,
        )];
        d0.grant_copy(&mut ops).unwrap();
        assert_ne!(ops[0].status, GrantStatus::Okay, "the grant was gone");
    }
}
