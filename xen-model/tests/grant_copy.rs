//! Grant copy: statuses, permissions, and hostile batches that must not write outside grants.

mod common;

use hypervisor::abi::*;
use hypervisor::*;
use xen_model::*;

fn copy1(caller: &DomainHandle, op: GnttabCopy) -> GrantStatus {
    let mut ops = [op];
    caller.grant_copy_abi(&mut ops).unwrap();
    ops[0].status()
}

#[test]
fn copy_to_and_from_grants_moves_the_bytes() {
    let (_xen, d0, g) = common::machine();
    let rx = g.alloc_page().unwrap();
    let rx_ref = g.grant_access(0, rx, false).unwrap();
    let src = common::filled_page(&d0, 0xAB);
    let s = copy1(
        &d0,
        GnttabCopy::new(
            GnttabCopyPtr::local(src, 0),
            GnttabCopyPtr::gref(1, rx_ref, 2),
            1500,
        ),
    );
    assert_eq!(s, GrantStatus::Okay);
    let got = common::page(&g, rx);
    assert_eq!(got[0..2], [0, 0]);
    assert!(got[2..1502].iter().all(|b| *b == 0xAB));
    assert_eq!(got[1502], 0);

    // tx direction: a read-only grant as source into a local page.
    let tx = common::filled_page(&g, 0x11);
    let tx_ref = g.grant_access(0, tx, true).unwrap();
    let dst = d0.alloc_page().unwrap();
    let s = copy1(
        &d0,
        GnttabCopy::new(
            GnttabCopyPtr::gref(1, tx_ref, 0),
            GnttabCopyPtr::local(dst, 0),
            4096,
        ),
    );
    assert_eq!(s, GrantStatus::Okay);
    assert!(common::page(&d0, dst).iter().all(|b| *b == 0x11));
    g.end_access(tx_ref).unwrap();
    g.end_access(rx_ref).unwrap();
}

#[test]
fn every_copy_status_the_model_produces() {
    let (xen, d0, g) = common::machine();
    let other = xen.create_domain_with_id(2, 16).unwrap();
    let rw = g.alloc_page().unwrap();
    let rw_ref = g.grant_access(0, rw, false).unwrap();
    let ro = g.alloc_page().unwrap();
    let ro_ref = g.grant_access(0, ro, true).unwrap();
    let to_other = g.grant_access(2, g.alloc_page().unwrap(), false).unwrap();
    let local = d0.alloc_page().unwrap();
    let l = GnttabCopyPtr::local(local, 0);
    let cases = [
        (
            GnttabCopy::new(l, GnttabCopyPtr::gref(1, rw_ref, 0), 100),
            GrantStatus::Okay,
        ),
        // offset + len beyond the page, on either side
        (
            GnttabCopy::new(l, GnttabCopyPtr::gref(1, rw_ref, 4000), 100),
            GrantStatus::BadCopyArg,
        ),
        (
            GnttabCopy::new(
                GnttabCopyPtr::local(local, 4095),
                GnttabCopyPtr::gref(1, rw_ref, 0),
                2,
            ),
            GrantStatus::BadCopyArg,
        ),
        // unknown flags
        (
            GnttabCopy::with_flags(l, GnttabCopyPtr::gref(1, rw_ref, 0), 1, 2 | 8),
            GrantStatus::BadCopyArg,
        ),
        // read-only grant as destination
        (
            GnttabCopy::new(l, GnttabCopyPtr::gref(1, ro_ref, 0), 1),
            GrantStatus::PermissionDenied,
        ),
        // granted to domain 2, not to us
        (
            GnttabCopy::new(l, GnttabCopyPtr::gref(1, to_other, 0), 1),
            GrantStatus::PermissionDenied,
        ),
        // a local side that names another domain
        (
            GnttabCopy::with_flags(
                GnttabCopyPtr::gref(1, GrantRef(local.0 as u32), 0),
                GnttabCopyPtr::gref(1, rw_ref, 0),
                1,
                2,
            ),
            GrantStatus::PermissionDenied,
        ),
        // no such domain
        (
            GnttabCopy::new(l, GnttabCopyPtr::gref(77, rw_ref, 0), 1),
            GrantStatus::BadDomain,
        ),
        (
            GnttabCopy::new(l, GnttabCopyPtr::gref(DOMID_SELF - 1, rw_ref, 0), 1),
            GrantStatus::BadDomain,
        ),
        // ref beyond the table
        (
            GnttabCopy::new(l, GnttabCopyPtr::gref(1, GrantRef(1 << 20), 0), 1),
            GrantStatus::BadGntref,
        ),
        (
            GnttabCopy::new(l, GnttabCopyPtr::gref(1, GrantRef(u32::MAX), 0), 1),
            GrantStatus::BadGntref,
        ),
        // an entry that is not granted
        (
            GnttabCopy::new(l, GnttabCopyPtr::gref(1, GrantRef(300), 0), 1),
            GrantStatus::GeneralError,
        ),
        // a local pfn outside our reservation
        (
            GnttabCopy::new(
                GnttabCopyPtr::local(Pfn(1 << 40), 0),
                GnttabCopyPtr::gref(1, rw_ref, 0),
                1,
            ),
            GrantStatus::BadPage,
        ),
        (
            GnttabCopy::new(l, GnttabCopyPtr::local(Pfn(u64::MAX), 0), 1),
            GrantStatus::BadPage,
        ),
    ];
    let mut ops: Vec<GnttabCopy> = cases.iter().map(|c| c.0).collect();
    d0.grant_copy_abi(&mut ops).unwrap();
    for (i, (op, (_, want))) in ops.iter().zip(cases.iter()).enumerate() {
        assert_eq!(op.status(), *want, "case {i}: {op:?}");
    }
    // A borrowed local destination: general_error, and the borrow is never written.
    let b = d0.borrow_page(local).unwrap();
    let s = copy1(
        &d0,
        GnttabCopy::new(
            GnttabCopyPtr::gref(1, ro_ref, 0),
            GnttabCopyPtr::local(local, 0),
            8,
        ),
    );
    assert_eq!(s, GrantStatus::GeneralError);
    drop(b);
    // Failed ops left no status bits behind: every grant can end.
    for r in [rw_ref, ro_ref, to_other] {
        g.end_access(r).unwrap();
    }
    // An ended grant is no longer usable.
    assert_eq!(
        copy1(
            &d0,
            GnttabCopy::new(l, GnttabCopyPtr::gref(1, rw_ref, 0), 1)
        ),
        GrantStatus::GeneralError
    );
    // Statistics saw it all.
    let st = xen.stats();
    assert!(st.copy_ops >= cases.len() as u64 + 2 && st.copy_failed >= cases.len() as u64);
    drop(other);
}

