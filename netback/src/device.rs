//! What the toolstack configured for a vif device, read from its backend directory as Linux's
//! xen-netback and the vif hotplug scripts read it (`libxl_nic.c` writes it).
//!
//! A device is served in one of two modes, chosen per device ([`VifMode`]):
//! - **host**: the vif is a netdev of the host (`vif<domid>.<devid>`, or the `vifname` key), a TAP
//!   with the `mtu` key's MTU, as xen-netback's netdev is: the toolstack's own hotplug script
//!   (`vif-bridge`, `vif-route`, `vif-openvswitch`, ...) plugs it wherever the host's network
//!   wants it;
//! - **builtin**: the vif is a port of the bridge-lite switch its `bridge` key names (default
//!   `xenbr0`), locked to its `mac` and `ip` keys, as the `vif-splitnet` script asks.
//!
//! Under [`ModePolicy::Auto`] (the default) a device whose `script` key names `vif-splitnet` is
//! builtin and every other one is host, so an unchanged host (`vif-bridge`, `xenbr0`) just works.
//! A device with no `script` key at all (not something libxl writes: a toolstack of the tests'
//! own) is builtin: no hotplug script would plug a host netdev anywhere.

use std::net::IpAddr;

use bridge_lite::MacAddr;
use hypervisor::XenStore;

use crate::rate::{Rate, RateError};
use crate::vif::VifId;

/// The switch a builtin vif joins when its `bridge` key is absent: the toolstack's default.
pub const DEFAULT_SWITCH: &str = "xenbr0";
/// The MTU of a host-mode netdev when the `mtu` key is absent (libxl writes it only when it is
/// not 1500).
pub const DEFAULT_MTU: u32 = 1500;
/// The hotplug script that asks for builtin mode.
pub const BUILTIN_SCRIPT: &str = "vif-splitnet";

/// How one vif is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VifMode {
    /// A netdev of the host, for the toolstack's own hotplug script.
    Host,
    /// A port of a bridge-lite switch.
    Builtin,
}

/// How the backend chooses each vif's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModePolicy {
    /// From the device's `script` key: `vif-splitnet` is builtin, any other script host.
    #[default]
    Auto,
    /// Every vif is a host netdev.
    Host,
    /// Every vif joins a switch.
    Builtin,
}

/// What the toolstack configured for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The mode it is served in.
    pub mode: VifMode,
    /// Builtin: the switch it joins (`bridge`, default [`DEFAULT_SWITCH`]).
    pub switch: String,
    /// Host: the netdev's name (`vifname`, default `vif<domid>.<devid>`).
    pub netdev: String,
    /// Host: the netdev's MTU (`mtu`, default [`DEFAULT_MTU`]).
    pub mtu: u32,
    /// `mac`: builtin mode locks the vif's switch port to it.
    pub mac: Option<MacAddr>,
    /// `ip`: builtin mode locks the vif's switch port to these source addresses (empty: no
    /// lock).
    pub ips: Vec<IpAddr>,
    /// `rate`: the guest's transmit limit (both modes).
    pub rate: Option<Rate>,
    /// `type` is `vif_ioemu`: an HVM guest whose emulated NIC (QEMU's `<netdev>-emu` TAP) joins
    /// the vif's switch in builtin mode.
    pub ioemu: bool,
    /// Keys that were present but unusable, each with what was done instead (logged and, for
    /// the toolstack, left in the device's log line).
    pub warnings: Vec<String>,
}

impl DeviceConfig {
    /// A builtin vif on the default switch with nothing else configured (what a device without
    /// toolstack keys gets).
    pub fn builtin(id: VifId) -> Self {
        Self {
            mode: VifMode::Builtin,
            switch: DEFAULT_SWITCH.to_string(),
            netdev: format!("vif{}.{}", id.domid, id.devid),
            mtu: DEFAULT_MTU,
            mac: None,
            ips: Vec::new(),
            rate: None,
            ioemu: false,
            warnings: Vec::new(),
        }
    }
}

