//! The double's own contract: what netback's test relies on it to enforce.

use std::time::Duration;

use super::{Double, PAGES_PER_DOMAIN};
use crate::abi::GrantStatus;
use crate::error::Error;
use crate::ops::{CopyOp, CopyPtr};
use crate::ringpage::{mapped_ring, own_ring};
use crate::traits::{
    EventChannel, ForeignMapping, GrantOps, GrantTable, GuestMemory, XenDomain, XenStore,
};
use crate::types::{GrantRef, LocalAddr, PAGE_SIZE, Pfn, Port, TransferState, WatchEvent};

#[test]
fn pages_are_aligned_zeroed_and_bounded() {
    let d = Double::new().domain(1);
    let p = d.alloc_page().unwrap();
    assert_eq!(d.page_ptr(p).unwrap().as_ptr() as usize % PAGE_SIZE, 0);
    d.write(p, 4000, &[7; 96]).unwrap();
    assert_eq!(
        d.write(p, 4000, &[7; 97]),
        Err(Error::OutOfBounds {
            offset: 4000,
            len: 97
        })
    );
    d.free_page(p).unwrap();
    assert_eq!(d.free_page(p), Err(Error::PageNotAllocated(p)));
    // Reallocated pages come back zeroed.
    let q = d.alloc_page().unwrap();
    assert_eq!(q, p);
    assert!(d.with_page(q, |b| b.iter().all(|x| *x == 0)).unwrap());
    let bad = Pfn(PAGES_PER_DOMAIN as u64);
    assert!(matches!(
        d.read(bad, 0, &mut [0; 1]),
        Err(Error::PfnOutOfRange { .. })
    ));
    for _ in 1..PAGES_PER_DOMAIN {
        d.alloc_page().unwrap();
    }
    assert!(matches!(
        d.alloc_page(),
        Err(Error::ReservationExhausted { .. })
    ));
}

#[test]
fn a_ring_page_refuses_raw_access_until_unpinned() {
    let d = Double::new().domain(1);
    let p = d.alloc_page().unwrap();
    let ring = own_ring(&d, p).unwrap();
    assert_eq!(d.read(p, 0, &mut [0; 4]), Err(Error::PageIsRing(p)));
    assert_eq!(d.write(p, 0, &[0; 4]), Err(Error::PageIsRing(p)));
    assert_eq!(d.with_page(p, |_| ()), Err(Error::PageIsRing(p)));
    assert_eq!(d.free_page(p), Err(Error::PageIsRing(p)));
    drop(ring);
    d.write(p, 0, &[1; 4]).unwrap();
    d.free_page(p).unwrap();
}

#[test]
fn a_borrowed_page_holds_writers_and_pins_off() {
    let d = Double::new().domain(1);
    let (p, q) = (d.alloc_page().unwrap(), d.alloc_page().unwrap());
    d.write(p, 0, b"abc").unwrap();
    d.with_page(p, |b| {
        assert_eq!(d.write(p, 0, b"x"), Err(Error::PageBorrowed(p)));
        assert_eq!(d.pin_ring(p), Err(Error::PageBorrowed(p)));
        assert_eq!(d.free_page(p), Err(Error::PageBorrowed(p)));
        // Reading it, and writing another page from it, are fine.
        let mut r = [0; 3];
        d.read(p, 0, &mut r).unwrap();
        d.write(q, 0, &b[..3]).unwrap();
    })
    .unwrap();
    d.write(p, 0, b"x").unwrap();
    let mut got = [0; 3];
    d.read(q, 0, &mut got).unwrap();
    assert_eq!(&got, b"abc");
}

