//! The hypervisor seam splitnet's drivers run on.
//!
//! - The root holds the seam: the traits netback and netfront are generic over ([`traits`]),
//!   the neutral types they speak ([`types`], [`ops`], [`Error`]), Xen's ABI structs ([`abi`]),
//!   the xenbus states ([`xenbus`]), the late-EOI policy both drivers apply to their event
//!   channels ([`lateeoi`]) and the audited place where a page becomes ring memory
//!   ([`ringpage`]).
//!
//! Implementations live in their own crates, so a driver that depends on this one cannot reach
//! them: `xen-model` (the embedded model of Xen: memory, domains, grants, event channels,
//! xenstore, a simulated NIC) and `xen-linux` (real Xen from a Linux dom0 or driver domain,
//! through `/dev/xen`). [`double`] (feature `double`) is a deliberately small third
//! implementation for tests that show a driver depends on the seam alone.
#![deny(unsafe_code)]

pub mod abi;
#[cfg(feature = "double")]
pub mod double;
pub mod error;
pub mod lateeoi;
pub mod ops;
#[allow(unsafe_code)]
pub mod ringpage;
pub mod traits;
pub mod types;
pub mod xenbus;

pub use abi::{GrantEntryV1, GrantStatus};
pub use error::{Error, Result};
pub use lateeoi::{Eoi, LateEoi};
pub use ops::{CopyOp, CopyPtr, TransferOp};
pub use traits::{
    BackendDomain, EventChannel, ForeignMapping, FrontendDomain, GrantOps, GrantTable, GuestMemory,
    XenDomain, XenStore,
};
pub use types::*;
pub use xenbus::{VifConfig, VifPaths, XenbusState};
