use std::sync::Mutex;

use super::*;
use crate::gntdev::{GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF};
use crate::xs::fake::FakeXenstored;
use hypervisor::ringpage;

/// One side of a segment as the fake kernel saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Local(usize),
    Grant(GrantSide),
}

/// A segment as the fake kernel saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    src: End,
    dst: End,
    len: u16,
    flags: u16,
}

type Hook = Box<dyn FnMut() + Send>;

#[derive(Default)]
struct FakeState {
    /// Every GRANT_COPY ioctl, with its segments.
    calls: Vec<Vec<Seen>>,
    /// Statuses for the next call's segments, in order (okay when it runs out).
    statuses: Vec<i16>,
    /// Fail the next call with this errno, after marking its first segment okay.
    fail: Option<i32>,
    /// Runs inside the ioctl, while the segments are with the "kernel".
    during: Option<Hook>,
}

/// A fake `/dev/xen/gntdev`: records what a grant copy is handed, answers as scripted.
#[derive(Clone, Default)]
struct FakeGntdev(Arc<Mutex<FakeState>>);

impl std::fmt::Debug for FakeGntdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeGntdev")
    }
}

impl FakeGntdev {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }
}

fn end(local: Option<usize>, grant: Option<GrantSide>) -> End {
    match (local, grant) {
        (Some(a), None) => End::Local(a),
        (None, Some(g)) => End::Grant(g),
        other => panic!("a side is local or a grant, not {other:?}"),
    }
}

