//! Hypercalls run in the xen context under their classes (xenoprof exact mode, own process).

mod common;

use hypervisor::abi::*;
use xenoprof::{Class, Context};

#[test]
fn hypercalls_are_charged_to_xen_under_their_classes() {
    xenoprof::set_mode(xenoprof::Mode::Exact);
    let (xen, d0, g) = common::machine();
    let vcpu = xenoprof::register_vcpu(0, Context::Kernel);
    let rx = g.alloc_page().unwrap();
    let r = g.grant_access(0, rx, false).unwrap();
    let src = d0.alloc_page().unwrap();
    let mut ops = [GnttabCopy::new(
        GnttabCopyPtr::local(src, 0),
        GnttabCopyPtr::gref(1, r, 0),
        64,
    ); 4];
    d0.grant_copy_abi(&mut ops).unwrap();
    let acc = g.grant_accept_transfer(0, g.alloc_page().unwrap()).unwrap();
    let mut t = [GnttabTransfer::new(d0.alloc_page().unwrap(), 1, acc)];
    d0.grant_transfer_abi(&mut t).unwrap();
    assert_eq!(t[0].status(), GrantStatus::Okay);
    let (ge, de) = (g.open_evtchn(), d0.open_evtchn());
    let p = ge.alloc_unbound(0).unwrap();
    let p0 = de.bind_interdomain(1, p).unwrap();
    de.notify(p0).unwrap();
    xenoprof::flush();
    let calls = |c| vcpu.calls(Context::Xen, c);
    assert_eq!(
        calls(Class::GRANT_TABLE),
        2,
        "one copy and one transfer hypercall"
    );
    assert_eq!(calls(Class::COPY), 4, "one copy scope per op");
    // The batch looks the guest up once (cached), the transfer once, bind and notify once each.
    assert_eq!(calls(Class::FIND_DOMAIN), 4);
    assert!(calls(Class::MM) >= 2, "the flip remaps giver and receiver");
    assert!(
        calls(Class::PAGE_ALLOC) >= 2,
        "replacement frame in, receiver's old frame out"
    );
    assert_eq!(
        calls(Class::EVENT_CHANNEL),
        3,
        "alloc_unbound, bind, notify"
    );
    // The guest-side grant ops (this thread plays both domains) are kernel work, not hypercalls.
    assert_eq!(
        vcpu.calls(Context::Kernel, Class::GRANT_TABLE),
        2,
        "grant_access, accept_transfer"
    );
    drop(xen);
}