#[test]
fn grant_copy_moves_bytes_and_reports_each_failure_as_xen_does() {
    let x = Double::new();
    let (d0, g, other) = (x.domain(0), x.domain(1), x.domain(2));
    let local = d0.alloc_page().unwrap();
    d0.write(local, 0, &[0xAB; 100]).unwrap();
    let at = d0.local_addr(local).unwrap();
    let (rw_page, ro_page) = (g.alloc_page().unwrap(), g.alloc_page().unwrap());
    g.write(ro_page, 10, b"from the guest").unwrap();
    let rw = g.grant_access(0, rw_page, false).unwrap();
    let ro = g.grant_access(0, ro_page, true).unwrap();
    let not_ours = g.grant_access(2, rw_page, false).unwrap();
    let to = |r: GrantRef, off: u16| CopyPtr::gref(1, r, off);
    let stranger = other.alloc_page().unwrap();
    let mut ops = [
        CopyOp::new(CopyPtr::Local(at), to(rw, 5), 100),
        CopyOp::new(to(ro, 10), CopyPtr::Local(at.add(200)), 14),
        CopyOp::new(CopyPtr::Local(at), to(rw, 4000), 100),
        CopyOp::new(CopyPtr::Local(at), CopyPtr::gref(9, rw, 0), 1),
        CopyOp::new(CopyPtr::Local(at), to(GrantRef(1 << 20), 0), 1),
        CopyOp::new(CopyPtr::Local(at), to(GrantRef(100), 0), 1),
        CopyOp::new(CopyPtr::Local(at), to(ro, 0), 1),
        CopyOp::new(CopyPtr::Local(at), to(not_ours, 0), 1),
        CopyOp::new(
            CopyPtr::Local(other.local_addr(stranger).unwrap()),
            to(rw, 0),
            1,
        ),
        CopyOp::new(CopyPtr::Local(LocalAddr(8)), to(rw, 0), 1),
        CopyOp::new(CopyPtr::Local(at), CopyPtr::Local(at.add(1)), 1),
    ];
    d0.grant_copy(&mut ops).unwrap();
    let got: Vec<GrantStatus> = ops.iter().map(|o| o.status).collect();
    use GrantStatus::*;
    assert_eq!(
        got,
        [
            Okay,
            Okay,
            BadCopyArg,
            BadDomain,
            BadGntref,
            GeneralError,
            PermissionDenied,
            PermissionDenied,
            BadVirtAddr,
            BadVirtAddr,
            BadCopyArg,
        ]
    );
    let mut back = [0; 14];
    d0.read(local, 200, &mut back).unwrap();
    assert_eq!(&back, b"from the guest");
    for r in [rw, ro, not_ours] {
        g.end_access(r).unwrap();
    }
    let mut page = [0; 110];
    g.read(rw_page, 0, &mut page).unwrap();
    assert!(page[..5].iter().all(|b| *b == 0));
    assert!(page[5..105].iter().all(|b| *b == 0xAB));
    assert_eq!(g.end_access(rw), Err(Error::BadGrantRef(rw)));
}

#[test]
fn a_mapping_is_the_granters_page_pinned_and_holds_the_grant() {
    let x = Double::new();
    let (d0, g) = (x.domain(0), x.domain(1));
    let p = g.alloc_page().unwrap();
    let front = own_ring(&g, p).unwrap();
    let r = g.grant_access(0, p, false).unwrap();
    let m = d0.map_grant_ref(1, r).unwrap();
    assert_eq!(m.as_ptr(), g.page_ptr(p).unwrap());
    assert_eq!(x.live_mappings(), 1);
    assert_eq!(g.end_access(r), Err(Error::GrantInUse(r)));
    // Still a ring after the frontend lets go of its own pin: the mapping pins it too.
    drop(front);
    assert_eq!(g.write(p, 0, &[1]), Err(Error::PageIsRing(p)));
    // A copy through the grant would touch ring memory non-atomically: refused.
    let local = d0.alloc_page().unwrap();
    let mut ops = [CopyOp::new(
        CopyPtr::gref(1, r, 0),
        CopyPtr::Local(d0.local_addr(local).unwrap()),
        4,
    )];
    d0.grant_copy(&mut ops).unwrap();
    assert_eq!(ops[0].status, GrantStatus::GeneralError);
    let ring = mapped_ring(m).unwrap();
    drop(ring);
    assert_eq!(x.live_mappings(), 0);
    g.end_access(r).unwrap();
    g.write(p, 0, &[1]).unwrap();
    // Refusals: another domain's grant, a read-only grant mapped writable.
    let ro = g.grant_access(0, p, true).unwrap();
    assert_eq!(
        d0.map_grant_ref(1, ro).map(drop),
        Err(Error::Grant(GrantStatus::PermissionDenied))
    );
    assert_eq!(
        d0.map_grant_ref(7, ro).map(drop),
        Err(Error::Grant(GrantStatus::BadDomain))
    );
}

#[test]
fn transfers_are_not_offered_and_accept_entries_stay_pending() {
    let x = Double::new();
    let (d0, g) = (x.domain(0), x.domain(1));
    assert!(!d0.can_transfer());
    assert!(matches!(
        d0.grant_transfer(&mut []),
        Err(Error::Unsupported { .. })
    ));
    let p = g.alloc_page().unwrap();
    let r = g.grant_accept_transfer(0, p).unwrap();
    assert_eq!(g.transfer_state(r), Ok(TransferState::Pending));
    assert_eq!(g.with_page(p, |_| ()), Err(Error::PageBusy(p)));
    assert_eq!(g.end_access(r), Err(Error::BadGrantRef(r)));
    assert_eq!(g.end_transfer(r), Ok(None));
    assert_eq!(x.grants_in_use(1), 0);
}

