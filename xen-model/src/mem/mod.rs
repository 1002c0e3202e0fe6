//! Machine memory: the only module with `unsafe`.
//!
//! Machine memory is one memfd cut into 4 KiB frames. The hypervisor sees every frame through its
//! direct map ([`MachineMemory`]); each domain sees its frames through its own view ([`View`]),
//! built by mapping frames at their pfns with `MAP_FIXED`; a backend maps foreign grants into a
//! [`MapArea`]. The same physical page is thus reachable at several virtual addresses, and other
//! threads (other domains' vCPUs) touch it concurrently. So nothing here hands out `&mut [u8]`
//! over guest memory: bytes move with the copy engine's atomic copies (`copy`: per-byte relaxed
//! atomic copies, an asm loop explained as such or `AtomicU64` words; see its docs for the
//! argument), grant entries with atomics, and the one shared borrow ([`PageBorrow`]) is guarded
//! by a per-page state word that excludes every writer. No frame is ever touched with
//! `memcpy`, `ptr::copy*` or `ptr::write_bytes`.
//!
//! Frames that hold grant tables are marked "atomic only": copies refuse them, so the
//! `&AtomicU32` references [`GrantFrames::entry`] hands out never meet an access of another size.

mod copy;
mod view;

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

pub use copy::engine_name;
pub use view::PageBorrow;
pub(crate) use view::{MapArea, MappedSlot, View};

use hypervisor::error::{Error, Result};
use hypervisor::types::{Mfn, PAGE_SIZE};

fn os_err(op: &'static str) -> Error {
    Error::last_os(
        op,
        "check memory limits (ulimit -v, vm.max_map_count) and memfd support",
    )
}

/// The machine's memory: a memfd of `frames` pages and the hypervisor's direct map of it.
pub(crate) struct MachineMemory {
    fd: OwnedFd,
    base: NonNull<u8>,
    frames: u64,
    /// Per frame, how many reasons it has to be touched by its own atomics only (it holds a grant
    /// table, or is pinned as a shared ring by its owner or by a mapping): copies refuse it.
    atomic_only: Box<[AtomicU16]>,
}

// SAFETY: `base` is a shared mapping that lives as long as `self`; all access through it is the
// copy engine's atomic copies or atomics, which are fine from any thread.
unsafe impl Send for MachineMemory {}
// SAFETY: as for Send; no method hands out unsynchronised references.
unsafe impl Sync for MachineMemory {}

impl std::fmt::Debug for MachineMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineMemory")
            .field("frames", &self.frames)
            .finish()
    }
}

