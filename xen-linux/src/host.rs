//! [`XenHost`]: the calling domain on real Xen, behind the seam netback is written against
//! (`XenDomain + GrantOps + GuestMemory`, i.e. [`crate::BackendDomain`]).
//!
//! - Memory: an [`Arena`] of this process; pfn = page index, a local address = the page's
//!   virtual address (what gntdev takes).
//! - Grant copies: one `IOCTL_GNTDEV_GRANT_COPY` per call, after every local side has been
//!   checked to lie in one page of the arena and claimed in its state word. An op that fails
//!   the checks is given its status here and never reaches the kernel: a stray address would
//!   have the kernel write into memory Rust does not know is shared.
//! - Grant maps: gntdev mappings ([`GntdevMapping`]), for the frontend's rings.
//! - No page transfers: flip mode is not reachable from userspace (as in Linux's netback).
//! - Event channels: one `/dev/xen/evtchn` descriptor per [`XenEvtchn`] handle.
//! - Xenstore: one connection per [`XenXs`], to the socket or device [`XenHost::open`] found.

use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use xenoprof::Class;

use super::arena::{Arena, CopyClaim};
use super::evtchn::DevEvtchn;
use super::gntdev::{Gntdev, GntdevIo, GntdevMapping, GrantCopySegment, GrantSide};
use super::handle::XenEvtchn;
use super::stats::{Counters, XenStats};
use super::store::{XenXs, map_xs_error};
use super::xs::XsClient;
use hypervisor::abi::GrantStatus;
use hypervisor::error::{Error, Result};
use hypervisor::ops::{CopyOp, CopyPtr};
use hypervisor::traits::{ForeignMapping, GrantOps, GuestMemory, XenDomain};
use hypervisor::types::{DomId, GrantRef, LocalAddr, PAGE_SIZE, Pfn};

#[derive(Debug)]
struct Inner {
    domid: DomId,
    arena: Arena,
    gntdev: Box<dyn GntdevIo>,
    xs_endpoint: PathBuf,
    counters: Arc<Counters>,
}

/// The calling domain (dom0 or a driver domain) on real Xen, as netback's `BackendDomain`.
/// Cheap to clone (all clones share one arena, gntdev descriptor and counters); `Send + Sync`.
///
/// ```no_run
/// use hypervisor::traits::{GrantOps, GuestMemory, XenDomain};
/// let host = xen_linux::XenHost::open(4096)?; // a 16 MiB arena
/// println!("running as domain {}", host.domid());
/// let xs = host.xenstore()?;
/// let evtchn = host.open_evtchn()?;
/// // ... hand `host` to netback, then print what it did:
/// println!("{}", host.stats());
/// # drop((xs, evtchn));
/// # Ok::<(), hypervisor::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct XenHost {
    inner: Arc<Inner>,
}

impl XenHost {
    /// Opens real Xen for this process with an arena of `pages` 4 KiB pages: gntdev, a check
    /// that evtchn opens, a xenstore connection (`$XENSTORED_PATH`, xenstored's socket, or
    /// `/dev/xen/xenbus`), and this domain's id read from xenstore (`domid`, relative to the
    /// domain's home, as `xenstore-read domid` does). The error names what is missing and what
    /// to do (not a Xen domain, a module not loaded, not root, xenstored not running).
    pub fn open(pages: usize) -> Result<Self> {
        if !Path::new("/dev/xen").exists() {
            return Err(Error::from(super::Error::Unavailable {
                what: "no /dev/xen".into(),
                hint: "this is not a Xen domain (or its xen drivers are not loaded): run in a \
                       Xen dom0 or driver domain, as root",
            }));
        }
        let gntdev = Gntdev::open()?;
        // Checked now rather than when the first frontend connects.
        drop(DevEvtchn::open()?);
        let mut xs = XsClient::open()?;
        let domid = read_domid(&mut xs)?;
        let endpoint = xs.endpoint().to_owned();
        Self::with_parts(pages, domid, Box::new(gntdev), endpoint)
    }

    /// A host over given parts (tests use a fake gntdev and a fake xenstored).
    pub(crate) fn with_parts(
        pages: usize,
        domid: DomId,
        gntdev: Box<dyn GntdevIo>,
        xs_endpoint: PathBuf,
    ) -> Result<Self> {
        Ok(XenHost {
            inner: Arc::new(Inner {
                domid,
                arena: Arena::new(pages)?,
                gntdev,
                xs_endpoint,
                counters: Arc::default(),
            }),
        })
    }

    /// Pages in the arena.
    pub fn pages(&self) -> usize {
        self.inner.arena.pages()
    }

    /// Pages of the arena not allocated.
    pub fn free_pages(&self) -> usize {
        self.inner.arena.free_pages()
    }

