//! The machine: memory, the frame allocator, the domain table, xenstore and statistics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use xenoprof::Class;

use crate::alloc::FrameAllocator;
use crate::domain::{Domain, DomainHandle};
use crate::mem::MachineMemory;
use crate::xenstore::{Store, XsConnection};
use hypervisor::error::{Error, Result};
use hypervisor::types::{DomId, MAX_DOMAINS};

/// Machine-wide counters (relaxed; a snapshot is [`HypervisorStats`]).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub copy_calls: AtomicU64,
    pub copy_ops: AtomicU64,
    pub copy_failed: AtomicU64,
    pub copy_bytes: AtomicU64,
    pub transfer_ops: AtomicU64,
    pub transfer_failed: AtomicU64,
    pub maps: AtomicU64,
    pub unmaps: AtomicU64,
}

impl Stats {
    pub fn add(c: &AtomicU64, n: u64) {
        // Relaxed: statistics only; nothing is published through them.
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// A snapshot of machine-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HypervisorStats {
    /// `grant_copy` hypercalls.
    pub copy_calls: u64,
    /// Copy ops processed.
    pub copy_ops: u64,
    /// Copy ops that returned a status other than okay.
    pub copy_failed: u64,
    /// Bytes copied by successful ops.
    pub copy_bytes: u64,
    /// Transfer ops processed.
    pub transfer_ops: u64,
    /// Transfer ops that failed.
    pub transfer_failed: u64,
    /// Grant mappings made.
    pub maps: u64,
    /// Grant mappings removed.
    pub unmaps: u64,
    /// Free machine frames.
    pub free_frames: u64,
}

pub(crate) struct Machine {
    pub mem: Arc<MachineMemory>,
    pub alloc: FrameAllocator,
    domains: Box<[RwLock<Option<Arc<Domain>>>]>,
    pub store: Store,
    pub stats: Stats,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine").field("mem", &self.mem).finish()
    }
}

