//! The backend's own memory on real Xen: one anonymous mapping of this process cut into 4 KiB
//! pages, pfn = page index. gntdev names the local side of a grant copy by virtual address, so
//! a page's [`LocalAddr`] is simply its address here.
//!
//! The kernel writes into these pages during `IOCTL_GNTDEV_GRANT_COPY`, behind the compiler's
//! back, so every access goes through a per-page state word (as the embedded model's view
//! does): a `&[u8]` lent by [`Arena::with_page`] exists only while no writer (own write, or a
//! copy destination handed to the kernel) does, and a page pinned as a shared ring is refused
//! to everything but the ring's atomics.
//!
//! The mapping is `MAP_POPULATE`d: the pages are faulted in once, up front, so the kernel's
//! `get_user_pages_fast` on each copy finds them present instead of faulting them in on the
//! data path. It is not `mlock`ed: gntdev pins each page for the duration of its copy, which is
//! all correctness needs, and `RLIMIT_MEMLOCK` (often 8 MiB) would cap the arena for no gain.
//! It is `MADV_DONTFORK`: a child (a hotplug script) gets no copy-on-write view of it, so a
//! page the kernel is writing for us can never be split away from this process by a fork.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::gntdev::{GrantCopySegment, GrantSide};
use hypervisor::abi::GrantStatus;
use hypervisor::error::{Error, Result};
use hypervisor::types::{LocalAddr, PAGE_SIZE, Pfn};

// Page state word: one per page.
const BORROW_ONE: u64 = 1; // bits 0..16: with_page borrows and reads in progress
const WRITER_ONE: u64 = 1 << 16; // bits 16..32: own writes and copy destinations in flight
const SOURCE_ONE: u64 = 1 << 32; // bits 32..48: copy sources in flight
const FIELD: u64 = 0xFFFF;
const RING: u64 = 1 << 48; // pinned as a shared ring: atomics only
const ALLOCATED: u64 = 1 << 49; // handed out by alloc, not yet freed

fn borrows(s: u64) -> u64 {
    s & FIELD
}
fn writers(s: u64) -> u64 {
    (s >> 16) & FIELD
}
fn sources(s: u64) -> u64 {
    (s >> 32) & FIELD
}
fn is_ring(s: u64) -> bool {
    s & RING != 0
}

/// `pages` pages of this process's memory, each with its state word, and a free list.
pub struct Arena {
    base: NonNull<u8>,
    pages: usize,
    state: Box<[AtomicU64]>,
    free: Mutex<Vec<Pfn>>,
}

// SAFETY: `base` is a mapping the Arena owns and unmaps only on drop; every access through it
// is a raw copy or a `with_page` borrow, both admitted by the atomic state words, or ring
// atomics on a pinned page. The free list is behind a Mutex.
unsafe impl Send for Arena {}
// SAFETY: as for Send: `&Arena` only reaches the memory through the state words.
unsafe impl Sync for Arena {}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("base", &self.base)
            .field("pages", &self.pages)
            .finish()
    }
}

impl Arena {
    /// Maps `pages` pages (at least one), all free.
    pub fn new(pages: usize) -> Result<Self> {
        let bad = Error::BadSize {
            pages: pages as u64,
        };
        let Some(len) = pages.checked_mul(PAGE_SIZE).filter(|_| pages > 0) else {
            return Err(bad);
        };
        // SAFETY: a new private anonymous mapping at an address the kernel picks: no existing
        // memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_os("mmap of the page arena"));
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(bad)?;
        let arena = Arena {
            base,
            pages,
            state: (0..pages).map(|_| AtomicU64::new(0)).collect(),
            free: Mutex::new((0..pages as u64).rev().map(Pfn).collect()),
        };
        // SAFETY: advice on the mapping just made, which the Arena owns (dropping `arena` on
        // failure unmaps it).
        if unsafe { libc::madvise(p, len, libc::MADV_DONTFORK) } != 0 {
            return Err(last_os("madvise(MADV_DONTFORK) of the page arena"));
        }
        Ok(arena)
    }

