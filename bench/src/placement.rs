//! Where the experiment's threads run, and how far apart the host put this VM's CPUs.
//!
//! `tcp-rx` has three busy threads (dom0's netback, the guest's vCPU, the remote host) and
//! these machines have two cores. [`Pin::Split`] places them the way a real setup has it: the
//! remote host is another machine, so it gets a core of its own, and the host under test (the
//! driver domain and the guest, as Xen would schedule their vCPUs) shares the other; with three
//! or more CPUs each thread gets its own. [`Pin::None`] (the default) leaves it to the
//! scheduler. Forced by hand on this VM (4 interleaved rounds, MTU 1500), dom0 and the remote
//! host on one core gave 10.1–12.3 Gb/s, the split placement 16.5–17.2, the scheduler 9.5–15.4.
//! But `--pin split` against the scheduler over 10 interleaved rounds was not steadier: one
//! core then carries dom0 and the guest at 99% busy, so anything else that lands on it (or
//! a slower spell of that core) costs throughput one for one, where the scheduler spreads it.
//!
//! Pinning cannot touch the larger swing: where the host puts this VM's vCPUs. On the Zen 4
//! VMs this project runs on, a cache line goes from one vCPU to the other and back in 60–70 ns
//! most of the time and in 300–330 ns for minutes at a stretch (the vCPUs then sit on cores
//! that share no cache); every cross-core copy and hand-off then costs several times as much,
//! the remote host's own smoltcp included. [`cross_cpu_round_trip`] measures it, and `tcp-rx`
//! probes before its warm-up, about once a second during its window (a fraction of a
//! millisecond each) and after, and flags a run whose window saw the probe move.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
use serde::{Deserialize, Serialize};

/// How `--pin` places the threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pin {
    /// The remote host on a CPU of its own, dom0 and the guest on another (each on its own
    /// with three or more CPUs).
    Split,
    /// Wherever the scheduler puts them.
    #[default]
    None,
}

/// The CPU each thread is pinned to (`None`: not pinned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Placement {
    /// dom0's netback thread.
    pub dom0: Option<usize>,
    /// The guest's vCPU thread.
    pub guest: Option<usize>,
    /// The remote host's thread.
    pub remote: Option<usize>,
}

impl Placement {
    /// Plans `pin` over the CPUs this process may run on.
    pub fn plan(pin: Pin) -> Result<Self, String> {
        if pin == Pin::None {
            return Ok(Self::default());
        }
        let set = sched_getaffinity(None).map_err(|e| {
            format!("reading the CPUs this process may use failed ({e}); use --pin none")
        })?;
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect();
        Ok(Self::over(&cpus))
    }

    /// The split placement over `cpus` (the usable CPUs, ascending).
    pub fn over(cpus: &[usize]) -> Self {
        match *cpus {
            [] | [_] => Self::default(),
            [host, remote] => Self {
                dom0: Some(host),
                guest: Some(host),
                remote: Some(remote),
            },
            [dom0, guest, remote, ..] => Self {
                dom0: Some(dom0),
                guest: Some(guest),
                remote: Some(remote),
            },
        }
    }

    /// True when no thread is pinned.
    pub fn is_unpinned(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unpinned() {
            return f.write_str("threads placed by the scheduler");
        }
        let cpu = |c: Option<usize>| c.map_or("any CPU".to_string(), |c| format!("CPU {c}"));
        write!(
            f,
            "dom0 on {}, guest on {}, remote host on {}",
            cpu(self.dom0),
            cpu(self.guest),
            cpu(self.remote)
        )
    }
}

/// Pins the calling thread to `cpu` (nothing for `None`). `who` names the thread in the error.
pub fn enter(who: &str, cpu: Option<usize>) -> Result<(), String> {
    let Some(c) = cpu else { return Ok(()) };
    let mut set = CpuSet::new();
    set.set(c);
    sched_setaffinity(None, &set)
        .map_err(|e| format!("pinning the {who} thread to CPU {c} failed ({e}); use --pin none"))
}

