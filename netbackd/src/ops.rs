//! What the serving loop does besides serving (`daemon::serve`): answering control requests,
//! SIGHUP's reload of the config file, the default rate, and warnings of guests' malformed
//! frames. Everything here runs on the backend's thread, between passes.

use std::collections::HashMap;

use hypervisor::BackendDomain;
use netback::{Netback, VifId};

use crate::cli::{Args, parse_vif};
use crate::ctl::{Reply, Request};
use crate::daemon::{Run, notify, report};

/// Applies --default-rate (as the options in force give it) to the backend, logging a change.
pub(crate) fn apply_default_rate<D: BackendDomain>(nb: &mut Netback<D>, args: &Args) {
    let rate = args
        .default_rate
        .as_deref()
        .and_then(|r| netback::Rate::parse(r).ok().flatten());
    if rate != nb.default_rate() {
        nb.set_default_rate(rate);
        match rate {
            Some(r) => tracing::info!(
                rate = args.default_rate.as_deref().unwrap_or_default(),
                bytes_per_sec = r.bytes_per_sec(),
                "default rate of vifs without rate= in their vif line"
            ),
            None => tracing::info!("no default rate: vifs without rate= are unlimited"),
        }
    }
}

/// SIGHUP: reads the config file again, applies what can change live, and says what it
/// applied and what needs a restart.
pub(crate) fn reload<D: BackendDomain>(nb: &mut Netback<D>, run: &mut Run) {
    notify(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Reloading),
    ]);
    let Some(path) = run.args.config.clone() else {
        tracing::info!("SIGHUP: no --config file to read again; nothing changed");
        notify(&[sd_notify::NotifyState::Ready]);
        return;
    };
    match crate::config::reload(&run.loaded, &run.argv) {
        Err(e) => tracing::error!("SIGHUP: {e}; nothing changed, the options in force stay"),
        Ok((new, _)) if new.args.validate().is_err() => tracing::error!(
            "SIGHUP: {}: {}; nothing changed",
            path.display(),
            new.args.validate().unwrap_err()
        ),
        Ok((new, what)) => {
            if new.args.log != run.args.log
                && let Err(e) = run.log.set_level(new.args.log)
            {
                tracing::warn!("SIGHUP: cannot change the log level: {e}");
            }
            let mut live = run.args.clone();
            live.log = new.args.log;
            live.stats_interval = new.args.stats_interval;
            live.default_rate = new.args.default_rate.clone();
            apply_default_rate(nb, &live);
            run.args = live;
            // What a restart would take: the file as read now, the options as they run.
            let mut loaded = new;
            loaded.args = run.args.clone();
            run.loaded = loaded;
            tracing::info!(
                file = %path.display(),
                applied = ?what.applied,
                need_restart = ?what.need_restart,
                command_line_wins = ?what.overridden,
                "SIGHUP: config read again: {}{}{}",
                if what.applied.is_empty() {
                    "nothing live changed".to_string()
                } else {
                    format!("applied {}", what.applied.join(", "))
                },
                if what.need_restart.is_empty() {
                    String::new()
                } else {
                    format!("; {} changed but need a restart", what.need_restart.join(", "))
                },
                if what.overridden.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} changed but the command line gives them",
                        what.overridden.join(", ")
                    )
                },
            );
        }
    }
    notify(&[sd_notify::NotifyState::Ready]);
}

/// Guest-caused drops since the last look, per vif, as rate-limited warnings.
#[derive(Debug, Default)]
pub(crate) struct DropWatch {
    last: HashMap<VifId, [u64; 6]>,
}

