//! The control plane on its own thread (`Config::control_thread`): a xenstored that answers
//! only after 5 s, or that disappears and comes back, never pauses two guests' stream; the
//! control plane catches up afterwards (the device added meanwhile is offered, watches work
//! again after a restart).

mod threaded;

use std::time::{Duration, Instant};

use netback::Config;
use netfront::RxMode;
use threaded::{Backend, GUARD, Guest, guest, mac, node};
use xen_model::Hypervisor;

fn machine() -> (Hypervisor, Backend) {
    let xen = Hypervisor::new(32 * 1024).expect("machine");
    let dom0 = xen.create_domain(4096).expect("dom0");
    let cfg = Config {
        control_thread: true,
        xenstore_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    (xen, Backend::start_with(dom0, cfg))
}

/// Streams frames from `a` to `b` until `until` returns true; returns how many arrived and the
/// longest wait between two arrivals.
fn stream(a: &mut Guest, b: &mut Guest, mut until: impl FnMut() -> bool) -> (u64, Duration) {
    let dst = b.mac;
    let (mut got, mut longest) = (0u64, Duration::ZERO);
    let mut last = Instant::now();
    while !until() {
        for _ in 0..8 {
            a.send_to(dst, 600);
        }
        while let Some(_f) = b.try_recv() {
            got += 1;
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
        b.nf.wait(Some(Duration::from_millis(2))).expect("wait");
        a.nf.poll().expect("poll");
    }
    (got, longest)
}

#[test]
fn a_slow_or_dead_xenstore_never_pauses_the_guests_traffic() {
    let (xen, _be) = machine();
    let (da, _) = guest(&xen, 1, 0, mac(2));
    let (db, _) = guest(&xen, 2, 0, mac(3));
    let mut a = Guest::connect(&da, 0, mac(2), RxMode::Copy);
    let mut b = Guest::connect(&db, 0, mac(3), RxMode::Copy);
    // Warm up and learn both MACs.
    threaded::exchange(&mut a, &mut b, 4);

    // xenstored answers dom0 only after 5 s; the toolstack adds a vif, which the control plane
    // now cannot handle in time.
    xen.xenstore_delay(0, Duration::from_secs(5));
    xen.create_domain_with_id(3, 1024).unwrap();
    let pc = xen.add_vif(3, 0, 0, "00:16:3e:00:00:04").unwrap();
    let stall = Instant::now();
    let (got, longest) = stream(&mut a, &mut b, || stall.elapsed() >= Duration::from_secs(5));
    assert_eq!(
        node(&xen, &format!("{}/state", pc.backend)),
        "1",
        "the control plane was stalled all along"
    );
    assert!(got > 100, "only {got} frames crossed during the stall");
    assert!(
        longest < Duration::from_millis(2500),
        "the stream paused for {longest:?} while xenstored was slow"
    );
    // xenstored answers again: the control plane catches up and offers the new vif.
    xen.xenstore_delay(0, Duration::ZERO);
    threaded::wait_node(&xen, &format!("{}/state", pc.backend), "2");

    // xenstored goes away, then restarts: traffic carries on throughout, and afterwards the
    // control plane's watches work again (a vif added after the restart is offered).
    xen.xenstore_kill(0);
    let down = Instant::now();
    let (got, longest) = stream(&mut a, &mut b, || down.elapsed() >= Duration::from_secs(2));
    assert!(
        got > 100 && longest < Duration::from_millis(1500),
        "{got} {longest:?}"
    );
    xen.xenstore_restart();
    xen.create_domain_with_id(4, 1024).unwrap();
    let pd = xen.add_vif(4, 0, 0, "00:16:3e:00:00:05").unwrap();
    threaded::wait_node(&xen, &format!("{}/state", pd.backend), "2");
    let start = Instant::now();
    let (got, _) = stream(&mut a, &mut b, || {
        start.elapsed() >= Duration::from_millis(300)
    });
    assert!(got > 0);
    assert!(start.elapsed() < GUARD);
    a.close();
    b.close();
}
