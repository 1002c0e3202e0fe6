//! Protocol-free access to ring memory, as a peer in another domain has it.
//!
//! For tests that play a misbehaving peer (a hostile `req_prod`, a slot rewritten after it was
//! pushed) and for tools that dump a ring's state. The ring handles never use this; nothing here
//! can cause undefined behaviour, only protocol violations, which the handles must survive.

use crate::sring::{RingKind, RingMem, Slot, read_slot, write_slot};
use crate::sync::Ordering;

/// A snapshot of the four shared indices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Indices {
    /// `req_prod`.
    pub req_prod: u32,
    /// `req_event`.
    pub req_event: u32,
    /// `rsp_prod`.
    pub rsp_prod: u32,
    /// `rsp_event`.
    pub rsp_event: u32,
}

/// Reads the shared indices (each once, relaxed: a diagnostic snapshot, not a protocol step).
pub fn indices(mem: &impl RingMem) -> Indices {
    let h = mem.header();
    // Relaxed throughout: a snapshot for inspection; pairs with nothing and publishes nothing.
    Indices {
        req_prod: h.req_prod.load(Ordering::Relaxed),
        req_event: h.req_event.load(Ordering::Relaxed),
        rsp_prod: h.rsp_prod.load(Ordering::Relaxed),
        rsp_event: h.rsp_event.load(Ordering::Relaxed),
    }
}

/// Overwrites `req_prod` with Release (as a frontend's publish would, valid or not).
pub fn set_req_prod(mem: &impl RingMem, v: u32) {
    // Release: like `FrontRing::push_requests`, pairs with the backend's Acquire load of req_prod
    // so slots written with `write_slot_at` before this are visible.
    mem.header().req_prod.store(v, Ordering::Release);
}

/// Overwrites `rsp_prod` with Release (as a backend's publish would, valid or not).
pub fn set_rsp_prod(mem: &impl RingMem, v: u32) {
    // Release: like `BackRing::push_responses`, pairs with the frontend's Acquire load.
    mem.header().rsp_prod.store(v, Ordering::Release);
}

/// Overwrites `req_event`.
pub fn set_req_event(mem: &impl RingMem, v: u32) {
    // Relaxed: an arbitrary peer write; no data is published through it.
    mem.header().req_event.store(v, Ordering::Relaxed);
}

/// Overwrites `rsp_event`.
pub fn set_rsp_event(mem: &impl RingMem, v: u32) {
    // Relaxed: an arbitrary peer write; no data is published through it.
    mem.header().rsp_event.store(v, Ordering::Relaxed);
}

/// Writes `v` into the slot for free-running index `idx` of a `K` ring of `size` slots.
pub fn write_slot_at<K: RingKind, T: Slot>(mem: &impl RingMem, size: u32, idx: u32, v: T) {
    write_slot::<K, T>(mem.slot_words(), idx & (size - 1), &v);
}

/// Reads the slot for free-running index `idx` of a `K` ring of `size` slots as a `T`.
pub fn read_slot_at<K: RingKind, T: Slot>(mem: &impl RingMem, size: u32, idx: u32) -> T {
    read_slot::<K, T>(mem.slot_words(), idx & (size - 1))
}
