//! `bench`: splitnet's command-line benchmarks.
//!
//! `cargo run --release -p bench -- <command>`:
//! - `tcp-rx`: the single-TCP-stream receive benchmark over a link (today: `--link direct`);
//! - `ladder`: the optimization ladder over the splitnet link (refuses until netback and
//!   netfront land);
//! - `many`: many guests on one backend beside one (fairness, cycles per packet, memory per vif);
//! - `ring`: the cross-thread ring benchmark. With no command it runs `ring` for now.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use bench::Error;
use bench::chart::{ladder_svg, step_svg};
use bench::heap::CountingAlloc;
use bench::ladder::{render_ladder, run_ladder};
use bench::link::direct::DirectLink;
use bench::link::splitnet::SplitnetLink;
use bench::link::{DOM0, GUEST_DOMID, LinkConfig, LinkKind, Offload, REMOTE_DOMID, RxMode};
use bench::many;
use bench::placement::{FULL, Pin, Placement, cross_cpu_round_trip, probe_cpus};
use bench::report::{StepResult, render_step, run_step, write_json};
use bench::ringpair::{array_queue_round_trips, ring_round_trips};
use bench::tcp_rx::{ProfileMode, RunConfig};

/// `print!` that stops printing quietly when stdout is a closed pipe (`bench tcp-rx | head`)
/// instead of panicking, and ends the process with a message on any other write error.
macro_rules! out {
    ($($t:tt)*) => { emit(format_args!($($t)*)) };
}

/// `println!` through [`out!`].
macro_rules! outln {
    ($($t:tt)*) => {{ out!($($t)*); out!("\n") }};
}

/// Set once stdout turned out to be a closed pipe: later output is dropped, but the run goes on
/// so that `--json` and `--svg` files are still written.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    // Relaxed (both): only the main thread prints; the flag publishes nothing else.
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            return;
        }
        eprintln!("error: writing the report to stdout failed: {e}");
        std::process::exit(1);
    }
}

/// The process's allocator: the system's, counting the heap the driver domain's thread holds
/// (for `many`'s backend memory per vif).
#[global_allocator]
static HEAP: CountingAlloc = CountingAlloc::new();

