//! `io/xenbus.h`: the states both ends of a split device publish in their `state` node, and the
//! xenstore layout the toolstack gives a vif.

use crate::types::DomId;

/// `enum xenbus_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum XenbusState {
    /// 0.
    Unknown = 0,
    /// 1: the device is being set up.
    Initialising = 1,
    /// 2: the backend wrote its features and waits for the frontend.
    InitWait = 2,
    /// 3: the frontend's keys are written (unused by netfront, which goes straight to Connected).
    Initialised = 3,
    /// 4: connected.
    Connected = 4,
    /// 5: tearing down.
    Closing = 5,
    /// 6: torn down.
    Closed = 6,
    /// 7.
    Reconfiguring = 7,
    /// 8.
    Reconfigured = 8,
}

impl XenbusState {
    /// Parses a `state` node's value.
    pub fn parse(s: &str) -> Option<Self> {
        use XenbusState::*;
        Some(match s.trim().parse::<u32>().ok()? {
            0 => Unknown,
            1 => Initialising,
            2 => InitWait,
            3 => Initialised,
            4 => Connected,
            5 => Closing,
            6 => Closed,
            7 => Reconfiguring,
            8 => Reconfigured,
            _ => return None,
        })
    }

    /// The node value.
    pub fn as_str(self) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8"][self as usize]
    }
}

/// What a toolstack configures for one vif, as libxl writes it (`tools/libs/light/libxl_nic.c`
/// from a `vif = [ 'mac=...,bridge=...,script=...' ]` entry): every field but the MAC is
/// optional, and a field left `None` is not written (as libxl omits `mtu` when it is 1500).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VifConfig {
    /// `mac` (both ends).
    pub mac: String,
    /// `script`: the hotplug script libxl runs once the backend is in InitWait (`vif-bridge`
    /// when the config names none; `vif-splitnet` puts the vif on a splitnet switch).
    pub script: Option<String>,
    /// `bridge`: the bridge (or splitnet switch) the vif joins.
    pub bridge: Option<String>,
    /// `vifname`: the backend netdev's name instead of `vif<domid>.<devid>`.
    pub vifname: Option<String>,
    /// `ip`: space-separated addresses the guest may send from.
    pub ip: Option<String>,
    /// `rate`: `bytes,usecs` (libxl turns `rate=10Mb/s@20ms` into this).
    pub rate: Option<String>,
    /// `mtu`: the backend netdev's MTU, written only when it is not 1500.
    pub mtu: Option<u32>,
    /// `type`: `vif_ioemu` for an HVM guest's vif that also has an emulated NIC (QEMU's
    /// `vif<domid>.<devid>-emu` TAP); `vif` otherwise.
    pub ioemu: bool,
    /// Whether the toolstack waits for a hotplug script: libxl then writes an empty
    /// `hotplug-status`, which the script sets to `connected` and the backend waits for.
    pub hotplug: bool,
}

impl VifConfig {
    /// A vif with this MAC and nothing else configured (no hotplug script to wait for).
    pub fn new(mac: &str) -> Self {
        Self {
            mac: mac.to_string(),
            ..Self::default()
        }
    }
}

/// Paths of a vif device pair, as the toolstack (libxl) lays them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifPaths {
    /// `/local/domain/<backend>/backend/vif/<frontend>/<devid>`.
    pub backend: String,
    /// `/local/domain/<frontend>/device/vif/<devid>`.
    pub frontend: String,
}

impl VifPaths {
    /// The directories of `frontend`'s vif `devid`, served by `backend`.
    pub fn new(frontend: DomId, backend: DomId, devid: u32) -> Self {
        Self {
            backend: format!("/local/domain/{backend}/backend/vif/{frontend}/{devid}"),
            frontend: format!("/local/domain/{frontend}/device/vif/{devid}"),
        }
    }

    /// The `(path, value)` nodes the toolstack writes to add this vif (`frontend`'s vif `devid`,
    /// served by `backend`, with MAC `mac`), in write order: on the backend side `frontend`,
    /// `frontend-id`, `handle`, `mac`, `type` = vif, `online` = 1 and `state` = 1
    /// (Initialising); then on the frontend side `backend`, `backend-id`, `handle`, `mac` and
    /// `state` = 1.
    pub fn toolstack_nodes(
        &self,
        frontend: DomId,
        backend: DomId,
        devid: u32,
        mac: &str,
    ) -> Vec<(String, String)> {
        self.toolstack_nodes_with(frontend, backend, devid, &VifConfig::new(mac))
    }

