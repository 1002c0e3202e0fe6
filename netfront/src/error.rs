//! The crate's error type.

use std::time::Duration;

use netif_ring::RingError;

/// Everything that can go wrong in netfront.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A hypervisor call failed.
    #[error("netfront: {op} failed: {source}")]
    Hypervisor {
        /// What netfront was doing.
        op: &'static str,
        /// The hypervisor's error.
        source: hypervisor::Error,
    },
    /// The toolstack has not created the vif (no frontend directory or backend link).
    #[error("netfront: no vif at {path}: the toolstack must create it (add_vif) before connect")]
    NoDevice {
        /// The frontend directory looked at.
        path: String,
    },
    /// A xenstore value is missing or not what the protocol allows.
    #[error("netfront: xenstore node {path} holds {value:?}, which the protocol does not allow")]
    BadXenstoreValue {
        /// The node.
        path: String,
        /// Its value.
        value: String,
    },
    /// The backend did not reach a state in time.
    #[error("netfront: timed out after {waited:?} waiting for {what}; is the backend running?")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The backend went away (Closing/Closed) during the handshake or while connected.
    #[error("netfront: the backend switched to state {state} (Closing/Closed); {hint}")]
    BackendClosed {
        /// The backend's state value.
        state: u32,
        /// What to do, which depends on whether the device had connected.
        hint: &'static str,
    },
    /// The backend's features do not allow the configuration asked for.
    #[error("netfront: backend features do not match: {0}; change FrontConfig or the backend")]
    FeatureMismatch(String),
    /// The configuration is invalid.
    #[error("netfront: invalid FrontConfig: {0}")]
    BadConfig(String),
    /// The backend broke the ring protocol; the device is disconnected.
    // Not `#[from]`: source() stays None, as before (the message includes the violation).
    #[error(
        "netfront: the backend broke the ring protocol ({0}); the device is disconnected, close it"
    )]
    Ring(RingError),
    /// Grants the backend still uses at teardown; their pages were kept, not freed.
    #[error(
        "netfront: {count} grant(s) still in use by the backend at teardown; their pages were \
         kept (not freed) so the backend cannot write into reused memory"
    )]
    GrantsStillInUse {
        /// How many grants could not be ended.
        count: usize,
    },
    /// A ctrl-ring or multicast request the backend did not accept.
    #[error("netfront: {what}: {why}; change FrontConfig (hashing, multicast) or the backend")]
    Ctrl {
        /// Which request.
        what: &'static str,
        /// What went wrong.
        why: String,
    },
    /// The device was disconnected earlier (see the first error) and can only be closed.
    #[error("netfront: device disconnected ({0}); only close() is possible")]
    Disconnected(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn hv(op: &'static str) -> impl FnOnce(hypervisor::Error) -> Error {
        move |source| Error::Hypervisor { op, source }
    }
}

impl From<RingError> for Error {
    fn from(e: RingError) -> Self {
        Error::Ring(e)
    }
}
