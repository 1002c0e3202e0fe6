//! Grant-table ABI (`xen/include/public/grant_table.h`, v1): layouts checked against Xen's.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::{DOMID_SELF, DomId, GrantRef, Pfn};

/// Entry type mask (`GTF_type_mask`).
pub const GTF_TYPE_MASK: u16 = 3;
/// Entry unused (`GTF_invalid`).
pub const GTF_INVALID: u16 = 0;
/// Entry grants access to a frame (`GTF_permit_access`).
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// Entry accepts a page transfer (`GTF_accept_transfer`).
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// Transitive grant (`GTF_transitive`); the model does not support it (copy answers general_error).
pub const GTF_TRANSITIVE: u16 = 3;
/// Read-only access (`GTF_readonly`, permit_access entries).
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by the hypervisor while it reads the frame (`GTF_reading`).
pub const GTF_READING: u16 = 1 << 3;
/// Set by the hypervisor while it writes the frame (`GTF_writing`).
pub const GTF_WRITING: u16 = 1 << 4;
/// Transfer committed: the hypervisor has claimed this entry (`GTF_transfer_committed`).
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
/// Transfer completed: the frame now sits at the entry's pfn (`GTF_transfer_completed`).
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

/// `gnttab_copy.flags`: the source is a grant reference of `source.domid`.
pub const GNTCOPY_SOURCE_GREF: u16 = 1;
/// `gnttab_copy.flags`: the destination is a grant reference of `dest.domid`.
pub const GNTCOPY_DEST_GREF: u16 = 2;

/// `grant_entry_v1`: lives in the granting domain's memory. The model accesses the three fields
/// with atomics; this struct documents and checks the layout.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*` type and status bits.
    pub flags: u16,
    /// The domain allowed to use the entry.
    pub domid: u16,
    /// The granted frame (for this translated-guest model: the granter's pfn).
    pub frame: u32,
}

/// GNTST status codes (`int16_t status` in every grant op).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum GrantStatus {
    /// `GNTST_okay`.
    Okay = 0,
    /// `GNTST_general_error`: the entry is not a valid grant of the right type.
    GeneralError = -1,
    /// `GNTST_bad_domain`: no such domain.
    BadDomain = -2,
    /// `GNTST_bad_gntref`: reference outside the grant table.
    BadGntref = -3,
    /// `GNTST_bad_handle`.
    BadHandle = -4,
    /// `GNTST_bad_virt_addr`.
    BadVirtAddr = -5,
    /// `GNTST_bad_dev_addr`.
    BadDevAddr = -6,
    /// `GNTST_no_device_space`: the caller's mapping area is full.
    NoDeviceSpace = -7,
    /// `GNTST_permission_denied`: granted to another domain, read-only, or not DOMID_SELF.
    PermissionDenied = -8,
    /// `GNTST_bad_page`: the local frame is invalid or cannot be given away.
    BadPage = -9,
    /// `GNTST_bad_copy_arg`: offset + len beyond the page, or unknown flags.
    BadCopyArg = -10,
    /// `GNTST_address_too_big`.
    AddressTooBig = -11,
    /// `GNTST_eagain`.
    Eagain = -12,
    /// `GNTST_no_space`.
    NoSpace = -13,
}

impl GrantStatus {
    /// Every code, okay first.
    pub const ALL: [GrantStatus; 14] = [
        Self::Okay,
        Self::GeneralError,
        Self::BadDomain,
        Self::BadGntref,
        Self::BadHandle,
        Self::BadVirtAddr,
        Self::BadDevAddr,
        Self::NoDeviceSpace,
        Self::PermissionDenied,
        Self::BadPage,
        Self::BadCopyArg,
        Self::AddressTooBig,
        Self::Eagain,
        Self::NoSpace,
    ];

    /// The code from its raw value, if it is one.
    pub fn from_raw(v: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as i16 == v)
    }

    /// The raw ABI value.
    pub const fn raw(self) -> i16 {
        self as i16
    }

    /// Xen's name for the code (`GNTST_*` without the prefix).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Okay => "okay",
            Self::GeneralError => "general_error",
            Self::BadDomain => "bad_domain",
            Self::BadGntref => "bad_gntref",
            Self::BadHandle => "bad_handle",
            Self::BadVirtAddr => "bad_virt_addr",
            Self::BadDevAddr => "bad_dev_addr",
            Self::NoDeviceSpace => "no_device_space",
            Self::PermissionDenied => "permission_denied",
            Self::BadPage => "bad_page",
            Self::BadCopyArg => "bad_copy_arg",
            Self::AddressTooBig => "address_too_big",
            Self::Eagain => "eagain",
            Self::NoSpace => "no_space",
        }
    }
}

impl std::fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GNTST_{} ({})", self.name(), self.raw())
    }
}

/// One side of a copy (`struct gnttab_copy_ptr`): `u` is the union `{ grant_ref_t ref; xen_pfn_t
/// gmfn; }` (a ref occupies the low 32 bits, little-endian).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabCopyPtr {
    /// `ref` (with the matching `GNTCOPY_*_gref` flag) or `gmfn` (a pfn of the caller).
    pub u: u64,
    /// Domain owning the grant; `DOMID_SELF` for a local gmfn.
    pub domid: u16,
    /// Byte offset in the page.
    pub offset: u16,
    _pad: u32,
}

impl GnttabCopyPtr {
    /// A remote domain's grant reference.
    pub const fn gref(domid: DomId, gref: GrantRef, offset: u16) -> Self {
        Self {
            u: gref.0 as u64,
            domid,
            offset,
            _pad: 0,
        }
    }

    /// One of the caller's own pages (`DOMID_SELF`, gmfn).
    pub const fn local(pfn: Pfn, offset: u16) -> Self {
        Self {
            u: pfn.0,
            domid: DOMID_SELF,
            offset,
            _pad: 0,
        }
    }

