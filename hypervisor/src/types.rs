//! Typed addresses and handles, in Xen's vocabulary.

use std::fmt;

pub use xenoprof::DomId;

/// Size of a frame / page in bytes.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// `DOMID_SELF`: "the calling domain", accepted wherever Xen accepts it.
pub const DOMID_SELF: DomId = 0x7FF0;
/// Domain ids are `0..MAX_DOMAINS`; the domain table is a flat array of this size (O(1) lookup).
pub const MAX_DOMAINS: usize = 1024;
/// Grant-table frames per domain (v1: 512 entries per frame).
pub const GNTTAB_FRAMES: usize = 4;
/// Grant entries per domain.
pub const NR_GRANT_ENTRIES: usize = GNTTAB_FRAMES * PAGE_SIZE / 8;
/// Grant refs `0..GNTTAB_NR_RESERVED_ENTRIES` are reserved for the toolstack, as in Linux.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// Event-channel ports per domain (port 0 is never allocated, as in Xen).
pub const NR_EVENT_CHANNELS: usize = 1024;

macro_rules! typed {
    ($(#[$doc:meta])* $name:ident($ty:ty), $fmt:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[repr(transparent)]
        pub struct $name(pub $ty);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, $fmt, self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, $fmt, self.0)
            }
        }
    };
}

typed!(
    /// A guest pseudo-physical page number (Xen's gfn/pfn): an index into a domain's own view.
    Pfn(u64), "pfn {:#x}"
);
typed!(
    /// A machine frame number: an index into machine memory, valid across domains.
    Mfn(u64), "mfn {:#x}"
);
typed!(
    /// A grant reference: an index into the granting domain's grant table.
    GrantRef(u32), "gref {}"
);
typed!(
    /// An event-channel port, local to the domain that holds it.
    Port(u32), "port {}"
);

impl Pfn {
    /// The pfn as an index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl Mfn {
    /// The mfn as an index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// An address in the calling process's own memory: the local side of a grant copy. Real Xen's
/// gntdev takes a virtual address for it; the embedded model translates it back to one of the
/// caller's pages (and refuses an address outside them with `GNTST_bad_virt_addr`). Build one
/// with [`crate::traits::GuestMemory::local_addr`]; it is only ever compared and offset, never
/// dereferenced by safe code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct LocalAddr(pub usize);

impl fmt::Debug for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "local {:#x}", self.0)
    }
}

impl LocalAddr {
    /// The address `n` bytes further on.
    pub const fn add(self, n: usize) -> Self {
        Self(self.0 + n)
    }

    /// The offset within its 4 KiB page.
    pub const fn page_offset(self) -> usize {
        self.0 % PAGE_SIZE
    }
}

/// Where a page transfer into an accept-transfer grant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferState {
    /// No transfer yet.
    Pending,
    /// The hypervisor has claimed the entry (`GTF_transfer_committed`) and is moving the page.
    Committed,
    /// The page is in place (`GTF_transfer_completed`): `pfn` is now backed by `mfn`.
    Completed {
        /// The accepting pfn.
        pfn: Pfn,
        /// The frame now behind it.
        mfn: Mfn,
    },
}

/// Xenstore access levels (xenstored's `n`, `r`, `w`, `b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XsPermLevel {
    /// No access.
    None,
    /// Read.
    Read,
    /// Write.
    Write,
    /// Read and write.
    Both,
}

impl XsPermLevel {
    /// Whether the level allows reading.
    pub fn can_read(self) -> bool {
        matches!(self, Self::Read | Self::Both)
    }

    /// Whether the level allows writing.
    pub fn can_write(self) -> bool {
        matches!(self, Self::Write | Self::Both)
    }

    /// xenstored's letter for the level.
    pub fn letter(self) -> char {
        match self {
            Self::None => 'n',
            Self::Read => 'r',
            Self::Write => 'w',
            Self::Both => 'b',
        }
    }

    /// The level for xenstored's letter.
    pub fn from_letter(c: char) -> Option<Self> {
        Some(match c {
            'n' => Self::None,
            'r' => Self::Read,
            'w' => Self::Write,
            'b' => Self::Both,
            _ => return None,
        })
    }
}

/// One xenstore permission entry. In a node's list the first entry names the owner and the
/// default for domains not listed; later entries are the ACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XsPerm {
    /// The domain.
    pub domid: DomId,
    /// Its access.
    pub perm: XsPermLevel,
}

/// A watch firing: the path that changed and the token the watch was registered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The changed path (or the watch path for a removed ancestor).
    pub path: String,
    /// The watch's token.
    pub token: String,
}