/// The cache-line round trip between two CPUs, probed before, during and after a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossCpu {
    /// The CPUs probed (dom0's and the remote host's when pinned apart).
    pub cpus: (usize, usize),
    /// Nanoseconds per round trip before the run (`None`: the probe gave up).
    pub before_ns: Option<f64>,
    /// Short probes about once a second during the measured window.
    #[serde(default)]
    pub during_ns: Vec<f64>,
    /// Nanoseconds per round trip after the window.
    pub after_ns: Option<f64>,
}

impl CrossCpu {
    /// Probes `cpus` now: a `CrossCpu` with `before_ns` set.
    pub fn before(cpus: (usize, usize)) -> Self {
        Self {
            cpus,
            before_ns: probe_ns(cpus, FULL),
            during_ns: Vec::new(),
            after_ns: None,
        }
    }

    /// A short probe while the run goes on ([`SHORT`]: at most 20 ms of both CPUs, usually
    /// well under one).
    pub fn sample(&mut self) {
        if let Some(ns) = probe_ns(self.cpus, SHORT) {
            self.during_ns.push(ns);
        }
    }

    /// Probes again and records it as `after_ns`.
    pub fn finish(&mut self) {
        self.after_ns = probe_ns(self.cpus, FULL);
    }

    /// The probes that bound the measured window: those during it and the one after (the one
    /// before too when the window was too short for any during it). The probe before runs ahead
    /// of the warm-up, and a vCPU waking from idle is often placed far for a moment.
    fn window(&self) -> impl Iterator<Item = f64> + '_ {
        let before = self.before_ns.filter(|_| self.during_ns.is_empty());
        before
            .into_iter()
            .chain(self.during_ns.iter().copied())
            .chain(self.after_ns)
    }

    /// True when the probes bounding the window differ by more than 2x: the host moved the
    /// vCPUs during the run, and its figures mix two machines.
    pub fn moved(&self) -> bool {
        let (lo, hi) = self
            .window()
            .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        hi > 2.0 * lo
    }
}

impl fmt::Display for CrossCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = |v: Option<f64>| v.map_or("(gave up)".to_string(), |v| format!("{v:.0} ns"));
        write!(
            f,
            "CPU {} <-> {}: {} before, ",
            self.cpus.0,
            self.cpus.1,
            ns(self.before_ns)
        )?;
        if !self.during_ns.is_empty() {
            let during: Vec<String> = self.during_ns.iter().map(|v| format!("{v:.0}")).collect();
            write!(f, "{} ns during, ", during.join("/"))?;
        }
        write!(f, "{} after", ns(self.after_ns))
    }
}

/// Runs [`CrossCpu::sample`] from a benchmark's progress tick about once per `every`.
#[derive(Debug)]
pub struct Sampler<'a> {
    probe: Option<&'a mut CrossCpu>,
    every: Duration,
    last: Instant,
}

impl<'a> Sampler<'a> {
    /// Samples into `probe` (nothing if `None`) every `every`, the first `every` after now.
    pub fn new(probe: Option<&'a mut CrossCpu>, every: Duration) -> Self {
        Self {
            probe,
            every,
            last: Instant::now(),
        }
    }

    /// Call on every tick: probes when the period has passed.
    pub fn tick(&mut self) {
        if let Some(p) = self.probe.as_deref_mut()
            && self.last.elapsed() >= self.every
        {
            p.sample();
            self.last = Instant::now();
        }
    }
}

fn probe_ns((a, b): (usize, usize), p: Probe) -> Option<f64> {
    cross_cpu_round_trip(a, b, p)
        .ok()
        .map(|d| d.as_secs_f64() * 1e9)
}

/// How much a probe bounces: `batches` timed batches of `rounds` round trips each (after one
/// untimed batch to warm up); the answer is the fastest batch's time per round trip, so a
/// batch in which the scheduler preempted a probe thread does not count. A probe still running
/// after `limit` gives up.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Timed batches.
    pub batches: u32,
    /// Round trips per batch.
    pub rounds: u32,
    /// The longest the probe may take (a descheduled partner would otherwise keep the other
    /// thread spinning).
    pub limit: Duration,
}