#[derive(Parser, Debug)]
#[command(name = "bench", about = "splitnet benchmarks", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One TCP stream from a remote host into a guest: throughput, CPU per domain, cycles per
    /// packet by class and the xenoprof profile.
    TcpRx {
        /// What carries the frames: `splitnet` (bridge-lite + netback + netfront on the embedded
        /// hypervisor) or `direct` (smoltcp to smoltcp, no driver domain: an upper bound).
        #[arg(long, value_enum, default_value_t = LinkKind::Splitnet)]
        link: LinkKind,
        /// Netback's receive path: grant copy or page flip.
        #[arg(long, value_enum, default_value_t = CliMode::Copy)]
        mode: CliMode,
        /// IP MTU (1500, 9000 or 65000; any value in 576..=65535 works).
        #[arg(long, default_value_t = 1500)]
        mtu: usize,
        /// Netback batch: grant operations per hypercall.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// What the guest's netfront negotiates: `none` (full checksums, MTU-sized frames),
        /// `csum` (checksum offload), `gso` (checksum offload and 64 KiB super-frames, GRO at
        /// the NIC), as Linux's netfront does by default.
        #[arg(long, value_enum, default_value_t = Offload::Gso)]
        offload: Offload,
        /// Measured seconds (after the warm-up).
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Warm-up seconds before measuring.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Profiling: `exact` counts cycles per class (needed for cycles per packet), `sampled`
        /// runs a class sampler, `off` is the baseline for profiling overhead.
        #[arg(long, value_enum, default_value_t = ProfileMode::Exact)]
        profile: ProfileMode,
        /// Sampler rate with `--profile sampled`.
        #[arg(long, default_value_t = 1000)]
        sample_hz: u32,
        /// Thread placement: `none` leaves it to the scheduler; `split` puts the remote host
        /// (the traffic source) on a CPU of its own and dom0 with the guest on another, as
        /// separate machines would be (faster when that CPU is free, slower when it is not).
        #[arg(long, value_enum, default_value_t = Pin::None)]
        pin: Pin,
        /// Check every received byte against the sender's counting pattern.
        #[arg(long)]
        verify: bool,
        /// Write the result as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write an SVG chart of cycles per packet by class here (needs `--profile exact`).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// The optimization ladder over the splitnet link: (1) rx-flip, one hypercall per packet;
    /// (2) rx-copy unbatched; (3) rx-copy batched 64; (4) + checksum offload; (5) + GSO/GRO.
    /// Prints cycles saved per step in mm, grant_table, bridge, netback and copy.
    Ladder {
        /// IP MTU.
        #[arg(long, default_value_t = 1500)]
        mtu: usize,
        /// Measured seconds per step (after a warm-up of a quarter of that, at most 2 s).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Thread placement: `none` leaves it to the scheduler; `split` puts the remote host
        /// (the traffic source) on a CPU of its own and dom0 with the guest on another, as
        /// separate machines would be (faster when that CPU is free, slower when it is not).
        #[arg(long, value_enum, default_value_t = Pin::None)]
        pin: Pin,
        /// Write the steps as a JSON array here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the ladder's SVG chart here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Many guests on one backend, each receiving a stream from the remote host, beside a
    /// one-vif run in the same process: per-vif goodput, Jain's fairness index, dom0 cycles per
    /// packet against the one-vif run, memory per vif and the rx queues' high-water marks.
    Many {
        /// Guests in the scaled run (1..=256).
        #[arg(long, default_value_t = 64)]
        vifs: usize,
        /// Measured seconds of each run (after its warm-up).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Warm-up seconds before each run's window.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// IP MTU.
        #[arg(long, default_value_t = 1500)]
        mtu: usize,
        /// Netback batch: grant operations per hypercall.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Check every received byte against the sender's counting pattern.
        #[arg(long)]
        verify: bool,
        /// Write the result as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Re-renders a saved `tcp-rx` JSON object or `ladder` JSON array: the text report, and
    /// the chart with `--svg`.
    Report {
        /// The JSON file written by `--json`.
        json: PathBuf,
        /// Write the chart here.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// The cache-line round trip between the first two CPUs this process may use (what
    /// `tcp-rx` probes around its runs unless `--pin split` puts dom0 and the remote host
    /// elsewhere): 60-70 ns on the project's Zen 4 test VMs when the host keeps the vCPUs on
    /// cores that share a cache, 300+ ns when it does not. For scripts that run other
    /// benchmarks.
    Probe {
        /// Print only the nanoseconds (`nan` if there is one CPU or the probe gave up).
        #[arg(long)]
        ns: bool,
    },
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

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CliMode {
    Copy,
    Flip,
}

fn main() {
    let cli = Cli::parse();
    // No subcommand: the main job, `tcp-rx` with its defaults (about 10 s).
    let command = cli.command.unwrap_or_else(|| {
        Cli::parse_from(["bench", "tcp-rx"])
            .command
            .expect("tcp-rx parses with its defaults")
    });
    let result = match command {
        Command::Ring { slots, burst, runs } => {
            ring(slots, burst, runs);
            Ok(())
        }
        Command::Report { json, svg } => report(json, svg),
        Command::Probe { ns } => {
            probe(ns);
            Ok(())
        }
        Command::TcpRx {
            link,
            mode,
            mtu,
            batch,
            offload,
            seconds,
            warmup,
            profile,
            sample_hz,
            pin,
            verify,
            json,
            svg,
            quiet,
        } => run_config(mtu, mode, batch, seconds, warmup, profile, !quiet).and_then(|mut cfg| {
            cfg.link.placement = placement(pin)?;
            cfg.sample_hz = sample_hz;
            cfg.verify = verify;
            cfg.link.offload = offload;
            tcp_rx(link, &cfg, json, svg)
        }),
        Command::Many {
            vifs,
            seconds,
            warmup,
            mtu,
            batch,
            verify,
            json,
            quiet,
        } => run_config(
            mtu,
            CliMode::Copy,
            batch,
            seconds,
            warmup,
            ProfileMode::Exact,
            !quiet,
        )
        .and_then(|cfg| {
            many(
                &many::Config {
                    vifs,
                    mtu,
                    batch,
                    warmup: cfg.warmup,
                    measure: cfg.measure,
                    verify,
                    progress: cfg.progress,
                    heap: Some(&HEAP),
                },
                json,
            )
        }),
        Command::Ladder {
            mtu,
            seconds,
            pin,
            json,
            svg,
            quiet,
        } => run_config(
            mtu,
            CliMode::Copy,
            64,
            seconds,
            (seconds / 4.0).min(2.0),
            ProfileMode::Exact,
            !quiet,
        )
        .and_then(|mut cfg| {
            cfg.link.placement = placement(pin)?;
            ladder(&cfg, json, svg)
        }),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn secs(what: &str, s: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| *d <= Duration::from_secs(24 * 3600))
        .ok_or_else(|| Error::Config(format!("{what} must be between 0 and 86400 seconds")))
}

fn placement(pin: Pin) -> Result<Placement, Error> {
    Placement::plan(pin).map_err(Error::Config)
}

fn run_config(
    mtu: usize,
    mode: CliMode,
    batch: usize,
    seconds: f64,
    warmup: f64,
    profile: ProfileMode,
    progress: bool,
) -> Result<RunConfig, Error> {
    if batch == 0 {
        return Err(Error::Config("--batch must be at least 1".into()));
    }
    if !(576..=65535).contains(&mtu) {
        return Err(Error::Config(format!(
            "--mtu {mtu}: use an IP MTU in 576..=65535 (1500, 9000, 65000)"
        )));
    }
    Ok(RunConfig {
        link: LinkConfig {
            mtu,
            mode: match mode {
                CliMode::Copy => RxMode::Copy,
                CliMode::Flip => RxMode::Flip,
            },
            batch,
            offload: Offload::Gso,
            dom0: DOM0,
            guest: GUEST_DOMID,
            remote: REMOTE_DOMID,
            placement: Placement::default(),
        },
        warmup: secs("--warmup", warmup)?,
        measure: secs("--seconds", seconds)?,
        profile,
        sample_hz: 1000,
        verify: false,
        progress,
    })
}

fn tcp_rx(
    link: LinkKind,
    cfg: &RunConfig,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
) -> Result<(), Error> {
    let r = match link {
        LinkKind::Direct => run_step("tcp-rx", &mut DirectLink::new(), cfg)?,
        LinkKind::Splitnet => run_step("tcp-rx", &mut SplitnetLink::new(), cfg)?,
    };
    out!("{}", render_step(&r));
    write_outputs(&r, json, svg, step_svg)
}

fn many(cfg: &many::Config, json: Option<PathBuf>) -> Result<(), Error> {
    let r = many::run(cfg)?;
    out!("{}", many::render(&r));
    write_outputs(&r, json, None, |_| Ok(String::new()))
}

fn ladder(cfg: &RunConfig, json: Option<PathBuf>, svg: Option<PathBuf>) -> Result<(), Error> {
    // The ladder's steps differ only inside netback, so it runs over the splitnet link only.
    let steps = run_ladder(
        || -> Result<SplitnetLink, Error> { Ok(SplitnetLink::new()) },
        cfg,
    )?;
    out!("{}", render_ladder(&steps));
    write_outputs(&steps, json, svg, |s: &Vec<StepResult>| ladder_svg(s))
}

fn report(json: PathBuf, svg: Option<PathBuf>) -> Result<(), Error> {
    let text = std::fs::read_to_string(&json).map_err(|source| Error::Read {
        path: json.clone(),
        source,
    })?;
    let bad = |e: serde_json::Error| {
        Error::Config(format!(
            "{} is not a tcp-rx or ladder result ({e}); pass a file written by --json",
            json.display()
        ))
    };
    if text.trim_start().starts_with('[') {
        let steps: Vec<StepResult> = serde_json::from_str(&text).map_err(bad)?;
        out!("{}", render_ladder(&steps));
        write_outputs(&steps, None, svg, |s: &Vec<StepResult>| ladder_svg(s))
    } else {
        let r: StepResult = serde_json::from_str(&text).map_err(bad)?;
        out!("{}", render_step(&r));
        write_outputs(&r, None, svg, step_svg)
    }
}

fn write_outputs<T: serde::Serialize>(
    value: &T,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    draw: impl Fn(&T) -> Result<String, Error>,
) -> Result<(), Error> {
    if let Some(path) = json {
        write_json(&path, value)?;
        outln!("JSON written to {}", path.display());
    }
    if let Some(path) = svg {
        let text = draw(value)?;
        std::fs::write(&path, text).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        outln!("SVG chart written to {}", path.display());
    }
    Ok(())
}

fn probe(ns_only: bool) {
    let Some((a, b)) = probe_cpus(&Placement::default()) else {
        if ns_only {
            outln!("nan");
        } else {
            outln!("cross-CPU round trip: this process may use only one CPU");
        }
        return;
    };
    match (ns_only, cross_cpu_round_trip(a, b, FULL)) {
        (true, Ok(t)) => outln!("{:.0}", t.as_secs_f64() * 1e9),
        (true, Err(_)) => outln!("nan"),
        (false, Ok(t)) => outln!(
            "cross-CPU round trip, CPU {a} <-> {b}: {:.0} ns",
            t.as_secs_f64() * 1e9
        ),
        (false, Err(e)) => outln!("cross-CPU round trip, CPU {a} <-> {b}: no answer: {e}"),
    }
}

fn ring(slots: u32, burst: u32, runs: u32) {
    if burst == 0 || slots == 0 || runs == 0 {
        eprintln!("error: --slots, --burst and --runs must all be at least 1");
        std::process::exit(2);
    }
    outln!(
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
        outln!(
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
    outln!(
        "best: ring {:.1} M slots/s, ArrayQueue {:.1} M slots/s, ratio {:.2}x; notifications per round trip {:.4}",
        best_ring / 1e6,
        best_aq / 1e6,
        best_ring / best_aq,
        notifies as f64 / slots as f64
    );
}
