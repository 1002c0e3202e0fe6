//! Domains: reservation, p2m, view, and the handle through which a domain makes hypercalls.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_utils::CachePadded;
use xenoprof::Class;

use crate::evtchn::EventChannels;
use crate::grant::GrantTableState;
use crate::hook::{Hypercall, HypercallHook};
use crate::machine::Machine;
use crate::mem::{MapArea, PageBorrow, View};
use crate::xenstore::XsConnection;
use hypervisor::error::{Error, Result};
use hypervisor::types::{DomId, GNTTAB_FRAMES, LocalAddr, Mfn, PAGE_SIZE, Pfn};

/// Grant-mapping slots per domain (pages of address space reserved for foreign grants).
pub const MAP_AREA_SLOTS: usize = 4096;

struct PfnAlloc {
    free: Vec<Pfn>,
    allocated: Vec<bool>,
}

/// A domain. Other domains' hypercalls read its identity, p2m, view and grant table for every
/// op they run on it, so those fields must not share a cache line with what its vCPUs keep
/// writing: the locks, the event channels and the grant free list are each padded to lines of
/// their own, and the struct is line-aligned so the `Arc`'s reference counts (bumped by every
/// domain lookup) sit on a line before it.
#[repr(align(128))]
pub(crate) struct Domain {
    pub id: DomId,
    pub machine: Arc<Machine>,
    /// Reservation size: pfns `0..pages` are the domain's memory.
    pub pages: u64,
    /// pfn -> mfn for the reservation, then the grant-table frames.
    p2m: Box<[AtomicU64]>,
    /// Serialises p2m updates and view remaps (Xen's p2m lock).
    pub mm_lock: CachePadded<Mutex<()>>,
    pub view: View,
    pfn_alloc: CachePadded<Mutex<PfnAlloc>>,
    pub gnttab: GrantTableState,
    pub evtchn: CachePadded<EventChannels>,
    pub map_area: MapArea,
    dying: AtomicBool,
    /// A test's hook, run before the domain's grant hypercalls and page allocations (`hook.rs`);
    /// set at most once, read on every such call.
    pub hook: OnceLock<HypercallHook>,
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain")
            .field("id", &self.id)
            .field("pages", &self.pages)
            .finish()
    }
}

impl Domain {
    pub fn new(id: DomId, pages: u64, machine: Arc<Machine>) -> Result<Self> {
        if pages == 0 || pages > u32::MAX as u64 {
            return Err(Error::BadSize { pages });
        }
        let want = pages as usize + GNTTAB_FRAMES;
        let mfns = machine.alloc.alloc(want).ok_or(Error::OutOfMemory {
            requested: want as u64,
            free: machine.alloc.free_count(),
        })?;
        let built = (|| {
            let view = {
                let _m = xenoprof::scope(Class::MM);
                View::new(machine.mem.clone(), &mfns, pages as usize)?
            };
            let map_area = MapArea::new(machine.mem.clone(), MAP_AREA_SLOTS)?;
            Ok::<_, Error>((view, map_area))
        })();
        let (view, map_area) = match built {
            Ok(v) => v,
            Err(e) => {
                machine.alloc.free(&mfns);
                return Err(e);
            }
        };
        let gnttab = GrantTableState::new(
            crate::mem::GrantFrames::new(machine.mem.clone(), mfns[pages as usize..].to_vec()),
            pages as usize,
        );
        Ok(Self {
            id,
            pages,
            p2m: mfns.iter().map(|m| AtomicU64::new(m.0)).collect(),
            mm_lock: CachePadded::new(Mutex::new(())),
            view,
            pfn_alloc: CachePadded::new(Mutex::new(PfnAlloc {
                free: (0..pages).rev().map(Pfn).collect(),
                allocated: vec![false; pages as usize],
            })),
            gnttab,
            evtchn: CachePadded::new(EventChannels::new()),
            map_area,
            dying: AtomicBool::new(false),
            hook: OnceLock::new(),
            machine,
        })
    }