impl MachineMemory {
    /// Creates a sparse memfd of `frames` pages (RAM is used only for frames touched) and maps it.
    pub fn new(frames: u64) -> Result<Self> {
        let len = frames
            .checked_mul(PAGE_SIZE as u64)
            .filter(|l| frames > 0 && *l <= isize::MAX as u64)
            .ok_or(Error::BadSize { pages: frames })?;
        // SAFETY: a valid NUL-terminated name; flags are valid.
        let raw = unsafe { libc::memfd_create(c"splitnet-machine".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(os_err("memfd_create"));
        }
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on our fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(os_err("ftruncate"));
        }
        // SAFETY: new shared mapping of the whole file; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err("mmap(direct map)"));
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| os_err("mmap(direct map)"))?;
        let atomic_only = (0..frames).map(|_| AtomicU16::new(0)).collect();
        Ok(Self {
            fd,
            base,
            frames,
            atomic_only,
        })
    }

    /// Number of frames.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The direct-map address of a frame that copies may touch.
    #[inline]
    fn plain_frame(&self, mfn: Mfn) -> Option<*mut u8> {
        let flag = self.atomic_only.get(mfn.index())?;
        // Relaxed: the count only rises before any copy can name the frame (grant frames are
        // in no p2m range copies accept; a ring pin comes before the page is granted, or, for a
        // mapped ring, before the backend reads requests that could name it: both ordered before
        // this load by the grant entry's Release/Acquire pair or program order) and falls only
        // when no atomic user is left.
        if flag.load(Ordering::Relaxed) != 0 {
            return None;
        }
        // SAFETY: mfn < frames (the `get` above), so the offset is inside the mapping.
        Some(unsafe { self.base.as_ptr().add(mfn.index() * PAGE_SIZE) })
    }

    /// Copies `len` bytes between frames through the direct map. Returns false (copying nothing)
    /// if a frame is out of range or atomic-only, or a range leaves its page.
    pub fn copy(&self, dst: Mfn, doff: usize, src: Mfn, soff: usize, len: usize) -> bool {
        if doff.checked_add(len).is_none_or(|e| e > PAGE_SIZE)
            || soff.checked_add(len).is_none_or(|e| e > PAGE_SIZE)
        {
            return false;
        }
        let (Some(d), Some(s)) = (self.plain_frame(dst), self.plain_frame(src)) else {
            return false;
        };
        // SAFETY: both ranges lie inside mapped, plain frames (checked above).
        let (d, s) = unsafe { (d.add(doff), s.add(soff)) };
        if dst == src && doff.abs_diff(soff) < len {
            // SAFETY: both ranges lie inside one plain frame (checked above).
            unsafe { move_in_frame(d, s, len) };
        } else {
            // SAFETY: in range and non-overlapping (different frames, or disjoint ranges), each
            // inside one plain frame; other threads access frames only through the copy engine,
            // atomics on atomic-only frames (refused above), or reads of a page borrowed with no
            // writer.
            unsafe { copy::copy_shared(d, s, len) };
        }
        true
    }

    /// Benchmark baseline: copies between frames with no grant work, with the copy engine
    /// (`engine == true`, through the direct map, as a grant copy does) or with glibc's
    /// `memcpy` (`engine == false`).
    ///
    /// `memcpy` is not an atomic copy, so it must not touch frames other threads may access.
    /// It copies between the same frame numbers and offsets of this thread's *twin* of machine
    /// memory instead: a memfd of the same size (sparse, so only frames a benchmark touches cost
    /// RAM), the same kind of 4 KiB shared-memory pages, mapped once and reachable only from
    /// this thread. It measures what `memcpy` does at the same sizes, offsets and footprint,
    /// rep-movsb pit included, without a race with anyone.
    pub fn copy_baseline(
        &self,
        engine: bool,
        dst: Mfn,
        doff: usize,
        src: Mfn,
        soff: usize,
        len: usize,
    ) -> bool {
        if doff.checked_add(len).is_none_or(|e| e > PAGE_SIZE)
            || soff.checked_add(len).is_none_or(|e| e > PAGE_SIZE)
            || dst == src
        {
            return false;
        }
        let (Some(d), Some(s)) = (self.plain_frame(dst), self.plain_frame(src)) else {
            return false;
        };
        if engine {
            // SAFETY: in range (checked above) of two different plain frames, so the ranges are
            // valid and disjoint; other threads access frames only through the copy engine (or
            // read a borrowed page, with no writer).
            unsafe { copy::copy_shared(d.add(doff), s.add(soff), len) };
            return true;
        }
        TWIN.with_borrow_mut(|twin| {
            if twin.as_ref().is_none_or(|t| t.frames < self.frames) {
                *twin = Twin::new(self.frames);
            }
            let Some(t) = twin.as_ref() else {
                return false;
            };
            // SAFETY: the twin holds at least `self.frames` frames, so both frames' ranges are
            // inside its mapping (offsets checked above); dst != src, so they are disjoint. The
            // twin is private to this thread (a thread-local, its memfd closed after mapping, never
            // handed out) and this is the only code that touches it, so nothing accesses these
            // bytes concurrently: a plain `memcpy` is fine here, and only here.
            unsafe {
                let base = t.base.as_ptr();
                std::ptr::copy_nonoverlapping(
                    base.add(src.index() * PAGE_SIZE + soff),
                    base.add(dst.index() * PAGE_SIZE + doff),
                    len,
                );
            }
            true
        })
    }

    /// Reads bytes from a frame through the direct map (false if out of range or atomic-only).
    pub fn read(&self, mfn: Mfn, off: usize, buf: &mut [u8]) -> bool {
        let Some(f) = self.plain_frame(mfn) else {
            return false;
        };
        if off.checked_add(buf.len()).is_none_or(|e| e > PAGE_SIZE) {
            return false;
        }
        // SAFETY: the range is inside one plain frame, whose concurrent users go through the copy
        // engine (or read a borrowed page, with no writer); `buf` is private (`&mut`).
        unsafe { copy::read_shared(buf, f.add(off)) };
        true
    }

    /// Writes bytes into a frame through the direct map (false if out of range or atomic-only).
    pub fn write(&self, mfn: Mfn, off: usize, data: &[u8]) -> bool {
        let Some(f) = self.plain_frame(mfn) else {
            return false;
        };
        if off.checked_add(data.len()).is_none_or(|e| e > PAGE_SIZE) {
            return false;
        }
        // SAFETY: as in `read` (a page is never borrowed while anyone may write it: whoever
        // writes a domain's page through the direct map holds its writer state first, see
        // `PageBorrow`). `data` is a Rust slice: private, or a borrowed page, which therefore
        // is not the page written here, so the ranges do not overlap.
        unsafe { copy::write_shared(f.add(off), data) };
        true
    }

    /// Zeroes frames and returns their RAM to the host (`fallocate(PUNCH_HOLE)`): the scrub Xen
    /// does on domain destruction.
    pub fn discard(&self, first: Mfn, count: u64) {
        if first.0.checked_add(count).is_none_or(|e| e > self.frames) {
            return;
        }
        // SAFETY: plain syscall on our fd; a hole reads back as zeros through every mapping.
        let rc = unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (first.0 * PAGE_SIZE as u64) as libc::off_t,
                (count * PAGE_SIZE as u64) as libc::off_t,
            )
        };
        if rc != 0 {
            // Not fatal: zero by hand instead. The frames should be unowned by now, but that is
            // the caller's bookkeeping, not something this module can see, so zero them with
            // the atomic copy like any other frame write.
            static ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
            for m in first.0..first.0 + count {
                if let Some(f) = self.plain_frame(Mfn(m)) {
                    // SAFETY: a whole plain frame, in range; concurrent users (if any were left)
                    // go through the copy engine; `ZEROS` is private (immutable).
                    unsafe { copy::write_shared(f, &ZEROS) };
                }
            }
        }
    }

    /// The frame gains a reason to be atomic-only (see `plain_frame`).
    pub fn atomic_begin(&self, mfn: Mfn) {
        if let Some(f) = self.atomic_only.get(mfn.index()) {
            // Relaxed: see `plain_frame`. Saturating: 65535 pins of one frame is a bug elsewhere,
            // and staying atomic-only is the safe side.
            let _ = f.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1));
        }
    }

    /// The frame loses one reason to be atomic-only.
    pub fn atomic_end(&self, mfn: Mfn) {
        if let Some(f) = self.atomic_only.get(mfn.index()) {
            // Relaxed: see `plain_frame`.
            let _ = f.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
        }
    }

    fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Same frame, overlapping ranges: memmove semantics, as an atomic copy of the whole source
