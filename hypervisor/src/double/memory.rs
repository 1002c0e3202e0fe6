//! The double's memory: a fixed arena of page-aligned 4 KiB pages per domain, allocated once.
//! A pfn is an index into the arena; a page's local address is its address in this process.
//!
//! This is the double's only `unsafe`, and its discipline is: every non-atomic access to a
//! page's bytes happens either under the arena's lock (`read`, `write`, zeroing on `alloc`, the
//! grant copies of [`copy`]) or while a borrow count keeps every writer off (`with_page`). A
//! page pinned as a ring (`pin_ring`, or mapped by a grantee) is refused by all of them, and a
//! borrowed page cannot be pinned, so a pinned page is touched only through the ring's atomics.

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use super::Dom;
use super::grants::Mapping;
use crate::abi::GrantStatus;
use crate::error::{Error, Result};
use crate::traits::{ForeignMapping, GuestMemory};
use crate::types::{DomId, LocalAddr, PAGE_SIZE, Pfn};

/// One page of the arena.
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; PAGE_SIZE]>);

/// What the arena knows of a page.
#[derive(Debug, Clone, Copy, Default)]
struct PageState {
    allocated: bool,
    /// `with_page` borrows running.
    borrows: u32,
    /// Ring pins: `pin_ring` and grant mappings.
    pins: u32,
    /// Grant entries naming the page.
    grants: u32,
    /// Of those, entries the grantee may write through (writable grants, accept-transfer).
    writable: u32,
}

/// A domain's pages.
pub(super) struct Arena {
    domid: DomId,
    pages: Box<[Page]>,
    state: Mutex<Vec<PageState>>,
}

// SAFETY: the page bytes (the only non-`Sync` part) are accessed from any thread only under the
// discipline of the module doc: non-atomic accesses serialised by `state`'s lock or protected
// by a borrow count that excludes writers, pinned pages through atomics only.
#[allow(unsafe_code)]
unsafe impl Sync for Arena {}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("domid", &self.domid)
            .field("pages", &self.pages.len())
            .finish()
    }
}

type States<'a> = MutexGuard<'a, Vec<PageState>>;

/// The state of an allocated page.
fn page(st: &mut [PageState], pfn: Pfn) -> Result<&mut PageState> {
    let pages = st.len() as u64;
    match st.get_mut(pfn.index()) {
        Some(s) if s.allocated => Ok(s),
        Some(_) => Err(Error::PageNotAllocated(pfn)),
        None => Err(Error::PfnOutOfRange { pfn, pages }),
    }
}

/// The state of an allocated page open to a non-atomic access (the module doc's discipline):
/// not pinned as a ring and, for a write, not borrowed by `with_page`.
fn accessible(st: &mut [PageState], pfn: Pfn, write: bool) -> Result<&mut PageState> {
    let s = page(st, pfn)?;
    if s.pins > 0 {
        return Err(Error::PageIsRing(pfn));
    }
    if write && s.borrows > 0 {
        return Err(Error::PageBorrowed(pfn));
    }
    Ok(s)
}

fn bounds(offset: usize, len: usize) -> Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > PAGE_SIZE) {
        return Err(Error::OutOfBounds { offset, len });
    }
    Ok(())
}

impl Arena {
    /// `n` zeroed pages, none allocated.
    pub fn new(domid: DomId, n: usize) -> Self {
        Self {
            domid,
            pages: (0..n)
                .map(|_| Page(UnsafeCell::new([0; PAGE_SIZE])))
                .collect(),
            state: Mutex::new(vec![PageState::default(); n]),
        }
    }

    fn lock(&self) -> States<'_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The page's address. Panics if `pfn` is beyond the arena: callers pass a pfn they
    /// checked (or one a pin keeps allocated).
    pub fn ptr(&self, pfn: Pfn) -> NonNull<u8> {
        // The cell's own address, as `UnsafeCell::get` gives it: writes through it are allowed.
        NonNull::from(&self.pages[pfn.index()].0).cast()
    }

    pub fn alloc(&self) -> Result<Pfn> {
        let mut st = self.lock();
        let i = st
            .iter()
            .position(|s| !s.allocated)
            .ok_or(Error::ReservationExhausted {
                domid: self.domid,
                pages: self.pages.len() as u64,
            })?;
        st[i] = PageState {
            allocated: true,
            ..PageState::default()
        };
        // SAFETY: the page was free: no borrow, pin, grant or mapping names it, and we hold the
        // lock every other non-atomic access takes; the 4096 bytes are the page's own.
        #[allow(unsafe_code)]
        unsafe {
            self.ptr(Pfn(i as u64)).as_ptr().write_bytes(0, PAGE_SIZE)
        };
        Ok(Pfn(i as u64))
    }

