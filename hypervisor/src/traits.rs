//! The hypervisor interface netback and netfront are written against (DESIGN decision 2).
//!
//! Small and Xen-shaped, so a real-Xen implementation (`/dev/xen/gntdev`, `/dev/xen/evtchn`,
//! xenbus) can sit behind the same traits later. The embedded model implements them all on
//! [`DomainHandle`] (calls act on behalf of that domain) and [`XsConnection`].

use std::ptr::NonNull;
use std::time::Duration;

use crate::abi::{GnttabCopy, GnttabTransfer};
use crate::domain::DomainHandle;
use crate::error::Result;
use crate::evtchn::PendingPorts;
use crate::grant::TransferState;
use crate::grant::map::GrantMapping;
use crate::types::{DomId, GrantRef, Mfn, Pfn, Port};
use crate::xenstore::{WatchEvent, XsConnection, XsPerm};

/// A domain's own memory, through its own view.
pub trait GuestMemory {
    /// The calling domain.
    fn domid(&self) -> DomId;
    /// Allocates a page of the reservation.
    fn alloc_page(&self) -> Result<Pfn>;
    /// Returns a page to the reservation.
    fn free_page(&self, pfn: Pfn) -> Result<()>;
    /// Copies bytes out of a page (bounds-checked).
    fn read(&self, pfn: Pfn, offset: usize, buf: &mut [u8]) -> Result<()>;
    /// Copies bytes into a page (bounds-checked; refused while the page is borrowed).
    fn write(&self, pfn: Pfn, offset: usize, data: &[u8]) -> Result<()>;
    /// Lends the page to `f` as `&[u8]`; refused while the page can be written by anyone, and
    /// holds every writer off while `f` runs.
    fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(&[u8]) -> R) -> Result<R>;
    /// The page's address, for atomics-only users (shared rings); valid while the handle lives.
    fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>>;
}

/// The guest side of grant table v1 (entries in the granting domain's own memory).
pub trait GrantTable {
    /// Grants `remote` access to `pfn`.
    fn grant_access(&self, remote: DomId, pfn: Pfn, readonly: bool) -> Result<GrantRef>;
    /// Revokes a grant; fails while the hypervisor reads or writes through it.
    fn end_access(&self, gref: GrantRef) -> Result<()>;
    /// Accepts a page transfer from `remote` into `pfn`.
    fn grant_accept_transfer(&self, remote: DomId, pfn: Pfn) -> Result<GrantRef>;
    /// Where a transfer into `gref` stands.
    fn transfer_state(&self, gref: GrantRef) -> Result<TransferState>;
    /// Ends an accept entry; the new frame if a transfer completed.
    fn end_transfer(&self, gref: GrantRef) -> Result<Option<Mfn>>;
}

/// A foreign page mapped into the caller's address space; unmapped on drop.
pub trait ForeignMapping: Send + Sync {
    /// The page: 4096 bytes, page-aligned, valid until drop.
    fn as_ptr(&self) -> NonNull<u8>;
}

/// Grant hypercalls (the backend's side).
pub trait GrantOps {
    /// The mapping type.
    type Mapping: ForeignMapping;
    /// `GNTTABOP_copy`, batched; per-op status in each op.
    fn grant_copy(&self, ops: &mut [GnttabCopy]) -> Result<()>;
    /// `GNTTABOP_map_grant_ref`.
    fn map_grant_ref(&self, remote: DomId, gref: GrantRef, readonly: bool)
    -> Result<Self::Mapping>;
    /// `GNTTABOP_transfer`, batched; per-op status in each op.
    fn grant_transfer(&self, ops: &mut [GnttabTransfer]) -> Result<()>;
}

/// Event channels.
pub trait EventChannel {
    /// A port `remote` may bind to.
    fn alloc_unbound(&self, remote: DomId) -> Result<Port>;
    /// Binds to `remote`'s unbound port.
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port>;
    /// Signals the remote end.
    fn notify(&self, port: Port) -> Result<()>;
    /// Masks a port.
    fn mask(&self, port: Port) -> Result<()>;
    /// Unmasks a port (re-raising a pending event).
    fn unmask(&self, port: Port) -> Result<()>;
    /// Whether the port is pending.
    fn is_pending(&self, port: Port) -> Result<bool>;
    /// Clears the pending bit; returns whether it was set.
    fn clear_pending(&self, port: Port) -> Result<bool>;
    /// Closes a port.
    fn close(&self, port: Port) -> Result<()>;
    /// Blocks until some unmasked port is pending (or the timeout); returns and clears them.
    fn wait(&self, timeout: Option<Duration>) -> Result<PendingPorts>;
    /// Counts an event that found no work (lateeoi spirit).
    fn report_spurious(&self, port: Port);
}