    /// The frame at a reservation pfn.
    #[inline]
    pub fn p2m(&self, pfn: Pfn) -> Option<Mfn> {
        if pfn.0 >= self.pages {
            return None;
        }
        // Acquire: pairs with the Release store in `set_p2m`, so a reader that sees a new frame
        // also sees the remap that preceded the store.
        self.p2m
            .get(pfn.index())
            .map(|m| Mfn(m.load(Ordering::Acquire)))
    }

    /// Points `pfn` at `mfn`: p2m entry and view mapping (class `mm`). Caller holds `mm_lock`
    /// and the pfn's MOVING or TARGET state. Returns the old frame.
    pub fn set_p2m(&self, pfn: Pfn, mfn: Mfn) -> Result<Mfn> {
        let _m = xenoprof::scope(Class::MM);
        let old = self.p2m(pfn).ok_or(Error::PfnOutOfRange {
            pfn,
            pages: self.pages,
        })?;
        self.view.remap(pfn, mfn)?;
        if let Some(e) = self.p2m.get(pfn.index()) {
            // Release: pairs with the Acquire load in `p2m`.
            e.store(mfn.0, Ordering::Release);
        }
        Ok(old)
    }

    pub fn is_dying(&self) -> bool {
        // Acquire: pairs with the Release store in `kill`.
        self.dying.load(Ordering::Acquire)
    }

    /// Marks the domain dying and closes its event channels.
    pub fn kill(&self) {
        // Release: pairs with the Acquire load in `is_dying`.
        self.dying.store(true, Ordering::Release);
        self.evtchn.close_all(self);
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        let mut frames: Vec<Mfn> =
            // Relaxed: we are the last owner (`&mut self`), nobody else reads the p2m.
            self.p2m[..self.pages as usize].iter().map(|m| Mfn(m.load(Ordering::Relaxed))).collect();
        frames.extend(self.gnttab.frames_mut().take_frames());
        frames.sort_unstable();
        // Scrub (and give the RAM back) in runs, as Xen scrubs a dead domain's pages.
        let mut i = 0;
        while i < frames.len() {
            let mut n = 1;
            while i + n < frames.len() && frames[i + n].0 == frames[i].0 + n as u64 {
                n += 1;
            }
            self.machine.mem.discard(frames[i], n as u64);
            i += n;
        }
        self.machine.alloc.free(&frames);
    }
}

/// A domain's handle: the domain's side of the hypervisor interface. Cheap to clone, `Send +
/// Sync`; use it from the domain's vCPU threads. Calls act on behalf of this domain (Xen's
/// `current`). It keeps the domain's memory alive.
#[derive(Debug, Clone)]
pub struct DomainHandle {
    pub(crate) d: Arc<Domain>,
}

impl DomainHandle {
    pub(crate) fn from_domain(d: Arc<Domain>) -> Self {
        Self { d }
    }

    /// This domain's id.
    pub fn domid(&self) -> DomId {
        self.d.id
    }

    /// Reservation size in pages.
    pub fn pages(&self) -> u64 {
        self.d.pages
    }

    /// Whether the domain has been destroyed (the handle still keeps its memory alive).
    pub fn is_dying(&self) -> bool {
        self.d.is_dying()
    }

    /// The machine frame currently behind `pfn` (changes when a transfer lands there).
    pub fn pfn_to_mfn(&self, pfn: Pfn) -> Result<Mfn> {
        self.d.p2m(pfn).ok_or(Error::PfnOutOfRange {
            pfn,
            pages: self.d.pages,
        })
    }

    /// Allocates a page from the reservation.
    pub fn alloc_page(&self) -> Result<Pfn> {
        self.before(Hypercall::AllocPage);
        let mut a = self.d.pfn_alloc.lock().unwrap_or_else(|e| e.into_inner());
        let pfn = a.free.pop().ok_or(Error::ReservationExhausted {
            domid: self.d.id,
            pages: self.d.pages,
        })?;
        if let Some(x) = a.allocated.get_mut(pfn.index()) {
            *x = true;
        }
        Ok(pfn)
    }

