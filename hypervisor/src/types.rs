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
