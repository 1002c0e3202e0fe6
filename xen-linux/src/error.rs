//! The error type of the real-Xen layer.

use std::io;

use hypervisor::types::PAGE_SIZE;

use super::xs::wire::{MsgType, WireError, XsErrno};

/// Everything that can go wrong talking to Xen from a Linux dom0 or driver domain. Per-segment
/// grant-copy failures are reported as a status in the segment, not as an `Error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A device node or the xenstore connection point is missing or cannot be opened.
    #[error("{what}: {hint}")]
    Unavailable {
        /// What is missing, e.g. "no /dev/xen/gntdev".
        what: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// A system call failed.
    #[error("{op} failed: {}", io::Error::from_raw_os_error(*errno))]
    Os {
        /// The call, e.g. "IOCTL_GNTDEV_MAP_GRANT_REF".
        op: &'static str,
        /// `errno`.
        errno: i32,
        /// What to do, chosen by whoever made the call (for a Xen driver's call, `OS_HINT`: read
        /// the kernel log). Not part of this message: the seam's `Os`, made from this one, says
        /// it.
        hint: &'static str,
    },
    /// xenstored answered a request with an error.
    #[error("xenstore {op}{}: {errno}", at_path(path))]
    Xenstore {
        /// The request.
        op: MsgType,
        /// The path it named ("" for transaction requests).
        path: String,
        /// The error.
        errno: XsErrno,
    },
    /// Bytes to or from xenstored that are not the protocol.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The xenstore connection was closed, or broke earlier and cannot be used again.
    #[error("the xenstore connection is closed or broken: is xenstored running? reconnect")]
    Disconnected,
    /// A transaction kept conflicting with other writers.
    #[error(
        "xenstore transaction still conflicting after {attempts} attempts: another writer keeps \
         changing the same nodes; retry later"
    )]
    TransactionConflict {
        /// Attempts made.
        attempts: u32,
    },
    /// xenstored did not answer a request within its deadline; the connection is given up.
    #[error(
        "xenstore did not answer within {after:?}: xenstored is overloaded or gone; connect again"
    )]
    Timeout {
        /// The deadline.
        after: std::time::Duration,
    },
    /// A grant-copy segment whose granted side would cross the end of its page (the kernel
    /// would fail the whole batch with `EINVAL`).
    #[error(
        "grant copy of {len} bytes at offset {offset} crosses the end of the granted page \
         ({PAGE_SIZE} bytes): split it at the page boundary"
    )]
    BadCopySegment {
        /// Offset in the granted page.
        offset: u16,
        /// Length.
        len: usize,
    },
    /// A read or write on `/dev/xen/evtchn` moved a byte count that is not whole ports.
    #[error("{op} moved {got} bytes where {expected} (whole 4-byte ports) were due")]
    ShortIo {
        /// The call.
        op: &'static str,
        /// Bytes expected (a multiple of 4).
        expected: usize,
        /// Bytes moved.
        got: usize,
    },
}

/// The path part of [`Error::Xenstore`]'s message: " PATH", or nothing for "".
fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" {path}")
    }
}

/// The layer's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An `Os` error from an `io::Error` (errno 0 if it carries none), advising `hint`.
    pub(crate) fn os(op: &'static str, e: &io::Error, hint: &'static str) -> Self {
        Error::Os {
            op,
            errno: e.raw_os_error().unwrap_or(0),
            hint,
        }
    }

    /// An `Os` error from the thread's last errno, advising `hint`.
    pub(crate) fn last_os(op: &'static str, hint: &'static str) -> Self {
        Self::os(op, &io::Error::last_os_error(), hint)
    }

    /// The xenstore error, if this is one: `err.xs_errno() == Some(&XsErrno::Enoent)` tests for
    /// a missing node.
    pub fn xs_errno(&self) -> Option<&XsErrno> {
        match self {
            Error::Xenstore { errno, .. } => Some(errno),
            _ => None,
        }
    }

    /// Whether this is xenstore's `ENOENT` (no such node).
    pub fn is_not_found(&self) -> bool {
        self.xs_errno() == Some(&XsErrno::Enoent)
    }

    /// The error for a device node that failed to open, with the hint that fits `errno`.
    pub(crate) fn open_failed(path: &str, module: &'static str, e: &io::Error) -> Self {
        let (what, hint) = match e.raw_os_error() {
            Some(libc::ENOENT) => (format!("no {path}"), module),
            Some(libc::EACCES | libc::EPERM) => (
                format!("permission denied opening {path}"),
                "run as root in dom0 or a driver domain",
            ),
            Some(libc::ENODEV | libc::ENXIO) => (
                format!("{path} has no driver behind it"),
                "this kernel is not running on Xen: run in a Xen dom0 or driver domain",
            ),
            _ => (
                format!("cannot open {path}: {e}"),
                "check the device node and its permissions",
            ),
        };
        Error::Unavailable { what, hint }
    }
}

/// What the seam's callers see of this layer's errors: the neutral variant where one exists,
/// else the message this layer wrote (which says what was wrong and what to do).
impl From<Error> for hypervisor::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Unavailable { what, hint } => hypervisor::Error::Unavailable { what, hint },
            Error::Os { op, errno, hint } => hypervisor::Error::Os { op, errno, hint },
            Error::Disconnected => hypervisor::Error::XsDisconnected,
            Error::Timeout { after } => hypervisor::Error::XsTimeout { after },
            e => hypervisor::Error::Platform(e.to_string()),
        }
    }
}

/// The advice for a refused Xen device call (gntdev, evtchn): the driver logs why.
pub(crate) const OS_HINT: &str =
    "the Xen driver refused it: its reason is in this domain's kernel log (dmesg)";

/// The advice for a failed read or write on the xenstore connection (the xenstored socket, or
/// `/dev/xen/xenbus` in a guest), after which the client is broken.
pub(crate) const XS_IO_HINT: &str = "the connection to xenstored broke: is xenstored running? \
     reconnect (on /dev/xen/xenbus, this domain's kernel log (dmesg) says why)";

/// The advice for a failed `poll(2)`, which fails only for lack of kernel memory (EINTR is
/// retried by the callers, and they pass one valid descriptor).
pub(crate) const POLL_HINT: &str = "poll(2) fails only when the kernel is out of memory: check \
     the host's free memory";

/// The advice for a descriptor that could not be created (eventfd, epoll, dup).
pub(crate) const FD_HINT: &str = "the process is out of descriptors or kernel memory: check \
     its open-file limit (ulimit -n) and the host's free memory";
