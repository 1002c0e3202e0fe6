//! Uplinks: bridge-lite ports backed by something other than a guest.
//!
//! An [`Uplink`] moves frames between the switch and the outside: in the `netbackd` program, a
//! Linux TAP device or an `AF_PACKET` socket on a real NIC; in the benchmark, the embedded
//! model's simulated NIC (`xen_model::nic`), which is just another uplink to netback. Several
//! may be attached at once; each is a switch port with counters and pcap like any other. Each says how it wakes the
//! backend ([`Wakeup`]): an event-channel port on the backend's handle, or a descriptor the
//! backend's loop polls together with its event channels.

use std::os::fd::BorrowedFd;

use hypervisor::{BackendDomain, Port};

use crate::pool::{BufPool, NetFrame};

/// How an uplink wakes the backend when it has work.
#[derive(Debug, Clone, Copy)]
pub enum Wakeup<'a> {
    /// An event-channel port bound on the backend's own handle.
    Port(Port),
    /// A descriptor the backend polls (readable: frames wait).
    Fd(BorrowedFd<'a>),
}

/// An uplink's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UplinkStats {
    /// Frames received from outside (as the device delivered them, before GRO).
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames GRO merged into the frame before them (handed to the switch inside it).
    pub rx_gro_merged: u64,
    /// Super-frames GRO handed to the switch (two or more frames each).
    pub rx_gro_super: u64,
    /// Frames dropped for want of backend buffers (none for a device that waits for posted
    /// buffers).
    pub rx_no_buffer: u64,
    /// Frames dropped because writing them into backend pages failed.
    pub rx_fill_errors: u64,
    /// Frames the device handed over damaged (truncated, or with a header that does not parse).
    pub rx_errors: u64,
    /// Frames sent outside.
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames dropped because the device was full.
    pub tx_dropped: u64,
    /// Frames that could not be read out of backend pages or written to the device, or fixed
    /// up for it (a checksum to complete, a super-frame to segment).
    pub tx_errors: u64,
}

/// What an uplink may use while the backend runs it.
#[derive(Debug)]
pub struct UplinkIo<'a, D: BackendDomain> {
    /// The backend's frame pool: received frames go into its pages.
    pub pool: &'a BufPool<D>,
    /// The backend's event-channel handle (for uplinks woken through a port).
    pub evtchn: &'a D::Evtchn,
}

/// A switch port backed by something outside the guests.
pub trait Uplink<D: BackendDomain> {
    /// A name for logs and reports (`wire`, `tap:sn0`, `nic:eth0`).
    fn name(&self) -> &str;
    /// The largest frame it delivers: the unit of the receive budget.
    fn max_frame(&self) -> usize;
    /// Takes frames from outside into backend buffers (appended to `out`), at most `budget`
    /// bytes; returns whether it took any.
    fn receive(&mut self, io: &UplinkIo<'_, D>, out: &mut Vec<NetFrame<D>>, budget: usize) -> bool;
    /// Sends the frames the switch queued for this port (draining `frames`).
    fn transmit(&mut self, io: &UplinkIo<'_, D>, frames: &mut Vec<NetFrame<D>>);
    /// Before the backend blocks: arranges to be woken when frames arrive, and says whether
    /// some already wait.
    fn arm(&mut self) -> bool;
    /// How this uplink wakes the backend.
    fn wakeup(&self) -> Wakeup<'_>;
    /// Counters.
    fn stats(&self) -> UplinkStats;
    /// What it takes as is (partial checksums, super-frames); anything else is fixed up in
    /// software before `transmit` sees it. A plain NIC takes whole frames only.
    fn accepts(&self) -> crate::Accepts {
        crate::Accepts::NONE
    }
}
