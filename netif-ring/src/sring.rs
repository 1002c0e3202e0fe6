//! The shared ring's memory: the 64-byte header of `io/ring.h` and the slot array behind it.
//!
//! All shared memory is accessed as 32-bit atomics. The header fields are atomics in ring.h's
//! protocol anyway; the slots are copied in and out word by word with relaxed loads and stores, so
//! a hostile peer scribbling on a slot while we copy it can tear the copy (which we then validate)
//! but can never cause undefined behaviour here. Every netif slot is a multiple of four bytes.
//!
//! Ring memory comes from a [`RingMem`]: a real 4096-byte page ([`SharedPage`], produced by the
//! `page` module from a mapped pointer), or an [`OwnedRing`] of any power-of-two size for tests
//! and the loom models. The ring logic in `front` and `back` is the same for both.

use core::mem::size_of;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::netif::{RxRequest, RxResponse, TxRequest, TxResponse};
use crate::sync::{AtomicU32, Ordering};

/// Bytes in a shared ring page.
pub const PAGE_SIZE: usize = 4096;
/// Bytes of header before the first slot (`struct NAME##_sring` up to `ring[]`).
pub const HEADER_SIZE: usize = 64;
/// 32-bit words of slot space in one page.
pub const PAGE_SLOT_WORDS: usize = (PAGE_SIZE - HEADER_SIZE) / 4;

/// The 64-byte ring header, as in ring.h's `struct NAME##_sring`.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    pub(crate) req_prod: AtomicU32,
    pub(crate) req_event: AtomicU32,
    pub(crate) rsp_prod: AtomicU32,
    pub(crate) rsp_event: AtomicU32,
    /// The 4-byte `pvt` union (netif's `smartpoll_active`, tapif's `msg`); unused by netif rings.
    pub(crate) pvt: AtomicU32,
    /// `__pad[44]`.
    pub(crate) pad: [AtomicU32; 11],
}

