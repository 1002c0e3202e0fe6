//! netfront: the Xen guest network frontend, as a smoltcp [`phy::Device`](smoltcp::phy::Device).
//!
//! A guest domain calls [`Netfront::connect`] with its domain handle and a device id; the
//! toolstack must already have created the vif's xenstore directories
//! (`Hypervisor::add_vif`), and a backend (netback) must be serving it on another thread. The
//! handshake follows Linux `xen-netfront.c`: wait for the backend's InitWait, check its
//! features, allocate and grant the tx and rx rings, allocate an event channel, write
//! `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy`, `feature-sg`,
//! `feature-rx-notify`, switch to Connected and wait for the backend's Connected.
//!
//! Data path:
//! - **RX**: buffers are posted in batches, as granted pages (copy mode) or accept-transfer
//!   entries (flip mode); single-slot frames are lent straight from the page to
//!   `RxToken::consume`, multi-slot (`NETRXF_more_data`) frames are assembled.
//! - **TX**: a frame is written into pool pages, each granted read-only for its request and
//!   revoked on the response; frames longer than a page use several slots.
//! - [`Netfront::poll`] processes both rings; [`Netfront::wait`] does the final checks and
//!   blocks on the event channel. Notifications are sent only when the ring says so.
//!
//! A backend that breaks the ring protocol (an impossible producer index) disconnects the
//! device with [`Error::Ring`]; nothing a backend writes can make this crate panic.
//!
//! No `unsafe`: ring pages become ring memory through `hypervisor::ringpage`, the audited place.
#![forbid(unsafe_code)]

mod config;
mod device;
mod error;
mod ringmem;
mod rx;
mod stats;
mod tx;
pub mod xenbus;

pub use config::{FrontConfig, RxMode};
pub use device::{Netfront, NetfrontRxToken, NetfrontTxToken};
pub use error::{Error, Result};
pub use stats::Stats;
