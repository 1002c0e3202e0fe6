//! Xen's shared I/O rings (`io/ring.h`) and the netif wire structs (`io/netif.h`), byte-exact.
//!
//! A ring lives in one 4096-byte page shared between a frontend (the guest) and a backend (the
//! driver domain): a 64-byte header of free-running producer and event indices, then a
//! power-of-two array of slots, each holding a request or, later, its response.
//!
//! - [`netif`]: `TxRequest`, `TxResponse`, `RxRequest`, `RxResponse`, `ExtraInfo` and the
//!   `NETTXF_*`/`NETRXF_*`/`NETIF_RSP_*` constants, with compile-time layout assertions.
//! - [`ctrl`]: the control ring's `CtrlRequest`/`CtrlResponse` (16/12 bytes, 128 slots), the
//!   `XEN_NETIF_CTRL_*` constants and netif.h's Toeplitz hash.
//! - [`FrontRing`] and [`BackRing`]: each side's operations only, named after the ring.h macros
//!   (`push_requests_and_check_notify`, `final_check_for_responses`, `unconsumed_requests`, ...),
//!   with event suppression exactly as ring.h does it.
//! - [`SharedPage::from_raw`] turns a mapped page into ring memory: the crate's only `unsafe`.
//! - [`OwnedRing`] is heap ring memory of any power-of-two size, for tests and loom.
//!
//! Every request and response is copied out of shared memory once; no reference into the page
//! escapes. A peer's impossible producer index is a [`RingError`], never a panic.
//!
//! Under `--cfg loom` the atomics come from loom (see `sync`), and the same code is model-checked
//! by the `loom-tests` crate.
#![deny(unsafe_code)]

mod back;
pub mod ctrl;
mod error;
mod front;
pub mod netif;
pub mod notify;
#[allow(unsafe_code)]
mod page;
pub mod raw;
mod sring;
mod sync;

pub use back::BackRing;
pub use error::RingError;
pub use front::FrontRing;
pub use page::PageRing;
pub use sring::{
    HEADER_SIZE, Header, OwnedRing, PAGE_SIZE, RingKind, RingMem, RxRing, SharedPage, Slot, TxRing,
    ring_size,
};
pub use sync::SeededBug;
#[cfg(loom)]
pub use sync::seed_bug;

pub use ctrl::CtrlRing;

/// A frontend's transmit ring over ring memory `M`.
pub type TxFrontRing<M> = FrontRing<TxRing, M>;
/// A backend's transmit ring.
pub type TxBackRing<M> = BackRing<TxRing, M>;
/// A frontend's receive ring.
pub type RxFrontRing<M> = FrontRing<RxRing, M>;
/// A backend's receive ring.
pub type RxBackRing<M> = BackRing<RxRing, M>;
/// A frontend's control ring.
pub type CtrlFrontRing<M> = FrontRing<CtrlRing, M>;
/// A backend's control ring.
pub type CtrlBackRing<M> = BackRing<CtrlRing, M>;
