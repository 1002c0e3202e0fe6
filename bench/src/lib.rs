//! splitnet's benchmarks.
//!
//! - [`ringpair`]: the shared ring driven across two threads with event-channel style blocking,
//!   beside crossbeam's `ArrayQueue` driven the same way (used by `benches/ring.rs`).
#![forbid(unsafe_code)]

pub mod ringpair;
