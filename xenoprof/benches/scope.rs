//! Cost of entering and leaving a profiling scope, against a bare loop measured in the same run.
//!
//! Each iteration does one unit of trivial work (`black_box` add); the probed variants wrap it in
//! a scope. Printed at the end: ns per iteration (median of criterion's samples) and the extra
//! ns per enter+leave over the bare loop, plus the ratio to the bare loop.
//!
//! - `bare`: the work alone (baseline).
//! - `unit_probe`: generic over `P: Probe` with `P = ()`: must equal `bare` (compiled away).
//! - `off`: the real hooks with `Mode::Off`: one relaxed load and a branch per transition.
//! - `sampled`: `Mode::Sampled`: publishes the thread's tag on each transition.
//! - `exact`: `Mode::Exact`: two TSC reads and counter updates per enter+leave.
//! - `exact_hypercall`: as `exact`, switching context to xen and back.
//! - `tsc_pair`: two bare TSC reads, the floor under any exact-mode enter+leave.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Criterion;
use xenoprof::{Class, Context, Hooks, Mode, Probe};

static RESULTS: Mutex<BTreeMap<&'static str, Vec<f64>>> = Mutex::new(BTreeMap::new());

#[inline(never)]
fn run<P: Probe>(p: P, iters: u64) -> Duration {
    let mut x = 0u64;
    let t = Instant::now();
    for _ in 0..iters {
        let _g = p.scope(Class::BRIDGE);
        x = black_box(x).wrapping_add(1);
    }
    black_box(x);
    t.elapsed()
}

#[inline(never)]
fn run_hypercall<P: Probe>(p: P, iters: u64) -> Duration {
    let mut x = 0u64;
    let t = Instant::now();
    for _ in 0..iters {
        let _g = p.hypercall(Class::GRANT_TABLE);
        x = black_box(x).wrapping_add(1);
    }
    black_box(x);
    t.elapsed()
}

#[inline(never)]
fn run_bare(iters: u64) -> Duration {
    let mut x = 0u64;
    let t = Instant::now();
    for _ in 0..iters {
        x = black_box(x).wrapping_add(1);
    }
    black_box(x);
    t.elapsed()
}

/// The floor under exact mode: the two TSC reads every enter+leave needs.
#[inline(never)]
fn run_tsc_pair(iters: u64) -> Duration {
    let mut x = 0u64;
    let t = Instant::now();
    for _ in 0..iters {
        x = black_box(x).wrapping_add(xenoprof::tsc());
        x = x.wrapping_add(xenoprof::tsc());
    }
    black_box(x);
    t.elapsed()
}

fn record(name: &'static str, iters: u64, d: Duration) -> Duration {
    let ns = d.as_nanos() as f64 / iters.max(1) as f64;
    RESULTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name)
        .or_default()
        .push(ns);
    d
}

fn benches(c: &mut Criterion) {
    xenoprof::register_vcpu(0, Context::Kernel);
    let mut g = c.benchmark_group("scope_enter_leave");
    g.bench_function("bare", |b| {
        b.iter_custom(|n| record("bare", n, run_bare(n)))
    });
    g.bench_function("unit_probe", |b| {
        b.iter_custom(|n| record("unit_probe", n, run((), n)))
    });
    xenoprof::set_mode(Mode::Off);
    g.bench_function("off", |b| {
        b.iter_custom(|n| record("off", n, run(Hooks, n)))
    });
    xenoprof::set_mode(Mode::Sampled);
    g.bench_function("sampled", |b| {
        b.iter_custom(|n| record("sampled", n, run(Hooks, n)))
    });
    xenoprof::set_mode(Mode::Exact);
    g.bench_function("exact", |b| {
        b.iter_custom(|n| record("exact", n, run(Hooks, n)))
    });
    g.bench_function("exact_hypercall", |b| {
        b.iter_custom(|n| record("exact_hypercall", n, run_hypercall(Hooks, n)))
    });
    g.bench_function("tsc_pair", |b| {
        b.iter_custom(|n| record("tsc_pair", n, run_tsc_pair(n)))
    });
    xenoprof::set_mode(Mode::Off);
    g.finish();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
        .configure_from_args();
    benches(&mut c);
    c.final_summary();

    let mut r = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bare) = r.get_mut("bare").map(|v| median(v)) else {
        return;
    };
    println!("\nscope enter+leave, ns per iteration (baseline: bare loop, same run)");
    println!("median over criterion's samples; min = least disturbed sample (shared machine)");
    println!(
        "{:<16} {:>10} {:>10} {:>14} {:>10}",
        "variant", "median", "min", "median - bare", "x bare"
    );
    for name in [
        "bare",
        "unit_probe",
        "off",
        "sampled",
        "exact",
        "exact_hypercall",
        "tsc_pair",
    ] {
        if let Some(v) = r.get_mut(name) {
            let m = median(v);
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "{name:<16} {m:>10.2} {min:>10.2} {:>14.2} {:>10.2}",
                m - bare,
                m / bare
            );
        }
    }
    println!("goal: exact enter+leave <= 15 ns over bare; unit_probe == bare");
}
