//! Internet checksum throughput beside the plain 16-bit-word loop, in the same run.
//!
//! `cargo bench -p offload --bench csum`. After criterion's groups it prints a summary: for
//! 1500 B and 64 KiB, the median GB/s of each over interleaved samples, the spread (min..max),
//! and the ratio of the medians.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group};
use offload::csum::{checksum, naive_checksum};

const SIZES: [usize; 2] = [1500, 65_536];

fn data(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect()
}

fn groups(c: &mut Criterion) {
    for n in SIZES {
        let d = data(n);
        let mut g = c.benchmark_group(format!("csum/{n}"));
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function("offload", |b| b.iter(|| checksum(black_box(&d))));
        g.bench_function("naive_u16", |b| b.iter(|| naive_checksum(black_box(&d))));
        g.finish();
    }
}

/// GB/s of one sample: enough repetitions for about a millisecond.
fn sample(d: &[u8], f: fn(&[u8]) -> u16) -> f64 {
    let reps = (1 << 20) / d.len() + 1;
    let t = Instant::now();
    for _ in 0..reps {
        black_box(f(black_box(d)));
    }
    (reps * d.len()) as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summary() {
    println!("\nchecksum summary (GB/s, median of 101 interleaved samples, spread min..max)");
    for n in SIZES {
        let d = data(n);
        assert_eq!(checksum(&d), naive_checksum(&d));
        let (mut fast, mut slow) = (Vec::new(), Vec::new());
        for _ in 0..101 {
            fast.push(sample(&d, checksum));
            slow.push(sample(&d, naive_checksum));
        }
        let (mf, ms) = (median(&mut fast), median(&mut slow));
        println!(
            "  {n:>6} B: offload {mf:6.2} ({:.2}..{:.2})  naive_u16 {ms:6.2} ({:.2}..{:.2})  \
             ratio {:.2}x",
            fast[0],
            fast[fast.len() - 1],
            slow[0],
            slow[slow.len() - 1],
            mf / ms
        );
    }
}

criterion_group!(benches, groups);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
