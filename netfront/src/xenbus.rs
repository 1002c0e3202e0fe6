//! The frontend's side of the xenbus control plane: states, backend features, waiting.
//!
//! Paths and keys are Linux's (`xen-netfront.c`): the frontend directory is
//! `/local/domain/<domid>/device/vif/<devid>`, and it names the backend directory in `backend`.

use std::time::{Duration, Instant};

use hypervisor::traits::XenStore;

use crate::config::{FrontConfig, RxMode};
use crate::error::{Error, Result};

pub use hypervisor::XenbusState;

/// Reads `<dir>/state`; a missing node reads as `Closed` (the directory went away).
pub fn read_state(xs: &impl XenStore, dir: &str) -> Result<XenbusState> {
    let path = format!("{dir}/state");
    match xs.read(&path) {
        Ok(v) => XenbusState::parse(&v).ok_or(Error::BadXenstoreValue { path, value: v }),
        Err(hypervisor::Error::XsNoEntry(_)) => Ok(XenbusState::Closed),
        Err(source) => Err(Error::Hypervisor {
            op: "xenstore read state",
            source,
        }),
    }
}

/// Writes `<dir>/state`.
pub fn switch_state(xs: &impl XenStore, dir: &str, state: XenbusState) -> Result<()> {
    xs.write(&format!("{dir}/state"), state.as_str())
        .map_err(Error::hv("xenstore write state"))
}

/// Waits (on a watch of `<dir>/state` the caller registered on `xs`) until `done(state)` holds.
/// Fails with [`Error::BackendClosed`] if the backend closes first (unless `done` accepts it),
/// and with [`Error::Timeout`] after `timeout`.
pub fn wait_for_state(
    xs: &impl XenStore,
    dir: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(XenbusState) -> bool,
) -> Result<XenbusState> {
    wait(xs, dir, what, timeout, done, true)
}

/// Waits for the backend to offer the device (InitWait or later) after the frontend switched
/// to Initialising, as Linux's `xennet_create_dev` does: a backend still Closing or Closed from
/// the device's previous connection has not seen the new Initialising yet, so those states are
/// waited through, not taken as an answer. Fails with [`Error::Timeout`] after `timeout`.
pub fn wait_for_offer(xs: &impl XenStore, dir: &str, timeout: Duration) -> Result<XenbusState> {
    let offered = |s| {
        matches!(
            s,
            XenbusState::InitWait | XenbusState::Initialised | XenbusState::Connected
        )
    };
    wait(xs, dir, "the backend's InitWait", timeout, offered, false)
}

fn wait(
    xs: &impl XenStore,
    dir: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(XenbusState) -> bool,
    closed_is_final: bool,
) -> Result<XenbusState> {
    let start = Instant::now();
    loop {
        let s = read_state(xs, dir)?;
        if done(s) {
            return Ok(s);
        }
        if closed_is_final && matches!(s, XenbusState::Closing | XenbusState::Closed) {
            return Err(Error::BackendClosed {
                state: s as u32,
                // Closed is final only for the connect handshake (teardown accepts it): the
                // device never connected.
                hint: "the backend stopped the handshake (its error node says why if it refused \
                       a frontend key); fix that and connect again",
            });
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(Error::Timeout {
                what: format!("{what} (backend state {}, at {dir}/state)", s as u32),
                waited: timeout,
            });
        }
        // Any watch event (or the timeout) re-reads the state.
        xs.read_watch(Some(left))
            .map_err(Error::hv("xenstore read_watch"))?;
    }
}

