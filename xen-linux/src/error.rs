//! The error type of the real-Xen layer.

use std::fmt;
use std::io;

use super::xs::wire::{MsgType, WireError, XsErrno};

/// Everything that can go wrong talking to Xen from a Linux dom0 or driver domain. Per-segment
/// grant-copy failures are reported as a status in the segment, not as an `Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A device node or the xenstore connection point is missing or cannot be opened.
    Unavailable {
        /// What is missing, e.g. "no /dev/xen/gntdev".
        what: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// A system call failed.
    Os {
        /// The call, e.g. "IOCTL_GNTDEV_MAP_GRANT_REF".
        op: &'static str,
        /// `errno`.
        errno: i32,
    },
    /// xenstored answered a request with an error.
    Xenstore {
        /// The request.
        op: MsgType,
        /// The path it named ("" for transaction requests).
        path: String,
        /// The error.
        errno: XsErrno,
    },
    /// Bytes to or from xenstored that are not the protocol.
    Wire(WireError),
    /// The xenstore connection was closed, or broke earlier and cannot be used again.
    Disconnected,
    /// A transaction kept conflicting with other writers.
    TransactionConflict {
        /// Attempts made.
        attempts: u32,
    },
    /// A grant-copy segment whose granted side would cross the end of its page (the kernel
    /// would fail the whole batch with `EINVAL`).
    BadCopySegment {
        /// Offset in the granted page.
        offset: u16,
        /// Length.
        len: usize,
    },
    /// A read or write on `/dev/xen/evtchn` moved a byte count that is not whole ports.
    ShortIo {
        /// The call.
        op: &'static str,
        /// Bytes expected (a multiple of 4).
        expected: usize,
        /// Bytes moved.
        got: usize,
    },
}

/// The layer's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An `Os` error from an `io::Error` (errno 0 if it carries none).
    pub(crate) fn os(op: &'static str, e: &io::Error) -> Self {
        Error::Os {
            op,
            errno: e.raw_os_error().unwrap_or(0),
        }
    }

    /// An `Os` error from the thread's last errno.
    pub(crate) fn last_os(op: &'static str) -> Self {
        Self::os(op, &io::Error::last_os_error())
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unavailable { what, hint } => write!(f, "{what}: {hint}"),
            Error::Os { op, errno } => {
                write!(f, "{op} failed: {}", io::Error::from_raw_os_error(*errno))
            }
            Error::Xenstore { op, path, errno } if path.is_empty() => {
                write!(f, "xenstore {op}: {errno}")
            }
            Error::Xenstore { op, path, errno } => write!(f, "xenstore {op} {path}: {errno}"),
            Error::Wire(e) => e.fmt(f),
            Error::Disconnected => f.write_str(
                "the xenstore connection is closed or broken: is xenstored running? reconnect",
            ),
            Error::TransactionConflict { attempts } => write!(
                f,
                "xenstore transaction still conflicting after {attempts} attempts: another \
                 writer keeps changing the same nodes; retry later"
            ),
            Error::BadCopySegment { offset, len } => write!(
                f,
                "grant copy of {len} bytes at offset {offset} crosses the end of the granted \
                 page ({} bytes): split it at the page boundary",
                hypervisor::types::PAGE_SIZE
            ),
            Error::ShortIo { op, expected, got } => {
                write!(
                    f,
                    "{op} moved {got} bytes where {expected} (whole 4-byte ports) were due"
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Wire(e) => Some(e),
            _ => None,
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::Wire(e)
    }
}

/// What the seam's callers see of this layer's errors: the neutral variant where one exists,
/// else the message this layer wrote (which says what was wrong and what to do).
impl From<Error> for hypervisor::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Unavailable { what, hint } => hypervisor::Error::Unavailable { what, hint },
            Error::Os { op, errno } => hypervisor::Error::Os {
                op,
                errno,
                hint: OS_HINT,
            },
            Error::Disconnected => hypervisor::Error::XsDisconnected,
            e => hypervisor::Error::Platform(e.to_string()),
        }
    }
}

/// The advice for a refused Xen device call: the driver logs why.
pub(crate) const OS_HINT: &str =
    "the Xen driver refused it: its reason is in this domain's kernel log (dmesg)";