impl GntdevIo for FakeGntdev {
    fn grant_copy(&self, segs: &mut [GrantCopySegment<'_>]) -> super::super::Result<()> {
        let mut hook = self.state().during.take();
        if let Some(h) = hook.as_mut() {
            h();
        }
        let mut st = self.state();
        st.during = hook;
        st.calls.push(
            segs.iter()
                .map(|s| Seen {
                    src: end(s.source_local(), s.source_grant()),
                    dst: end(s.dest_local(), s.dest_grant()),
                    len: s.len(),
                    flags: s.flags(),
                })
                .collect(),
        );
        if let Some(errno) = st.fail.take() {
            // As the kernel may: some segments marked okay before the call fails.
            segs[0].set_raw_status(GrantStatus::Okay.raw());
            return Err(super::super::Error::Os {
                op: "IOCTL_GNTDEV_GRANT_COPY",
                errno,
                hint: crate::error::OS_HINT,
            });
        }
        let statuses = std::mem::take(&mut st.statuses);
        for (i, s) in segs.iter_mut().enumerate() {
            s.set_raw_status(statuses.get(i).copied().unwrap_or(0));
        }
        Ok(())
    }

    fn map_grant_ref(&self, _: DomId, _: GrantRef) -> super::super::Result<GntdevMapping> {
        Err(super::super::Error::Os {
            op: "IOCTL_GNTDEV_MAP_GRANT_REF",
            errno: libc::EINVAL,
            hint: crate::error::OS_HINT,
        })
    }

    fn ioctls(&self) -> u64 {
        self.state().calls.len() as u64
    }

    fn unmap_failures(&self) -> u64 {
        0
    }
}

const PAGES: usize = 8;
const DOMID: DomId = 0;

fn host() -> (XenHost, FakeGntdev) {
    let fake = FakeGntdev::default();
    let host = XenHost::with_parts(
        PAGES,
        DOMID,
        Box::new(fake.clone()),
        PathBuf::from("/nonexistent/xenstored"),
    )
    .unwrap();
    (host, fake)
}

fn grant(domid: DomId, gref: u32, offset: u16) -> GrantSide {
    GrantSide {
        domid,
        gref: GrantRef(gref),
        offset,
    }
}

fn gref(g: GrantSide) -> CopyPtr {
    CopyPtr::gref(g.domid, g.gref, g.offset)
}

#[test]
fn a_batch_is_one_ioctl_with_segments_built_from_the_ops() {
    let (host, fake) = host();
    let (a, b) = (host.alloc_page().unwrap(), host.alloc_page().unwrap());
    let (la, lb) = (host.local_addr(a).unwrap(), host.local_addr(b).unwrap());
    let (g1, g2, g3) = (grant(3, 9, 20), grant(4, 10, 0), grant(5, 11, 4088));
    let mut ops = [
        // netback rx: local frame bytes into a guest buffer.
        CopyOp::new(CopyPtr::Local(la.add(100)), gref(g1), 50),
        // netback tx: a whole guest page into a local page.
        CopyOp::new(gref(g2), CopyPtr::Local(lb), 4096),
        CopyOp::new(gref(g2), gref(g3), 8),
    ];
    host.grant_copy(&mut ops).unwrap();
    let st = fake.state();
    assert_eq!(st.calls.len(), 1, "one ioctl for the batch");
    assert_eq!(
        st.calls[0],
        [
            Seen {
                src: End::Local(la.0 + 100),
                dst: End::Grant(g1),
                len: 50,
                flags: GNTCOPY_DEST_GREF
            },
            Seen {
                src: End::Grant(g2),
                dst: End::Local(lb.0),
                len: 4096,
                flags: GNTCOPY_SOURCE_GREF
            },
            Seen {
                src: End::Grant(g2),
                dst: End::Grant(g3),
                len: 8,
                flags: GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF
            },
        ]
    );
    drop(st);
    assert!(ops.iter().all(|o| o.status == GrantStatus::Okay));
    let s = host.stats();
    assert_eq!(
        (s.gntdev_ioctls, s.copy_calls, s.copy_ops, s.copy_failed),
        (1, 1, 3, 0)
    );
    assert_eq!(s.copy_bytes, 50 + 4096 + 8);

    host.grant_copy(&mut []).unwrap();
    assert_eq!(host.stats().copy_calls, 1, "an empty batch issues no ioctl");
}

#[test]
fn each_segments_status_lands_in_its_own_op() {
    let (host, fake) = host();
    let p = host.alloc_page().unwrap();
    let l = host.local_addr(p).unwrap();
    fake.state().statuses = vec![
        GrantStatus::Okay.raw(),
        GrantStatus::BadGntref.raw(),
        -99, // a code this crate does not know
        GrantStatus::PermissionDenied.raw(),
    ];
    let mut ops = [
        CopyOp::new(CopyPtr::Local(l), gref(grant(1, 8, 0)), 10),
        // Refused here: shifts every later op's segment by one.
        CopyOp::new(CopyPtr::Local(LocalAddr(0x1000)), gref(grant(1, 9, 0)), 10),
        CopyOp::new(gref(grant(1, 10, 0)), CopyPtr::Local(l.add(10)), 10),
        CopyOp::new(gref(grant(1, 11, 0)), CopyPtr::Local(l.add(20)), 10),
        CopyOp::new(CopyPtr::Local(l.add(30)), gref(grant(1, 12, 0)), 10),
    ];
    host.grant_copy(&mut ops).unwrap();
    assert_eq!(fake.state().calls[0].len(), 4);
    let statuses: Vec<GrantStatus> = ops.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        [
            GrantStatus::Okay,
            GrantStatus::BadVirtAddr,
            GrantStatus::BadGntref,
            GrantStatus::GeneralError,
            GrantStatus::PermissionDenied,
        ]
    );
    let s = host.stats();
    assert_eq!((s.copy_failed, s.copy_refused, s.copy_bytes), (4, 1, 10));
}

