//! Prints one measured forwarding rate for scripts (`bridge_lite_mpps=`: median of 5 rounds;
//! `bridge_lite_best_mpps=`: fastest round, which bench/scripts/linux-bridge.sh compares with
//! the Linux bridge's fastest round), with the in-run naive-switch baseline beside it.
//!
//! `cargo run --release -p bridge-lite --example forward_rate -- --macs 1024 --batch 32`

use std::time::Duration;

use bridge_lite::Output;
use clap::Parser;

#[path = "../benches/workload/mod.rs"]
mod workload;

/// Measure bridge-lite's single-core forwarding rate.
#[derive(Parser, Debug)]
struct Args {
    /// Frame size on the wire (64 means a 60-byte buffer plus FCS).
    #[arg(long, default_value_t = 64)]
    frame_len: usize,
    /// Stations learned on each side (guests behind 8 vifs, remotes behind the uplink).
    #[arg(long, default_value_t = 1024)]
    macs: usize,
    /// Frames per forward() call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Measuring time in seconds (split into 5 rounds; the median and the best round are
    /// reported).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
}

fn main() {
    let a = Args::parse();
    if a.frame_len < 60 || a.macs == 0 || a.batch == 0 || a.seconds.is_nan() || a.seconds <= 0.0 {
        eprintln!("frame-len must be >= 60 and macs, batch, seconds positive");
        std::process::exit(2);
    }
    let total = Duration::from_secs_f64(a.seconds);
    let mut w = workload::build(a.frame_len, a.macs, a.batch);
    let mut out = Output::new();
    let lite = workload::measure_mpps(|| w.step(&mut out), a.batch, total, 5);
    let mut n = workload::build_naive(a.frame_len, a.macs, a.batch);
    let naive = workload::measure_mpps(|| n.step(), a.batch, total, 5);
    println!(
        "case: {}B frames, {} MACs per side, batch {}, one thread",
        a.frame_len, a.macs, a.batch
    );
    println!("bridge_lite_mpps={:.2}", lite.median);
    println!("bridge_lite_best_mpps={:.2}", lite.best);
    println!("naive_hashmap_mpps={:.2}", naive.median);
    println!("ratio_vs_naive={:.2}", lite.median / naive.median);
}
