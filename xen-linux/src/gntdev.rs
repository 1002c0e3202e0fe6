//! `/dev/xen/gntdev`: grant copies and grant maps from Linux userspace.
//!
//! Layouts and semantics from Linux 6.1 `include/uapi/xen/gntdev.h` and `drivers/xen/gntdev.c`:
//!
//! - `IOCTL_GNTDEV_GRANT_COPY` takes `{count, segments}`; each 24-byte segment names its source
//!   and destination either by a virtual address of this process or by `{ref, offset, domid}`
//!   (flag `GNTCOPY_source_gref` / `GNTCOPY_dest_gref`). At least one side must be a grant and
//!   the granted side must not cross its page, or the whole ioctl fails with `EINVAL`; the local
//!   side may cross pages (the kernel splits it). The kernel writes `GNTST_okay` into each
//!   segment's status, then the first failure of its hypercall ops, batching 16 ops per
//!   `GNTTABOP_copy`.
//! - `IOCTL_GNTDEV_MAP_GRANT_REF` reserves an index for a grant; `mmap` at that index (a byte
//!   offset) with `MAP_SHARED` maps it (read-only without `PROT_WRITE`); after `munmap`,
//!   `IOCTL_GNTDEV_UNMAP_GRANT_REF` releases the index.
//! - `IOCTL_GNTDEV_SET_MAX_GRANTS` is defined in the header but Linux 6.1's `gntdev_ioctl` no
//!   longer handles it (the limit is the `limit` module parameter), so it is not offered here.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{Error, OS_HINT, Result};
use super::sys::{IOC_NONE, ioc};
use hypervisor::abi::GrantStatus;
use hypervisor::types::{DomId, GrantRef, PAGE_SIZE};

/// The device node.
pub const GNTDEV_PATH: &str = "/dev/xen/gntdev";
const GNTDEV_MODULE_HINT: &str =
    "load xen-gntdev (modprobe xen-gntdev) in a Xen dom0 or driver domain";

/// `GNTCOPY_source_gref`: the source is `{ref, offset, domid}`.
pub const GNTCOPY_SOURCE_GREF: u16 = 1;
/// `GNTCOPY_dest_gref`: the destination is `{ref, offset, domid}`.
pub const GNTCOPY_DEST_GREF: u16 = 2;

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct IoctlGrantRef {
    domid: u32,
    gref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with `count == 1` (its `refs[1]` is the declared size).
#[repr(C)]
#[derive(Debug)]
struct IoctlMapGrantRef {
    count: u32,
    pad: u32,
    index: u64,
    refs: [IoctlGrantRef; 1],
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Debug)]
struct IoctlUnmapGrantRef {
    index: u64,
    count: u32,
    pad: u32,
}

/// `struct ioctl_gntdev_set_max_grants` (for the request number only; see the module docs).
#[repr(C)]
struct IoctlSetMaxGrants {
    _count: u32,
}

/// `struct ioctl_gntdev_grant_copy`.
#[repr(C)]
#[derive(Debug)]
struct IoctlGrantCopy {
    count: libc::c_uint,
    segments: *mut GrantCopySegment<'static>,
}

/// `_IOC(_IOC_NONE, 'G', 0, sizeof(struct ioctl_gntdev_map_grant_ref))`.
pub const IOCTL_GNTDEV_MAP_GRANT_REF: u32 = ioc(IOC_NONE, b'G', 0, size_of::<IoctlMapGrantRef>());
/// `_IOC(_IOC_NONE, 'G', 1, sizeof(struct ioctl_gntdev_unmap_grant_ref))`.
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u32 =
    ioc(IOC_NONE, b'G', 1, size_of::<IoctlUnmapGrantRef>());
/// `_IOC(_IOC_NONE, 'G', 3, sizeof(struct ioctl_gntdev_set_max_grants))`.
pub const IOCTL_GNTDEV_SET_MAX_GRANTS: u32 = ioc(IOC_NONE, b'G', 3, size_of::<IoctlSetMaxGrants>());
/// `_IOC(_IOC_NONE, 'G', 8, sizeof(struct ioctl_gntdev_grant_copy))`.
pub const IOCTL_GNTDEV_GRANT_COPY: u32 = ioc(IOC_NONE, b'G', 8, size_of::<IoctlGrantCopy>());

