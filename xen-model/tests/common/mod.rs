//! Shared test helpers.
#![allow(dead_code)]

use hypervisor::Pfn;
use xen_model::{DomainHandle, Hypervisor};

/// A small machine with a backend (dom0) and a guest.
pub fn machine() -> (Hypervisor, DomainHandle, DomainHandle) {
    let xen = Hypervisor::new(2048).expect("machine");
    let dom0 = xen.create_domain_with_id(0, 128).expect("dom0");
    let guest = xen.create_domain_with_id(1, 128).expect("domU");
    (xen, dom0, guest)
}

/// A page filled with `byte`.
#[track_caller]
pub fn filled_page(d: &DomainHandle, byte: u8) -> Pfn {
    let p = d.alloc_page().expect("page");
    d.write(p, 0, &[byte; 4096]).expect("fill");
    p
}

/// A page's bytes.
#[track_caller]
pub fn page(d: &DomainHandle, pfn: Pfn) -> Vec<u8> {
    let mut b = vec![0; 4096];
    d.read(pfn, 0, &mut b).expect("read");
    b
}
