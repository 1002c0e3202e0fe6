//! Event channels: binding, notify, masks, blocking waits without lost wakeups.

mod common;

use std::time::Duration;

use hypervisor::*;

fn pair(a: &DomainHandle, b: &DomainHandle) -> (Port, Port) {
    let pb = b.alloc_unbound(a.domid()).unwrap();
    let pa = a.bind_interdomain(b.domid(), pb).unwrap();
    (pa, pb)
}

#[test]
fn bind_notify_pending_mask() {
    let (_xen, d0, g) = common::machine();
    let (p0, pg) = pair(&d0, &g);
    assert!(!g.is_pending(pg).unwrap());
    d0.notify(p0).unwrap();
    assert!(g.is_pending(pg).unwrap());
    let got = g.wait(Some(Duration::ZERO)).unwrap();
    assert!(got.contains(pg) && got.len() == 1, "{got:?}");
    assert!(!g.is_pending(pg).unwrap(), "wait clears what it returns");
    // Masked: pending, but no wakeup, and counted as spurious.
    g.mask(pg).unwrap();
    d0.notify(p0).unwrap();
    assert!(g.is_pending(pg).unwrap());
    assert!(g.wait(Some(Duration::from_millis(1))).unwrap().is_empty());
    assert_eq!(g.evtchn_stats().masked, 1);
    g.unmask(pg).unwrap();
    assert!(g.wait(None).unwrap().contains(pg));
    // Notifies coalesce.
    d0.notify(p0).unwrap();
    d0.notify(p0).unwrap();
    assert_eq!(g.evtchn_stats().coalesced, 1);
    assert!(g.clear_pending(pg).unwrap());
    assert!(!g.clear_pending(pg).unwrap());
    // The other direction works too.
    g.notify(pg).unwrap();
    assert!(d0.wait(Some(Duration::ZERO)).unwrap().contains(p0));
    g.report_spurious(pg);
    assert!(g.evtchn_stats().spurious() >= 2);
}

#[test]
fn binding_rules_and_close() {
    let (xen, d0, g) = common::machine();
    let third = xen.create_domain_with_id(5, 8).unwrap();
    let pg = g.alloc_unbound(0).unwrap();
    // Only the named remote may bind.
    assert!(matches!(
        third.bind_interdomain(1, pg),
        Err(Error::PortNotBindable { .. })
    ));
    assert!(matches!(
        d0.bind_interdomain(1, Port(999)),
        Err(Error::PortNotBindable { .. })
    ));
    assert!(matches!(
        d0.bind_interdomain(77, pg),
        Err(Error::NoSuchDomain(77))
    ));
    let p0 = d0.bind_interdomain(1, pg).unwrap();
    // Bound once only.
    assert!(matches!(
        d0.bind_interdomain(1, pg),
        Err(Error::PortNotBindable { .. })
    ));
    assert_eq!(d0.notify(Port(0)), Err(Error::BadPort(Port(0))));
    assert_eq!(d0.notify(Port(12345)), Err(Error::BadPort(Port(12345))));
    // Closing one end leaves the other unbound (notify does nothing, binding again works).
    d0.close(p0).unwrap();
    assert_eq!(d0.notify(p0), Err(Error::BadPort(p0)));
    g.notify(pg).unwrap();
    let p0b = d0.bind_interdomain(1, pg).unwrap();
    d0.notify(p0b).unwrap();
    assert!(g.is_pending(pg).unwrap());
    // Destroying a domain unbinds its peers' ports.
    drop(third);
    xen.destroy_domain(0).unwrap();
    g.notify(pg).unwrap();
    let again = xen.create_domain_with_id(0, 8).unwrap();
    again.bind_interdomain(1, pg).unwrap();
}

#[test]
fn no_lost_wakeups_across_threads() {
    // A ping-pong of 2000 rounds: each side blocks without a timeout until the other notifies.
    // A lost wakeup would hang the test (the harness then times out).
    let (_xen, d0, g) = common::machine();
    let (p0, pg) = pair(&d0, &g);
    const ROUNDS: u32 = 2000;
    let t = std::thread::spawn(move || {
        for _ in 0..ROUNDS {
            let got = g.wait(None).unwrap();
            assert!(got.contains(pg));
            g.notify(pg).unwrap();
        }
        g.evtchn_stats()
    });
    for _ in 0..ROUNDS {
        d0.notify(p0).unwrap();
        let got = d0.wait(None).unwrap();
        assert!(got.contains(p0));
    }
    let gs = t.join().unwrap();
    assert_eq!(gs.notifies_sent, ROUNDS as u64);
    assert_eq!(d0.evtchn_stats().notifies_sent, ROUNDS as u64);
}

#[test]
fn many_notifies_from_two_threads_are_all_seen() {
    let (xen, d0, g) = common::machine();
    let d2 = xen.create_domain_with_id(2, 8).unwrap();
    let (p0, pg0) = pair(&d0, &g);
    let (p2, pg2) = pair(&d2, &g);
    let senders: Vec<_> = [(d0, p0), (d2, p2)]
        .into_iter()
        .map(|(d, p)| std::thread::spawn(move || (0..500).for_each(|_| d.notify(p).unwrap())))
        .collect();
    // Every notify either wakes us or coalesces into a pending bit we then see: after the
    // senders finish, one more wait returns both (or we already saw them).
    let (mut seen0, mut seen2) = (false, false);
    while !(seen0 && seen2) {
        let got = g.wait(Some(Duration::from_secs(10))).unwrap();
        assert!(!got.is_empty(), "an event was lost");
        seen0 |= got.contains(pg0);
        seen2 |= got.contains(pg2);
    }
    for s in senders {
        s.join().unwrap();
    }
    let st = g.evtchn_stats();
    assert_eq!(st.events + st.coalesced, 1000);
}
