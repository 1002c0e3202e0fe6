use super::*;

fn arena(pages: usize) -> Arena {
    Arena::new(pages).expect("map a small arena")
}

#[test]
fn allocation_hands_out_every_page_once_then_refuses() {
    let a = arena(4);
    let mut got: Vec<Pfn> = (0..4).map(|_| a.alloc().expect("a free page")).collect();
    assert_eq!(a.alloc(), None, "all four are out");
    assert_eq!(a.free_pages(), 0);
    got.sort();
    assert_eq!(got, [Pfn(0), Pfn(1), Pfn(2), Pfn(3)], "each page once");

    a.free(Pfn(2)).unwrap();
    assert_eq!(a.free(Pfn(2)), Err(Error::PageNotAllocated(Pfn(2))));
    assert_eq!(a.alloc(), Some(Pfn(2)), "a freed page is reused");
    assert_eq!(
        a.free(Pfn(4)),
        Err(Error::PfnOutOfRange {
            pfn: Pfn(4),
            pages: 4
        })
    );
}

#[test]
fn an_empty_arena_is_refused() {
    assert_eq!(Arena::new(0).unwrap_err(), Error::BadSize { pages: 0 });
    assert_eq!(
        Arena::new(usize::MAX).unwrap_err(),
        Error::BadSize {
            pages: usize::MAX as u64
        }
    );
}

#[test]
fn pages_are_aligned_and_addresses_map_back_to_their_page() {
    let a = arena(3);
    let base = a.local_addr(Pfn(0)).unwrap();
    assert_eq!(base.0 % PAGE_SIZE, 0, "page-aligned");
    for pfn in [Pfn(0), Pfn(1), Pfn(2)] {
        let addr = a.local_addr(pfn).unwrap();
        assert_eq!(addr.0, base.0 + pfn.index() * PAGE_SIZE);
        assert_eq!(a.page_ptr(pfn).unwrap().as_ptr().addr(), addr.0);
        assert_eq!(a.pfn_of(addr.add(17)), Some((pfn, 17)));
        assert_eq!(
            a.pfn_of(addr.add(PAGE_SIZE - 1)),
            Some((pfn, PAGE_SIZE - 1))
        );
    }
    assert_eq!(a.pfn_of(LocalAddr(base.0 - 1)), None, "just below");
    assert_eq!(a.pfn_of(base.add(3 * PAGE_SIZE)), None, "just past the end");
    assert_eq!(a.pfn_of(LocalAddr(0)), None);
    assert!(a.local_addr(Pfn(3)).is_err());
    assert!(a.page_ptr(Pfn(3)).is_err());
}

#[test]
fn reads_and_writes_are_bounds_checked() {
    let a = arena(2);
    let p = a.alloc().unwrap();
    a.write(p, 4090, b"xenbus").unwrap();
    let mut out = [0u8; 6];
    a.read(p, 4090, &mut out).unwrap();
    assert_eq!(&out, b"xenbus");
    assert_eq!(
        a.write(p, 4091, b"xenbus"),
        Err(Error::OutOfBounds {
            offset: 4091,
            len: 6
        })
    );
    assert_eq!(
        a.read(p, usize::MAX, &mut out),
        Err(Error::OutOfBounds {
            offset: usize::MAX,
            len: 6
        })
    );
    assert!(matches!(
        a.write(Pfn(9), 0, b"x"),
        Err(Error::PfnOutOfRange { pfn: Pfn(9), .. })
    ));
    // Pages are distinct memory.
    let q = a.alloc().unwrap();
    a.write(q, 0, &[7; PAGE_SIZE]).unwrap();
    a.read(p, 4090, &mut out).unwrap();
    assert_eq!(&out, b"xenbus");
}

