//! The host's side of host-mode vifs: their netdevs.
//!
//! With xen-netback every vif is a netdev of the backend domain (`vif<domid>.<devid>`, or the
//! `vifname` key), made when the device is probed, before InitWait, so the toolstack's hotplug
//! script finds it once the backend is in InitWait. netback cannot make a netdev itself; the
//! program running it (netbackd: a TAP with a virtio-net header, persistent so it outlives a
//! restart) implements [`Netdevs`] and netback plugs what it returns into the vif as an uplink.
//! A backend given none serves builtin vifs only and refuses host-mode ones, saying why.

use hypervisor::BackendDomain;

use crate::uplink::Uplink;
use crate::vif::VifId;

/// Makes and removes the netdevs of host-mode vifs (and finds an HVM guest's emulated NIC).
pub trait Netdevs<D: BackendDomain> {
    /// The netdev of host-mode vif `id`, named `name`, with MTU `mtu`: made now (before the
    /// backend writes InitWait), or, after a restart, the one a previous instance left. `Err`
    /// says what went wrong and what to do; the device is then refused.
    fn open(&mut self, id: VifId, name: &str, mtu: u32) -> Result<Box<dyn Uplink<D>>, String>;

    /// An HVM guest's emulated NIC, QEMU's TAP `name` (`<vif netdev>-emu`), to put on the
    /// switch of its builtin vif. `Err` if it is not there (a PV guest, or QEMU not started).
    fn open_emulated(&mut self, id: VifId, name: &str) -> Result<Box<dyn Uplink<D>>, String>;

    /// Vif `id`'s device is gone: removes the netdev `open` made (its uplink was dropped
    /// first).
    fn remove(&mut self, id: VifId, name: &str);
}
