//! The driver-domain network backend (Linux's `xen-netback`, rebuilt).
//!
//! - [`xenbus`]: the control plane (features, InitWait, reading the frontend's keys, Connected,
//!   teardown), as Linux's `xenbus.c`.
//! - [`Vif`]: one frontend's mapped rings, event channel, rx queue and counters (`interface.c`).
//! - tx path (`tx.rs`): guest → switch; every request copied once and validated as Linux does;
//!   batched grant copies into backend pages.
//! - rx path (`rx.rs`): switch → guest; copy mode with batched grant copies (`CopyBatch`, one
//!   hypercall per `copy_batch_ops` ops, failures patched into their responses) or flip mode
//!   (page transfer); one notification per pass, with ring.h suppression.
//! - [`Netback`]: the loop a dom0 vCPU runs, with [`bridge_lite`] between the vifs and the
//!   [`uplink`].
//!
//! Guest misbehaviour never panics the backend: a bad packet is dropped and counted, a protocol
//! violation disables that vif ([`Fatal`]) with a log line; other vifs carry on.
#![forbid(unsafe_code)]

mod backend;
mod batch;
mod config;
mod error;
pub mod pool;
mod rx;
mod tx;
pub mod uplink;
mod vif;
pub mod xenbus;

pub use backend::{Netback, NetbackSnapshot};
pub use batch::CopyBatch;
pub use config::Config;
pub use error::Error;
pub use uplink::{Uplink, UplinkStats, Wire, WireFrame, uplink};
pub use vif::{Fatal, FrontendKeys, RxMode, Vif, VifId, VifStats};
