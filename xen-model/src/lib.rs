//! The embedded Xen model: one machine's memory, its domains and their p2m, grant tables v1,
//! event channels and xenstore, all in this process. [`DomainHandle`] implements the seam's
//! traits (every call acts for that domain, as Xen's `current`); [`EvtchnHandle`] and
//! [`XsConnection`] are its event-channel handles and xenstore connections.
//!
//! Costs are real: machine memory is one memfd cut into 4 KiB frames; each domain sees its frames through its own view mapped
//! at its pfns; a grant copy copies between frames; a page flip remaps a frame with
//! `MAP_FIXED`; a grant map maps the frame into the caller's address space.
//!
//! ```
//! use xen_model::Hypervisor;
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

mod alloc;
mod domain;
mod efd;
mod evtchn;
mod grant;
mod hook;
mod machine;
#[allow(unsafe_code)]
mod mem;
pub mod nic;
mod seam;
mod xenstore;

pub use domain::{DomainHandle, MAP_AREA_SLOTS};
pub use evtchn::{EvtchnHandle, EvtchnStats};
pub use grant::map::{GrantMapping, ReadOnlyMapping};
pub use hook::{Hypercall, HypercallHook};
/// Paths of a vif device pair, as [`Hypervisor::add_vif`] lays them out (the toolstack's layout).
pub use hypervisor::{VifConfig, VifPaths};
pub use machine::{Hypervisor, HypervisorStats};
pub use mem::{PageBorrow, engine_name};
pub use xenstore::XsConnection;
