//! Forwards a fixed number of batches of the bench workload (`benches/workload`): for
//! instruction counts that repeat exactly run to run, where timing on a shared machine does
//! not. Two runs with different `--steps` give instructions per frame as the difference:
//!
//! `valgrind --tool=cachegrind --cache-sim=no target/release/examples/forward_count --steps N`
//!
//! `--mode one` is `Bridge::forward` on the bench's goal case (64 B, 1024 MACs per side, batch
//! 32); `--mode guest` the guest-tx case through a MAC-locked vif.

use bridge_lite::Output;
use clap::Parser;

#[path = "../benches/workload/mod.rs"]
mod workload;

/// Forward a fixed number of batches.
#[derive(Parser, Debug)]
struct Args {
    /// Batches of 32 frames.
    #[arg(long, default_value_t = 100_000)]
    steps: usize,
    /// `one` (uplink to guests) or `guest` (a MAC-locked guest's transmit).
    #[arg(long, default_value = "one")]
    mode: String,
}

fn main() {
    let a = Args::parse();
    let mut w = match a.mode.as_str() {
        "guest" => workload::build_guest_tx(64, 1024, 32, workload::GuestTx::MacLock),
        _ => workload::build(64, 1024, 32),
    };
    let mut out = Output::new();
    let mut n = 0;
    for _ in 0..a.steps {
        n += w.step(&mut out);
    }
    println!("forwarded {n} frames");
}
