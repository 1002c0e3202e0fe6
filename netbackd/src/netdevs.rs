//! Host-mode vifs' netdevs: what Linux's xen-netback makes for every vif, made here as TAP
//! devices for netback ([`netback::Netdevs`]).
//!
//! A vif's netdev is a TAP named as the toolstack asked (`vifname`, or `vif<domid>.<devid>`),
//! with a virtio-net header and the same offloads as TAP uplinks (partial checksums, TSO4,
//! TSO6), the `mtu` key's MTU, and xen-netback's MAC `fe:ff:ff:ff:ff:ff`. It is persistent:
//! when netbackd stops without `--close-on-exit` (an upgrade, a crash) the netdev stays, with
//! its place in the host's bridge, routes and firewall rules, and the next netbackd attaches
//! to it when it takes the device over. It goes when its device goes (the toolstack detaches
//! the vif, or `--close-on-exit`).
//!
//! An HVM guest's emulated NIC is QEMU's TAP `vif<domid>.<devid>-emu`. QEMU holds that TAP's
//! one queue, so it cannot be attached to; like a Linux bridge given it by `vif-bridge`, a
//! builtin vif's switch takes it as a port through an AF_PACKET socket on it.

use hostnet::vnet::HdrLen;
use hostnet::{Tap, TapConfig};
use hypervisor::BackendDomain;
use netback::{Netdevs, Uplink, VifId};

use crate::uplinks::{TAP_OFFLOADS, TapUplink, open_nic};

/// The MAC of every vif netdev, as Linux's xen-netback gives it: the numerically largest
/// address that is not broadcast, so a Linux bridge (which takes the smallest of its ports'
/// addresses) never takes a vif's as its own. Guests' frames carry their own MACs; nothing is
/// ever sent from this one.
pub const VIF_NETDEV_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// Makes host-mode vifs' netdevs as persistent TAPs (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct HostNetdevs;

impl HostNetdevs {
    /// Opens (or attaches to) netdev `name` and sets it up; on an error after creating it,
    /// the device goes again.
    fn open_tap(name: &str, mtu: u32) -> Result<Tap, hostnet::Error> {
        let cfg = TapConfig {
            vnet_hdr: Some(HdrLen::Legacy),
            offload: TAP_OFFLOADS,
            mtu: Some(mtu),
            persist: true,
        };
        let tap = Tap::open(name, &cfg)?;
        let set_up = tap.set_mac(VIF_NETDEV_MAC).and_then(|()| tap.set_up());
        if let Err(e) = set_up {
            if tap.created() {
                let _ = tap.set_persist(false);
            }
            return Err(e);
        }
        Ok(tap)
    }
}

impl<D: BackendDomain> Netdevs<D> for HostNetdevs {
    fn open(&mut self, id: VifId, name: &str, mtu: u32) -> Result<Box<dyn Uplink<D>>, String> {
        let tap = Self::open_tap(name, mtu).map_err(|e| {
            format!("cannot make its netdev {name} (a TAP with a virtio-net header): {e}")
        })?;
        log::info!(
            "{id}: {} netdev {name} (ifindex {}): TAP, persistent, mtu {mtu}, mac fe:ff:ff:ff:ff:ff, \
             offloads checksum, TSO4, TSO6; up, for the toolstack's hotplug script",
            if tap.created() {
                "made"
            } else {
                "attached to the existing"
            },
            tap.ifindex()
        );
        Ok(Box::new(TapUplink::new(
            format!("tap:{name}"),
            tap,
            TAP_OFFLOADS,
            mtu,
        )))
    }

    fn open_emulated(&mut self, id: VifId, name: &str) -> Result<Box<dyn Uplink<D>>, String> {
        let nic = open_nic(format!("nic:{name}"), name, true).map_err(|e| e.to_string())?;
        log::info!("{id}: the guest's emulated NIC {name} joins its vif's switch");
        Ok(Box::new(nic))
    }

    fn remove(&mut self, id: VifId, name: &str) {
        match hostnet::tap::delete(name) {
            Ok(true) => log::info!("{id}: netdev {name} removed"),
            Ok(false) => log::info!("{id}: netdev {name} was already gone"),
            Err(e) => log::warn!(
                "{id}: cannot remove netdev {name}: {e}; remove it by hand (ip tuntap del {name} \
                 mode tap) once nothing holds it"
            ),
        }
    }
}
