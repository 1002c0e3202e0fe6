//! Grant copy against memcpy, batched against single-op calls, and page flip against copy.
//!
//! Besides criterion's own reports, each comparison prints a ratio measured in the same run:
//! the two sides run interleaved, in rounds, and the median time per call of each is compared.
//! Profiling hooks are off (xenoprof's default), as in a production build.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hypervisor::abi::*;
use hypervisor::*;
use xen_model::*;

const BATCH: usize = 64;

#[repr(C, align(4096))]
#[derive(Clone)]
struct Page([u8; PAGE_SIZE]);

struct Setup {
    xen: Hypervisor,
    d0: DomainHandle,
    g: DomainHandle,
    src: Vec<Pfn>,
    rx: Vec<GrantRef>,
    rx_pfn: Vec<Pfn>,
}

fn setup() -> Setup {
    let xen = Hypervisor::new(4096).expect("machine");
    let d0 = xen.create_domain_with_id(0, 512).expect("dom0");
    let g = xen.create_domain_with_id(1, 512).expect("guest");
    let src: Vec<Pfn> = (0..BATCH)
        .map(|i| {
            let p = d0.alloc_page().expect("page");
            d0.write(p, 0, &[i as u8 ^ 0x5A; PAGE_SIZE]).expect("fill");
            p
        })
        .collect();
    let rx_pfn: Vec<Pfn> = (0..BATCH).map(|_| g.alloc_page().expect("page")).collect();
    let rx = rx_pfn
        .iter()
        .map(|p| g.grant_access(0, *p, false).expect("grant"))
        .collect();
    Setup {
        xen,
        d0,
        g,
        src,
        rx,
        rx_pfn,
    }
}

fn copy_ops(s: &Setup, len: u16, doff: u16) -> Vec<GnttabCopy> {
    (0..BATCH)
        .map(|i| {
            GnttabCopy::new(
                GnttabCopyPtr::local(s.src[i], 0),
                GnttabCopyPtr::gref(1, s.rx[i], doff),
                len,
            )
        })
        .collect()
}

/// Median ns per call of `a` and `b`, run interleaved in rounds.
fn compare(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    const ROUNDS: usize = 41;
    let time = |f: &mut dyn FnMut(), n: u32| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    // Calibrate to ~2 ms per round per side.
    let once = time(&mut a, 3).max(time(&mut b, 3)).max(1.0);
    let n = ((2e6 / once) as u32).clamp(1, 100_000);
    let (mut ta, mut tb) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        ta.push(time(&mut a, n));
        tb.push(time(&mut b, n));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (med(&mut ta), med(&mut tb))
}

fn gbps(bytes: usize, ns: f64) -> f64 {
    bytes as f64 / ns
}

