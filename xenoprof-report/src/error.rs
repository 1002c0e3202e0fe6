//! The crate's error type.

use std::path::PathBuf;

use xenoprof::class::RegisterError;

/// Everything that can go wrong at this crate's boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A class could not be registered.
    #[error("{0}")]
    Register(#[from] RegisterError),
    /// A profile file could not be read or written.
    #[error(
        "cannot access profile file {}: {source}; check the path and permissions",
        path.display()
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A profile file is not valid profile JSON.
    #[error(
        "{} is not a xenoprof profile: {source}; pass a file written by \
         Profile::write_json or the two_domains example",
        path.display()
    )]
    Json {
        /// The file (empty when parsing from memory).
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// A profile was written by an incompatible version of this crate.
    #[error(
        "profile format version {found} is not supported (this build reads version \
         {expected}); re-record the profile with this build"
    )]
    Version {
        /// The version found.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// A diff was asked to normalise by a unit of work that is zero or missing.
    #[error(
        "cannot normalise the {side} profile by {unit:?}: it records no such work (or \
         zero); record it with Profile::set_work or pass the amount explicitly"
    )]
    NoWork {
        /// The unit name (e.g. "packets").
        unit: String,
        /// Which side lacked it ("before" or "after").
        side: &'static str,
    },
    /// The kernel refused `perf_event_open` for cpu-clock sampling.
    #[error(
        "perf_event_open(cpu-clock) was refused: {source}; {}Run as root or with CAP_PERFMON, \
         or lower it (`sysctl kernel.perf_event_paranoid=1` lets a user sample its own \
         process); in a container the seccomp profile must allow perf_event_open. Class-level \
         sampling and exact counting still work without it",
        paranoid_is(*paranoid)
    )]
    PerfEventOpen {
        /// `/proc/sys/kernel/perf_event_paranoid`, if readable.
        paranoid: Option<i32>,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// PC sampling is not compiled in (crate feature `pc-sampling` off).
    #[error(
        "PC sampling is not compiled in; rebuild xenoprof-report with the `pc-sampling` feature"
    )]
    PcSamplingUnavailable,
    /// Starting a thread (the sampler) failed.
    #[error("cannot start the sampler thread: {0}; check the process's thread limit")]
    Spawn(#[source] std::io::Error),
}

/// The sentence on `kernel.perf_event_paranoid` in [`Error::PerfEventOpen`]'s message.
fn paranoid_is(paranoid: Option<i32>) -> String {
    match paranoid {
        Some(p) => format!("kernel.perf_event_paranoid is {p}. "),
        None => "kernel.perf_event_paranoid is unreadable. ".to_string(),
    }
}
