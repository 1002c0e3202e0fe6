//! A backend grant-copies into a guest page while the guest writes the same page, as a hostile
//! guest may: through its own view (`write`) and through the direct map (a grant copy with its
//! own page as the local destination). Every copy must still succeed, and the page may only
//! ever hold bytes somebody wrote: the copy engine's copies are atomic per byte, so a race
//! tears, never corrupts.
//!
//! This is also the test ThreadSanitizer runs (see docs/ARCHITECTURE.md, "The embedded
//! model"): with `SPLITNET_COPY_ENGINE=atomic` every frame access is an `AtomicU64` TSan can
//! see, and the two direct-map writers meet at the same addresses. (TSan tracks virtual
//! addresses, so it cannot see the view write and the direct-map copy as the same bytes, and it
//! cannot see inside the AVX2 engine's asm.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hypervisor::abi::*;
use hypervisor::*;

const ROUNDS: u32 = 2_000;

/// dom0's values are 0x10..0x20, the guest's 0x80..0x90.
fn backend_value(k: u32) -> u8 {
    0x10 + (k % 16) as u8
}
fn guest_value(k: u32) -> u8 {
    0x80 + (k % 16) as u8
}

/// Runs dom0 copying `dst_range` of the guest page from its own page while the guest writes
/// `guest_range` of it, `ROUNDS` times each; returns the page and each side's last value.
fn race(dst_range: (u16, u16), guest_range: (usize, usize)) -> (Vec<u8>, u8, u8) {
    let (xen, d0, g) = common::machine();
    let page = g.alloc_page().unwrap();
    let gref = g.grant_access(0, page, false).unwrap();
    let guest_src = g.alloc_page().unwrap();
    let started = Arc::new(AtomicBool::new(false));
    eprintln!("copy engine: {}", xen.copy_engine());

    let backend = {
        let (d0, started) = (d0.clone(), started.clone());
        std::thread::spawn(move || {
            let src = d0.alloc_page().unwrap();
            let (off, len) = dst_range;
            // Relaxed: only makes the two loops overlap in time; the joins order the results.
            while !started.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            for k in 0..ROUNDS {
                d0.write(src, 0, &[backend_value(k); PAGE_SIZE]).unwrap();
                let mut op = [GnttabCopy::new(
                    GnttabCopyPtr::local(src, 0),
                    GnttabCopyPtr::gref(1, gref, off),
                    len,
                )];
                d0.grant_copy_abi(&mut op).unwrap();
                assert_eq!(op[0].status(), GrantStatus::Okay, "round {k}");
            }
        })
    };
    let guest = {
        let (g, started) = (g.clone(), started.clone());
        std::thread::spawn(move || {
            let (lo, hi) = guest_range;
            // Relaxed: as above.
            started.store(true, Ordering::Relaxed);
            for k in 0..ROUNDS {
                let v = guest_value(k);
                if k % 2 == 0 {
                    // Through the guest's view.
                    g.write(page, lo, &vec![v; hi - lo]).unwrap();
                } else {
                    // Through the direct map: a local grant copy into its own page.
                    g.write(guest_src, 0, &[v; PAGE_SIZE]).unwrap();
                    let mut op = [GnttabCopy::new(
                        GnttabCopyPtr::local(guest_src, lo as u16),
                        GnttabCopyPtr::local(page, lo as u16),
                        (hi - lo) as u16,
                    )];
                    g.grant_copy_abi(&mut op).unwrap();
                    assert_eq!(op[0].status(), GrantStatus::Okay, "round {k}");
                }
            }
        })
    };
    backend.join().unwrap();
    guest.join().unwrap();
    g.end_access(gref).unwrap();
    let bytes = common::page(&g, page);
    (bytes, backend_value(ROUNDS - 1), guest_value(ROUNDS - 1))
}

#[test]
fn overlapping_writers_leave_only_bytes_somebody_wrote() {
    // dom0 fills the page from offset 2 (the Ethernet case); the guest writes a range inside it
    // whose edges fall mid-word.
    let (bytes, _, _) = race((2, 4094), (5, 3003));
    for (i, b) in bytes.iter().enumerate() {
        let ok = match i {
            0..2 => *b == 0,
            5..3003 => (0x10..0x20).contains(b) || (0x80..0x90).contains(b),
            _ => (0x10..0x20).contains(b),
        };
        assert!(ok, "byte {i} is {b:#x}, which nobody wrote there");
    }
}

#[test]
fn adjacent_writers_never_touch_each_others_bytes() {
    // dom0 copies [0, 1003) and the guest writes [1003, 4096): they share the 8-byte word
    // 1000..1008. Each side's last value must be all over its range: an edge written as a
    // whole word without a compare-and-swap would put stale bytes back over the other's.
    let (bytes, last_backend, last_guest) = race((0, 1003), (1003, PAGE_SIZE));
    assert!(
        bytes[..1003].iter().all(|b| *b == last_backend),
        "{:x?}",
        &bytes[992..1016]
    );
    assert!(
        bytes[1003..].iter().all(|b| *b == last_guest),
        "{:x?}",
        &bytes[992..1016]
    );
}
