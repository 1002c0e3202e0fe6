//! The hypervisor seam netback and netfront are written against (DESIGN decision 2).
//!
//! Small and Xen-shaped, in the vocabulary of the interfaces a Linux dom0 offers userspace:
//! grant copies whose local side is an address ([`GrantOps::grant_copy`], gntdev's
//! `IOCTL_GNTDEV_GRANT_COPY`), foreign pages mapped for shared rings
//! ([`GrantOps::map_grant_ref`]), event-channel *handles* that own their ports and receive only
//! their own events ([`EventChannel`], one `/dev/xen/evtchn` descriptor), and xenstore
//! connections ([`XenStore`]). Everything here speaks the crate's neutral types
//! ([`crate::Error`], [`crate::WatchEvent`], [`crate::CopyOp`], ports as `Vec<Port>`), never an
//! implementation's. Two implementations exist: [`crate::embedded`] (the model) and `xen`
//! (Linux dom0 userspace on real Xen); tests add a third, minimal one to show nothing leaks.

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ops::{CopyOp, TransferOp};
use crate::types::{DomId, GrantRef, LocalAddr, Mfn, Pfn, Port, TransferState, WatchEvent, XsPerm};

/// A domain's own memory, in pages it allocates from its reservation.
///
/// # Safety
///
/// Implementers vouch for two things the audited ring code ([`crate::ringpage`]) relies on:
/// - [`GuestMemory::page_ptr`] returns, for an allocated page, an address valid for 4096 bytes,
///   page-aligned, readable and writable through atomics, and mapped at that same address for
///   as long as any clone of `self` lives;
/// - between a successful [`GuestMemory::pin_ring`] and the matching
///   [`GuestMemory::unpin_ring`], nothing the implementation does or lets safe code do touches
///   the page non-atomically: `read`, `write`, `with_page` and `free_page` refuse it, and grant
///   copies naming it (as a local address, or through a grant of it) fail.
#[allow(unsafe_code)] // the contract ringpage relies on: implementers vouch for it
pub unsafe trait GuestMemory {
    /// The calling domain.
    fn domid(&self) -> DomId;
    /// Allocates a page of the reservation.
    fn alloc_page(&self) -> Result<Pfn>;
    /// Returns a page to the reservation (refused while the page is pinned for a ring).
    fn free_page(&self, pfn: Pfn) -> Result<()>;
    /// Copies bytes out of a page (bounds-checked).
    fn read(&self, pfn: Pfn, offset: usize, buf: &mut [u8]) -> Result<()>;
    /// Copies bytes into a page (bounds-checked; refused while the page is borrowed).
    fn write(&self, pfn: Pfn, offset: usize, data: &[u8]) -> Result<()>;
    /// Lends the page to `f` as `&[u8]`; refused while the page can be written by anyone, and
    /// holds every writer off while `f` runs.
    fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(&[u8]) -> R) -> Result<R>;
    /// The page's address as a number, for the local side of a grant copy.
    fn local_addr(&self, pfn: Pfn) -> Result<LocalAddr>;
    /// The page's address, for ring memory (see the trait's safety section).
    fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>>;
    /// Marks the page as a shared ring: from now on it is accessed through atomics only.
    fn pin_ring(&self, pfn: Pfn) -> Result<()>;
    /// Ends [`GuestMemory::pin_ring`].
    fn unpin_ring(&self, pfn: Pfn);
}

/// The guest side of grant table v1: entries in the granting domain's own memory.
pub trait GrantTable {
    /// Grants `remote` access to `pfn`.
    fn grant_access(&self, remote: DomId, pfn: Pfn, readonly: bool) -> Result<GrantRef>;
    /// Revokes a grant; [`Error::GrantInUse`] while the hypervisor reads or writes through it.
    fn end_access(&self, gref: GrantRef) -> Result<()>;
    /// Accepts a page transfer from `remote` into `pfn`.
    fn grant_accept_transfer(&self, remote: DomId, pfn: Pfn) -> Result<GrantRef>;
    /// Where a transfer into `gref` stands.
    fn transfer_state(&self, gref: GrantRef) -> Result<TransferState>;
    /// Ends an accept entry; the new frame if a transfer completed.
    fn end_transfer(&self, gref: GrantRef) -> Result<Option<Mfn>>;
}

/// A foreign page mapped readable and writable into the caller's address space, for a shared
/// ring; unmapped on drop.
///
/// The seam has no read-only mapping: a ring needs to write its indices, and a type that could
/// hold either would let [`crate::ringpage::mapped_ring`] turn a read-only page into a writable
/// ring (a fault on the first write, or worse). An implementation that also offers read-only
/// mappings gives them a type of their own that does not implement this trait.
///
/// # Safety
///
/// Implementers vouch that [`ForeignMapping::as_ptr`] is 4096 bytes, page-aligned, mapped
/// readable *and writable* until drop, and that while it is mapped nothing the implementation
/// does or lets safe code do in this process touches the page non-atomically (mappings exist
/// for shared rings).
#[allow(unsafe_code)] // the contract ringpage relies on: implementers vouch for it
pub unsafe trait ForeignMapping: Send {
    /// The page.
    fn as_ptr(&self) -> NonNull<u8>;
}

