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

/// A mapped grant. Unmaps (and unpins the grant) on drop. Keeps the granting domain's memory
/// alive even if it is destroyed meanwhile (as Xen keeps a zombie domain).
#[derive(Debug)]
pub struct GrantMapping {
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
    /// The page's address in the caller's address space: 4096 bytes, page-aligned, mapped until
    /// this object drops. For `netif_ring::SharedPage::from_raw`: every access must be atomic (the
    /// granting domain accesses the same page concurrently). A read-only mapping faults on write.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.slot.ptr
    }

    /// The granting domain.
    pub fn remote(&self) -> DomId {
        self.remote.id
    }

    /// The grant reference.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// Whether the mapping is read-only.
    pub fn readonly(&self) -> bool {
        !self.write
    }
}

impl Drop for GrantMapping {
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
    /// Maps `remote`'s grant `gref` into this domain's address space. Failures carry Xen's
    /// status: [`Error::Grant`] with bad_domain, bad_gntref, general_error (not a permit-access
    /// grant), permission_denied (granted to another domain, or writable map of a read-only
    /// grant), or no_device_space (map area full).
    pub fn map_grant_ref(
        &self,
        remote: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<GrantMapping> {
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
        let write = !readonly;
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
        Ok(GrantMapping {
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
