//! `bench many`'s text report and the JSON keys scripts rely on.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{Check, ManyResult, RunFigures, median};

/// Top-level keys every `many` JSON object carries.
pub const REQUIRED_KEYS: &[&str] = &[
    "vifs",
    "seconds",
    "per_vif_gbps",
    "jain",
    "cycles_per_packet",
    "cycles_per_packet_one_vif",
    "memory_per_vif_kib",
    "memory_per_vif_kib_rss",
    "memory_target_basis",
    "checks",
    "one_vif",
    "many",
];

fn verdict(c: &Check) -> &'static str {
    if c.met { "met" } else { "MISSED" }
}

fn spread(x: &[f64]) -> (f64, f64, f64) {
    let min = x.iter().copied().fold(f64::INFINITY, f64::min);
    let max = x.iter().copied().fold(0.0, f64::max);
    (min.min(max), median(x), max)
}

/// The human-readable report.
pub fn render(r: &ManyResult) -> String {
    let (one, many) = (&r.one_vif, &r.many);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "many: {} vifs on one backend beside one vif, {:.2} s measured per run (MTU {}, copy, \
         batch {})",
        r.vifs, r.seconds, r.mtu, r.batch
    );
    let _ = writeln!(
        s,
        "  one remote host (one smoltcp interface, a TCP stream per guest) -> wire -> dom0 \
         netback + bridge-lite -> {} guests (netfront + smoltcp, one vCPU thread each)",
        r.vifs
    );
    let _ = writeln!(s);
    let col = |label: &str, a: String, b: String| format!("  {label:<32}{a:>12}{b:>22}\n");
    s += &col(
        "",
        "1 vif".into(),
        format!("{} vif{}", many.vifs, if many.vifs == 1 { "" } else { "s" }),
    );
    s += &col(
        "goodput, all (Gb/s)",
        format!("{:.3}", one.total_gbps),
        format!("{:.3}", many.total_gbps),
    );
    let (lo, mid, hi) = spread(&many.per_vif_gbps);
    s += &col(
        "per vif min/median/max",
        format!("{:.3}", one.total_gbps),
        format!("{lo:.3}/{mid:.3}/{hi:.3}"),
    );
    s += &col(
        "Jain's index",
        format!("{:.4}", one.jain),
        format!("{:.4}", many.jain),
    );
    s += &col(
        "packets (M/s)",
        format!("{:.3}", one.packets as f64 / one.seconds / 1e6),
        format!("{:.3}", many.packets as f64 / many.seconds / 1e6),
    );
    s += &col(
        "dom0 cycles/packet (xenoprof)",
        format!("{:.0}", one.cycles_per_packet),
        format!("{:.0}", many.cycles_per_packet),
    );
    s += &col(
        "dom0 CPU cycles/pkt (schedstat)",
        format!("{:.0}", one.cpu_cycles_per_packet),
        format!("{:.0}", many.cpu_cycles_per_packet),
    );
    s += &col(
        "dom0 run-queue wait cycles/pkt",
        format!("{:.0}", one.wait_cycles_per_packet),
        format!("{:.0}", many.wait_cycles_per_packet),
    );
    for (name, a, b) in [
        ("CPU dom0 (cores)", &one.dom0, &many.dom0),
        ("CPU guests (cores)", &one.guests, &many.guests),
        ("CPU remote (cores)", &one.remote, &many.remote),
    ] {
        s += &col(name, format!("{:.2}", a.cores), format!("{:.2}", b.cores));
    }
    s += &col(
        "guest cycles/packet",
        format!("{:.0}", one.guests.cycles_per_packet),
        format!("{:.0}", many.guests.cycles_per_packet),
    );
    s += &col(
        "remote cycles/packet",
        format!("{:.0}", one.remote.cycles_per_packet),
        format!("{:.0}", many.remote.cycles_per_packet),
    );
    s += &col(
        "notifies/packet",
        format!("{:.4}", one.notifies_per_packet),
        format!("{:.4}", many.notifies_per_packet),
    );
    s += &col(
        "grant copies/hypercall",
        format!("{:.1}", one.grant_ops_per_hypercall),
        format!("{:.1}", many.grant_ops_per_hypercall),
    );
    s += &col(
        "backend KiB/vif",
        format!("{:.1}", one.memory.backend_per_vif_kib),
        format!("{:.1}", many.memory.backend_per_vif_kib),
    );
    s += &col(
        "RSS KiB/vif",
        format!("{:.1}", one.memory.rss_per_vif_kib),
        format!("{:.1}", many.memory.rss_per_vif_kib),
    );
    s += &col(
        "rx queue peak max (B)",
        one.queues.peak_bytes_max.to_string(),
        many.queues.peak_bytes_max.to_string(),
    );
    s += &col(
        "rx queue peak median (B)",
        format!("{:.0}", one.queues.peak_bytes_median),
        format!("{:.0}", many.queues.peak_bytes_median),
    );
    s += &col(
        "rx queue peak max (pages)",
        one.queues.peak_pages_max.to_string(),
        many.queues.peak_pages_max.to_string(),
    );
    s += &col(
        "drops: queue full/expired",
        format!("{}/{}", one.drops.rx_queue_full, one.drops.rx_expired),
        format!("{}/{}", many.drops.rx_queue_full, many.drops.rx_expired),
    );
    s += &col(
        "drops: uplink",
        one.drops.uplink.to_string(),
        many.drops.uplink.to_string(),
    );
    let _ = writeln!(s);
    for (label, run) in [("1 vif", one), ("scaled run", many)] {
        if let Some(c) = &run.cross_cpu {
            let moved = if c.moved() {
                " -- MOVED during the run: the host placed this VM's vCPUs differently, so the \
                 ratios below mix two machines; rerun before comparing"
            } else {
                ""
            };
            let _ = writeln!(s, "  cross-CPU round trip, {label}: {c}{moved}");
        }
    }
    let _ = writeln!(s, "  targets ({} vifs):", r.vifs);
    let c = &r.checks;
    let _ = writeln!(
        s,
        "    Jain's index {:.4} (target {}): {}",
        c.jain.value,
        c.jain.target,
        verdict(&c.jain)
    );
    let _ = writeln!(
        s,
        "    dom0 cycles/packet {:.2}x one vif (target {}): {}",
        c.cycles_per_packet.value,
        c.cycles_per_packet.target,
        verdict(&c.cycles_per_packet)
    );
    let _ = writeln!(
        s,
        "    dom0 CPU cycles/packet {:.2}x one vif (cross-check, preemption excluded): {}",
        c.cpu_cycles_per_packet.value,
        verdict(&c.cpu_cycles_per_packet)
    );
    let _ = writeln!(
        s,
        "    memory per vif {:.1} KiB (target {}): {}",
        c.memory_per_vif.value,
        c.memory_per_vif.target,
        verdict(&c.memory_per_vif)
    );
    let _ = writeln!(
        s,
        "    rx queues: peak {} B of a {} B cap, {} pages of a {}-page share: {}",
        many.queues.peak_bytes_max,
        many.queues.cap_bytes,
        many.queues.peak_pages_max,
        many.queues.share_pages,
        if c.queues_bounded.met {
            "bounded"
        } else {
            "NOT BOUNDED"
        }
    );
    let m = &many.memory;
    let kib = |b: Option<i64>| {
        b.map_or("not counted".to_string(), |h| {
            format!("{:+.1} KiB", h as f64 / 1024.0)
        })
    };
    let heap = format!(
        "{} ({} once connected)",
        kib(m.heap_growth_bytes),
        kib(m.heap_connected_bytes)
    );
    let _ = writeln!(
        s,
        "    backend memory: pool {} -> {} pages, {} ring pages, heap {heap}; RSS {} -> {} KiB \
         (everything, guests included)",
        m.pool_pages_before,
        m.pool_pages_streaming,
        m.ring_pages,
        m.rss_before_kib,
        m.rss_streaming_kib
    );
    let _ = writeln!(s);
    s += &render_classes(one, many);
    s
}

/// dom0's cycles per packet by class, both runs side by side.
fn render_classes(one: &RunFigures, many: &RunFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  dom0 cycles per packet by class (xenoprof exact, every context):"
    );
    let _ = writeln!(
        s,
        "    {:<16}{:>12}{:>12}{:>10}",
        "class", "1 vif", many.vifs, "change"
    );
    let names: BTreeSet<&String> = one
        .cycles_per_packet_by_class
        .keys()
        .chain(many.cycles_per_packet_by_class.keys())
        .collect();
    for name in names {
        let a = one.cycles_per_packet_by_class.get(name).copied();
        let b = many.cycles_per_packet_by_class.get(name).copied();
        let (a0, b0) = (a.unwrap_or(0.0), b.unwrap_or(0.0));
        let _ = writeln!(s, "    {name:<16}{a0:>12.1}{b0:>12.1}{:>+10.1}", b0 - a0);
    }
    let _ = writeln!(
        s,
        "    {:<16}{:>12.1}{:>12.1}{:>+10.1}",
        "all",
        one.cycles_per_packet,
        many.cycles_per_packet,
        many.cycles_per_packet - one.cycles_per_packet
    );
    s
}