impl Machine {
    /// `find_domain_by_id`: O(1), a flat array indexed by domid (class `find_domain`).
    #[inline]
    pub fn find_domain(&self, domid: DomId) -> Option<Arc<Domain>> {
        let _s = xenoprof::scope(Class::FIND_DOMAIN);
        self.domains
            .get(domid as usize)?
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The embedded hypervisor: one machine's memory and its domains.
///
/// Dropping it removes every domain from the table; domains still referenced by handles live on
/// until those handles drop (like Xen's zombie domains), then return their frames.
#[derive(Debug)]
pub struct Hypervisor {
    pub(crate) m: Arc<Machine>,
}

impl Hypervisor {
    /// A machine with `frames` 4 KiB frames of memory (a sparse memfd: RAM is used only as frames
    /// are touched).
    pub fn new(frames: u64) -> Result<Self> {
        let mem = Arc::new(MachineMemory::new(frames)?);
        Ok(Self {
            m: Arc::new(Machine {
                mem,
                alloc: FrameAllocator::new(frames),
                domains: (0..MAX_DOMAINS).map(|_| RwLock::new(None)).collect(),
                store: Store::new(),
                stats: Stats::default(),
            }),
        })
    }

    /// Creates a domain with the lowest free id and a reservation of `pages` pages.
    pub fn create_domain(&self, pages: u64) -> Result<DomainHandle> {
        for id in 0..MAX_DOMAINS as DomId {
            match self.create_domain_with_id(id, pages) {
                Err(Error::DomainExists(_)) => continue,
                r => return r,
            }
        }
        Err(Error::NoFreeDomId)
    }

    /// Creates domain `domid` with a reservation of `pages` pages: frames allocated, p2m built,
    /// view mapped, grant table and event channels set up, `/local/domain/<domid>` created in
    /// xenstore owned by the domain. Domain 0 is privileged in xenstore.
    pub fn create_domain_with_id(&self, domid: DomId, pages: u64) -> Result<DomainHandle> {
        let _h = xenoprof::hypercall(Class::MM);
        let slot = self
            .m
            .domains
            .get(domid as usize)
            .ok_or(Error::BadDomId(domid))?;
        let mut slot = slot.write().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err(Error::DomainExists(domid));
        }
        let d = Arc::new(Domain::new(domid, pages, self.m.clone())?);
        *slot = Some(d.clone());
        drop(slot);
        self.m.store.introduce_domain(domid);
        Ok(DomainHandle::from_domain(d))
    }

    /// A handle for an existing domain.
    pub fn domain(&self, domid: DomId) -> Result<DomainHandle> {
        self.m
            .find_domain(domid)
            .map(DomainHandle::from_domain)
            .ok_or(Error::NoSuchDomain(domid))
    }

    /// Destroys a domain: it leaves the domain table (new lookups fail with bad_domain), its
    /// event channels close, its xenstore directory goes. Its frames return to the allocator when
    /// the last reference drops: at once if no handle or grant mapping of it remains, else when
    /// they are dropped.
    pub fn destroy_domain(&self, domid: DomId) -> Result<()> {
        let _h = xenoprof::hypercall(Class::MM);
        let slot = self
            .m
            .domains
            .get(domid as usize)
            .ok_or(Error::BadDomId(domid))?;
        let d = slot.write().unwrap_or_else(|e| e.into_inner()).take();
        let d = d.ok_or(Error::NoSuchDomain(domid))?;
        d.kill();
        self.m.store.release_domain(domid);
        drop(d);
        Ok(())
    }

    /// Free machine frames.
    pub fn free_frames(&self) -> u64 {
        self.m.alloc.free_count()
    }

    /// Total machine frames.
    pub fn total_frames(&self) -> u64 {
        self.m.mem.frames()
    }

    /// A snapshot of the machine-wide counters.
    pub fn stats(&self) -> HypervisorStats {
        let s = &self.m.stats;
        // Relaxed: statistics.
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HypervisorStats {
            copy_calls: l(&s.copy_calls),
            copy_ops: l(&s.copy_ops),
            copy_failed: l(&s.copy_failed),
            copy_bytes: l(&s.copy_bytes),
            transfer_ops: l(&s.transfer_ops),
            transfer_failed: l(&s.transfer_failed),
            maps: l(&s.maps),
            unmaps: l(&s.unmaps),
            free_frames: self.free_frames(),
        }
    }

    /// A xenstore connection with dom0 (toolstack) privileges, whether or not domain 0 exists.
    pub fn xenstore(&self) -> XsConnection {
        XsConnection::new(self.m.clone(), 0, true)
    }

    /// Reads bytes of a machine frame through the direct map (a debugger's view, like
    /// `xenctx`): for tests and tools checking where data landed. Grant-table frames read as an
    /// error.
    pub fn read_frame(
        &self,
        mfn: hypervisor::types::Mfn,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<()> {
        if self.m.mem.read(mfn, offset, buf) {
            Ok(())
        } else {
            Err(Error::OutOfBounds {
                offset,
                len: buf.len(),
            })
        }
    }

    /// Benchmark baseline: copies `len` bytes between two machine frames with no grant work at
    /// all: with the copy engine through the direct map (`engine == true`), or with glibc's
    /// `memcpy` between the same frame numbers of this thread's private twin of machine memory
    /// (`memcpy` is not an atomic copy, so it never touches real frames): the "plain copy of the
    /// same bytes" grant copy is compared with.
    #[doc(hidden)]
    pub fn copy_frames_baseline(
        &self,
        engine: bool,
        dst: hypervisor::types::Mfn,
        doff: usize,
        src: hypervisor::types::Mfn,
        soff: usize,
        len: usize,
    ) -> bool {
        self.m.mem.copy_baseline(engine, dst, doff, src, soff, len)
    }

    /// The name of the copy engine in use (`avx2-64` or `atomic-words`).
    pub fn copy_engine(&self) -> &'static str {
        crate::mem::engine_name()
    }
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        // Break the Machine -> Domain -> Machine cycle.
        for slot in self.m.domains.iter() {
            let d = slot.write().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(d) = d {
                d.kill();
            }
        }
    }
}