// The numbers the shared notes record for x86-64, and the header's layouts.
const _: () = {
    assert!(IOCTL_GNTDEV_MAP_GRANT_REF == 0x0018_4700);
    assert!(IOCTL_GNTDEV_UNMAP_GRANT_REF == 0x0010_4701);
    assert!(IOCTL_GNTDEV_SET_MAX_GRANTS == 0x0004_4703);
    assert!(IOCTL_GNTDEV_GRANT_COPY == 0x0010_4708);

    assert!(size_of::<IoctlGrantRef>() == 8);
    assert!(offset_of!(IoctlGrantRef, domid) == 0);
    assert!(offset_of!(IoctlGrantRef, gref) == 4);

    assert!(size_of::<IoctlMapGrantRef>() == 24);
    assert!(offset_of!(IoctlMapGrantRef, count) == 0);
    assert!(offset_of!(IoctlMapGrantRef, pad) == 4);
    assert!(offset_of!(IoctlMapGrantRef, index) == 8);
    assert!(offset_of!(IoctlMapGrantRef, refs) == 16);

    assert!(size_of::<IoctlUnmapGrantRef>() == 16);
    assert!(offset_of!(IoctlUnmapGrantRef, index) == 0);
    assert!(offset_of!(IoctlUnmapGrantRef, count) == 8);
    assert!(offset_of!(IoctlUnmapGrantRef, pad) == 12);

    assert!(size_of::<IoctlGrantCopy>() == 16);
    assert!(offset_of!(IoctlGrantCopy, count) == 0);
    assert!(offset_of!(IoctlGrantCopy, segments) == 8);

    assert!(size_of::<GrantCopySegment<'static>>() == 24);
    assert!(offset_of!(GrantCopySegment<'static>, source) == 0);
    assert!(offset_of!(GrantCopySegment<'static>, dest) == 8);
    assert!(offset_of!(GrantCopySegment<'static>, len) == 16);
    assert!(offset_of!(GrantCopySegment<'static>, flags) == 18);
    assert!(offset_of!(GrantCopySegment<'static>, status) == 20);
};

/// The granted side of a copy: `{ref, offset, domid}` in the segment's union.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantSide {
    /// The granting domain.
    pub domid: DomId,
    /// Its grant reference.
    pub gref: GrantRef,
    /// Byte offset in the granted page.
    pub offset: u16,
}

impl GrantSide {
    fn bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.gref.0.to_ne_bytes());
        b[4..6].copy_from_slice(&self.offset.to_ne_bytes());
        b[6..8].copy_from_slice(&self.domid.to_ne_bytes());
        b
    }

    fn from_bytes(b: [u8; 8]) -> Self {
        GrantSide {
            gref: GrantRef(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            offset: u16::from_ne_bytes([b[4], b[5]]),
            domid: u16::from_ne_bytes([b[6], b[7]]),
        }
    }

    fn check(self, len: usize) -> Result<()> {
        if usize::from(self.offset) + len > PAGE_SIZE {
            return Err(Error::BadCopySegment {
                offset: self.offset,
                len,
            });
        }
        Ok(())
    }
}

fn addr_bytes(addr: usize) -> [u8; 8] {
    // `void __user *virt` in the union: the pointer's own bytes, at the start.
    let mut b = [0u8; 8];
    b[..size_of::<usize>()].copy_from_slice(&addr.to_ne_bytes());
    b
}

fn local_addr(b: [u8; 8]) -> usize {
    let mut a = [0u8; size_of::<usize>()];
    a.copy_from_slice(&b[..size_of::<usize>()]);
    usize::from_ne_bytes(a)
}

/// `struct gntdev_grant_copy_segment`: one copy between a local buffer and a granted page, or
/// between two granted pages. It borrows its local buffer for `'a`, so the buffer outlives the
/// ioctl that reads or writes it.
#[repr(C, align(8))]
pub struct GrantCopySegment<'a> {
    /// Union: local virtual address, or [`GrantSide`] with `GNTCOPY_source_gref`.
    source: [u8; 8],
    /// Union: local virtual address, or [`GrantSide`] with `GNTCOPY_dest_gref`.
    dest: [u8; 8],
    len: u16,
    flags: u16,
    status: i16,
    _buffer: PhantomData<&'a mut [u8]>,
}

impl<'a> GrantCopySegment<'a> {
    fn new(source: [u8; 8], dest: [u8; 8], len: usize, flags: u16) -> Self {
        GrantCopySegment {
            source,
            dest,
            // Callers checked len against the granted page (<= 4096).
            len: len as u16,
            flags,
            // Until the kernel says otherwise, nothing was copied.
            status: GrantStatus::GeneralError.raw(),
            _buffer: PhantomData,
        }
    }

    /// Copies local bytes into a granted page (netback's receive path: a frame into a guest's
    /// rx buffer).
    pub fn to_grant(src: &'a [u8], dest: GrantSide) -> Result<Self> {
        dest.check(src.len())?;
        let addr = src.as_ptr().expose_provenance();
        Ok(Self::new(
            addr_bytes(addr),
            dest.bytes(),
            src.len(),
            GNTCOPY_DEST_GREF,
        ))
    }

    /// Copies from a granted page into local bytes (netback's transmit path: a guest's packet
    /// into a backend buffer).
    pub fn from_grant(src: GrantSide, dest: &'a mut [u8]) -> Result<Self> {
        src.check(dest.len())?;
        let addr = dest.as_mut_ptr().expose_provenance();
        Ok(Self::new(
            src.bytes(),
            addr_bytes(addr),
            dest.len(),
            GNTCOPY_SOURCE_GREF,
        ))
    }

    /// Copies `len` bytes between a local address and a granted page, `grant` being the
    /// destination if `to_grant`, else the source. For memory this crate manages itself (the
    /// [`super::Arena`] of a [`super::XenHost`]), where no slice can be lent to the kernel.
    ///
    /// # Safety
    ///
    /// While any ioctl that is handed this segment runs, `local .. local + len` must be mapped
    /// in this process (writable if it is the destination, i.e. `!to_grant`), and no Rust
    /// reference may point into it: the kernel reads or writes those bytes behind the
    /// compiler's back. The segment's lifetime `'a` must not outlive the memory.
    pub(crate) unsafe fn with_local(
        local: usize,
        grant: GrantSide,
        len: u16,
        to_grant: bool,
    ) -> Result<Self> {
        let len = usize::from(len);
        grant.check(len)?;
        Ok(if to_grant {
            Self::new(addr_bytes(local), grant.bytes(), len, GNTCOPY_DEST_GREF)
        } else {
            Self::new(grant.bytes(), addr_bytes(local), len, GNTCOPY_SOURCE_GREF)
        })
    }

    /// Copies `len` bytes between two granted pages.
    pub fn grant_to_grant(src: GrantSide, dest: GrantSide, len: u16) -> Result<Self> {
        let len = usize::from(len);
        src.check(len)?;
        dest.check(len)?;
        Ok(Self::new(
            src.bytes(),
            dest.bytes(),
            len,
            GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
        ))
    }

    /// The length.
    pub fn len(&self) -> u16 {
        self.len
    }

    /// Whether the length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `GNTCOPY_*` flags.
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The granted source, if the source is a grant.
    pub fn source_grant(&self) -> Option<GrantSide> {
        (self.flags & GNTCOPY_SOURCE_GREF != 0).then(|| GrantSide::from_bytes(self.source))
    }

    /// The granted destination, if the destination is a grant.
    pub fn dest_grant(&self) -> Option<GrantSide> {
        (self.flags & GNTCOPY_DEST_GREF != 0).then(|| GrantSide::from_bytes(self.dest))
    }

    /// The local source address, if the source is local.
    pub fn source_local(&self) -> Option<usize> {
        (self.flags & GNTCOPY_SOURCE_GREF == 0).then(|| local_addr(self.source))
    }

    /// The local destination address, if the destination is local.
    pub fn dest_local(&self) -> Option<usize> {
        (self.flags & GNTCOPY_DEST_GREF == 0).then(|| local_addr(self.dest))
    }

    /// Sets the status, as the kernel does (for fake devices in tests).
    #[cfg(test)]
    pub(crate) fn set_raw_status(&mut self, status: i16) {
        self.status = status;
    }

    /// The status after [`Gntdev::grant_copy`]: `GeneralError` before it, after a failed ioctl,
    /// or for a code this crate does not know (see [`GrantCopySegment::raw_status`]).
    pub fn status(&self) -> GrantStatus {
        GrantStatus::from_raw(self.status).unwrap_or(GrantStatus::GeneralError)
    }

    /// The raw `GNTST_*` status.
    pub fn raw_status(&self) -> i16 {
        self.status
    }
}

impl fmt::Debug for GrantCopySegment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |flag: u16, b: [u8; 8]| {
            if self.flags & flag != 0 {
                format!("{:?}", GrantSide::from_bytes(b))
            } else {
                format!("local {:#x}", u64::from_ne_bytes(b))
            }
        };
        f.debug_struct("GrantCopySegment")
            .field("source", &side(GNTCOPY_SOURCE_GREF, self.source))
            .field("dest", &side(GNTCOPY_DEST_GREF, self.dest))
            .field("len", &self.len)
            .field("status", &self.status)
            .finish()
    }
}

#[derive(Debug)]
struct Inner {
    file: File,
    hypercalls: AtomicU64,
    unmap_failures: AtomicU64,
}

/// An open `/dev/xen/gntdev`. Cheap to clone (one descriptor, shared); every method takes
/// `&self` and may be called from any thread (the kernel serialises per descriptor).
#[derive(Debug, Clone)]
pub struct Gntdev {
    inner: Arc<Inner>,
}

impl Gntdev {
    /// Opens [`GNTDEV_PATH`]. The error says what is missing or what to do.
    pub fn open() -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(GNTDEV_PATH)
            .map_err(|e| Error::open_failed(GNTDEV_PATH, GNTDEV_MODULE_HINT, &e))?;
        Ok(Self::from_file(file))
    }

    /// Wraps an already open gntdev descriptor (or, in tests, any file: its ioctls then fail).
    pub fn from_file(file: File) -> Self {
        let inner = Inner {
            file,
            hypercalls: AtomicU64::new(0),
            unmap_failures: AtomicU64::new(0),
        };
        Gntdev {
            inner: Arc::new(inner),
        }
    }

    /// ioctls issued on this device so far (each is at least one hypercall; a grant copy is one
    /// `GNTTABOP_copy` per 16 ops).
    pub fn hypercalls(&self) -> u64 {
        // Relaxed: a statistic; pairs with no other operation.
        self.inner.hypercalls.load(Ordering::Relaxed)
    }

    /// Mappings whose release (munmap or UNMAP_GRANT_REF) failed when dropped.
    pub fn unmap_failures(&self) -> u64 {
        // Relaxed: a statistic; pairs with no other operation.
        self.inner.unmap_failures.load(Ordering::Relaxed)
    }

    /// Issues `req` on the device.
    ///
    /// # Safety
    ///
    /// `req` must be a gntdev request whose argument is a `T`: the kernel reads and writes at
    /// most `size_of::<T>()` bytes at `arg`, and every pointer inside `*arg` must be valid for
    /// what the kernel does with it for the duration of the call.
    unsafe fn ioctl<T>(&self, op: &'static str, req: u32, arg: &mut T) -> Result<libc::c_int> {
        // Relaxed: a statistic; pairs with no other operation.
        self.inner.hypercalls.fetch_add(1, Ordering::Relaxed);
        let fd = self.inner.file.as_raw_fd();
        // SAFETY: `fd` is open for as long as `self`; the argument contract is the caller's.
        let rc = unsafe { libc::ioctl(fd, req as libc::Ioctl, std::ptr::from_mut(arg)) };
        if rc < 0 {
            Err(Error::last_os(op, OS_HINT))
        } else {
            Ok(rc)
        }
    }

    /// Runs a batch of copies in one ioctl. `Ok` means every segment's status is valid (some may
    /// still have failed: check each). On `Err` no status can be trusted (the kernel may have
    /// marked segments okay before failing), so every status is set to `GeneralError`.
    pub fn grant_copy(&self, segs: &mut [GrantCopySegment<'_>]) -> Result<()> {
        for chunk in segs.chunks_mut(libc::c_uint::MAX as usize) {
            let mut op = IoctlGrantCopy {
                count: chunk.len() as libc::c_uint,
                segments: chunk.as_mut_ptr().cast(),
            };
            // SAFETY: GRANT_COPY's argument is `struct ioctl_gntdev_grant_copy` (asserted above
            // to match `IoctlGrantCopy`). `segments` points at `count` initialised 24-byte
            // segments that stay borrowed, so alive and unaliased, across the call; the kernel
            // writes only their `status`. Each local address in them comes from a slice
            // borrowed for the segment's lifetime, of at least `len` bytes (writable for a
            // destination), or from `with_local`, whose caller vouched for the same while an
            // ioctl runs; so every byte the kernel touches is live memory of this process.
            let res =
                unsafe { self.ioctl("IOCTL_GNTDEV_GRANT_COPY", IOCTL_GNTDEV_GRANT_COPY, &mut op) };
            if let Err(e) = res {
                for s in segs.iter_mut() {
                    s.status = GrantStatus::GeneralError.raw();
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Maps one granted page of `domid` into this process, readable and writable (for a shared
    /// ring). There is no read-only variant: a [`GntdevMapping`] is the seam's
    /// `ForeignMapping`, which is writable by contract, and nothing here needs to read a
    /// foreign page without a ring.
    pub fn map_grant_ref(&self, domid: DomId, gref: GrantRef) -> Result<GntdevMapping> {
        let mut op = IoctlMapGrantRef {
            count: 1,
            pad: 0,
            index: 0,
            refs: [IoctlGrantRef {
                domid: domid.into(),
                gref: gref.0,
            }],
        };
        // SAFETY: MAP_GRANT_REF's argument is `struct ioctl_gntdev_map_grant_ref`; with
        // count 1 the kernel reads exactly the 24 bytes of `IoctlMapGrantRef` (layout asserted
        // above) and writes back `index`. No pointers inside.
        unsafe {
            self.ioctl(
                "IOCTL_GNTDEV_MAP_GRANT_REF",
                IOCTL_GNTDEV_MAP_GRANT_REF,
                &mut op,
            )
        }?;
        let index = op.index;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let Ok(offset) = libc::off_t::try_from(index) else {
            let _ = self.unmap_index(index);
            return Err(Error::Os {
                op: "mmap of a granted page",
                errno: libc::EOVERFLOW,
                hint: "gntdev returned a map index beyond mmap's offset range: report it with \
                       this kernel's version",
            });
        };
        // SAFETY: a fresh mapping at an address the kernel chooses (no MAP_FIXED), so no
        // existing memory is replaced; the descriptor is open.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                prot,
                libc::MAP_SHARED,
                self.inner.file.as_raw_fd(),
                offset,
            )
        };
        let ptr = match NonNull::new(addr.cast::<u8>()) {
            Some(p) if addr != libc::MAP_FAILED => p,
            _ => {
                let err = Error::last_os("mmap of a granted page", OS_HINT);
                let _ = self.unmap_index(index);
                return Err(err);
            }
        };
        Ok(GntdevMapping {
            dev: self.clone(),
            ptr,
            index,
            domid,
            gref,
            live: true,
        })
    }

    fn unmap_index(&self, index: u64) -> Result<()> {
        let mut op = IoctlUnmapGrantRef {
            index,
            count: 1,
            pad: 0,
        };
        // SAFETY: UNMAP_GRANT_REF's argument is `struct ioctl_gntdev_unmap_grant_ref`, the
        // 16 bytes of `IoctlUnmapGrantRef` (asserted above); read only, no pointers inside.
        unsafe {
            self.ioctl(
                "IOCTL_GNTDEV_UNMAP_GRANT_REF",
                IOCTL_GNTDEV_UNMAP_GRANT_REF,
                &mut op,
            )
        }
        .map(drop)
    }
}

/// What [`super::XenHost`] needs from gntdev: the real one is [`Gntdev`]; tests use a fake
/// that records the segments it is handed and answers with scripted statuses.
pub trait GntdevIo: Send + Sync + fmt::Debug {
    /// [`Gntdev::grant_copy`]: one ioctl for the whole batch.
    fn grant_copy(&self, segs: &mut [GrantCopySegment<'_>]) -> Result<()>;
    /// [`Gntdev::map_grant_ref`].
    fn map_grant_ref(&self, domid: DomId, gref: GrantRef) -> Result<GntdevMapping>;
    /// ioctls issued so far ([`Gntdev::hypercalls`]).
    fn ioctls(&self) -> u64;
    /// Mappings whose release failed ([`Gntdev::unmap_failures`]).
    fn unmap_failures(&self) -> u64;
}

impl GntdevIo for Gntdev {
    fn grant_copy(&self, segs: &mut [GrantCopySegment<'_>]) -> Result<()> {
        Gntdev::grant_copy(self, segs)
    }
    fn map_grant_ref(&self, domid: DomId, gref: GrantRef) -> Result<GntdevMapping> {
        Gntdev::map_grant_ref(self, domid, gref)
    }
    fn ioctls(&self) -> u64 {
        self.hypercalls()
    }
    fn unmap_failures(&self) -> u64 {
        Gntdev::unmap_failures(self)
    }
}

impl AsFd for Gntdev {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.file.as_fd()
    }
}

/// A foreign page mapped through gntdev. Dropping it unmaps it: `munmap` first, then
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF` (the header requires that order). A guest destroyed while its
/// page is still mapped lingers as a zombie until then.
///
/// The page is shared with the granting domain, which may change it at any time: read it
/// through atomics or volatile copies (a ring page wrapper), never as `&[u8]`.
#[derive(Debug)]
pub struct GntdevMapping {
    dev: Gntdev,
    ptr: NonNull<u8>,
    index: u64,
    domid: DomId,
    gref: GrantRef,
    live: bool,
}

// SAFETY: the mapping is process-wide memory with no thread affinity, and release goes through
// the shared descriptor (`Gntdev` is Send + Sync); the pointer is never dereferenced here.
unsafe impl Send for GntdevMapping {}
// SAFETY: `&GntdevMapping` only hands out the address; what is done through it is the caller's
// (unsafe) business, as for any shared page.
unsafe impl Sync for GntdevMapping {}

impl GntdevMapping {
    /// The page's address: [`PAGE_SIZE`] bytes, page-aligned, mapped readable and writable
    /// until this drops.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The page's address, as the seam's [`crate::ForeignMapping`] hands it out.
    pub fn as_non_null(&self) -> NonNull<u8> {
        self.ptr
    }

    /// [`PAGE_SIZE`].
    pub const fn len(&self) -> usize {
        PAGE_SIZE
    }

    /// Never empty.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// The granting domain.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The grant reference.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// Unmaps now, reporting failure (dropping does the same but can only count failures).
    pub fn unmap(mut self) -> Result<()> {
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        if !std::mem::replace(&mut self.live, false) {
            return Ok(());
        }
        // SAFETY: `ptr` is the start of the PAGE_SIZE mapping made in `map_grant_ref`, still
        // mapped (`live` was set); after this nothing dereferences it (`live` is now false).
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), PAGE_SIZE) };
        let munmap = if rc < 0 {
            Err(Error::last_os(
                "munmap of a granted page",
                "unmapping a whole mapping this process made fails only on a bug: report it",
            ))
        } else {
            Ok(())
        };
        let unmap = self.dev.unmap_index(self.index);
        munmap.and(unmap)
    }
}

impl Drop for GntdevMapping {
    fn drop(&mut self) {
        if self.release().is_err() {
            // Relaxed: a statistic; pairs with no other operation.
            self.dev
                .inner
                .unmap_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
#[path = "gntdev_tests.rs"]
mod tests;
