//! The seam's one error type: what its calls return, whichever hypervisor is behind them.
//!
//! Every message says what was wrong and what to do. Where the advice depends on the caller
//! (which system call failed, and why it was made), the variant carries the advice chosen where
//! the error is raised (`hint`), not a guess made here.

use std::io;

use crate::abi::GrantStatus;
use crate::types::{DomId, GrantRef, MAX_DOMAINS, NR_EVENT_CHANNELS, Pfn, Port};

/// Everything that can go wrong at the hypervisor boundary. Per-op grant failures are reported
/// as [`GrantStatus`] in the op itself, not as an `Error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host system call failed.
    #[error("{op} failed: {}; {hint}", io::Error::from_raw_os_error(*errno))]
    Os {
        /// The call.
        op: &'static str,
        /// `errno`.
        errno: i32,
        /// What to do, chosen by whoever made the call.
        hint: &'static str,
    },
    /// A device node or service the implementation needs is missing or cannot be opened.
    #[error("{what}: {hint}")]
    Unavailable {
        /// What is missing, e.g. "no /dev/xen/gntdev".
        what: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// Not enough free machine frames.
    #[error(
        "out of machine memory: {requested} frames requested, {free} free; create the machine \
         with more frames or destroy a domain"
    )]
    OutOfMemory {
        /// Frames asked for.
        requested: u64,
        /// Frames free.
        free: u64,
    },
    /// A machine or domain size of zero or beyond what can be addressed.
    #[error("bad size of {pages} pages: must be at least 1 and fit the address space")]
    BadSize {
        /// Pages asked for.
        pages: u64,
    },
    /// No domain with this id (never created, or destroyed).
    #[error("no domain {0}: it was never created or has been destroyed; check the domid")]
    NoSuchDomain(DomId),
    /// The id is taken.
    #[error("domain {0} already exists; destroy it first or pick another id")]
    DomainExists(DomId),
    /// Domain ids run `0..MAX_DOMAINS`.
    #[error("domid {0} is out of range: ids run 0..{MAX_DOMAINS}")]
    BadDomId(DomId),
    /// Every domain id is in use.
    #[error("every domain id is in use; destroy a domain first")]
    NoFreeDomId,
    /// A pfn outside the domain's reservation.
    #[error(
        "{pfn} is outside the domain's reservation of {pages} pages; use a pfn from alloc_page"
    )]
    PfnOutOfRange {
        /// The pfn.
        pfn: Pfn,
        /// The reservation size.
        pages: u64,
    },
    /// offset + len beyond the page.
    #[error(
        "offset {offset} + length {len} runs past the 4096-byte page; split the access at the \
         page boundary"
    )]
    OutOfBounds {
        /// Byte offset.
        offset: usize,
        /// Length.
        len: usize,
    },
    /// The reservation has no free page left.
    #[error(
        "domain {domid} has allocated all {pages} pages of its reservation; free pages or \
         create it larger"
    )]
    ReservationExhausted {
        /// The domain.
        domid: DomId,
        /// Its reservation.
        pages: u64,
    },
    /// `free_page` on a page that is not allocated.
    #[error("{0} is not allocated; free only pages that alloc_page returned, once")]
    PageNotAllocated(Pfn),
    /// The page is lent out as `&[u8]` (a borrow: `GuestMemory::with_page`); writers must wait for it.
    #[error(
        "{0} is borrowed for reading; drop the PageBorrow before writing or granting it writable"
    )]
    PageBorrowed(Pfn),
    /// The page is granted writable, accepting a transfer, or being moved; it cannot be
    /// borrowed (or re-granted for a transfer) now.
    #[error(
        "{0} is granted writable, accepting a transfer, or being moved; end those grants first"
    )]
    PageBusy(Pfn),
    /// No free grant reference.
    #[error("grant table full ({entries} entries); end access to grants no longer needed")]
    GrantTableFull {
        /// Table size.
        entries: usize,
    },
    /// The reference is reserved, out of range, or not granted by this domain through this API.
    #[error("{0} is not a grant this domain made (reserved, out of range, or already ended)")]
    BadGrantRef(GrantRef),
    /// end access refused: the hypervisor has `reading`/`writing` set (copy or mapping in flight).
    #[error(
        "{0} is still in use by the hypervisor (reading/writing set: a copy or mapping is in \
         flight); retry after the backend unmaps or finishes"
    )]
    GrantInUse(GrantRef),
    /// A transfer into this entry is committed but not yet completed.
    #[error("a transfer into {0} is committed but not completed; retry shortly")]
    TransferInProgress(GrantRef),
    /// A grant hypercall failed with this status (map).
    #[error("grant operation failed with {0}")]
    Grant(GrantStatus),
    /// The event-channel port is not allocated, or not of the kind the call needs.
    #[error(
        "{0} is not an allocated event channel of the right kind; check \
         alloc_unbound/bind_interdomain"
    )]
    BadPort(Port),
    /// Every port is in use.
    #[error("all {NR_EVENT_CHANNELS} event-channel ports are in use; close ports no longer needed")]
    NoFreePort,
    /// The remote port is not unbound and waiting for this domain.
    #[error(
        "domain {remote} {port} is not an unbound port allocated for this domain; the remote \
         must call alloc_unbound with our domid first"
    )]
    PortNotBindable {
        /// Remote domain.
        remote: DomId,
        /// Remote port.
        port: Port,
    },
    /// A xenstore path that does not exist.
    #[error("xenstore: {0} does not exist")]
    XsNoEntry(String),
    /// A malformed xenstore path.
    #[error(
        "xenstore: {0:?} is not a valid path (absolute, no empty components, [A-Za-z0-9_@-] only)"
    )]
    XsInvalidPath(String),
    /// The domain lacks the permission for this xenstore operation.
    #[error(
        "xenstore: domain {domid} may not {access} {path}: a guest writes only under \
         /local/domain/{domid} and nodes whose permissions grant it access; ask dom0 to set \
         permissions"
    )]
    XsPermissionDenied {
        /// Caller.
        domid: DomId,
        /// Path.
        path: String,
        /// `read` or `write`.
        access: &'static str,
    },
    /// No watch with this path and token on the connection.
    #[error("xenstore: no watch on {path} with token {token:?} on this connection")]
    XsNoWatch {
        /// Path.
        path: String,
        /// Token.
        token: String,
    },
    /// A xenstore request got no answer within its deadline (xenstored overloaded, or gone
    /// without closing the connection).
    #[error(
        "xenstore did not answer within {after:?}: xenstored is overloaded or gone; the request \
         is given up and retried on a fresh connection"
    )]
    XsTimeout {
        /// The deadline that passed.
        after: std::time::Duration,
    },
    /// The xenstore connection is closed or broke (xenstored went away); open a new one.
    #[error("the xenstore connection is closed or broken: is xenstored running? reconnect")]
    XsDisconnected,
    /// The hypervisor interface cannot do this (e.g. page transfer from Linux userspace).
    #[error("{what} is not supported here: {hint}")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// The page is pinned as a shared ring: only atomics may touch it until the ring is gone.
    #[error("{0} is a shared ring page: only the ring may touch it; drop the ring first")]
    PageIsRing(Pfn),
    /// An implementation's own failure that the variants above do not name (an ioctl refused,
    /// xenstored answering an error or breaking its protocol). The message, written by the
    /// implementation, says what was wrong and what to do.
    #[error("{0}")]
    Platform(String),
}

impl Error {
    /// An [`Error::Os`] from an `io::Error` (errno 0 if it carries none).
    pub fn os(op: &'static str, e: &io::Error, hint: &'static str) -> Self {
        Error::Os {
            op,
            errno: e.raw_os_error().unwrap_or(0),
            hint,
        }
    }

    /// An [`Error::Os`] from the thread's last `errno`.
    pub fn last_os(op: &'static str, hint: &'static str) -> Self {
        Self::os(op, &io::Error::last_os_error(), hint)
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
