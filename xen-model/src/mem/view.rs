//! A domain's view of its memory, the page-state word that makes `&[u8]` borrows sound, and the
//! area where a backend maps foreign grants.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{MachineMemory, copy, os_err};
use hypervisor::error::{Error, Result};
use hypervisor::types::{Mfn, PAGE_SIZE, Pfn};

// Page state word, one per reservation pfn.
const BORROW_ONE: u64 = 1; // bits 0..16: live PageBorrows
const WRITER_ONE: u64 = 1 << 16; // bits 16..32: writable grants + in-flight local writes
const RO_ONE: u64 = 1 << 32; // bits 32..48: read-only grants
const FIELD: u64 = 0xFFFF;
const TARGET: u64 = 1 << 48; // an accept-transfer entry names this pfn
const MOVING: u64 = 1 << 49; // the frame is being given away
const RING_ONE: u64 = 1 << 50; // bits 50..64: pins as a shared ring (atomics only)
const RING_FIELD: u64 = 0x3FFF;

fn borrows(s: u64) -> u64 {
    s & FIELD
}
fn writers(s: u64) -> u64 {
    (s >> 16) & FIELD
}
fn ro_grants(s: u64) -> u64 {
    (s >> 32) & FIELD
}
fn rings(s: u64) -> u64 {
    (s >> 50) & RING_FIELD
}

/// Reserves `pages` of address space with no access and no commit charge.
fn reserve(pages: usize) -> Result<NonNull<u8>> {
    // SAFETY: a new anonymous mapping; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * PAGE_SIZE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os_err("mmap(reserve)"));
    }
    NonNull::new(p.cast()).ok_or_else(|| os_err("mmap(reserve)"))
}

/// Maps `count` frames from `mfn` at `at` (inside a range we reserved), replacing what was there.
///
/// # Safety
/// `at .. at + count pages` must lie inside a reservation owned by the caller, and no Rust
/// reference may point into it (raw-pointer users see the new frames, which is the point).
unsafe fn map_frames(
    mem: &MachineMemory,
    at: *mut u8,
    mfn: Mfn,
    count: usize,
    prot: i32,
) -> Result<()> {
    if mfn
        .0
        .checked_add(count as u64)
        .is_none_or(|e| e > mem.frames)
    {
        return Err(Error::BadSize {
            pages: count as u64,
        });
    }
    // SAFETY: MAP_FIXED over our own reservation (caller's contract); the file range is inside
    // the memfd (checked above).
    let p = unsafe {
        libc::mmap(
            at.cast(),
            count * PAGE_SIZE,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            mem.fd(),
            (mfn.0 * PAGE_SIZE as u64) as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os_err("mmap(MAP_FIXED)"));
    }
    Ok(())
}

/// A domain's own virtual range: frame `p2m[pfn]` mapped at `base + pfn * 4096`.
pub(crate) struct View {
    mem: Arc<MachineMemory>,
    base: NonNull<u8>,
    /// Pages mapped (reservation plus grant-table frames).
    mapped: usize,
    /// Reservation pages: the pfns guest code may touch.
    pages: usize,
    state: Box<[AtomicU64]>,
}

// SAFETY: `base` is a mapping owned by the View; all access through it is the copy engine's
// atomic copies, or the `PageBorrow` shared borrow whose exclusion is enforced by the atomic
// state words.
unsafe impl Send for View {}
// SAFETY: as for Send.
unsafe impl Sync for View {}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("pages", &self.pages)
            .field("mapped", &self.mapped)
            .finish()
    }
}

impl View {
    /// Builds the view: reserves `p2m.len()` pages and maps every frame at its pfn. The first
    /// `pages` pfns are the reservation; the rest (grant frames) are mapped but not accessible
    /// through this API.
    pub fn new(mem: Arc<MachineMemory>, p2m: &[Mfn], pages: usize) -> Result<Self> {
        let base = reserve(p2m.len())?;
        let view = Self {
            state: (0..pages).map(|_| AtomicU64::new(0)).collect(),
            mem,
            base,
            mapped: p2m.len(),
            pages,
        };
        // Map contiguous runs with one call each.
        let mut i = 0;
        while i < p2m.len() {
            let mut n = 1;
            while i + n < p2m.len() && p2m[i + n].0 == p2m[i].0 + n as u64 {
                n += 1;
            }
            // SAFETY: pfns i..i+n are inside our fresh reservation; nothing references it yet.
            unsafe {
                map_frames(
                    &view.mem,
                    view.base.as_ptr().add(i * PAGE_SIZE),
                    p2m[i],
                    n,
                    libc::PROT_READ | libc::PROT_WRITE,
                )?
            };
            i += n;
        }
        Ok(view)
    }