    /// The xenstore socket or device connections are made to.
    pub fn xs_endpoint(&self) -> &Path {
        &self.inner.xs_endpoint
    }

    /// The counters: ioctls, copies, maps, event channels.
    pub fn stats(&self) -> XenStats {
        let g = &self.inner.gntdev;
        XenStats {
            gntdev_ioctls: g.ioctls(),
            unmap_failures: g.unmap_failures(),
            ..self.inner.counters.snapshot()
        }
    }

    /// Checks and claims one op's local side; what the op becomes.
    fn prepare(&self, op: &CopyOp) -> Prepared<'_> {
        let len = usize::from(op.len);
        if op.source.page_offset() + len > PAGE_SIZE || op.dest.page_offset() + len > PAGE_SIZE {
            return Prepared::Refused(GrantStatus::BadCopyArg);
        }
        let arena = &self.inner.arena;
        let claimed = |addr, dest, grant| match arena.claim_copy(addr, op.len, dest) {
            Ok(claim) => Prepared::Local { claim, grant },
            Err(status) => Prepared::Refused(status),
        };
        match (op.source, op.dest) {
            // gntdev refuses the whole batch (EINVAL) for a copy with no grant in it.
            (CopyPtr::Local(_), CopyPtr::Local(_)) => Prepared::Refused(GrantStatus::BadCopyArg),
            (CopyPtr::Local(a), CopyPtr::Gref { .. }) => claimed(a, false, side(op.dest)),
            (CopyPtr::Gref { .. }, CopyPtr::Local(a)) => claimed(a, true, side(op.source)),
            (CopyPtr::Gref { .. }, CopyPtr::Gref { .. }) => Prepared::Grants {
                src: side(op.source),
                dst: side(op.dest),
                len: op.len,
            },
        }
    }
}

/// One op on its way to the kernel.
enum Prepared<'a> {
    /// Given this status here; not sent.
    Refused(GrantStatus),
    /// A local side (claimed until this drops) and a granted one.
    Local {
        claim: CopyClaim<'a>,
        grant: GrantSide,
    },
    /// Two granted sides.
    Grants {
        src: GrantSide,
        dst: GrantSide,
        len: u16,
    },
}

impl Prepared<'_> {
    fn segment(&self) -> Result<GrantCopySegment<'_>, GrantStatus> {
        let seg = match self {
            Prepared::Refused(status) => return Err(*status),
            Prepared::Local { claim, grant } => claim.segment(*grant),
            Prepared::Grants { src, dst, len } => {
                GrantCopySegment::grant_to_grant(*src, *dst, *len)
            }
        };
        // The sides were checked against their pages in `prepare`; should gntdev's own check
        // disagree, the op is refused all the same rather than failing the batch.
        seg.map_err(|_| GrantStatus::BadCopyArg)
    }
}

/// The granted side of an op (`CopyPtr::Local` never reaches here).
fn side(p: CopyPtr) -> GrantSide {
    match p {
        CopyPtr::Gref {
            domid,
            gref,
            offset,
        } => GrantSide {
            domid,
            gref,
            offset,
        },
        CopyPtr::Local(_) => GrantSide {
            domid: 0,
            gref: GrantRef(0),
            offset: 0,
        },
    }
}

/// This domain's id: xenstore's `domid` node, read by its relative path (xenstored resolves it
/// under the connection's own `/local/domain/<id>`), as `xenstore-read domid` does.
pub(crate) fn read_domid(xs: &mut XsClient) -> Result<DomId> {
    let raw = xs.read_string("domid").map_err(|e| {
        if e.is_not_found() {
            Error::from(super::Error::Unavailable {
                what: "xenstore has no domid node for this domain".into(),
                hint: "the toolstack writes it (in dom0, xencommons runs xen-init-dom0): start \
                       xencommons, or write it by hand: xenstore-write /local/domain/0/domid 0",
            })
        } else {
            map_xs_error(e, 0, "domid", "read")
        }
    })?;
    raw.trim().parse().map_err(|_| {
        Error::from(super::Error::Unavailable {
            what: format!("xenstore's domid node holds {raw:?}, not a domain id"),
            hint: "fix it with xenstore-write domid <this domain's id>",
        })
    })
}