impl DropWatch {
    pub(crate) fn warn(&mut self, snap: &netback::NetbackSnapshot) {
        const NAMES: [&str; 6] = [
            "tx_runt",
            "tx_too_many_slots",
            "tx_oversize_slot",
            "tx_copy_errors",
            "tx_csum_errors",
            "rx_copy_errors",
        ];
        let mut seen = HashMap::with_capacity(snap.vifs.len());
        for (id, v) in &snap.vifs {
            let now = [
                v.tx_runt,
                v.tx_too_many_slots,
                v.tx_oversize_slot,
                v.tx_copy_errors,
                v.tx_csum_errors,
                v.rx_copy_errors,
            ];
            let before = self.last.get(id).copied().unwrap_or_default();
            let grew: Vec<String> = NAMES
                .iter()
                .zip(now.iter().zip(before))
                .filter(|(_, (n, b))| **n > *b)
                .map(|(name, (n, b))| format!("{name} +{}", n - b))
                .collect();
            if !grew.is_empty() {
                netback::ratelimit::guest_log(
                    log::Level::Warn,
                    *id,
                    format_args!(
                        "{id}: dropped frames its guest sent malformed or with bad grants: {}",
                        grew.join(", ")
                    ),
                );
            }
            seen.insert(*id, now);
        }
        self.last = seen;
    }
}

/// Answers one control request on the backend's thread.
pub(crate) fn answer<D: BackendDomain>(nb: &mut Netback<D>, run: &Run, req: &Request) -> Reply {
    let vif_of = |name: &str| {
        parse_vif(name)
            .map(|(domid, devid)| VifId { domid, devid })
            .ok_or_else(|| format!("{name:?} is not a vif: write vif<domid>.<devid>"))
    };
    let to_value = |v: Result<serde_json::Value, serde_json::Error>| match v {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Error(e.to_string()),
    };
    match req {
        Request::List => {
            let snap = nb.snapshot();
            let list: Vec<serde_json::Value> = nb
                .device_list()
                .into_iter()
                .map(|d| {
                    let stats = snap.vifs.iter().find(|(id, _)| *id == d.id).map(|(_, s)| s);
                    let drops = stats.map_or(0, |s| {
                        s.rx_queue_full
                            + s.rx_expired
                            + s.rx_copy_errors
                            + s.rx_unfit
                            + s.rx_discarded
                            + s.tx_runt
                            + s.tx_too_many_slots
                            + s.tx_oversize_slot
                            + s.tx_copy_errors
                            + s.tx_no_buffer
                            + s.tx_csum_errors
                    });
                    serde_json::json!({
                        "vif": d.id.to_string(),
                        "domid": d.id.domid,
                        "devid": d.id.devid,
                        "state": d.state.map(|s| format!("{s:?}")),
                        "mode": d.mode,
                        "switch": d.switch,
                        "netdev": d.netdev,
                        "mac": d.mac,
                        "ips": d.ips,
                        "queues": d.queues,
                        "rate": d.rate,
                        "rate_is_default": d.rate_is_default,
                        "connected": d.connected,
                        "disabled": d.disabled,
                        "counters": stats.map(|s| serde_json::json!({
                            "rx_packets": s.rx_packets,
                            "rx_bytes": s.rx_bytes,
                            "tx_packets": s.tx_packets,
                            "tx_bytes": s.tx_bytes,
                            "drops": drops,
                        })),
                    })
                })
                .collect();
            Reply::Ok(serde_json::Value::Array(list))
        }
        Request::Stats => {
            let r = report(nb.snapshot(), run);
            to_value(
                serde_json::to_value(&r)
                    .map(|j| serde_json::json!({"report": j, "text": r.text()})),
            )
        }
        Request::Dump { vif } => match vif_of(vif) {
            Err(e) => Reply::Error(e),
            Ok(id) => match nb.vif_dump(id) {
                Some(d) => to_value(serde_json::to_value(d)),
                None => Reply::Error(format!(
                    "{vif} is not connected (netbackd ctl list shows the devices)"
                )),
            },
        },
        Request::Close { vif } => match vif_of(vif) {
            Err(e) => Reply::Error(e),
            Ok(id) => {
                if nb.close_device(id) {
                    tracing::info!(vif = %id, "closed by netbackd ctl");
                    Reply::Ok(serde_json::Value::String(
                        "closed (Closing, then Closed); it connects again if its frontend starts over"
                            .into(),
                    ))
                } else {
                    Reply::Error(format!(
                        "no device {vif} (netbackd ctl list shows the devices)"
                    ))
                }
            }
        },
    }
}
