//! Event channels: handles own their ports, binding, notify, delivery masks until unmask,
//! blocking waits without lost wakeups, and pollable descriptors.

mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use hypervisor::*;
use xen_model::*;

fn pair(a: &EvtchnHandle, b: &EvtchnHandle) -> (Port, Port) {
    let pb = b.alloc_unbound(a.domid()).unwrap();
    let pa = a.bind_interdomain(b.domid(), pb).unwrap();
    (pa, pb)
}

/// Waits with `timeout` and returns what was delivered.
fn wait(h: &EvtchnHandle, timeout: Option<Duration>) -> Vec<Port> {
    let mut v = Vec::new();
    h.wait(timeout, &mut v).unwrap();
    v
}

/// Whether `fd` polls readable now.
fn readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    poll_for(fd, Duration::ZERO)
}

/// Whether `fd` becomes readable within `t`.
fn poll_for(fd: std::os::fd::BorrowedFd<'_>, t: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
    let ts = Timespec::try_from(t).unwrap();
    poll(&mut pfd, Some(&ts)).unwrap() == 1
}

#[test]
fn delivery_masks_until_unmask_which_redelivers() {
    let (_xen, d0, g) = common::machine();
    let (h0, hg) = (d0.open_evtchn(), g.open_evtchn());
    let (p0, pg) = pair(&h0, &hg);
    assert!(!hg.is_pending(pg).unwrap());
    h0.notify(p0).unwrap();
    assert!(hg.is_pending(pg).unwrap());
    assert_eq!(wait(&hg, Some(Duration::ZERO)), vec![pg]);
    assert!(!hg.is_pending(pg).unwrap(), "wait clears what it delivers");
    // Delivered, so masked: a second notify stays pending and is not delivered...
    h0.notify(p0).unwrap();
    assert!(hg.is_pending(pg).unwrap());
    assert!(wait(&hg, Some(Duration::from_millis(1))).is_empty());
    assert_eq!(g.evtchn_stats().masked, 1);
    // ...until the late EOI, which redelivers it.
    hg.unmask(&[pg]).unwrap();
    assert_eq!(wait(&hg, None), vec![pg]);
    hg.unmask(&[pg]).unwrap();
    // Notifies coalesce while pending.
    h0.notify(p0).unwrap();
    h0.notify(p0).unwrap();
    assert_eq!(g.evtchn_stats().coalesced, 1);
    // The other direction works too.
    hg.notify(pg).unwrap();
    assert_eq!(wait(&h0, Some(Duration::ZERO)), vec![p0]);
    assert!(g.evtchn_stats().spurious() >= 1);
}

#[test]
fn two_handles_in_one_domain_never_take_each_others_events() {
    let (_xen, d0, g) = common::machine();
    // Two drivers in dom0 (say two vifs, or a vif and the uplink), each with its own handle.
    let (a, b) = (d0.open_evtchn(), d0.open_evtchn());
    let hg = g.open_evtchn();
    let (pa, ga) = pair(&a, &hg);
    let (pb, gb) = pair(&b, &hg);
    hg.notify(ga).unwrap();
    hg.notify(gb).unwrap();
    // Each handle sees exactly its own port, whichever waits first.
    assert_eq!(wait(&b, Some(Duration::ZERO)), vec![pb]);
    assert_eq!(wait(&a, Some(Duration::ZERO)), vec![pa]);
    // A handle cannot act on a port it does not own.
    assert_eq!(a.notify(pb), Err(Error::BadPort(pb)));
    assert_eq!(a.unmask(&[pb]), Err(Error::BadPort(pb)));
    // A blocked waiter on one handle is not woken by the other's events.
    a.unmask(&[pa]).unwrap();
    b.unmask(&[pb]).unwrap();
    hg.notify(gb).unwrap();
    assert!(wait(&a, Some(Duration::from_millis(20))).is_empty());
    assert_eq!(wait(&b, Some(Duration::ZERO)), vec![pb]);
}

