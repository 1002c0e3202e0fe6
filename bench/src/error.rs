//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in a benchmark run, its reports or its CLI.
///
/// Only [`Error::Io`] and [`Error::Read`] have a `source()` (their `source` field, which
/// thiserror always treats as the source); the other wrapped errors are in the message only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A thread could not be spawned.
    #[error("could not start a benchmark thread ({0}); check the process and memory limits")]
    Spawn(std::io::Error),
    /// A benchmark thread panicked or reported a failure.
    #[error("the {role} thread failed: {what}")]
    Thread {
        /// The thread's role ("remote sender", "guest receiver", ...).
        role: &'static str,
        /// What went wrong.
        what: String,
    },
    /// The TCP connection did not come up, or stopped moving data.
    #[error(
        "the TCP stream stalled: {0}; rerun, and if it persists report it with the command line \
         used"
    )]
    Stalled(String),
    /// The receiver read a byte that differs from the sender's counting pattern.
    #[error(
        "data corrupted in flight: stream byte {offset} is {found:#04x}, the sender wrote \
         {expected:#04x}; the link reorders, drops or overwrites frame data"
    )]
    Corrupt {
        /// Stream offset of the first wrong byte.
        offset: u64,
        /// The byte the pattern says.
        expected: u8,
        /// The byte read.
        found: u8,
    },
    /// A file could not be written.
    #[error(
        "cannot write {}: {source}; check that the directory exists and is writable",
        path.display()
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// JSON encoding failed.
    #[error("cannot encode the result as JSON: {0}")]
    Json(serde_json::Error),
    /// The chart could not be drawn.
    #[error("cannot draw the SVG chart: {0}")]
    Chart(String),
    /// Profiling could not be set up.
    // Not `#[from]`: source() stays None, as before (the message includes the error).
    #[error("profiling: {0}")]
    Profile(xenoprof_report::Error),
}

impl From<xenoprof_report::Error> for Error {
    fn from(e: xenoprof_report::Error) -> Self {
        Error::Profile(e)
    }
}
