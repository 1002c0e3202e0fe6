//! `netbackd ctl`'s answers as a person reads them (`--json` prints them as they came).

use std::fmt::Write as _;

use serde_json::Value;

use crate::ctl::Request;

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn rate(v: &Value) -> String {
    if v.is_null() {
        return "unlimited".into();
    }
    let bps = v["bytes_per_sec"].as_f64().unwrap_or(0.0);
    format!(
        "{},{} ({:.1} Mb/s)",
        s(&v["bytes"]),
        s(&v["usecs"]),
        bps * 8.0 / 1e6
    )
}

/// The text form of answer `v` to `req`.
pub fn render(req: &Request, v: &Value) -> String {
    let mut out = String::new();
    match req {
        Request::List => {
            let _ = writeln!(
                out,
                "{:<9} {:>5} {:>5} {:<12} {:<7} {:<14} {:<17} {:<15} {:>6} {:<26} {:>10} {:>12} {:>10} {:>12} {:>8}",
                "vif",
                "domid",
                "devid",
                "state",
                "mode",
                "switch",
                "mac",
                "ips",
                "queues",
                "rate",
                "rx pkts",
                "rx bytes",
                "tx pkts",
                "tx bytes",
                "drops"
            );
            for d in v.as_array().into_iter().flatten() {
                let ips: Vec<String> = d["ips"].as_array().into_iter().flatten().map(s).collect();
                let c = &d["counters"];
                let mut state = s(&d["state"]);
                if !d["disabled"].is_null() {
                    state = format!("{state} DISABLED");
                } else if d["connected"] == false {
                    state = format!("{state} (not connected)");
                }
                let _ = writeln!(
                    out,
                    "{:<9} {:>5} {:>5} {:<12} {:<7} {:<14} {:<17} {:<15} {:>6} {:<26} {:>10} {:>12} {:>10} {:>12} {:>8}",
                    s(&d["vif"]),
                    s(&d["domid"]),
                    s(&d["devid"]),
                    state,
                    s(&d["mode"]),
                    s(&d["switch"]),
                    s(&d["mac"]),
                    if ips.is_empty() {
                        "-".into()
                    } else {
                        ips.join(",")
                    },
                    s(&d["queues"]),
                    format!(
                        "{}{}",
                        rate(&d["rate"]),
                        if d["rate_is_default"] == true {
                            " (default)"
                        } else {
                            ""
                        }
                    ),
                    s(&c["rx_packets"]),
                    s(&c["rx_bytes"]),
                    s(&c["tx_packets"]),
                    s(&c["tx_bytes"]),
                    s(&c["drops"]),
                );
                if let Some(why) = d["disabled"].as_str() {
                    let _ = writeln!(out, "  {}: disabled: {why}", s(&d["vif"]));
                }
            }
        }
        Request::Stats => out.push_str(v["text"].as_str().unwrap_or_default()),
        Request::Dump { vif } => {
            let _ = writeln!(
                out,
                "{vif}: {} queue(s){}",
                v["queues"].as_array().map_or(0, Vec::len),
                if v["disabled"] == true {
                    ", DISABLED"
                } else {
                    ""
                }
            );
            for q in v["queues"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "queue {}: event channel port {}{}",
                    s(&q["index"]),
                    s(&q["tx_port"]),
                    if q["rx_port"] != q["tx_port"] {
                        format!(" (tx), {} (rx)", s(&q["rx_port"]))
                    } else {
                        String::new()
                    }
                );
                for ring in ["tx", "rx"] {
                    let r = &q[ring];
                    let _ = writeln!(
                        out,
                        "  {}: size {}\n    req_prod {} req_cons {} (pending {}) req_event {}\n    rsp_prod {} rsp_prod_pvt {} (in flight {}) rsp_event {}",
                        ring.to_uppercase(),
                        s(&r["size"]),
                        s(&r["req_prod"]),
                        s(&r["req_cons"]),
                        s(&r["pending_requests"]),
                        s(&r["req_event"]),
                        s(&r["rsp_prod"]),
                        s(&r["rsp_prod_pvt"]),
                        s(&r["in_flight"]),
                        s(&r["rsp_event"]),
                    );
                }
                let _ = writeln!(
                    out,
                    "  rx queue: {} frames, {} bytes waiting for the guest's buffers\n  tx: {}\n  events: {}",
                    s(&q["rx_queue_frames"]),
                    s(&q["rx_queue_bytes"]),
                    match q["tx_credit_wait_us"].as_u64() {
                        Some(us) => format!("waiting {us} us for rate credit"),
                        None => "not waiting for credit".into(),
                    },
                    if q["eoi_held_back"] == true {
                        "end of interrupt held back (events kept finding no work)"
                    } else {
                        "end of interrupt not held back"
                    }
                );
            }
        }
        Request::Close { vif } => {
            let _ = writeln!(out, "{vif}: {}", s(v));
        }
    }
    out
}
