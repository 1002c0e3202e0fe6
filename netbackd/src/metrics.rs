//! `--metrics ADDR:PORT`: the counters in Prometheus' (OpenMetrics) text exposition at
//! `/metrics`, per vif, per switch port and per uplink, with labels.
//!
//! A scrape costs the data path nothing: the backend's loop publishes a snapshot of its
//! counters once a second ([`Latest::publish`], one copy of the counters it already keeps,
//! swapped in under a mutex held for a pointer's store); the metrics thread renders the latest
//! snapshot with `prometheus-client` and never looks at the backend itself. A scrape reads
//! counters at most a second old (`netbackd_snapshot_age_seconds` says how old).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_lite::{DropReason, PortKind};
use netback::{DeviceInfo, VifStats};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::report::Report;

/// How often the backend publishes a snapshot.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How long a client has to send its request.
const IO_DEADLINE: Duration = Duration::from_secs(2);

/// What the backend publishes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken.
    pub at: Instant,
    /// The counters.
    pub report: Report,
    /// Each device as served.
    pub devices: Vec<DeviceInfo>,
}

/// The latest published snapshot, shared between the backend (which writes it) and readers.
#[derive(Debug, Clone, Default)]
pub struct Latest(Arc<Mutex<Option<Arc<Snapshot>>>>);

impl Latest {
    /// Makes `snap` the latest.
    pub fn publish(&self, snap: Snapshot) {
        let snap = Arc::new(snap);
        // The lock is held for a pointer's swap; the old snapshot is dropped outside it.
        let old = self
            .0
            .lock()
            .map(|mut g| g.replace(snap))
            .unwrap_or_default();
        drop(old);
    }

