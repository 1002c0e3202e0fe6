//! splitnet's benchmarks.
//!
//! - [`tcp_rx`]: the single-TCP-stream receive experiment, generic over a [`link::Link`]: a
//!   remote smoltcp sender, a guest smoltcp receiver, and whatever carries frames between them.
//! - [`many`]: the scale experiment, many guests on one backend beside one (`bench many`).
//! - [`heap`]: a counting global allocator attributing heap bytes to the driver domain's thread.
//! - [`link`]: the link abstraction and the `direct` link (smoltcp to smoltcp, no driver domain).
//! - [`report`]: a run's result (JSON shape), cycles per packet by class, text reports.
//! - [`ladder`]: the optimization ladder's steps, savings between steps and its report.
//! - [`chart`]: SVG bar charts of cycles per packet by class.
//! - [`ringpair`]: the shared ring driven across two threads with event-channel style blocking,
//!   beside crossbeam's `ArrayQueue` driven the same way (used by `benches/ring.rs`).
#![deny(unsafe_code)]

pub mod chart;
pub mod cputime;
mod error;
pub mod floor;
#[allow(unsafe_code)]
pub mod heap;
pub mod host;
pub mod ladder;
pub mod link;
pub mod many;
pub mod placement;
pub mod report;
pub mod ringpair;
pub mod tcp_rx;

pub use error::Error;
