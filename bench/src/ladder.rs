//! The optimization ladder: five configurations of the splitnet path, run in order, and what
//! each saves against the one before it in the classes the seed blamed (`mm`, `grant_table`,
//! `bridge`) and the ones offloads move (`netback`, `copy`): page flipping, grant copy one
//! hypercall per packet, batched grant copy, then checksum offload, then GSO/GRO. The first
//! three run without offloads so each step changes one thing.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::Error;
use crate::link::{Link, Offload, RxMode};
use crate::report::{StepResult, run_step};
use crate::tcp_rx::RunConfig;

/// One rung of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LadderStep {
    /// Short label for tables, JSON and the chart.
    pub name: &'static str,
    /// Netback's receive mode.
    pub mode: RxMode,
    /// Grant operations per hypercall (1: one hypercall per packet).
    pub batch: usize,
    /// What netfront negotiates.
    pub offload: Offload,
}

/// The ladder, in the order it runs.
pub const STEPS: [LadderStep; 5] = [
    LadderStep {
        name: "rx-flip, 1 hypercall/packet",
        mode: RxMode::Flip,
        batch: 1,
        offload: Offload::None,
    },
    LadderStep {
        name: "rx-copy, unbatched",
        mode: RxMode::Copy,
        batch: 1,
        offload: Offload::None,
    },
    LadderStep {
        name: "rx-copy, batched 64",
        mode: RxMode::Copy,
        batch: 64,
        offload: Offload::None,
    },
    LadderStep {
        name: "+ checksum offload",
        mode: RxMode::Copy,
        batch: 64,
        offload: Offload::Csum,
    },
    LadderStep {
        name: "+ GSO/GRO",
        mode: RxMode::Copy,
        batch: 64,
        offload: Offload::Gso,
    },
];

/// The classes whose savings the ladder reports.
pub const FOCUS: [&str; 5] = ["mm", "grant_table", "bridge", "netback", "copy"];

/// Runs the ladder: for each of [`STEPS`], a fresh link from `new_link` and one run with
/// `base` (its mode and batch replaced by the step's). Stops at the first failure.
pub fn run_ladder<L: Link>(
    mut new_link: impl FnMut() -> Result<L, Error>,
    base: &RunConfig,
) -> Result<Vec<StepResult>, Error> {
    let mut out = Vec::with_capacity(STEPS.len());
    for step in STEPS {
        let mut cfg = base.clone();
        cfg.link.mode = step.mode;
        cfg.link.batch = step.batch;
        cfg.link.offload = step.offload;
        let mut link = new_link()?;
        out.push(run_step(step.name, &mut link, &cfg)?);
    }
    Ok(out)
}

/// Cycles one class saved from one step to the next: per packet, or per KiB of goodput when
/// the steps negotiate different offloads (a GSO packet carries up to 64 KiB, so per packet
/// would compare unlike things).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Saving {
    /// The class.
    pub class: String,
    /// "packet" or "KiB".
    pub unit: &'static str,
    /// Cycles per unit in the earlier step.
    pub before: f64,
    /// Cycles per unit in the later step.
    pub after: f64,
    /// `before - after`: negative when the later step is worse.
    pub saved: f64,
    /// `saved` as a percentage of `before` (`None` when `before` is 0).
    pub percent: Option<f64>,
}

impl Saving {
    /// Whether the later step made this class worse.
    pub fn is_worse(&self) -> bool {
        self.saved < 0.0
    }
}

/// Savings in the [`FOCUS`] classes from `prev` to `cur`.
pub fn savings(prev: &StepResult, cur: &StepResult) -> Vec<Saving> {
    let per_kib = prev.offload != cur.offload;
    FOCUS
        .iter()
        .map(|&class| {
            let (before, after) = if per_kib {
                (prev.cpk(class), cur.cpk(class))
            } else {
                (prev.cpp(class), cur.cpp(class))
            };
            let saved = before - after;
            Saving {
                class: class.to_string(),
                unit: if per_kib { "KiB" } else { "packet" },
                before,
                after,
                saved,
                percent: (before > 0.0).then(|| saved / before * 100.0),
            }
        })
        .collect()
}

/// Classes with a non-zero dom0 + xen figure in any step, focus classes first.
pub fn classes_in(steps: &[StepResult]) -> Vec<String> {
    let mut rest = BTreeSet::new();
    for s in steps {
        for (c, v) in &s.cycles_per_packet {
            if v.unwrap_or(0.0) > 0.0 && !FOCUS.contains(&c.as_str()) {
                rest.insert(c.clone());
            }
        }
    }
    FOCUS.iter().map(|c| c.to_string()).chain(rest).collect()
}

/// One line describing a saving: "saved N (P%)", or "WORSE by N (P%)".
pub fn describe(s: &Saving) -> String {
    let pct = s
        .percent
        .map(|p| format!(" ({:.1}%)", p.abs()))
        .unwrap_or_default();
    if s.is_worse() {
        format!(
            "{:<12} WORSE by {:.1} cycles/{}{pct}  ({:.1} -> {:.1})",
            s.class, -s.saved, s.unit, s.before, s.after
        )
    } else {
        format!(
            "{:<12} saved {:.1} cycles/{}{pct}  ({:.1} -> {:.1})",
            s.class, s.saved, s.unit, s.before, s.after
        )
    }
}

