//! loom models of the ring and grant protocols.
#![forbid(unsafe_code)]