// SAFETY: `page_ptr` is `base + pfn * 4096` in the arena's one mapping, which the Arc'd inner
// state of every clone owns and unmaps only when the last clone drops; mmap returns a
// page-aligned base, and the mapping is read-write, so atomics work on it. `pin_ring` sets the
// page's RING bit, after which `read`, `write`, `with_page` and `free_page` refuse it and a
// grant copy naming it as a local side is refused before the kernel sees it (the arena's copy
// claims check the bit, and `pin_ring` waits for no claim to be live). This domain grants none
// of its pages on real Xen (it has no `GrantTable` here), so no copy reaches it through a
// grant either.
#[allow(unsafe_code)]
unsafe impl GuestMemory for XenHost {
    fn domid(&self) -> DomId {
        self.inner.domid
    }
    fn alloc_page(&self) -> Result<Pfn> {
        self.inner.arena.alloc().ok_or(Error::ReservationExhausted {
            domid: self.inner.domid,
            pages: self.inner.arena.pages() as u64,
        })
    }
    fn free_page(&self, pfn: Pfn) -> Result<()> {
        self.inner.arena.free(pfn)
    }
    fn read(&self, pfn: Pfn, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.inner.arena.read(pfn, offset, buf)
    }
    fn write(&self, pfn: Pfn, offset: usize, data: &[u8]) -> Result<()> {
        self.inner.arena.write(pfn, offset, data)
    }
    fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.inner.arena.with_page(pfn, f)
    }
    fn local_addr(&self, pfn: Pfn) -> Result<LocalAddr> {
        self.inner.arena.local_addr(pfn)
    }
    fn page_ptr(&self, pfn: Pfn) -> Result<NonNull<u8>> {
        self.inner.arena.page_ptr(pfn)
    }
    fn pin_ring(&self, pfn: Pfn) -> Result<()> {
        self.inner.arena.pin_ring(pfn)
    }
    fn unpin_ring(&self, pfn: Pfn) {
        self.inner.arena.unpin_ring(pfn)
    }
}

// SAFETY: `as_non_null` is the address gntdev's mmap returned for one PAGE_SIZE page: page-
// aligned, and mapped until the mapping is dropped or consumed by `unmap` (which munmaps only
// then). `GntdevMapping` itself never dereferences it, and nothing else in this crate does
// either except `ringpage::mapped_ring`, which accesses it through atomics only.
#[allow(unsafe_code)]
unsafe impl ForeignMapping for GntdevMapping {
    fn as_ptr(&self) -> NonNull<u8> {
        self.as_non_null()
    }
}

impl GrantOps for XenHost {
    type Mapping = GntdevMapping;

    fn grant_copy(&self, ops: &mut [CopyOp]) -> Result<()> {
        let prepared: Vec<Prepared<'_>> = ops.iter().map(|op| self.prepare(op)).collect();
        let mut segs = Vec::with_capacity(ops.len());
        let mut sent = Vec::with_capacity(ops.len());
        let mut refused = 0;
        for (i, p) in prepared.iter().enumerate() {
            match p.segment() {
                Ok(seg) => {
                    segs.push(seg);
                    sent.push(i);
                }
                Err(status) => {
                    ops[i].status = status;
                    refused += 1;
                }
            }
        }
        let c = &self.inner.counters;
        let result = if segs.is_empty() {
            Ok(())
        } else {
            Counters::add(&c.copy_calls, 1);
            let _h = xenoprof::hypercall(Class::GRANT_TABLE);
            self.inner.gntdev.grant_copy(&mut segs)
        };
        for (seg, &i) in segs.iter().zip(&sent) {
            ops[i].status = if result.is_ok() {
                seg.status()
            } else {
                // The kernel may have marked segments okay before failing: trust none.
                GrantStatus::GeneralError
            };
        }
        // The kernel is done with the local sides: release their claims.
        drop(segs);
        drop(prepared);
        let (mut failed, mut bytes) = (0, 0);
        for op in ops.iter() {
            if op.status == GrantStatus::Okay {
                bytes += u64::from(op.len);
            } else {
                failed += 1;
            }
        }
        Counters::add(&c.copy_ops, ops.len() as u64);
        Counters::add(&c.copy_failed, failed);
        Counters::add(&c.copy_refused, refused);
        Counters::add(&c.copy_bytes, bytes);
        result.map_err(Error::from)
    }

    fn map_grant_ref(&self, remote: DomId, gref: GrantRef) -> Result<GntdevMapping> {
        let c = &self.inner.counters;
        let _h = xenoprof::hypercall(Class::GRANT_TABLE);
        match self.inner.gntdev.map_grant_ref(remote, gref) {
            Ok(m) => {
                Counters::add(&c.maps, 1);
                Ok(m)
            }
            Err(e) => {
                Counters::add(&c.map_failures, 1);
                Err(e.into())
            }
        }
    }

    // `can_transfer` stays false and `grant_transfer` Unsupported: GNTTABOP_transfer is not
    // reachable from Linux userspace.
}

impl XenDomain for XenHost {
    type Store = XenXs;
    type Evtchn = XenEvtchn;

    fn xenstore(&self) -> Result<XenXs> {
        XenXs::connect(&self.inner.xs_endpoint, self.inner.domid)
    }

    fn open_evtchn(&self) -> Result<XenEvtchn> {
        XenEvtchn::open_counted(self.inner.counters.clone())
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
