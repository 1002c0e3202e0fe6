use super::*;

#[test]
fn ioctl_numbers_and_layouts_match_linux_uapi() {
    let table = [
        (
            "IOCTL_GNTDEV_MAP_GRANT_REF",
            IOCTL_GNTDEV_MAP_GRANT_REF,
            0x0018_4700,
            24,
        ),
        (
            "IOCTL_GNTDEV_UNMAP_GRANT_REF",
            IOCTL_GNTDEV_UNMAP_GRANT_REF,
            0x0010_4701,
            16,
        ),
        (
            "IOCTL_GNTDEV_SET_MAX_GRANTS",
            IOCTL_GNTDEV_SET_MAX_GRANTS,
            0x0004_4703,
            4,
        ),
        (
            "IOCTL_GNTDEV_GRANT_COPY",
            IOCTL_GNTDEV_GRANT_COPY,
            0x0010_4708,
            16,
        ),
    ];
    for (name, got, want, size) in table {
        println!(
            "{name} = {got:#010x} (argument {} bytes)",
            super::super::sys::ioc_size(got)
        );
        assert_eq!(got, want, "{name}");
        assert_eq!(super::super::sys::ioc_size(got), size, "{name}");
        assert_eq!((got >> 8) & 0xff, u32::from(b'G'), "{name}");
    }
    println!(
        "gntdev_grant_copy_segment = {} bytes",
        size_of::<GrantCopySegment<'_>>()
    );
    assert_eq!(size_of::<GrantCopySegment<'_>>(), 24);
    assert_eq!(std::mem::align_of::<GrantCopySegment<'_>>(), 8);
    // An array of segments has the kernel's 24-byte stride.
    assert_eq!(size_of::<[GrantCopySegment<'_>; 2]>(), 48);
}

#[test]
fn segments_encode_the_union_sides_and_flags() {
    let dest = GrantSide {
        domid: 7,
        gref: GrantRef(0x1234_5678),
        offset: 100,
    };
    let buf = [1u8; 60];
    let seg = GrantCopySegment::to_grant(&buf, dest).unwrap();
    assert_eq!(seg.flags(), GNTCOPY_DEST_GREF);
    assert_eq!(seg.len(), 60);
    assert_eq!(seg.dest_grant(), Some(dest));
    assert_eq!(seg.source_grant(), None);
    assert_eq!(u64::from_ne_bytes(seg.source), buf.as_ptr() as u64);
    // The foreign struct's bytes: ref u32 @0, offset u16 @4, domid u16 @6.
    assert_eq!(&seg.dest[0..4], &0x1234_5678u32.to_ne_bytes());
    assert_eq!(&seg.dest[4..6], &100u16.to_ne_bytes());
    assert_eq!(&seg.dest[6..8], &7u16.to_ne_bytes());

    let mut out = [0u8; 16];
    let src = GrantSide {
        domid: 3,
        gref: GrantRef(9),
        offset: 4080,
    };
    let seg = GrantCopySegment::from_grant(src, &mut out).unwrap();
    assert_eq!(seg.flags(), GNTCOPY_SOURCE_GREF);
    assert_eq!(seg.source_grant(), Some(src));

    let seg = GrantCopySegment::grant_to_grant(src, dest, 16).unwrap();
    assert_eq!(seg.flags(), GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF);
    assert!(format!("{seg:?}").contains("gref 9"));
}

#[test]
fn a_granted_side_crossing_its_page_is_refused() {
    let buf = [0u8; 200];
    let dest = GrantSide {
        domid: 1,
        gref: GrantRef(8),
        offset: 4000,
    };
    assert_eq!(
        GrantCopySegment::to_grant(&buf, dest).unwrap_err(),
        Error::BadCopySegment {
            offset: 4000,
            len: 200
        }
    );
    let full = [0u8; PAGE_SIZE];
    let at0 = GrantSide { offset: 0, ..dest };
    assert!(
        GrantCopySegment::to_grant(&full, at0).is_ok(),
        "a whole page fits"
    );
    let err = GrantCopySegment::grant_to_grant(at0, dest, 200).unwrap_err();
    assert!(
        err.to_string().contains("split it at the page boundary"),
        "{err}"
    );
}

#[test]
fn statuses_start_failed_and_map_to_grant_status() {
    let buf = [0u8; 4];
    let dest = GrantSide {
        domid: 1,
        gref: GrantRef(8),
        offset: 0,
    };
    let mut seg = GrantCopySegment::to_grant(&buf, dest).unwrap();
    assert_eq!(
        seg.status(),
        GrantStatus::GeneralError,
        "nothing copied yet"
    );
    for s in GrantStatus::ALL {
        seg.status = s.raw();
        assert_eq!(seg.status(), s);
    }
    seg.status = -99;
    assert_eq!(
        (seg.status(), seg.raw_status()),
        (GrantStatus::GeneralError, -99)
    );
}

#[test]
fn a_failed_ioctl_is_reported_and_marks_every_segment_failed() {
    // /dev/null answers every ioctl with ENOTTY: the error path, with no Xen needed.
    let dev = Gntdev::from_file(File::open("/dev/null").unwrap());
    let buf = [0u8; 8];
    let dest = GrantSide {
        domid: 1,
        gref: GrantRef(8),
        offset: 0,
    };
    let mut segs = [GrantCopySegment::to_grant(&buf, dest).unwrap()];
    segs[0].status = GrantStatus::Okay.raw();
    let err = dev.grant_copy(&mut segs).unwrap_err();
    assert_eq!(
        err,
        Error::Os {
            op: "IOCTL_GNTDEV_GRANT_COPY",
            errno: libc::ENOTTY,
            hint: crate::error::OS_HINT,
        }
    );
    assert_eq!(segs[0].status(), GrantStatus::GeneralError);
    assert_eq!(dev.hypercalls(), 1);

    dev.grant_copy(&mut []).unwrap();
    assert_eq!(dev.hypercalls(), 1, "an empty batch issues no ioctl");

    let err = dev.map_grant_ref(1, GrantRef(8)).unwrap_err();
    assert_eq!(
        err,
        Error::Os {
            op: "IOCTL_GNTDEV_MAP_GRANT_REF",
            errno: libc::ENOTTY,
            hint: crate::error::OS_HINT,
        }
    );
}

#[test]
fn the_real_device_opens_or_the_test_says_why_not() {
    match Gntdev::open() {
        Ok(dev) => assert_eq!(dev.hypercalls(), 0),
        Err(e) => {
            eprintln!("not on Xen here: checked the refusal instead: {e}");
            assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        }
    }
}