/// A xenstore connection.
pub trait XenStore {
    /// Reads a node.
    fn read(&self, path: &str) -> Result<String>;
    /// Writes a node (creating parents).
    fn write(&self, path: &str, value: &str) -> Result<()>;
    /// Creates a node.
    fn mkdir(&self, path: &str) -> Result<()>;
    /// Removes a subtree.
    fn rm(&self, path: &str) -> Result<()>;
    /// Lists children.
    fn directory(&self, path: &str) -> Result<Vec<String>>;
    /// Sets permissions (owner or dom0).
    fn set_permissions(&self, path: &str, perms: &[XsPerm]) -> Result<()>;
    /// Watches a subtree.
    fn watch(&self, path: &str, token: &str) -> Result<()>;
    /// Removes a watch.
    fn unwatch(&self, path: &str, token: &str) -> Result<()>;
    /// Next watch event, or None on timeout.
    fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>>;
}

/// Everything a domain can do: what netback and netfront are generic over.
pub trait XenDomain:
    GuestMemory + GrantTable + GrantOps + EventChannel + Clone + Send + Sync + 'static
{
    /// The xenstore connection type.
    type Store: XenStore + Send + Sync;
    /// Opens a xenstore connection for this domain.
    fn xenstore(&self) -> Self::Store;
}

impl GuestMemory for DomainHandle {
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
    fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>> {
        DomainHandle::page_ptr(self, pfn)
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

impl ForeignMapping for GrantMapping {
    fn as_ptr(&self) -> NonNull<u8> {
        GrantMapping::as_ptr(self)
    }
}

impl GrantOps for DomainHandle {
    type Mapping = GrantMapping;
    fn grant_copy(&self, ops: &mut [GnttabCopy]) -> Result<()> {
        DomainHandle::grant_copy(self, ops)
    }
    fn map_grant_ref(&self, remote: DomId, gref: GrantRef, readonly: bool) -> Result<GrantMapping> {
        DomainHandle::map_grant_ref(self, remote, gref, readonly)
    }
    fn grant_transfer(&self, ops: &mut [GnttabTransfer]) -> Result<()> {
        DomainHandle::grant_transfer(self, ops)
    }
}

impl EventChannel for DomainHandle {
    fn alloc_unbound(&self, remote: DomId) -> Result<Port> {
        DomainHandle::alloc_unbound(self, remote)
    }
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port> {
        DomainHandle::bind_interdomain(self, remote, remote_port)
    }
    fn notify(&self, port: Port) -> Result<()> {
        DomainHandle::notify(self, port)
    }
    fn mask(&self, port: Port) -> Result<()> {
        DomainHandle::mask(self, port)
    }
    fn unmask(&self, port: Port) -> Result<()> {
        DomainHandle::unmask(self, port)
    }
    fn is_pending(&self, port: Port) -> Result<bool> {
        DomainHandle::is_pending(self, port)
    }
    fn clear_pending(&self, port: Port) -> Result<bool> {
        DomainHandle::clear_pending(self, port)
    }
    fn close(&self, port: Port) -> Result<()> {
        DomainHandle::close(self, port)
    }
    fn wait(&self, timeout: Option<Duration>) -> Result<PendingPorts> {
        DomainHandle::wait(self, timeout)
    }
    fn report_spurious(&self, port: Port) {
        DomainHandle::report_spurious(self, port)
    }
}

impl XenStore for XsConnection {
    fn read(&self, path: &str) -> Result<String> {
        XsConnection::read(self, path)
    }
    fn write(&self, path: &str, value: &str) -> Result<()> {
        XsConnection::write(self, path, value)
    }
    fn mkdir(&self, path: &str) -> Result<()> {
        XsConnection::mkdir(self, path)
    }
    fn rm(&self, path: &str) -> Result<()> {
        XsConnection::rm(self, path)
    }
    fn directory(&self, path: &str) -> Result<Vec<String>> {
        XsConnection::directory(self, path)
    }
    fn set_permissions(&self, path: &str, perms: &[XsPerm]) -> Result<()> {
        XsConnection::set_permissions(self, path, perms)
    }
    fn watch(&self, path: &str, token: &str) -> Result<()> {
        XsConnection::watch(self, path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<()> {
        XsConnection::unwatch(self, path, token)
    }
    fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        XsConnection::read_watch(self, timeout)
    }
}

impl XenDomain for DomainHandle {
    type Store = XsConnection;
    fn xenstore(&self) -> XsConnection {
        DomainHandle::xenstore(self)
    }
}
