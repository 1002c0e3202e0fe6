//! The simulated NIC the benchmark's remote host sends through: a device, not a CPU. The
//! backend's NIC driver ([`WireNic`], to netback just an `Uplink`) posts
//! receive buffers (backend pages) to the device as descriptors; the device, on the remote
//! host's thread, writes each frame straight into a posted buffer through the backend domain's
//! memory (its DMA: the copy is the device's, not the backend's), checks its TCP/UDP checksum
//! (rx checksum offload) and completes the descriptor with the frame's length. The driver's
//! poll collects completed descriptors, runs them through GRO (class `gro`), hands the frames
//! to the switch and posts fresh buffers (class `nic`). Frames the switch sends to the uplink
//! go the other way through a queue of recycled buffers. Each side wakes the other through a
//! real event channel, and only when the other asked to be woken (a want-event flag set before
//! it sleeps and re-checked after a full fence: ring.h's final check, in miniature), so a busy
//! stream sends almost no events.
//!
//! The device's far end is a [`Wire`], driven by the remote host's thread. [`attach`] builds both
//! and plugs the driver into a netback as an uplink.

mod driver;
mod wire;

pub use driver::WireNic;
pub use wire::{WIRE_SLOTS, Wire, WireFrame, wire_nic};

use bridge_lite::PortId;
use hypervisor::BackendDomain;
use netback::Netback;

/// Builds the NIC model towards `remote` (a pseudo-domain for the remote host) and plugs its
/// driver into `nb` as an uplink; returns the switch port and the wire's far end for the remote
/// host's thread. `mtu` is the largest Ethernet frame (bytes, header included).
pub fn attach<D: BackendDomain>(
    nb: &mut Netback<D>,
    remote: &D,
    mtu: usize,
) -> Result<(PortId, Wire<D>), netback::Error> {
    let (nic, wire) = wire_nic(nb.pool(), nb.evtchn(), remote, mtu)?;
    let port = nb.attach_uplink(Box::new(nic))?;
    Ok((port, wire))
}
