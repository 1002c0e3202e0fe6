//! A test double of the hypervisor seam: a third, deliberately minimal implementation of
//! [`crate::traits`], independent of [`crate::embedded`], so a driver that runs correctly over
//! it is shown to depend on the seam alone (no model leak).
//!
//! [`Double`] is a tiny machine; [`Double::domain`] gives a [`Dom`], which implements every
//! seam trait:
//! - memory: a fixed arena of page-aligned 4 KiB pages per domain, allocated once; pfn = index,
//!   local address = the page's address in this process (`memory.rs`);
//! - grants: a mutex-guarded table per domain; real byte copies with Xen's per-op statuses;
//!   maps that hand out the granter's page itself and pin it as a ring; no transfers
//!   (`grants.rs`);
//! - event channels: handles owning their ports, delivery masking until unmask, a condvar wait,
//!   and deliberately no descriptor (`evtchn.rs`);
//! - xenstore: one shared `BTreeMap`, watches firing on registration and on changes at or below
//!   their path, permissions ignored, no descriptor (`xenstore.rs`).
//!
//! The double counts what it hands out (pages, grants, mappings, ports, watches) so tests can
//! check that a driver releases everything.
//!
//! ```
//! use hypervisor::double::Double;
//! use hypervisor::traits::{GrantOps, GrantTable, GuestMemory};
//! use hypervisor::{CopyOp, CopyPtr, GrantStatus};
//! let double = Double::new();
//! let (dom0, guest) = (double.domain(0), double.domain(1));
//! let page = guest.alloc_page().unwrap();
//! let gref = guest.grant_access(0, page, false).unwrap();
//! let src = dom0.alloc_page().unwrap();
//! dom0.write(src, 0, b"hello").unwrap();
//! let mut ops = [CopyOp::new(
//!     CopyPtr::Local(dom0.local_addr(src).unwrap()),
//!     CopyPtr::gref(1, gref, 2),
//!     5,
//! )];
//! dom0.grant_copy(&mut ops).unwrap();
//! assert_eq!(ops[0].status, GrantStatus::Okay);
//! guest.end_access(gref).unwrap();
//! assert_eq!(guest.with_page(page, |p| p[2..7].to_vec()).unwrap(), b"hello");
//! ```

mod evtchn;
mod grants;
mod memory;
mod xenstore;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::traits::XenDomain;
use crate::types::DomId;

/// Paths of a vif device pair, as [`Double::add_vif`] lays them out (the toolstack's layout).
pub use crate::xenbus::VifPaths;
pub use evtchn::Evtchn;
pub use grants::Mapping;
pub use xenstore::Store;

/// Pages in each domain's arena (2 MiB).
pub const PAGES_PER_DOMAIN: usize = 512;

/// A domain's state: its memory and its grant table.
struct DomState {
    domid: DomId,
    mem: memory::Arena,
    grants: grants::Table,
}

/// What every handle of the machine shares.
struct Machine {
    doms: Mutex<BTreeMap<DomId, Arc<DomState>>>,
    events: evtchn::Events,
    store: xenstore::Tree,
    /// Grant mappings alive.
    mappings: AtomicUsize,
}

impl Machine {
    fn find(&self, domid: DomId) -> Option<Arc<DomState>> {
        self.doms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&domid)
            .cloned()
    }
}

/// The double's machine: domains, event channels and xenstore in one process.
#[derive(Clone)]
pub struct Double {
    m: Arc<Machine>,
}

impl fmt::Debug for Double {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let doms: Vec<DomId> = self
            .m
            .doms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        f.debug_struct("Double").field("domains", &doms).finish()
    }
}

impl Default for Double {
    fn default() -> Self {
        Self::new()
    }
}

impl Double {
    /// An empty machine.
    pub fn new() -> Self {
        Self {
            m: Arc::new(Machine {
                doms: Mutex::new(BTreeMap::new()),
                events: evtchn::Events::default(),
                store: xenstore::Tree::default(),
                mappings: AtomicUsize::new(0),
            }),
        }
    }

    /// The domain `domid`, created (with [`PAGES_PER_DOMAIN`] pages and its
    /// `/local/domain/<domid>` directory) on first use.
    pub fn domain(&self, domid: DomId) -> Dom {
        let mut doms = self.m.doms.lock().unwrap_or_else(|e| e.into_inner());
        let d = doms
            .entry(domid)
            .or_insert_with(|| {
                self.m
                    .store
                    .toolstack_write(&format!("/local/domain/{domid}/domid"), &domid.to_string());
                Arc::new(DomState {
                    domid,
                    mem: memory::Arena::new(domid, PAGES_PER_DOMAIN),
                    grants: grants::Table::new(),
                })
            })
            .clone();
        Dom {
            d,
            m: self.m.clone(),
        }
    }

    /// Toolstack (libxl): the backend and frontend directories of a vif, cross-linked, with
    /// `online` = 1 and `state` = 1 (Initialising) on both. Permissions are not modelled.
    pub fn add_vif(&self, frontend: DomId, backend: DomId, devid: u32, mac: &str) -> VifPaths {
        let paths = VifPaths::new(frontend, backend, devid);
        for (path, value) in paths.toolstack_nodes(frontend, backend, devid, mac) {
            self.m.store.toolstack_write(&path, &value);
        }
        paths
    }

    /// Toolstack: removes both directories of a vif.
    pub fn remove_vif(&self, paths: &VifPaths) {
        self.m.store.toolstack_rm(&paths.backend);
        self.m.store.toolstack_rm(&paths.frontend);
    }

    /// Grant mappings alive, all domains.
    pub fn live_mappings(&self) -> usize {
        // Relaxed: a count for leak checks; it publishes nothing (pairs with nothing).
        self.m.mappings.load(Ordering::Relaxed)
    }

    /// Event-channel ports of `domid` in use (unbound or bound).
    pub fn ports_in_use(&self, domid: DomId) -> usize {
        self.m.events.ports_in_use(domid)
    }

    /// Ports of `domid` delivered by a wait and not unmasked since.
    pub fn masked_ports(&self, domid: DomId) -> usize {
        self.m.events.masked_ports(domid)
    }

    /// Events delivered to `domid`'s handles by their waits, since the start.
    pub fn events_delivered(&self, domid: DomId) -> u64 {
        self.m.events.delivered(domid)
    }

    /// Xenstore watches registered, all connections.
    pub fn watches(&self) -> usize {
        self.m.store.watches()
    }

    /// Pages of `domid`'s arena allocated and not freed.
    pub fn pages_in_use(&self, domid: DomId) -> usize {
        self.m.find(domid).map_or(0, |d| d.mem.allocated())
    }

    /// Grant entries `domid` has made and not ended.
    pub fn grants_in_use(&self, domid: DomId) -> usize {
        self.m.find(domid).map_or(0, |d| d.grants.in_use())
    }
}

/// A domain of the double, as a driver sees it: implements every seam trait.
#[derive(Clone)]
pub struct Dom {
    d: Arc<DomState>,
    m: Arc<Machine>,
}

impl fmt::Debug for Dom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dom").field("domid", &self.d.domid).finish()
    }
}

impl XenDomain for Dom {
    type Store = Store;
    type Evtchn = Evtchn;
    fn xenstore(&self) -> Result<Store> {
        Ok(Store::new(self.m.clone(), self.d.domid))
    }
    fn open_evtchn(&self) -> Result<Evtchn> {
        Ok(Evtchn::new(self.m.clone(), self.d.domid))
    }
}
