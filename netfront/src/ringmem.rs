//! Ring memory from one of the guest's own pages.
//!
//! The frontend allocates each ring page in its own reservation, initialises it and grants it
//! to the backend. `hypervisor::ringpage::own_ring` is the one audited place that vouches for the
//! page as ring memory: it pins the page as a ring (the domain's reads, writes, borrows and frees
//! of it are refused until the ring drops) and owns a handle clone, so the page stays mapped as
//! long as the ring. `Netfront` drops the rings before it frees their pages.

use hypervisor::ringpage::OwnRingPage;
use hypervisor::{FrontendDomain, Pfn};
use netif_ring::PageRing;

use crate::error::{Error, Result};

/// Ring memory over a guest page, kept mapped by a domain handle.
pub(crate) type GuestRing<D> = PageRing<OwnRingPage<D>>;

/// Views `pfn` (a page this frontend allocated and uses for nothing else) as ring memory.
pub(crate) fn guest_ring<D: FrontendDomain>(dom: &D, pfn: Pfn) -> Result<GuestRing<D>> {
    hypervisor::ringpage::own_ring(dom, pfn).map_err(Error::hv("own_ring(ring page)"))
}