#[test]
fn binding_rules_unbind_and_handle_drop() {
    let (xen, d0, g) = common::machine();
    let third = xen.create_domain_with_id(5, 8).unwrap();
    let (h0, hg, h3) = (d0.open_evtchn(), g.open_evtchn(), third.open_evtchn());
    let pg = hg.alloc_unbound(0).unwrap();
    // Only the named remote may bind.
    assert!(matches!(
        h3.bind_interdomain(1, pg),
        Err(Error::PortNotBindable { .. })
    ));
    assert!(matches!(
        h0.bind_interdomain(1, Port(999)),
        Err(Error::PortNotBindable { .. })
    ));
    assert!(matches!(
        h0.bind_interdomain(77, pg),
        Err(Error::NoSuchDomain(77))
    ));
    let p0 = h0.bind_interdomain(1, pg).unwrap();
    // Bound once only.
    assert!(matches!(
        h0.bind_interdomain(1, pg),
        Err(Error::PortNotBindable { .. })
    ));
    assert_eq!(h0.notify(Port(0)), Err(Error::BadPort(Port(0))));
    assert_eq!(h0.notify(Port(12345)), Err(Error::BadPort(Port(12345))));
    // Unbinding one end leaves the other unbound (notify does nothing, binding again works).
    h0.unbind(p0).unwrap();
    assert_eq!(h0.notify(p0), Err(Error::BadPort(p0)));
    hg.notify(pg).unwrap();
    let p0b = h0.bind_interdomain(1, pg).unwrap();
    h0.notify(p0b).unwrap();
    assert!(hg.is_pending(pg).unwrap());
    // Dropping a handle closes its ports: the peer's port is bindable again.
    assert_eq!(d0.evtchn_ports_in_use(), 1);
    drop(h0);
    assert_eq!(d0.evtchn_ports_in_use(), 0);
    let h0 = d0.open_evtchn();
    h0.bind_interdomain(1, pg).unwrap();
    // Destroying a domain unbinds its peers' ports.
    drop((third, h3));
    xen.destroy_domain(0).unwrap();
    hg.notify(pg).unwrap();
    let again = xen.create_domain_with_id(0, 8).unwrap();
    again.open_evtchn().bind_interdomain(1, pg).unwrap();
}

#[test]
fn the_descriptor_polls_readable_exactly_while_a_port_is_deliverable() {
    let (_xen, d0, g) = common::machine();
    let (h0, hg) = (d0.open_evtchn(), g.open_evtchn());
    let (p0, pg) = pair(&h0, &hg);
    // An event before the descriptor exists is not lost.
    h0.notify(p0).unwrap();
    let fd = hg.as_fd().unwrap();
    assert!(fd.as_raw_fd() >= 0);
    assert!(readable(fd));
    assert_eq!(wait(&hg, Some(Duration::ZERO)), vec![pg]);
    assert!(!readable(fd), "collected: no stale readiness");
    // Masked (delivered, not unmasked): a notify does not make it readable.
    h0.notify(p0).unwrap();
    assert!(!readable(fd));
    // The EOI does, since the event is pending.
    hg.unmask(&[pg]).unwrap();
    assert!(readable(fd));
    assert_eq!(wait(&hg, Some(Duration::ZERO)), vec![pg]);
    hg.unmask(&[pg]).unwrap();
    assert!(!readable(fd));
    // A notify from another thread wakes a poller.
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        h0.notify(p0).unwrap();
        h0
    });
    assert!(poll_for(fd, Duration::from_secs(10)));
    let _h0 = t.join().unwrap();
    assert_eq!(wait(&hg, Some(Duration::ZERO)), vec![pg]);
}

#[test]
fn no_lost_wakeups_across_threads() {
    // A ping-pong of 2000 rounds: each side blocks without a timeout until the other notifies,
    // and unmasks after each delivery. A lost wakeup would hang the test (the harness then
    // times out).
    let (_xen, d0, g) = common::machine();
    let (h0, hg) = (d0.open_evtchn(), g.open_evtchn());
    let (p0, pg) = pair(&h0, &hg);
    const ROUNDS: u32 = 2000;
    let t = std::thread::spawn(move || {
        for _ in 0..ROUNDS {
            assert_eq!(wait(&hg, None), vec![pg]);
            hg.unmask(&[pg]).unwrap();
            hg.notify(pg).unwrap();
        }
        g.evtchn_stats()
    });
    for _ in 0..ROUNDS {
        h0.notify(p0).unwrap();
        assert_eq!(wait(&h0, None), vec![p0]);
        h0.unmask(&[p0]).unwrap();
    }
    let gs = t.join().unwrap();
    assert_eq!(gs.notifies_sent, ROUNDS as u64);
    assert_eq!(d0.evtchn_stats().notifies_sent, ROUNDS as u64);
}

#[test]
fn many_notifies_from_two_threads_are_all_seen() {
    let (xen, d0, g) = common::machine();
    let d2 = xen.create_domain_with_id(2, 8).unwrap();
    let hg = g.open_evtchn();
    let (h0, h2) = (d0.open_evtchn(), d2.open_evtchn());
    let (p0, pg0) = pair(&h0, &hg);
    let (p2, pg2) = pair(&h2, &hg);
    let senders: Vec<_> = [(h0, p0), (h2, p2)]
        .into_iter()
        .map(|(h, p)| std::thread::spawn(move || (0..500).for_each(|_| h.notify(p).unwrap())))
        .collect();
    // Every notify either wakes us, coalesces into a pending bit, or lands on a masked port
    // that the unmask redelivers: we see both ports.
    let (mut seen0, mut seen2) = (false, false);
    while !(seen0 && seen2) {
        let got = wait(&hg, Some(Duration::from_secs(10)));
        assert!(!got.is_empty(), "an event was lost");
        seen0 |= got.contains(&pg0);
        seen2 |= got.contains(&pg2);
        hg.unmask(&got).unwrap();
    }
    for s in senders {
        s.join().unwrap();
    }
    let st = g.evtchn_stats();
    assert_eq!(st.events + st.coalesced + st.masked, 1000);
}
