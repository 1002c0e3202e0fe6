//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in a benchmark run, its reports or its CLI.
#[derive(Debug)]
pub enum Error {
    /// A configuration value is out of range.
    Config(String),
    /// A thread could not be spawned.
    Spawn(std::io::Error),
    /// A benchmark thread panicked or reported a failure.
    Thread {
        /// The thread's role ("remote sender", "guest receiver", ...).
        role: &'static str,
        /// What went wrong.
        what: String,
    },
    /// The TCP connection did not come up, or stopped moving data.
    Stalled(String),
    /// The receiver read a byte that differs from the sender's counting pattern.
    Corrupt {
        /// Stream offset of the first wrong byte.
        offset: u64,
        /// The byte the pattern says.
        expected: u8,
        /// The byte read.
        found: u8,
    },
    /// A file could not be written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// JSON encoding failed.
    Json(serde_json::Error),
    /// The chart could not be drawn.
    Chart(String),
    /// Profiling could not be set up.
    Profile(xenoprof_report::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(what) => write!(f, "invalid configuration: {what}"),
            Error::Spawn(e) => write!(
                f,
                "could not start a benchmark thread ({e}); check the process and memory limits"
            ),
            Error::Thread { role, what } => write!(f, "the {role} thread failed: {what}"),
            Error::Stalled(what) => write!(
                f,
                "the TCP stream stalled: {what}; rerun, and if it persists report it with the \
                 command line used"
            ),
            Error::Corrupt {
                offset,
                expected,
                found,
            } => write!(
                f,
                "data corrupted in flight: stream byte {offset} is {found:#04x}, the sender wrote \
                 {expected:#04x}; the link reorders, drops or overwrites frame data"
            ),
            Error::Io { path, source } => write!(
                f,
                "cannot write {}: {source}; check that the directory exists and is writable",
                path.display()
            ),
            Error::Json(e) => write!(f, "cannot encode the result as JSON: {e}"),
            Error::Chart(e) => write!(f, "cannot draw the SVG chart: {e}"),
            Error::Profile(e) => write!(f, "profiling: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<xenoprof_report::Error> for Error {
    fn from(e: xenoprof_report::Error) -> Self {
        Error::Profile(e)
    }
}
