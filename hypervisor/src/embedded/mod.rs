//! The embedded Xen model: one machine's memory, its domains and their p2m, grant tables v1,
//! event channels and xenstore, all in this process. [`DomainHandle`] implements the seam's
//! traits (every call acts for that domain, as Xen's `current`); [`EvtchnHandle`] and
//! [`XsConnection`] are its event-channel handles and xenstore connections.

mod alloc;
mod domain;
mod efd;
mod evtchn;
mod grant;
mod machine;
#[allow(unsafe_code)]
mod mem;
mod seam;
mod xenstore;

/// Paths of a vif device pair, as [`Hypervisor::add_vif`] lays them out (the toolstack's layout).
pub use crate::xenbus::VifPaths;
pub use domain::{DomainHandle, MAP_AREA_SLOTS};
pub use evtchn::{EvtchnHandle, EvtchnStats};
pub use grant::map::GrantMapping;
pub use machine::{Hypervisor, HypervisorStats};
pub use mem::{PageBorrow, engine_name};
pub use xenstore::XsConnection;
