//! What netback's tests, the fuzz targets and the benchmark build alike, on the embedded
//! hypervisor (`xen_model`):
//!
//! - [`frame`](mod@frame): test MACs and frames with tagged payloads;
//! - [`RawFront`]: a frontend driven by hand, that can follow the netif protocol (send, post
//!   buffers, receive, with offload metadata) or break it (any slot at any ring index, any
//!   `req_prod`, any grant reference; grants made, re-made and revoked at will);
//! - [`Machine`] and [`Scene`]: the machine with dom0, netback on the calling thread, guests
//!   added one at a time in the order a test needs, the simulated NIC as an uplink;
//! - [`MidPass`]: guest actions inside a backend pass (before its `n`-th grant hypercall),
//!   through the model's hypercall hook;
//! - [`MemNetdevs`]: host-mode vifs' netdevs in memory, for netback's host mode without Linux.
//!
//! Setup failures in a test panic with what failed (`#[track_caller]`); [`MachineBuilder::build`]
//! and the toolstack steps return [`Error`] instead, for the benchmark.
//!
//! ```
//! use netback::Config;
//! use testkit::{Guest, Scene, frame};
//!
//! let mut s = Scene::new(Config::default());
//! let mut a = s.front(Guest::mac(1));
//! let mut b = s.front(Guest::mac(2));
//! b.post_rx(8);
//! let f = frame(1, 2, 1000, 7);
//! a.send(&f);
//! s.nb.poll().unwrap();
//! assert_eq!(b.recv(), [Ok(f)]);
//! ```
#![forbid(unsafe_code)]

pub mod frame;
mod front;
mod midpass;
pub mod netdev;
mod scene;

pub use frame::{broadcast, frame, frame_between, mac, mac_string};
pub use front::{DRAIN_POSTED, GrantKind, Guest, RawFront, RxFrame, RxFront, TxFront};
pub use midpass::{GRANT_CALLS, MidPass};
pub use netdev::MemNetdevs;
pub use scene::{
    DOM0_PAGES, Error, FRAMES, Machine, MachineBuilder, POOL_PAGES, REMOTE_PAGES, Scene,
};

/// Netback as the kit runs it: on the model's dom0.
pub type Nb = netback::Netback<xen_model::DomainHandle>;
