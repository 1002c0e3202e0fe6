//! Property: random copy batches, valid and hostile, never write outside what is writable to the
//! caller (its own pages and frames granted writable to it), and every op that reports okay did
//! exactly its copy. Guard pages filled with sentinels (ungranted, read-only granted, granted to
//! someone else, another domain's) stay intact; afterwards every grant can end (no pin leaked).

use hypervisor::abi::*;
use hypervisor::*;
use proptest::prelude::*;
use xen_model::*;

const PAGES: u64 = 12;

#[derive(Debug, Clone)]
enum Side {
    /// Index into the guest's grants (rw or ro, ours or another domain's).
    Grant(usize),
    /// A random ref, possibly out of range.
    RawRef(u32),
    /// One of the caller's own pfns (maybe out of range).
    Local(u64),
}

#[derive(Debug, Clone)]
struct Op {
    src: Side,
    dst: Side,
    soff: u16,
    doff: u16,
    len: u16,
    domid: u16,
    flags_noise: u16,
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![
        4 => (0usize..6).prop_map(Side::Grant),
        1 => any::<u32>().prop_map(Side::RawRef),
        1 => (0u64..PAGES + 2).prop_map(Side::Local),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let off = prop_oneof![3 => 0u16..64, 1 => 4000u16..4200, 1 => any::<u16>()];
    let len = prop_oneof![3 => 0u16..1600, 1 => 4000u16..4200, 1 => any::<u16>()];
    let domid = prop_oneof![8 => Just(1u16), 1 => Just(2u16), 1 => any::<u16>()];
    let noise = prop_oneof![9 => Just(0u16), 1 => any::<u16>()];
    (side(), side(), off.clone(), off, len, domid, noise).prop_map(
        |(src, dst, soff, doff, len, domid, flags_noise)| Op {
            src,
            dst,
            soff,
            doff,
            len,
            domid,
            flags_noise,
        },
    )
}

struct World {
    xen: Hypervisor,
    d0: DomainHandle,
    g: DomainHandle,
    other: DomainHandle,
    /// (gref, guest pfn, writable-by-dom0)
    grants: Vec<(GrantRef, Pfn, bool)>,
}

fn world() -> World {
    let xen = Hypervisor::new(512).unwrap();
    let d0 = xen.create_domain_with_id(0, PAGES).unwrap();
    let g = xen.create_domain_with_id(1, PAGES).unwrap();
    let other = xen.create_domain_with_id(2, PAGES).unwrap();
    for (d, seed) in [(&d0, 0x10u8), (&g, 0x40), (&other, 0x80)] {
        for i in 0..PAGES {
            let p = d.alloc_page().unwrap();
            d.write(p, 0, &[seed.wrapping_add(i as u8); 4096]).unwrap();
        }
    }
    // Guest pfns 0,1: rw to dom0; 2,3: ro to dom0; 4: rw to domain 2; 5: rw to dom0, ended.
    // Pfns 6.. are never granted (guards).
    let mut grants = vec![];
    for (pfn, ro, to) in [
        (0, false, 0),
        (1, false, 0),
        (2, true, 0),
        (3, true, 0),
        (4, false, 2),
        (5, false, 0),
    ] {
        let r = g.grant_access(to, Pfn(pfn), ro).unwrap();
        grants.push((r, Pfn(pfn), !ro && to == 0));
    }
    g.end_access(grants[5].0).unwrap();
    grants[5].2 = false;
    World {
        xen,
        d0,
        g,
        other,
        grants,
    }
}

/// All pages of all three domains, by (domain, pfn).
fn snapshot(w: &World) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for d in [&w.d0, &w.g, &w.other] {
        for p in 0..PAGES {
            let mut b = vec![0; 4096];
            d.read(Pfn(p), 0, &mut b).unwrap();
            out.push(b);
        }
    }
    out
}

/// The page (snapshot index) an op side may legitimately touch, if any.
fn target(w: &World, s: &Side, is_gref: bool, domid: u16, write: bool) -> Option<usize> {
    match (s, is_gref) {
        (Side::Grant(i), true) if domid == 1 => {
            let (_, pfn, writable) = w.grants[*i];
            let readable = *i < 4; // rw or ro to dom0, still granted
            ((write && writable) || (!write && readable)).then_some(PAGES as usize + pfn.index())
        }
        (Side::Local(p), false) if domid == DOMID_SELF && *p < PAGES => Some(*p as usize),
        _ => None,
    }
}

fn ptr(w: &World, s: &Side, domid: u16, off: u16) -> (GnttabCopyPtr, bool) {
    match s {
        Side::Grant(i) => (GnttabCopyPtr::gref(domid, w.grants[*i].0, off), true),
        Side::RawRef(r) => (GnttabCopyPtr::gref(domid, GrantRef(*r), off), true),
        Side::Local(p) => (GnttabCopyPtr::local(Pfn(*p), off), false),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn hostile_batches_never_write_outside_grants(ops in proptest::collection::vec(op(), 1..40)) {
        let w = world();
        let mut shadow = snapshot(&w);
        let mut batch = vec![];
        let mut plan = vec![];
        for o in &ops {
            let (s, sg) = ptr(&w, &o.src, o.domid, o.soff);
            // A local side names DOMID_SELF unless the noise says otherwise.
            let (mut d, dg) = ptr(&w, &o.dst, o.domid, o.doff);
            if !dg && o.flags_noise & 1 != 0 { d.domid = o.domid; }
            let mut s = s;
            if !sg && o.flags_noise & 2 != 0 { s.domid = o.domid; }
            let mut flags = (sg as u16) | ((dg as u16) << 1);
            if o.flags_noise & 0x100 != 0 { flags |= o.flags_noise & 0xFFFC; }
            batch.push(GnttabCopy::with_flags(s, d, o.len, flags));
            plan.push((target(&w, &o.src, sg, s.domid, false), target(&w, &o.dst, dg, d.domid, true), flags));
        }
        w.d0.grant_copy_abi(&mut batch).unwrap();
        for (op, (src, dst, flags)) in batch.iter().zip(&plan) {
            let (so, dof, len) = (op.source.offset as usize, op.dest.offset as usize, op.len as usize);
            let legal = flags & !3 == 0 && so + len <= 4096 && dof + len <= 4096 && src.is_some() && dst.is_some();
            if op.status() == GrantStatus::Okay {
                prop_assert!(legal, "an illegal op succeeded: {op:?}");
                let (s, d) = (src.unwrap(), dst.unwrap());
                let bytes = shadow[s][so..so + len].to_vec();
                shadow[d][dof..dof + len].copy_from_slice(&bytes);
            } else {
                prop_assert!(!legal, "a legal op failed with {}: {op:?}", op.status());
            }
        }
        prop_assert!(snapshot(&w) == shadow, "memory differs from the model of the okay ops");
        for (r, _, _) in &w.grants[..5] {
            prop_assert_eq!(w.g.end_access(*r), Ok(()));
        }
        drop(w.xen);
    }
}