fn bench_copy_vs_memcpy(c: &mut Criterion) {
    let s = setup();
    eprintln!("copy engine: {}", engine_name());
    let mut grp = c.benchmark_group("grant_copy_vs_memcpy");
    for len in [1500u16, 4096] {
        for doff in [0u16, 2] {
            let len_eff = len.min(PAGE_SIZE as u16 - doff);
            let bytes = BATCH * len_eff as usize;
            let label = format!("{len_eff}B_dst_off{doff}");
            let mut ops = copy_ops(&s, len_eff, doff);
            let srcb = vec![Page([0x5A; PAGE_SIZE]); BATCH];
            let mut dstb = vec![Page([0; PAGE_SIZE]); BATCH];
            let (l, o) = (len_eff as usize, doff as usize);
            let frames: Vec<(Mfn, Mfn)> = (0..BATCH)
                .map(|i| {
                    (
                        s.d0.pfn_to_mfn(s.src[i]).expect("mfn"),
                        s.g.pfn_to_mfn(s.rx_pfn[i]).expect("mfn"),
                    )
                })
                .collect();
            let mut grant = || {
                s.d0.grant_copy_abi(black_box(&mut ops)).expect("copy");
                debug_assert!(ops.iter().all(|op| op.status() == GrantStatus::Okay));
            };
            // Baseline 1: glibc memcpy between the same frame numbers and offsets of a private
            // twin of machine memory (memfd pages like the frames; memcpy is not an atomic copy,
            // so it may not touch the real frames), no grant work; with `engine`, the copy
            // engine between the very same frames (direct map).
            let memcpy_frames = |engine: bool| {
                for &(sm, dm) in &frames {
                    assert!(
                        s.xen
                            .copy_frames_baseline(engine, dm, o, sm, 0, black_box(l))
                    );
                }
            };
            // Baseline 2: glibc memcpy between heap pages (transparent huge pages, no memfd).
            let mut memcpy_heap = || {
                for (d, sp) in dstb.iter_mut().zip(srcb.iter()) {
                    d.0[o..o + l].copy_from_slice(black_box(&sp.0[..l]));
                }
                black_box(&mut dstb);
            };
            let (tg, tm) = compare(&mut grant, || memcpy_frames(false));
            let (tg2, te) = compare(&mut grant, || memcpy_frames(true));
            let (tg3, th) = compare(&mut grant, &mut memcpy_heap);
            eprintln!(
                "RATIO grant_copy {label} batch {BATCH}: {:.1} GB/s = {:.0}% of memcpy on twin frames ({:.1} GB/s); \
                 engine alone {:.1} GB/s (grant copy {:.0}% of it); heap memcpy {:.1} GB/s (grant copy {:.0}% of it)",
                gbps(bytes, tg),
                100.0 * tm / tg,
                gbps(bytes, tm),
                gbps(bytes, te),
                100.0 * te / tg2,
                gbps(bytes, th),
                100.0 * th / tg3,
            );
            let mut memcpy = || memcpy_frames(false);
            grp.throughput(Throughput::Bytes(bytes as u64));
            grp.bench_function(format!("grant_copy/{label}"), |b| b.iter(&mut grant));
            grp.bench_function(format!("memcpy_twin_frames/{label}"), |b| {
                b.iter(&mut memcpy)
            });
            grp.bench_function(format!("memcpy_heap/{label}"), |b| b.iter(&mut memcpy_heap));
        }
    }
    grp.finish();
    check_all_ok(&s);
}

fn check_all_ok(s: &Setup) {
    let mut ops = copy_ops(s, 1500, 2);
    s.d0.grant_copy_abi(&mut ops).expect("copy");
    assert!(
        ops.iter().all(|op| op.status() == GrantStatus::Okay),
        "bench ops must succeed"
    );
    let mut b = [0u8; 4];
    s.g.read(s.rx_pfn[3], 2, &mut b).expect("read");
    assert_eq!(b, [3 ^ 0x5A; 4]);
}

fn bench_batched_vs_single(c: &mut Criterion) {
    let s = setup();
    let mut grp = c.benchmark_group("batched_vs_single");
    let mut ops = copy_ops(&s, 1500, 2);
    let mut batched = || s.d0.grant_copy_abi(black_box(&mut ops)).expect("copy");
    let mut ops1 = copy_ops(&s, 1500, 2);
    let mut single = || {
        for op in ops1.chunks_mut(1) {
            s.d0.grant_copy_abi(black_box(op)).expect("copy");
        }
    };
    let (tb, ts) = compare(&mut batched, &mut single);
    eprintln!(
        "RATIO 64 x 1500B: one batch {:.0} ns ({:.1} ns/op) vs 64 single calls {:.0} ns ({:.1} ns/op): \
         per-call overhead {:.1} ns, single/batched = {:.2}x",
        tb,
        tb / BATCH as f64,
        ts,
        ts / BATCH as f64,
        (ts - tb) / (BATCH - 1) as f64,
        ts / tb
    );
    // A 64-op batch where each grant takes four consecutive 1000-byte ops (a packet split at
    // page boundaries): the grant stays pinned across them.
    let mut shared: Vec<GnttabCopy> = (0..BATCH)
        .map(|i| {
            GnttabCopy::new(
                GnttabCopyPtr::local(s.src[i], 0),
                GnttabCopyPtr::gref(1, s.rx[i / 4], (i % 4) as u16 * 1000),
                1000,
            )
        })
        .collect();
    let mut distinct = copy_ops(&s, 1000, 0);
    let (tsh, tdi) = compare(
        || s.d0.grant_copy_abi(black_box(&mut shared)).expect("copy"),
        || s.d0.grant_copy_abi(black_box(&mut distinct)).expect("copy"),
    );
    eprintln!(
        "RATIO 64 x 1000B: 4 consecutive ops per grant {:.1} ns/op vs a grant per op {:.1} ns/op",
        tsh / BATCH as f64,
        tdi / BATCH as f64
    );
    grp.throughput(Throughput::Elements(BATCH as u64));
    grp.bench_function("one_batch_of_64", |b| b.iter(&mut batched));
    grp.bench_function("64_single_calls", |b| b.iter(&mut single));
    grp.finish();
}

