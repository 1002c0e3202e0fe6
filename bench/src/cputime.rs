//! Per-thread CPU time and context switches, read from procfs (`/proc/self/task/<tid>/schedstat`: nanoseconds on the
//! CPU, as the scheduler accounts them). No unsafe, no libc, and any thread can read another's,
//! so the experiment reads every vCPU thread, including those a link starts, from one place.

use std::collections::BTreeMap;

use xenoprof::DomId;

/// Nanoseconds thread `tid` of this process has run, or `None` if it is gone or procfs is
/// unavailable.
pub fn thread_cpu_ns(tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    parse_schedstat(&text)
}

/// Context switches of thread `tid` so far: (voluntary, involuntary). A voluntary switch is the
/// thread blocking (a vCPU going idle and, later, being woken); an involuntary one is the
/// scheduler preempting it for another runnable thread.
pub fn thread_switches(tid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    parse_switches(&text)
}

/// The `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` fields of a status file.
pub fn parse_switches(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((
        field("voluntary_ctxt_switches:")?,
        field("nonvoluntary_ctxt_switches:")?,
    ))
}

/// Nanoseconds thread `tid` has spent runnable but waiting for a CPU (schedstat's second
/// field), or `None` if it is gone or procfs is unavailable.
pub fn thread_wait_ns(tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    parse_schedstat_wait(&text)
}

/// The second field of a schedstat line (time waiting on a run queue, in ns).
pub fn parse_schedstat_wait(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// CPU ns so far of every live vCPU thread (by tid, with its domain) whose domain `keep`s.
pub fn vcpu_cpu_ns(keep: impl Fn(DomId) -> bool) -> BTreeMap<u32, (DomId, u64)> {
    xenoprof::vcpus()
        .iter()
        .filter(|v| !v.is_offline() && keep(v.domid()))
        .filter_map(|v| {
            let tid = v.tid()?;
            Some((tid, (v.domid(), thread_cpu_ns(tid)?)))
        })
        .collect()
}

/// The first field of a schedstat line (run time in ns).
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_first_field() {
        assert_eq!(parse_schedstat("233607 859675 3\n"), Some(233_607));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
        assert_eq!(parse_schedstat_wait("233607 859675 3\n"), Some(859_675));
        assert_eq!(parse_schedstat_wait("233607"), None);
    }

    #[test]
    fn parses_switch_counts() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_switches(status), Some((12, 3)));
        assert_eq!(parse_switches("voluntary_ctxt_switches:\t1\n"), None);
    }

    #[test]
    fn own_thread_sleeps_are_counted() {
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let (v0, _) = thread_switches(tid).expect("status readable");
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (v1, _) = thread_switches(tid).unwrap();
        assert!(v1 >= v0 + 3, "three sleeps, {} voluntary switches", v1 - v0);
    }

    #[test]
    fn own_thread_time_advances_with_work() {
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let before = thread_cpu_ns(tid).expect("schedstat readable");
        // Burn CPU until the scheduler's figure moves (it must, eventually).
        let mut x = 0u64;
        let mut after = before;
        for i in 0..200_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
            if i % 1_000_000 == 0 {
                after = thread_cpu_ns(tid).unwrap_or(before);
                if after > before {
                    break;
                }
            }
        }
        std::hint::black_box(x);
        assert!(after > before);
    }
}
