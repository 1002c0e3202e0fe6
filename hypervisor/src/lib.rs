//! The embedded Xen model splitnet runs on: machine memory, domains and their p2m, grant tables
//! v1 (copy, map, transfer), event channels and xenstore.
//!
//! Costs are real: machine memory is one memfd cut into 4 KiB frames; each domain sees its frames
//! through its own view mapped at its pfns; a grant copy copies between frames through the
//! hypervisor's direct map; a page flip remaps a frame into the receiver's view with
//! `MAP_FIXED`; a grant map maps the frame into the caller's address space.
//!
//! ```
//! use hypervisor::{Hypervisor, GnttabCopy, GnttabCopyPtr, GrantStatus};
//! let xen = Hypervisor::new(1024).unwrap();
//! let dom0 = xen.create_domain(64).unwrap();
//! let guest = xen.create_domain(64).unwrap();
//! let page = guest.alloc_page().unwrap();
//! let gref = guest.grant_access(dom0.domid(), page, false).unwrap();
//! let src = dom0.alloc_page().unwrap();
//! dom0.write(src, 0, b"hello").unwrap();
//! let mut ops = [GnttabCopy::new(
//!     GnttabCopyPtr::local(src, 0),
//!     GnttabCopyPtr::gref(guest.domid(), gref, 2),
//!     5,
//! )];
//! dom0.grant_copy(&mut ops).unwrap();
//! assert_eq!(ops[0].status(), GrantStatus::Okay);
//! guest.end_access(gref).unwrap();
//! assert_eq!(guest.with_page(page, |p| p[2..7].to_vec()).unwrap(), b"hello");
//! ```
#![deny(unsafe_code)]

pub mod abi;
mod alloc;
mod domain;
pub mod error;
mod evtchn;
mod grant;
mod machine;
#[allow(unsafe_code)]
mod mem;
#[allow(unsafe_code)]
pub mod ringpage;
pub mod traits;
pub mod types;
pub mod xen;
pub mod xenbus;
mod xenstore;

pub use abi::{GnttabCopy, GnttabCopyPtr, GnttabTransfer, GrantEntryV1, GrantStatus};
pub use domain::{DomainHandle, MAP_AREA_SLOTS};
pub use error::{Error, Result};
pub use evtchn::{EvtchnStats, PendingPorts};
pub use grant::TransferState;
pub use grant::map::GrantMapping;
pub use machine::{Hypervisor, HypervisorStats};
pub use mem::{PageBorrow, engine_name};
pub use traits::{
    EventChannel, ForeignMapping, GrantOps, GrantTable, GuestMemory, XenDomain, XenStore,
};
pub use types::*;
pub use xenbus::XenbusState;
pub use xenstore::{VifPaths, WatchEvent, XsConnection, XsPerm, XsPermLevel};