    /// Pages in the arena.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Pages on the free list.
    pub fn free_pages(&self) -> usize {
        self.free_list().len()
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, Vec<Pfn>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free page (its bytes are whatever its last user left), or `None` if none is left.
    pub fn alloc(&self) -> Option<Pfn> {
        let pfn = self.free_list().pop()?;
        // AcqRel, as every transition in `update`: pairs with the `fetch_update` in `free`
        // that cleared the bit before the page went back on the list.
        self.state[pfn.index()].fetch_or(ALLOCATED, Ordering::AcqRel);
        Some(pfn)
    }

    /// Returns a page to the free list; refused while it is a ring or if it is not allocated.
    pub fn free(&self, pfn: Pfn) -> Result<()> {
        self.range(pfn)?;
        if !self.update(pfn, |s| {
            (!is_ring(s) && s & ALLOCATED != 0).then_some(s & !ALLOCATED)
        }) {
            return Err(if is_ring(self.load(pfn)) {
                Error::PageIsRing(pfn)
            } else {
                Error::PageNotAllocated(pfn)
            });
        }
        self.free_list().push(pfn);
        Ok(())
    }

    fn range(&self, pfn: Pfn) -> Result<()> {
        if pfn.index() < self.pages && pfn.0 < self.pages as u64 {
            Ok(())
        } else {
            Err(Error::PfnOutOfRange {
                pfn,
                pages: self.pages as u64,
            })
        }
    }

    /// The address of `offset` in page `pfn`, after checking `offset + len` fits the page.
    fn check(&self, pfn: Pfn, offset: usize, len: usize) -> Result<*mut u8> {
        self.range(pfn)?;
        if offset.checked_add(len).is_none_or(|e| e > PAGE_SIZE) {
            return Err(Error::OutOfBounds { offset, len });
        }
        // SAFETY: pfn < pages and offset <= PAGE_SIZE: inside (or one past the end of) the
        // mapping of `pages * PAGE_SIZE` bytes.
        Ok(unsafe { self.base.as_ptr().add(pfn.index() * PAGE_SIZE + offset) })
    }

    /// The page's address, for ring memory: valid, page-aligned and mapped while the arena
    /// lives.
    pub fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>> {
        let p = self.check(pfn, 0, 0)?;
        NonNull::new(p).ok_or(Error::PfnOutOfRange {
            pfn,
            pages: self.pages as u64,
        })
    }

    /// The page's address as a number: the local side of a grant copy.
    pub fn local_addr(&self, pfn: Pfn) -> Result<LocalAddr> {
        Ok(LocalAddr(self.check(pfn, 0, 0)?.addr()))
    }

    /// The page and offset `addr` falls in, if it lies inside the arena.
    pub fn pfn_of(&self, addr: LocalAddr) -> Option<(Pfn, usize)> {
        let off = addr.0.checked_sub(self.base.as_ptr().addr())?;
        let pfn = off / PAGE_SIZE;
        (pfn < self.pages).then_some((Pfn(pfn as u64), off % PAGE_SIZE))
    }

    fn load(&self, pfn: Pfn) -> u64 {
        self.state
            .get(pfn.index())
            // Relaxed: only picks an error message.
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    fn update(&self, pfn: Pfn, f: impl Fn(u64) -> Option<u64>) -> bool {
        let Some(w) = self.state.get(pfn.index()) else {
            return false;
        };
        // AcqRel/Acquire: a successful transition acquires the releases of earlier ones (a
        // writer's end happens-before a later borrow's reads; a ring's unpin before a later
        // write) and releases ours.
        w.fetch_update(Ordering::AcqRel, Ordering::Acquire, f)
            .is_ok()
    }

    /// Why `pfn` refuses an access.
    fn busy(&self, pfn: Pfn) -> Error {
        let s = self.load(pfn);
        if is_ring(s) {
            Error::PageIsRing(pfn)
        } else if borrows(s) > 0 {
            Error::PageBorrowed(pfn)
        } else {
            Error::PageBusy(pfn)
        }
    }

    fn release(&self, pfn: Pfn, one: u64) {
        let shift = one.trailing_zeros();
        self.update(pfn, |s| ((s >> shift) & FIELD > 0).then(|| s - one));
    }

    /// Copies bytes out of a page (refused while it is a ring). As in the model, a read does
    /// not wait for writers in flight: it may see a copy's bytes half-written, never a ring.
    pub fn read(&self, pfn: Pfn, offset: usize, buf: &mut [u8]) -> Result<()> {
        let p = self.check(pfn, offset, buf.len())?;
        if !self.update(pfn, |s| {
            (!is_ring(s) && borrows(s) < FIELD).then_some(s + BORROW_ONE)
        }) {
            return Err(self.busy(pfn));
        }
        // SAFETY: `p .. p + len` is inside the mapping (check); `buf` is private memory, so
        // they do not overlap; the page is no ring (held off by our transient borrow).
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        self.release(pfn, BORROW_ONE);
        Ok(())
    }

    /// Copies bytes into a page (refused while it is borrowed or a ring).
    pub fn write(&self, pfn: Pfn, offset: usize, data: &[u8]) -> Result<()> {
        let p = self.check(pfn, offset, data.len())?;
        if !self.update(pfn, |s| {
            (borrows(s) == 0 && !is_ring(s) && writers(s) < FIELD).then_some(s + WRITER_ONE)
        }) {
            return Err(self.busy(pfn));
        }
        // SAFETY: inside the mapping (check); no `&[u8]` of the page exists (our writer count
        // holds `with_page` off) and it is no ring.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        self.release(pfn, WRITER_ONE);
        Ok(())
    }

    /// Lends the page to `f` as `&[u8]`: refused while anything may write it (an own write, a
    /// copy into it) or it is a ring; holds every writer off while `f` runs.
    pub fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let p = self.check(pfn, 0, PAGE_SIZE)?;
        if !self.update(pfn, |s| {
            (writers(s) == 0 && !is_ring(s) && borrows(s) < FIELD).then_some(s + BORROW_ONE)
        }) {
            return Err(self.busy(pfn));
        }
        struct Release<'a>(&'a Arena, Pfn);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.release(self.1, BORROW_ONE);
            }
        }
        let _release = Release(self, pfn);
        // SAFETY: the whole page is inside the mapping (check); our borrow count refuses every
        // writer (own writes and copy destinations) and ring pins until `_release` drops, after
        // `f` is done with the slice, so the bytes do not change under the reference.
        let page = unsafe { std::slice::from_raw_parts(p, PAGE_SIZE) };
        Ok(f(page))
    }

    /// Pins an idle page (no borrow, writer, copy or ring) as a shared ring.
    pub fn pin_ring(&self, pfn: Pfn) -> Result<()> {
        self.range(pfn)?;
        if self.update(pfn, |s| (s & !ALLOCATED == 0).then_some(s | RING)) {
            Ok(())
        } else {
            Err(self.busy(pfn))
        }
    }

    /// Ends [`Arena::pin_ring`].
    pub fn unpin_ring(&self, pfn: Pfn) {
        self.update(pfn, |s| is_ring(s).then_some(s & !RING));
    }

    /// Claims `len` bytes at `addr` as one side of a grant copy the kernel is about to run:
    /// `dest` as a writer (refused while the page is borrowed), else as a source. Refused for
    /// a ring page. The status is what the op gets when refused.
    pub(crate) fn claim_copy(
        &self,
        addr: LocalAddr,
        len: u16,
        dest: bool,
    ) -> Result<CopyClaim<'_>, GrantStatus> {
        let (pfn, offset) = self.pfn_of(addr).ok_or(GrantStatus::BadVirtAddr)?;
        if offset + usize::from(len) > PAGE_SIZE {
            return Err(GrantStatus::BadCopyArg);
        }
        let one = if dest { WRITER_ONE } else { SOURCE_ONE };
        let ok = self.update(pfn, |s| {
            let free = if dest {
                borrows(s) == 0 && writers(s) < FIELD
            } else {
                sources(s) < FIELD
            };
            (free && !is_ring(s)).then_some(s + one)
        });
        if !ok {
            return Err(GrantStatus::GeneralError);
        }
        Ok(CopyClaim {
            arena: self,
            pfn,
            addr,
            len,
            one,
        })
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; nothing borrows the Arena any more, and page
        // pointers are documented as valid only while it lives.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.pages * PAGE_SIZE) };
    }
}