    /// Returns a page to the reservation (refused while it is pinned as a ring).
    pub fn free_page(&self, pfn: Pfn) -> Result<()> {
        if self.d.view.is_ring(pfn) {
            return Err(Error::PageIsRing(pfn));
        }
        let mut a = self.d.pfn_alloc.lock().unwrap_or_else(|e| e.into_inner());
        match a.allocated.get_mut(pfn.index()) {
            Some(x) if *x => *x = false,
            _ => return Err(Error::PageNotAllocated(pfn)),
        }
        a.free.push(pfn);
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` of page `pfn` through the domain's view.
    pub fn read(&self, pfn: Pfn, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.d.view.read(pfn, offset, buf)
    }

    /// Writes `data` at `offset` of page `pfn` through the domain's view. Fails with
    /// [`Error::PageBorrowed`] while a [`PageBorrow`] of the page lives.
    pub fn write(&self, pfn: Pfn, offset: usize, data: &[u8]) -> Result<()> {
        self.d.view.write(pfn, offset, data)
    }

    /// Borrows page `pfn` as `&[u8]` (e.g. to lend a received frame to smoltcp's
    /// `RxToken::consume`). Refused with [`Error::PageBusy`] while the page is granted writable,
    /// accepts a transfer, or is being given away; while the borrow lives, writes to the page
    /// (own writes, copies into it, new writable grants, transfers) are refused. So the bytes
    /// cannot change under the reference.
    pub fn borrow_page(&self, pfn: Pfn) -> Result<PageBorrow<'_>> {
        self.d.view.borrow(pfn)
    }

    /// Calls `f` with page `pfn` borrowed (see [`DomainHandle::borrow_page`]).
    pub fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let b = self.borrow_page(pfn)?;
        Ok(f(&b))
    }

    /// The address of page `pfn` in the domain's view: valid for 4096 bytes, page-aligned, and
    /// mapped for as long as this handle or any clone of it lives (a transfer into the pfn swaps
    /// the frame behind the same address). Only atomics may touch it, and only while the page
    /// is pinned with [`DomainHandle::pin_ring`] (see `hypervisor::ringpage::own_ring`).
    pub fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>> {
        self.d.view.page_ptr(pfn)
    }

    /// The address of page `pfn` as a number: the local side of a grant copy.
    pub fn local_addr(&self, pfn: Pfn) -> Result<LocalAddr> {
        self.d.view.addr_of(pfn).map(LocalAddr)
    }

    /// Pins an unused page of the reservation as a shared ring: until
    /// [`DomainHandle::unpin_ring`], this domain's reads, writes, borrows and frees of it are
    /// refused, and so is every grant copy or transfer naming it.
    pub fn pin_ring(&self, pfn: Pfn) -> Result<()> {
        let _l = self.d.mm_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mfn = self.pfn_to_mfn(pfn)?;
        self.d.view.ring_begin(pfn, false)?;
        self.d.machine.mem.atomic_begin(mfn);
        Ok(())
    }

    /// Ends one [`DomainHandle::pin_ring`].
    pub fn unpin_ring(&self, pfn: Pfn) {
        let _l = self.d.mm_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.d.view.is_ring(pfn)
            && let Ok(mfn) = self.pfn_to_mfn(pfn)
        {
            self.d.machine.mem.atomic_end(mfn);
            self.d.view.ring_end(pfn);
        }
    }

    /// A xenstore connection for this domain (its own watch queue).
    pub fn xenstore(&self) -> XsConnection {
        XsConnection::new(self.d.machine.clone(), self.d.id, false)
    }
}

const _: () = assert!(PAGE_SIZE == 4096);