#[test]
fn local_sides_outside_the_arena_never_reach_the_kernel() {
    let (host, fake) = host();
    let first = host.local_addr(Pfn(0)).unwrap();
    let g = gref(grant(1, 8, 0));
    let mut ops = [
        CopyOp::new(CopyPtr::Local(LocalAddr(0x1000)), g, 10),
        CopyOp::new(g, CopyPtr::Local(LocalAddr(first.0 - 1)), 1),
        CopyOp::new(g, CopyPtr::Local(first.add(PAGES * PAGE_SIZE)), 1),
        // Crossing a page: the local side into the next page, or the granted side.
        CopyOp::new(CopyPtr::Local(first.add(4000)), g, 200),
        CopyOp::new(CopyPtr::Local(first), gref(grant(1, 8, 4000)), 200),
        // No grant at all: gntdev would fail the whole batch with EINVAL.
        CopyOp::new(
            CopyPtr::Local(first),
            CopyPtr::Local(first.add(PAGE_SIZE)),
            8,
        ),
    ];
    host.grant_copy(&mut ops).unwrap();
    assert!(fake.state().calls.is_empty(), "no ioctl at all");
    let statuses: Vec<GrantStatus> = ops.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        [
            GrantStatus::BadVirtAddr,
            GrantStatus::BadVirtAddr,
            GrantStatus::BadVirtAddr,
            GrantStatus::BadCopyArg,
            GrantStatus::BadCopyArg,
            GrantStatus::BadCopyArg,
        ]
    );
    assert_eq!(host.stats().copy_refused, 6);
}

#[test]
fn a_failed_ioctl_fails_the_call_and_every_op() {
    let (host, fake) = host();
    let p = host.alloc_page().unwrap();
    let l = host.local_addr(p).unwrap();
    fake.state().fail = Some(libc::EFAULT);
    let mut ops = [
        CopyOp::new(gref(grant(1, 8, 0)), CopyPtr::Local(l), 10),
        CopyOp::new(gref(grant(1, 9, 0)), CopyPtr::Local(l.add(10)), 10),
        CopyOp::new(gref(grant(1, 9, 0)), CopyPtr::Local(LocalAddr(8)), 10),
    ];
    let err = host.grant_copy(&mut ops).unwrap_err();
    assert_eq!(
        err,
        Error::Os {
            op: "IOCTL_GNTDEV_GRANT_COPY",
            errno: libc::EFAULT,
            hint: crate::error::OS_HINT,
        }
    );
    let statuses: Vec<GrantStatus> = ops.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        [
            GrantStatus::GeneralError,
            GrantStatus::GeneralError,
            GrantStatus::BadVirtAddr
        ],
        "the kernel's early okay is not trusted"
    );
    assert_eq!(host.stats().copy_bytes, 0);
    // The destination's claim was released: the page can be borrowed again.
    assert_eq!(host.with_page(p, |b| b.len()), Ok(PAGE_SIZE));
}

#[test]
fn ring_and_borrowed_pages_are_refused_as_local_sides() {
    let (host, fake) = host();
    let (ring, b) = (host.alloc_page().unwrap(), host.alloc_page().unwrap());
    let (lr, lb) = (host.local_addr(ring).unwrap(), host.local_addr(b).unwrap());
    let g = gref(grant(1, 8, 0));
    host.pin_ring(ring).unwrap();
    let mut ops = [
        CopyOp::new(g, CopyPtr::Local(lr), 8),
        CopyOp::new(CopyPtr::Local(lr), g, 8),
    ];
    host.grant_copy(&mut ops).unwrap();
    assert!(ops.iter().all(|o| o.status == GrantStatus::GeneralError));
    assert!(fake.state().calls.is_empty());
    host.unpin_ring(ring);

    let statuses = host
        .with_page(b, |_| {
            let mut ops = [
                CopyOp::new(g, CopyPtr::Local(lb), 8),
                CopyOp::new(CopyPtr::Local(lb), g, 8),
            ];
            host.grant_copy(&mut ops).unwrap();
            [ops[0].status, ops[1].status]
        })
        .unwrap();
    assert_eq!(
        statuses,
        [GrantStatus::GeneralError, GrantStatus::Okay],
        "a borrowed page may be read by the kernel, never written"
    );
}

