//! The `splitnet` link: the remote host on bridge-lite's uplink in dom0, netback serving the
//! guest, netfront and smoltcp in the guest — the seed's experiment on the embedded hypervisor.
//!
//! `build` makes a machine with three domains: dom0 (the driver domain), the guest, and a small
//! pseudo-domain for the remote host, whose only job is to own the wire's event channel. The
//! toolstack step (`add_vif`) creates the vif; a dom0 vCPU thread runs netback (with the uplink
//! attached) and completes the xenbus handshake with the guest's netfront, which `build` connects
//! before handing it to the experiment's guest thread. The remote host's device is the wire's far
//! end (`xen_model::nic::Wire`): smoltcp builds each frame in the device's buffer, and the device writes
//! it straight into a receive buffer dom0's NIC driver posted (DMA, on the remote host's thread,
//! class `dma`) and checks its checksum; dom0's driver merges the segments with GRO.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use netback::{Config, Netback, NetbackSnapshot};
use netfront::{FrontConfig, Netfront};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use testkit::Machine;
use xen_model::nic::{Wire, WireFrame, wire_nic};
use xen_model::{DomainHandle, Hypervisor};

use super::{Endpoint, Link, LinkConfig, LinkStats, Offload, RxMode};
use crate::Error;

/// The remote host's domain id in the hypervisor (the highest id the model has); xenoprof
/// knows it by `LinkConfig::remote`.
pub(crate) const REMOTE_HV_DOMID: u16 = hypervisor::MAX_DOMAINS as u16 - 1;
/// dom0's reservation, in pages.
pub(crate) const DOM0_PAGES: u64 = 16 * 1024;
/// Backend pages for frames (`Netback::new`'s `pool_pages`).
pub(crate) const POOL_PAGES: usize = 8 * 1024;
/// Bytes the remote host's device hands smoltcp per poll before the next `flush`.
const BURST_BYTES: usize = 256 << 10;

/// The guest's reservation, in pages.
const GUEST_PAGES: u64 = 8 * 1024;

/// A step of the machine's assembly failed.
pub(crate) fn assembly(e: testkit::Error) -> Error {
    Error::Config(format!("splitnet link: {e}"))
}

/// Refuses an IP MTU the link cannot carry.
pub(crate) fn check_mtu(mtu: usize) -> Result<(), Error> {
    if !(576..=65521).contains(&mtu) {
        return Err(Error::Config(format!(
            "IP MTU {mtu} is outside 576..=65521 (a netif frame is at most 65535 bytes)"
        )));
    }
    Ok(())
}

/// Netback's configuration: Linux's defaults with `batch` grant operations per hypercall.
pub(crate) fn netback_config(batch: usize) -> Config {
    Config {
        copy_batch_ops: batch.max(1),
        flip_batch_pages: batch.max(1),
        ..Config::default()
    }
}

/// A guest's netfront configuration for receive mode `mode`, IP MTU `mtu` and the offloads it
/// negotiates.
pub(crate) fn front_config(mode: RxMode, mtu: usize, offload: Offload) -> FrontConfig {
    FrontConfig {
        rx_mode: match mode {
            RxMode::Copy => netfront::RxMode::Copy,
            RxMode::Flip => netfront::RxMode::Flip,
        },
        mtu,
        timeout: Duration::from_secs(10),
        csum_offload: offload != Offload::None,
        gso: offload == Offload::Gso,
        ..FrontConfig::default()
    }
}

/// The splitnet link. See the module documentation.
#[derive(Default)]
pub struct SplitnetLink {
    stop: Arc<AtomicBool>,
    backend: Option<JoinHandle<Result<NetbackSnapshot, String>>>,
    xen: Option<Hypervisor>,
}

impl std::fmt::Debug for SplitnetLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplitnetLink")
            .field("running", &self.backend.is_some())
            .finish()
    }
}

impl SplitnetLink {
    /// A link not yet built.
    pub fn new() -> SplitnetLink {
        SplitnetLink::default()
    }
}

impl Link for SplitnetLink {
    type Remote = WireEndpoint;
    type Guest = GuestEndpoint;

