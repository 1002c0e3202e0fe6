//! Backend-owned frame buffers: pages of the driver domain's own memory.
//!
//! A frame lives in one or more backend pages, starting at offset 0 of its first page, one page
//! per 4096 bytes: exactly the layout an rx slot wants (copy: one op per slot; flip: one page per
//! slot). Each page is known by its pfn (for reads, writes and flips) and its address (the local
//! side of a grant copy, as gntdev wants it). The bridge gets a [`NetFrame`] handle, never
//! bytes: the handle carries the frame's length and a copy of its first [`HEAD`] bytes (the
//! Ethernet header the switch reads, as an skb carries its MAC header pointer) and a refcount
//! on the buffer, so flooding clones a pointer. Dropping the last handle returns the pages.
//!
//! Frames are `Send`: a frame one data-path worker takes from a guest may be delivered by
//! another, and its pages go back to the one pool whichever thread drops it. A frame is
//! immutable once shared: whatever changes a frame (completing its checksum) needs the only
//! handle, and works on a private copy otherwise.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use hypervisor::{GuestMemory, LocalAddr, PAGE_SIZE, Pfn};
use netif_ring::netif::MAX_FRAME;
use offload::{Csum, OffloadMeta};

/// Bytes of each frame kept in its handle for the switch (and a pcap snapshot of the head):
/// enough for what the switch reads, a port's IP lock included (an IPv6 Neighbour
/// Advertisement's target ends at byte 78; 128 also covers IPv4 options and an IPv6 extension
/// header).
pub const HEAD: usize = 128;
/// Bytes of a frame's start read to find its headers (Ethernet, IP with options or extension
/// headers, TCP with options) for offload work.
pub const HDR_PEEK: usize = 256;

/// Pages of a maximum-size frame.
pub const MAX_FRAME_PAGES: usize = MAX_FRAME.div_ceil(PAGE_SIZE);

/// One backend page: its pfn and its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// The page in the backend's own memory.
    pub pfn: Pfn,
    /// Its address, for the local side of grant copies.
    pub addr: LocalAddr,
}

struct PoolInner<D> {
    dom: D,
    pages: Mutex<PoolPages>,
    limit: usize,
}

#[derive(Default)]
struct PoolPages {
    free: Vec<Page>,
    /// Pages taken from the reservation so far.
    owned: Vec<Pfn>,
}

/// A pool of backend pages for frames, grown on demand up to a limit. One lock guards its
/// lists, taken once per frame allocated or dropped (never across a hypercall other than the
/// reservation's own page allocation, which happens only while the pool grows).
pub struct BufPool<D: GuestMemory>(Arc<PoolInner<D>>);

impl<D: GuestMemory> Clone for BufPool<D> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<D: GuestMemory> fmt::Debug for BufPool<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pages = self.0.lock();
        f.debug_struct("BufPool")
            .field("owned", &pages.owned.len())
            .field("free", &pages.free.len())
            .field("limit", &self.0.limit)
            .finish()
    }
}

impl<D: GuestMemory> BufPool<D> {
    /// A pool drawing at most `limit_pages` pages from `dom`'s reservation.
    pub fn new(dom: D, limit_pages: usize) -> Self {
        Self(Arc::new(PoolInner {
            dom,
            pages: Mutex::new(PoolPages::default()),
            limit: limit_pages,
        }))
    }

    /// The domain whose pages these are.
    pub fn dom(&self) -> &D {
        &self.0.dom
    }

    /// A buffer for a frame of `len` bytes (`1..=MAX_FRAME`), or `None` if the pool and the
    /// reservation are exhausted (the caller drops the frame and counts it).
    pub fn alloc(&self, len: usize) -> Option<Buf<D>> {
        if len == 0 || len > MAX_FRAME {
            return None;
        }
        let n = len.div_ceil(PAGE_SIZE);
        let mut pages = Pages::new();
        let mut lists = self.0.lock();
        while pages.len() < n {
            let Some(page) = self.0.take_page(&mut lists) else {
                lists.free.extend_from_slice(pages.as_slice());
                return None;
            };
            pages.push(page);
        }
        drop(lists);
        Some(Buf {
            pages,
            len,
            head: [0; HEAD],
            meta: OffloadMeta::NONE,
            pool: self.0.clone(),
        })
    }

