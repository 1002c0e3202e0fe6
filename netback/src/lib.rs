//! The driver-domain network backend (Linux's `xen-netback`, rebuilt), generic over the
//! hypervisor seam ([`hypervisor::BackendDomain`]): the same code runs on the embedded model and
//! on real Xen.
//!
//! - [`xenbus`]: the control plane (features, InitWait, reading the frontend's keys, Connected,
//!   teardown, the toolstack's online/state), as Linux's `xenbus.c`.
//! - [`Vif`]: one frontend's mapped rings, event channel, rx queue and counters (`interface.c`).
//! - tx path (`tx.rs`): guest → switch; every request copied once and validated as Linux does;
//!   batched grant copies into backend pages.
//! - rx path (`rx.rs`): switch → guest; copy mode with batched grant copies (`CopyBatch`, one
//!   hypercall per `copy_batch_ops` ops, failures patched into their responses) or flip mode
//!   (page transfer, where the hypervisor can); one notification per pass, with ring.h
//!   suppression.
//! - ctrl ring (`ctrl.rs`, `hash.rs`): receive-side hashing a guest sets up (Toeplitz, its key,
//!   its mapping of hashes to queues), with hash extra-info slots on its frames; multicast
//!   control (`mcast.rs`); `xdp-headroom` on the rx path.
//! - [`uplink`]: ports towards the outside (TAP and `AF_PACKET` in the `netbackd` program, the
//!   embedded model's simulated NIC in the benchmark).
//! - [`Netback`]: the loop a backend vCPU runs, with [`bridge_lite`] between the vifs and the
//!   uplinks.
//!
//! Guest misbehaviour never panics the backend: a bad packet is dropped and counted, a protocol
//! violation disables that vif ([`Fatal`]) with a log line; other vifs carry on.
#![forbid(unsafe_code)]

mod backend;
mod batch;
mod config;
mod control;
mod ctrl;
pub mod device;
mod error;
mod hash;
mod mcast;
pub mod netdev;
mod offloads;
pub mod pool;
pub mod rate;
pub mod ratelimit;
mod rx;
pub mod switch;
mod tx;
pub mod uplink;
mod vif;
pub mod xenbus;

pub use backend::{DeviceInfo, Netback, NetbackSnapshot, QueueDump, RateInfo, RingDump, VifDump};
pub use batch::CopyBatch;
pub use config::Config;
pub use control::ThreadJob;
pub use ctrl::CtrlKeys;
pub use device::{DeviceConfig, ModePolicy, VifMode};
pub use error::{Error, FrontendError};
pub use hash::{HashSettings, MAX_HASH_KEY, MAX_HASH_MAPPING, RxHash};
pub use mcast::MCAST_MAX;
pub use netdev::Netdevs;
pub use netif_ring::netif::RxMode;
pub use offloads::{Accepts, Unfit};
pub use rate::Rate;
pub use switch::{SwitchId, SwitchSnapshot};
pub use uplink::{Uplink, UplinkIo, UplinkStats, Wakeup};
pub use vif::{Fatal, FrontendKeys, FrontendOffloads, QueueKeys, Vif, VifId, VifStats};
