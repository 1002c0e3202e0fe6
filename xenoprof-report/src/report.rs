//! The seed-shaped text table.
//!
//! For each monitored domain: a Kernel column and a Xen column, each a list of
//! `samples  %  class` rows sorted by value, the classes past the top N folded into an "other"
//! row, and a TOTAL row; then the domain's User figure. Percentages are of the domain's total
//! (all three contexts), as in the seed, so a domain's Kernel, Xen and User totals add up to
//! 100%. After the domains, the overall Kernel / Xen / User split over all monitored domains.
//! The same table can be drawn from exact-mode cycles ([`Metric::Cycles`]).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use xenoprof::hooks::{Context, DomId};

use crate::profile::{DomainProfile, Profile, Role, Row};

/// Which figure a table or diff shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Sampler hits.
    Samples,
    /// Exact-mode TSC cycles.
    Cycles,
    /// Exact-mode scope entries.
    Calls,
}

impl Metric {
    /// The figure of `row`.
    pub fn of(self, row: &Row) -> u64 {
        match self {
            Metric::Samples => row.samples,
            Metric::Cycles => row.cycles,
            Metric::Calls => row.calls,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Samples => "samples",
            Metric::Cycles => "cycles",
            Metric::Calls => "calls",
        }
    }
}

/// One line of a column.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    /// Class name, "other" or "TOTAL".
    pub class: String,
    /// The figure.
    pub value: u64,
    /// Percent of the domain's total.
    pub percent: f64,
}

/// One context's column of a domain table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The context.
    pub context: Context,
    /// The top classes, largest first (never the class "other").
    pub rows: Vec<TableRow>,
    /// The class "other" plus every class past the top N (for a passive domain: everything).
    pub other: TableRow,
    /// The column's total.
    pub total: TableRow,
}

/// One domain's table.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainTable {
    /// The domain.
    pub domid: DomId,
    /// Its role.
    pub role: Role,
    /// vCPUs seen.
    pub vcpus: u32,
    /// Total over all contexts: the 100% of this table.
    pub total: u64,
    /// The Kernel column.
    pub kernel: Column,
    /// The Xen column ("in domN context").
    pub xen: Column,
    /// The User column (printed as one line, as the seed did).
    pub user: Column,
}

/// The overall Kernel / Xen / User split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Split {
    /// Total over all monitored domains.
    pub total: u64,
    /// Percent in the domains' kernels.
    pub kernel: f64,
    /// Percent in Xen.
    pub xen: f64,
    /// Percent in user space.
    pub user: f64,
}

fn pct(v: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        v as f64 * 100.0 / total as f64
    }
}

fn column(d: &DomainProfile, ctx: Context, metric: Metric, top: usize, total: u64) -> Column {
    let mut classes: Vec<(&str, u64)> = Vec::new();
    let mut other = 0u64;
    for r in d.rows.iter().filter(|r| r.context == ctx) {
        let v = metric.of(r);
        match r.class.as_deref() {
            Some(c) if c != "other" => classes.push((c, v)),
            _ => other += v,
        }
    }
    classes.retain(|&(_, v)| v > 0);
    classes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    other += classes.iter().skip(top).map(|&(_, v)| v).sum::<u64>();
    classes.truncate(top);
    let col_total = classes.iter().map(|&(_, v)| v).sum::<u64>() + other;
    let row = |class: &str, value| TableRow {
        class: class.to_string(),
        value,
        percent: pct(value, total),
    };
    Column {
        context: ctx,
        rows: classes.iter().map(|&(c, v)| row(c, v)).collect(),
        other: row("other", other),
        total: row("TOTAL", col_total),
    }
}

/// The table of one domain, with at most `top` class rows per column.
pub fn domain_table(d: &DomainProfile, metric: Metric, top: usize) -> DomainTable {
    let total = d.total(None, metric);
    DomainTable {
        domid: d.domid,
        role: d.role,
        vcpus: d.vcpus,
        total,
        kernel: column(d, Context::Kernel, metric, top, total),
        xen: column(d, Context::Xen, metric, top, total),
        user: column(d, Context::User, metric, top, total),
    }
}