#[test]
fn local_pages_stay_claimed_while_the_kernel_has_them() {
    let (host, fake) = host();
    let (src, dst) = (host.alloc_page().unwrap(), host.alloc_page().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let (h, seen) = (host.clone(), seen.clone());
        fake.state().during = Some(Box::new(move || {
            let mut s = seen.lock().unwrap();
            s.push(h.with_page(dst, |_| ()));
            s.push(h.pin_ring(src));
            s.push(h.pin_ring(dst));
        }));
    }
    let g = gref(grant(1, 8, 0));
    let mut ops = [
        CopyOp::new(CopyPtr::Local(host.local_addr(src).unwrap()), g, 8),
        CopyOp::new(g, CopyPtr::Local(host.local_addr(dst).unwrap()), 8),
    ];
    host.grant_copy(&mut ops).unwrap();
    // Break the host -> fake -> hook -> host cycle.
    fake.state().during = None;
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Err(Error::PageBusy(dst)),
            Err(Error::PageBusy(src)),
            Err(Error::PageBusy(dst))
        ]
    );
    assert_eq!(host.with_page(dst, |_| 7), Ok(7));
    host.pin_ring(src).unwrap();
    host.unpin_ring(src);
}

#[test]
fn the_host_is_a_backend_domain_without_page_flipping() {
    fn backend<D: hypervisor::BackendDomain>(d: &D) -> bool {
        d.can_transfer()
    }
    let (host, _) = host();
    assert!(!backend(&host));
    let err = host
        .grant_transfer(&mut [hypervisor::TransferOp::new(Pfn(0), 1, GrantRef(8))])
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");

    assert!(host.map_grant_ref(1, GrantRef(8)).is_err());
    assert_eq!(host.stats().map_failures, 1);

    for _ in 0..PAGES {
        host.alloc_page().unwrap();
    }
    assert_eq!(
        host.alloc_page(),
        Err(Error::ReservationExhausted {
            domid: DOMID,
            pages: PAGES as u64
        })
    );
    assert_eq!(host.free_pages(), 0);
}

#[test]
fn an_own_ring_pins_its_arena_page_for_its_lifetime() {
    let (host, _) = host();
    let p = host.alloc_page().unwrap();
    let ring = ringpage::own_ring(&host, p).unwrap();
    assert_eq!(host.write(p, 0, b"x"), Err(Error::PageIsRing(p)));
    assert_eq!(host.free_page(p), Err(Error::PageIsRing(p)));
    drop(ring);
    host.write(p, 0, b"x").unwrap();
    host.free_page(p).unwrap();
}

#[test]
fn stats_print_on_one_line() {
    let (host, _) = host();
    let line = host.stats().to_string();
    assert!(
        line.starts_with("gntdev 0 ioctls; copies 0 ops in 0 calls"),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn the_domid_is_read_from_the_relative_domid_node() {
    let d = FakeXenstored::start();
    let mut xs = XsClient::connect(d.path()).unwrap();
    let err = read_domid(&mut xs).unwrap_err();
    assert!(err.to_string().contains("xenstore-write"), "{err}");
    xs.write("domid", b"7").unwrap();
    assert_eq!(read_domid(&mut xs), Ok(7));
    xs.write("domid", b"dom0").unwrap();
    let err = read_domid(&mut xs).unwrap_err();
    assert!(err.to_string().contains("\"dom0\""), "{err}");
}

#[test]
fn connections_go_to_the_endpoint_the_host_found() {
    use hypervisor::traits::XenStore;
    let d = FakeXenstored::start();
    let host =
        XenHost::with_parts(1, 5, Box::new(FakeGntdev::default()), d.path().to_owned()).unwrap();
    let xs = host.xenstore().unwrap();
    xs.write("/local/domain/5/backend/vif/1/0/state", "2")
        .unwrap();
    assert_eq!(
        d.state().value("/local/domain/5/backend/vif/1/0/state"),
        Some("2".into())
    );
}

#[test]
fn open_works_on_xen_or_says_what_is_missing() {
    match XenHost::open(16) {
        Ok(host) => println!("real Xen here: domain {}, {}", host.domid(), host.stats()),
        Err(e) => {
            eprintln!("not on Xen here: checked the refusal instead: {e}");
            assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        }
    }
}
