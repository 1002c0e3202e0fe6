//! Turning a mapped 4096-byte page into a [`SharedPage`]. The only `unsafe` in this crate.
//!
//! A ring page is memory shared with another domain: the frontend allocated it in its own memory
//! and granted it; the backend mapped the grant. Nothing about that memory is owned by Rust, so
//! the caller vouches for it once, here, and everything above works through `&SharedPage`, whose
//! every field is an atomic.

use core::ptr::NonNull;

use crate::sring::{PAGE_SIZE, SharedPage};

impl SharedPage {
    /// Views the page at `ptr` as a shared ring page.
    ///
    /// Returns `None` if `ptr` is not 4096-byte aligned.
    ///
    /// # Safety
    ///
    /// For the whole lifetime `'a`:
    /// - `ptr` must point to 4096 bytes that are mapped, readable and writable;
    /// - every other access to those bytes from this address space must be through atomic
    ///   operations (another `&SharedPage`, or the hypervisor's own atomic accesses); accesses
    ///   from another address space (a peer domain) are unconstrained, since atomics tolerate them;
    /// - the memory must not be unmapped or remapped.
    ///
    /// The page's contents need not be valid in any sense: every bit pattern is a valid
    /// `SharedPage`, and a hostile peer's values are caught by the ring's overflow checks.
    pub unsafe fn from_raw<'a>(ptr: NonNull<u8>) -> Option<&'a SharedPage> {
        if !(ptr.as_ptr() as usize).is_multiple_of(PAGE_SIZE) {
            return None;
        }
        // SAFETY: `ptr` is page-aligned (checked above), hence aligned for `AtomicU32`, the
        // strictest alignment inside `SharedPage`; the caller guarantees 4096 mapped bytes, which
        // is `size_of::<SharedPage>()` (asserted in `sring`), live for `'a`, and only atomic
        // access from this address space while `'a` lasts, so handing out a shared reference to
        // atomics cannot create a data race. `AtomicU32` has no invalid bit patterns.
        Some(unsafe { ptr.cast::<SharedPage>().as_ref() })
    }
}

/// A ring page kept alive by an owner: the mapping (a grant mapping, a guest page handle) that
/// keeps the memory mapped. Use it as the [`crate::RingMem`] of a ring that must outlive a borrow.
#[derive(Debug)]
pub struct PageRing<O> {
    page: NonNull<SharedPage>,
    owner: O,
}

// SAFETY: `PageRing` only gives out `&SharedPage`, whose fields are atomics (Sync); the owner
// decides whether the mapping itself may move between threads.
unsafe impl<O: Send> Send for PageRing<O> {}
// SAFETY: as above; shared access is through atomics only.
unsafe impl<O: Sync> Sync for PageRing<O> {}

impl<O> PageRing<O> {
    /// Wraps the page at `ptr`, kept mapped by `owner`.
    ///
    /// Returns the owner back if `ptr` is not page-aligned.
    ///
    /// # Safety
    ///
    /// As for [`SharedPage::from_raw`], with "for the lifetime `'a`" replaced by "for as long as
    /// `owner` is alive": dropping the owner may unmap the page, and nothing else may unmap it
    /// before that.
    pub unsafe fn new(owner: O, ptr: NonNull<u8>) -> Result<Self, O> {
        // SAFETY: the caller upholds `from_raw`'s contract for as long as `owner` lives, and the
        // reference is only used to check alignment and then dropped at once.
        match unsafe { SharedPage::from_raw(ptr) } {
            Some(page) => Ok(Self {
                page: NonNull::from(page),
                owner,
            }),
            None => Err(owner),
        }
    }

    /// The owner that keeps the page mapped.
    pub fn owner(&self) -> &O {
        &self.owner
    }

    /// The page.
    pub fn page(&self) -> &SharedPage {
        // SAFETY: `new`'s contract keeps the page mapped and atomically accessed while `owner`
        // lives, and `owner` lives as long as `self`, which bounds the returned borrow.
        unsafe { self.page.as_ref() }
    }
}

impl<O> crate::RingMem for PageRing<O> {
    fn header(&self) -> &crate::sring::Header {
        &self.page().header
    }
    fn slot_words(&self) -> &[crate::sync::AtomicU32] {
        &self.page().slots
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::netif::{TxRequest, TxResponse};
    use crate::{BackRing, FrontRing, TxRing};

    #[repr(C, align(4096))]
    struct AlignedPage([u8; PAGE_SIZE]);

    #[test]
    fn a_real_page_becomes_a_256_slot_ring_with_bytes_where_ring_h_puts_them() {
        let mut page = Box::new(AlignedPage([0xAA; PAGE_SIZE]));
        let ptr = NonNull::from(&mut page.0).cast::<u8>();
        // SAFETY: the box is page-aligned, 4096 bytes, outlives the borrow (dropped at the end of
        // the test, after the rings), and is only accessed through the `SharedPage` until then.
        let shared = unsafe { SharedPage::from_raw(ptr) }.expect("aligned");
        {
            let mut front: FrontRing<TxRing, _> = FrontRing::init(shared);
            let mut back: BackRing<TxRing, _> = BackRing::attach(shared);
            assert_eq!(front.size(), 256);
            let req = TxRequest {
                gref: 0x11223344,
                offset: 2,
                flags: 0,
                id: 7,
                size: 1514,
            };
            front.put_request(req).unwrap();
            front.put_request(req).unwrap();
            front.push_requests();
            assert_eq!(back.next_request().unwrap(), Some(req));
            back.put_response(TxResponse { id: 7, status: 0 }).unwrap();
            back.push_responses();
        }
        let bytes = &page.0;
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(word(0), 2, "req_prod @0");
        assert_eq!(word(4), 1, "req_event @4");
        assert_eq!(word(8), 1, "rsp_prod @8");
        assert_eq!(word(12), 1, "rsp_event @12");
        assert_eq!(
            &bytes[16..64],
            &[0; 48],
            "pvt and __pad zeroed by SHARED_RING_INIT"
        );
        assert_eq!(
            &bytes[64..68],
            &[7, 0, 0, 0],
            "slot 0 now holds the response"
        );
        assert_eq!(
            word(76),
            0x11223344,
            "slot 1 (@76) holds the second request's gref"
        );
        assert_eq!(bytes[64 + 256 * 12], 0xAA, "nothing written past 256 slots");
    }

    #[test]
    fn misaligned_pointers_are_refused() {
        let mut page = Box::new(AlignedPage([0; PAGE_SIZE]));
        let ptr = NonNull::from(&mut page.0[4]).cast::<u8>();
        // SAFETY: the pointer is refused before any access (that is what the test checks).
        assert!(unsafe { SharedPage::from_raw(ptr) }.is_none());
    }
}
