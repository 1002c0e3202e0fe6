//! `bench`: splitnet's command-line benchmarks.
//!
//! `cargo run --release -p bench -- <command>`; with no command it runs the main job. Until the
//! single-TCP-stream receive benchmark lands, the main job is the cross-thread ring benchmark.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

use bench::ringpair::{array_queue_round_trips, ring_round_trips};

#[derive(Parser, Debug)]
#[command(name = "bench", about = "splitnet benchmarks", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Cross-thread request/response throughput of a netif tx ring beside crossbeam's ArrayQueue.
    Ring {
        /// Round trips per run.
        #[arg(long, default_value_t = 1 << 22)]
        slots: u32,
        /// Requests per push (and responses per push).
        #[arg(long, default_value_t = 64)]
        burst: u32,
        /// Runs of each (interleaved); the best is reported.
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Ring {
        slots: 1 << 22,
        burst: 64,
        runs: 5,
    }) {
        Command::Ring { slots, burst, runs } => ring(slots, burst, runs),
    }
}

fn ring(slots: u32, burst: u32, runs: u32) {
    if burst == 0 || slots == 0 || runs == 0 {
        eprintln!("error: --slots, --burst and --runs must all be at least 1");
        std::process::exit(2);
    }
    println!(
        "netif tx ring (256 slots) vs crossbeam ArrayQueue (2 x 256), {slots} round trips, burst {burst}"
    );
    let (mut best_ring, mut best_aq, mut notifies) = (0f64, 0f64, 0);
    for run in 1..=runs {
        let r = ring_round_trips(slots, burst);
        let a = array_queue_round_trips(slots, burst);
        let (rr, ar) = (
            slots as f64 / r.elapsed.as_secs_f64(),
            slots as f64 / a.elapsed.as_secs_f64(),
        );
        println!(
            "  run {run}: ring {:>6.1} M slots/s ({} notifies)   ArrayQueue {:>6.1} M slots/s",
            rr / 1e6,
            r.notifies,
            ar / 1e6
        );
        if rr > best_ring {
            best_ring = rr;
            notifies = r.notifies;
        }
        best_aq = best_aq.max(ar);
    }
    println!(
        "best: ring {:.1} M slots/s, ArrayQueue {:.1} M slots/s, ratio {:.2}x; notifications per round trip {:.4}",
        best_ring / 1e6,
        best_aq / 1e6,
        best_ring / best_aq,
        notifies as f64 / slots as f64
    );
}