/// A local side of a grant copy, claimed in its page's state word until dropped.
#[derive(Debug)]
pub(crate) struct CopyClaim<'a> {
    arena: &'a Arena,
    pfn: Pfn,
    addr: LocalAddr,
    len: u16,
    one: u64,
}

impl CopyClaim<'_> {
    /// The gntdev segment copying between the claimed bytes and `grant`. It borrows the claim,
    /// so the claim outlives every ioctl the segment is handed to.
    pub fn segment(&self, grant: GrantSide) -> super::Result<GrantCopySegment<'_>> {
        let to_grant = self.one == SOURCE_ONE;
        // SAFETY: `addr .. addr + len` lies inside one page of the arena (claim_copy checked
        // it), which stays mapped read-write while `&Arena` lives, and the segment cannot
        // outlive the claim that borrows it. While the claim lives the page is no ring (the
        // claim was refused for one, and pin_ring refuses a page with a claim), and a
        // destination claim counts as a writer, which `with_page` refuses and which was only
        // taken with no borrow live: no Rust reference points into bytes the kernel writes.
        // A source is only read by the kernel; nothing in this crate makes `&mut` into a page.
        unsafe { GrantCopySegment::with_local(self.addr.0, grant, self.len, to_grant) }
    }
}

impl Drop for CopyClaim<'_> {
    fn drop(&mut self) {
        self.arena.release(self.pfn, self.one);
    }
}

fn last_os(op: &'static str) -> Error {
    Error::last_os(
        op,
        "the arena is anonymous memory: check memory limits (ulimit -v, the cgroup's memory.max) \
         or ask for fewer pages",
    )
}

#[cfg(test)]
#[path = "arena_tests.rs"]
mod tests;
