//! Backend-owned frame buffers: pages of the driver domain's own memory.
//!
//! A frame lives in one or more dom0 pages, starting at offset 0 of its first page, one page per
//! 4096 bytes: exactly the layout an rx slot wants (copy: one op per slot; flip: one page per
//! slot). The bridge gets a [`NetFrame`] handle, never bytes: the handle carries the frame's
//! length and a copy of its first [`HEAD`] bytes (the Ethernet header the switch reads, as an skb
//! carries its MAC header pointer) and a refcount on the buffer, so flooding clones a pointer.
//! Dropping the last handle returns the pages to the pool.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use hypervisor::{DomainHandle, PAGE_SIZE, Pfn};

/// Bytes of each frame kept in its handle for the switch (and a pcap snapshot of the head).
pub const HEAD: usize = 64;

/// Largest frame a buffer holds: a 64 KiB IP packet plus its Ethernet header.
pub const MAX_FRAME: usize = 65535 + 14;

/// Pages of a maximum-size frame.
pub const MAX_FRAME_PAGES: usize = MAX_FRAME.div_ceil(PAGE_SIZE);

struct PoolInner {
    dom: DomainHandle,
    free: RefCell<Vec<Pfn>>,
    /// Pages taken from the reservation so far.
    owned: RefCell<Vec<Pfn>>,
    limit: usize,
}

/// A pool of dom0 pages for frames, grown on demand up to a limit.
#[derive(Clone)]
pub struct BufPool(Rc<PoolInner>);

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("owned", &self.0.owned.borrow().len())
            .field("free", &self.0.free.borrow().len())
            .field("limit", &self.0.limit)
            .finish()
    }
}

impl BufPool {
    /// A pool drawing at most `limit_pages` pages from `dom`'s reservation.
    pub fn new(dom: DomainHandle, limit_pages: usize) -> Self {
        Self(Rc::new(PoolInner {
            dom,
            free: RefCell::new(Vec::new()),
            owned: RefCell::new(Vec::new()),
            limit: limit_pages,
        }))
    }

    /// The domain whose pages these are.
    pub fn dom(&self) -> &DomainHandle {
        &self.0.dom
    }

    /// A buffer for a frame of `len` bytes (`1..=MAX_FRAME`), or `None` if the pool and the
    /// reservation are exhausted (the caller drops the frame and counts it).
    pub fn alloc(&self, len: usize) -> Option<Buf> {
        if len == 0 || len > MAX_FRAME {
            return None;
        }
        let n = len.div_ceil(PAGE_SIZE);
        let mut pages = Pages::new();
        while pages.len() < n {
            let pfn = self.0.free.borrow_mut().pop();
            let pfn = match pfn {
                Some(p) => p,
                None => {
                    let mut owned = self.0.owned.borrow_mut();
                    if owned.len() >= self.0.limit {
                        self.0.free.borrow_mut().extend_from_slice(pages.as_slice());
                        return None;
                    }
                    let _s = xenoprof::scope(xenoprof::Class::PAGE_ALLOC);
                    match self.0.dom.alloc_page() {
                        Ok(p) => {
                            owned.push(p);
                            p
                        }
                        Err(_) => {
                            drop(owned);
                            self.0.free.borrow_mut().extend_from_slice(pages.as_slice());
                            return None;
                        }
                    }
                }
            };
            pages.push(pfn);
        }
        Some(Buf {
            pages,
            len,
            head: [0; HEAD],
            pool: self.0.clone(),
        })
    }

    /// Pages taken from the reservation.
    pub fn owned_pages(&self) -> usize {
        self.0.owned.borrow().len()
    }

    /// Pages currently free in the pool.
    pub fn free_pages(&self) -> usize {
        self.0.free.borrow().len()
    }

