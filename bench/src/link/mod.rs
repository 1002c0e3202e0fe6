//! Links: what carries Ethernet frames between the remote host and the guest.
//!
//! The experiment ([`crate::tcp_rx`]) is generic over a [`Link`]. A link builds two
//! [`Endpoint`]s, smoltcp devices that the experiment moves onto the remote host's thread and
//! the guest's vCPU thread, and runs whatever sits between them on threads of its own (for the
//! splitnet link: the driver domain's netback and bridge-lite, registered as dom0 vCPUs).
//!
//! The contract an endpoint keeps:
//! - `transmit` may queue frames privately; [`Endpoint::flush`] publishes them (and notifies the
//!   peer if it is waiting). The experiment calls `flush` after every `Interface::poll`.
//! - `receive` hands out frames published by the peer (lent from the link's buffers: no
//!   allocation per frame once warm).
//! - [`Endpoint::wait`] blocks the calling vCPU until a frame may be ready, the timeout passes,
//!   or the link is shut down; it is the only place a thread sleeps, and it is called only after a
//!   bounded backoff found nothing to do. A spurious return is allowed.
//!
//! Two links: [`splitnet::SplitnetLink`], the real path (remote host on bridge-lite's uplink in
//! dom0, netback, netfront in the guest), and [`direct::DirectLink`]: smoltcp to smoltcp through
//! in-memory queues, no driver domain, the upper bound for the splitnet path.

pub mod direct;
pub mod many;
pub mod splitnet;

use std::time::Duration;

use smoltcp::phy::Device;
use xenoprof::DomId;

use crate::Error;

/// The domain the driver domain runs as (dom0).
pub const DOM0: DomId = 0;
/// The guest that receives the stream.
pub const GUEST_DOMID: DomId = 1;
/// The remote host: the wire's far end, profiled as a pseudo-domain of its own (an id just
/// below Xen's reserved range, `DOMID_FIRST_RESERVED` = 0x7FF0, so it never clashes with a guest).
pub const REMOTE_DOMID: DomId = 0x7FEF;

/// Netback's receive path mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RxMode {
    /// Grant copy into guest-posted buffers.
    Copy,
    /// Page flipping (transfer of page ownership).
    Flip,
}

impl RxMode {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            RxMode::Copy => "copy",
            RxMode::Flip => "flip",
        }
    }
}

/// What the guest's netfront negotiates with netback (and so what the driver domain may hand
/// it): the ladder's offload steps, and `tcp-rx --offload`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Offload {
    /// `feature-no-csum-offload=1`, no GSO: every frame MTU-sized with a full checksum, which
    /// netback completes (and segments) in software where the path did not.
    None,
    /// Checksum offload: frames may carry only a partial checksum (`NETRXF_csum_blank`) or be
    /// marked validated, so nobody sums a payload twice; no GSO.
    Csum,
    /// Checksum offload and GSO (`feature-gso-tcpv4`/`-tcpv6`): super-frames of up to 64 KiB
    /// with a GSO extra-info slot, as Linux's netfront takes them; the NIC driver merges
    /// segments with GRO.
    #[default]
    Gso,
}

impl Offload {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Offload::None => "none",
            Offload::Csum => "csum",
            Offload::Gso => "gso",
        }
    }
}

/// What a link is asked to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// IP MTU (the Ethernet frame is 14 bytes longer).
    pub mtu: usize,
    /// Netback's receive mode.
    pub mode: RxMode,
    /// Netback's batch size (grant copies or flips per hypercall).
    pub batch: usize,
    /// What the guest's netfront negotiates.
    pub offload: Offload,
    /// The driver domain.
    pub dom0: DomId,
    /// The receiving guest.
    pub guest: DomId,
    /// The remote host's pseudo-domain.
    pub remote: DomId,
    /// The CPUs dom0, the guest and the remote host run on.
    pub placement: crate::placement::Placement,
}

impl LinkConfig {
    /// The Ethernet MTU (frame length without FCS) for [`LinkConfig::mtu`].
    pub fn ethernet_mtu(&self) -> usize {
        self.mtu + 14
    }
}

/// One end of a link: a smoltcp device plus the hooks the experiment's poll loop needs.
pub trait Endpoint: Device + Send + 'static {
    /// Publishes the frames queued by `transmit` since the last flush and notifies the peer if
    /// it waits. Called after every `Interface::poll`.
    fn flush(&mut self);
    /// Blocks until a received frame may be ready, `timeout` passes, or the link is shut down.
    /// Returns `false` once the link is shut down.
    fn wait(&mut self, timeout: Duration) -> bool;
    /// Frames this endpoint has received (handed to smoltcp) so far.
    fn rx_frames(&self) -> u64;
    /// Frames this endpoint has transmitted so far.
    fn tx_frames(&self) -> u64;
}

/// Figures a link reports about itself at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkStats {
    /// Frames the link dropped (full queues, refused requests), both directions: the sum of
    /// [`LinkStats::drops`].
    pub dropped: u64,
    /// The drops by where and why, e.g. `vif_rx_queue_full` (toward the guest, its queue at
    /// its cap), `nic_rx_no_buffer` (from the remote host, no dom0 buffer),
    /// `nic_tx_dropped` (the guest's ACKs toward the wire, the device full). Zero counts are
    /// kept so runs compare key by key.
    #[serde(default)]
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Notifications sent to a blocked peer (event-channel sends that were not suppressed).
    pub notifies: u64,
}

impl LinkStats {
    /// Adds `n` drops under `why` (and to the total).
    pub fn add_drops(&mut self, why: &str, n: u64) {
        *self.drops.entry(why.to_string()).or_default() += n;
        self.dropped += n;
    }
}

/// A way to connect the remote host to the guest. See the module documentation.
pub trait Link {
    /// The remote host's device (for splitnet: a port on the driver domain's bridge uplink).
    type Remote: Endpoint;
    /// The guest's device (for splitnet: netfront).
    type Guest: Endpoint;

    /// Short name as on the command line (`direct`, `splitnet`).
    fn name(&self) -> &'static str;
    /// One line saying what the link is, for reports.
    fn description(&self) -> String;
    /// Builds the two endpoints and starts the link's own threads (their vCPUs registered with
    /// xenoprof under `cfg.dom0`). Called once per run.
    fn build(&mut self, cfg: &LinkConfig) -> Result<(Self::Remote, Self::Guest), Error>;
    /// Shuts the link down: every `Endpoint::wait` returns `false` from now on, the link's
    /// threads stop and are joined. Called once, after the measured window.
    fn shutdown(&mut self) -> Result<LinkStats, Error>;
}

/// The links the command line can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// smoltcp to smoltcp through in-memory queues, no driver domain (an upper bound).
    Direct,
    /// The remote host on bridge-lite's uplink in dom0, netback, netfront in the guest.
    Splitnet,
}