#[test]
fn events_go_to_the_owning_handle_and_stay_masked_until_unmask() {
    let x = Double::new();
    let (d0, g) = (x.domain(0), x.domain(1));
    let (back, other, front) = (
        d0.open_evtchn().unwrap(),
        d0.open_evtchn().unwrap(),
        g.open_evtchn().unwrap(),
    );
    assert!(back.as_fd().is_none());
    let fp = front.alloc_unbound(0).unwrap();
    assert!(matches!(
        back.bind_interdomain(1, Port(fp.0 + 1)),
        Err(Error::PortNotBindable { .. })
    ));
    let bp = back.bind_interdomain(1, fp).unwrap();
    assert_eq!(other.notify(bp), Err(Error::BadPort(bp)));
    let look = |h: &super::Evtchn| {
        let mut v = vec![];
        h.wait(Some(Duration::ZERO), &mut v).unwrap();
        v
    };
    // Binding leaves the new port pending, as Xen.
    assert_eq!(look(&back), [bp]);
    front.notify(fp).unwrap();
    assert_eq!(look(&other), []);
    assert_eq!(look(&back), [], "masked until unmasked");
    assert_eq!(x.masked_ports(0), 1);
    back.unmask(&[bp]).unwrap();
    assert_eq!(
        look(&back),
        [bp],
        "the pending event is delivered after unmask"
    );
    back.unmask(&[bp]).unwrap();
    assert_eq!(x.events_delivered(0), 2);
    // The other way, and a wait with no limit that is woken by another thread.
    let t = std::thread::spawn(move || {
        let mut v = vec![];
        front.wait(None, &mut v).unwrap();
        (front, v)
    });
    back.notify(bp).unwrap();
    let (front, v) = t.join().unwrap();
    assert_eq!(v, [fp]);
    assert_eq!(x.ports_in_use(0), 1);
    drop(back);
    assert_eq!(x.ports_in_use(0), 0);
    // The frontend's port is unbound again, bindable by a new backend handle.
    let again = d0.open_evtchn().unwrap();
    again.bind_interdomain(1, fp).unwrap();
    front.unbind(fp).unwrap();
    assert_eq!(x.ports_in_use(1), 0);
}

#[test]
fn watches_fire_on_registration_and_on_changes_at_or_below() {
    let x = Double::new();
    let d0 = x.domain(0);
    let xs = d0.xenstore().unwrap();
    let next = |xs: &super::Store| xs.read_watch(Some(Duration::ZERO)).unwrap();
    let ev = |p: &str, t: &str| {
        Some(WatchEvent {
            path: p.into(),
            token: t.into(),
        })
    };
    xs.watch("/a/b", "t").unwrap();
    assert_eq!(next(&xs), ev("/a/b", "t"));
    assert_eq!(next(&xs), None);
    xs.write("/a/b/c/d", "1").unwrap();
    xs.write("/a/bc", "sibling, not below").unwrap();
    xs.write("/a/b", "2").unwrap();
    assert_eq!(next(&xs), ev("/a/b/c/d", "t"));
    assert_eq!(next(&xs), ev("/a/b", "t"));
    assert_eq!(next(&xs), None);
    assert_eq!(xs.read("/a/b/c").unwrap(), "");
    assert_eq!(xs.directory("/a").unwrap(), ["b", "bc"]);
    assert_eq!(xs.directory("/a/b").unwrap(), ["c"]);
    // Removing an ancestor fires with the watch's path; the subtree is gone.
    xs.rm("/a").unwrap();
    assert_eq!(next(&xs), ev("/a/b", "t"));
    assert!(matches!(xs.read("/a/b/c/d"), Err(Error::XsNoEntry(_))));
    assert!(matches!(xs.read("no-slash"), Err(Error::XsInvalidPath(_))));
    // Another connection's change wakes a blocked reader; dropping a connection drops its watches.
    let t = std::thread::spawn(move || (xs.read_watch(None).unwrap(), xs));
    d0.xenstore().unwrap().write("/a/b", "3").unwrap();
    let (got, xs) = t.join().unwrap();
    assert_eq!(got, ev("/a/b", "t"));
    assert_eq!(x.watches(), 1);
    assert!(matches!(
        xs.unwatch("/a/b", "u"),
        Err(Error::XsNoWatch { .. })
    ));
    drop(xs);
    assert_eq!(x.watches(), 0);
}

#[test]
fn add_vif_lays_out_both_directories_cross_linked() {
    let x = Double::new();
    let xs = x.domain(0).xenstore().unwrap();
    let paths = x.add_vif(3, 0, 1, "02:00:00:00:00:03");
    assert_eq!(paths.backend, "/local/domain/0/backend/vif/3/1");
    assert_eq!(paths.frontend, "/local/domain/3/device/vif/1");
    let r = |dir: &str, k: &str| xs.read(&format!("{dir}/{k}")).unwrap();
    assert_eq!(r(&paths.backend, "frontend"), paths.frontend);
    assert_eq!(r(&paths.backend, "frontend-id"), "3");
    assert_eq!(r(&paths.backend, "online"), "1");
    assert_eq!(r(&paths.backend, "state"), "1");
    assert_eq!(r(&paths.backend, "mac"), "02:00:00:00:00:03");
    assert_eq!(r(&paths.frontend, "backend"), paths.backend);
    assert_eq!(r(&paths.frontend, "backend-id"), "0");
    assert_eq!(r(&paths.frontend, "handle"), "1");
    assert_eq!(r(&paths.frontend, "state"), "1");
    x.remove_vif(&paths);
    assert!(xs.directory(&paths.backend).is_err());
    assert!(xs.directory(&paths.frontend).is_err());
}
