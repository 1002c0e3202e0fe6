//! Xenoprof-style profiling hooks for splitnet.
//!
//! Every crate on the data path reports through these hooks: a thread registers as a vCPU of a
//! domain, work is tagged with a [`Class`] inside a [`Context`], and exact counters or a sampler
//! attribute cycles to (domain, context, class) — the rows of the 2006 Xenoprof table.
//!
//! - [`hooks`]: registration, scopes, hypercalls, modes (the hot path).
//! - [`Probe`]: profiling as a type parameter; `()` compiles away.
//! - [`VcpuCounters`]: each vCPU's exact counters and the tag a sampler reads.
//!
//! This crate is only what the drivers link. Sessions and the class sampler, PC sampling,
//! profiles as JSON, the seed-shaped report, diffs and the `xenoprof` CLI are in
//! `xenoprof-report`.
#![forbid(unsafe_code)]
// With hooks compiled out, the hot-path internals are unused by design.
#![cfg_attr(not(feature = "enabled"), allow(dead_code))]

pub mod class;
pub mod counters;
pub mod hooks;
pub mod probe;

pub use class::{Class, MAX_CLASSES, RegisterError};
pub use counters::{CounterSnapshot, VcpuCounters};
pub use hooks::{
    Blocked, ClockSource, Context, DomId, ManualClock, Mode, Scope, blocked, flush, hypercall,
    mode, register_vcpu, register_vcpu_with_clock, scope, scope_in, set_context, set_mode, tsc,
    tsc_hz, vcpus,
};
pub use probe::{Hooks, Probe};
