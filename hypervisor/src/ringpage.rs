//! Shared ring pages as [`ring::PageRing`]s: the one place a page pointer becomes ring memory.
//!
//! netback maps the frontend's granted ring pages; netfront uses pages of its own memory. Both
//! need `ring::PageRing::new`, whose contract (4096 mapped, page-aligned bytes that stay mapped
//! while the owner lives, accessed from this process only through atomics) is exactly what the
//! mapping types here guarantee. Keeping the call here keeps netback and netfront free of
//! `unsafe`.

use ring::PageRing;

use crate::abi::GrantStatus;
use crate::error::{Error, Result};
use crate::grant::map::GrantMapping;
use crate::traits::GuestMemory;
use crate::types::Pfn;

/// A mapped grant as ring memory (netback's view of a frontend's ring page). The mapping stays
/// alive, and so mapped, as long as the ring does.
pub fn mapped_ring(mapping: GrantMapping) -> Result<PageRing<GrantMapping>> {
    let ptr = mapping.as_ptr();
    // SAFETY: `GrantMapping::as_ptr` is 4096 bytes, page-aligned and mapped until the mapping
    // drops; `PageRing` owns the mapping, so the page outlives every borrow of the ring. Within
    // this process the page is otherwise reached through the granting domain's own ring handle
    // (atomics, by `own_ring`'s contract below). Known gap: a hostile frontend may also name its
    // ring page's grant as the source or destination of a grant copy, and the copy engine's raw
    // accesses would then race with the rings' atomics on that one page. Marking ring frames
    // atomic-only while mapped (as grant-table frames are) would close it; until then the race
    // is confined to the hostile guest's own ring page, whose every ring access is atomic and
    // whose contents are validated after each copy.
    unsafe { PageRing::new(mapping, ptr) }.map_err(|_| Error::Grant(GrantStatus::BadVirtAddr))
}

/// One of the domain's own pages as ring memory (netfront's rings, before it grants them). The
/// handle clone keeps the domain's view mapped while the ring lives. Generic over
/// [`GuestMemory`] so a frontend written against the traits can use it.
///
/// The caller must not also `write`/`borrow_page`/`free_page` this page through the handle while
/// the ring lives: ring pages are touched through ring handles (atomics) only.
pub fn own_ring<D: GuestMemory + Clone>(dom: &D, pfn: Pfn) -> Result<PageRing<D>> {
    let ptr = dom.page_ptr(pfn)?;
    // SAFETY: `GuestMemory::page_ptr` is documented to return the page's address in the
    // domain's view, 4096 bytes and page-aligned, mapped while any handle of the domain lives;
    // the ring owns a handle clone, so the page outlives every borrow of the ring. The domain's
    // ring code accesses it only through this ring (atomics, by this function's contract); the
    // peer reaches it through its own grant mapping and ring (atomics); the hypervisor's direct
    // map is another mapping whose grant copies never target a ring page of a well-formed guest.
    unsafe { PageRing::new(dom.clone(), ptr) }.map_err(|_| Error::Grant(GrantStatus::BadVirtAddr))
}