/// Before and after a run: 20 000 round trips (1-7 ms), giving up after 1 s.
pub const FULL: Probe = Probe {
    batches: 10,
    rounds: 2_000,
    limit: Duration::from_secs(1),
};
/// During a run: 2 000 round trips (0.1-0.7 ms), giving up after 20 ms, so a probe inside the
/// measured window never takes more than that from the run.
pub const SHORT: Probe = Probe {
    batches: 10,
    rounds: 200,
    limit: Duration::from_millis(20),
};
/// How often a benchmark probes with [`SHORT`] during its measured window.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Why a probe has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Both CPUs are the same, or the probe asks for no round trips.
    #[error("nothing to probe (one CPU, or no round trips asked)")]
    Nothing,
    /// A probe thread could not be pinned (a cpuset that excludes the CPU?).
    #[error("a probe thread could not be pinned to its CPU (is the process confined to a cpuset?)")]
    Pin,
    /// The probe ran past its limit: a probe thread was not scheduled (a loaded machine).
    #[error(
        "the probe ran past its time limit: a probe thread was not scheduled (the machine is \
         overloaded; retry when it is quieter)"
    )]
    Limit,
}

/// How long a cache line takes to go from CPU `a` to CPU `b` and back: two threads pinned
/// there bounce a counter.
pub fn cross_cpu_round_trip(a: usize, b: usize, p: Probe) -> Result<Duration, ProbeError> {
    if a == b || p.batches == 0 || p.rounds == 0 {
        return Err(ProbeError::Nothing);
    }
    let rounds = u64::from(p.rounds);
    let total = (u64::from(p.batches) + 1) * rounds;
    let deadline = Instant::now() + p.limit;
    let ball = AtomicU64::new(0);
    let give_up = AtomicBool::new(false);
    // Relaxed (every use of `give_up`): a stop flag between the two probe threads; nothing is
    // published through it, and each side only stops early when it reads true.
    let stop = || give_up.store(true, Ordering::Relaxed);
    let stopped = || give_up.load(Ordering::Relaxed) || Instant::now() > deadline;
    // Waits until the ball reads `want`; false if the other side gave up or time ran out.
    let wait_for = |want: u64| -> bool {
        let mut spins = 0u32;
        // Acquire: pairs with the other thread's Release store of `want` below.
        while ball.load(Ordering::Acquire) != want {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && stopped() {
                stop();
                return false;
            }
        }
        true
    };
    std::thread::scope(|s| {
        // Both sides on threads of their own: pinning the caller would keep it pinned.
        // Returns whether it could be pinned.
        let partner = s.spawn(|| {
            if enter("probe", Some(b)).is_err() {
                stop();
                return false;
            }
            for i in 0..total {
                if !wait_for(2 * i + 1) {
                    break;
                }
                // Release: hands the ball back (pairs with the Acquire load in `wait_for`).
                ball.store(2 * i + 2, Ordering::Release);
            }
            true
        });
        let server = s.spawn(|| {
            if enter("probe", Some(a)).is_err() {
                stop();
                return Err(ProbeError::Pin);
            }
            let mut best: Option<Duration> = None;
            let mut start = Instant::now();
            for i in 0..total {
                if i % rounds == 0 {
                    // A batch boundary: record the batch just done (not the warm-up one) and
                    // check the limit, which the waits alone check only every 1024 spins.
                    if i > rounds {
                        let took = start.elapsed();
                        best = Some(best.map_or(took, |b| b.min(took)));
                    }
                    if i > 0 && stopped() {
                        stop();
                        return Err(ProbeError::Limit);
                    }
                    start = Instant::now();
                }
                // Release: serves the ball (pairs with the Acquire load in `wait_for`).
                ball.store(2 * i + 1, Ordering::Release);
                if !wait_for(2 * i + 2) {
                    return Err(ProbeError::Limit);
                }
            }
            let took = start.elapsed();
            let best = best.map_or(took, |b| b.min(took));
            Ok(best / p.rounds)
        });
        let took = server.join().unwrap_or(Err(ProbeError::Pin));
        stop();
        let pinned = partner.join().unwrap_or(false);
        // The partner failing to pin shows up as the server's wait running out.
        match took {
            Err(ProbeError::Limit) if !pinned => Err(ProbeError::Pin),
            t => t,
        }
    })
}