    /// Replaces the frame at `pfn` (a page flip: a real page-table update and TLB shootdown).
    /// The caller holds `pfn` in the `MOVING` or `TARGET` state, so no borrow exists.
    pub fn remap(&self, pfn: Pfn, mfn: Mfn) -> Result<()> {
        if pfn.index() >= self.mapped {
            return Err(Error::PfnOutOfRange {
                pfn,
                pages: self.pages as u64,
            });
        }
        // SAFETY: inside our reservation; PageBorrow (the only reference form) is excluded by the
        // caller's MOVING/TARGET state on this pfn.
        unsafe {
            map_frames(
                &self.mem,
                self.base.as_ptr().add(pfn.index() * PAGE_SIZE),
                mfn,
                1,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        }
    }

    fn check(&self, pfn: Pfn, off: usize, len: usize) -> Result<*mut u8> {
        if pfn.index() >= self.pages {
            return Err(Error::PfnOutOfRange {
                pfn,
                pages: self.pages as u64,
            });
        }
        if off.checked_add(len).is_none_or(|e| e > PAGE_SIZE) {
            return Err(Error::OutOfBounds { offset: off, len });
        }
        // SAFETY: pfn < pages <= mapped, off + len <= PAGE_SIZE: inside the mapped view.
        Ok(unsafe { self.base.as_ptr().add(pfn.index() * PAGE_SIZE + off) })
    }

    /// The page's address in this view, for code that accesses it only with atomics or raw
    /// pointers (the shared ring). Valid while the View lives.
    pub fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>> {
        let p = self.check(pfn, 0, 0)?;
        NonNull::new(p).ok_or(Error::PfnOutOfRange {
            pfn,
            pages: self.pages as u64,
        })
    }

    /// Copies bytes out of a page through the view; refused while the page is a shared ring
    /// (a transient borrow without the no-writer condition: the atomic copy may meet writes
    /// through other mappings, which are atomic copies too, but never ring atomics).
    pub fn read(&self, pfn: Pfn, off: usize, buf: &mut [u8]) -> Result<()> {
        let p = self.check(pfn, off, buf.len())?;
        if !self.update(pfn, |s| {
            (rings(s) == 0 && s & MOVING == 0 && borrows(s) < FIELD).then_some(s + BORROW_ONE)
        }) {
            return Err(self.busy(pfn));
        }
        // SAFETY: `p..p+len` is inside one mapped page of the view (check); `buf` is private
        // (`&mut`); the page is not a ring (held off by our transient borrow), so its other
        // users are atomic copies, or reads of a borrowed page.
        unsafe { copy::read_shared(buf, p) };
        self.update(pfn, |s| (borrows(s) > 0).then(|| s - BORROW_ONE));
        Ok(())
    }

    /// Why `pfn` refuses an access: a ring page, or a borrow/transfer in progress.
    fn busy(&self, pfn: Pfn) -> Error {
        let s = self
            .state
            .get(pfn.index())
            // Relaxed: only picks the error message.
            .map_or(0, |w| w.load(Ordering::Relaxed));
        if rings(s) > 0 {
            Error::PageIsRing(pfn)
        } else if borrows(s) > 0 {
            Error::PageBorrowed(pfn)
        } else {
            Error::PageBusy(pfn)
        }
    }

    /// Pins the page as a shared ring: reads, writes, borrows, local copies and transfers are
    /// refused until [`View::ring_end`]. `granted`: the pin comes from a mapping of a grant of
    /// the page (a writable grant exists, and its owner may have pinned it too); otherwise the
    /// page must be entirely unused (so one page backs one ring).
    pub fn ring_begin(&self, pfn: Pfn, granted: bool) -> Result<()> {
        if self.update(pfn, |s| {
            let idle = if granted {
                borrows(s) == 0 && s & (MOVING | TARGET) == 0
            } else {
                s == 0
            };
            (idle && rings(s) < RING_FIELD).then_some(s + RING_ONE)
        }) {
            Ok(())
        } else {
            Err(self.busy(pfn))
        }
    }

    /// Ends one [`View::ring_begin`].
    pub fn ring_end(&self, pfn: Pfn) {
        self.update(pfn, |s| (rings(s) > 0).then(|| s - RING_ONE));
    }

    /// Whether the page is pinned as a ring.
    pub fn is_ring(&self, pfn: Pfn) -> bool {
        self.state
            .get(pfn.index())
            // Acquire: pairs with the Release of ring_begin's transition.
            .is_some_and(|w| rings(w.load(Ordering::Acquire)) > 0)
    }

    /// The pfn and offset of `addr` if it lies in this view's reservation.
    pub fn pfn_of(&self, addr: usize) -> Option<(Pfn, usize)> {
        let off = addr.checked_sub(self.base.as_ptr().addr())?;
        let pfn = off / PAGE_SIZE;
        (pfn < self.pages).then_some((Pfn(pfn as u64), off % PAGE_SIZE))
    }

    /// The address of `pfn` in this view, as a number (for grant-copy local sides).
    pub fn addr_of(&self, pfn: Pfn) -> Result<usize> {
        Ok(self.check(pfn, 0, 0)?.addr())
    }

    /// Copies bytes into a page through the view; refused while the page is borrowed.
    pub fn write(&self, pfn: Pfn, off: usize, data: &[u8]) -> Result<()> {
        let p = self.check(pfn, off, data.len())?;
        if !self.write_begin(pfn) {
            return Err(self.busy(pfn));
        }
        // SAFETY: inside one mapped page of the view (check); no PageBorrow of it exists and
        // it is no ring (write_begin holds both off), so its other users are atomic copies;
        // `data` is private, or a borrowed page, which is not this one (borrowed pages refuse
        // write_begin).
        unsafe { copy::write_shared(p, data) };
        self.write_end(pfn);
        Ok(())
    }

    /// Borrows the page for reading.
    pub fn borrow(&self, pfn: Pfn) -> Result<PageBorrow<'_>> {
        let p = self.check(pfn, 0, PAGE_SIZE)?;
        if !self.update(pfn, |s| {
            (writers(s) == 0 && rings(s) == 0 && s & (TARGET | MOVING) == 0 && borrows(s) < FIELD)
                .then_some(s + BORROW_ONE)
        }) {
            return Err(self.busy(pfn));
        }
        Ok(PageBorrow {
            view: self,
            pfn,
            ptr: p,
        })
    }

