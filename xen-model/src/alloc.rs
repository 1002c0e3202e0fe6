//! The frame allocator (class `page_alloc`): a stack of free machine frames.
//!
//! Popping from a stack that starts in ascending order hands a new domain contiguous runs, so its
//! view is built with few mappings; frames freed later are reused first (cache-warm), as Xen's
//! buddy allocator tends to.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use xenoprof::Class;

use hypervisor::types::Mfn;

/// Free machine frames.
#[derive(Debug)]
pub(crate) struct FrameAllocator {
    free: Mutex<Vec<Mfn>>,
    count: AtomicU64,
}

impl FrameAllocator {
    /// All `frames` free.
    pub fn new(frames: u64) -> Self {
        Self {
            free: Mutex::new((0..frames).rev().map(Mfn).collect()),
            count: AtomicU64::new(frames),
        }
    }

    /// Frames free now.
    pub fn free_count(&self) -> u64 {
        // Relaxed: a statistic; updated under the lock, read without ordering needs.
        self.count.load(Ordering::Relaxed)
    }

    /// `n` frames, or None (and nothing taken) if fewer are free.
    pub fn alloc(&self, n: usize) -> Option<Vec<Mfn>> {
        let _s = xenoprof::scope(Class::PAGE_ALLOC);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < n {
            return None;
        }
        let at = free.len() - n;
        let mut out = free.split_off(at);
        out.reverse();
        // Relaxed: see `free_count`.
        self.count.store(free.len() as u64, Ordering::Relaxed);
        Some(out)
    }

    /// One frame.
    pub fn alloc_one(&self) -> Option<Mfn> {
        let _s = xenoprof::scope(Class::PAGE_ALLOC);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let m = free.pop();
        // Relaxed: see `free_count`.
        self.count.store(free.len() as u64, Ordering::Relaxed);
        m
    }

    /// Returns frames.
    pub fn free(&self, mfns: &[Mfn]) {
        let _s = xenoprof::scope(Class::PAGE_ALLOC);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.extend(mfns.iter().rev());
        // Relaxed: see `free_count`.
        self.count.store(free.len() as u64, Ordering::Relaxed);
    }
}