    /// As [`VifPaths::toolstack_nodes`], with everything `cfg` configures: on the backend side
    /// also `script`, `bridge`, `vifname`, `ip`, `rate`, `mtu`, `type` (`vif_ioemu` for an HVM
    /// guest's) and an empty `hotplug-status` (when a script is to be waited for), before
    /// `online` and `state`; on the
    /// frontend side also `mtu` (read-only to the guest, as libxl writes it).
    pub fn toolstack_nodes_with(
        &self,
        frontend: DomId,
        backend: DomId,
        devid: u32,
        cfg: &VifConfig,
    ) -> Vec<(String, String)> {
        let (be, fe) = (&self.backend, &self.frontend);
        let state = XenbusState::Initialising.as_str();
        let mut nodes = vec![
            (format!("{be}/frontend"), fe.clone()),
            (format!("{be}/frontend-id"), frontend.to_string()),
            (format!("{be}/handle"), devid.to_string()),
            (format!("{be}/mac"), cfg.mac.clone()),
        ];
        let optional = [
            ("script", cfg.script.clone()),
            ("bridge", cfg.bridge.clone()),
            ("vifname", cfg.vifname.clone()),
            ("ip", cfg.ip.clone()),
            ("rate", cfg.rate.clone()),
            ("mtu", cfg.mtu.map(|m| m.to_string())),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                nodes.push((format!("{be}/{key}"), v));
            }
        }
        let kind = if cfg.ioemu { "vif_ioemu" } else { "vif" };
        nodes.push((format!("{be}/type"), kind.into()));
        if cfg.hotplug {
            nodes.push((format!("{be}/hotplug-status"), String::new()));
        }
        nodes.extend([
            (format!("{be}/online"), "1".into()),
            (format!("{be}/state"), state.into()),
            (format!("{fe}/backend"), be.clone()),
            (format!("{fe}/backend-id"), backend.to_string()),
            (format!("{fe}/handle"), devid.to_string()),
            (format!("{fe}/mac"), cfg.mac.clone()),
        ]);
        if let Some(m) = cfg.mtu {
            nodes.push((format!("{fe}/mtu"), m.to_string()));
        }
        nodes.push((format!("{fe}/state"), state.into()));
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vif_nodes_cross_link_both_ends() {
        let p = VifPaths::new(7, 2, 1);
        assert_eq!(p.backend, "/local/domain/2/backend/vif/7/1");
        assert_eq!(p.frontend, "/local/domain/7/device/vif/1");
        let nodes = p.toolstack_nodes(7, 2, 1, "00:16:3e:00:00:07");
        let get = |k: &str| nodes.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("/local/domain/2/backend/vif/7/1/frontend"),
            Some(p.frontend.as_str())
        );
        assert_eq!(
            get("/local/domain/2/backend/vif/7/1/frontend-id"),
            Some("7")
        );
        assert_eq!(
            get("/local/domain/7/device/vif/1/backend"),
            Some(p.backend.as_str())
        );
        assert_eq!(get("/local/domain/7/device/vif/1/backend-id"), Some("2"));
        assert_eq!(
            get("/local/domain/7/device/vif/1/mac"),
            Some("00:16:3e:00:00:07")
        );
        assert_eq!(get("/local/domain/2/backend/vif/7/1/state"), Some("1"));
        assert_eq!(get("/local/domain/7/device/vif/1/state"), Some("1"));
        assert_eq!(
            get("/local/domain/7/device/vif/1/online"),
            None,
            "online is the backend's"
        );
        assert_eq!(get("/local/domain/2/backend/vif/7/1/type"), Some("vif"));
        assert_eq!(nodes.len(), 12, "a plain vif: the nodes and nothing else");
    }

    #[test]
    fn a_configured_vif_writes_what_libxl_writes() {
        let p = VifPaths::new(7, 0, 1);
        let cfg = VifConfig {
            script: Some("vif-bridge".into()),
            bridge: Some("xenbr1".into()),
            vifname: Some("web0".into()),
            ip: Some("10.0.0.7 fd00::7".into()),
            rate: Some("1250000,50000".into()),
            mtu: Some(9000),
            ioemu: true,
            hotplug: true,
            ..VifConfig::new("00:16:3e:00:00:07")
        };
        let nodes = p.toolstack_nodes_with(7, 0, 1, &cfg);
        let get = |k: &str| {
            nodes
                .iter()
                .find(|(n, _)| *n == format!("{}/{k}", p.backend))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("script"), Some("vif-bridge"));
        assert_eq!(get("bridge"), Some("xenbr1"));
        assert_eq!(get("vifname"), Some("web0"));
        assert_eq!(get("ip"), Some("10.0.0.7 fd00::7"));
        assert_eq!(get("rate"), Some("1250000,50000"));
        assert_eq!(get("mtu"), Some("9000"));
        assert_eq!(get("type"), Some("vif_ioemu"));
        assert_eq!(get("hotplug-status"), Some(""));
        let at = |k: &str| nodes.iter().position(|(n, _)| n.ends_with(k)).unwrap();
        assert!(
            at("hotplug-status") < at("backend/vif/7/1/state"),
            "everything is there before the backend sees state 1"
        );
        let fe_mtu = format!("{}/mtu", p.frontend);
        assert!(nodes.iter().any(|(n, v)| *n == fe_mtu && v == "9000"));
    }
}
