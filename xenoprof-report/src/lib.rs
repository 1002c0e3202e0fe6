//! The sampling, symbol, report and CLI side of xenoprof.
//!
//! The drivers link only the hooks crate, `xenoprof`: registration, scopes, counters. This crate
//! reads what the hooks gather and turns it into Xenoprof's reports:
//!
//! - [`Session`]: Xenoprof's domain roles, start / stop / reset / snapshot, the class sampler.
//! - [`pc`]: real PC sampling with perf_event_open and blazesym (feature `pc-sampling`).
//! - [`Profile`], [`report`], [`mod@diff`]: JSON, the seed-shaped table, cycles saved per unit of work.
//! - the `xenoprof` binary: `xenoprof report F.json`, `xenoprof diff A.json B.json`.
#![forbid(unsafe_code)]

pub mod diff;
pub mod error;
#[cfg(feature = "pc-sampling")]
pub mod pc;
pub mod profile;
pub mod report;
pub mod session;

pub use diff::{Diff, DiffRow, Work, diff, render_diff};
pub use error::Error;
#[cfg(feature = "pc-sampling")]
pub use pc::{PcProfile, PcSampler};
pub use profile::{DomainProfile, FORMAT_VERSION, Profile, Role, Row};
pub use report::{Metric, render};
pub use session::{Session, SessionBuilder};
