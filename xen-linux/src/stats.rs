//! What a [`super::XenHost`] counts, for the program to print.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a host's counters ([`super::XenHost::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XenStats {
    /// ioctls on `/dev/xen/gntdev`: copies, maps and unmaps (each at least one hypercall; a
    /// copy is one `GNTTABOP_copy` per 16 ops, the kernel batches them).
    pub gntdev_ioctls: u64,
    /// `IOCTL_GNTDEV_GRANT_COPY` calls (one per non-empty `grant_copy`).
    pub copy_calls: u64,
    /// Copy ops submitted, including those refused before the kernel.
    pub copy_ops: u64,
    /// Ops that did not end `GNTST_okay` (refused ones included).
    pub copy_failed: u64,
    /// Ops refused before the kernel: a local side outside the arena, on a ring page or a
    /// borrowed destination, or a side crossing its page.
    pub copy_refused: u64,
    /// Bytes of the ops that ended okay.
    pub copy_bytes: u64,
    /// Grant maps made.
    pub maps: u64,
    /// Grant maps refused.
    pub map_failures: u64,
    /// Grant mappings whose release failed when dropped.
    pub unmap_failures: u64,
    /// ioctls on `/dev/xen/evtchn` (binds, unbinds, notifies, resets), all handles.
    pub evtchn_ioctls: u64,
    /// Event ring overflows recovered from, all handles.
    pub evtchn_overflows: u64,
}

impl fmt::Display for XenStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gntdev {} ioctls; copies {} ops in {} calls ({} failed, {} refused before the \
             kernel), {} bytes; maps {} ({} failed, {} unmaps failed); evtchn {} ioctls, {} \
             overflows",
            self.gntdev_ioctls,
            self.copy_ops,
            self.copy_calls,
            self.copy_failed,
            self.copy_refused,
            self.copy_bytes,
            self.maps,
            self.map_failures,
            self.unmap_failures,
            self.evtchn_ioctls,
            self.evtchn_overflows,
        )
    }
}

/// The live counters, shared by a host's clones and its event-channel handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub copy_calls: AtomicU64,
    pub copy_ops: AtomicU64,
    pub copy_failed: AtomicU64,
    pub copy_refused: AtomicU64,
    pub copy_bytes: AtomicU64,
    pub maps: AtomicU64,
    pub map_failures: AtomicU64,
    pub evtchn_ioctls: AtomicU64,
    pub evtchn_overflows: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        if n > 0 {
            // Relaxed: a statistic; pairs with no other operation.
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        // Relaxed: a statistic; pairs with no other operation.
        c.load(Ordering::Relaxed)
    }

    /// The snapshot, with gntdev's own counts filled in by the caller.
    pub fn snapshot(&self) -> XenStats {
        XenStats {
            copy_calls: Self::get(&self.copy_calls),
            copy_ops: Self::get(&self.copy_ops),
            copy_failed: Self::get(&self.copy_failed),
            copy_refused: Self::get(&self.copy_refused),
            copy_bytes: Self::get(&self.copy_bytes),
            maps: Self::get(&self.maps),
            map_failures: Self::get(&self.map_failures),
            evtchn_ioctls: Self::get(&self.evtchn_ioctls),
            evtchn_overflows: Self::get(&self.evtchn_overflows),
            ..XenStats::default()
        }
    }
}