    fn name(&self) -> &'static str {
        "splitnet"
    }

    fn description(&self) -> String {
        "splitnet: remote host on bridge-lite's uplink in dom0, netback, netfront + smoltcp in \
         the guest, on the embedded hypervisor"
            .to_string()
    }

    fn build(&mut self, cfg: &LinkConfig) -> Result<(WireEndpoint, GuestEndpoint), Error> {
        check_mtu(cfg.mtu)?;
        let m = Machine::builder()
            .frames(64 * 1024)
            .dom0_id(cfg.dom0)
            .dom0_pages(DOM0_PAGES)
            .build()
            .map_err(assembly)?;
        let guest = m
            .vif_guest(cfg.guest, GUEST_PAGES, testkit::mac(2))
            .map_err(assembly)?;
        let remote = m.remote(REMOTE_HV_DOMID).map_err(assembly)?;
        let Machine { xen, dom0 } = m;
        let eth_mtu = cfg.ethernet_mtu();
        let (wire_tx, wire_rx) = std::sync::mpsc::channel();

        let nb_cfg = netback_config(cfg.batch);
        let stop = self.stop.clone();
        let dom0_id = cfg.dom0;
        // GRO at the NIC goes with GSO to the guest (the ladder adds them together); the NIC
        // keeps its own default for jumbo frames.
        let gro_off = cfg.offload != Offload::Gso;
        let cpu = cfg.placement.dom0;
        let backend = thread::Builder::new()
            .name("dom0-netback".into())
            .spawn(move || -> Result<NetbackSnapshot, String> {
                crate::placement::enter("dom0", cpu)?;
                xenoprof::register_vcpu(dom0_id, xenoprof::Context::Kernel);
                let mut nb = Netback::new(dom0, nb_cfg, POOL_PAGES).map_err(|e| e.to_string())?;
                let wire = wire_nic(nb.pool(), nb.evtchn(), &remote, eth_mtu).and_then(
                    |(mut nic, wire)| {
                        if gro_off {
                            nic.set_gro(false);
                        }
                        nb.attach_uplink(Box::new(nic)).map(|_| wire)
                    },
                );
                let ok = wire.is_ok();
                let _ = wire_tx.send(wire.map_err(|e| e.to_string()));
                if !ok {
                    return Err("the wire could not be attached".into());
                }
                // Relaxed: a stop flag; the join in `shutdown` orders what matters.
                nb.run_until(|| stop.load(Ordering::Relaxed))
                    .map_err(|e| e.to_string())?;
                Ok(nb.snapshot())
            })
            .map_err(|e| Error::Config(format!("splitnet link: spawning dom0: {e}")))?;
        self.backend = Some(backend);
        let wire = wire_rx
            .recv()
            .map_err(|_| Error::Config("splitnet link: dom0 exited before the wire".into()))?
            .map_err(|e| Error::Config(format!("splitnet link: uplink: {e}")))?;

        let nf = Netfront::connect(guest, 0, front_config(cfg.mode, cfg.mtu, cfg.offload))
            .map_err(|e| Error::Config(format!("splitnet link: netfront: {e}")))?;
        self.xen = Some(xen);
        Ok((
            WireEndpoint::new(wire, cfg.ethernet_mtu(), self.stop.clone()),
            GuestEndpoint::new(nf, self.stop.clone()),
        ))
    }

    fn shutdown(&mut self) -> Result<LinkStats, Error> {
        // Relaxed: endpoints and the backend poll the flag; joins order the rest.
        self.stop.store(true, Ordering::Relaxed);
        let snap = match self.backend.take() {
            Some(h) => h
                .join()
                .map_err(|_| Error::Config("splitnet link: dom0 thread panicked".into()))?
                .map_err(|e| Error::Config(format!("splitnet link: netback: {e}")))?,
            None => return Ok(LinkStats::default()),
        };
        let mut stats = LinkStats::default();
        for (_, v) in snap.vifs.iter().chain(&snap.departed) {
            stats.add_drops("vif_rx_queue_full", v.rx_queue_full);
            stats.add_drops("vif_rx_expired", v.rx_expired);
            stats.add_drops("vif_rx_unfit", v.rx_unfit);
            stats.add_drops("vif_rx_discarded", v.rx_discarded);
            stats.add_drops(
                "vif_tx_errors",
                v.tx_runt
                    + v.tx_too_many_slots
                    + v.tx_oversize_slot
                    + v.tx_copy_errors
                    + v.tx_no_buffer
                    + v.tx_csum_errors,
            );
            stats.notifies += v.notifies;
        }
        for (_, _, u) in &snap.uplinks {
            stats.add_drops("nic_rx_no_buffer", u.rx_no_buffer);
            stats.add_drops("nic_rx_errors", u.rx_errors + u.rx_fill_errors);
            stats.add_drops("nic_tx_dropped", u.tx_dropped);
            stats.add_drops("nic_tx_errors", u.tx_errors);
        }
        for p in &snap.bridge.ports {
            stats.add_drops("bridge", p.stats.drops.total());
        }
        self.xen = None;
        Ok(stats)
    }
}

/// The remote host's device: the wire's far end.
pub struct WireEndpoint {
    wire: Wire<DomainHandle>,
    eth_mtu: usize,
    stop: Arc<AtomicBool>,
    rx_frames: u64,
    tx_frames: u64,
    rx_burst: usize,
    /// The last look found no receive buffer posted for the device: smoltcp could not send,
    /// so a wait must also end when dom0 posts one.
    starved: bool,
}

