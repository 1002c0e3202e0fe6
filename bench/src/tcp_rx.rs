//! The single-TCP-stream receive experiment, generic over the [`Link`].
//!
//! The controller (the calling thread) builds the link, starts the remote sender and the guest
//! receiver on their own vCPU threads, waits for the stream to flow, lets it warm up, then
//! measures for a set time: goodput bytes the guest read, frames its device received, CPU time of
//! every vCPU thread (by domain, from procfs), and a xenoprof session over the window.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use xenoprof::{DomId, Mode};
use xenoprof_report::{Profile, Session};

use crate::Error;
use crate::cputime::{thread_cpu_ns, thread_switches};
use crate::host::{Role, Shared, run_host};
use crate::link::{Link, LinkConfig, LinkStats};
use crate::placement::{CrossCpu, SAMPLE_EVERY, Sampler};

/// How the run is profiled (xenoprof's global mode during the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileMode {
    /// Hooks off: the baseline for profiling overhead.
    Off,
    /// Exact TSC cycles per (domain, context, class): gives cycles per packet.
    Exact,
    /// A class sampler thread: gives samples per class, no cycle counts.
    Sampled,
}

impl ProfileMode {
    fn xenoprof(self) -> Mode {
        match self {
            ProfileMode::Off => Mode::Off,
            ProfileMode::Exact => Mode::Exact,
            ProfileMode::Sampled => Mode::Sampled,
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// What the link is asked to build (MTU, mode, batch, domain ids).
    pub link: LinkConfig,
    /// Time the stream runs before measuring.
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
    /// Profiling mode for the run.
    pub profile: ProfileMode,
    /// Class sampler rate in `Sampled` mode.
    pub sample_hz: u32,
    /// The receiver checks every byte against the sender's counting pattern.
    pub verify: bool,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// CPU time of one domain's vCPU threads over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainCpu {
    /// The domain.
    pub domid: DomId,
    /// "dom0", "guest" or "remote".
    pub name: String,
    /// vCPU threads counted.
    pub vcpus: u32,
    /// CPU seconds used in the window, all vCPUs together.
    pub cpu_seconds: f64,
    /// `cpu_seconds` / window length (1.0 = one core busy all the time).
    pub utilization: f64,
    /// Times its vCPUs blocked in the window (voluntary context switches: each is a sleep and
    /// a wakeup to pay).
    #[serde(default)]
    pub sleeps: u64,
    /// Times its vCPUs were preempted for another runnable thread in the window.
    #[serde(default)]
    pub preemptions: u64,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// The link's name.
    pub link: &'static str,
    /// The link's one-line description.
    pub link_description: String,
    /// Length of the measured window.
    pub seconds: f64,
    /// Goodput: stream bytes the guest's application read in the window.
    pub bytes: u64,
    /// Frames the guest's device received in the window (a GSO super-frame counts once: the
    /// per-packet costs offloads pay once per 64 KiB).
    pub packets: u64,
    /// TCP segments the remote host sent in the window (MTU-sized frames on the wire,
    /// retransmissions included).
    pub wire_packets: u64,
    /// CPU use per domain.
    pub cpu: Vec<DomainCpu>,
    /// The xenoprof session over the window (work: `packets`, `bytes`).
    pub profile: Profile,
    /// The link's own figures.
    pub link_stats: LinkStats,
    /// The cache-line round trip between the CPUs in use, before, during and after the run.
    pub cross_cpu: Option<crate::placement::CrossCpu>,
    /// The memcpy floor timed right after the window (exact profiling only): the same bytes
    /// in chunks of the average delivered frame (`floor.rs`).
    pub memcpy: Option<crate::floor::MemcpyTiming>,
}

/// How long the stream may take to start moving before the run fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Progress bar and stall check period.
const TICK: Duration = Duration::from_millis(100);
/// A window this long without a byte is a stall.
const STALL: Duration = Duration::from_secs(5);

/// The name a report gives domain `domid` under `cfg`.
pub fn domain_name(cfg: &LinkConfig, domid: DomId) -> String {
    if domid == cfg.dom0 {
        "dom0".into()
    } else if domid == cfg.guest {
        "guest".into()
    } else if domid == cfg.remote {
        "remote".into()
    } else {
        format!("dom{domid}")
    }
}

/// Runs the experiment over `link`. Sets xenoprof's global mode for the run and back to `Off`
/// after it; do not run two experiments at once in one process.
pub fn run<L: Link>(link: &mut L, cfg: &RunConfig) -> Result<Measurement, Error> {
    if cfg.measure.is_zero() {
        return Err(Error::Config(
            "the measured window must be longer than 0 s".into(),
        ));
    }
    let lc = &cfg.link;
    let mut cross_cpu = crate::placement::probe_cpus(&lc.placement).map(CrossCpu::before);
    let (remote_dev, guest_dev) = link.build(lc)?;
    let shared = Arc::new(Shared::default());
    let spawn = |name: &str, f: Box<dyn FnOnce() -> Result<(), Error> + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(Error::Spawn)
    };
    xenoprof::set_mode(cfg.profile.xenoprof());
    let (s1, s2) = (shared.clone(), shared.clone());
    let (guest, remote) = (lc.guest, lc.remote);
    let verify = cfg.verify;
    let pl = lc.placement;
    let pin = |role: &'static str, cpu| {
        crate::placement::enter(role, cpu).map_err(|what| Error::Thread { role, what })
    };
    let threads: Vec<HostThread> = vec![
        (
            "guest receiver",
            spawn(
                "guest-vcpu0",
                Box::new(move || {
                    pin("guest receiver", pl.guest)?;
                    run_host(guest_dev, guest, Role::Receiver { verify }, s1)
                }),
            ),
        ),
        (
            "remote sender",
            spawn(
                "remote-host",
                Box::new(move || {
                    pin("remote sender", pl.remote)?;
                    run_host(remote_dev, remote, Role::Sender, s2)
                }),
            ),
        ),
    ];
    let outcome = measure(link, cfg, &shared, &threads, cross_cpu.as_mut());
    // Stop everything whatever happened, then report the first failure.
    // Relaxed: pairs with the hosts' relaxed loads; `shutdown` (locks) wakes any blocked host.
    shared.stop.store(true, Ordering::Relaxed);
    let stats = link.shutdown();
    xenoprof::set_mode(Mode::Off);
    let mut thread_err = None;
    for (role, t) in threads {
        let r = match t {
            Ok(h) => h.join().unwrap_or_else(|p| {
                Err(Error::Thread {
                    role,
                    what: format!("panicked: {}", panic_text(&p)),
                })
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            thread_err.get_or_insert(e);
        }
    }
    if let Some(e) = thread_err {
        return Err(e);
    }
    let mut m = outcome?;
    m.link_stats = stats?;
    if let Some(c) = cross_cpu.as_mut() {
        c.finish();
    }
    m.cross_cpu = cross_cpu;
    if cfg.profile == ProfileMode::Exact {
        let chunk = crate::floor::chunk_for(m.bytes, m.packets);
        m.memcpy = Some(crate::floor::time_memcpy(m.bytes, chunk));
    }
    Ok(m)
}

/// A progress bar over `total` (in ms) on stderr, hidden unless `show`.
pub(crate) fn progress_bar(show: bool, total: Duration, prefix: String) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(total.as_millis() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:32}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

/// What a panicking thread said.
pub(crate) fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A host thread's role and its handle (or why it did not start).
type HostThread = (&'static str, Result<JoinHandle<Result<(), Error>>, Error>);
type Threads = [HostThread];

fn failed(threads: &Threads) -> bool {
    threads
        .iter()
        .any(|(_, t)| t.as_ref().map_or(true, |h| h.is_finished()))
}

/// What the scheduler says about one vCPU thread: CPU ns, voluntary and involuntary switches.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadTimes {
    ns: u64,
    sleeps: u64,
    preemptions: u64,
}

/// Scheduler figures per vCPU thread (by tid) of the domains in `lc`, now.
fn cpu_now(lc: &LinkConfig) -> BTreeMap<u32, (DomId, ThreadTimes)> {
    let doms = [lc.dom0, lc.guest, lc.remote];
    xenoprof::vcpus()
        .iter()
        .filter(|v| !v.is_offline() && doms.contains(&v.domid()))
        .filter_map(|v| {
            let tid = v.tid()?;
            let (sleeps, preemptions) = thread_switches(tid).unwrap_or_default();
            let ns = thread_cpu_ns(tid)?;
            Some((
                tid,
                (
                    v.domid(),
                    ThreadTimes {
                        ns,
                        sleeps,
                        preemptions,
                    },
                ),
            ))
        })
        .collect()
}

fn measure<L: Link>(
    link: &L,
    cfg: &RunConfig,
    shared: &Shared,
    threads: &Threads,
    cross_cpu: Option<&mut CrossCpu>,
) -> Result<Measurement, Error> {
    let lc = &cfg.link;
    // Relaxed loads below: progress figures (see `run_host`).
    let bytes = || shared.bytes.load(Ordering::Relaxed);
    let frames = || shared.frames.load(Ordering::Relaxed);
    let wire = || shared.wire_frames.load(Ordering::Relaxed);
    let bar = progress_bar(cfg.progress, cfg.warmup + cfg.measure, String::new());
    bar.set_message("connecting");
    let start = Instant::now();
    while bytes() == 0 {
        if failed(threads) {
            return Err(Error::Stalled(
                "a host stopped before the stream started".into(),
            ));
        }
        if start.elapsed() > CONNECT_TIMEOUT {
            return Err(Error::Stalled(format!(
                "no data reached the guest within {CONNECT_TIMEOUT:?} over the {} link",
                link.name()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bar.set_message("warm-up");
    let warm_end = Instant::now() + cfg.warmup;
    let check = || {
        if failed(threads) {
            Err(Error::Stalled(
                "a host thread stopped during the run".into(),
            ))
        } else {
            Ok(())
        }
    };
    const STALLED: &str = "no byte reached the guest";
    tick_until(&bar, warm_end, 0, &check, &bytes, STALLED)?;

    let mut session = Session::builder(lc.dom0)
        .active(&[lc.guest, lc.remote])
        .sample_hz(if cfg.profile == ProfileMode::Sampled {
            cfg.sample_hz
        } else {
            0
        })
        .label(format!("tcp-rx {} MTU {}", link.name(), lc.mtu))
        .build();
    let cpu0 = cpu_now(lc);
    let (b0, f0, w0, t0) = (bytes(), frames(), wire(), Instant::now());
    session.start()?;
    let off = cfg.warmup.as_millis() as u64;
    let gbps = |b: u64, t: Instant| (b - b0) as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9;
    // A short cross-CPU probe about once a second, so a run the host's vCPU placement changed
    // under can be told apart (see `placement.rs`).
    let probe = std::cell::RefCell::new(Sampler::new(cross_cpu, SAMPLE_EVERY));
    let progress = || {
        let b = bytes();
        bar.set_message(format!("measuring: {:.2} Gb/s", gbps(b, t0)));
        probe.borrow_mut().tick();
        b
    };
    tick_until(&bar, t0 + cfg.measure, off, &check, &progress, STALLED)?;
    session.stop();
    let (b1, f1, w1, seconds) = (bytes(), frames(), wire(), t0.elapsed().as_secs_f64());
    let cpu1 = cpu_now(lc);
    bar.finish_and_clear();

    let mut per_dom: BTreeMap<DomId, (u32, ThreadTimes)> = [lc.dom0, lc.guest, lc.remote]
        .into_iter()
        .map(|d| (d, (0, ThreadTimes::default())))
        .collect();
    for (tid, (dom, end)) in &cpu1 {
        let begin = cpu0.get(tid).map(|(_, t)| *t).unwrap_or_default();
        let e = per_dom.entry(*dom).or_default();
        e.0 += 1;
        e.1.ns += end.ns.saturating_sub(begin.ns);
        e.1.sleeps += end.sleeps.saturating_sub(begin.sleeps);
        e.1.preemptions += end.preemptions.saturating_sub(begin.preemptions);
    }
    let cpu = per_dom
        .into_iter()
        .map(|(domid, (vcpus, t))| DomainCpu {
            domid,
            name: domain_name(lc, domid),
            vcpus,
            cpu_seconds: t.ns as f64 / 1e9,
            utilization: t.ns as f64 / 1e9 / seconds,
            sleeps: t.sleeps,
            preemptions: t.preemptions,
        })
        .collect();
    let mut profile = session.snapshot();
    profile.set_work("packets", f1 - f0);
    profile.set_work("bytes", b1 - b0);
    Ok(Measurement {
        link: link.name(),
        link_description: link.description(),
        seconds,
        bytes: b1 - b0,
        packets: f1 - f0,
        wire_packets: w1 - w0,
        cpu,
        profile,
        link_stats: LinkStats::default(),
        cross_cpu: None,
        memcpy: None,
    })
}

/// Advances the bar until `end`, every [`TICK`]: fails with `check`'s error (a thread ended),
/// or when `bytes` (goodput so far; called once per tick) has not moved for [`STALL`], saying
/// `stalled` and how long.
pub(crate) fn tick_until(
    bar: &ProgressBar,
    end: Instant,
    base_ms: u64,
    check: &dyn Fn() -> Result<(), Error>,
    bytes: &dyn Fn() -> u64,
    stalled: &str,
) -> Result<(), Error> {
    let began = Instant::now();
    let (mut last, mut last_move) = (bytes(), Instant::now());
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep(TICK.min(end - now));
        bar.set_position(base_ms + began.elapsed().as_millis() as u64);
        check()?;
        let b = bytes();
        if b != last {
            (last, last_move) = (b, Instant::now());
        } else if last_move.elapsed() > STALL {
            return Err(Error::Stalled(format!("{stalled} for {STALL:?}")));
        }
    }
}