    pub fn free(&self, pfn: Pfn) -> Result<()> {
        let mut st = self.lock();
        let s = accessible(&mut st, pfn, true)?;
        if s.grants > 0 {
            return Err(Error::PageBusy(pfn));
        }
        s.allocated = false;
        Ok(())
    }

    pub fn read(&self, pfn: Pfn, offset: usize, buf: &mut [u8]) -> Result<()> {
        let mut st = self.lock();
        accessible(&mut st, pfn, false)?;
        bounds(offset, buf.len())?;
        // SAFETY: in bounds (checked); not pinned, so no atomic access; writers are excluded by
        // the lock we hold; `buf` is our caller's own memory, disjoint from the arena.
        #[allow(unsafe_code)]
        unsafe {
            self.ptr(pfn)
                .as_ptr()
                .add(offset)
                .copy_to_nonoverlapping(buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    pub fn write(&self, pfn: Pfn, offset: usize, data: &[u8]) -> Result<()> {
        let mut st = self.lock();
        accessible(&mut st, pfn, true)?;
        bounds(offset, data.len())?;
        // SAFETY: in bounds; not pinned and not borrowed, and every other access to it takes the
        // lock we hold. `data` may be another page's bytes lent by `with_page`, never this
        // page's (a lent page is borrowed, refused above), so the ranges do not overlap.
        #[allow(unsafe_code)]
        unsafe {
            self.ptr(pfn)
                .as_ptr()
                .add(offset)
                .copy_from_nonoverlapping(data.as_ptr(), data.len())
        };
        Ok(())
    }

    pub fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        {
            let mut st = self.lock();
            let s = accessible(&mut st, pfn, false)?;
            if s.writable > 0 {
                return Err(Error::PageBusy(pfn));
            }
            s.borrows += 1;
        }
        /// Ends the borrow even if `f` panics.
        struct Borrow<'a>(&'a Arena, Pfn);
        impl Drop for Borrow<'_> {
            fn drop(&mut self) {
                if let Some(s) = self.0.lock().get_mut(self.1.index()) {
                    s.borrows -= 1;
                }
            }
        }
        let _b = Borrow(self, pfn);
        // SAFETY: the borrow count (held until `_b` drops, after `f` returns) makes `write`,
        // `free`, `pin` and grant copies into the page refuse, so nothing writes the 4096 bytes
        // while the slice lives; the slice cannot outlive `f` (higher-ranked lifetime).
        #[allow(unsafe_code)]
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr(pfn).as_ptr(), PAGE_SIZE) };
        Ok(f(bytes))
    }

    /// The address of an allocated page.
    pub fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>> {
        page(&mut self.lock(), pfn)?;
        Ok(self.ptr(pfn))
    }

    /// The allocated page at `addr` and the offset in it, if `addr` is one of ours.
    pub fn pfn_of(&self, addr: LocalAddr) -> Option<(Pfn, usize)> {
        let base = self.pages.as_ptr() as usize;
        let off = addr.0.checked_sub(base)?;
        let pfn = Pfn((off / PAGE_SIZE) as u64);
        page(&mut self.lock(), pfn).ok()?;
        Some((pfn, off % PAGE_SIZE))
    }

    /// Pins the page as a ring (refused while it is borrowed).
    pub fn pin(&self, pfn: Pfn) -> Result<()> {
        let mut st = self.lock();
        let s = page(&mut st, pfn)?;
        if s.borrows > 0 {
            return Err(Error::PageBorrowed(pfn));
        }
        s.pins += 1;
        Ok(())
    }

    pub fn unpin(&self, pfn: Pfn) {
        if let Ok(s) = page(&mut self.lock(), pfn) {
            s.pins = s.pins.saturating_sub(1);
        }
    }

    /// Pages allocated.
    pub fn allocated(&self) -> usize {
        self.lock().iter().filter(|s| s.allocated).count()
    }

    /// A grant entry now names the page (`writable`: the grantee may write it).
    pub fn add_grant(&self, pfn: Pfn, writable: bool) -> Result<()> {
        let mut st = self.lock();
        let s = page(&mut st, pfn)?;
        s.grants += 1;
        s.writable += u32::from(writable);
        Ok(())
    }

    /// Undoes [`Arena::add_grant`].
    pub fn remove_grant(&self, pfn: Pfn, writable: bool) {
        if let Ok(s) = page(&mut self.lock(), pfn) {
            s.grants = s.grants.saturating_sub(1);
            s.writable = s.writable.saturating_sub(u32::from(writable));
        }
    }
}

