//! Ring memory from one of the guest's own pages: the crate's only `unsafe`.
//!
//! The frontend allocates each ring page in its own reservation, initialises it and grants it
//! to the backend. [`hypervisor::traits::GuestMemory::page_ptr`] gives the page's address in the
//! domain's view, documented as valid while a handle to the domain lives and for atomic access
//! only; [`ring::PageRing`] keeps a handle clone as its owner, so the page stays mapped as long
//! as the ring exists.

use hypervisor::Pfn;
use hypervisor::traits::XenDomain;
use ring::PageRing;

use crate::error::{Error, Result};

/// Ring memory over a guest page, kept mapped by a domain handle.
pub(crate) type GuestRing<D> = PageRing<D>;

/// Views `pfn` (a page this frontend allocated and uses for nothing else) as ring memory.
pub(crate) fn guest_ring<D: XenDomain>(dom: &D, pfn: Pfn) -> Result<GuestRing<D>> {
    let ptr = dom
        .page_ptr(pfn)
        .map_err(Error::hv("page_ptr(ring page)"))?;
    // SAFETY: `PageRing::new` needs, while the owner lives: 4096 mapped read/write bytes at
    // `ptr`, accessed from this address space only atomically, and not unmapped. The owner is a
    // clone of the domain handle, and `page_ptr` is documented to stay valid (4096 bytes,
    // page-aligned, mapped) for as long as any handle of the domain lives. Netfront never reads,
    // writes, borrows or frees this pfn through the handle while the ring exists: the pfn is
    // kept out of the rx/tx buffer pools, and `Netfront` drops the ring before `free_page`. The
    // backend reaches the page through its own grant mapping (another mapping, used through its
    // own `PageRing`, i.e. atomically) and the hypervisor through its direct map; neither is an
    // access through this pointer, and `SharedPage` tolerates their writes by being all atomics.
    unsafe { PageRing::new(dom.clone(), ptr) }
        .map_err(|_| Error::BadConfig(format!("{pfn} is not page-aligned in the domain's view")))
}