/// into a private bounce buffer, then out of it. Every source byte is read before any
/// destination byte is written, which is all memmove promises; that a concurrent writer may
/// change bytes in between is the same tearing any atomic copy allows. Rare (a domain copying
/// within one of its own pages), so two copies of at most a page are fine; out of line, so the
/// page-sized buffer is not in `copy`'s stack frame on every grant copy.
///
/// # Safety
/// `d..d + len` and `s..s + len` lie inside one plain frame (so `len <= PAGE_SIZE`).
#[cold]
#[inline(never)]
unsafe fn move_in_frame(d: *mut u8, s: *const u8, len: usize) {
    let mut bounce = [0u8; PAGE_SIZE];
    let bounce = &mut bounce[..len];
    // SAFETY: `s..s + len` is inside one plain frame (the caller's contract), whose concurrent
    // users go through the copy engine (or read a borrowed page, with no writer); `bounce` is
    // private.
    unsafe { copy::read_shared(bounce, s) };
    // SAFETY: as above, for `d..d + len`; `bounce` is private, so not overlapping.
    unsafe { copy::write_shared(d, bounce) };
}

impl Drop for MachineMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; nothing can use it any more (we are being dropped
        // and every user holds an Arc to us).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.frames as usize * PAGE_SIZE) };
    }
}

thread_local! {
    /// This thread's twin of machine memory, for [`MachineMemory::copy_baseline`]'s `memcpy`.
    static TWIN: RefCell<Option<Twin>> = const { RefCell::new(None) };
}

/// A private memfd mapping shaped like machine memory (see [`MachineMemory::copy_baseline`]).
struct Twin {
    base: NonNull<u8>,
    frames: u64,
}

