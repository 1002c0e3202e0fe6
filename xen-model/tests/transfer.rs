//! Page flipping and grant mapping.

mod common;

use hypervisor::abi::*;
use hypervisor::*;
use xen_model::*;

fn transfer1(caller: &DomainHandle, op: GnttabTransfer) -> GrantStatus {
    let mut ops = [op];
    caller.grant_transfer_abi(&mut ops).unwrap();
    ops[0].status()
}

#[test]
fn flip_moves_ownership_and_the_guest_reads_it_through_its_view() {
    let (xen, d0, g) = common::machine();
    let free0 = xen.free_frames();
    let rx = common::filled_page(&g, 0x00);
    let old_rx_mfn = g.pfn_to_mfn(rx).unwrap();
    let gref = g.grant_accept_transfer(0, rx).unwrap();
    assert_eq!(g.transfer_state(gref).unwrap(), TransferState::Pending);
    // The accepting page is not borrowable while the entry is posted.
    assert_eq!(g.borrow_page(rx).unwrap_err(), Error::PageBusy(rx));

    let pkt = common::filled_page(&d0, 0xC3);
    let given = d0.pfn_to_mfn(pkt).unwrap();
    let ptr_before = g.page_ptr(rx).unwrap();
    assert_eq!(
        transfer1(&d0, GnttabTransfer::new(pkt, 1, gref)),
        GrantStatus::Okay
    );

    // The receiver's pfn is now backed by the giver's old frame, at the same address.
    assert_eq!(
        g.transfer_state(gref).unwrap(),
        TransferState::Completed {
            pfn: rx,
            mfn: given
        }
    );
    assert_eq!(g.pfn_to_mfn(rx).unwrap(), given);
    assert_eq!(g.page_ptr(rx).unwrap(), ptr_before);
    assert_eq!(g.end_transfer(gref).unwrap(), Some(given));
    assert!(g.with_page(rx, |p| p.iter().all(|b| *b == 0xC3)).unwrap());
    // The giver got a replacement frame at the same pfn, and its view shows that frame.
    let repl = d0.pfn_to_mfn(pkt).unwrap();
    assert_ne!(repl, given);
    d0.write(pkt, 0, b"new").unwrap();
    let mut b = [0u8; 3];
    xen.read_frame(repl, 0, &mut b).unwrap();
    assert_eq!(&b, b"new");
    // Writes by the giver no longer reach the given frame.
    let mut first = [0u8; 3];
    xen.read_frame(given, 0, &mut first).unwrap();
    assert_eq!(first, [0xC3; 3]);
    // The receiver's old frame went back to the allocator: no frame leaked or duplicated.
    assert_eq!(xen.free_frames(), free0);
    assert_ne!(old_rx_mfn, given);
    // Destroying both returns everything.
    drop((d0, g));
    xen.destroy_domain(0).unwrap();
    xen.destroy_domain(1).unwrap();
    assert_eq!(xen.free_frames(), xen.total_frames());
}

