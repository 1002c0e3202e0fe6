//! netback's error types.

use std::fmt;

use crate::vif::VifId;

/// What went wrong in the backend. Guest misbehaviour is not an error of the backend as a whole:
/// it disables that vif ([`crate::Fatal`]) and the rest carries on.
#[derive(Debug)]
pub enum Error {
    /// A hypervisor call failed.
    Hypervisor(hypervisor::Error),
    /// A tunable is out of range.
    Config {
        /// Which setting.
        what: &'static str,
        /// Why.
        why: &'static str,
    },
    /// A frontend cannot be connected.
    Frontend {
        /// The vif.
        id: VifId,
        /// What is wrong.
        reason: FrontendError,
    },
    /// The bridge refused an operation.
    Bridge(bridge_lite::BridgeError),
}

/// Why a frontend's xenstore keys cannot be used (written to the backend's `error` node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendError {
    /// A key the protocol requires is missing.
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A key holds something other than a number.
    NotANumber {
        /// The key.
        key: &'static str,
        /// What it holds.
        value: String,
    },
    /// `multi-queue-num-queues` above what this backend offers.
    TooManyQueues {
        /// Queues asked for.
        asked: u32,
        /// The backend's `multi-queue-max-queues`.
        max: u32,
    },
    /// Split event channels asked for; this backend offers `feature-split-event-channels=0`.
    SplitEventChannels,
    /// Page flipping asked for (`request-rx-copy=0`) but not offered.
    FlipNotOffered,
    /// Mapping the rings or binding the event channel failed.
    Connect(hypervisor::Error),
}

impl fmt::Display for FrontendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrontendError::Missing { key } => write!(f, "{key} missing"),
            FrontendError::NotANumber { key, value } => {
                write!(f, "{key} is {value:?}, not a number")
            }
            FrontendError::TooManyQueues { asked, max } => write!(
                f,
                "multi-queue-num-queues {asked} is above this backend's maximum of {max}"
            ),
            FrontendError::SplitEventChannels => {
                f.write_str("split event channels requested but feature-split-event-channels is 0")
            }
            FrontendError::FlipNotOffered => f.write_str(
                "frontend asks for page flipping (request-rx-copy=0) but feature-rx-flip is 0",
            ),
            FrontendError::Connect(e) => write!(f, "mapping its rings or binding its channel: {e}"),
        }
    }
}

impl std::error::Error for FrontendError {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Hypervisor(e) => write!(f, "hypervisor call failed: {e}"),
            Error::Config { what, why } => write!(f, "netback config: {what} {why}"),
            Error::Frontend { id, reason } => write!(
                f,
                "{id}: frontend cannot be connected: {reason}; fix the guest's netfront or its \
                 xenstore keys and reconnect"
            ),
            Error::Bridge(e) => write!(f, "bridge: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Hypervisor(e) => Some(e),
            Error::Bridge(e) => Some(e),
            Error::Frontend { reason, .. } => Some(reason),
            Error::Config { .. } => None,
        }
    }
}

impl From<hypervisor::Error> for Error {
    fn from(e: hypervisor::Error) -> Self {
        Error::Hypervisor(e)
    }
}

impl From<bridge_lite::BridgeError> for Error {
    fn from(e: bridge_lite::BridgeError) -> Self {
        Error::Bridge(e)
    }
}
