//! The crate's error type.

/// Why a guest's vCPU stopped with an error. Each keeps netfront's own message, which says what
/// went wrong and what to do (for example: no vif, so the toolstack must create one first; the
/// backend did not answer in time, so check it is running).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// netfront could not connect to the backend.
    #[error(transparent)]
    Connect(netfront::Error),
    /// netfront could not close cleanly (for example, grants the backend still holds).
    #[error(transparent)]
    Close(netfront::Error),
}
