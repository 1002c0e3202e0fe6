//! Ring memory from one of the guest's own pages.
//!
//! The frontend allocates each ring page in its own reservation, initialises it and grants it
//! to the backend. `hypervisor::ringpage::own_ring` is the one audited place that vouches for the
//! page as ring memory (it owns a handle clone, so the page stays mapped as long as the ring);
//! netfront keeps its side of that contract: the pfn is kept out of the rx/tx buffer pools and is
//! never read, written, borrowed or freed through the handle while the ring exists (`Netfront`
//! drops the ring before `free_page`).

use hypervisor::Pfn;
use hypervisor::traits::XenDomain;
use ring::PageRing;

use crate::error::{Error, Result};

/// Ring memory over a guest page, kept mapped by a domain handle.
pub(crate) type GuestRing<D> = PageRing<D>;

/// Views `pfn` (a page this frontend allocated and uses for nothing else) as ring memory.
pub(crate) fn guest_ring<D: XenDomain>(dom: &D, pfn: Pfn) -> Result<GuestRing<D>> {
    hypervisor::ringpage::own_ring(dom, pfn).map_err(Error::hv("own_ring(ring page)"))
}