#[test]
fn end_access_of_an_unknown_ref_is_an_error() {
    let (_xen, _d0, g) = common::machine();
    assert_eq!(
        g.end_access(GrantRef(3)),
        Err(Error::BadGrantRef(GrantRef(3)))
    );
    assert_eq!(
        g.end_access(GrantRef(u32::MAX)),
        Err(Error::BadGrantRef(GrantRef(u32::MAX)))
    );
    let p = g.alloc_page().unwrap();
    let r = g.grant_access(0, p, true).unwrap();
    g.end_access(r).unwrap();
    assert_eq!(g.end_access(r), Err(Error::BadGrantRef(r)));
}

#[test]
fn the_grant_table_fills_and_frees() {
    let (_xen, _d0, g) = common::machine();
    let p = g.alloc_page().unwrap();
    let n = g.grant_entries() - GNTTAB_NR_RESERVED_ENTRIES as usize;
    let refs: Vec<_> = (0..n)
        .map(|_| g.grant_access(0, p, true).unwrap())
        .collect();
    assert!(matches!(
        g.grant_access(0, p, true),
        Err(Error::GrantTableFull { .. })
    ));
    for r in refs {
        g.end_access(r).unwrap();
    }
    g.grant_access(0, p, false).unwrap();
}

#[test]
fn two_threads_copying_while_the_guest_ends_access() {
    // The guest may end access only when no copy holds the entry; after it succeeds, copies fail.
    let (_xen, d0, g) = common::machine();
    let p = g.alloc_page().unwrap();
    let r = g.grant_access(0, p, false).unwrap();
    let src = common::filled_page(&d0, 1);
    let copier = {
        let d0 = d0.clone();
        std::thread::spawn(move || {
            let mut ok_after_end = 0;
            let mut oks = 0;
            for _ in 0..2000 {
                let mut ops = [GnttabCopy::new(
                    GnttabCopyPtr::local(src, 0),
                    GnttabCopyPtr::gref(1, r, 0),
                    64,
                ); 8];
                d0.grant_copy_abi(&mut ops).unwrap();
                let n_ok = ops
                    .iter()
                    .filter(|o| o.status() == GrantStatus::Okay)
                    .count();
                oks += n_ok;
                // Once an op fails (grant ended), no later op in the batch may succeed.
                if let Some(first_fail) = ops.iter().position(|o| o.status() != GrantStatus::Okay) {
                    ok_after_end += ops[first_fail..]
                        .iter()
                        .filter(|o| o.status() == GrantStatus::Okay)
                        .count();
                }
            }
            (oks, ok_after_end)
        })
    };
    let mut refused = 0;
    loop {
        match g.end_access(r) {
            Ok(()) => break,
            Err(Error::GrantInUse(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        std::thread::yield_now();
    }
    let (_oks, ok_after_end) = copier.join().unwrap();
    assert_eq!(ok_after_end, 0);
    let _ = refused; // how often the race hit depends on scheduling; correctness is above
}

#[test]
fn seam_copies_take_the_local_side_by_address() {
    use hypervisor::traits::GrantOps;
    let (_xen, d0, g) = common::machine();
    let dst = g.alloc_page().unwrap();
    let r = g.grant_access(0, dst, false).unwrap();
    let src = common::filled_page(&d0, 0x5a);
    let at = |off: usize| CopyPtr::Local(d0.local_addr(src).unwrap().add(off));
    let mut ops = [
        // Good: 100 bytes from offset 8 of our page to offset 16 of the grant.
        CopyOp::new(at(8), CopyPtr::gref(1, r, 16), 100),
        // Crosses the local page's end.
        CopyOp::new(at(4000), CopyPtr::gref(1, r, 0), 200),
        // Not our memory at all: an address below our view.
        CopyOp::new(
            CopyPtr::Local(LocalAddr(d0.local_addr(src).unwrap().0 - (1 << 30))),
            CopyPtr::gref(1, r, 0),
            4,
        ),
        // Another domain's page by address is not ours either.
        CopyOp::new(
            CopyPtr::Local(g.local_addr(dst).unwrap()),
            CopyPtr::gref(1, r, 0),
            4,
        ),
        // Two local sides: gntdev requires a grant on one side.
        CopyOp::new(at(0), at(100), 4),
    ];
    GrantOps::grant_copy(&d0, &mut ops).unwrap();
    let st: Vec<GrantStatus> = ops.iter().map(|o| o.status).collect();
    assert_eq!(
        st,
        [
            GrantStatus::Okay,
            GrantStatus::BadCopyArg,
            GrantStatus::BadVirtAddr,
            GrantStatus::BadVirtAddr,
            GrantStatus::BadCopyArg,
        ]
    );
    g.end_access(r).unwrap();
    let got = common::page(&g, dst);
    assert!(got[16..116].iter().all(|b| *b == 0x5a) && got[116] == 0 && got[15] == 0);
}

#[test]
fn an_own_ring_page_is_atomic_only_until_the_ring_drops() {
    use hypervisor::ringpage::own_ring;
    let (_xen, d0, g) = common::machine();
    let p = g.alloc_page().unwrap();
    let ring = own_ring(&g, p).unwrap();
    // Safe code cannot touch the page non-atomically while the ring lives.
    assert_eq!(g.write(p, 0, &[1]), Err(Error::PageIsRing(p)));
    assert_eq!(g.read(p, 0, &mut [0]), Err(Error::PageIsRing(p)));
    assert!(matches!(g.with_page(p, |_| ()), Err(Error::PageIsRing(p2)) if p2 == p));
    assert_eq!(g.free_page(p), Err(Error::PageIsRing(p)));
    assert!(own_ring(&g, p).is_err(), "pinned once, by one ring");
    // Granted to the backend (as netfront does), a copy through the grant is refused too.
    let r = g.grant_access(0, p, false).unwrap();
    let src = common::filled_page(&d0, 1);
    let mut ops = [GnttabCopy::new(
        GnttabCopyPtr::local(src, 0),
        GnttabCopyPtr::gref(1, r, 0),
        8,
    )];
    d0.grant_copy_abi(&mut ops).unwrap();
    assert_eq!(ops[0].status(), GrantStatus::GeneralError);
    g.end_access(r).unwrap();
    drop(ring);
    // Plain memory again.
    g.write(p, 0, &[1]).unwrap();
    g.free_page(p).unwrap();
}

#[test]
fn an_overlapping_copy_within_one_page_is_a_memmove() {
    // A domain copying inside one of its own pages, ranges overlapping forwards and backwards,
    // at offsets and lengths that are not word multiples: every source byte must land as it was
    // before the copy (memmove), not as already overwritten (a forward memcpy would smear).
    let (_xen, _d0, g) = common::machine();
    let page = g.alloc_page().unwrap();
    let pattern: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 7 + 1) as u8).collect();
    for (soff, doff, len) in [
        (3usize, 50usize, 1501usize),
        (50, 3, 1501),
        (0, 1, 4095),
        (1, 0, 4095),
    ] {
        g.write(page, 0, &pattern).unwrap();
        let s = copy1(
            &g,
            GnttabCopy::new(
                GnttabCopyPtr::local(page, soff as u16),
                GnttabCopyPtr::local(page, doff as u16),
                len as u16,
            ),
        );
        assert_eq!(s, GrantStatus::Okay);
        let mut want = pattern.clone();
        want.copy_within(soff..soff + len, doff);
        assert!(
            common::page(&g, page) == want,
            "soff {soff} doff {doff} len {len}"
        );
    }
}
