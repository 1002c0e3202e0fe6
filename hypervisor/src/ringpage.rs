//! Shared ring pages as [`netif_ring::PageRing`]s: the one place a page pointer becomes ring memory.
//!
//! netback maps the frontend's granted ring pages; netfront uses pages of its own memory. Both
//! need `netif_ring::PageRing::new`, whose contract (4096 mapped, page-aligned bytes that stay mapped
//! while the owner lives, accessed from this process only through atomics) is exactly what the
//! two `unsafe` seam traits make their implementers vouch for: [`ForeignMapping`] for a mapped
//! grant, [`GuestMemory`] (`page_ptr` plus `pin_ring`) for an own page. So both functions here
//! are safe, and netback and netfront stay free of `unsafe`.

use std::fmt;

use netif_ring::PageRing;

use crate::abi::GrantStatus;
use crate::error::{Error, Result};
use crate::traits::{ForeignMapping, GuestMemory};
use crate::types::Pfn;

/// A mapped grant as ring memory (netback's view of a frontend's ring page). The mapping stays
/// alive, and so mapped, as long as the ring does. A [`ForeignMapping`] is writable by
/// contract, so a read-only mapping cannot get here.
pub fn mapped_ring<M: ForeignMapping>(mapping: M) -> Result<PageRing<M>> {
    let ptr = mapping.as_ptr();
    // SAFETY: `ForeignMapping` is an unsafe trait whose implementers vouch that `as_ptr` is
    // 4096 bytes, page-aligned and mapped readable and writable until the mapping drops, and that nothing in this
    // process touches it non-atomically meanwhile. `PageRing` owns the mapping, so the page
    // outlives every borrow of the ring, and the ring accesses it only through atomics.
    unsafe { PageRing::new(mapping, ptr) }.map_err(|_| Error::Grant(GrantStatus::BadVirtAddr))
}

/// One of a domain's own pages, pinned as a shared ring for as long as this owner lives: the
/// domain's `read`/`write`/`with_page`/`free_page` and grant copies refuse it meanwhile.
pub struct OwnRingPage<D: GuestMemory> {
    dom: D,
    pfn: Pfn,
}

impl<D: GuestMemory> OwnRingPage<D> {
    /// The pinned page.
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }
}

impl<D: GuestMemory> fmt::Debug for OwnRingPage<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnRingPage")
            .field("domid", &self.dom.domid())
            .field("pfn", &self.pfn)
            .finish()
    }
}

impl<D: GuestMemory> Drop for OwnRingPage<D> {
    fn drop(&mut self) {
        self.dom.unpin_ring(self.pfn);
    }
}

/// One of the domain's own pages as ring memory (netfront's rings, before it grants them). The
/// page is pinned as a ring (atomic-only) until the ring drops; the domain can free it after.
pub fn own_ring<D: GuestMemory + Clone>(dom: &D, pfn: Pfn) -> Result<PageRing<OwnRingPage<D>>> {
    dom.pin_ring(pfn)?;
    let owner = OwnRingPage {
        dom: dom.clone(),
        pfn,
    };
    let ptr = dom.page_ptr(pfn)?;
    // SAFETY: `GuestMemory` is an unsafe trait whose implementers vouch that `page_ptr` is the
    // page's address, 4096 bytes, page-aligned and mapped while any handle clone lives (the
    // owner holds one), and that a page pinned with `pin_ring` (done above; undone when the
    // owner drops, after the ring's last borrow) is touched non-atomically by nothing they
    // control. The ring itself uses atomics only; the peer reaches the page through its own
    // mapping and ring, atomically too.
    unsafe { PageRing::new(owner, ptr) }.map_err(|_| Error::Grant(GrantStatus::BadVirtAddr))
}