/// The ladder's text report: throughput per step, dom0 + xen cycles per packet by class per
/// step, then the savings in the focus classes between consecutive steps.
pub fn render_ladder(steps: &[StepResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "optimization ladder, {} steps", steps.len());
    for (i, r) in steps.iter().enumerate() {
        let _ = writeln!(
            s,
            "  ({}) {:<28} {:>7.2} Gb/s  {:>8.3} Mpps  (link {}, MTU {}, mode {}, batch {}, \
             offload {})",
            i + 1,
            r.step,
            r.throughput_gbps,
            r.packets_per_second / 1e6,
            r.link,
            r.mtu,
            r.mode.name(),
            r.batch,
            r.offload.map_or("?", Offload::name)
        );
        if let Some(c) = r.cross_cpu.as_ref().filter(|c| c.moved()) {
            let _ = writeln!(
                s,
                "      cross-CPU round trip {c}: the host moved the vCPUs during this step; \
                 rerun before comparing it"
            );
        }
    }
    if let Some(p) = steps.first().and_then(|r| r.placement) {
        let _ = writeln!(s, "  placement: {p}");
    }
    let classes = classes_in(steps);
    let _ = writeln!(s, "\ndom0 + xen cycles per packet by class:");
    let _ = write!(s, "  {:<14}", "class");
    for i in 0..steps.len() {
        let _ = write!(s, "{:>12}", format!("({})", i + 1));
    }
    let _ = writeln!(s);
    for c in &classes {
        let _ = write!(s, "  {c:<14}");
        for r in steps {
            let _ = match r.cycles_per_packet.get(c).copied().flatten() {
                Some(v) => write!(s, "{v:>12.1}"),
                None => write!(s, "{:>12}", "n/a"),
            };
        }
        let _ = writeln!(s);
    }
    let total =
        |r: &StepResult| -> f64 { r.cycles_per_packet.values().map(|v| v.unwrap_or(0.0)).sum() };
    let _ = write!(s, "  {:<14}", "TOTAL");
    for r in steps {
        let _ = write!(s, "{:>12.1}", total(r));
    }
    let _ = writeln!(s);
    // Per KiB of goodput: the figure that stays comparable when a step changes what a packet
    // carries (a GSO super-frame is one packet of up to 64 KiB).
    let _ = writeln!(s, "\ndom0 + xen cycles per KiB of goodput by class:");
    for c in &classes {
        let _ = write!(s, "  {c:<14}");
        for r in steps {
            let _ = match r.cycles_per_packet.get(c).copied().flatten() {
                Some(_) => write!(s, "{:>12.1}", r.cpk(c)),
                None => write!(s, "{:>12}", "n/a"),
            };
        }
        let _ = writeln!(s);
    }
    let _ = write!(s, "  {:<14}", "TOTAL");
    for r in steps {
        let per_kib = total(r) * r.packets as f64 / (r.bytes.max(1) as f64 / 1024.0);
        let _ = write!(s, "{per_kib:>12.1}");
    }
    let _ = writeln!(s);
    for i in 1..steps.len() {
        let _ = writeln!(
            s,
            "\n({}) -> ({}): {} -> {}",
            i,
            i + 1,
            steps[i - 1].step,
            steps[i].step
        );
        for sv in savings(&steps[i - 1], &steps[i]) {
            let _ = writeln!(s, "  {}", describe(&sv));
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::link::LinkStats;
    use crate::report::Split;
    use crate::tcp_rx::ProfileMode;
    use std::collections::BTreeMap;

    /// A step result made up for tests: NOT a measurement.
    pub(crate) fn synthetic(step: &LadderStep, cpp: &[(&str, f64)]) -> StepResult {
        let mut cycles: BTreeMap<String, Option<f64>> = xenoprof::Class::all()
            .into_iter()
            .map(|c| (c.name().to_string(), Some(0.0)))
            .collect();
        for &(c, v) in cpp {
            cycles.insert(c.to_string(), Some(v));
        }
        StepResult {
            step: step.name.into(),
            link: "synthetic-test-data".into(),
            link_description: "synthetic test data, not a measurement".into(),
            mode: step.mode,
            mtu: 1500,
            batch: step.batch,
            seconds: 1.0,
            throughput_gbps: 1.0,
            bytes: 125_000_000,
            packets: 86_000,
            wire_packets: 86_000,
            offload: Some(step.offload),
            placement: None,
            cross_cpu: None,
            packets_per_second: 86_000.0,
            profile_mode: ProfileMode::Exact,
            cycles_per_packet: cycles,
            cycles_per_packet_by_domain: BTreeMap::new(),
            cpu: Vec::new(),
            split: Split {
                metric: "cycles".into(),
                kernel: 50.0,
                xen: 50.0,
                user: 0.0,
            },
            link_stats: LinkStats::default(),
            floor: None,
            profile: xenoprof_report::Profile::new("synthetic"),
        }
    }

    pub(crate) fn three() -> Vec<StepResult> {
        vec![
            synthetic(
                &STEPS[0],
                &[("mm", 4000.0), ("grant_table", 900.0), ("bridge", 50.0)],
            ),
            synthetic(
                &STEPS[1],
                &[
                    ("mm", 100.0),
                    ("grant_table", 600.0),
                    ("bridge", 50.0),
                    ("copy", 300.0),
                ],
            ),
            synthetic(
                &STEPS[2],
                &[
                    ("mm", 100.0),
                    ("grant_table", 200.0),
                    ("bridge", 70.0),
                    ("copy", 300.0),
                ],
            ),
        ]
    }

    #[test]
    fn savings_are_before_minus_after_with_percent() {
        let st = three();
        let s = savings(&st[0], &st[1]);
        assert_eq!(s.len(), FOCUS.len());
        assert_eq!(s[0].class, "mm");
        assert_eq!(s[0].saved, 3900.0);
        assert_eq!(s[0].percent, Some(97.5));
        assert!(!s[0].is_worse());
        assert_eq!(s[2].saved, 0.0);
        let s = savings(&st[1], &st[2]);
        assert!(s[2].is_worse(), "bridge went from 50 to 70");
        assert_eq!(s[1].percent.map(|p| p.round()), Some(67.0));
    }

    #[test]
    fn zero_before_has_no_percent() {
        let a = synthetic(&STEPS[1], &[]);
        let b = synthetic(&STEPS[2], &[("bridge", 5.0)]);
        let s = savings(&a, &b);
        assert_eq!(s[2].percent, None);
        assert!(describe(&s[2]).contains("WORSE by 5.0"));
    }

    #[test]
    fn report_shows_every_step_class_and_worse_step() {
        let text = render_ladder(&three());
        for step in &STEPS[..3] {
            assert!(text.contains(step.name), "{text}");
        }
        assert!(
            text.contains("copy"),
            "non-focus classes with work are listed"
        );
        assert!(
            !text.contains("find_domain"),
            "classes with no work are left out"
        );
        assert!(
            text.contains("mm           saved 3900.0 cycles/packet (97.5%)"),
            "{text}"
        );
        assert!(
            text.contains("bridge       WORSE by 20.0 cycles/packet (40.0%)"),
            "{text}"
        );
        assert!(
            text.contains("copy         WORSE by 300.0 cycles/packet  (0.0 -> 300.0)"),
            "a class that appears is worse, with no percentage: {text}"
        );
        assert_eq!(text.matches("WORSE").count(), 2, "{text}");
    }

    #[test]
    fn a_step_whose_cpus_moved_is_flagged_and_a_steady_one_is_not() {
        use crate::placement::{CrossCpu, Placement};
        let mut st = three();
        let probe = |before, after| CrossCpu {
            cpus: (0, 1),
            before_ns: Some(before),
            during_ns: vec![before, after],
            after_ns: Some(after),
        };
        st[0].cross_cpu = Some(probe(64.0, 66.0));
        // A far probe before the warm-up alone does not flag the step.
        st[2].cross_cpu = Some(CrossCpu {
            before_ns: Some(310.0),
            during_ns: vec![64.0, 62.0],
            ..probe(64.0, 63.0)
        });
        st[1].cross_cpu = Some(probe(63.0, 321.0));
        st[0].placement = Some(Placement::over(&[0, 1]));
        let text = render_ladder(&st);
        assert_eq!(text.matches("moved the vCPUs").count(), 1, "{text}");
        assert!(
            text.contains("63 ns before, 63/321 ns during, 321 ns after"),
            "{text}"
        );
        assert!(
            text.contains("placement: dom0 on CPU 0, guest on CPU 0"),
            "{text}"
        );
        let one = crate::report::render_step(&st[1]);
        assert!(one.contains("MOVED during the run"), "{one}");
        assert!(!crate::report::render_step(&st[0]).contains("MOVED"));
    }

    #[test]
    fn unmeasured_classes_show_as_not_available() {
        let mut st = three();
        st[1].cycles_per_packet.insert("mm".into(), None);
        assert!(render_ladder(&st).contains("n/a"));
    }

    #[test]
    fn step_json_round_trips_with_required_keys() {
        let st = three();
        let v = serde_json::to_value(&st).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 3);
        for o in arr {
            for key in crate::report::REQUIRED_KEYS {
                assert!(o.get(*key).is_some(), "missing {key}");
            }
            let cpp = o["cycles_per_packet"].as_object().unwrap();
            for c in crate::report::REQUIRED_CLASSES {
                assert!(cpp.contains_key(*c), "cycles_per_packet lacks {c}");
            }
        }
        assert_eq!(arr[0]["mode"], "flip");
        let back: Vec<StepResult> = serde_json::from_value(v).unwrap();
        assert_eq!(back, st);
    }
}
