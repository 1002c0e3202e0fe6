//! The grant operations a backend submits through the seam, in neutral form.
//!
//! [`CopyOp`] is shaped like Linux's `gntdev_grant_copy_segment` rather than Xen's
//! `gnttab_copy`: the local side is an address in the caller's own memory ([`LocalAddr`]), as
//! real Xen's gntdev requires from userspace, and the embedded model translates it back to one
//! of the caller's pages. Each implementation turns a batch of these into one hypercall (or one
//! ioctl) and writes every op's status back.

use crate::abi::GrantStatus;
use crate::types::{DomId, GrantRef, LocalAddr, Pfn};

/// One side of a grant copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPtr {
    /// Bytes of a page `domid` granted to the caller, from `offset` in that page.
    Gref {
        /// The granting domain.
        domid: DomId,
        /// Its grant reference.
        gref: GrantRef,
        /// Byte offset in the granted page.
        offset: u16,
    },
    /// Bytes of the caller's own memory (a page of its [`crate::traits::GuestMemory`]).
    Local(LocalAddr),
}

impl CopyPtr {
    /// A grant of `domid`.
    pub const fn gref(domid: DomId, gref: GrantRef, offset: u16) -> Self {
        Self::Gref {
            domid,
            gref,
            offset,
        }
    }

    /// The offset of this side within its page.
    pub const fn page_offset(&self) -> usize {
        match self {
            Self::Gref { offset, .. } => *offset as usize,
            Self::Local(a) => a.page_offset(),
        }
    }
}

/// One grant copy of a batch: `len` bytes from `source` to `dest`, neither crossing its page.
/// At least one side is a grant. `status` is written by the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOp {
    /// Where the bytes come from.
    pub source: CopyPtr,
    /// Where they go.
    pub dest: CopyPtr,
    /// Bytes to copy.
    pub len: u16,
    /// The op's outcome, written by [`crate::traits::GrantOps::grant_copy`].
    pub status: GrantStatus,
}

impl CopyOp {
    /// An op not yet run (status okay until the call says otherwise).
    pub const fn new(source: CopyPtr, dest: CopyPtr, len: u16) -> Self {
        Self {
            source,
            dest,
            len,
            status: GrantStatus::Okay,
        }
    }
}

/// One page transfer (a page flip, `GNTTABOP_transfer`): the caller gives its page `pfn` to
/// `domid` through that domain's accept-transfer grant `gref`. Only hypervisors that can move
/// page ownership offer it ([`crate::traits::GrantOps::can_transfer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferOp {
    /// The caller's page to give away.
    pub pfn: Pfn,
    /// The receiving domain.
    pub domid: DomId,
    /// The receiver's accept-transfer grant.
    pub gref: GrantRef,
    /// The op's outcome, written by [`crate::traits::GrantOps::grant_transfer`].
    pub status: GrantStatus,
}

impl TransferOp {
    /// An op not yet run.
    pub const fn new(pfn: Pfn, domid: DomId, gref: GrantRef) -> Self {
        Self {
            pfn,
            domid,
            gref,
            status: GrantStatus::Okay,
        }
    }
}
