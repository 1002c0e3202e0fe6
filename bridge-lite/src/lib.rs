//! bridge-lite: see docs/ARCHITECTURE.md. Filled by its own issue.
#![forbid(unsafe_code)]
