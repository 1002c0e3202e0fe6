//! The embedded mode's toolstack: what libxl and the vif hotplug scripts do for each guest's
//! vif, so host mode and builtin mode run here as they do under `xl`.
//!
//! For guest `k` it writes the vif as libxl writes a `vif = [ 'mac=...,script=...,bridge=...,
//! rate=...' ]` entry (`--guest-script`, `--guest-bridge`, `--guest-rate`, and `mtu=` when
//! `--mtu` is not 1500), waits (10 s, as libxl) for the backend to offer the device
//! (InitWait), then plays the hotplug script's `online`:
//! - `vif-bridge`: puts the vif's netdev (`vif<k>.0`) into the Linux bridge `bridge=` names
//!   (default `xenbr0`) and brings it up, as Xen's `vif-bridge` does, then writes
//!   `hotplug-status=connected`;
//! - `vif-splitnet`: checks that a splitnet backend offered the vif, and writes
//!   `hotplug-status=connected`, as `netbackd/scripts/vif-splitnet` does;
//! - no script: nothing (libxl then writes no `hotplug-status` and the backend waits for none).
//!
//! A vif the backend refuses, or whose script fails, is removed again (as libxl removes the
//! device and fails `xl create`) and its guest is not started; the log says why.

use std::time::{Duration, Instant};

use hypervisor::{VifConfig, VifPaths, XenbusState};
use xen_model::{Hypervisor, XsConnection};

use crate::cli::Args;

/// How long libxl waits for a backend to reach InitWait, and for Closed on removal.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(10);
/// Watch token for the state the toolstack waits on.
const TOKEN: &str = "toolstack";

/// Guest `k`'s (1-based) vif configuration from the command line (its vif 0, served by
/// domain 0).
pub fn vif_config(args: &Args, k: u16) -> VifConfig {
    let mac = Args::guest_mac(k).map(|b| format!("{b:02x}")).join(":");
    VifConfig {
        mac,
        script: args.guest_script.clone(),
        bridge: args.guest_bridge(k).map(str::to_string),
        rate: args.guest_rate.clone(),
        // libxl writes mtu only when it is not the default.
        mtu: (args.mtu != netback::device::DEFAULT_MTU).then_some(args.mtu),
        // libxl writes an empty hotplug-status for the script to fill in.
        hotplug: args.guest_script.is_some(),
        ..VifConfig::default()
    }
}

/// Adds guest `k`'s vif as libxl does and runs its hotplug script's part once the backend has
/// offered it. `Err` says why the vif failed; it has been removed again by then.
pub fn attach_vif(xen: &Hypervisor, args: &Args, k: u16) -> Result<VifPaths, String> {
    let cfg = vif_config(args, k);
    let xs = xen.xenstore();
    let paths = xen
        .add_vif_with(k, 0, 0, &cfg)
        .map_err(|e| format!("the toolstack could not add it: {e}"))?;
    let be = paths.backend.clone();
    let result = wait_for_offer(&xs, &be).and_then(|()| match cfg.script.as_deref() {
        None => Ok(()),
        Some(script) => hotplug_online(&xs, &be, script, &cfg, k).inspect_err(|why| {
            // What the script itself writes on failure, for whoever reads the device.
            let _ = xs.write(&format!("{be}/hotplug-error"), why);
            let _ = xs.write(&format!("{be}/hotplug-status"), "error");
        }),
    });
    if result.is_err() {
        remove_vif(&xs, &paths);
    }
    result.map(|()| paths)
}

/// Waits for the backend's InitWait; a backend that refuses the device (Closed, with
/// `hotplug-error` saying why) or never answers is an error.
fn wait_for_offer(xs: &XsConnection, be: &str) -> Result<(), String> {
    let state_path = format!("{be}/state");
    xs.watch(&state_path, TOKEN)
        .map_err(|e| format!("cannot watch {state_path}: {e}"))?;
    let deadline = Instant::now() + DEVICE_TIMEOUT;
    let outcome = loop {
        let state = xs
            .read(&state_path)
            .ok()
            .and_then(|s| XenbusState::parse(&s));
        match state {
            Some(XenbusState::InitWait | XenbusState::Initialised | XenbusState::Connected) => {
                break Ok(());
            }
            Some(XenbusState::Closing | XenbusState::Closed) => {
                let why = xs
                    .read(&format!("{be}/hotplug-error"))
                    .or_else(|_| xs.read(&format!("{be}/error")))
                    .unwrap_or_else(|_| "no reason given".into());
                break Err(format!("the backend refused it: {why}"));
            }
            _ => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(format!(
                "the backend did not offer it within {DEVICE_TIMEOUT:?} (state {state:?}): is \
                 the backend running?"
            ));
        }
        let _ = xs.read_watch(Some(left));
    };
    let _ = xs.unwatch(&state_path, TOKEN);
    outcome
}

