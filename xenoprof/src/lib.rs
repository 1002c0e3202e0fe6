//! Xenoprof-style profiling hooks for splitnet.
//!
//! Every crate on the data path reports through these hooks: a thread registers as a vCPU of a
//! domain, work is tagged with a [`Class`] inside a [`Context`], and exact counters or a sampler
//! attribute cycles to (domain, context, class) — the rows of the 2006 Xenoprof table.
//!
//! - [`hooks`]: registration, scopes, hypercalls, modes (the hot path).
//! - [`Probe`]: profiling as a type parameter; `()` compiles away.
//! - [`Session`]: Xenoprof's domain roles, start / stop / reset / snapshot, the class sampler.
//! - [`pc`]: real PC sampling with perf_event_open and blazesym (feature `pc-sampling`).
//! - [`Profile`], [`report`], [`mod@diff`]: JSON, the seed-shaped table, cycles saved per unit of work.
#![forbid(unsafe_code)]
// With hooks compiled out, the hot-path internals are unused by design.
#![cfg_attr(not(feature = "enabled"), allow(dead_code))]

pub mod class;
pub mod counters;
pub mod diff;
pub mod error;
pub mod hooks;
#[cfg(feature = "pc-sampling")]
pub mod pc;
pub mod probe;
pub mod profile;
pub mod report;
pub mod session;

pub use class::{Class, MAX_CLASSES, RegisterError};
pub use counters::{CounterSnapshot, VcpuCounters};
pub use diff::{Diff, DiffRow, Work, diff, render_diff};
pub use error::Error;
pub use hooks::{
    Blocked, ClockSource, Context, DomId, ManualClock, Mode, Scope, blocked, flush, hypercall,
    mode, register_vcpu, register_vcpu_with_clock, scope, scope_in, set_context, set_mode, tsc,
    tsc_hz, vcpus,
};
#[cfg(feature = "pc-sampling")]
pub use pc::{PcProfile, PcSampler};
pub use probe::{Hooks, Probe};
pub use profile::{DomainProfile, FORMAT_VERSION, Profile, Role, Row};
pub use report::{Metric, render};
pub use session::{Session, SessionBuilder};