/// One grant copy's byte move: `len` bytes from `src`'s page `spfn` at `soff` to `dst`'s page
/// `dpfn` at `doff` (offsets checked by the caller against the page). Both pages must be
/// allocated and not pinned, the destination not borrowed; else `general_error`.
pub(super) fn copy(
    (src, spfn, soff): (&Arena, Pfn, usize),
    (dst, dpfn, doff): (&Arena, Pfn, usize),
    len: usize,
) -> GrantStatus {
    if soff + len > PAGE_SIZE || doff + len > PAGE_SIZE {
        return GrantStatus::BadCopyArg;
    }
    // Two arenas are locked in domid order; one arena once.
    let same = std::ptr::eq(src, dst);
    let (mut first, mut second) = if same || src.domid < dst.domid {
        (src.lock(), (!same).then(|| dst.lock()))
    } else {
        let d = dst.lock();
        (src.lock(), Some(d))
    };
    let ok_src = accessible(&mut first, spfn, false).is_ok();
    let ok_dst = match second.as_mut() {
        Some(g) => accessible(g, dpfn, true),
        None => accessible(&mut first, dpfn, true),
    }
    .is_ok();
    if !(ok_src && ok_dst) {
        return GrantStatus::GeneralError;
    }
    // SAFETY: both ranges are inside their pages (checked above); neither page is pinned (no
    // atomic access), the destination is not borrowed (no `&[u8]` over it), and we hold the
    // lock of each arena involved, which every other non-atomic access takes. The ranges may
    // overlap (a copy within one page), so `copy` (memmove) is used.
    #[allow(unsafe_code)]
    unsafe {
        std::ptr::copy(
            src.ptr(spfn).as_ptr().add(soff),
            dst.ptr(dpfn).as_ptr().add(doff),
            len,
        )
    };
    GrantStatus::Okay
}

// SAFETY: `page_ptr` is the page's address inside the arena, a boxed slice owned by the domain
// state every clone of the `Dom` holds (so it stays at that address while any clone lives),
// page-aligned (`Page` is `align(4096)`), 4096 bytes, in an `UnsafeCell` (so atomics through it
// are allowed). Between `pin_ring` and `unpin_ring`, `read`, `write`, `with_page` and `free_page`
// refuse the page and grant copies naming it fail (see `copy`).
#[allow(unsafe_code)]
unsafe impl GuestMemory for Dom {
    fn domid(&self) -> DomId {
        self.d.domid
    }
    fn alloc_page(&self) -> Result<Pfn> {
        self.d.mem.alloc()
    }
    fn free_page(&self, pfn: Pfn) -> Result<()> {
        self.d.mem.free(pfn)
    }
    fn read(&self, pfn: Pfn, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.d.mem.read(pfn, offset, buf)
    }
    fn write(&self, pfn: Pfn, offset: usize, data: &[u8]) -> Result<()> {
        self.d.mem.write(pfn, offset, data)
    }
    fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.d.mem.with_page(pfn, f)
    }
    fn local_addr(&self, pfn: Pfn) -> Result<LocalAddr> {
        Ok(LocalAddr(self.d.mem.page_ptr(pfn)?.as_ptr() as usize))
    }
    fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>> {
        self.d.mem.page_ptr(pfn)
    }
    fn pin_ring(&self, pfn: Pfn) -> Result<()> {
        self.d.mem.pin(pfn)
    }
    fn unpin_ring(&self, pfn: Pfn) {
        self.d.mem.unpin(pfn)
    }
}

// SAFETY: `as_ptr` is the granter's page in its arena, which the mapping keeps alive (it holds
// the granter's domain state), page-aligned and 4096 bytes. The mapping pinned the page when it
// was made and unpins it on drop, so meanwhile the arena refuses every non-atomic access to it
// (reads, writes, borrows, frees, grant copies).
#[allow(unsafe_code)]
unsafe impl ForeignMapping for Mapping {
    fn as_ptr(&self) -> NonNull<u8> {
        self.ptr()
    }
}
