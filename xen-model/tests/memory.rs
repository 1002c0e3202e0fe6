//! Machine memory and domains.

mod common;

use hypervisor::{Error, GNTTAB_FRAMES, PAGE_SIZE, Pfn};
use xen_model::Hypervisor;

#[test]
fn destroy_returns_every_frame() {
    let xen = Hypervisor::new(1000).unwrap();
    assert_eq!(xen.free_frames(), 1000);
    let a = xen.create_domain(100).unwrap();
    let b = xen.create_domain(200).unwrap();
    let per = |pages: u64| pages + GNTTAB_FRAMES as u64;
    assert_eq!(xen.free_frames(), 1000 - per(100) - per(200));
    let (ida, idb) = (a.domid(), b.domid());
    drop(a);
    xen.destroy_domain(ida).unwrap();
    assert_eq!(xen.free_frames(), 1000 - per(200), "a's frames are back");
    // A handle keeps b alive past destruction (zombie), then frees it.
    xen.destroy_domain(idb).unwrap();
    assert!(b.is_dying());
    assert!(xen.free_frames() < 1000);
    drop(b);
    assert_eq!(xen.free_frames(), 1000);
    assert_eq!(xen.destroy_domain(idb), Err(Error::NoSuchDomain(idb)));
}

#[test]
fn creating_beyond_memory_fails_cleanly() {
    let xen = Hypervisor::new(100).unwrap();
    assert!(matches!(
        xen.create_domain(200),
        Err(Error::OutOfMemory { .. })
    ));
    assert_eq!(xen.free_frames(), 100);
    assert!(matches!(Hypervisor::new(0), Err(Error::BadSize { .. })));
    let d = xen.create_domain(10).unwrap();
    assert_eq!(
        xen.create_domain_with_id(d.domid(), 1).unwrap_err(),
        Error::DomainExists(d.domid())
    );
}

#[test]
fn pages_round_trip_and_bounds_are_errors() {
    let (_xen, _d0, g) = common::machine();
    let p = g.alloc_page().unwrap();
    g.write(p, 4090, b"abcdef").unwrap();
    let mut b = [0u8; 6];
    g.read(p, 4090, &mut b).unwrap();
    assert_eq!(&b, b"abcdef");
    assert_eq!(
        g.write(p, 4091, b"abcdef"),
        Err(Error::OutOfBounds {
            offset: 4091,
            len: 6
        })
    );
    assert_eq!(
        g.read(p, usize::MAX, &mut b),
        Err(Error::OutOfBounds {
            offset: usize::MAX,
            len: 6
        })
    );
    let beyond = Pfn(g.pages());
    assert!(matches!(
        g.write(beyond, 0, b"x"),
        Err(Error::PfnOutOfRange { .. })
    ));
    g.free_page(p).unwrap();
    assert_eq!(g.free_page(p), Err(Error::PageNotAllocated(p)));
    // The reservation runs out.
    let n = g.pages();
    let all: Vec<_> = (0..n).map(|_| g.alloc_page().unwrap()).collect();
    assert!(matches!(
        g.alloc_page(),
        Err(Error::ReservationExhausted { .. })
    ));
    assert_eq!(all.len() as u64, n);
}

#[test]
fn views_alias_the_same_frames_as_the_direct_map() {
    let (xen, _d0, g) = common::machine();
    let p = common::filled_page(&g, 0x5A);
    let mfn = g.pfn_to_mfn(p).unwrap();
    let mut b = [0u8; 16];
    xen.read_frame(mfn, 100, &mut b).unwrap();
    assert_eq!(b, [0x5A; 16]);
    let ptr = g.page_ptr(p).unwrap();
    assert_eq!(ptr.as_ptr() as usize % PAGE_SIZE, 0);
}

#[test]
fn a_borrow_holds_writers_off() {
    let (_xen, d0, g) = common::machine();
    let p = common::filled_page(&g, 7);
    {
        let b = g.borrow_page(p).unwrap();
        assert_eq!(b.len(), PAGE_SIZE);
        assert!(b.iter().all(|x| *x == 7));
        assert_eq!(g.write(p, 0, b"x"), Err(Error::PageBorrowed(p)));
        assert_eq!(
            g.grant_access(d0.domid(), p, false),
            Err(Error::PageBusy(p))
        );
        // Read-only grants are fine: the hypervisor only reads.
        let r = g.grant_access(d0.domid(), p, true).unwrap();
        g.end_access(r).unwrap();
        // Several readers at once.
        let b2 = g.borrow_page(p).unwrap();
        assert_eq!(b2[0], 7);
    }
    g.write(p, 0, b"x").unwrap();
    // A writable grant holds borrows off until access ends.
    let r = g.grant_access(d0.domid(), p, false).unwrap();
    assert_eq!(g.borrow_page(p).unwrap_err(), Error::PageBusy(p));
    g.end_access(r).unwrap();
    assert_eq!(g.with_page(p, |b| b[0]).unwrap(), b'x');
}
