//! Counters as a person reads them and as JSON: per vif, per switch and its ports, per uplink,
//! per embedded guest.

use std::fmt::Write as _;
use std::path::Path;

use bridge_lite::{DropReason, PortKind};
use guest::GuestReport;
use netback::NetbackSnapshot;
use serde::Serialize;

/// Everything printed at once.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds since netbackd started.
    pub uptime_s: f64,
    /// The backend's counters.
    pub backend: NetbackSnapshot,
    /// The embedded guests (empty with --xen).
    pub guests: Vec<GuestReport>,
    /// Hypervisor-wide counters, if the hypervisor reports any.
    pub hypervisor: Option<serde_json::Value>,
}

fn drops(d: &bridge_lite::DropCounts) -> String {
    let parts: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| d.get(**r) > 0)
        .map(|r| format!("{}={}", r.name(), d.get(*r)))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

impl Report {
    /// The text form.
    pub fn text(&self) -> String {
        let b = &self.backend;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "netbackd counters at {:.1} s: {} vif(s), {} device(s), {} departed; grant copies {} in {} hypercalls; pool {} pages",
            self.uptime_s,
            b.vifs.len(),
            b.devices,
            b.departed_total,
            b.copy_ops,
            b.copy_hypercalls,
            b.pool_pages
        );
        if !b.vifs.is_empty() {
            let _ = writeln!(
                s,
                "  {:<9} {:>10} {:>12} {:>10} {:>12} {:>9} {:>10} {:>6}  drops / state",
                "vif",
                "rx pkts",
                "rx bytes",
                "tx pkts",
                "tx bytes",
                "grant ops",
                "hypercalls",
                "notify"
            );
            for (id, v) in &b.vifs {
                let mut d = vec![];
                for (name, n) in crate::metrics::vif_drops(v) {
                    if n > 0 {
                        d.push(format!("{name}={n}"));
                    }
                }
                if let Some(f) = &v.fatal {
                    d.push(format!("DISABLED: {f}"));
                } else if v.rx_stalled {
                    d.push("STALLED (guest posts no rx buffers; carrier off)".into());
                }
                let _ = writeln!(
                    s,
                    "  {:<9} {:>10} {:>12} {:>10} {:>12} {:>9} {:>10} {:>6}  {}",
                    id.to_string(),
                    v.rx_packets,
                    v.rx_bytes,
                    v.tx_packets,
                    v.tx_bytes,
                    v.grant_ops,
                    v.hypercalls,
                    v.notifies,
                    if d.is_empty() {
                        "-".into()
                    } else {
                        d.join(",")
                    }
                );
            }
        }
        let _ = writeln!(
            s,
            "  {:<14} {:>10} {:>12} {:>10} {:>12}  drops",
            "switch port", "rx frames", "rx bytes", "tx frames", "tx bytes"
        );
        for sw in &b.switches {
            // A named switch with nothing on it yet says nothing.
            if sw.bridge.ports.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "  switch {}{}:",
                sw.name,
                match sw.owner {
                    Some(id) => format!(" (host mode: {id} and its netdev)"),
                    None => String::new(),
                }
            );
            for p in &sw.bridge.ports {
                let name = match p.kind {
                    PortKind::Vif { domid, handle } => format!("vif{domid}.{handle}"),
                    PortKind::Uplink => sw
                        .uplinks
                        .iter()
                        .find(|(id, _)| *id == p.id)
                        .map_or_else(|| "uplink".into(), |(_, n)| n.clone()),
                };
                let _ = writeln!(
                    s,
                    "  {:<14} {:>10} {:>12} {:>10} {:>12}  {}{}",
                    name,
                    p.stats.rx_frames,
                    p.stats.rx_bytes,
                    p.stats.tx_frames,
                    p.stats.tx_bytes,
                    drops(&p.stats.drops),
                    if p.locked { "  (locked)" } else { "" }
                );
            }
        }
        for (name, _, u) in &b.uplinks {
            let _ = writeln!(
                s,
                "  uplink {name}: rx {} frames {} bytes (no buffer {}, errors {}, fill errors {}), tx {} frames {} bytes (dropped {}, errors {})",
                u.rx_frames,
                u.rx_bytes,
                u.rx_no_buffer,
                u.rx_errors,
                u.rx_fill_errors,
                u.tx_frames,
                u.tx_bytes,
                u.tx_dropped,
                u.tx_errors
            );
        }
        for g in &self.guests {
            let sv = &g.services;
            let _ = writeln!(
                s,
                "  guest {} (dom{}, {}): {}; netfront rx {} tx {} frames; echo {} conns {} B, discard {} conns {} B, iperf3 {} tests ({} aborted)",
                g.index,
                g.domid,
                g.addr,
                match (&g.error, g.connected) {
                    (Some(e), _) => format!("FAILED: {e}"),
                    (None, true) => "connected".into(),
                    (None, false) => "not connected".into(),
                },
                g.netfront.rx_packets,
                g.netfront.tx_packets,
                sv.echo.connections,
                sv.echo.bytes_in,
                sv.discard.connections,
                sv.discard.bytes_in,
                sv.iperf3_tests_completed,
                sv.iperf3_tests_aborted
            );
        }
        s
    }

    /// Writes the JSON form to `path` (through a temporary file, so a reader never sees half).
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, path)
    }
}
