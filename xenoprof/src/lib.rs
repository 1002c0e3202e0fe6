//! Xenoprof-style profiling hooks for splitnet.
//!
//! Every crate on the data path reports through these hooks: a thread registers as a vCPU of a
//! domain, work is tagged with a [`Class`] inside a [`Context`], and exact counters or a sampler
//! attribute cycles to (domain, context, class) — the rows of the 2006 Xenoprof table.
#![forbid(unsafe_code)]

pub mod class;
pub mod hooks;

pub use class::{Class, MAX_CLASSES};
pub use hooks::{
    ClockSource, Context, DomId, ManualClock, Mode, Scope, VcpuCounters, flush, hypercall, mode,
    register_vcpu, register_vcpu_with_clock, scope, scope_in, set_context, set_mode, tsc, vcpus,
};