/// The backend's advertised features (absent keys read as 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendFeatures {
    /// `feature-rx-copy`.
    pub rx_copy: bool,
    /// `feature-rx-flip`.
    pub rx_flip: bool,
    /// `feature-sg`.
    pub sg: bool,
    /// `feature-rx-notify` (in Linux a frontend key; some backends also advertise it).
    pub rx_notify: bool,
    /// `feature-gso-tcpv4`: the backend takes TCPv4 GSO frames from the guest (Linux netfront's
    /// `NETIF_F_TSO`). Not used: smoltcp sends MSS-sized segments (see the crate docs).
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`: likewise for TCPv6 (`NETIF_F_TSO6`).
    pub gso_tcpv6: bool,
    /// `feature-ipv6-csum-offload`: the backend takes IPv6 TCP/UDP frames with a partial
    /// checksum (Linux netfront's `NETIF_F_IPV6_CSUM`); without it netfront completes IPv6
    /// checksums itself before sending.
    pub ipv6_csum_offload: bool,
    /// `multi-queue-max-queues` (1 when absent or not a number).
    pub max_queues: u32,
    /// `feature-split-event-channels`.
    pub split_event_channels: bool,
    /// `feature-ctrl-ring`.
    pub ctrl_ring: bool,
    /// `feature-multicast-control`.
    pub multicast_control: bool,
    /// `feature-dynamic-multicast-control`: `request-multicast-control` is followed while
    /// connected.
    pub dynamic_multicast_control: bool,
    /// `feature-xdp-headroom`.
    pub xdp_headroom: bool,
}

fn read_flag(xs: &impl XenStore, dir: &str, key: &str) -> Result<bool> {
    let path = format!("{dir}/{key}");
    match xs.read(&path) {
        Ok(v) => match v.trim() {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(Error::BadXenstoreValue { path, value: v }),
        },
        Err(hypervisor::Error::XsNoEntry(_)) => Ok(false),
        Err(source) => Err(Error::Hypervisor {
            op: "xenstore read feature",
            source,
        }),
    }
}

/// The offload keys the frontend writes, as Linux netfront's `talk_to_netback` does: they say
/// what this frontend *receives*. Linux writes `feature-gso-tcpv4`, `feature-gso-tcpv6` and
/// `feature-ipv6-csum-offload` unconditionally (whatever the backend offers: the backend's keys
/// of the same names govern the other direction) and never writes `feature-no-csum-offload`.
/// Here all four are written, "0" or "1", so a reconnect never inherits a stale value.
pub fn offload_keys(cfg: &FrontConfig) -> [(&'static str, &'static str); 4] {
    let flag = |on: bool| if on { "1" } else { "0" };
    [
        ("feature-no-csum-offload", flag(!cfg.csum_offload)),
        ("feature-ipv6-csum-offload", flag(cfg.csum_offload)),
        ("feature-gso-tcpv4", flag(cfg.gso_enabled())),
        ("feature-gso-tcpv6", flag(cfg.gso_enabled())),
    ]
}

impl BackendFeatures {
    /// Reads the features from the backend directory.
    pub fn read(xs: &impl XenStore, backend_dir: &str) -> Result<Self> {
        Ok(Self {
            rx_copy: read_flag(xs, backend_dir, "feature-rx-copy")?,
            rx_flip: read_flag(xs, backend_dir, "feature-rx-flip")?,
            sg: read_flag(xs, backend_dir, "feature-sg")?,
            rx_notify: read_flag(xs, backend_dir, "feature-rx-notify")?,
            gso_tcpv4: read_flag(xs, backend_dir, "feature-gso-tcpv4")?,
            gso_tcpv6: read_flag(xs, backend_dir, "feature-gso-tcpv6")?,
            ipv6_csum_offload: read_flag(xs, backend_dir, "feature-ipv6-csum-offload")?,
            max_queues: xs
                .read(&format!("{backend_dir}/multi-queue-max-queues"))
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|&n| n >= 1)
                .unwrap_or(1),
            split_event_channels: read_flag(xs, backend_dir, "feature-split-event-channels")?,
            ctrl_ring: read_flag(xs, backend_dir, "feature-ctrl-ring")?,
            multicast_control: read_flag(xs, backend_dir, "feature-multicast-control")?,
            dynamic_multicast_control: read_flag(
                xs,
                backend_dir,
                "feature-dynamic-multicast-control",
            )?,
            xdp_headroom: read_flag(xs, backend_dir, "feature-xdp-headroom")?,
        })
    }

    /// Whether these features allow `cfg`; the reason if not (written to the frontend's `error`
    /// node, as Linux's `xenbus_dev_fatal` does).
    pub fn check(&self, cfg: &FrontConfig) -> std::result::Result<(), String> {
        match cfg.rx_mode {
            RxMode::Copy if !self.rx_copy => {
                return Err("rx copy mode wanted but the backend has no feature-rx-copy=1".into());
            }
            RxMode::Flip if !self.rx_flip => {
                return Err("rx flip mode wanted but the backend has no feature-rx-flip=1".into());
            }
            _ => {}
        }
        if cfg.max_tx_slots() > 1 && !self.sg {
            return Err(format!(
                "mtu {} needs multi-slot frames but the backend has no feature-sg=1",
                cfg.mtu
            ));
        }
        if cfg.hashing.is_some() && !self.ctrl_ring {
            return Err("receive hashing wanted but the backend has no feature-ctrl-ring=1".into());
        }
        if cfg.multicast.is_some() && !self.multicast_control {
            return Err(
                "multicast control wanted but the backend has no feature-multicast-control=1"
                    .into(),
            );
        }
        if cfg.xdp_headroom != 0 && !self.xdp_headroom {
            return Err("xdp headroom wanted but the backend has no feature-xdp-headroom=1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_garbage_is_refused() {
        for v in 0..=8u32 {
            let s = XenbusState::parse(&v.to_string()).unwrap();
            assert_eq!(s as u32, v);
            assert_eq!(s.as_str(), v.to_string());
        }
        assert_eq!(XenbusState::parse(" 4\n"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::parse("9"), None);
        assert_eq!(XenbusState::parse("connected"), None);
    }

    #[test]
    fn offload_keys_follow_linux_and_the_config() {
        let on = offload_keys(&FrontConfig::default());
        assert_eq!(
            on,
            [
                ("feature-no-csum-offload", "0"),
                ("feature-ipv6-csum-offload", "1"),
                ("feature-gso-tcpv4", "1"),
                ("feature-gso-tcpv6", "1"),
            ]
        );
        let no_gso = offload_keys(&FrontConfig {
            gso: false,
            ..FrontConfig::default()
        });
        assert_eq!(no_gso[1], ("feature-ipv6-csum-offload", "1"));
        assert_eq!(no_gso[2], ("feature-gso-tcpv4", "0"));
        let off = offload_keys(&FrontConfig {
            csum_offload: false,
            ..FrontConfig::default()
        });
        assert_eq!(
            off,
            [
                ("feature-no-csum-offload", "1"),
                ("feature-ipv6-csum-offload", "0"),
                ("feature-gso-tcpv4", "0"),
                ("feature-gso-tcpv6", "0"),
            ]
        );
    }

    #[test]
    fn feature_checks_name_the_missing_key() {
        let all = BackendFeatures {
            rx_copy: true,
            rx_flip: true,
            sg: true,
            rx_notify: true,
            gso_tcpv4: true,
            gso_tcpv6: true,
            ipv6_csum_offload: true,
            max_queues: 1,
            split_event_channels: true,
            ctrl_ring: true,
            multicast_control: true,
            dynamic_multicast_control: true,
            xdp_headroom: true,
        };
        let copy = FrontConfig::default();
        let flip = FrontConfig {
            rx_mode: RxMode::Flip,
            ..FrontConfig::default()
        };
        let jumbo = FrontConfig {
            mtu: 9000,
            ..FrontConfig::default()
        };
        assert!(all.check(&copy).is_ok() && all.check(&flip).is_ok() && all.check(&jumbo).is_ok());
        let no_flip = BackendFeatures {
            rx_flip: false,
            ..all
        };
        assert!(
            no_flip
                .check(&flip)
                .unwrap_err()
                .contains("feature-rx-flip")
        );
        assert!(no_flip.check(&copy).is_ok());
        let no_copy = BackendFeatures {
            rx_copy: false,
            ..all
        };
        assert!(
            no_copy
                .check(&copy)
                .unwrap_err()
                .contains("feature-rx-copy")
        );
        let no_sg = BackendFeatures { sg: false, ..all };
        assert!(no_sg.check(&jumbo).unwrap_err().contains("feature-sg"));
        assert!(no_sg.check(&copy).is_ok());
    }
}