impl Twin {
    fn new(frames: u64) -> Option<Self> {
        let len = usize::try_from(frames.checked_mul(PAGE_SIZE as u64)?).ok()?;
        // SAFETY: a valid NUL-terminated name; flags are valid.
        let raw = unsafe { libc::memfd_create(c"splitnet-baseline".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a fresh fd we own; it is closed when this returns (the mapping keeps
        // the file alive), so nobody else can map the twin.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on our fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return None;
        }
        // SAFETY: new shared mapping of the whole file; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            base: NonNull::new(p.cast())?,
            frames,
        })
    }
}

impl Drop for Twin {
    fn drop(&mut self) {
        // SAFETY: our own mapping, used only inside `copy_baseline` while borrowed from the
        // thread-local, which is not borrowed while it is replaced or torn down.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.frames as usize * PAGE_SIZE) };
    }
}

/// A grant entry as atomics over its bytes: `flags` and `domid` as one 32-bit header word (so
/// the hypervisor can check and claim both with one compare-and-swap, as Xen's `_set_status`
/// does with its `cmpxchg` over the pair), and `frame`. Every access to an entry, guest side and
/// hypervisor side, goes through these two words, so no location is accessed with two sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryAtomics<'a> {
    /// `flags` and `domid`, in their ABI positions (see [`entry_header`]).
    pub header: &'a AtomicU32,
    /// `frame`.
    pub frame: &'a AtomicU32,
}

/// The header word holding `flags` (bytes 0..2 of the entry) and `domid` (bytes 2..4).
#[inline]
pub(crate) const fn entry_header(flags: u16, domid: u16) -> u32 {
    let (f, d) = (flags.to_ne_bytes(), domid.to_ne_bytes());
    u32::from_ne_bytes([f[0], f[1], d[0], d[1]])
}

/// The `flags` half of a header word.
#[inline]
pub(crate) const fn header_flags(h: u32) -> u16 {
    let b = h.to_ne_bytes();
    u16::from_ne_bytes([b[0], b[1]])
}

/// The `domid` half of a header word.
#[inline]
pub(crate) const fn header_domid(h: u32) -> u16 {
    let b = h.to_ne_bytes();
    u16::from_ne_bytes([b[2], b[3]])
}

/// A domain's grant-table frames. They are atomic-only for as long as this object holds them.
#[derive(Debug)]
pub(crate) struct GrantFrames {
    mem: Arc<MachineMemory>,
    mfns: Vec<Mfn>,
}

impl GrantFrames {
    /// Zeroes the frames and marks them atomic-only.
    pub fn new(mem: Arc<MachineMemory>, mfns: Vec<Mfn>) -> Self {
        for &m in &mfns {
            mem.write(m, 0, &[0u8; PAGE_SIZE]);
            mem.atomic_begin(m);
        }
        Self { mem, mfns }
    }

    /// Number of v1 entries.
    pub fn entries(&self) -> usize {
        self.mfns.len() * PAGE_SIZE / 8
    }

    /// The entry `index`, or None if out of range.
    #[inline]
    pub fn entry(&self, index: u32) -> Option<EntryAtomics<'_>> {
        let i = index as usize;
        let mfn = *self.mfns.get(i / (PAGE_SIZE / 8))?;
        if mfn.0 >= self.mem.frames {
            return None;
        }
        let off = mfn.index() * PAGE_SIZE + (i % (PAGE_SIZE / 8)) * 8;
        // SAFETY: the offset is inside the direct map (mfn < frames) and 8-aligned (frames are
        // page-aligned, entries 8 bytes), so both 4-byte words are aligned for AtomicU32. The
        // frame is atomic-only while `self` holds it (copies refuse it), and it is only
        // released by `take_frames(&mut self)`, which cannot run while these `&self`-bound
        // references live; so every access to these bytes is atomic for 'a, and always through
        // these same two 32-bit words (no mixed-size access).
        unsafe {
            let p = self.mem.base.as_ptr().add(off);
            Some(EntryAtomics {
                header: AtomicU32::from_ptr(p.cast()),
                frame: AtomicU32::from_ptr(p.add(4).cast()),
            })
        }
    }

    /// Releases the frames (clearing atomic-only) and returns them for freeing.
    pub fn take_frames(&mut self) -> Vec<Mfn> {
        let mfns = std::mem::take(&mut self.mfns);
        for &m in &mfns {
            self.mem.atomic_end(m);
        }
        mfns
    }
}
