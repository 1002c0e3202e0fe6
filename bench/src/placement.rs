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

    /// A short probe while the run goes on (about a millisecond of both CPUs at worst).
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

fn probe_ns((a, b): (usize, usize), p: Probe) -> Option<f64> {
    cross_cpu_round_trip(a, b, p).map(|d| d.as_secs_f64() * 1e9)
}

/// How much a probe bounces: `batches` timed batches of `rounds` round trips each (after one
/// untimed batch to warm up); the answer is the fastest batch's time per round trip, so a
/// batch in which the scheduler preempted a probe thread does not count.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Timed batches.
    pub batches: u32,
    /// Round trips per batch.
    pub rounds: u32,
}

/// Before and after a run: 20 000 round trips (1-7 ms).
pub const FULL: Probe = Probe {
    batches: 10,
    rounds: 2_000,
};
/// During a run: 2 000 round trips (0.1-0.7 ms).
pub const SHORT: Probe = Probe {
    batches: 10,
    rounds: 200,
};

/// The probe gives up after this long (a descheduled partner would otherwise keep the other
/// thread spinning).
const PROBE_LIMIT: Duration = Duration::from_secs(1);

/// How long a cache line takes to go from CPU `a` to CPU `b` and back: two threads pinned
/// there bounce a counter. `None` when `a == b`, a thread cannot be pinned, or the probe runs
/// past one second (a partner descheduled: the answer would be the scheduler's, not the
/// caches').
pub fn cross_cpu_round_trip(a: usize, b: usize, p: Probe) -> Option<Duration> {
    if a == b || p.batches == 0 || p.rounds == 0 {
        return None;
    }
    let total = u64::from(p.batches + 1) * u64::from(p.rounds);
    let ball = AtomicU64::new(0);
    let give_up = AtomicBool::new(false);
    // Waits until the ball reads `want`; false if the other side gave up or time ran out.
    let wait_for = |want: u64, deadline: Instant| -> bool {
        let mut spins = 0u32;
        // Acquire: pairs with the other thread's Release store of `want` below.
        while ball.load(Ordering::Acquire) != want {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            // Relaxed: a stop flag; nothing is published through it.
            if spins.is_multiple_of(1024)
                && (give_up.load(Ordering::Relaxed) || Instant::now() > deadline)
            {
                give_up.store(true, Ordering::Relaxed);
                return false;
            }
        }
        true
    };
    let deadline = Instant::now() + PROBE_LIMIT;
    std::thread::scope(|s| {
        let partner = s.spawn(|| {
            if enter("probe", Some(b)).is_err() {
                give_up.store(true, Ordering::Relaxed);
                return;
            }
            for i in 0..total {
                if !wait_for(2 * i + 1, deadline) {
                    return;
                }
                // Release: hands the ball back (pairs with the Acquire load in `wait_for`).
                ball.store(2 * i + 2, Ordering::Release);
            }
        });
        // Both sides on threads of their own: pinning the caller would keep it pinned.
        let server = s.spawn(|| {
            enter("probe", Some(a)).ok()?;
            let mut best: Option<Duration> = None;
            let mut start = Instant::now();
            for i in 0..total {
                if i % u64::from(p.rounds) == 0 {
                    if i > u64::from(p.rounds) {
                        let took = start.elapsed();
                        best = Some(best.map_or(took, |b| b.min(took)));
                    }
                    start = Instant::now();
                }
                // Release: serves the ball (pairs with the Acquire load in `wait_for`).
                ball.store(2 * i + 1, Ordering::Release);
                if !wait_for(2 * i + 2, deadline) {
                    return None;
                }
            }
            let took = start.elapsed();
            best = Some(best.map_or(took, |b| b.min(took)));
            best.map(|b| b / p.rounds)
        });
        let took = server.join().ok().flatten();
        give_up.store(true, Ordering::Relaxed);
        let _ = partner.join();
        took
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
        assert_eq!(cross_cpu_round_trip(0, 0, SHORT), None);
        let Some((a, b)) = probe_cpus(&Placement::default()) else {
            return; // one usable CPU
        };
        // On a loaded machine the partner may be descheduled past the limit: then None.
        if let Some(t) = cross_cpu_round_trip(a, b, SHORT) {
            assert!(t > Duration::ZERO && t < PROBE_LIMIT);
        }
    }
}