#[test]
fn a_ring_page_refuses_every_raw_access_until_unpinned() {
    let a = arena(2);
    let p = a.alloc().unwrap();
    a.write(p, 0, b"before").unwrap();
    a.pin_ring(p).unwrap();
    let mut out = [0u8; 6];
    assert_eq!(a.read(p, 0, &mut out), Err(Error::PageIsRing(p)));
    assert_eq!(a.write(p, 0, b"x"), Err(Error::PageIsRing(p)));
    assert_eq!(a.with_page(p, |_| ()), Err(Error::PageIsRing(p)));
    assert_eq!(a.free(p), Err(Error::PageIsRing(p)));
    assert_eq!(
        a.pin_ring(p),
        Err(Error::PageIsRing(p)),
        "one ring per page"
    );
    let addr = a.local_addr(p).unwrap();
    assert_eq!(
        a.claim_copy(addr, 8, true).unwrap_err(),
        GrantStatus::GeneralError
    );
    assert_eq!(
        a.claim_copy(addr, 8, false).unwrap_err(),
        GrantStatus::GeneralError
    );

    a.unpin_ring(p);
    a.read(p, 0, &mut out).unwrap();
    assert_eq!(&out, b"before");
    a.free(p).unwrap();
}

#[test]
fn pinning_waits_for_an_idle_page() {
    let a = arena(1);
    let p = a.alloc().unwrap();
    let pinned_while_borrowed = a.with_page(p, |_| a.pin_ring(p)).unwrap();
    assert_eq!(pinned_while_borrowed, Err(Error::PageBorrowed(p)));
    let claim = a.claim_copy(a.local_addr(p).unwrap(), 4, false).unwrap();
    assert_eq!(
        a.pin_ring(p),
        Err(Error::PageBusy(p)),
        "a copy source is live"
    );
    drop(claim);
    a.pin_ring(p).unwrap();
}

#[test]
fn a_borrow_holds_writers_off_but_not_readers() {
    let a = arena(1);
    let p = a.alloc().unwrap();
    a.write(p, 0, b"abc").unwrap();
    let addr = a.local_addr(p).unwrap();
    let seen = a
        .with_page(p, |page| {
            assert_eq!(a.write(p, 0, b"x"), Err(Error::PageBorrowed(p)));
            assert_eq!(
                a.claim_copy(addr, 1, true).unwrap_err(),
                GrantStatus::GeneralError,
                "the kernel may not write under a &[u8]"
            );
            // Readers coexist: a nested borrow, a read, a copy source.
            assert_eq!(a.with_page(p, |q| q[1]), Ok(b'b'));
            let mut one = [0u8; 1];
            a.read(p, 2, &mut one).unwrap();
            assert!(a.claim_copy(addr, 1, false).is_ok());
            page[..3].to_vec()
        })
        .unwrap();
    assert_eq!(seen, b"abc");
    a.write(p, 0, b"x").unwrap();
}

#[test]
fn a_copy_destination_holds_borrows_off_until_released() {
    let a = arena(1);
    let p = a.alloc().unwrap();
    let claim = a.claim_copy(a.local_addr(p).unwrap(), 100, true).unwrap();
    assert_eq!(a.with_page(p, |_| ()), Err(Error::PageBusy(p)));
    drop(claim);
    assert_eq!(a.with_page(p, |_| 1), Ok(1));
}

#[test]
fn claims_refuse_addresses_outside_the_arena_and_page_crossings() {
    let a = arena(2);
    let base = a.local_addr(Pfn(0)).unwrap();
    for addr in [
        LocalAddr(0),
        LocalAddr(base.0 - 1),
        base.add(2 * PAGE_SIZE),
        LocalAddr(usize::MAX),
    ] {
        assert_eq!(
            a.claim_copy(addr, 1, true).unwrap_err(),
            GrantStatus::BadVirtAddr,
            "{addr:?}"
        );
    }
    assert_eq!(
        a.claim_copy(base.add(4000), 200, false).unwrap_err(),
        GrantStatus::BadCopyArg,
        "crosses into the next page"
    );
    assert!(a.claim_copy(base.add(PAGE_SIZE + 96), 4000, true).is_ok());
}

#[test]
fn a_panicking_borrower_releases_its_borrow() {
    let a = arena(1);
    let p = a.alloc().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.with_page(p, |_| panic!("borrower fails"))
    }));
    assert!(r.is_err());
    a.write(p, 0, b"still writable").unwrap();
}
