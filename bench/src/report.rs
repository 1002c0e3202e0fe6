//! A run's result: the JSON shape scripts rely on, cycles per packet by class, the text report.
//!
//! `cycles_per_packet` is the driver domain's figure: dom0 kernel + xen cycles of each class
//! (xenoprof exact mode) divided by the frames the guest received (a GSO super-frame is one
//! packet); `cycles_per_kib` divides the same cycles by KiB of goodput, the figure that stays
//! comparable when offloads change what a packet carries. Every class xenoprof knows is
//! present; values are `null` when the run was not profiled in exact mode (no cycle counts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use xenoprof::{Class, Context, DomId};
use xenoprof_report::{Metric, Profile};

use crate::Error;
use crate::link::{LinkConfig, LinkStats, Offload, RxMode};
use crate::tcp_rx::{DomainCpu, Measurement, ProfileMode, RunConfig, domain_name};

/// The Kernel / Xen / User split of all monitored domains, in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// The metric the split was computed from ("cycles" or "samples").
    pub metric: String,
    /// Percent in kernel context.
    pub kernel: f64,
    /// Percent in xen context.
    pub xen: f64,
    /// Percent in user context.
    pub user: f64,
}

/// Top-level keys every `tcp-rx` JSON object (and every ladder step) carries: the contract
/// scripts rely on.
pub const REQUIRED_KEYS: &[&str] = &[
    "mode",
    "mtu",
    "batch",
    "throughput_gbps",
    "packets",
    "cycles_per_packet",
    "link",
    "seconds",
    "cpu",
    "profile",
];

/// Classes `cycles_per_packet` always names (more may follow).
pub const REQUIRED_CLASSES: &[&str] = &[
    "mm",
    "grant_table",
    "bridge",
    "netback",
    "copy",
    "event_channel",
    "find_domain",
    "page_alloc",
];

/// One run (a `tcp-rx` result or one ladder step): the JSON object scripts read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// The step's label ("tcp-rx", or the ladder step's name).
    pub step: String,
    /// The link's name (`direct`, `splitnet`).
    pub link: String,
    /// What the link is.
    pub link_description: String,
    /// Netback's receive mode asked for.
    pub mode: RxMode,
    /// IP MTU.
    pub mtu: usize,
    /// Netback batch size asked for.
    pub batch: usize,
    /// Measured window in seconds (after the warm-up).
    pub seconds: f64,
    /// Goodput: bytes the guest's application read, times 8, per second, in Gb/s.
    pub throughput_gbps: f64,
    /// Goodput bytes in the window.
    pub bytes: u64,
    /// Frames the guest's device received in the window (a GSO super-frame counts once).
    pub packets: u64,
    /// TCP segments the remote host sent in the window (MTU-sized frames on the wire,
    /// retransmissions included; 0 in results from before it was recorded).
    #[serde(default)]
    pub wire_packets: u64,
    /// What netfront negotiated (absent in results from before offloads).
    #[serde(default)]
    pub offload: Option<Offload>,
    /// The CPUs the threads ran on (absent in results from before `--pin`).
    #[serde(default)]
    pub placement: Option<crate::placement::Placement>,
    /// The cache-line round trip between the CPUs in use, before, during and after the run
    /// (absent in results from before it was recorded).
    #[serde(default)]
    pub cross_cpu: Option<crate::placement::CrossCpu>,
    /// `packets` per second.
    pub packets_per_second: f64,
    /// xenoprof's mode during the run.
    pub profile_mode: ProfileMode,
    /// dom0 kernel + xen cycles per packet, by class (`null`: not measured, see the module doc).
    pub cycles_per_packet: BTreeMap<String, Option<f64>>,
    /// All contexts' cycles per packet by class, for every domain ("dom0", "guest", "remote").
    pub cycles_per_packet_by_domain: BTreeMap<String, BTreeMap<String, f64>>,
    /// CPU use per domain.
    pub cpu: Vec<DomainCpu>,
    /// Kernel / Xen / User split over all monitored domains.
    pub split: Split,
    /// The link's own counters.
    pub link_stats: LinkStats,
    /// The backend's cycles per KiB delivered against a memcpy of the same bytes (exact
    /// profiling only; absent in results from before it was recorded).
    #[serde(default)]
    pub floor: Option<crate::floor::Floor>,
    /// The xenoprof profile of the measured window.
    pub profile: Profile,
}

/// Cycles of `domid` in `contexts`, by class name, over the whole profile.
pub fn cycles_by_class(p: &Profile, domid: DomId, contexts: &[Context]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = Class::all()
        .into_iter()
        .map(|c| (c.name().to_string(), 0))
        .collect();
    if let Some(d) = p.domain(domid) {
        for r in d.rows.iter().filter(|r| contexts.contains(&r.context)) {
            let name = r
                .class
                .clone()
                .unwrap_or_else(|| "(no class detail)".into());
            *out.entry(name).or_default() += r.cycles;
        }
    }
    out
}