/// The two CPUs to probe for a run placed by `p`: dom0's and the remote host's when they
/// differ, else the first two this process may use.
pub fn probe_cpus(p: &Placement) -> Option<(usize, usize)> {
    match (p.dom0, p.remote) {
        (Some(d), Some(r)) if d != r => Some((d, r)),
        _ => {
            let set = sched_getaffinity(None).ok()?;
            let mut cpus = (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c));
            Some((cpus.next()?, cpus.next()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_cpus_put_the_host_under_test_together_and_the_remote_host_apart() {
        let p = Placement::over(&[2, 5]);
        assert_eq!((p.dom0, p.guest, p.remote), (Some(2), Some(2), Some(5)));
        assert_eq!(
            p.to_string(),
            "dom0 on CPU 2, guest on CPU 2, remote host on CPU 5"
        );
    }

    #[test]
    fn three_or_more_cpus_give_each_thread_its_own() {
        let p = Placement::over(&[0, 1, 2, 3]);
        assert_eq!((p.dom0, p.guest, p.remote), (Some(0), Some(1), Some(2)));
    }

    #[test]
    fn one_cpu_or_pin_none_pins_nothing() {
        assert!(Placement::over(&[3]).is_unpinned());
        assert!(Placement::plan(Pin::None).unwrap().is_unpinned());
    }

    #[test]
    fn a_pinned_thread_runs_only_where_it_was_put() {
        let Some(&cpu) = Placement::plan(Pin::Split)
            .ok()
            .and_then(|p| p.remote)
            .as_ref()
        else {
            return; // one usable CPU: nothing to pin
        };
        let seen = std::thread::spawn(move || {
            enter("test", Some(cpu)).unwrap();
            let set = sched_getaffinity(None).unwrap();
            (0..CpuSet::MAX_CPU)
                .filter(|&c| set.is_set(c))
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![cpu]);
    }

    #[test]
    fn the_probe_answers_between_two_cpus_and_not_within_one() {
        assert_eq!(cross_cpu_round_trip(0, 0, SHORT), Err(ProbeError::Nothing));
        let Some((a, b)) = probe_cpus(&Placement::default()) else {
            return; // one usable CPU
        };
        // A probe may run out of time while other tests keep the CPUs busy; one of five
        // must answer, with a round trip shorter than its whole time limit.
        let answers: Vec<_> = (0..5).map(|_| cross_cpu_round_trip(a, b, FULL)).collect();
        let t = answers
            .iter()
            .find_map(|r| r.ok())
            .unwrap_or_else(|| panic!("no probe answered: {answers:?}"));
        assert!(t > Duration::ZERO && t < FULL.limit, "{t:?}");
    }

    fn probes(before: Option<f64>, during: &[f64], after: Option<f64>) -> CrossCpu {
        CrossCpu {
            cpus: (0, 1),
            before_ns: before,
            during_ns: during.to_vec(),
            after_ns: after,
        }
    }

    #[test]
    fn moved_compares_the_probes_that_bound_the_window() {
        assert!(!probes(None, &[], None).moved(), "nothing measured");
        assert!(!probes(Some(64.0), &[], None).moved(), "one probe");
        assert!(!probes(None, &[], Some(320.0)).moved(), "one probe");
        assert!(
            probes(Some(64.0), &[], Some(320.0)).moved(),
            "no window probes: both ends"
        );
        assert!(probes(None, &[64.0, 63.0], Some(200.0)).moved());
        assert!(
            !probes(None, &[64.0, 63.0], Some(120.0)).moved(),
            "within 2x"
        );
        // The probe before the warm-up is left out once there are probes in the window.
        assert!(!probes(Some(320.0), &[64.0, 62.0], Some(63.0)).moved());
    }
}