    fn update(&self, pfn: Pfn, f: impl Fn(u64) -> Option<u64>) -> bool {
        let Some(w) = self.state.get(pfn.index()) else {
            return false;
        };
        // AcqRel/Acquire: a successful transition acquires the releases of earlier transitions
        // (a writer's `write_end` happens-before a later borrow's reads), and releases ours.
        w.fetch_update(Ordering::AcqRel, Ordering::Acquire, f)
            .is_ok()
    }

    /// A transient local write (own write, or a copy into a local page) begins.
    pub fn write_begin(&self, pfn: Pfn) -> bool {
        self.update(pfn, |s| {
            (borrows(s) == 0 && rings(s) == 0 && s & MOVING == 0 && writers(s) < FIELD)
                .then_some(s + WRITER_ONE)
        })
    }

    /// Ends `write_begin` or `grant_rw_begin`.
    pub fn write_end(&self, pfn: Pfn) {
        self.update(pfn, |s| (writers(s) > 0).then(|| s - WRITER_ONE));
    }

    /// A writable grant of the page is created.
    pub fn grant_rw_begin(&self, pfn: Pfn) -> bool {
        self.update(pfn, |s| {
            (borrows(s) == 0 && s & (MOVING | TARGET) == 0 && writers(s) < FIELD)
                .then_some(s + WRITER_ONE)
        })
    }

    /// A read-only grant of the page is created.
    pub fn grant_ro_begin(&self, pfn: Pfn) -> bool {
        self.update(pfn, |s| {
            (s & (MOVING | TARGET) == 0 && ro_grants(s) < FIELD).then_some(s + RO_ONE)
        })
    }

    /// A read-only grant ends.
    pub fn grant_ro_end(&self, pfn: Pfn) {
        self.update(pfn, |s| (ro_grants(s) > 0).then(|| s - RO_ONE));
    }

    /// An accept-transfer entry names the page: it must be otherwise unused.
    pub fn target_begin(&self, pfn: Pfn) -> bool {
        self.update(pfn, |s| (s == 0).then_some(TARGET))
    }

    /// The accept-transfer entry is gone.
    pub fn target_end(&self, pfn: Pfn) {
        self.update(pfn, |s| Some(s & !TARGET));
    }

    /// The page is about to be given away: it must be otherwise unused.
    pub fn moving_begin(&self, pfn: Pfn) -> bool {
        self.update(pfn, |s| (s == 0).then_some(MOVING))
    }

    /// The page has been replaced.
    pub fn moving_end(&self, pfn: Pfn) {
        self.update(pfn, |s| Some(s & !MOVING));
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: our own reservation; no PageBorrow outlives `&self`, and raw page pointers
        // are documented as valid only while the domain lives.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped * PAGE_SIZE) };
    }
}

/// A page of a domain's own memory borrowed for reading, as `&[u8]`.
///
/// While it lives nothing can write the page: the page-state word refuses the domain's own
/// writes, new writable grants, local copies into it, and transfers into or out of it; and it is
/// only granted when no writable grant exists. Read-only grants are allowed (the hypervisor only
/// reads). Drop it promptly: writers get [`Error::PageBorrowed`] meanwhile.
pub struct PageBorrow<'a> {
    view: &'a View,
    pfn: Pfn,
    ptr: *mut u8,
}

