//! A raw frontend connecting through xenbus, as netfront does: the toolstack's directories
//! (with whatever a `vif = [...]` line configures), the frontend's keys, Connected.

use hypervisor::{VifConfig, VifPaths, XenbusState};
use netif_ring::netif::RxMode;
use xen_model::Hypervisor;

use super::RawFront;

impl RawFront {
    /// The toolstack adds this guest's vif 0 with `cfg`, served by its backend domain.
    #[track_caller]
    pub fn add_vif(&self, xen: &Hypervisor, cfg: &VifConfig) -> VifPaths {
        xen.add_vif_with(self.dom.domid(), self.backend, 0, cfg)
            .expect("the toolstack adds the vif")
    }

    /// Writes what a frontend writes to connect (ring references, event channel,
    /// `request-rx-copy`, its `feature-*` keys, and its ctrl ring, `request-multicast-control`
    /// and `xdp-headroom` when set, as [`RawFront::keys`] says) through its own
    /// xenstore connection, then its state Connected. The backend connects on its next pass.
    #[track_caller]
    pub fn publish(&self, paths: &VifPaths) {
        let xs = self.dom.xenstore();
        let fe = &paths.frontend;
        let k = &self.keys;
        let q = &k.queues[0];
        let o = k.offload;
        let b = |v: bool| if v { "1" } else { "0" };
        let keys = [
            ("tx-ring-ref", q.tx_ring_ref.0.to_string()),
            ("rx-ring-ref", q.rx_ring_ref.0.to_string()),
            ("event-channel", q.event_channel.0.to_string()),
            ("request-rx-copy", b(k.mode == RxMode::Copy).to_string()),
            ("feature-rx-notify", "1".into()),
            ("feature-sg", b(o.sg).into()),
            ("feature-no-csum-offload", b(!o.csum).into()),
            ("feature-ipv6-csum-offload", b(o.ipv6_csum).into()),
            ("feature-gso-tcpv4", b(o.gso_tcpv4).into()),
            ("feature-gso-tcpv6", b(o.gso_tcpv6).into()),
        ];
        let mut keys = keys.to_vec();
        if let Some(c) = k.ctrl {
            keys.push(("ctrl-ring-ref", c.ring_ref.0.to_string()));
            keys.push(("event-channel-ctrl", c.event_channel.0.to_string()));
        }
        if k.multicast_control {
            keys.push(("request-multicast-control", "1".into()));
        }
        if k.xdp_headroom != 0 {
            keys.push(("xdp-headroom", k.xdp_headroom.to_string()));
        }
        for (key, v) in keys {
            xs.write(&format!("{fe}/{key}"), &v)
                .expect("the frontend writes its keys");
        }
        xs.write(&format!("{fe}/state"), XenbusState::Connected.as_str())
            .expect("the frontend goes Connected");
    }

    /// A node of the backend's directory as the guest may read it (`None` if absent).
    pub fn backend_node(&self, paths: &VifPaths, key: &str) -> Option<String> {
        self.dom
            .xenstore()
            .read(&format!("{}/{key}", paths.backend))
            .ok()
    }
}
