//! Heap bytes attributed to chosen threads: a counting global allocator for the `bench` binary.
//!
//! `many` reports the backend's memory per guest, and part of the backend's memory is its heap:
//! per-vif state, queues, the switch's tables, bookkeeping the hypervisor does on dom0's behalf.
//! Process RSS cannot tell dom0's heap from the guests' (they share one process), so the binary
//! installs [`CountingAlloc`] as its global allocator and the driver domain's vCPU thread calls
//! [`count_this_thread`]: from then on every block that thread allocates is counted as live
//! until it is freed, whichever thread frees it. Each block carries a one-word header saying
//! whether it is counted, so a block handed to another thread and freed there is still
//! subtracted (a per-thread "allocated minus freed" tally would drift with every such block).
//!
//! The header costs one word (or the alignment, if larger) per block for the whole process;
//! zeroed allocations stay lazily zeroed (large ones remain untouched fresh pages).
//!
//! This is the crate's only `unsafe` module: a global allocator is an `unsafe` trait, and its
//! pointer arithmetic cannot be expressed safely.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// Whether blocks this thread allocates are counted. `const`, no destructor: reading it
    /// never allocates, as an allocator requires.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// Counted blocks this thread has allocated through a [`CountingAlloc`] (to tell whether
    /// one is installed).
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// Header word of a counted block.
const COUNTED_TAG: usize = 0xC0FF_EE11;
/// Header word of a block not counted.
const PLAIN_TAG: usize = 0;

/// The system allocator, with live bytes of counted threads' blocks tallied. See the module
/// documentation.
#[derive(Debug)]
pub struct CountingAlloc {
    live: AtomicU64,
}

impl CountingAlloc {
    /// An allocator with nothing counted yet (for `#[global_allocator]`).
    pub const fn new() -> CountingAlloc {
        CountingAlloc {
            live: AtomicU64::new(0),
        }
    }

    /// Bytes (as asked for, headers excluded) of counted blocks not yet freed.
    pub fn live_bytes(&self) -> u64 {
        // Relaxed: a figure read for a report. Every add and its matching subtract are RMWs on
        // this one location; the free of a block happens after its allocation (the pointer was
        // handed over with synchronisation), so coherence orders the add before the subtract
        // and the total never underflows.
        self.live.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        // Relaxed: a tally; see `live_bytes`.
        self.live.fetch_add(n as u64, Ordering::Relaxed);
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
    }

