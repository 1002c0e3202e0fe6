//! The crate's one error type: what the seam's calls return, whichever hypervisor is behind
//! them.

use std::fmt;

use crate::abi::GrantStatus;
use crate::types::{DomId, GrantRef, Pfn, Port};

/// Everything that can go wrong at the hypervisor boundary. Per-op grant failures are reported
/// as [`GrantStatus`] in the op itself, not as an `Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A host system call failed.
    Os {
        /// The call.
        op: &'static str,
        /// `errno`.
        errno: i32,
    },
    /// Not enough free machine frames.
    OutOfMemory {
        /// Frames asked for.
        requested: u64,
        /// Frames free.
        free: u64,
    },
    /// A machine or domain size of zero or beyond what can be addressed.
    BadSize {
        /// Pages asked for.
        pages: u64,
    },
    /// No domain with this id (never created, or destroyed).
    NoSuchDomain(DomId),
    /// The id is taken.
    DomainExists(DomId),
    /// Domain ids run `0..MAX_DOMAINS`.
    BadDomId(DomId),
    /// Every domain id is in use.
    NoFreeDomId,
    /// A pfn outside the domain's reservation.
    PfnOutOfRange {
        /// The pfn.
        pfn: Pfn,
        /// The reservation size.
        pages: u64,
    },
    /// offset + len beyond the page.
    OutOfBounds {
        /// Byte offset.
        offset: usize,
        /// Length.
        len: usize,
    },
    /// The reservation has no free page left.
    ReservationExhausted {
        /// The domain.
        domid: DomId,
        /// Its reservation.
        pages: u64,
    },
    /// `free_page` on a page that is not allocated.
    PageNotAllocated(Pfn),
    /// The page is lent out as `&[u8]` (a borrow: `GuestMemory::with_page`); writers must wait for it.
    PageBorrowed(Pfn),
    /// The page is granted writable, accepting a transfer, or being moved; it cannot be
    /// borrowed (or re-granted for a transfer) now.
    PageBusy(Pfn),
    /// No free grant reference.
    GrantTableFull {
        /// Table size.
        entries: usize,
    },
    /// The reference is reserved, out of range, or not granted by this domain through this API.
    BadGrantRef(GrantRef),
    /// end access refused: the hypervisor has `reading`/`writing` set (copy or mapping in flight).
    GrantInUse(GrantRef),
    /// A transfer into this entry is committed but not yet completed.
    TransferInProgress(GrantRef),
    /// A grant hypercall failed with this status (map).
    Grant(GrantStatus),
    /// The event-channel port is not allocated, or not of the kind the call needs.
    BadPort(Port),
    /// Every port is in use.
    NoFreePort,
    /// The remote port is not unbound and waiting for this domain.
    PortNotBindable {
        /// Remote domain.
        remote: DomId,
        /// Remote port.
        port: Port,
    },
    /// A xenstore path that does not exist.
    XsNoEntry(String),
    /// A malformed xenstore path.
    XsInvalidPath(String),
    /// The domain lacks the permission for this xenstore operation.
    XsPermissionDenied {
        /// Caller.
        domid: DomId,
        /// Path.
        path: String,
        /// `read` or `write`.
        access: &'static str,
    },
    /// The hypervisor interface cannot do this (e.g. page transfer from Linux userspace).
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// The page is pinned as a shared ring: only atomics may touch it until the ring is gone.
    PageIsRing(Pfn),
    /// No watch with this path and token on the connection.
    XsNoWatch {
        /// Path.
        path: String,
        /// Token.
        token: String,
    },
    /// Real Xen's raw layer failed in a way the variants above do not name (a device missing,
    /// an ioctl refused, xenstored answering an error or breaking the protocol). Its message
    /// says what was wrong and what to do.
    Xen(crate::xen::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os { op, errno } => write!(
                f,
                "{op} failed: {}; check memory limits (ulimit -v, vm.max_map_count) and memfd support",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Error::OutOfMemory { requested, free } => write!(
                f,
                "out of machine memory: {requested} frames requested, {free} free; \
                 create the machine with more frames or destroy a domain"
            ),
            Error::BadSize { pages } => write!(
                f,
                "bad size of {pages} pages: must be at least 1 and fit the address space"
            ),
            Error::NoSuchDomain(d) => write!(
                f,
                "no domain {d}: it was never created or has been destroyed; check the domid"
            ),
            Error::DomainExists(d) => {
                write!(
                    f,
                    "domain {d} already exists; destroy it first or pick another id"
                )
            }
            Error::BadDomId(d) => write!(
                f,
                "domid {d} is out of range: ids run 0..{}",
                crate::types::MAX_DOMAINS
            ),
            Error::NoFreeDomId => write!(f, "every domain id is in use; destroy a domain first"),
            Error::PfnOutOfRange { pfn, pages } => write!(
                f,
                "{pfn} is outside the domain's reservation of {pages} pages; use a pfn from alloc_page"
            ),
            Error::OutOfBounds { offset, len } => write!(
                f,
                "offset {offset} + length {len} runs past the 4096-byte page; split the access at the page boundary"
            ),
            Error::ReservationExhausted { domid, pages } => write!(
                f,
                "domain {domid} has allocated all {pages} pages of its reservation; free pages or create it larger"
            ),
            Error::PageNotAllocated(p) => {
                write!(
                    f,
                    "{p} is not allocated; free only pages that alloc_page returned, once"
                )
            }
            Error::PageBorrowed(p) => write!(
                f,
                "{p} is borrowed for reading; drop the PageBorrow before writing or granting it writable"
            ),
            Error::PageBusy(p) => write!(
                f,
                "{p} is granted writable, accepting a transfer, or being moved; end those grants first"
            ),
            Error::GrantTableFull { entries } => write!(
                f,
                "grant table full ({entries} entries); end access to grants no longer needed"
            ),
            Error::BadGrantRef(g) => write!(
                f,
                "{g} is not a grant this domain made (reserved, out of range, or already ended)"
            ),
            Error::GrantInUse(g) => write!(
                f,
                "{g} is still in use by the hypervisor (reading/writing set: a copy or mapping is in flight); \
                 retry after the backend unmaps or finishes"
            ),
            Error::TransferInProgress(g) => write!(
                f,
                "a transfer into {g} is committed but not completed; retry shortly"
            ),
            Error::Grant(s) => write!(f, "grant operation failed with {s}"),
            Error::BadPort(p) => write!(
                f,
                "{p} is not an allocated event channel of the right kind; check alloc_unbound/bind_interdomain"
            ),
            Error::NoFreePort => write!(
                f,
                "all {} event-channel ports are in use; close ports no longer needed",
                crate::types::NR_EVENT_CHANNELS
            ),
            Error::PortNotBindable { remote, port } => write!(
                f,
                "domain {remote} {port} is not an unbound port allocated for this domain; \
                 the remote must call alloc_unbound with our domid first"
            ),
            Error::XsNoEntry(p) => write!(f, "xenstore: {p} does not exist"),
            Error::XsInvalidPath(p) => write!(
                f,
                "xenstore: {p:?} is not a valid path (absolute, no empty components, [A-Za-z0-9_@-] only)"
            ),
            Error::XsPermissionDenied {
                domid,
                path,
                access,
            } => write!(
                f,
                "xenstore: domain {domid} may not {access} {path}: a guest writes only under \
                 /local/domain/{domid} and nodes whose permissions grant it access; ask dom0 to set permissions"
            ),
            Error::Unsupported { what, hint } => write!(f, "{what} is not supported here: {hint}"),
            Error::PageIsRing(p) => write!(
                f,
                "{p} is a shared ring page: only the ring may touch it; drop the ring first"
            ),
            Error::XsNoWatch { path, token } => {
                write!(
                    f,
                    "xenstore: no watch on {path} with token {token:?} on this connection"
                )
            }
            Error::Xen(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Xen(e) => e.source(),
            _ => None,
        }
    }
}

impl From<crate::xen::Error> for Error {
    fn from(e: crate::xen::Error) -> Self {
        Error::Xen(e)
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
