//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

use xenoprof::class::RegisterError;

/// Everything that can go wrong at this crate's boundary.
#[derive(Debug)]
pub enum Error {
    /// A class could not be registered.
    Register(RegisterError),
    /// A profile file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A profile file is not valid profile JSON.
    Json {
        /// The file (empty when parsing from memory).
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A profile was written by an incompatible version of this crate.
    Version {
        /// The version found.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// A diff was asked to normalise by a unit of work that is zero or missing.
    NoWork {
        /// The unit name (e.g. "packets").
        unit: String,
        /// Which side lacked it ("before" or "after").
        side: &'static str,
    },
    /// The kernel refused `perf_event_open` for cpu-clock sampling.
    PerfEventOpen {
        /// `/proc/sys/kernel/perf_event_paranoid`, if readable.
        paranoid: Option<i32>,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// PC sampling is not compiled in (crate feature `pc-sampling` off).
    PcSamplingUnavailable,
    /// Starting a thread (the sampler) failed.
    Spawn(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Register(e) => e.fmt(f),
            Error::Io { path, source } => write!(
                f,
                "cannot access profile file {}: {source}; check the path and permissions",
                path.display()
            ),
            Error::Json { path, source } => write!(
                f,
                "{} is not a xenoprof profile: {source}; pass a file written by \
                 Profile::write_json or the two_domains example",
                path.display()
            ),
            Error::Version { found, expected } => write!(
                f,
                "profile format version {found} is not supported (this build reads version \
                 {expected}); re-record the profile with this build"
            ),
            Error::NoWork { unit, side } => write!(
                f,
                "cannot normalise the {side} profile by {unit:?}: it records no such work (or \
                 zero); record it with Profile::set_work or pass the amount explicitly"
            ),
            Error::PerfEventOpen { paranoid, source } => {
                write!(f, "perf_event_open(cpu-clock) was refused: {source}; ")?;
                match paranoid {
                    Some(p) => write!(f, "kernel.perf_event_paranoid is {p}. ")?,
                    None => write!(f, "kernel.perf_event_paranoid is unreadable. ")?,
                }
                write!(
                    f,
                    "Run as root or with CAP_PERFMON, or lower it (`sysctl \
                     kernel.perf_event_paranoid=1` lets a user sample its own process); in a \
                     container the seccomp profile must allow perf_event_open. Class-level \
                     sampling and exact counting still work without it"
                )
            }
            Error::PcSamplingUnavailable => write!(
                f,
                "PC sampling is not compiled in; rebuild xenoprof-report with the `pc-sampling` \
                 feature"
            ),
            Error::Spawn(e) => write!(
                f,
                "cannot start the sampler thread: {e}; check the process's thread limit"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Register(e) => Some(e),
            Error::Io { source, .. } | Error::PerfEventOpen { source, .. } => Some(source),
            Error::Json { source, .. } => Some(source),
            Error::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RegisterError> for Error {
    fn from(e: RegisterError) -> Self {
        Error::Register(e)
    }
}
