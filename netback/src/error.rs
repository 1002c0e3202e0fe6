//! netback's error types.

use crate::vif::VifId;

/// What went wrong in the backend. Guest misbehaviour is not an error of the backend as a whole:
/// it disables that vif ([`crate::Fatal`]) and the rest carries on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hypervisor call failed.
    #[error("hypervisor call failed: {0}")]
    Hypervisor(#[from] hypervisor::Error),
    /// A tunable is out of range.
    #[error("netback config: {what} {why}")]
    Config {
        /// Which setting.
        what: &'static str,
        /// Why.
        why: &'static str,
    },
    /// A frontend cannot be connected.
    #[error("{id}: frontend cannot be connected: {reason}{}", reason.advice())]
    Frontend {
        /// The vif.
        id: VifId,
        /// What is wrong.
        #[source]
        reason: FrontendError,
    },
    /// The bridge refused an operation.
    #[error("bridge: {0}")]
    Bridge(#[from] bridge_lite::BridgeError),
}

/// Why a frontend's xenstore keys cannot be used (written to the backend's `error` node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontendError {
    /// A key the protocol requires is missing.
    #[error("{key} missing")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A key holds something other than a number.
    #[error("{key} is {value:?}, not a number")]
    NotANumber {
        /// The key.
        key: &'static str,
        /// What it holds.
        value: String,
    },
    /// `multi-queue-num-queues` of 0, or above what this backend offers.
    #[error("multi-queue-num-queues {asked} is not within 1..={max}, this backend's maximum")]
    TooManyQueues {
        /// Queues asked for.
        asked: u32,
        /// The backend's `multi-queue-max-queues`.
        max: u32,
    },
    /// Page flipping asked for (`request-rx-copy=0`) but not offered.
    #[error("frontend asks for page flipping (request-rx-copy=0) but feature-rx-flip is 0")]
    FlipNotOffered,
    /// The rings' indices are impossible at connect (`req_prod - rsp_prod` more than a ring
    /// holds), as Linux 6.1's `xenvif_map_frontend_data_rings` refuses them.
    #[error(
        "its {ring} ring's indices are impossible ({why}); the frontend must initialise its rings before connecting"
    )]
    RingIndices {
        /// `tx` or `rx`.
        ring: &'static str,
        /// What the ring reported.
        why: netif_ring::RingError,
    },
    /// Mapping the rings or binding the event channel failed.
    // Not `#[source]`: source() stays None, as before (the message includes the error).
    #[error("mapping its rings or binding its channel: {0}")]
    Connect(hypervisor::Error),
    /// The switch has no port for the vif: a limit of this backend, not the frontend's doing.
    #[error("no switch port for it: {hint}")]
    NoSwitchPort {
        /// What to do, chosen where the switch refused.
        hint: &'static str,
    },
}

impl FrontendError {
    /// What [`Error::Frontend`] advises after the reason: the guest can fix everything but a
    /// full switch, whose own hint already says what to do.
    fn advice(&self) -> &'static str {
        match self {
            FrontendError::NoSwitchPort { .. } => "",
            _ => "; fix the guest's netfront or its xenstore keys and reconnect",
        }
    }
}