impl Header {
    fn new() -> Self {
        Self {
            req_prod: AtomicU32::new(0),
            req_event: AtomicU32::new(1),
            rsp_prod: AtomicU32::new(0),
            rsp_event: AtomicU32::new(1),
            pvt: AtomicU32::new(0),
            pad: core::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// `SHARED_RING_INIT`: producers 0, events 1, private bytes and padding zeroed. Only the
    /// frontend does this, before it grants the page.
    pub(crate) fn init(&self) {
        // Relaxed: the page is not shared yet; granting it (a hypervisor call, or the thread
        // spawn in tests) publishes these stores.
        self.req_prod.store(0, Ordering::Relaxed);
        self.req_event.store(1, Ordering::Relaxed);
        self.rsp_prod.store(0, Ordering::Relaxed);
        self.rsp_event.store(1, Ordering::Relaxed);
        self.pvt.store(0, Ordering::Relaxed);
        for w in &self.pad {
            w.store(0, Ordering::Relaxed);
        }
    }
}

/// One 4096-byte shared ring page: header and slots.
#[repr(C)]
#[derive(Debug)]
pub struct SharedPage {
    pub(crate) header: Header,
    pub(crate) slots: [AtomicU32; PAGE_SLOT_WORDS],
}

#[cfg(not(loom))]
const _: () = {
    use core::mem::offset_of;
    // ring.h: req_prod @0, req_event @4, rsp_prod @8, rsp_event @12, pvt @16 (4 bytes),
    // __pad @20 (44 bytes), ring[] @64; one page in all.
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(offset_of!(Header, req_prod) == 0);
    assert!(offset_of!(Header, req_event) == 4);
    assert!(offset_of!(Header, rsp_prod) == 8);
    assert!(offset_of!(Header, rsp_event) == 12);
    assert!(offset_of!(Header, pvt) == 16);
    assert!(offset_of!(Header, pad) == 20);
    assert!(offset_of!(Header, pad) + size_of::<[u32; 11]>() == HEADER_SIZE);
    assert!(offset_of!(SharedPage, slots) == HEADER_SIZE);
    assert!(size_of::<SharedPage>() == PAGE_SIZE);
};

/// Ring memory shared between a frontend and a backend: a header and a slot area.
pub trait RingMem {
    /// The ring header.
    fn header(&self) -> &Header;
    /// The slot area as 32-bit words.
    fn slot_words(&self) -> &[AtomicU32];
}

impl RingMem for SharedPage {
    fn header(&self) -> &Header {
        &self.header
    }
    fn slot_words(&self) -> &[AtomicU32] {
        &self.slots
    }
}

impl<M: RingMem + ?Sized> RingMem for &M {
    fn header(&self) -> &Header {
        (**self).header()
    }
    fn slot_words(&self) -> &[AtomicU32] {
        (**self).slot_words()
    }
}

impl<M: RingMem + ?Sized> RingMem for std::sync::Arc<M> {
    fn header(&self) -> &Header {
        (**self).header()
    }
    fn slot_words(&self) -> &[AtomicU32] {
        (**self).slot_words()
    }
}

#[cfg(loom)]
impl<M: RingMem + ?Sized> RingMem for loom::sync::Arc<M> {
    fn header(&self) -> &Header {
        (**self).header()
    }
    fn slot_words(&self) -> &[AtomicU32] {
        (**self).slot_words()
    }
}

impl<M: RingMem + ?Sized> RingMem for Box<M> {
    fn header(&self) -> &Header {
        (**self).header()
    }
    fn slot_words(&self) -> &[AtomicU32] {
        (**self).slot_words()
    }
}

/// Ring memory on the heap, of any power-of-two size: for tests, benchmarks and the loom models
/// (loom atomics cannot be mapped from a page). Same header, same protocol.
#[derive(Debug)]
pub struct OwnedRing {
    header: Header,
    slots: Box<[AtomicU32]>,
}

impl OwnedRing {
    /// Memory for `slots` slots (a power of two) of ring kind `K`, already `SHARED_RING_INIT`ed.
    pub fn new<K: RingKind>(slots: u32) -> Self {
        assert!(slots.is_power_of_two(), "ring size must be a power of two");
        let words = slots as usize * K::SLOT_WORDS;
        Self {
            header: Header::new(),
            slots: (0..words).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// A page-sized ring (the same slot count a real page gives), on the heap.
    pub fn page() -> Self {
        Self {
            header: Header::new(),
            slots: (0..PAGE_SLOT_WORDS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl RingMem for OwnedRing {
    fn header(&self) -> &Header {
        &self.header
    }
    fn slot_words(&self) -> &[AtomicU32] {
        &self.slots
    }
}

/// A value that can live in a ring slot: plain bytes, a multiple of four long.
pub trait Slot: FromBytes + IntoBytes + Immutable + KnownLayout + Copy {}
impl<T: FromBytes + IntoBytes + Immutable + KnownLayout + Copy> Slot for T {}

/// A ring type, as `DEFINE_RING_TYPES(name, request, response)` makes one.
pub trait RingKind {
    /// The request struct.
    type Req: Slot;
    /// The response struct.
    type Rsp: Slot;
    /// `sizeof(union name##_sring_entry)`: the larger of request and response.
    const SLOT_BYTES: usize;
    /// Slot size in 32-bit words.
    const SLOT_WORDS: usize = Self::SLOT_BYTES / 4;
    /// `__RING_SIZE` for one page: slots that fit after the header, rounded down to a power of two.
    const PAGE_RING_SIZE: u32 = ring_size(PAGE_SIZE, Self::SLOT_BYTES);
}

/// `__RING_SIZE(s, size)`: `__RD32((size - offsetof(ring)) / sizeof(entry))`.
pub const fn ring_size(page_bytes: usize, slot_bytes: usize) -> u32 {
    let n = (page_bytes - HEADER_SIZE) / slot_bytes;
    if n == 0 {
        0
    } else {
        // Round down to a power of two, as __RD32 does.
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// The netif transmit ring (`netif_tx`): guest → backend.
#[derive(Debug, Clone, Copy)]
pub enum TxRing {}
impl RingKind for TxRing {
    type Req = TxRequest;
    type Rsp = TxResponse;
    const SLOT_BYTES: usize = max(size_of::<TxRequest>(), size_of::<TxResponse>());
}

/// The netif receive ring (`netif_rx`): backend → guest.
#[derive(Debug, Clone, Copy)]
pub enum RxRing {}
impl RingKind for RxRing {
    type Req = RxRequest;
    type Rsp = RxResponse;
    const SLOT_BYTES: usize = max(size_of::<RxRequest>(), size_of::<RxResponse>());
}

const _: () = {
    assert!(TxRing::PAGE_RING_SIZE == 256);
    assert!(RxRing::PAGE_RING_SIZE == 256);
    assert!(TxRing::SLOT_BYTES == 12 && RxRing::SLOT_BYTES == 8);
};

/// Largest slot this crate copies, in words (`netif_ctrl_request` is 16 bytes).
const MAX_SLOT_WORDS: usize = 4;

/// The words of slot `idx` (already masked) in a ring of kind `K`.
#[inline(always)]
fn slot<K: RingKind>(words: &[AtomicU32], idx: u32) -> &[AtomicU32] {
    let start = idx as usize * K::SLOT_WORDS;
    &words[start..start + K::SLOT_WORDS]
}

/// Copies a `T` out of slot `idx` once: each word read exactly once, then reassembled. The
/// returned value is a private copy; validate it, never re-read the slot (XSA-155).
#[inline(always)]
pub(crate) fn read_slot<K: RingKind, T: Slot>(words: &[AtomicU32], idx: u32) -> T {
    const { assert!(size_of::<T>().is_multiple_of(4) && size_of::<T>() <= MAX_SLOT_WORDS * 4) };
    assert!(
        size_of::<T>() <= K::SLOT_BYTES,
        "type larger than the ring's slot"
    );
    let s = slot::<K>(words, idx);
    let mut buf = [0u8; MAX_SLOT_WORDS * 4];
    for (i, w) in s.iter().take(size_of::<T>() / 4).enumerate() {
        // Relaxed: ordering with the producer's writes comes from the Acquire load of the
        // producer index (`req_prod`/`rsp_prod`) that made this slot visible, which pairs with the
        // producer's Release publish after its `write_slot`.
        buf[i * 4..i * 4 + 4].copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
    }
    match T::read_from_bytes(&buf[..size_of::<T>()]) {
        Ok(v) => v,
        // Unreachable: the slice is exactly size_of::<T>() and T: FromBytes accepts any bytes.
        Err(_) => unreachable!("slot buffer sized to T"),
    }
}

/// Writes a `T` into slot `idx` (already masked), word by word.
#[inline(always)]
pub(crate) fn write_slot<K: RingKind, T: Slot>(words: &[AtomicU32], idx: u32, v: &T) {
    const { assert!(size_of::<T>().is_multiple_of(4) && size_of::<T>() <= MAX_SLOT_WORDS * 4) };
    assert!(
        size_of::<T>() <= K::SLOT_BYTES,
        "type larger than the ring's slot"
    );
    let s = slot::<K>(words, idx);
    for (w, chunk) in s.iter().zip(v.as_bytes().chunks_exact(4)) {
        let word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        // Relaxed: published by the Release store of the producer index that follows, which pairs
        // with the consumer's Acquire load before its `read_slot`.
        w.store(word, Ordering::Relaxed);
    }
}

/// Ring geometry checked against the memory given: (size, mask).
pub(crate) fn geometry<K: RingKind>(mem: &impl RingMem) -> (u32, u32) {
    let slots = mem.slot_words().len() / K::SLOT_WORDS;
    let size = ring_size(HEADER_SIZE + slots * K::SLOT_BYTES, K::SLOT_BYTES);
    assert!(size > 0, "ring memory too small for one slot");
    (size, size - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_matches_ring_h() {
        // (4096 - 64) / 12 = 336 -> 256; / 8 = 504 -> 256; ctrl request 16 B: 252 -> 128.
        assert_eq!(ring_size(4096, 12), 256);
        assert_eq!(ring_size(4096, 8), 256);
        assert_eq!(ring_size(4096, 16), 128);
        assert_eq!(ring_size(4096, 4), 512);
        assert_eq!(ring_size(64 + 3 * 8, 8), 2);
    }

    #[test]
    fn page_sized_owned_ring_has_256_slots() {
        let mem = OwnedRing::page();
        assert_eq!(geometry::<TxRing>(&mem).0, 256);
        assert_eq!(geometry::<RxRing>(&mem).0, 256);
    }

    #[test]
    fn slot_copy_round_trips() {
        let mem = OwnedRing::new::<TxRing>(4);
        let req = TxRequest {
            gref: 7,
            offset: 2,
            flags: 4,
            id: 9,
            size: 1514,
        };
        write_slot::<TxRing, _>(mem.slot_words(), 3, &req);
        assert_eq!(read_slot::<TxRing, TxRequest>(mem.slot_words(), 3), req);
        let rsp = TxResponse { id: 9, status: -1 };
        write_slot::<TxRing, _>(mem.slot_words(), 3, &rsp);
        assert_eq!(read_slot::<TxRing, TxResponse>(mem.slot_words(), 3), rsp);
    }
}