    /// The latest snapshot, if one was published.
    pub fn get(&self) -> Option<Arc<Snapshot>> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

type Labels = Vec<(String, String)>;

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Guest-visible drop counters of a vif, by reason (the metrics' labels and the text report's
/// names).
pub(crate) fn vif_drops(v: &VifStats) -> [(&'static str, u64); 14] {
    [
        ("rx_queue_full", v.rx_queue_full),
        ("rx_expired", v.rx_expired),
        ("rx_copy_errors", v.rx_copy_errors),
        ("rx_unfit", v.rx_unfit),
        ("rx_gso_too_many_segs", v.rx_gso_too_many_segs),
        ("rx_discarded", v.rx_discarded),
        ("rx_stall_drops", v.rx_stall_drops),
        ("tx_runt", v.tx_runt),
        ("tx_too_many_slots", v.tx_too_many_slots),
        ("tx_oversize_slot", v.tx_oversize_slot),
        ("tx_copy_errors", v.tx_copy_errors),
        ("tx_no_buffer", v.tx_no_buffer),
        ("tx_csum_errors", v.tx_csum_errors),
        ("tx_rate_limited", v.tx_rate_limited),
    ]
}

/// The exposition of `snap`, as it was `age` ago.
pub fn render(snap: &Snapshot, age: Duration) -> String {
    let mut reg = Registry::with_prefix("netbackd");
    let b = &snap.report.backend;

    let single = |reg: &mut Registry, name: &str, help: &str, v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        reg.register(name, help, g);
    };
    single(
        &mut reg,
        "uptime_seconds",
        "Seconds since netbackd started",
        snap.report.uptime_s as i64,
    );
    single(
        &mut reg,
        "snapshot_age_milliseconds",
        "How old the counters in this scrape are (the backend publishes them once a second)",
        age.as_millis() as i64,
    );
    single(&mut reg, "vifs", "Connected vifs", b.vifs.len() as i64);
    single(
        &mut reg,
        "devices",
        "Devices the control plane tracks",
        b.devices as i64,
    );
    single(
        &mut reg,
        "pool_pages",
        "Backend pages held by the frame pool",
        b.pool_pages as i64,
    );
    let c = Counter::<u64>::default();
    c.inc_by(b.copy_ops);
    reg.register("grant_copy_ops", "Grant-copy ops submitted", c);
    let c = Counter::<u64>::default();
    c.inc_by(b.copy_hypercalls);
    reg.register("grant_copy_hypercalls", "Grant-copy hypercalls", c);
    let c = Counter::<u64>::default();
    c.inc_by(b.departed_total);
    reg.register("vifs_departed", "Vifs that disconnected since start", c);

    // Per vif.
    let vif_c = |reg: &mut Registry, n: &str, h: &str| counter_family(reg, &format!("vif_{n}"), h);
    let rx_packets = vif_c(&mut reg, "rx_packets", "Frames put on the guest's rx ring");
    let rx_bytes = vif_c(&mut reg, "rx_bytes", "Bytes put on the guest's rx ring");
    let tx_packets = vif_c(
        &mut reg,
        "tx_packets",
        "Packets taken from the guest's tx ring",
    );
    let tx_bytes = vif_c(&mut reg, "tx_bytes", "Bytes taken from the guest's tx ring");
    let notifies = vif_c(&mut reg, "notifies", "Notifications sent to the guest");
    let grant_ops = vif_c(&mut reg, "grant_ops", "Grant operations for this vif");
    let hypercalls = vif_c(&mut reg, "hypercalls", "Grant hypercalls for this vif");
    let spurious = vif_c(
        &mut reg,
        "spurious_events",
        "Events from the guest that found no work (XSA-332 accounting)",
    );
    let drops = vif_c(&mut reg, "drops", "Frames dropped, by reason");
    let disabled = gauge_family(
        &mut reg,
        "vif_disabled",
        "1 if the vif was disabled because its frontend broke the protocol",
    );
    let stalled = gauge_family(
        &mut reg,
        "vif_rx_stalled",
        "1 while the guest's receive is stalled (it posts no rx buffers while frames wait: \
         carrier off, frames for it dropped)",
    );
    let stalls = vif_c(
        &mut reg,
        "rx_stalls",
        "Times the guest's receive stalled (carrier off)",
    );
    let info = gauge_family(
        &mut reg,
        "vif_info",
        "Each device as served (value 1): state, mode, switch, MAC",
    );
    for (id, v) in &b.vifs {
        let dev = snap.devices.iter().find(|d| d.id == *id);
        let l = labels(&[
            ("vif", id.to_string()),
            ("domid", id.domid.to_string()),
            ("devid", id.devid.to_string()),
        ]);
        rx_packets.get_or_create(&l).inc_by(v.rx_packets);
        rx_bytes.get_or_create(&l).inc_by(v.rx_bytes);
        tx_packets.get_or_create(&l).inc_by(v.tx_packets);
        tx_bytes.get_or_create(&l).inc_by(v.tx_bytes);
        notifies.get_or_create(&l).inc_by(v.notifies);
        grant_ops.get_or_create(&l).inc_by(v.grant_ops);
        hypercalls.get_or_create(&l).inc_by(v.hypercalls);
        spurious.get_or_create(&l).inc_by(v.spurious_events);
        disabled.get_or_create(&l).set(i64::from(v.fatal.is_some()));
        stalled.get_or_create(&l).set(i64::from(v.rx_stalled));
        stalls.get_or_create(&l).inc_by(v.rx_stalls);
        for (reason, n) in vif_drops(v) {
            let mut l = l.clone();
            l.push(("reason".into(), reason.into()));
            drops.get_or_create(&l).inc_by(n);
        }
        if let Some(d) = dev {
            let mut l = l.clone();
            l.push((
                "state".into(),
                d.state.map_or("-".into(), |s| format!("{s:?}")),
            ));
            l.push((
                "mode".into(),
                serde_json::to_value(d.mode)
                    .ok()
                    .and_then(|m| m.as_str().map(str::to_string))
                    .unwrap_or_default(),
            ));
            l.push(("switch".into(), d.switch.clone()));
            l.push(("mac".into(), d.mac.clone().unwrap_or_default()));
            info.get_or_create(&l).set(1);
        }
    }

    // Per switch port.
    let port_c =
        |reg: &mut Registry, n: &str, h: &str| counter_family(reg, &format!("switch_port_{n}"), h);
    let p_rx_frames = port_c(
        &mut reg,
        "rx_frames",
        "Frames the switch took in on the port",
    );
    let p_rx_bytes = port_c(&mut reg, "rx_bytes", "Bytes the switch took in on the port");
    let p_tx_frames = port_c(
        &mut reg,
        "tx_frames",
        "Frames the switch sent out of the port",
    );
    let p_tx_bytes = port_c(
        &mut reg,
        "tx_bytes",
        "Bytes the switch sent out of the port",
    );
    let p_drops = port_c(
        &mut reg,
        "drops",
        "Frames the switch dropped at the port, by reason",
    );
    for sw in &b.switches {
        for p in &sw.bridge.ports {
            let name = match p.kind {
                PortKind::Vif { domid, handle } => format!("vif{domid}.{handle}"),
                PortKind::Uplink => sw
                    .uplinks
                    .iter()
                    .find(|(id, _)| *id == p.id)
                    .map_or_else(|| "uplink".into(), |(_, n)| n.clone()),
            };
            let l = labels(&[("switch", sw.name.clone()), ("port", name)]);
            p_rx_frames.get_or_create(&l).inc_by(p.stats.rx_frames);
            p_rx_bytes.get_or_create(&l).inc_by(p.stats.rx_bytes);
            p_tx_frames.get_or_create(&l).inc_by(p.stats.tx_frames);
            p_tx_bytes.get_or_create(&l).inc_by(p.stats.tx_bytes);
            for r in DropReason::ALL {
                let mut l = l.clone();
                l.push(("reason".into(), r.name().into()));
                p_drops.get_or_create(&l).inc_by(p.stats.drops.get(r));
            }
        }
    }

    // Per uplink.
    let up_c =
        |reg: &mut Registry, n: &str, h: &str| counter_family(reg, &format!("uplink_{n}"), h);
    let u_rx_frames = up_c(&mut reg, "rx_frames", "Frames taken in from Linux");
    let u_rx_bytes = up_c(&mut reg, "rx_bytes", "Bytes taken in from Linux");
    let u_tx_frames = up_c(&mut reg, "tx_frames", "Frames handed to Linux");
    let u_tx_bytes = up_c(&mut reg, "tx_bytes", "Bytes handed to Linux");
    let u_errors = up_c(&mut reg, "errors", "Frames lost at the uplink, by reason");
    for (name, _, u) in &b.uplinks {
        let switch = b
            .switches
            .iter()
            .find(|s| s.uplinks.iter().any(|(_, n)| n == name))
            .map_or_else(String::new, |s| s.name.clone());
        let l = labels(&[("uplink", name.clone()), ("switch", switch)]);
        u_rx_frames.get_or_create(&l).inc_by(u.rx_frames);
        u_rx_bytes.get_or_create(&l).inc_by(u.rx_bytes);
        u_tx_frames.get_or_create(&l).inc_by(u.tx_frames);
        u_tx_bytes.get_or_create(&l).inc_by(u.tx_bytes);
        for (reason, n) in [
            ("rx_no_buffer", u.rx_no_buffer),
            ("rx_errors", u.rx_errors),
            ("rx_fill_errors", u.rx_fill_errors),
            ("tx_dropped", u.tx_dropped),
            ("tx_errors", u.tx_errors),
        ] {
            let mut l = l.clone();
            l.push(("reason".into(), reason.into()));
            u_errors.get_or_create(&l).inc_by(n);
        }
    }

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Serves `listener` on a thread of its own: `GET /metrics` renders the latest snapshot.
pub fn spawn(listener: TcpListener, latest: Latest) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("netbackd-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => answer(stream, &latest),
                    Err(e) => tracing::warn!(error = %e, "metrics: accept failed"),
                }
            }
        })?;
    Ok(())
}