    /// The most pages the pool may take from the reservation.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Pages taken from the reservation.
    pub fn owned_pages(&self) -> usize {
        self.0.lock().owned.len()
    }

    /// Pages currently free in the pool.
    pub fn free_pages(&self) -> usize {
        self.0.lock().free.len()
    }

    /// Returns every free page to the reservation (on teardown). Pages still held by frames are
    /// returned when those frames drop and the pool is released again.
    pub fn release(&self) {
        let mut lists = self.0.lock();
        let free = std::mem::take(&mut lists.free);
        for page in free {
            if self.0.dom.free_page(page.pfn).is_ok() {
                lists.owned.retain(|p| *p != page.pfn);
            }
        }
    }
}

impl<D: GuestMemory> PoolInner<D> {
    /// The page lists. A thread that panicked while holding them left them consistent (every
    /// update is one push, pop or retain), so a poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, PoolPages> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free page, or one more from the reservation if the limit allows.
    fn take_page(&self, lists: &mut PoolPages) -> Option<Page> {
        if let Some(page) = lists.free.pop() {
            return Some(page);
        }
        let owned = &mut lists.owned;
        if owned.len() >= self.limit {
            return None;
        }
        let _s = xenoprof::scope(xenoprof::Class::PAGE_ALLOC);
        let pfn = self.dom.alloc_page().ok()?;
        let Ok(addr) = self.dom.local_addr(pfn) else {
            let _ = self.dom.free_page(pfn);
            return None;
        };
        owned.push(pfn);
        Some(Page { pfn, addr })
    }
}

/// A frame's pages, inline: a buffer never allocates on the heap per frame.
#[derive(Clone, Copy)]
struct Pages {
    pages: [Page; MAX_FRAME_PAGES],
    n: u8,
}

impl Pages {
    fn new() -> Self {
        Self {
            pages: [Page {
                pfn: Pfn(0),
                addr: LocalAddr(0),
            }; MAX_FRAME_PAGES],
            n: 0,
        }
    }

    fn len(&self) -> usize {
        self.n as usize
    }

    /// Callers push at most `MAX_FRAME_PAGES` (`alloc` bounds the frame length).
    fn push(&mut self, p: Page) {
        self.pages[self.n as usize] = p;
        self.n += 1;
    }

    fn as_slice(&self) -> &[Page] {
        &self.pages[..self.n as usize]
    }

    /// Keeps the first `n` pages; the others are handed to `free`.
    fn truncate(&mut self, n: usize, free: &mut Vec<Page>) {
        if n < self.len() {
            free.extend_from_slice(&self.pages[n..self.len()]);
            self.n = n as u8;
        }
    }
}

/// One frame's pages in backend memory.
pub struct Buf<D: GuestMemory> {
    pages: Pages,
    len: usize,
    head: [u8; HEAD],
    /// What is known of its checksum and whether it is a GSO super-frame.
    meta: OffloadMeta,
    pool: Arc<PoolInner<D>>,
}

impl<D: GuestMemory> fmt::Debug for Buf<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buf")
            .field("pages", &self.pages.as_slice())
            .field("len", &self.len)
            .finish()
    }
}