fn bench_flip_vs_copy(c: &mut Criterion) {
    let s = setup();
    let give = s.d0.alloc_page().expect("page");
    let accept_pfn = s.g.alloc_page().expect("page");
    let copy_pfn = s.g.alloc_page().expect("page");
    let (mut first, mut first_c) = ([0u8; 64], [0u8; 64]);
    // Per packet, end to end: the guest posts a buffer, the backend moves the data, the guest
    // takes the buffer back and reads the start of the packet.
    let mut flip = || {
        let r = s.g.grant_accept_transfer(0, accept_pfn).expect("accept");
        let mut op = [GnttabTransfer::new(give, 1, r)];
        s.d0.grant_transfer_abi(&mut op).expect("transfer");
        debug_assert_eq!(op[0].status(), GrantStatus::Okay);
        s.g.end_transfer(r).expect("end");
        s.g.read(accept_pfn, 0, &mut first).expect("read");
    };
    let mut copy = |len: u16| {
        let r = s.g.grant_access(0, copy_pfn, false).expect("grant");
        let mut op = [GnttabCopy::new(
            GnttabCopyPtr::local(s.src[0], 0),
            GnttabCopyPtr::gref(1, r, 2),
            len,
        )];
        s.d0.grant_copy_abi(&mut op).expect("copy");
        s.g.end_access(r).expect("end");
        s.g.read(copy_pfn, 2, &mut first_c).expect("read");
    };
    flip();
    let (tf, t1500) = compare(&mut flip, || copy(1500));
    let (tf2, t4096) = compare(&mut flip, || copy(4094));
    eprintln!(
        "RATIO per packet (guest post + hypercall + guest end + read): flip {:.0} ns vs copy 1500B {:.0} ns = {:.1}x; \
         flip {:.0} ns vs copy 4094B {:.0} ns = {:.1}x",
        tf,
        t1500,
        tf / t1500,
        tf2,
        t4096,
        tf2 / t4096
    );
    // Hypercall only: the transfer call against the copy call, setup untimed.
    let hyper_flip = |iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let r = s.g.grant_accept_transfer(0, accept_pfn).expect("accept");
            let mut op = [GnttabTransfer::new(give, 1, r)];
            let t = Instant::now();
            s.d0.grant_transfer_abi(black_box(&mut op))
                .expect("transfer");
            total += t.elapsed();
            s.g.end_transfer(r).expect("end");
        }
        total
    };
    let r = s.g.grant_access(0, copy_pfn, false).expect("grant");
    let mut grp = c.benchmark_group("flip_vs_copy");
    grp.throughput(Throughput::Elements(1));
    grp.bench_function("per_packet/flip", |b| b.iter(&mut flip));
    grp.bench_function("per_packet/copy_1500B", |b| b.iter(|| copy(1500)));
    grp.bench_function("hypercall/transfer_1_page", |b| b.iter_custom(hyper_flip));
    for len in [1500u16, 4094] {
        let mut op = [GnttabCopy::new(
            GnttabCopyPtr::local(s.src[0], 0),
            GnttabCopyPtr::gref(1, r, 2),
            len,
        )];
        grp.bench_function(format!("hypercall/copy_{len}B"), |b| {
            b.iter(|| s.d0.grant_copy_abi(black_box(&mut op)).expect("copy"))
        });
    }
    grp.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_copy_vs_memcpy, bench_batched_vs_single, bench_flip_vs_copy
}
criterion_main!(benches);