fn answer(mut stream: TcpStream, latest: &Latest) {
    let _ = stream.set_read_timeout(Some(IO_DEADLINE));
    let _ = stream.set_write_timeout(Some(IO_DEADLINE));
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => match latest.get() {
            Some(snap) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                render(&snap, snap.at.elapsed()),
            ),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "netbackd has not published its counters yet\n".into(),
            ),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics only\n".into(),
        ),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use netback::{NetbackSnapshot, VifId};

    fn snapshot(v: VifStats) -> Snapshot {
        let bridge = bridge_lite::Bridge::new(bridge_lite::BridgeConfig::default())
            .expect("a bridge")
            .snapshot();
        let backend = NetbackSnapshot {
            vifs: vec![(VifId { domid: 3, devid: 0 }, v)],
            departed: vec![],
            departed_total: 0,
            bridge,
            switches: vec![],
            copy_hypercalls: 0,
            copy_ops: 0,
            pool_pages: 0,
            uplinks: vec![],
            devices: 1,
        };
        Snapshot {
            at: Instant::now(),
            report: Report {
                uptime_s: 1.0,
                backend,
                guests: vec![],
                hypervisor: None,
            },
            devices: vec![],
        }
    }

    const VIF: &[&str] = &["vif=\"vif3.0\""];

    #[test]
    fn a_stalled_guest_shows_as_a_gauge_its_stalls_and_its_drops() {
        let v = VifStats {
            rx_stalled: true,
            rx_stalls: 2,
            rx_stall_drops: 7,
            ..VifStats::default()
        };
        let text = render(&snapshot(v.clone()), Duration::ZERO);
        let line = |name: &str, extra: &[&str]| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!("{name}{{"))
                        && VIF.iter().chain(extra).all(|x| l.contains(x))
                })
                .unwrap_or_else(|| panic!("no {name} {extra:?} in\n{text}"))
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .expect("a number")
        };
        assert_eq!(line("netbackd_vif_rx_stalled", &[]), 1);
        assert_eq!(line("netbackd_vif_rx_stalls_total", &[]), 2);
        assert_eq!(
            line("netbackd_vif_drops_total", &["reason=\"rx_stall_drops\""]),
            7
        );
        // Recovered: the gauge goes back to 0, the counters stay.
        let text = render(
            &snapshot(VifStats {
                rx_stalled: false,
                ..v
            }),
            Duration::ZERO,
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("netbackd_vif_rx_stalled{") && l.ends_with(" 0")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("netbackd_vif_rx_stalls_total{") && l.ends_with(" 2")),
            "{text}"
        );
    }
}
