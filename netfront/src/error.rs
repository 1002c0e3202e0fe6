//! The crate's error type.

use std::fmt;
use std::time::Duration;

use netif_ring::RingError;

/// Everything that can go wrong in netfront.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A hypervisor call failed.
    Hypervisor {
        /// What netfront was doing.
        op: &'static str,
        /// The hypervisor's error.
        source: hypervisor::Error,
    },
    /// The toolstack has not created the vif (no frontend directory or backend link).
    NoDevice {
        /// The frontend directory looked at.
        path: String,
    },
    /// A xenstore value is missing or not what the protocol allows.
    BadXenstoreValue {
        /// The node.
        path: String,
        /// Its value.
        value: String,
    },
    /// The backend did not reach a state in time.
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The backend went away (Closing/Closed) during the handshake or while connected.
    BackendClosed {
        /// The backend's state value.
        state: u32,
    },
    /// The backend's features do not allow the configuration asked for.
    FeatureMismatch(String),
    /// The configuration is invalid.
    BadConfig(String),
    /// The backend broke the ring protocol; the device is disconnected.
    Ring(RingError),
    /// Grants the backend still uses at teardown; their pages were kept, not freed.
    GrantsStillInUse {
        /// How many grants could not be ended.
        count: usize,
    },
    /// The device was disconnected earlier (see the first error) and can only be closed.
    Disconnected(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn hv(op: &'static str) -> impl FnOnce(hypervisor::Error) -> Error {
        move |source| Error::Hypervisor { op, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Hypervisor { op, source } => write!(f, "netfront: {op} failed: {source}"),
            Error::NoDevice { path } => write!(
                f,
                "netfront: no vif at {path}: the toolstack must create it (add_vif) before connect"
            ),
            Error::BadXenstoreValue { path, value } => {
                write!(
                    f,
                    "netfront: xenstore node {path} holds {value:?}, which the protocol does not allow"
                )
            }
            Error::Timeout { what, waited } => write!(
                f,
                "netfront: timed out after {waited:?} waiting for {what}; is the backend running?"
            ),
            Error::BackendClosed { state } => write!(
                f,
                "netfront: the backend switched to state {state} (Closing/Closed); close this device"
            ),
            Error::FeatureMismatch(why) => write!(
                f,
                "netfront: backend features do not match: {why}; change FrontConfig or the backend"
            ),
            Error::BadConfig(why) => write!(f, "netfront: invalid FrontConfig: {why}"),
            Error::Ring(e) => write!(
                f,
                "netfront: the backend broke the ring protocol ({e}); the device is disconnected, close it"
            ),
            Error::GrantsStillInUse { count } => write!(
                f,
                "netfront: {count} grant(s) still in use by the backend at teardown; their pages were \
                 kept (not freed) so the backend cannot write into reused memory"
            ),
            Error::Disconnected(why) => {
                write!(
                    f,
                    "netfront: device disconnected ({why}); only close() is possible"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<RingError> for Error {
    fn from(e: RingError) -> Self {
        Error::Ring(e)
    }
}