    /// Returns every free page to the reservation (on teardown). Pages still held by frames are
    /// returned when those frames drop and the pool is released again.
    pub fn release(&self) {
        let free: Vec<Pfn> = self.0.free.borrow_mut().drain(..).collect();
        let mut owned = self.0.owned.borrow_mut();
        for pfn in free {
            if self.0.dom.free_page(pfn).is_ok() {
                owned.retain(|p| *p != pfn);
            }
        }
    }
}

/// A frame's pages, inline: a buffer never allocates on the heap per frame.
#[derive(Clone, Copy)]
struct Pages {
    pfns: [Pfn; MAX_FRAME_PAGES],
    n: u8,
}

impl Pages {
    fn new() -> Self {
        Self {
            pfns: [Pfn(0); MAX_FRAME_PAGES],
            n: 0,
        }
    }

    fn len(&self) -> usize {
        self.n as usize
    }

    /// Callers push at most `MAX_FRAME_PAGES` (`alloc` bounds the frame length).
    fn push(&mut self, p: Pfn) {
        self.pfns[self.n as usize] = p;
        self.n += 1;
    }

    fn as_slice(&self) -> &[Pfn] {
        &self.pfns[..self.n as usize]
    }
}

/// One frame's pages in dom0 memory.
pub struct Buf {
    pages: Pages,
    len: usize,
    head: [u8; HEAD],
    pool: Rc<PoolInner>,
}

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buf")
            .field("pages", &self.pages.as_slice())
            .field("len", &self.len)
            .finish()
    }
}

impl Buf {
    /// The frame's pages, in order; byte `i` of the frame is at offset `i % 4096` of page
    /// `i / 4096`.
    pub fn pages(&self) -> &[Pfn] {
        self.pages.as_slice()
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty (never: buffers hold 1 byte or more).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the frame's first bytes from memory into the handle's header copy. Call once the
    /// frame's data is in place.
    pub fn load_head(&mut self) -> hypervisor::Result<()> {
        let n = self.len.min(HEAD);
        self.pool
            .dom
            .read(self.pages.as_slice()[0], 0, &mut self.head[..n])
    }

    /// Writes `data` (at least `len` bytes; the first `len` are used) into the buffer and keeps
    /// its head: what a NIC's DMA does for a received frame.
    pub fn fill(&mut self, data: &[u8]) -> hypervisor::Result<()> {
        for (pfn, chunk) in self
            .pages
            .as_slice()
            .iter()
            .zip(data[..self.len].chunks(PAGE_SIZE))
        {
            self.pool.dom.write(*pfn, 0, chunk)?;
        }
        // The head comes from the bytes just written, not a second trip through the hypervisor.
        let n = self.len.min(HEAD);
        self.head[..n].copy_from_slice(&data[..n]);
        Ok(())
    }

    /// Reads the whole frame into `out` (for the uplink's transmit side and for tests).
    pub fn read_into(&self, out: &mut Vec<u8>) -> hypervisor::Result<()> {
        out.resize(self.len, 0);
        for (pfn, chunk) in self.pages.as_slice().iter().zip(out.chunks_mut(PAGE_SIZE)) {
            self.pool.dom.read(*pfn, 0, chunk)?;
        }
        Ok(())
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.pool
            .free
            .borrow_mut()
            .extend_from_slice(self.pages.as_slice());
    }
}

/// The handle the switch moves: a shared reference to a filled buffer.
#[derive(Clone, Debug)]
pub struct NetFrame(pub Rc<Buf>);

impl NetFrame {
    /// Wraps a filled buffer (its head loaded).
    pub fn new(buf: Buf) -> Self {
        Self(Rc::new(buf))
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// Whether this handle is the only one (a flip may give the pages away only then).
    pub fn is_exclusive(&self) -> bool {
        Rc::strong_count(&self.0) == 1
    }
}

impl bridge_lite::Frame for NetFrame {
    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.0.head[..self.0.len.min(HEAD)]
    }

    #[inline]
    fn frame_len(&self) -> usize {
        self.0.len
    }
}