impl<D: GuestMemory> Buf<D> {
    /// The frame's pages, in order; byte `i` of the frame is at offset `i % 4096` of page
    /// `i / 4096`.
    pub fn pages(&self) -> &[Page] {
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

    /// The frame's offload metadata.
    pub fn meta(&self) -> OffloadMeta {
        self.meta
    }

    /// Sets the frame's offload metadata.
    pub fn set_meta(&mut self, meta: OffloadMeta) {
        self.meta = meta;
    }

    /// Reads the frame's first bytes (at most `buf.len()`, and at most one page) into `buf`;
    /// returns how many.
    pub fn peek(&self, buf: &mut [u8]) -> hypervisor::Result<usize> {
        let n = self.len.min(buf.len()).min(PAGE_SIZE);
        self.pool
            .dom
            .read(self.pages.as_slice()[0].pfn, 0, &mut buf[..n])?;
        Ok(n)
    }

    /// Writes `data` at byte `at` of the frame (within its first page).
    pub fn poke(&self, at: usize, data: &[u8]) -> hypervisor::Result<()> {
        self.pool.dom.write(self.pages.as_slice()[0].pfn, at, data)
    }

    /// Completes a partial checksum in place (the frame's pages are rewritten at the checksum
    /// field) and marks the frame validated: for an egress that cannot take `csum_blank`. A
    /// frame with nothing partial is left alone. On error the frame is not touched. The head
    /// copy the switch and pcap see keeps the partial sum (as tcpdump on a Linux sender shows
    /// offloaded checksums).
    pub fn complete_csum(&mut self) -> Result<(), offload::Error> {
        let meta = self.meta;
        let Csum::Partial { .. } = meta.csum else {
            return Ok(());
        };
        let mut hdr = [0u8; HDR_PEEK];
        let n = self.peek(&mut hdr).map_err(|_| offload::Error::Truncated {
            what: "frame headers",
            need: HDR_PEEK,
            have: 0,
        })?;
        let loc = offload::parse::locate(&hdr[..n])?;
        if loc.ip_end > self.len {
            return Err(offload::Error::Truncated {
                what: "IP datagram",
                need: loc.ip_end,
                have: self.len,
            });
        }
        // The field holds the pseudo-header sum: summing the whole L4 span completes it.
        let mut c = offload::csum::Checksum::new();
        if !self.sum_range(loc.csum_start..loc.ip_end, &mut c) {
            return Err(offload::Error::Truncated {
                what: "frame page",
                need: loc.ip_end,
                have: loc.csum_start,
            });
        }
        let mut v = c.finish();
        if v == 0 && loc.l4 == offload::parse::L4Kind::Udp {
            v = 0xFFFF;
        }
        let field = loc.csum_field();
        self.write_at(field, &v.to_be_bytes())
            .map_err(|_| offload::Error::CsumOutOfRange {
                start: loc.csum_start,
                offset: loc.csum_offset,
                len: self.len,
            })?;
        self.meta = OffloadMeta {
            csum: Csum::Validated,
            ..meta
        };
        Ok(())
    }

    /// Writes `data` at logical byte `at` of the frame, across a page boundary if need be.
    fn write_at(&self, at: usize, data: &[u8]) -> hypervisor::Result<()> {
        let mut at = at;
        let mut src = data;
        while !src.is_empty() {
            let (page, off) = (at / PAGE_SIZE, at % PAGE_SIZE);
            let n = src.len().min(PAGE_SIZE - off);
            let pfn = self
                .pages
                .as_slice()
                .get(page)
                .ok_or(hypervisor::Error::OutOfBounds { offset: at, len: n })?
                .pfn;
            self.pool.dom.write(pfn, off, &src[..n])?;
            src = &src[n..];
            at += n;
        }
        Ok(())
    }

    /// Sets the handle's header copy from the frame's first bytes, read by the caller.
    pub fn set_head(&mut self, first: &[u8]) {
        let n = self.len.min(HEAD).min(first.len());
        self.head[..n].copy_from_slice(&first[..n]);
    }

    /// Reads the frame's first bytes from memory into the handle's header copy. Call once the
    /// frame's data is in place.
    pub fn load_head(&mut self) -> hypervisor::Result<()> {
        let n = self.len.min(HEAD);
        let first = self.pages.as_slice()[0].pfn;
        self.pool.dom.read(first, 0, &mut self.head[..n])
    }

    /// Writes `data` (at least `len` bytes; the first `len` are used) into the buffer and keeps
    /// its head: what a NIC's DMA does for a received frame.
    pub fn fill(&mut self, data: &[u8]) -> hypervisor::Result<()> {
        for (page, chunk) in self
            .pages
            .as_slice()
            .iter()
            .zip(data[..self.len].chunks(PAGE_SIZE))
        {
            self.pool.dom.write(page.pfn, 0, chunk)?;
        }
        // The head comes from the bytes just written, not a second trip through the hypervisor.
        let n = self.len.min(HEAD);
        self.head[..n].copy_from_slice(&data[..n]);
        Ok(())
    }

    /// Reads the whole frame into `out` (for an uplink's transmit side and for tests).
    pub fn read_into(&self, out: &mut Vec<u8>) -> hypervisor::Result<()> {
        out.resize(self.len, 0);
        for (page, chunk) in self.pages.as_slice().iter().zip(out.chunks_mut(PAGE_SIZE)) {
            self.pool.dom.read(page.pfn, 0, chunk)?;
        }
        Ok(())
    }

    /// Shortens the frame to `len` bytes (`1..=len()`), giving the pages it no longer needs back
    /// to the pool: for a buffer posted to a device at its largest and filled with less. False
    /// (and nothing changed) for a length out of that range.
    pub fn truncate(&mut self, len: usize) -> bool {
        if len == 0 || len > self.len {
            return false;
        }
        self.len = len;
        let mut lists = self.pool.lock();
        self.pages
            .truncate(len.div_ceil(PAGE_SIZE), &mut lists.free);
        true
    }

    /// Sets the frame's length to `len` within the pages it holds (`len` must need exactly
    /// that many pages): for a buffer given back to a device to fill again. False (and nothing
    /// changed) otherwise.
    pub fn set_len(&mut self, len: usize) -> bool {
        if len == 0 || len.div_ceil(PAGE_SIZE) != self.pages.len() {
            return false;
        }
        self.len = len;
        true
    }

    /// Appends bytes `range` of `src` to the end of this frame, taking more pages from the pool
    /// as it grows: GRO merging a segment's payload into the frame it continues, one copy
    /// through the backend's own memory (each chunk bounded by both pages' ends). False if it
    /// cannot (`range` is not within `src`, the frame would pass `MAX_FRAME`, the pool is out of
    /// pages, a page cannot be accessed); the frame then keeps its length and pages.
    pub fn append_from(&mut self, src: &Buf<D>, range: Range<usize>) -> bool {
        let (old_len, old_pages) = (self.len, self.pages.len());
        let new_len = old_len + range.len();
        if range.start > range.end || range.end > src.len || new_len > MAX_FRAME {
            return false;
        }
        let mut lists = self.pool.lock();
        while self.pages.len() < new_len.div_ceil(PAGE_SIZE) {
            let Some(page) = self.pool.take_page(&mut lists) else {
                self.pages.truncate(old_pages, &mut lists.free);
                return false;
            };
            self.pages.push(page);
        }
        drop(lists);
        let dom = &self.pool.dom;
        let (mut from, mut to) = (range.start, old_len);
        while from < range.end {
            let (sp, so) = (from / PAGE_SIZE, from % PAGE_SIZE);
            let (dp, doff) = (to / PAGE_SIZE, to % PAGE_SIZE);
            let n = (range.end - from).min(PAGE_SIZE - so).min(PAGE_SIZE - doff);
            let (s, d) = (src.pages.as_slice()[sp].pfn, self.pages.as_slice()[dp].pfn);
            let copied = dom.with_page(s, |bytes| dom.write(d, doff, &bytes[so..so + n]));
            if !matches!(copied, Ok(Ok(()))) {
                self.pages.truncate(old_pages, &mut self.pool.lock().free);
                return false;
            }
            from += n;
            to += n;
        }
        self.len = new_len;
        true
    }

    /// Whether the frame's L4 checksum (located at `loc`) is correct, summed in software over
    /// its pages: what a receiver does for a frame whose device did not validate it.
    pub fn l4_csum_ok(&self, loc: &offload::parse::L4Loc) -> bool {
        if loc.ip_end > self.len {
            return false;
        }
        let mut hdr = [0u8; HDR_PEEK];
        let Ok(n) = self.peek(&mut hdr) else {
            return false;
        };
        if n < loc.hdr_len() {
            return false;
        }
        let mut c = offload::csum::pseudo(&hdr[..n], loc, loc.l4_len());
        self.sum_range(loc.csum_start..loc.ip_end, &mut c) && c.sum() == 0xFFFF
    }

    /// Adds the frame's bytes `range` (within its length) to `c`, page by page. False if a
    /// page could not be read.
    fn sum_range(&self, range: std::ops::Range<usize>, c: &mut offload::csum::Checksum) -> bool {
        let dom = &self.pool.dom;
        for (i, page) in self.pages.as_slice().iter().enumerate() {
            let lo = i * PAGE_SIZE;
            if lo >= range.end {
                break;
            }
            let hi = (lo + PAGE_SIZE).min(self.len);
            if hi <= range.start {
                continue;
            }
            if dom
                .with_page(page.pfn, |p| {
                    c.add_clipped(&p[..hi - lo], lo, &range);
                })
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Copies the frame into a fresh buffer of the same pool, page by page through the backend's
    /// own memory (flip mode gives a shared frame's guest a private copy this way).
    pub fn duplicate(&self) -> Option<Buf<D>> {
        let pool = BufPool(self.pool.clone());
        let mut copy = pool.alloc(self.len)?;
        for (i, (src, dst)) in self.pages().iter().zip(copy.pages()).enumerate() {
            let n = (self.len - i * PAGE_SIZE).min(PAGE_SIZE);
            let dom = &self.pool.dom;
            dom.with_page(src.pfn, |b| dom.write(dst.pfn, 0, &b[..n]))
                .ok()?
                .ok()?;
        }
        copy.head = self.head;
        copy.meta = self.meta;
        Some(copy)
    }
}

impl<D: GuestMemory> Drop for Buf<D> {
    fn drop(&mut self) {
        self.pool
            .lock()
            .free
            .extend_from_slice(self.pages.as_slice());
    }
}

/// The handle the switch moves: a shared reference to a filled buffer.
pub struct NetFrame<D: GuestMemory>(pub Arc<Buf<D>>);

impl<D: GuestMemory> Clone for NetFrame<D> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<D: GuestMemory> fmt::Debug for NetFrame<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<D: GuestMemory> NetFrame<D> {
    /// Wraps a filled buffer (its head loaded).
    pub fn new(buf: Buf<D>) -> Self {
        Self(Arc::new(buf))
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
        Arc::strong_count(&self.0) == 1
    }

    /// The buffer to change in place: this handle's own if it is the only one, else a private
    /// copy it now holds (the other holders keep the frame as it was). `None` if the pool has no
    /// pages for the copy.
    pub fn make_mut(&mut self) -> Option<&mut Buf<D>> {
        if Arc::get_mut(&mut self.0).is_none() {
            self.0 = Arc::new(self.0.duplicate()?);
        }
        Arc::get_mut(&mut self.0)
    }

    /// The frame's offload metadata.
    pub fn meta(&self) -> OffloadMeta {
        self.0.meta()
    }
}

impl<D: GuestMemory> bridge_lite::Frame for NetFrame<D> {
    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.0.head[..self.0.len.min(HEAD)]
    }

    #[inline]
    fn frame_len(&self) -> usize {
        self.0.len
    }
}