/// Grant hypercalls (the backend's side).
pub trait GrantOps {
    /// The mapping type.
    type Mapping: ForeignMapping;
    /// Copies in one batch (`GNTTABOP_copy`); each op gets its own status. An `Err` is the call
    /// itself failing: then no op's status can be trusted.
    fn grant_copy(&self, ops: &mut [CopyOp]) -> Result<()>;
    /// Maps `remote`'s grant readable and writable (`GNTTABOP_map_grant_ref` without
    /// `GNTMAP_readonly`), for a shared ring. A read-only grant cannot be mapped this way
    /// (`Error::Grant(PermissionDenied)`).
    fn map_grant_ref(&self, remote: DomId, gref: GrantRef) -> Result<Self::Mapping>;
    /// Whether this hypervisor can move page ownership between domains (page flipping).
    fn can_transfer(&self) -> bool {
        false
    }
    /// Page transfers in one batch (`GNTTABOP_transfer`); each op gets its own status.
    fn grant_transfer(&self, ops: &mut [TransferOp]) -> Result<()> {
        let _ = ops;
        Err(Error::Unsupported {
            what: "page transfer (GNTTABOP_transfer)",
            hint: "this hypervisor interface cannot flip pages; use copy mode",
        })
    }
}

/// An event-channel handle: the ports bound or allocated through it are delivered to it alone
/// (a `xenevtchn_handle`, one `/dev/xen/evtchn` descriptor). Two drivers in one domain each
/// open their own handle and never see each other's events. Closing the handle (drop) closes
/// its ports.
///
/// Delivery masks a port: after [`EventChannel::wait`] reports it, further events on it stay
/// pending until [`EventChannel::unmask`] (the late end-of-interrupt), which redelivers a
/// pending one.
pub trait EventChannel: Send + Sync + std::fmt::Debug {
    /// A port `remote` may bind to (the frontend's side).
    fn alloc_unbound(&self, remote: DomId) -> Result<Port>;
    /// Binds a new local port to `remote`'s unbound port (the backend's side).
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port>;
    /// Closes a port of this handle.
    fn unbind(&self, port: Port) -> Result<()>;
    /// Signals the other end of a port of this handle.
    fn notify(&self, port: Port) -> Result<()>;
    /// Blocks until a port of this handle is pending, or `timeout` passes (`None`: no limit;
    /// zero: just look), and appends the delivered ports to `pending`; each stays masked until
    /// unmasked.
    fn wait(&self, timeout: Option<Duration>, pending: &mut Vec<Port>) -> Result<()>;
    /// Unmasks ports (the end of interrupt); a port with an event pending is delivered again.
    fn unmask(&self, ports: &[Port]) -> Result<()>;
    /// A descriptor that polls readable while a port is deliverable, for a loop that also
    /// waits on other descriptors; after it does, [`EventChannel::wait`] with a zero timeout
    /// collects the ports. `None` if the implementation has none.
    fn as_fd(&self) -> Option<BorrowedFd<'_>>;
}

/// A xenstore connection.
pub trait XenStore: Send + std::fmt::Debug {
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
    /// Watches a subtree; the watch fires once at once, then on every change at or below.
    fn watch(&self, path: &str, token: &str) -> Result<()>;
    /// Removes a watch.
    fn unwatch(&self, path: &str, token: &str) -> Result<()>;
    /// The next watch event, waiting up to `timeout` (`None`: forever; zero: just look).
    fn read_watch(&self, timeout: Option<Duration>) -> Result<Option<WatchEvent>>;
    /// A descriptor that polls readable while a watch event may be waiting (`None` if the
    /// implementation has none).
    fn as_fd(&self) -> Option<BorrowedFd<'_>>;
    /// Gives every later request a deadline (`None`: wait as long as it takes): a request
    /// unanswered by then fails with [`Error::XsTimeout`], and the connection is best
    /// replaced. Implementations whose requests cannot stall may ignore it.
    fn set_request_timeout(&self, timeout: Option<Duration>) {
        let _ = timeout;
    }
}

/// A domain as a driver sees it: its memory, and how it opens xenstore connections and event
/// channel handles. netback is generic over `XenDomain + GrantOps`, netfront over
/// `XenDomain + GrantTable`.
pub trait XenDomain: GuestMemory + Clone + Send + Sync + 'static {
    /// The xenstore connection type.
    type Store: XenStore;
    /// The event-channel handle type.
    type Evtchn: EventChannel;
    /// Opens a xenstore connection for this domain.
    fn xenstore(&self) -> Result<Self::Store>;
    /// Opens an event-channel handle for this domain.
    fn open_evtchn(&self) -> Result<Self::Evtchn>;
}

/// What netback needs of its domain: memory, grant copies and maps, xenstore, event channels.
pub trait BackendDomain: XenDomain + GrantOps {}
impl<T: XenDomain + GrantOps> BackendDomain for T {}

/// What netfront needs of its domain: memory, grant entries, xenstore, event channels.
pub trait FrontendDomain: XenDomain + GrantTable {}
impl<T: XenDomain + GrantTable> FrontendDomain for T {}