/// Reads a device's configuration from its backend directory `be_path`. Never fails: a key
/// that cannot be used is left out with a warning (a bad `mac` leaves the port unlocked, a bad
/// `rate` unlimited, as Linux's netback reads them), except a netdev name or MTU that no netdev
/// could have, which [`check`](DeviceConfig::check) refuses.
pub fn read_device_config(
    xs: &impl XenStore,
    be_path: &str,
    id: VifId,
    policy: ModePolicy,
) -> DeviceConfig {
    let key = |k: &str| xs.read(&format!("{be_path}/{k}")).ok();
    let mut cfg = DeviceConfig::builtin(id);
    let script = key("script");
    cfg.mode = match policy {
        ModePolicy::Host => VifMode::Host,
        ModePolicy::Builtin => VifMode::Builtin,
        ModePolicy::Auto => match &script {
            // libxl writes the script's full path or its name.
            Some(s) if script_name(s) == BUILTIN_SCRIPT => VifMode::Builtin,
            Some(s) if !s.trim().is_empty() => VifMode::Host,
            _ => VifMode::Builtin,
        },
    };
    if let Some(b) = key("bridge").filter(|b| !b.trim().is_empty()) {
        cfg.switch = b.trim().to_string();
    }
    if let Some(n) = key("vifname").filter(|n| !n.trim().is_empty()) {
        cfg.netdev = n.trim().to_string();
    }
    if let Some(m) = key("mtu") {
        match m.trim().parse::<u32>() {
            Ok(mtu) => cfg.mtu = mtu,
            Err(_) => cfg
                .warnings
                .push(format!("mtu {m:?} is not a number: using {DEFAULT_MTU}")),
        }
    }
    if let Some(m) = key("mac") {
        match m.trim().parse::<MacAddr>() {
            Ok(mac) => cfg.mac = Some(mac),
            Err(e) => cfg
                .warnings
                .push(format!("{e}; the vif's port is not locked to a MAC")),
        }
    }
    if let Some(ips) = key("ip") {
        for word in ips.split_whitespace() {
            // vif-common accepts address/prefix too; the prefix does not matter for a source
            // lock of single addresses.
            let addr = word.split('/').next().unwrap_or(word);
            match addr.parse::<IpAddr>() {
                Ok(a) => cfg.ips.push(a),
                Err(_) => cfg.warnings.push(format!(
                    "ip {word:?} is not an IPv4 or IPv6 address: left out of the vif's lock"
                )),
            }
        }
    }
    if let Some(r) = key("rate") {
        match Rate::parse(&r) {
            Ok(rate) => cfg.rate = rate,
            Err(e @ RateError(_)) => cfg.warnings.push(e.to_string()),
        }
    }
    cfg.ioemu = key("type").is_some_and(|t| t.trim() == "vif_ioemu");
    cfg
}

/// A script key's name: libxl writes a path (`/etc/xen/scripts/vif-bridge`) or a bare name.
fn script_name(script: &str) -> &str {
    let s = script.trim();
    s.rsplit('/').next().unwrap_or(s)
}

impl DeviceConfig {
    /// What no netdev could be: a name Linux refuses (empty, longer than 15 bytes, `/`, `:`
    /// or whitespace, `.` or `..`) or an MTU outside 68..=65535. `Err` says what and what to do.
    pub fn check(&self) -> Result<(), String> {
        if self.mode == VifMode::Host {
            let n = &self.netdev;
            let bad_char = n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
            if n.is_empty() || n.len() > 15 || bad_char || n == "." || n == ".." {
                return Err(format!(
                    "vifname {n:?} cannot name a Linux netdev (at most 15 bytes, no '/', ':' or \
                     spaces): fix vifname= in the vif's config"
                ));
            }
            if !(68..=65535).contains(&self.mtu) {
                return Err(format!(
                    "mtu {} is outside 68..65535: fix mtu= in the vif's config",
                    self.mtu
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_are_read_from_paths_and_names() {
        assert_eq!(script_name("/etc/xen/scripts/vif-splitnet"), "vif-splitnet");
        assert_eq!(script_name("vif-bridge"), "vif-bridge");
        assert_eq!(script_name(" vif-route\n"), "vif-route");
    }

    #[test]
    fn netdev_names_linux_refuses_are_refused() {
        let id = VifId { domid: 3, devid: 1 };
        let mut c = DeviceConfig {
            mode: VifMode::Host,
            ..DeviceConfig::builtin(id)
        };
        assert_eq!(c.netdev, "vif3.1");
        assert!(c.check().is_ok());
        for bad in ["", "a-name-of-16-byt", "a/b", "a:b", "a b", ".", ".."] {
            c.netdev = bad.to_string();
            let e = c.check().unwrap_err();
            assert!(e.contains("vifname"), "{bad:?}: {e}");
        }
        c.netdev = "web0".into();
        c.mtu = 67;
        assert!(c.check().unwrap_err().contains("mtu 67"));
        // Builtin mode has no netdev to name.
        c.mode = VifMode::Builtin;
        assert!(c.check().is_ok());
    }
}
