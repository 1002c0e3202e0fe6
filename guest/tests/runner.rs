//! The runner on the embedded model: a guest whose vif the toolstack never created stops at
//! once, and says why (netfront's message) in its error and its report.

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use guest::{Error, Guest, GuestReport, GuestSpec};
use netfront::RxMode;
use xen_model::Hypervisor;

fn spec() -> GuestSpec {
    GuestSpec {
        index: 1,
        mac: [0x00, 0x16, 0x3e, 0, 0, 2],
        addr: Ipv4Addr::new(10, 99, 0, 2),
        prefix: 24,
        mtu: 1500,
        mode: RxMode::Copy,
    }
}

#[test]
fn a_guest_without_a_vif_stops_and_reports_why() {
    let xen = Hypervisor::new(2048).expect("machine");
    let dom = xen.create_domain_with_id(1, 1024).expect("domain");

    let report = Mutex::new(GuestReport::default());
    let e = guest::runner::serve(dom.clone(), &spec(), &AtomicBool::new(false), &report)
        .expect_err("no vif: netfront cannot connect");
    assert!(
        matches!(e, Error::Connect(netfront::Error::NoDevice { .. })),
        "{e}"
    );
    assert!(
        e.to_string().contains("the toolstack must create it"),
        "{e}"
    );

    let g = Guest::start(dom, spec(), Arc::new(AtomicBool::new(false))).expect("thread");
    let r = g.join();
    assert_eq!((r.index, r.domid, r.addr.as_str()), (1, 1, "10.99.0.2"));
    assert!(!r.connected);
    assert_eq!(r.error, Some(e.to_string()));
}
