//! splitnet benchmarks.
#![forbid(unsafe_code)]
