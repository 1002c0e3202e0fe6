//! Property: a grant-copy batch gives every op exactly the status and the bytes that issuing
//! the same ops one hypercall each gives, whatever the mix: runs of ops on one grant or one
//! local page, alternating grants, two guests, read-only and ended grants, bad refs, bad
//! domains, bad offsets, batches of up to 70 ops. Afterwards no grant is left
//! pinned (every live grant can end) and no local page is left claimed (every page can be
//! borrowed).

use hypervisor::abi::*;
use hypervisor::*;
use proptest::prelude::*;
use xen_model::*;

const PAGES: u64 = 8;

/// One side of an op, from a small pool so that repeats and alternations are common.
#[derive(Debug, Clone, Copy)]
enum Side {
    /// Guest 1's grant `i`: 0..2 writable, 2 read-only, 3 ended.
    G1(usize),
    /// Guest 2's writable grant.
    G2,
    /// A ref beyond the table.
    BadRef,
    /// A domain that does not exist.
    BadDomain,
    /// One of dom0's pages (the last index is outside its reservation).
    Local(u64),
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![
        4 => (0usize..4).prop_map(Side::G1),
        1 => Just(Side::G2),
        1 => Just(Side::BadRef),
        1 => Just(Side::BadDomain),
        3 => (0u64..PAGES + 1).prop_map(Side::Local),
    ]
}

#[derive(Debug, Clone)]
struct Op {
    src: Side,
    dst: Side,
    /// Reuse the previous op's source / destination instead (runs on one target).
    same_src: bool,
    same_dst: bool,
    soff: u16,
    doff: u16,
    len: u16,
}

fn op() -> impl Strategy<Value = Op> {
    let off = prop_oneof![5 => 0u16..3000, 1 => 4000u16..4100];
    let len = prop_oneof![5 => 0u16..1100, 1 => 4000u16..4097];
    (
        side(),
        side(),
        proptest::bool::weighted(0.4),
        proptest::bool::weighted(0.4),
        off.clone(),
        off,
        len,
    )
        .prop_map(|(src, dst, same_src, same_dst, soff, doff, len)| Op {
            src,
            dst,
            same_src,
            same_dst,
            soff,
            doff,
            len,
        })
}

struct World {
    _xen: Hypervisor,
    d0: DomainHandle,
    g1: DomainHandle,
    g2: DomainHandle,
    /// Guest 1's grants (0, 1 rw; 2 ro; 3 ended) and guest 2's.
    g1_refs: [GrantRef; 4],
    g2_ref: GrantRef,
}

/// The same world every time: allocation in the model is deterministic.
fn world() -> World {
    let xen = Hypervisor::new(512).unwrap();
    let d0 = xen.create_domain_with_id(0, PAGES).unwrap();
    let g1 = xen.create_domain_with_id(1, PAGES).unwrap();
    let g2 = xen.create_domain_with_id(2, PAGES).unwrap();
    for (d, seed) in [(&d0, 0x10u8), (&g1, 0x40), (&g2, 0x80)] {
        for i in 0..PAGES {
            let p = d.alloc_page().unwrap();
            let bytes: Vec<u8> = (0..4096u32)
                .map(|b| seed.wrapping_add(i as u8).wrapping_add(b as u8))
                .collect();
            d.write(p, 0, &bytes).unwrap();
        }
    }
    let g1_refs = [
        g1.grant_access(0, Pfn(0), false).unwrap(),
        g1.grant_access(0, Pfn(1), false).unwrap(),
        g1.grant_access(0, Pfn(2), true).unwrap(),
        g1.grant_access(0, Pfn(3), false).unwrap(),
    ];
    g1.end_access(g1_refs[3]).unwrap();
    let g2_ref = g2.grant_access(0, Pfn(0), false).unwrap();
    World {
        _xen: xen,
        d0,
        g1,
        g2,
        g1_refs,
        g2_ref,
    }
}

fn ptr(w: &World, s: Side, off: u16) -> (GnttabCopyPtr, bool) {
    match s {
        Side::G1(i) => (GnttabCopyPtr::gref(1, w.g1_refs[i], off), true),
        Side::G2 => (GnttabCopyPtr::gref(2, w.g2_ref, off), true),
        Side::BadRef => (GnttabCopyPtr::gref(1, GrantRef(1 << 20), off), true),
        Side::BadDomain => (GnttabCopyPtr::gref(77, w.g1_refs[0], off), true),
        Side::Local(p) => (GnttabCopyPtr::local(Pfn(p), off), false),
    }
}

fn batch(w: &World, ops: &[Op]) -> Vec<GnttabCopy> {
    let (mut src, mut dst) = (Side::Local(0), Side::G1(0));
    ops.iter()
        .map(|o| {
            if !o.same_src {
                src = o.src;
            }
            if !o.same_dst {
                dst = o.dst;
            }
            let (s, sg) = ptr(w, src, o.soff);
            let (d, dg) = ptr(w, dst, o.doff);
            GnttabCopy::with_flags(s, d, o.len, (sg as u16) | ((dg as u16) << 1))
        })
        .collect()
}

fn memory(w: &World) -> Vec<Vec<u8>> {
    let mut out = vec![];
    for d in [&w.d0, &w.g1, &w.g2] {
        for p in 0..PAGES {
            let mut b = vec![0; 4096];
            d.read(Pfn(p), 0, &mut b).unwrap();
            out.push(b);
        }
    }
    out
}

/// Every live grant ends (nothing pinned) and every dom0 page can be borrowed (no local claim
/// left).
fn assert_released(w: &World) -> Result<(), TestCaseError> {
    for p in 0..PAGES {
        prop_assert!(
            w.d0.borrow_page(Pfn(p)).is_ok(),
            "dom0 page {p} still claimed"
        );
    }
    for r in &w.g1_refs[..3] {
        prop_assert_eq!(w.g1.end_access(*r), Ok(()));
    }
    prop_assert_eq!(w.g2.end_access(w.g2_ref), Ok(()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_batch_matches_one_hypercall_per_op(ops in proptest::collection::vec(op(), 1..70)) {
        let (a, b) = (world(), world());
        let mut batched = batch(&a, &ops);
        a.d0.grant_copy_abi(&mut batched).unwrap();
        let mut single = batch(&b, &ops);
        for op in single.chunks_mut(1) {
            b.d0.grant_copy_abi(op).unwrap();
        }
        for (i, (x, y)) in batched.iter().zip(&single).enumerate() {
            prop_assert_eq!(x.status(), y.status(), "op {}: {:?}", i, x);
        }
        prop_assert!(memory(&a) == memory(&b), "memory differs between batch and op by op");
        assert_released(&a)?;
        assert_released(&b)?;
    }
}
