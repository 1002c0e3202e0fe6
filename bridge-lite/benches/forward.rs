//! Forwarding rate of bridge-lite in Mpps (criterion `Throughput::Elements` = frames).
//!
//! Cases: 64- and 1514-byte frames; 1, 64 and 1024 learned stations per side; batch 1 and 32.
//! `guest_tx/...`: one guest's 64-byte frames through its MAC-locked vif port to 1024 remote
//! stations, without and with an IP lock (IPv4 and IPv6 frames), batch 32.
//! After criterion's cases, the goal case (64 B, 1024 MACs, batch 32) is measured again beside
//! the in-run baseline, a naive `HashMap` learning switch, and the ratio is printed.
//! Last, two forwarding threads on one bridge (shared MAC table, each its own ingress port:
//! uplink -> guests and vif 1 -> remotes), each direction alone and both at once: the
//! aggregate rate against one thread's.
//!
//! Run: `cargo bench -p bridge-lite --bench forward`

use std::time::Duration;

use bridge_lite::Output;
use criterion::{BenchmarkId, Criterion, Throughput};

#[path = "workload/mod.rs"]
mod workload;

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward");
    for wire_len in [64usize, 1514] {
        for macs in [1usize, 64, 1024] {
            for batch in [1usize, 32] {
                let mut w = workload::build(wire_len, macs, batch);
                let mut out = Output::new();
                g.throughput(Throughput::Elements(batch as u64));
                g.bench_function(
                    BenchmarkId::from_parameter(format!("{wire_len}B/{macs}mac/batch{batch}")),
                    |b| b.iter(|| w.step(&mut out)),
                );
            }
        }
    }
    for lock in [
        workload::GuestTx::MacLock,
        workload::GuestTx::IpLockV4,
        workload::GuestTx::IpLockV6,
    ] {
        let mut w = workload::build_guest_tx(64, 1024, 32, lock);
        let mut out = Output::new();
        assert_eq!(w.step(&mut out), 32, "every frame passes the lock");
        g.throughput(Throughput::Elements(32));
        g.bench_function(format!("guest_tx/64B/1024mac/batch32/{lock:?}"), |b| {
            b.iter(|| w.step(&mut out))
        });
    }
    let mut n = workload::build_naive(64, 1024, 32);
    g.throughput(Throughput::Elements(32));
    g.bench_function("baseline_hashmap/64B/1024mac/batch32", |b| {
        b.iter(|| n.step())
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    forward(&mut c);
    c.final_summary();

    // The goal case beside its baseline, measured back to back in this run.
    let mut w = workload::build(64, 1024, 32);
    let mut out = Output::new();
    let lite = workload::measure_mpps(|| w.step(&mut out), 32, Duration::from_secs(1), 5);
    let mut n = workload::build_naive(64, 1024, 32);
    let naive = workload::measure_mpps(|| n.step(), 32, Duration::from_secs(1), 5);
    println!(
        "bridge-lite 64B/1024mac/batch32: {:.1} Mpps (best round {:.1}); naive HashMap switch: \
         {:.1} Mpps; ratio {:.2}x (goal: >= 30 Mpps)",
        lite.median,
        lite.best,
        naive.median,
        lite.median / naive.median
    );

    // The IP lock's cost: the same guest traffic through its port without and with it, the
    // three measured in turn each round so that other load on the machine hits them alike.
    let mut cases = [
        workload::GuestTx::MacLock,
        workload::GuestTx::IpLockV4,
        workload::GuestTx::IpLockV6,
    ]
    .map(|lock| (workload::build_guest_tx(64, 1024, 32, lock), Output::new()));
    let rounds = 9;
    let rates: Vec<[f64; 3]> = (0..rounds)
        .map(|_| {
            let mut round = [0.0; 3];
            for (rate, (w, out)) in round.iter_mut().zip(cases.iter_mut()) {
                let r = workload::measure_mpps(|| w.step(out), 32, Duration::from_millis(200), 1);
                *rate = r.median;
            }
            round
        })
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rate = |i: usize| median(rates.iter().map(|r| r[i]).collect());
    let ratio = |i: usize| median(rates.iter().map(|r| r[i] / r[0]).collect());
    let (mac, v4, v6) = (rate(0), rate(1), rate(2));
    println!(
        "guest tx 64B/1024mac/batch32, median of {rounds} interleaved rounds: MAC lock {mac:.1} \
         Mpps; with IP lock, IPv4 {v4:.1} Mpps ({:.2}x), IPv6 {v6:.1} Mpps ({:.2}x)",
        ratio(1),
        ratio(2)
    );

    // Two forwarders on one bridge, each on its own thread and ingress port.
    let (_w, mut down, mut up) = workload::build_two_streams(64, 1024, 32);
    let (mut o1, mut o2) = (Output::new(), Output::new());
    let secs = Duration::from_secs(2);
    let alone_down = workload::measure_mpps(|| down.step(&mut o1), 32, secs, 5);
    let alone_up = workload::measure_mpps(|| up.step(&mut o2), 32, secs, 5);
    let (both_down, both_up) = std::thread::scope(|s| {
        let h = s.spawn(|| workload::measure_mpps(|| down.step(&mut o1), 32, secs, 5));
        let u = workload::measure_mpps(|| up.step(&mut o2), 32, secs, 5);
        (h.join().expect("forwarding thread"), u)
    });
    let one = (alone_down.median + alone_up.median) / 2.0;
    let two = both_down.median + both_up.median;
    println!(
        "two forwarders, 64B/1024mac/batch32, shared table: alone uplink->guests {:.1} Mpps, \
         vif1->remotes {:.1} Mpps; at once {:.1} + {:.1} = {two:.1} Mpps aggregate, {:.2}x \
         one thread (mean of the two alone, {one:.1})",
        alone_down.median,
        alone_up.median,
        both_down.median,
        both_up.median,
        two / one
    );
    // The control: the same two streams on two separate bridges (nothing shared at all),
    // alternated with the shared case. Their ratio is what sharing costs, whatever else the
    // machine is running (both suffer alike when a core is busy elsewhere).
    let (_w2, mut down2, _) = workload::build_two_streams(64, 1024, 32);
    let (_w3, _, mut up3) = workload::build_two_streams(64, 1024, 32);
    let secs = Duration::from_millis(600);
    let pair = |a: &mut workload::Stream, b: &mut workload::Stream| {
        let (mut o1, mut o2) = (Output::new(), Output::new());
        std::thread::scope(|s| {
            let h = s.spawn(|| workload::measure_mpps(|| a.step(&mut o1), 32, secs, 3).median);
            let u = workload::measure_mpps(|| b.step(&mut o2), 32, secs, 3).median;
            h.join().expect("forwarding thread") + u
        })
    };
    let rounds: Vec<(f64, f64)> = (0..5)
        .map(|_| (pair(&mut down, &mut up), pair(&mut down2, &mut up3)))
        .collect();
    let mut ratios: Vec<f64> = rounds.iter().map(|(s, p)| s / p).collect();
    ratios.sort_by(f64::total_cmp);
    let mean = |f: fn(&(f64, f64)) -> f64| rounds.iter().map(f).sum::<f64>() / 5.0;
    println!(
        "two threads, shared table vs two separate bridges, 5 interleaved rounds: {:.1} vs \
         {:.1} Mpps aggregate (mean); shared/separate median {:.2}x",
        mean(|r| r.0),
        mean(|r| r.1),
        ratios[2]
    );
}