impl PageBorrow<'_> {
    /// The borrowed page.
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }
}

impl Deref for PageBorrow<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is the page's mapping in a View that outlives 'a. The bytes do not
        // change while this borrow lives, because its BORROW_ONE in the page's state word makes
        // every transition a writer needs fail: `write_begin` (the domain's own writes and local
        // copy destinations) and `grant_rw_begin` (a writable grant, which every foreign copy
        // into the page needs) require `borrows(s) == 0`; `ring_begin` requires `borrows(s) ==
        // 0` (granted) or `s == 0`; `moving_begin`/`target_begin` (transfers) require `s == 0`.
        // And `borrow` itself succeeded only with `writers(s) == 0` (no writable grant, no
        // in-flight write), `rings(s) == 0` and neither TARGET nor MOVING set. Those
        // transitions are AcqRel on one word, so each earlier writer's `write_end` happens-before
        // our reads and our drop happens-before any later writer's begin: no write races with
        // the reference. Concurrent readers (read-only grants copied from, `View::read`) are
        // atomic reads, which may race with these plain reads.
        unsafe { std::slice::from_raw_parts(self.ptr, PAGE_SIZE) }
    }
}

impl Drop for PageBorrow<'_> {
    fn drop(&mut self) {
        self.view
            .update(self.pfn, |s| (borrows(s) > 0).then(|| s - BORROW_ONE));
    }
}

impl std::fmt::Debug for PageBorrow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageBorrow")
            .field("pfn", &self.pfn)
            .finish()
    }
}

/// A range of slots in a domain's address space where foreign grants are mapped.
pub(crate) struct MapArea {
    mem: Arc<MachineMemory>,
    base: NonNull<u8>,
    slots: usize,
    free: Mutex<Vec<u32>>,
}

// SAFETY: `base` is a reservation owned by the area; access to mapped slots is raw (ring atomics).
unsafe impl Send for MapArea {}
// SAFETY: the free list is behind a Mutex; the mapping itself is only touched by mmap calls.
unsafe impl Sync for MapArea {}

impl std::fmt::Debug for MapArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapArea")
            .field("slots", &self.slots)
            .finish()
    }
}

impl MapArea {
    /// Reserves `slots` pages of address space.
    pub fn new(mem: Arc<MachineMemory>, slots: usize) -> Result<Self> {
        Ok(Self {
            base: reserve(slots)?,
            mem,
            slots,
            free: Mutex::new((0..slots as u32).rev().collect()),
        })
    }

    /// Maps `mfn` into a free slot; None when the area is full.
    pub fn map(&self, mfn: Mfn, writable: bool) -> Result<Option<MappedSlot>> {
        let Some(slot) = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop() else {
            return Ok(None);
        };
        // SAFETY: slot < slots, inside our reservation.
        let at = unsafe { self.base.as_ptr().add(slot as usize * PAGE_SIZE) };
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: the slot is ours (just popped from the free list); no reference points into it.
        if let Err(e) = unsafe { map_frames(&self.mem, at, mfn, 1, prot) } {
            self.release(slot);
            return Err(e);
        }
        Ok(NonNull::new(at).map(|ptr| MappedSlot { slot, ptr }))
    }

    /// Unmaps a slot (replacing it with an inaccessible page) and frees it.
    pub fn unmap(&self, slot: u32) {
        if slot as usize >= self.slots {
            return;
        }
        // SAFETY: slot inside our reservation; its mapping's owner is giving it up.
        unsafe {
            libc::mmap(
                self.base.as_ptr().add(slot as usize * PAGE_SIZE).cast(),
                PAGE_SIZE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        self.release(slot);
    }

    fn release(&self, slot: u32) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
    }
}

impl Drop for MapArea {
    fn drop(&mut self) {
        // SAFETY: our own reservation; mappings hold an Arc to their domain, so none is live.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.slots * PAGE_SIZE) };
    }
}

/// A slot of a [`MapArea`] holding a foreign frame; the owner unmaps it with [`MapArea::unmap`].
#[derive(Debug)]
pub(crate) struct MappedSlot {
    /// Slot index.
    pub slot: u32,
    /// The page's address in the caller's address space.
    pub ptr: NonNull<u8>,
}

// SAFETY: a page address in a mapping that lives as long as the MapArea (kept alive by the
// mapping object's Arc of its domain); it is only ever handed out as a raw pointer.
unsafe impl Send for MappedSlot {}
// SAFETY: as for Send: no access happens through `&MappedSlot`.
unsafe impl Sync for MappedSlot {}
