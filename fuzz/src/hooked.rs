//! dom0 with a hook in its grant hypercalls: the guest's grant changes *in the middle* of a
//! backend pass, between two batched grant copies (or transfers), as a guest on another vCPU
//! could make them.
//!
//! [`HookedDom0`] delegates everything to the embedded model's [`DomainHandle`]; before each
//! `grant_copy` or `grant_transfer` it runs the revocations scheduled for that call of the pass.
//! A revoked page that the backend may no longer write gets its fresh sentinel pattern at once,
//! inside the pass, so a later write through the revoked grant shows at the end.
//!
//! The only `unsafe` of the fuzz crate is here: `GuestMemory` is an `unsafe trait`, and the
//! wrapper vouches for exactly what the model vouches for by delegating every call unchanged.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use xen_model::{DomainHandle, EvtchnHandle, GrantMapping, XsConnection};
use hypervisor::{
    CopyOp, DomId, GrantOps, GrantRef, GuestMemory, LocalAddr, Pfn, Result, TransferOp, XenDomain,
};

use crate::hostile::GrantKind;

/// A revocation the guest makes during a pass, before the backend's `at_call`-th grant
/// hypercall of that pass (counting from 1).
#[derive(Debug, Clone)]
pub struct MidPass {
    /// Which grant-copy or transfer call of the pass it precedes.
    pub at_call: u32,
    /// The guest.
    pub guest: DomainHandle,
    /// Index of the grant in the guest's list.
    pub grant: usize,
    /// The grant.
    pub gref: GrantRef,
    /// Its kind.
    pub kind: GrantKind,
    /// The page and the pattern to lay once revoked, if the backend may then no longer write
    /// the page.
    pub refill: Option<(Pfn, Vec<u8>)>,
    /// Set once done: whether the revocation succeeded.
    pub ok: bool,
}

/// Revocations scheduled for the next pass and those done.
#[derive(Debug, Default)]
pub struct Hook {
    /// Scheduled.
    pub pending: Vec<MidPass>,
    /// Grant hypercalls made so far this pass.
    pub calls: u32,
    /// Done (successfully or not), in order.
    pub done: Vec<MidPass>,
}

impl Hook {
    fn before_call(&mut self) {
        self.calls += 1;
        let calls = self.calls;
        let (now, later): (Vec<MidPass>, Vec<MidPass>) =
            self.pending.drain(..).partition(|m| m.at_call <= calls);
        self.pending = later;
        for mut m in now {
            m.ok = match m.kind {
                GrantKind::Accept => m.guest.end_transfer(m.gref).is_ok(),
                _ => m.guest.end_access(m.gref).is_ok(),
            };
            if m.ok
                && let Some((pfn, p)) = &m.refill
            {
                m.guest
                    .write(*pfn, 0, p)
                    .expect("the guest writes its own revoked page");
            }
            self.done.push(m);
        }
    }
}

/// dom0, with [`Hook`] in front of its grant hypercalls.
#[derive(Debug, Clone)]
pub struct HookedDom0 {
    /// The model's dom0.
    pub inner: DomainHandle,
    /// The hook, shared with the harness.
    pub hook: Arc<Mutex<Hook>>,
}

impl HookedDom0 {
    /// Wraps `dom0`.
    pub fn new(inner: DomainHandle) -> Self {
        Self {
            inner,
            hook: Arc::default(),
        }
    }

    /// The hook, locked.
    pub fn hook(&self) -> std::sync::MutexGuard<'_, Hook> {
        self.hook.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// SAFETY: every method delegates unchanged to `DomainHandle`, whose `GuestMemory`
// implementation vouches for `page_ptr` and `pin_ring` (see `xen_model`); the
// wrapper adds no access to memory of its own, and `inner` keeps the domain alive as long as
// any clone of the wrapper lives.
#[allow(unsafe_code)]
unsafe impl GuestMemory for HookedDom0 {
    fn domid(&self) -> DomId {
        self.inner.domid()
    }
    fn alloc_page(&self) -> Result<Pfn> {
        self.inner.alloc_page()
    }
    fn free_page(&self, pfn: Pfn) -> Result<()> {
        self.inner.free_page(pfn)
    }
    fn read(&self, pfn: Pfn, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.inner.read(pfn, offset, buf)
    }
    fn write(&self, pfn: Pfn, offset: usize, data: &[u8]) -> Result<()> {
        self.inner.write(pfn, offset, data)
    }
    fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.inner.with_page(pfn, f)
    }
    fn local_addr(&self, pfn: Pfn) -> Result<LocalAddr> {
        self.inner.local_addr(pfn)
    }
    fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>> {
        self.inner.page_ptr(pfn)
    }
    fn pin_ring(&self, pfn: Pfn) -> Result<()> {
        self.inner.pin_ring(pfn)
    }
    fn unpin_ring(&self, pfn: Pfn) {
        self.inner.unpin_ring(pfn)
    }
}

impl GrantOps for HookedDom0 {
    type Mapping = GrantMapping;
    fn grant_copy(&self, ops: &mut [CopyOp]) -> Result<()> {
        self.hook().before_call();
        GrantOps::grant_copy(&self.inner, ops)
    }
    fn map_grant_ref(&self, remote: DomId, gref: GrantRef) -> Result<GrantMapping> {
        GrantOps::map_grant_ref(&self.inner, remote, gref)
    }
    fn can_transfer(&self) -> bool {
        GrantOps::can_transfer(&self.inner)
    }
    fn grant_transfer(&self, ops: &mut [TransferOp]) -> Result<()> {
        self.hook().before_call();
        GrantOps::grant_transfer(&self.inner, ops)
    }
}

impl XenDomain for HookedDom0 {
    type Store = XsConnection;
    type Evtchn = EvtchnHandle;
    fn xenstore(&self) -> Result<XsConnection> {
        XenDomain::xenstore(&self.inner)
    }
    fn open_evtchn(&self) -> Result<EvtchnHandle> {
        XenDomain::open_evtchn(&self.inner)
    }
}