impl WireEndpoint {
    /// The remote host's device on `wire` (frames up to `eth_mtu` bytes); `stop` set ends its
    /// waits.
    pub(crate) fn new(wire: Wire<DomainHandle>, eth_mtu: usize, stop: Arc<AtomicBool>) -> Self {
        WireEndpoint {
            wire,
            eth_mtu,
            stop,
            rx_frames: 0,
            tx_frames: 0,
            rx_burst: 0,
            starved: false,
        }
    }
}

impl std::fmt::Debug for WireEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireEndpoint")
            .field("rx_frames", &self.rx_frames)
            .field("tx_frames", &self.tx_frames)
            .finish()
    }
}

/// A frame taken off the wire, lent to smoltcp; the buffer goes back to the NIC afterwards.
#[derive(Debug)]
pub struct WireRxToken {
    frame: WireFrame,
}

impl phy::RxToken for WireRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.frame)
    }
}

/// A slot on the wire towards dom0.
#[derive(Debug)]
pub struct WireTxToken<'a> {
    wire: &'a mut Wire<DomainHandle>,
    tx_frames: &'a mut u64,
}

impl phy::TxToken for WireTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut f = Some(f);
        let sent = self.wire.send(len, |buf| f.take().map(|f| f(buf)));
        match (sent.flatten(), f) {
            (Some(r), _) => {
                *self.tx_frames += 1;
                r
            }
            // No receive buffer is posted any more (only this thread takes them, and
            // `transmit` checked, so this does not happen): the frame is lost, as on a wire.
            (None, Some(f)) => f(&mut vec![0; len]),
            // `send` returns `None` only before calling `fill`.
            (None, None) => unreachable!("the wire ran fill and refused the frame"),
        }
    }
}

impl Device for WireEndpoint {
    type RxToken<'a> = WireRxToken;
    type TxToken<'a> = WireTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(WireRxToken, WireTxToken<'_>)> {
        // Every receive hands smoltcp a transmit token too: it needs room on the NIC.
        self.starved = !self.wire.can_send();
        if self.starved || self.rx_burst >= BURST_BYTES {
            return None;
        }
        let frame = self.wire.take_frame()?;
        self.rx_frames += 1;
        self.rx_burst += frame.len();
        Some((
            WireRxToken { frame },
            WireTxToken {
                wire: &mut self.wire,
                tx_frames: &mut self.tx_frames,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<WireTxToken<'_>> {
        self.starved = !self.wire.can_send();
        if self.starved {
            return None;
        }
        Some(WireTxToken {
            wire: &mut self.wire,
            tx_frames: &mut self.tx_frames,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.eth_mtu;
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}

impl Endpoint for WireEndpoint {
    fn flush(&mut self) {
        self.rx_burst = 0;
        self.wire.flush();
    }

    fn wait(&mut self, timeout: Duration) -> bool {
        // Relaxed: a stop flag polled at every wait.
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if self.wire.arm(self.starved) {
            return true;
        }
        let _b = xenoprof::blocked();
        let _ = self.wire.wait(timeout);
        !self.stop.load(Ordering::Relaxed)
    }

    fn rx_frames(&self) -> u64 {
        self.rx_frames
    }

    fn tx_frames(&self) -> u64 {
        self.tx_frames
    }
}

/// The guest's device: netfront, plus the link's stop flag.
pub struct GuestEndpoint {
    nf: Netfront<DomainHandle>,
    stop: Arc<AtomicBool>,
}

impl GuestEndpoint {
    /// A guest's device over its connected netfront; `stop` set ends its waits.
    pub(crate) fn new(nf: Netfront<DomainHandle>, stop: Arc<AtomicBool>) -> Self {
        GuestEndpoint { nf, stop }
    }
}

impl std::fmt::Debug for GuestEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestEndpoint").finish()
    }
}

impl Device for GuestEndpoint {
    type RxToken<'a> = <Netfront<DomainHandle> as Device>::RxToken<'a>;
    type TxToken<'a> = <Netfront<DomainHandle> as Device>::TxToken<'a>;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.nf.receive(now)
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.nf.transmit(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.nf.capabilities()
    }
}

impl Endpoint for GuestEndpoint {
    fn flush(&mut self) {
        // Reclaims tx responses, consumes rx responses and refills rx buffers.
        let _ = self.nf.poll();
    }

    fn wait(&mut self, timeout: Duration) -> bool {
        // Relaxed: a stop flag polled at every wait.
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let _b = xenoprof::blocked();
        let _ = self.nf.wait(Some(timeout));
        !self.stop.load(Ordering::Relaxed)
    }

    fn rx_frames(&self) -> u64 {
        self.nf.stats().rx_packets
    }

    fn tx_frames(&self) -> u64 {
        self.nf.stats().tx_packets
    }
}