fn per_packet(m: &BTreeMap<String, u64>, packets: u64) -> BTreeMap<String, f64> {
    m.iter()
        .map(|(k, &v)| (k.clone(), v as f64 / packets.max(1) as f64))
        .collect()
}

impl StepResult {
    /// Builds the result of a run from its configuration and measurement.
    pub fn new(step: &str, cfg: &RunConfig, m: Measurement) -> StepResult {
        let lc: &LinkConfig = &cfg.link;
        let exact = cfg.profile == ProfileMode::Exact;
        let dom0 = cycles_by_class(&m.profile, lc.dom0, &[Context::Kernel, Context::Xen]);
        let cycles_per_packet = per_packet(&dom0, m.packets)
            .into_iter()
            .map(|(k, v)| (k, exact.then_some(v)))
            .collect();
        let mut by_domain = BTreeMap::new();
        if exact {
            for d in [lc.dom0, lc.guest, lc.remote] {
                let all = cycles_by_class(&m.profile, d, &Context::ALL);
                by_domain.insert(domain_name(lc, d), per_packet(&all, m.packets));
            }
        }
        let metric = if exact {
            Metric::Cycles
        } else {
            Metric::Samples
        };
        let sp = xenoprof_report::report::split(&m.profile, metric);
        let floor = m
            .memcpy
            .filter(|_| exact)
            .map(|t| crate::floor::Floor::new(&dom0, m.bytes, t));
        StepResult {
            step: step.to_string(),
            link: m.link.to_string(),
            link_description: m.link_description,
            mode: lc.mode,
            mtu: lc.mtu,
            batch: lc.batch,
            seconds: m.seconds,
            throughput_gbps: m.bytes as f64 * 8.0 / m.seconds / 1e9,
            bytes: m.bytes,
            placement: Some(lc.placement),
            cross_cpu: m.cross_cpu,
            packets: m.packets,
            wire_packets: m.wire_packets,
            offload: Some(lc.offload),
            packets_per_second: m.packets as f64 / m.seconds,
            profile_mode: cfg.profile,
            cycles_per_packet,
            cycles_per_packet_by_domain: by_domain,
            cpu: m.cpu,
            split: Split {
                metric: metric.name().into(),
                kernel: sp.kernel,
                xen: sp.xen,
                user: sp.user,
            },
            link_stats: m.link_stats,
            floor,
            profile: m.profile,
        }
    }

    /// dom0 + xen cycles of `class` per KiB of goodput (0 when not measured or absent).
    pub fn cpk(&self, class: &str) -> f64 {
        self.cpp(class) * self.packets as f64 / (self.bytes.max(1) as f64 / 1024.0)
    }

