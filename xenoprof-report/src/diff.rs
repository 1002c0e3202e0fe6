//! The diff of two profiles, normalised by a unit of work.
//!
//! Each (context, class) figure, summed over the monitored domains, is divided by the units of
//! work (packets, bytes) each run did. Per row: before, after, saved (before − after) and saved
//! as a percent of before. This is how "an optimisation shows up as cycles saved in `mm`" is read.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use xenoprof::hooks::Context;

use crate::error::Error;
use crate::profile::Profile;
use crate::report::Metric;

/// The unit of work to normalise by, and optionally the amounts (overriding the profiles').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    /// The unit's name, as in [`Profile::work`] ("packets", "bytes").
    pub unit: String,
    /// Units done in the before run; `None`: read from the before profile.
    pub before: Option<u64>,
    /// Units done in the after run; `None`: read from the after profile.
    pub after: Option<u64>,
}

impl Work {
    /// Normalise by `unit`, with the amounts the profiles recorded.
    pub fn recorded(unit: impl Into<String>) -> Work {
        Work {
            unit: unit.into(),
            before: None,
            after: None,
        }
    }
}

/// One row of a diff, per unit of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffRow {
    /// The context.
    #[serde(with = "crate::profile::ContextDef")]
    pub context: Context,
    /// The class (`None`: a passive domain's undivided figure; `Some("TOTAL")` for the total).
    pub class: Option<String>,
    /// Per unit before.
    pub before: f64,
    /// Per unit after.
    pub after: f64,
    /// `before - after` (negative: the after run spent more).
    pub saved: f64,
    /// `saved / before * 100`; `None` when before is zero.
    pub percent: Option<f64>,
}

/// A diff of two profiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// The compared figure.
    pub metric: Metric,
    /// The unit of work.
    pub unit: String,
    /// Units in the before run.
    pub before_work: u64,
    /// Units in the after run.
    pub after_work: u64,
    /// Rows, largest saving first.
    pub rows: Vec<DiffRow>,
    /// The sum over every row.
    pub total: DiffRow,
}

fn amount(
    p: &Profile,
    explicit: Option<u64>,
    unit: &str,
    side: &'static str,
) -> Result<u64, Error> {
    match explicit.or_else(|| p.work.get(unit).copied()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(Error::NoWork {
            unit: unit.to_string(),
            side,
        }),
    }
}

fn sums(p: &Profile, metric: Metric) -> BTreeMap<(Context, Option<String>), u64> {
    let mut m = BTreeMap::new();
    for d in &p.domains {
        for r in &d.rows {
            *m.entry((r.context, r.class.clone())).or_insert(0) += metric.of(r);
        }
    }
    m
}

fn row(context: Context, class: Option<String>, before: f64, after: f64) -> DiffRow {
    let saved = before - after;
    DiffRow {
        context,
        class,
        before,
        after,
        saved,
        percent: (before != 0.0).then(|| saved / before * 100.0),
    }
}

/// Diffs `before` against `after` per unit of `work`.
pub fn diff(before: &Profile, after: &Profile, metric: Metric, work: &Work) -> Result<Diff, Error> {
    let bw = amount(before, work.before, &work.unit, "before")?;
    let aw = amount(after, work.after, &work.unit, "after")?;
    let (b, a) = (sums(before, metric), sums(after, metric));
    let mut keys: Vec<_> = b.keys().chain(a.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    type Key = (Context, Option<String>);
    fn per(m: &BTreeMap<Key, u64>, k: &Key, w: u64) -> f64 {
        m.get(k).copied().unwrap_or(0) as f64 / w as f64
    }
    let mut rows: Vec<DiffRow> = keys
        .into_iter()
        .map(|k| {
            let (bv, av) = (per(&b, &k, bw), per(&a, &k, aw));
            row(k.0, k.1, bv, av)
        })
        .collect();
    rows.sort_by(|x, y| y.saved.total_cmp(&x.saved));
    let total = row(
        Context::Kernel,
        Some("TOTAL".into()),
        b.values().sum::<u64>() as f64 / bw as f64,
        a.values().sum::<u64>() as f64 / aw as f64,
    );
    Ok(Diff {
        metric,
        unit: work.unit.clone(),
        before_work: bw,
        after_work: aw,
        rows,
        total,
    })
}

/// The metric a diff of these two profiles should use: cycles when both have them, else samples.
pub fn default_metric(before: &Profile, after: &Profile) -> Metric {
    if before.total(None, Metric::Cycles) > 0 && after.total(None, Metric::Cycles) > 0 {
        Metric::Cycles
    } else {
        Metric::Samples
    }
}

/// The diff as a text table.
pub fn render_diff(d: &Diff) -> String {
    let mut s = String::new();
    let unit = d.unit.trim_end_matches('s');
    let _ = writeln!(
        s,
        "{} per {unit} (before: {} {}, after: {} {})",
        d.metric.name(),
        d.before_work,
        d.unit,
        d.after_work,
        d.unit
    );
    let _ = writeln!(
        s,
        "{:<24} {:>14} {:>14} {:>14} {:>9}",
        "context/class", "before", "after", "saved", "%"
    );
    let line = |s: &mut String, r: &DiffRow| {
        let name = format!(
            "{}/{}",
            r.context.name(),
            r.class.as_deref().unwrap_or("(passive)")
        );
        let name = if r.class.as_deref() == Some("TOTAL") {
            "TOTAL".into()
        } else {
            name
        };
        let pct = r
            .percent
            .map_or_else(|| "new".to_string(), |p| format!("{p:.2}"));
        let _ = writeln!(
            s,
            "{name:<24} {:>14.2} {:>14.2} {:>14.2} {pct:>9}",
            r.before, r.after, r.saved
        );
    };
    for r in &d.rows {
        line(&mut s, r);
    }
    line(&mut s, &d.total);
    s
}
