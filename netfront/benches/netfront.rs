//! Frontend data-path throughput in loopback through the test backend (tests/common): a batch
//! of frames goes out through `TxToken::consume` (tx grants), the backend grant-copies them in
//! and delivers them back into the rx ring (grant copy, or page transfer in flip mode), and the
//! frontend hands them to `RxToken::consume`.
//!
//! Cases: 1514-byte frames in copy and flip mode, 9014-byte frames (3 slots) in copy mode, batch
//! 64. After criterion's cases the 1514-byte case is measured again in both modes back to back
//! and the ratio copy / flip is printed (flip is the baseline the issue keeps).
//!
//! The backend is a test double on its own thread, so the figure includes its cost and the
//! cross-thread wakeups; compare modes, not absolute numbers.
//!
//! Run: `cargo bench -p netfront --bench netfront`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Opts, Route, TestBackend, frame, machine};
use criterion::{BenchmarkId, Criterion, Throughput};
use netfront::{FrontConfig, Netfront, RxMode};
use smoltcp::phy::{Device, RxToken, TxToken};
use xen_model::{DomainHandle, Hypervisor};

const T0: smoltcp::time::Instant = smoltcp::time::Instant::ZERO;
const BATCH: usize = 64;

struct Setup {
    _xen: Hypervisor,
    be: Option<TestBackend>,
    nf: Option<Netfront<DomainHandle>>,
    frames: Vec<Vec<u8>>,
}

impl Setup {
    fn new(mode: RxMode, len: usize) -> Self {
        let (xen, dom0, g) = machine(1);
        let opts = Opts {
            route: Route::Loopback,
            ..Opts::default()
        };
        let be = TestBackend::start(&xen, dom0, &[(g[0].domid(), 0)], opts);
        let cfg = FrontConfig {
            rx_mode: mode,
            mtu: len.max(1514) - 14,
            ..FrontConfig::default()
        };
        let nf = Netfront::connect(g[0].clone(), 0, cfg).expect("connect");
        let frames = (0..BATCH).map(|i| frame(len, i as u8)).collect();
        Self {
            _xen: xen,
            be: Some(be),
            nf: Some(nf),
            frames,
        }
    }

    /// Sends the batch and receives it back; returns the bytes received.
    fn round(&mut self) -> usize {
        let nf = self.nf.as_mut().expect("connected");
        let mut sent = 0;
        let mut got = 0;
        let mut bytes = 0;
        let mut idle = 0u32;
        while got < BATCH {
            let mut progress = false;
            while sent < BATCH {
                let Some(tok) = nf.transmit(T0) else { break };
                let f = &self.frames[sent];
                tok.consume(f.len(), |b| b.copy_from_slice(f));
                sent += 1;
                progress = true;
            }
            while let Some((rx, _)) = nf.receive(T0) {
                bytes += rx.consume(|b| b.len());
                got += 1;
                progress = true;
            }
            progress |= nf.poll().expect("poll");
            if !progress {
                idle += 1;
                assert!(idle < 10_000, "loopback stalled");
                nf.wait(Some(Duration::from_millis(1))).expect("wait");
            }
        }
        bytes
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(nf) = self.nf.take() {
            nf.close().expect("close");
        }
        if let Some(be) = self.be.take() {
            be.stop();
        }
    }
}

fn loopback(c: &mut Criterion) {
    let mut g = c.benchmark_group("netfront_loopback");
    for (mode, len) in [
        (RxMode::Copy, 1514),
        (RxMode::Flip, 1514),
        (RxMode::Copy, 9014),
    ] {
        let mut s = Setup::new(mode, len);
        g.throughput(Throughput::Bytes((BATCH * len) as u64));
        g.bench_function(BenchmarkId::new(format!("{mode:?}"), len), |b| {
            b.iter(|| s.round())
        });
    }
    g.finish();
}

/// Median Gbit/s of `rounds` timed rounds of about `per` each.
fn measure(mode: RxMode, len: usize, per: Duration, rounds: usize) -> f64 {
    let mut s = Setup::new(mode, len);
    for _ in 0..20 {
        s.round();
    }
    let mut v = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let mut bytes = 0usize;
        while t.elapsed() < per {
            bytes += s.round();
        }
        v.push(bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9);
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10);
    loopback(&mut c);
    c.final_summary();

    // `cargo test --all-targets` runs this binary without `--bench`: criterion then only checks
    // each case once, and the timed comparison below is skipped.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // Copy mode beside its flip baseline, interleaved rounds in this run.
    let per = Duration::from_millis(300);
    let (mut copy, mut flip) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        copy.push(measure(RxMode::Copy, 1514, per, 3));
        flip.push(measure(RxMode::Flip, 1514, per, 3));
    }
    copy.sort_by(f64::total_cmp);
    flip.sort_by(f64::total_cmp);
    let (c, f) = (copy[1], flip[1]);
    println!(
        "netfront loopback 1514 B, batch {BATCH}: copy {c:.2} Gbit/s, flip (baseline) {f:.2} Gbit/s; \
         ratio copy/flip {:.2}x",
        c / f
    );
}