    fn sub(&self, n: usize) {
        // Relaxed: a tally; see `live_bytes`.
        self.live.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

impl Default for CountingAlloc {
    fn default() -> Self {
        CountingAlloc::new()
    }
}

/// Counts blocks the calling thread allocates from now on. Returns whether a
/// [`CountingAlloc`] is the global allocator (so the count means something).
pub fn count_this_thread() -> bool {
    COUNTED.with(|c| c.set(true));
    let before = ALLOCS.with(Cell::get);
    let probe = std::hint::black_box(Box::new([0u8; 64]));
    drop(probe);
    ALLOCS.with(Cell::get) > before
}

fn counting() -> bool {
    // During thread teardown the slot may be gone: such blocks are simply not counted.
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

/// The layout actually allocated for `object` (a header word in front of it, the object at its
/// own alignment) and the object's offset in it. `None` if the size overflows.
fn wrapped(object: Layout) -> Option<(Layout, usize)> {
    let (l, offset) = Layout::new::<usize>().extend(object).ok()?;
    Some((l.pad_to_align(), offset))
}

// SAFETY: every block is obtained from `System` with a layout whose alignment is at least the
// caller's, and handed out at an offset that is a multiple of that alignment with `size` bytes
// after it inside the block; `dealloc`/`realloc` recompute the same wrapped layout from the
// caller's layout (as `GlobalAlloc` requires callers to pass the layout they allocated with), so
// `System` always gets back the pointer and layout it gave out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((outer, offset)) = wrapped(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `outer` has a non-zero size (it holds at least the header word).
        let base = unsafe { System.alloc(outer) };
        // SAFETY: as `alloc`; the block is fresh.
        unsafe { self.finish(base, layout, offset) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some((outer, offset)) = wrapped(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: as in `alloc`; `System` zeroes (lazily, for large blocks) the whole block, and
        // `finish` writes only the header word.
        let base = unsafe { System.alloc_zeroed(outer) };
        // SAFETY: as `alloc`; the block is fresh.
        unsafe { self.finish(base, layout, offset) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((outer, offset)) = wrapped(layout) else {
            return;
        };
        // SAFETY: `ptr` came from `alloc`/`realloc` with this `layout` (GlobalAlloc's contract),
        // so the block starts `offset` bytes before it, with the header word there (aligned:
        // the block's alignment is at least a word's).
        let base = unsafe { ptr.sub(offset) };
        // SAFETY: as above: the header word is inside the block, written by `finish`.
        let tag = unsafe { base.cast::<usize>().read() };
        if tag == COUNTED_TAG {
            self.sub(layout.size());
        }
        // SAFETY: `base` and `outer` are what `System` handed out.
        unsafe { System.dealloc(base, outer) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some((outer, offset)) = wrapped(layout) else {
            return std::ptr::null_mut();
        };
        let Some(new_outer) = offset.checked_add(new_size) else {
            return std::ptr::null_mut();
        };
        if Layout::from_size_align(new_outer, outer.align()).is_err() {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `dealloc`: the block starts `offset` bytes before `ptr`.
        let base = unsafe { ptr.sub(offset) };
        // SAFETY: the header word is inside the block.
        let tag = unsafe { base.cast::<usize>().read() };
        // SAFETY: `base`/`outer` are what `System` handed out; `new_outer` is non-zero and, as
        // checked above, a valid size at this alignment. The header stays at the block's start
        // and the object at `offset` (the alignment, hence the offset, does not change).
        let new_base = unsafe { System.realloc(base, outer, new_outer) };
        if new_base.is_null() {
            return new_base;
        }
        if tag == COUNTED_TAG {
            self.sub(layout.size());
            self.add(new_size);
        }
        // SAFETY: `offset + new_size` bytes were allocated from `new_base`.
        unsafe { new_base.add(offset) }
    }
}

impl CountingAlloc {
    /// Writes the header of a fresh block at `base` (null: allocation failed) and counts it if
    /// the calling thread is counted; returns the object's address.
    ///
    /// # Safety
    /// `base` is null or a fresh block of `wrapped(layout)` from `System`, whose object lies
    /// `offset` bytes in.
    unsafe fn finish(&self, base: *mut u8, layout: Layout, offset: usize) -> *mut u8 {
        if base.is_null() {
            return base;
        }
        let counted = counting();
        // SAFETY: the block starts with a word-aligned header word (the wrapped layout puts it
        // first, at the block's alignment of at least a word).
        unsafe {
            base.cast::<usize>()
                .write(if counted { COUNTED_TAG } else { PLAIN_TAG })
        };
        if counted {
            self.add(layout.size());
        }
        // SAFETY: `offset + layout.size()` bytes lie inside the block.
        unsafe { base.add(offset) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates `size` bytes at `align` through `a`.
    #[track_caller]
    fn alloc(a: &CountingAlloc, size: usize, align: usize) -> (*mut u8, Layout) {
        let l = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null());
        assert!((p as usize).is_multiple_of(align), "misaligned block");
        (p, l)
    }

    #[test]
    fn counts_only_counted_threads_and_subtracts_wherever_freed() {
        let a: &'static CountingAlloc = Box::leak(Box::new(CountingAlloc::new()));
        let (plain, pl) = alloc(a, 100, 8);
        assert_eq!(a.live_bytes(), 0, "the test thread is not counted");
        // A counted thread allocates; another thread frees one of its blocks.
        let (p1, p2) = std::thread::spawn(move || {
            COUNTED.with(|c| c.set(true));
            let x = alloc(a, 1000, 8);
            let y = alloc(a, 5000, 64);
            (x.0 as usize, y.0 as usize)
        })
        .join()
        .unwrap();
        assert_eq!(a.live_bytes(), 6000);
        // SAFETY: allocated above with these layouts, freed once.
        unsafe {
            a.dealloc(p1 as *mut u8, Layout::from_size_align(1000, 8).unwrap());
            a.dealloc(plain, pl);
        }
        assert_eq!(a.live_bytes(), 5000, "freed elsewhere, still subtracted");
        // A counted block grown on an uncounted thread stays counted, at its new size.
        let l = Layout::from_size_align(5000, 64).unwrap();
        // SAFETY: p2 was allocated with `l`.
        let p = unsafe { a.realloc(p2 as *mut u8, l, 20_000) };
        assert!(!p.is_null() && (p as usize).is_multiple_of(64));
        assert_eq!(a.live_bytes(), 20_000);
        // SAFETY: the grown block, with its new layout.
        unsafe { a.dealloc(p, Layout::from_size_align(20_000, 64).unwrap()) };
        assert_eq!(a.live_bytes(), 0);
    }

    #[test]
    fn blocks_keep_their_contents_alignment_and_zeroes() {
        let a = CountingAlloc::new();
        for align in [1, 8, 16, 64, 4096] {
            let l = Layout::from_size_align(3000, align).unwrap();
            // SAFETY: non-zero size; every block is freed with its layout below.
            unsafe {
                let z = a.alloc_zeroed(l);
                assert!((z as usize).is_multiple_of(align));
                assert!(std::slice::from_raw_parts(z, 3000).iter().all(|b| *b == 0));
                z.write_bytes(0xAB, 3000);
                let g = a.realloc(z, l, 9000);
                assert!((g as usize).is_multiple_of(align));
                assert!(
                    std::slice::from_raw_parts(g, 3000)
                        .iter()
                        .all(|b| *b == 0xAB)
                );
                a.dealloc(g, Layout::from_size_align(9000, align).unwrap());
            }
        }
    }

    #[test]
    fn count_this_thread_reports_no_counting_allocator_in_tests() {
        // The test binary uses the system allocator: the probe allocation is not seen.
        let seen = std::thread::spawn(count_this_thread).join().unwrap();
        assert!(!seen);
    }
}