    /// dom0 + xen cycles per packet of `class` (0 when not measured or absent).
    pub fn cpp(&self, class: &str) -> f64 {
        self.cycles_per_packet
            .get(class)
            .copied()
            .flatten()
            .unwrap_or(0.0)
    }
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(Error::Json)?;
    std::fs::write(path, text + "\n").map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The human-readable report of one run.
pub fn render_step(r: &StepResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "tcp-rx over the {} link", r.link);
    let _ = writeln!(s, "  {}", r.link_description);
    let applies = if r.link == "direct" {
        " (mode and batch do not apply to the direct link: no netback)"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "  mode {}, MTU {}, batch {}, offload {}{applies}; profile {:?}; {:.2} s measured",
        r.mode.name(),
        r.mtu,
        r.batch,
        r.offload.map_or("(not recorded)", Offload::name),
        r.profile_mode,
        r.seconds
    );
    if let Some(p) = r.placement {
        let _ = writeln!(s, "  placement: {p}");
    }
    if let Some(c) = &r.cross_cpu {
        let moved = if c.moved() {
            " -- MOVED during the run: the host placed this VM's vCPUs differently, so this \
             run's figures mix two machines; rerun before comparing"
        } else {
            ""
        };
        let _ = writeln!(s, "  cross-CPU round trip: {c}{moved}");
    }
    let _ = writeln!(
        s,
        "\n  throughput  {:.2} Gb/s goodput ({} bytes read by the guest)",
        r.throughput_gbps, r.bytes
    );
    let why: Vec<String> = r
        .link_stats
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(": {}", why.join(", "))
    };
    let _ = writeln!(
        s,
        "  packets     {:.3} M/s ({} frames received by the guest, {} segments sent on the wire; \
         {} dropped by the link{why})",
        r.packets_per_second / 1e6,
        r.packets,
        r.wire_packets,
        r.link_stats.dropped
    );
    let per_pkt = |n: u64| n as f64 / r.packets.max(1) as f64;
    let sleeps: Vec<String> = r
        .cpu
        .iter()
        .map(|c| {
            format!(
                "{} {:.3} (preempted {:.3})",
                c.name,
                per_pkt(c.sleeps),
                per_pkt(c.preemptions)
            )
        })
        .collect();
    let _ = writeln!(s, "  sleeps      per packet: {}", sleeps.join(", "));
    let _ = writeln!(
        s,
        "  notifies    {:.4} per packet (whole run, both ways)",
        per_pkt(r.link_stats.notifies)
    );
    let _ = write!(s, "  CPU         ");
    let cpu: Vec<String> = r
        .cpu
        .iter()
        .map(|c| {
            let who = if c.name == format!("dom{}", c.domid) {
                c.name.clone()
            } else {
                format!("{} (dom{})", c.name, c.domid)
            };
            if c.cpu_seconds > 0.0 {
                let ns = c.cpu_seconds * 1e9 / r.packets.max(1) as f64;
                format!("{who} {:.0}% ({ns:.0} ns/packet)", c.utilization * 100.0)
            } else {
                format!("{who} {:.0}%", c.utilization * 100.0)
            }
        })
        .collect();
    let _ = writeln!(s, "{}  (100% = one core busy)", cpu.join(", "));
    let _ = writeln!(s, "\n  dom0 + xen cycles per packet by class:");
    if r.profile_mode != ProfileMode::Exact {
        let _ = writeln!(s, "    not measured (run with --profile exact)");
    } else {
        let mut any = false;
        for (class, v) in &r.cycles_per_packet {
            let v = v.unwrap_or(0.0);
            if v > 0.0 {
                any = true;
                let _ = writeln!(s, "    {class:<16} {v:>10.1}");
            }
        }
        if !any {
            let _ = writeln!(s, "    none: no driver-domain work on this link");
        }
        for (dom, classes) in &r.cycles_per_packet_by_domain {
            let total: f64 = classes.values().sum();
            if total > 0.0 && dom != "dom0" {
                let top: Vec<String> = sorted(classes)
                    .iter()
                    .take(4)
                    .map(|(c, v)| format!("{c} {v:.0}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "  {dom}: {total:.0} cycles per packet (all contexts; {})",
                    top.join(", ")
                );
            }
        }
    }
    if let Some(f) = &r.floor {
        let _ = write!(s, "{}", render_floor(f));
    }
    let _ = writeln!(
        s,
        "\n  Kernel / Xen / User split ({}): {:.1}% / {:.1}% / {:.1}%",
        r.split.metric, r.split.kernel, r.split.xen, r.split.user
    );
    let metric = if r.profile_mode == ProfileMode::Exact {
        Metric::Cycles
    } else {
        Metric::Samples
    };
    if r.profile_mode != ProfileMode::Off {
        let _ = writeln!(s, "\n{}", xenoprof_report::render(&r.profile, metric, 10));
    }
    s
}

/// The backend's cost per KiB delivered against the memcpy floor, as the report prints it.
pub fn render_floor(f: &crate::floor::Floor) -> String {
    let left_out: Vec<String> = f
        .excluded_cycles_per_kib
        .iter()
        .map(|(c, v)| format!("{c} {v:.0}"))
        .collect();
    let goal = if f.ratio <= crate::floor::GOAL_RATIO {
        "within"
    } else {
        "over"
    };
    format!(
        "\n  cost per KiB delivered into the guest (dom0 + xen cycles):\n    backend {:>8.0}  \
         (netback, bridge, grant copies and the Xen work they call)\n    memcpy  {:>8.0}  \
         (the same bytes in {} B copies, {:.0} MiB, median 1 MiB block; fastest {:.0})\n    ratio   \
         {:>8.2}x  ({goal} the {:.1}x goal)\n    left out: {}\n",
        f.backend_cycles_per_kib,
        f.memcpy_cycles_per_kib,
        f.memcpy_chunk,
        f.memcpy_bytes as f64 / (1u64 << 20) as f64,
        f.memcpy_min_cycles_per_kib,
        f.ratio,
        crate::floor::GOAL_RATIO,
        if left_out.is_empty() {
            "nothing".into()
        } else {
            left_out.join(", ")
        }
    )
}

/// Non-zero entries of `m`, largest first.
fn sorted(m: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = m
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// Runs the experiment over `link` and builds its result, labelled `step`.
pub fn run_step<L: crate::link::Link>(
    step: &str,
    link: &mut L,
    cfg: &RunConfig,
) -> Result<StepResult, Error> {
    let m = crate::tcp_rx::run(link, cfg)?;
    Ok(StepResult::new(step, cfg, m))
}