/// The hotplug script's `online`, for the scripts the embedded toolstack knows.
fn hotplug_online(
    xs: &XsConnection,
    be: &str,
    script: &str,
    cfg: &VifConfig,
    k: u16,
) -> Result<(), String> {
    match script {
        "vif-bridge" => {
            // vif-bridge: the vif's netdev (the backend made it before InitWait) into the
            // bridge, up.
            let netdev = cfg.vifname.clone().unwrap_or_else(|| format!("vif{k}.0"));
            let bridge = cfg
                .bridge
                .as_deref()
                .unwrap_or(netback::device::DEFAULT_SWITCH);
            hostnet::iface::join_bridge(&netdev, bridge)
                .map_err(|e| format!("{script}: cannot put {netdev} into bridge {bridge}: {e}"))?;
            log::info!("toolstack: vif{k}.0: {script} put {netdev} into bridge {bridge}, up");
        }
        s if s == netback::device::BUILTIN_SCRIPT => {
            // vif-splitnet: a splitnet backend must have offered the vif.
            if xs
                .read(&format!("{be}/{}", netback::xenbus::OWNER_NODE))
                .is_err()
            {
                return Err(format!(
                    "{script}: no splitnet backend offered the vif (no {}): run it in builtin mode",
                    netback::xenbus::OWNER_NODE
                ));
            }
            log::info!("toolstack: vif{k}.0: {script} online");
        }
        s => {
            return Err(format!(
                "the embedded toolstack cannot play hotplug script {s:?}: use vif-bridge or \
                 vif-splitnet"
            ));
        }
    }
    xs.write(&format!("{be}/hotplug-status"), "connected")
        .map_err(|e| format!("{script}: cannot write hotplug-status: {e}"))
}

/// Removes a vif as libxl removes a device: `online=0` and Closing, a bounded wait for the
/// backend's Closed, then both directories go (the backend then forgets the device; a host
/// netdev is removed with it).
pub fn remove_vif(xs: &XsConnection, paths: &VifPaths) {
    let be = &paths.backend;
    let _ = xs.write(&format!("{be}/online"), "0");
    let state_path = format!("{be}/state");
    let closed = |xs: &XsConnection| {
        xs.read(&state_path)
            .ok()
            .and_then(|s| XenbusState::parse(&s))
            .is_none_or(|s| s == XenbusState::Closed)
    };
    if !closed(xs) {
        let _ = xs.watch(&state_path, TOKEN);
        let _ = xs.write(&state_path, XenbusState::Closing.as_str());
        let deadline = Instant::now() + DEVICE_TIMEOUT;
        while !closed(xs) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "toolstack: {be} did not reach Closed in {DEVICE_TIMEOUT:?}; removing it"
                );
                break;
            }
            let _ = xs.read_watch(Some(left));
        }
        let _ = xs.unwatch(&state_path, TOKEN);
    }
    destroy_vif(xs, paths);
}

/// Removes a vif's directories at once, as `xl destroy` does for a domain that is gone: a
/// frontend still open sees its backend's state as Closed.
pub fn destroy_vif(xs: &XsConnection, paths: &VifPaths) {
    let _ = xs.rm(&paths.backend);
    let _ = xs.rm(&paths.frontend);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["netbackd"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn a_guests_vif_is_written_as_its_vif_line_would_be() {
        let a = args(&[
            "--guests",
            "2",
            "--guest-script",
            "vif-bridge",
            "--guest-bridge",
            "br-a,br-b",
            "--guest-rate",
            "125000,50000",
            "--mtu",
            "9000",
        ]);
        let c = vif_config(&a, 2);
        assert_eq!(c.mac, "00:16:3e:00:00:03");
        assert_eq!(c.script.as_deref(), Some("vif-bridge"));
        assert_eq!(c.bridge.as_deref(), Some("br-b"));
        assert_eq!(c.rate.as_deref(), Some("125000,50000"));
        assert_eq!(c.mtu, Some(9000));
        assert!(c.hotplug, "a script is waited for");
        // Nothing configured: as today's embedded guests, no script to wait for, MTU 1500
        // left unwritten.
        let c = vif_config(&args(&[]), 1);
        assert_eq!(
            (c.script, c.bridge, c.rate, c.mtu, c.hotplug),
            (None, None, None, None, false)
        );
    }
}