#[test]
fn every_transfer_status_the_model_produces() {
    let (xen, d0, g) = common::machine();
    let rx = g.alloc_page().unwrap();
    let accept = g.grant_accept_transfer(0, rx).unwrap();
    let not_for_us = g.grant_accept_transfer(5, g.alloc_page().unwrap()).unwrap();
    let access = g.grant_access(0, g.alloc_page().unwrap(), false).unwrap();
    let page = || d0.alloc_page().unwrap();
    let free0 = xen.free_frames();
    let cases = [
        // a pfn outside the caller's reservation: nothing given
        (
            GnttabTransfer::new(Pfn(1 << 33), 1, accept),
            GrantStatus::BadPage,
            false,
        ),
        // no such domain: the page is gone anyway (to the allocator)
        (
            GnttabTransfer::new(page(), 99, accept),
            GrantStatus::BadDomain,
            true,
        ),
        // ref beyond the table
        (
            GnttabTransfer::new(page(), 1, GrantRef(1 << 30)),
            GrantStatus::BadGntref,
            true,
        ),
        // entry accepts from domain 5, not us; a permit-access entry; an unused entry
        (
            GnttabTransfer::new(page(), 1, not_for_us),
            GrantStatus::GeneralError,
            true,
        ),
        (
            GnttabTransfer::new(page(), 1, access),
            GrantStatus::GeneralError,
            true,
        ),
        (
            GnttabTransfer::new(page(), 1, GrantRef(200)),
            GrantStatus::GeneralError,
            true,
        ),
        (
            GnttabTransfer::new(page(), 1, accept),
            GrantStatus::Okay,
            true,
        ),
        // the same entry twice: already committed
        (
            GnttabTransfer::new(page(), 1, accept),
            GrantStatus::GeneralError,
            true,
        ),
    ];
    let mut ops: Vec<_> = cases.iter().map(|c| c.0).collect();
    d0.grant_transfer_abi(&mut ops).unwrap();
    for (i, (op, c)) in ops.iter().zip(cases.iter()).enumerate() {
        assert_eq!(op.status(), c.1, "case {i}");
    }
    // Each page that left the caller was replaced; failed ones went to the allocator, so the
    // free count is unchanged (replacement taken, given page freed / receiver's old page freed).
    assert_eq!(xen.free_frames(), free0);
    // A page the caller has granted cannot be given away (bad_page, nothing moves).
    let granted = d0.alloc_page().unwrap();
    let r = d0.grant_access(1, granted, true).unwrap();
    let before = d0.pfn_to_mfn(granted).unwrap();
    let acc2 = g.grant_accept_transfer(0, g.alloc_page().unwrap()).unwrap();
    assert_eq!(
        transfer1(&d0, GnttabTransfer::new(granted, 1, acc2)),
        GrantStatus::BadPage
    );
    assert_eq!(d0.pfn_to_mfn(granted).unwrap(), before);
    d0.end_access(r).unwrap();
    assert_eq!(
        g.end_transfer(acc2).unwrap(),
        None,
        "nothing arrived; the entry is revoked"
    );
    // After end_transfer the entry is gone: a late transfer fails.
    assert_eq!(
        transfer1(&d0, GnttabTransfer::new(page(), 1, acc2)),
        GrantStatus::GeneralError
    );
}

#[test]
fn map_grant_ref_maps_the_real_frame_and_pins_it() {
    let (xen, d0, g) = common::machine();
    let ring = g.alloc_page().unwrap();
    g.write(ring, 0, &[1, 2, 3, 4]).unwrap();
    let r = g.grant_access(0, ring, false).unwrap();
    let m = d0.map_grant_ref(1, r).unwrap();
    assert_eq!(m.as_ptr().as_ptr() as usize % PAGE_SIZE, 0);
    assert_ne!(
        m.as_ptr(),
        g.page_ptr(ring).unwrap(),
        "a separate mapping of the same frame"
    );
    // The mapping pins the grant.
    assert_eq!(g.end_access(r), Err(Error::GrantInUse(r)));
    // Two mappings share the pin. A mapped page is a shared ring, atomic-only: a grant copy
    // naming it fails (a hostile frontend naming its own ring page gets an error, never a race
    // with the ring's atomics), and the granter's own raw accesses are refused.
    let m2 = d0.map_grant_ref_readonly(1, r).unwrap();
    let src = common::filled_page(&d0, 9);
    let mut ops = [GnttabCopy::new(
        GnttabCopyPtr::local(src, 0),
        GnttabCopyPtr::gref(1, r, 100),
        4,
    )];
    d0.grant_copy_abi(&mut ops).unwrap();
    assert_eq!(ops[0].status(), GrantStatus::GeneralError);
    assert_eq!(g.write(ring, 0, &[0]), Err(Error::PageIsRing(ring)));
    assert_eq!(g.read(ring, 0, &mut [0]), Err(Error::PageIsRing(ring)));
    drop(m);
    assert_eq!(
        g.end_access(r),
        Err(Error::GrantInUse(r)),
        "m2 still holds it"
    );
    drop(m2);
    // Unmapped: plain memory again.
    d0.grant_copy_abi(&mut ops).unwrap();
    assert_eq!(ops[0].status(), GrantStatus::Okay);
    g.end_access(r).unwrap();
    let mut b = [0u8; 4];
    g.read(ring, 100, &mut b).unwrap();
    assert_eq!(b, [9; 4]);
    let st = xen.stats();
    assert_eq!((st.maps, st.unmaps), (2, 2));
}

