//! The model behind the seam: [`DomainHandle`] is a domain, [`EvtchnHandle`] an event-channel
//! handle, [`XsConnection`] a xenstore connection, [`GrantMapping`] a mapped grant.

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::time::Duration;

use crate::{DomainHandle, EvtchnHandle, GrantMapping, XsConnection};
use hypervisor::error::Result;
use hypervisor::ops::{CopyOp, TransferOp};
use hypervisor::traits::{
    EventChannel, ForeignMapping, GrantOps, GrantTable, GuestMemory, XenDomain, XenStore,
};
use hypervisor::types::{
    DomId, GrantRef, LocalAddr, Mfn, Pfn, Port, TransferState, WatchEvent, XsPerm,
};

// SAFETY: `page_ptr` is the page's address in the domain's view, a mapping that lives as long
// as any handle of the domain (the handle holds an `Arc` of it) and keeps each pfn at a fixed
// address (a transfer swaps the frame behind it with MAP_FIXED). `pin_ring` marks the page in
// the view's state word (reads, writes, borrows, frees, local copies and transfers refuse it)
// and its frame atomic-only in machine memory (raw copies through the direct map refuse it)
// until `unpin_ring`.
#[allow(unsafe_code)]
unsafe impl GuestMemory for DomainHandle {
    fn domid(&self) -> DomId {
        DomainHandle::domid(self)
    }
    fn alloc_page(&self) -> Result<Pfn> {
        DomainHandle::alloc_page(self)
    }
    fn free_page(&self, pfn: Pfn) -> Result<()> {
        DomainHandle::free_page(self, pfn)
    }
    fn read(&self, pfn: Pfn, offset: usize, buf: &mut [u8]) -> Result<()> {
        DomainHandle::read(self, pfn, offset, buf)
    }
    fn write(&self, pfn: Pfn, offset: usize, data: &[u8]) -> Result<()> {
        DomainHandle::write(self, pfn, offset, data)
    }
    fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        DomainHandle::with_page(self, pfn, f)
    }
    fn local_addr(&self, pfn: Pfn) -> Result<LocalAddr> {
        DomainHandle::local_addr(self, pfn)
    }
    fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>> {
        DomainHandle::page_ptr(self, pfn)
    }
    fn pin_ring(&self, pfn: Pfn) -> Result<()> {
        DomainHandle::pin_ring(self, pfn)
    }
    fn unpin_ring(&self, pfn: Pfn) {
        DomainHandle::unpin_ring(self, pfn)
    }
}

impl GrantTable for DomainHandle {
    fn grant_access(&self, remote: DomId, pfn: Pfn, readonly: bool) -> Result<GrantRef> {
        DomainHandle::grant_access(self, remote, pfn, readonly)
    }
    fn end_access(&self, gref: GrantRef) -> Result<()> {
        DomainHandle::end_access(self, gref)
    }
    fn grant_accept_transfer(&self, remote: DomId, pfn: Pfn) -> Result<GrantRef> {
        DomainHandle::grant_accept_transfer(self, remote, pfn)
    }
    fn transfer_state(&self, gref: GrantRef) -> Result<TransferState> {
        DomainHandle::transfer_state(self, gref)
    }
    fn end_transfer(&self, gref: GrantRef) -> Result<Option<Mfn>> {
        DomainHandle::end_transfer(self, gref)
    }
}

// SAFETY: `GrantMapping::as_ptr` is a page of the caller's map area, mapped with MAP_FIXED,
// readable and writable (`map_grant_ref` maps with write access only; read-only mappings are
// the separate `ReadOnlyMapping`, which does not implement this trait), until the mapping drops; while it lives the frame is atomic-only in machine memory and the
// granter's page is pinned as a ring in its view, so nothing else in the model touches it
// non-atomically.
#[allow(unsafe_code)]
unsafe impl ForeignMapping for GrantMapping {
    fn as_ptr(&self) -> NonNull<u8> {
        GrantMapping::as_ptr(self)
    }
}

impl GrantOps for DomainHandle {
    type Mapping = GrantMapping;
    fn grant_copy(&self, ops: &mut [CopyOp]) -> Result<()> {
        DomainHandle::grant_copy(self, ops)
    }
    fn map_grant_ref(&self, remote: DomId, gref: GrantRef) -> Result<GrantMapping> {
        DomainHandle::map_grant_ref(self, remote, gref)
    }
    fn can_transfer(&self) -> bool {
        true
    }
    fn grant_transfer(&self, ops: &mut [TransferOp]) -> Result<()> {
        DomainHandle::grant_transfer(self, ops)
    }
}

impl EventChannel for EvtchnHandle {
    fn alloc_unbound(&self, remote: DomId) -> Result<Port> {
        EvtchnHandle::alloc_unbound(self, remote)
    }
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port> {
        EvtchnHandle::bind_interdomain(self, remote, remote_port)
    }
    fn unbind(&self, port: Port) -> Result<()> {
        EvtchnHandle::unbind(self, port)
    }
    fn notify(&self, port: Port) -> Result<()> {
        EvtchnHandle::notify(self, port)
    }
    fn wait(&self, timeout: Option<Duration>, pending: &mut Vec<Port>) -> Result<()> {
        EvtchnHandle::wait(self, timeout, pending)
    }
    fn unmask(&self, ports: &[Port]) -> Result<()> {
        EvtchnHandle::unmask(self, ports)
    }
    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        EvtchnHandle::as_fd(self)
    }
}

impl XenStore for XsConnection {
    fn read(&self, path: &str) -> Result<String> {
        self.gate(self.request_timeout())?;
        XsConnection::read(self, path)
    }
    fn write(&self, path: &str, value: &str) -> Result<()> {
        self.gate(self.request_timeout())?;
        XsConnection::write(self, path, value)
    }
    fn mkdir(&self, path: &str) -> Result<()> {
        self.gate(self.request_timeout())?;
        XsConnection::mkdir(self, path)
    }
    fn rm(&self, path: &str) -> Result<()> {
        self.gate(self.request_timeout())?;
        XsConnection::rm(self, path)
    }
    fn directory(&self, path: &str) -> Result<Vec<String>> {
        self.gate(self.request_timeout())?;
        XsConnection::directory(self, path)
    }
    fn set_permissions(&self, path: &str, perms: &[XsPerm]) -> Result<()> {
        self.gate(self.request_timeout())?;
        XsConnection::set_permissions(self, path, perms)
    }
    fn watch(&self, path: &str, token: &str) -> Result<()> {
        self.gate(self.request_timeout())?;
        XsConnection::watch(self, path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        self.gate(self.request_timeout())?;
        XsConnection::unwatch(self, path, token)
    }
    fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        // A dead xenstored breaks the connection for its watch events too.
        self.gate(Some(Duration::ZERO)).or_else(|e| match e {
            hypervisor::Error::XsTimeout { .. } => Ok(()),
            e => Err(e),
        })?;
        XsConnection::read_watch(self, timeout)
    }
    fn set_request_timeout(&self, timeout: Option<Duration>) {
        XsConnection::set_request_timeout(self, timeout)
    }
    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        XsConnection::as_fd(self)
    }
}

impl XenDomain for DomainHandle {
    type Store = XsConnection;
    type Evtchn = EvtchnHandle;
    fn xenstore(&self) -> Result<XsConnection> {
        Ok(DomainHandle::xenstore(self))
    }
    fn open_evtchn(&self) -> Result<EvtchnHandle> {
        Ok(DomainHandle::open_evtchn(self))
    }
}
