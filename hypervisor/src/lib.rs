//! The hypervisor seam splitnet's drivers run on, and its implementations.
//!
//! - The root holds the seam: the traits netback and netfront are generic over ([`traits`]),
//!   the neutral types they speak ([`types`], [`ops`], [`Error`]), Xen's ABI structs ([`abi`]),
//!   the xenbus states ([`xenbus`]), the late-EOI policy both drivers apply to their event
//!   channels ([`lateeoi`]) and the audited place where a page becomes ring memory
//!   ([`ringpage`]).
//! - [`embedded`] is the model: machine memory, domains and their p2m, grant tables v1 (copy,
//!   map, transfer), event channels and xenstore, in one process. Costs are real: machine memory
//!   is one memfd cut into 4 KiB frames; each domain sees its frames through its own view mapped
//!   at its pfns; a grant copy copies between frames; a page flip remaps a frame with
//!   `MAP_FIXED`; a grant map maps the frame into the caller's address space.
//!
//! ```
//! use hypervisor::embedded::Hypervisor;
//! use hypervisor::traits::{GrantOps, GrantTable, GuestMemory};
//! use hypervisor::{CopyOp, CopyPtr, GrantStatus};
//! let xen = Hypervisor::new(1024).unwrap();
//! let dom0 = xen.create_domain(64).unwrap();
//! let guest = xen.create_domain(64).unwrap();
//! let page = guest.alloc_page().unwrap();
//! let gref = guest.grant_access(dom0.domid(), page, false).unwrap();
//! let src = dom0.alloc_page().unwrap();
//! dom0.write(src, 0, b"hello").unwrap();
//! let mut ops = [CopyOp::new(
//!     CopyPtr::Local(dom0.local_addr(src).unwrap()),
//!     CopyPtr::gref(guest.domid(), gref, 2),
//!     5,
//! )];
//! GrantOps::grant_copy(&dom0, &mut ops).unwrap();
//! assert_eq!(ops[0].status, GrantStatus::Okay);
//! guest.end_access(gref).unwrap();
//! assert_eq!(guest.with_page(page, |p| p[2..7].to_vec()).unwrap(), b"hello");
//! ```
#![deny(unsafe_code)]

pub mod abi;
#[cfg(feature = "double")]
pub mod double;
pub mod embedded;
pub mod error;
pub mod lateeoi;
pub mod ops;
#[allow(unsafe_code)]
pub mod ringpage;
pub mod traits;
pub mod types;
pub mod xen;
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
pub use xenbus::{VifPaths, XenbusState};
