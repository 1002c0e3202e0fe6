//! The grant pin protocol under concurrency: copiers and a mapper hammer one grant while the
//! guest tries to end access. Once end access succeeds, nothing may write the page any more:
//! the guest borrows it and watches it stay unchanged while the backends keep trying.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hypervisor::abi::*;
use hypervisor::*;

#[test]
fn after_end_access_nothing_writes_the_page() {
    let (_xen, d0, g) = common::machine();
    let page = g.alloc_page().unwrap();
    let r = g.grant_access(0, page, false).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = vec![];
    for t in 0..2u8 {
        let (d0, stop) = (d0.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let src = d0.alloc_page().unwrap();
            let mut failures = 0u64;
            for k in 0..20_000u32 {
                // Relaxed: a stop flag; the joins below order everything else.
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                d0.write(src, 0, &[t.wrapping_mul(100).wrapping_add(k as u8); 256])
                    .unwrap();
                let mut ops = [GnttabCopy::new(
                    GnttabCopyPtr::local(src, 0),
                    GnttabCopyPtr::gref(1, r, 0),
                    256,
                ); 4];
                d0.grant_copy_abi(&mut ops).unwrap();
                failures += ops
                    .iter()
                    .filter(|o| o.status() != GrantStatus::Okay)
                    .count() as u64;
            }
            failures
        }));
    }
    let mapper = {
        let (d0, stop) = (d0.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut refused = 0u64;
            for _ in 0..5_000 {
                // Relaxed: a stop flag; the joins below order everything else.
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match d0.map_grant_ref(1, r) {
                    Ok(m) => drop(m),
                    Err(_) => refused += 1,
                }
            }
            refused
        })
    };
    // End access as soon as the hypervisor lets go.
    let mut in_use = 0u64;
    loop {
        match g.end_access(r) {
            Ok(()) => break,
            Err(Error::GrantInUse(_)) => in_use += 1,
            Err(e) => panic!("{e}"),
        }
        std::thread::yield_now();
    }
    // From now on the page must not change, although the backends keep trying for a while.
    let borrow = g.borrow_page(page).unwrap();
    let snapshot = borrow.to_vec();
    for _ in 0..200 {
        std::thread::yield_now();
        assert!(
            borrow[..] == snapshot[..],
            "the page changed after end_access succeeded"
        );
    }
    drop(borrow);
    // Relaxed: pairs with the workers' polls of the flag; join() orders the rest.
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    mapper.join().unwrap();
    let _ = in_use; // how often the guest was refused depends on scheduling
    // And the ref is free: granting again works and hands out a usable grant.
    let r2 = g.grant_access(0, page, false).unwrap();
    let _m = d0.map_grant_ref(1, r2).unwrap();
    assert_eq!(g.end_access(r2), Err(Error::GrantInUse(r2)));
}