#[test]
fn map_statuses() {
    let (_xen, d0, g) = common::machine();
    let p = g.alloc_page().unwrap();
    let ro = g.grant_access(0, p, true).unwrap();
    let other = g.grant_access(7, p, true).unwrap();
    fn err<T: std::fmt::Debug>(r: Result<T>) -> GrantStatus {
        match r {
            Err(Error::Grant(s)) => s,
            other => panic!("expected a grant status, got {other:?}"),
        }
    }
    assert_eq!(err(d0.map_grant_ref(1, ro)), GrantStatus::PermissionDenied);
    assert_eq!(
        err(d0.map_grant_ref_readonly(1, other)),
        GrantStatus::PermissionDenied
    );
    assert_eq!(
        err(d0.map_grant_ref_readonly(42, ro)),
        GrantStatus::BadDomain
    );
    assert_eq!(
        err(d0.map_grant_ref_readonly(1, GrantRef(1 << 20))),
        GrantStatus::BadGntref
    );
    assert_eq!(
        err(d0.map_grant_ref_readonly(1, GrantRef(100))),
        GrantStatus::GeneralError
    );
    // The map area fills: no_device_space.
    let maps: Vec<_> = (0..MAP_AREA_SLOTS)
        .map(|_| d0.map_grant_ref_readonly(1, ro).unwrap())
        .collect();
    assert_eq!(
        err(d0.map_grant_ref_readonly(1, ro)),
        GrantStatus::NoDeviceSpace
    );
    drop(maps);
    g.end_access(ro).unwrap();
    g.end_access(other).unwrap();
}

#[test]
fn a_mapping_keeps_a_destroyed_domains_frame_alive() {
    let (xen, d0, g) = common::machine();
    let p = common::filled_page(&g, 0x77);
    let r = g.grant_access(0, p, true).unwrap();
    let m = d0.map_grant_ref_readonly(1, r).unwrap();
    drop(g);
    xen.destroy_domain(1).unwrap();
    let used = xen.total_frames() - xen.free_frames();
    drop(m);
    assert!(
        xen.total_frames() - xen.free_frames() < used,
        "frames return once the mapping drops"
    );
}

#[test]
fn handles_and_mappings_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<DomainHandle>();
    check::<GrantMapping>();
    check::<XsConnection>();
    check::<Hypervisor>();
}

#[test]
fn a_transfer_without_a_replacement_frame_moves_nothing() {
    // Exactly enough frames for the two domains: the allocator is empty.
    let xen = Hypervisor::new(2 * (4 + GNTTAB_FRAMES as u64)).unwrap();
    let d0 = xen.create_domain(4).unwrap();
    let g = xen.create_domain(4).unwrap();
    assert_eq!(xen.free_frames(), 0);
    let acc = g
        .grant_accept_transfer(d0.domid(), g.alloc_page().unwrap())
        .unwrap();
    let p = d0.alloc_page().unwrap();
    let before = d0.pfn_to_mfn(p).unwrap();
    assert_eq!(
        transfer1(&d0, GnttabTransfer::new(p, g.domid(), acc)),
        GrantStatus::NoSpace
    );
    assert_eq!(d0.pfn_to_mfn(p).unwrap(), before);
    assert_eq!(g.transfer_state(acc).unwrap(), TransferState::Pending);
}
