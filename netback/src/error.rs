//! netback's error type.

use std::fmt;

use hypervisor::DomId;

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
    /// The frontend's xenstore keys are missing or malformed.
    Frontend {
        /// The frontend domain.
        domid: DomId,
        /// The vif's device id.
        devid: u32,
        /// What is wrong, for the log and the backend's `error` node.
        reason: String,
    },
    /// No vif with this (domid, devid).
    NoSuchVif {
        /// The frontend domain.
        domid: DomId,
        /// The device id.
        devid: u32,
    },
    /// The bridge refused an operation.
    Bridge(bridge_lite::BridgeError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Hypervisor(e) => write!(f, "hypervisor call failed: {e}"),
            Error::Config { what, why } => write!(f, "netback config: {what} {why}"),
            Error::Frontend {
                domid,
                devid,
                reason,
            } => write!(
                f,
                "vif{domid}.{devid}: frontend cannot be connected: {reason}; fix the guest's \
                 netfront or its xenstore keys and reconnect"
            ),
            Error::NoSuchVif { domid, devid } => write!(
                f,
                "no vif{domid}.{devid}: the toolstack has not created it (see Hypervisor::add_vif)"
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
            _ => None,
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