    /// The union read as a grant reference.
    pub const fn as_gref(&self) -> GrantRef {
        GrantRef(self.u as u32)
    }
}

/// `struct gnttab_copy` (GNTTABOP_copy = 5), 40 bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabCopy {
    /// Where the bytes come from.
    pub source: GnttabCopyPtr,
    /// Where they go.
    pub dest: GnttabCopyPtr,
    /// Bytes to copy.
    pub len: u16,
    /// `GNTCOPY_source_gref` | `GNTCOPY_dest_gref`.
    pub flags: u16,
    /// Out: a [`GrantStatus`] raw value.
    pub status: i16,
    _pad: u16,
}

impl GnttabCopy {
    /// An op; the gref flags are derived from whether each side is a [`GnttabCopyPtr::gref`]
    /// (domid other than `DOMID_SELF`). Use [`GnttabCopy::with_flags`] for full control.
    pub const fn new(source: GnttabCopyPtr, dest: GnttabCopyPtr, len: u16) -> Self {
        let mut flags = 0;
        if source.domid != DOMID_SELF {
            flags |= GNTCOPY_SOURCE_GREF;
        }
        if dest.domid != DOMID_SELF {
            flags |= GNTCOPY_DEST_GREF;
        }
        Self::with_flags(source, dest, len, flags)
    }

    /// An op with explicit `GNTCOPY_*` flags.
    pub const fn with_flags(
        source: GnttabCopyPtr,
        dest: GnttabCopyPtr,
        len: u16,
        flags: u16,
    ) -> Self {
        Self {
            source,
            dest,
            len,
            flags,
            status: GrantStatus::Okay as i16,
            _pad: 0,
        }
    }

    /// The op's status after the call ([`GrantStatus::GeneralError`] for a value Xen never uses).
    pub fn status(&self) -> GrantStatus {
        GrantStatus::from_raw(self.status).unwrap_or(GrantStatus::GeneralError)
    }
}

/// `struct gnttab_transfer` (GNTTABOP_transfer = 4), 24 bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabTransfer {
    /// The caller's page to give away (a gmfn: the caller's pfn in this model).
    pub mfn: u64,
    /// The receiving domain.
    pub domid: u16,
    _pad: u16,
    /// The receiver's accept-transfer grant reference.
    pub gref: u32,
    /// Out: a [`GrantStatus`] raw value.
    pub status: i16,
    _pad2: [u8; 6],
}

impl GnttabTransfer {
    /// Give the caller's page `pfn` to `domid` through its accept-transfer entry `gref`.
    pub const fn new(pfn: Pfn, domid: DomId, gref: GrantRef) -> Self {
        Self {
            mfn: pfn.0,
            domid,
            _pad: 0,
            gref: gref.0,
            status: 0,
            _pad2: [0; 6],
        }
    }

    /// The op's status after the call.
    pub fn status(&self) -> GrantStatus {
        GrantStatus::from_raw(self.status).unwrap_or(GrantStatus::GeneralError)
    }
}

// Layouts as in Xen's public headers on x86_64.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<GrantEntryV1>() == 8);
    assert!(offset_of!(GrantEntryV1, flags) == 0);
    assert!(offset_of!(GrantEntryV1, domid) == 2);
    assert!(offset_of!(GrantEntryV1, frame) == 4);
    assert!(size_of::<GnttabCopyPtr>() == 16);
    assert!(offset_of!(GnttabCopyPtr, u) == 0);
    assert!(offset_of!(GnttabCopyPtr, domid) == 8);
    assert!(offset_of!(GnttabCopyPtr, offset) == 10);
    assert!(size_of::<GnttabCopy>() == 40);
    assert!(offset_of!(GnttabCopy, source) == 0);
    assert!(offset_of!(GnttabCopy, dest) == 16);
    assert!(offset_of!(GnttabCopy, len) == 32);
    assert!(offset_of!(GnttabCopy, flags) == 34);
    assert!(offset_of!(GnttabCopy, status) == 36);
    assert!(size_of::<GnttabTransfer>() == 24);
    assert!(offset_of!(GnttabTransfer, mfn) == 0);
    assert!(offset_of!(GnttabTransfer, domid) == 8);
    assert!(offset_of!(GnttabTransfer, gref) == 12);
    assert!(offset_of!(GnttabTransfer, status) == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_names() {
        for s in GrantStatus::ALL {
            assert_eq!(GrantStatus::from_raw(s.raw()), Some(s));
        }
        assert_eq!(GrantStatus::from_raw(-14), None);
        assert_eq!(GrantStatus::BadCopyArg.raw(), -10);
        assert_eq!(
            GrantStatus::PermissionDenied.to_string(),
            "GNTST_permission_denied (-8)"
        );
    }

    #[test]
    fn copy_op_bytes_match_the_abi() {
        let op = GnttabCopy::new(
            GnttabCopyPtr::gref(3, GrantRef(0x1234), 2),
            GnttabCopyPtr::local(Pfn(0x55), 7),
            1500,
        );
        let b = op.as_bytes();
        assert_eq!(&b[0..4], &0x1234u32.to_le_bytes());
        assert_eq!(&b[8..10], &3u16.to_le_bytes());
        assert_eq!(&b[10..12], &2u16.to_le_bytes());
        assert_eq!(&b[16..24], &0x55u64.to_le_bytes());
        assert_eq!(&b[24..26], &DOMID_SELF.to_le_bytes());
        assert_eq!(&b[32..34], &1500u16.to_le_bytes());
        assert_eq!(&b[34..36], &GNTCOPY_SOURCE_GREF.to_le_bytes());
    }
}
