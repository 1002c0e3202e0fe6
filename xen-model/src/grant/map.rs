//! `GNTTABOP_map_grant_ref` / `unmap_grant_ref`: a foreign frame mapped into the caller's address
//! space (its map area) with a real `mmap(MAP_FIXED)`, pinned (`reading`/`writing` set) for as
//! long as the mapping lives.
//!
//! Mappings exist for shared rings, whose every access is atomic: while a page is mapped it is
//! atomic-only (raw copies through the direct map refuse its frame, and the granting domain's
//! own reads, writes and borrows of it are refused), so a frontend that names its own ring page
//! in a grant copy gets a failed op, never a data race with the ring.

use std::ptr::NonNull;
use std::sync::Arc;

use xenoprof::Class;

use super::{acquire, release};
use crate::domain::{Domain, DomainHandle};
use crate::machine::Stats;
use crate::mem::MappedSlot;
use hypervisor::abi::GrantStatus;
use hypervisor::error::{Error, Result};
use hypervisor::types::{DOMID_SELF, DomId, GrantRef, Mfn, Pfn};

/// A mapped grant, readable and writable: the seam's `ForeignMapping`, what a shared ring is
/// built on. Unmaps (and unpins the grant) on drop. Keeps the granting domain's memory alive
/// even if it is destroyed meanwhile (as Xen keeps a zombie domain).
#[derive(Debug)]
pub struct GrantMapping(Mapped);

/// A grant mapped read-only (`GNTMAP_readonly`). A type of its own, not a `ForeignMapping`:
/// its page faults on write, so it can never become a (writable) shared ring:
///
/// ```compile_fail
/// # use hypervisor::GrantTable;
/// # use hypervisor::traits::GuestMemory;
/// let xen = xen_model::Hypervisor::new(64).unwrap();
/// let (dom0, guest) = (xen.create_domain(8).unwrap(), xen.create_domain(8).unwrap());
/// let page = guest.alloc_page().unwrap();
/// let gref = guest.grant_access(dom0.domid(), page, true).unwrap();
/// let ro = dom0.map_grant_ref_readonly(guest.domid(), gref).unwrap();
/// let ring = hypervisor::ringpage::mapped_ring(ro); // ReadOnlyMapping is not a ForeignMapping
/// ```
#[derive(Debug)]
pub struct ReadOnlyMapping(Mapped);

#[derive(Debug)]
struct Mapped {
    caller: Arc<Domain>,
    remote: Arc<Domain>,
    gref: GrantRef,
    write: bool,
    slot: MappedSlot,
    /// The granter's page and its frame, atomic-only while mapped.
    pfn: Pfn,
    mfn: Mfn,
}

impl GrantMapping {
    /// The page's address in the caller's address space: 4096 bytes, page-aligned, readable and
    /// writable, mapped until this object drops. For `netif_ring::SharedPage::from_raw`: every
    /// access must be atomic (the granting domain accesses the same page concurrently).
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.0.slot.ptr
    }

    /// The granting domain.
    pub fn remote(&self) -> DomId {
        self.0.remote.id
    }

    /// The grant reference.
    pub fn gref(&self) -> GrantRef {
        self.0.gref
    }
}

impl ReadOnlyMapping {
    /// The page's address in the caller's address space: 4096 bytes, page-aligned, readable
    /// only (a write faults), mapped until this object drops; read it through atomics only.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.0.slot.ptr
    }

    /// The granting domain.
    pub fn remote(&self) -> DomId {
        self.0.remote.id
    }

    /// The grant reference.
    pub fn gref(&self) -> GrantRef {
        self.0.gref
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let _h = xenoprof::hypercall(Class::GRANT_TABLE);
        {
            let _m = xenoprof::scope(Class::MM);
            self.caller.map_area.unmap(self.slot.slot);
        }
        self.caller.machine.mem.atomic_end(self.mfn);
        self.remote.view.ring_end(self.pfn);
        release(&self.remote, self.gref, self.write);
        Stats::add(&self.caller.machine.stats.unmaps, 1);
    }
}

impl DomainHandle {
    /// Maps `remote`'s grant `gref` readable and writable into this domain's address space.
    /// Failures carry Xen's status: [`Error::Grant`] with bad_domain, bad_gntref, general_error
    /// (not a permit-access grant), permission_denied (granted to another domain, or a
    /// read-only grant), or no_device_space (map area full).
    pub fn map_grant_ref(&self, remote: DomId, gref: GrantRef) -> Result<GrantMapping> {
        self.map(remote, gref, true).map(GrantMapping)
    }

    /// Maps `remote`'s grant `gref` read-only (`GNTMAP_readonly`); failures as
    /// [`DomainHandle::map_grant_ref`]'s, except that a read-only grant is fine.
    pub fn map_grant_ref_readonly(&self, remote: DomId, gref: GrantRef) -> Result<ReadOnlyMapping> {
        self.map(remote, gref, false).map(ReadOnlyMapping)
    }

    fn map(&self, remote: DomId, gref: GrantRef, write: bool) -> Result<Mapped> {
        let _h = xenoprof::hypercall(Class::GRANT_TABLE);
        let caller = &self.d;
        let rid = if remote == DOMID_SELF {
            caller.id
        } else {
            remote
        };
        let rdom = if rid == caller.id {
            caller.clone()
        } else {
            caller
                .machine
                .find_domain(rid)
                .ok_or(Error::Grant(GrantStatus::BadDomain))?
        };
        let pfn = acquire(&rdom, gref, caller.id, write).map_err(Error::Grant)?;
        let Some(mfn) = rdom.p2m(pfn) else {
            release(&rdom, gref, write);
            return Err(Error::Grant(GrantStatus::GeneralError));
        };
        if rdom.view.ring_begin(pfn, true).is_err() {
            release(&rdom, gref, write);
            return Err(Error::Grant(GrantStatus::GeneralError));
        }
        caller.machine.mem.atomic_begin(mfn);
        let unpin = || {
            caller.machine.mem.atomic_end(mfn);
            rdom.view.ring_end(pfn);
            release(&rdom, gref, write);
        };
        let mapped = {
            let _m = xenoprof::scope(Class::MM);
            caller.map_area.map(mfn, write)
        };
        let slot = match mapped {
            Ok(Some(s)) => s,
            Ok(None) => {
                unpin();
                return Err(Error::Grant(GrantStatus::NoDeviceSpace));
            }
            Err(e) => {
                unpin();
                return Err(e);
            }
        };
        Stats::add(&caller.machine.stats.maps, 1);
        Ok(Mapped {
            caller: caller.clone(),
            remote: rdom,
            gref,
            write,
            slot,
            pfn,
            mfn,
        })
    }
}