/// The overall split over all monitored domains.
pub fn split(p: &Profile, metric: Metric) -> Split {
    let total = p.total(None, metric);
    Split {
        total,
        kernel: pct(p.total(Some(Context::Kernel), metric), total),
        xen: pct(p.total(Some(Context::Xen), metric), total),
        user: pct(p.total(Some(Context::User), metric), total),
    }
}

fn cells(col: &Column, passive: bool) -> Vec<String> {
    let line = |r: &TableRow, label: &str| format!("{:>12} {:>8.4}  {label}", r.value, r.percent);
    let mut out: Vec<String> = col.rows.iter().map(|r| line(r, &r.class)).collect();
    if col.other.value > 0 || !passive {
        out.push(line(
            &col.other,
            if passive {
                "(no class detail)"
            } else {
                "other"
            },
        ));
    }
    out.push(line(&col.total, "TOTAL"));
    out
}

/// The seed-shaped table for every monitored domain, then the overall split.
pub fn render(p: &Profile, metric: Metric, top: usize) -> String {
    let mut s = String::new();
    let m = metric.name();
    let _ = writeln!(
        s,
        "xenoprof profile {:?}: {} by domain, context and class",
        p.label, m
    );
    for d in &p.domains {
        let t = domain_table(d, metric, top);
        let passive = !d.role.has_class_detail();
        let _ = writeln!(
            s,
            "\ncode profile for dom{} ({}, {} vCPU{}): {} {m}",
            t.domid,
            t.role.name(),
            t.vcpus,
            if t.vcpus == 1 { "" } else { "s" },
            t.total
        );
        let w = 44;
        let left = format!("Kernel (dom{})", t.domid);
        let _ = writeln!(s, "{left:<w$}Xen (in dom{} context)", t.domid);
        let head = format!("{m:>12} {:>8}  class", "%");
        let _ = writeln!(s, "{head:<w$}{head}");
        let (k, x) = (cells(&t.kernel, passive), cells(&t.xen, passive));
        for i in 0..k.len().max(x.len()) {
            let left = k.get(i).map_or("", String::as_str);
            let right = x.get(i).map_or("", String::as_str);
            let line = format!("{left:<w$}{right}");
            let _ = writeln!(s, "{}", line.trim_end());
        }
        let _ = writeln!(
            s,
            "User (dom{}): {} {m}, {:.4}%",
            t.domid, t.user.total.value, t.user.total.percent
        );
    }
    let sp = split(p, metric);
    let _ = writeln!(
        s,
        "\nTotal # {m} in experiment ({} monitored domain{}): {}",
        p.domains.len(),
        if p.domains.len() == 1 { "" } else { "s" },
        sp.total
    );
    let _ = writeln!(s, "Kernel: {:.1}%", sp.kernel);
    let _ = writeln!(s, "Xen: {:.1}%", sp.xen);
    let _ = writeln!(s, "User: {:.1}%", sp.user);
    let discarded: u64 = p.discarded_samples.values().sum();
    if discarded > 0 && metric == Metric::Samples {
        let doms: Vec<String> = p
            .discarded_samples
            .keys()
            .map(|d| format!("dom{d}"))
            .collect();
        let _ = writeln!(
            s,
            "({discarded} samples of unmonitored domains discarded: {})",
            doms.join(", ")
        );
    }
    s
}

/// OProfile's "Function / Module" table of PC samples, `top` rows.
#[cfg(feature = "pc-sampling")]
pub fn render_functions(pc: &crate::pc::PcProfile, top: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "PC samples (cpu-clock at {} Hz, {:?} scope): {} samples, {} lost",
        pc.freq_hz, pc.scope, pc.samples, pc.lost
    );
    let _ = writeln!(s, "{:>8} {:>8}  {:<48} module", "samples", "%", "function");
    for f in pc.functions.iter().take(top) {
        let mut name = f.function.clone();
        if name.len() > 48 {
            let mut cut = 45;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
            name.push_str("...");
        }
        let module = match &f.krate {
            Some(k) => format!("{} ({k})", f.module),
            None => f.module.clone(),
        };
        let _ = writeln!(
            s,
            "{:>8} {:>8.4}  {name:<48} {module}",
            f.samples,
            pct(f.samples, pc.samples)
        );
    }
    s
}
