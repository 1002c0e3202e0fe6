//! The driver-domain backend: every vif, the switch, and the loop a dom0 vCPU runs.
//!
//! One pass ([`Netback::poll`]): control-plane events (non-blocking), then each vif's tx ring into
//! the switch, the switch's output into each vif's rx queue (or the uplink), then each vif's rx
//! delivery. When a pass finds nothing to do, [`Netback::wait`] blocks on dom0's event channels
//! (bounded by `Config::poll_interval`, so watches and timers are looked at regularly). Rings are
//! re-armed with the final checks before blocking, so no notification is lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bridge_lite::{Bridge, BridgeConfig, BridgeSnapshot, Output, PortId, PortKind};
use hypervisor::{DomainHandle, Port, XsConnection};

use crate::batch::CopyBatch;
use crate::config::Config;
use crate::error::Error;
use crate::pool::{BufPool, MAX_FRAME_PAGES, NetFrame};
use crate::uplink::Uplink;
use crate::vif::{FrontendKeys, Vif, VifId, VifStats};
use crate::xenbus::{Device, XenbusState, features, parse_device_path, read_frontend_keys};

const BE_TOKEN: &str = "netback";
/// How long a vif may post no rx buffers before it stops holding the uplink back.
const STALL_GRACE: Duration = Duration::from_millis(100);
const FE_TOKEN: &str = "netback-frontend";

/// A snapshot of the backend's counters, `Send` so it can leave the dom0 thread.
#[derive(Debug, Clone)]
pub struct NetbackSnapshot {
    /// Each connected vif's counters (disabled vifs included, with their reason).
    pub vifs: Vec<(VifId, VifStats)>,
    /// Final counters of vifs that have disconnected, in the order they left.
    pub departed: Vec<(VifId, VifStats)>,
    /// The switch's per-port counters.
    pub bridge: BridgeSnapshot,
    /// Grant-copy hypercalls and ops, all vifs.
    pub copy_hypercalls: u64,
    /// Grant-copy ops submitted.
    pub copy_ops: u64,
    /// dom0 pages held by the frame pool.
    pub pool_pages: usize,
    /// The uplink's counters, if one is attached.
    pub uplink: Option<crate::uplink::UplinkStats>,
}

/// The backend. Lives on a dom0 vCPU thread (it is not `Send`: frames are `Rc`s).
pub struct Netback {
    dom0: DomainHandle,
    xs: XsConnection,
    cfg: Config,
    allow_flip: bool,
    bridge: Bridge,
    pool: BufPool,
    batch: CopyBatch,
    vifs: Vec<Vif>,
    /// Devices the control plane knows, by (fe, devid).
    devices: HashMap<VifId, Device>,
    departed: Vec<(VifId, VifStats)>,
    uplink: Option<Uplink>,
    out: Output<NetFrame>,
    frames: Vec<NetFrame>,
    start: Instant,
    be_base: String,
}

impl std::fmt::Debug for Netback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netback")
            .field("dom0", &self.dom0.domid())
            .field("vifs", &self.vifs)
            .field("pool", &self.pool)
            .finish()
    }
}

impl Netback {
    /// A backend in `dom0` with an empty switch. `pool_pages` bounds the dom0 pages used for
    /// frames. Starts watching the backend directory for vifs the toolstack adds.
    pub fn new(dom0: DomainHandle, cfg: Config, pool_pages: usize) -> Result<Netback, Error> {
        cfg.validate()?;
        if pool_pages < MAX_FRAME_PAGES {
            return Err(Error::Config {
                what: "pool_pages",
                why: "must hold at least one maximum-size frame (17 pages)",
            });
        }
        let xs = dom0.xenstore();
        let be_base = format!("/local/domain/{}/backend/vif", dom0.domid());
        xs.watch(&be_base, BE_TOKEN)?;
        let pool = BufPool::new(dom0.clone(), pool_pages);
        Ok(Netback {
            batch: CopyBatch::new(cfg.copy_batch_ops),
            xs,
            allow_flip: true,
            bridge: Bridge::new(BridgeConfig::default())?,
            pool,
            vifs: Vec::new(),
            devices: HashMap::new(),
            departed: Vec::new(),
            uplink: None,
            out: Output::new(),
            frames: Vec::new(),
            start: Instant::now(),
            be_base,
            cfg,
            dom0,
        })
    }

    /// Whether frontends may ask for page flipping (`feature-rx-flip`); on by default.
    pub fn set_allow_flip(&mut self, allow: bool) {
        self.allow_flip = allow;
    }

    /// The switch, to add ports, static MACs or captures.
    pub fn bridge(&mut self) -> &mut Bridge {
        &mut self.bridge
    }

    /// The frame pool (dom0 pages).
    pub fn pool(&self) -> &BufPool {
        &self.pool
    }

    /// Plugs an uplink (the NIC towards the wire) into the switch.
    pub fn attach_uplink(&mut self, mut uplink: Uplink) -> Result<PortId, Error> {
        let port = self.bridge.add_port(PortKind::Uplink)?;
        uplink.set_bridge_port(port);
        self.uplink = Some(uplink);
        Ok(port)
    }

    /// Connects a vif from keys read elsewhere (the control plane does this itself; tests and
    /// tools that drive a frontend by hand call it directly).
    pub fn connect_vif(&mut self, id: VifId, keys: FrontendKeys) -> Result<Port, Error> {
        let port = self.bridge.add_port(PortKind::Vif {
            domid: id.domid,
            handle: id.devid,
        })?;
        match Vif::connect(&self.dom0, id, keys, port) {
            Ok(vif) => {
                let p = vif.port();
                self.vifs.push(vif);
                Ok(p)
            }
            Err(e) => {
                let _ = self.bridge.remove_port(port);
                Err(e.into())
            }
        }
    }

    /// Disconnects a vif: unbinds its channel, unmaps its rings, unplugs it from the switch.
    pub fn disconnect_vif(&mut self, id: VifId) -> Option<VifStats> {
        let i = self.vifs.iter().position(|v| v.id == id)?;
        let vif = self.vifs.swap_remove(i);
        let _ = self.dom0.close(vif.port);
        let _ = self.bridge.remove_port(vif.bridge_port);
        self.out.clear();
        self.departed.push((id, vif.stats.clone()));
        Some(vif.stats.clone())
    }

    /// The vif's counters.
    pub fn vif_stats(&self, id: VifId) -> Option<VifStats> {
        self.vifs
            .iter()
            .find(|v| v.id == id)
            .map(|v| v.stats.clone())
    }

    /// Connected vifs.
    pub fn vifs(&self) -> impl Iterator<Item = &Vif> {
        self.vifs.iter()
    }

    /// Counters of everything, for reports.
    pub fn snapshot(&self) -> NetbackSnapshot {
        NetbackSnapshot {
            vifs: self.vifs.iter().map(|v| (v.id, v.stats.clone())).collect(),
            departed: self.departed.clone(),
            bridge: self.bridge.snapshot(),
            copy_hypercalls: self.batch.hypercalls,
            copy_ops: self.batch.ops_done,
            pool_pages: self.pool.owned_pages(),
            uplink: self.uplink.as_ref().map(|u| u.stats()),
        }
    }

    /// One pass over the control plane and every vif. Returns whether any work was done.
    pub fn poll(&mut self) -> Result<bool, Error> {
        self.poll_xenbus()?;
        let now = Instant::now();
        let since = now.duration_since(self.start);
        let mut work = false;
        // Guest → switch.
        for i in 0..self.vifs.len() {
            self.frames.clear();
            let vif = &mut self.vifs[i];
            work |= vif.tx_action(
                &self.dom0,
                &self.pool,
                &self.cfg,
                &mut self.batch,
                &mut self.frames,
            );
            if !self.frames.is_empty() {
                let port = vif.bridge_port;
                self.bridge
                    .forward(port, &mut self.frames, since, &mut self.out)?;
            }
        }
        // Wire → switch, flow-controlled like a NIC honouring PAUSE frames: dom0 takes from the
        // wire only as many bytes as the fullest vif queue still has room for, so a burst from
        // the wire is held on the wire (the far end sees a full NIC) rather than dropped at a vif.
        let budget = self.uplink_budget(now);
        if let Some(up) = self.uplink.as_mut()
            && budget >= up.max_frame()
            && let Some(port) = up.bridge_port()
        {
            self.frames.clear();
            work |= up.receive(&self.pool, &mut self.frames, budget);
            if !self.frames.is_empty() {
                self.bridge
                    .forward(port, &mut self.frames, since, &mut self.out)?;
            }
        }
        // Switch → queues.
        if !self.out.is_empty() {
            let cap = self.cfg.rx_queue_bytes;
            for vif in &mut self.vifs {
                for f in self.out.drain(vif.bridge_port) {
                    vif.enqueue_rx(f, cap);
                }
            }
            if let Some(up) = self.uplink.as_mut()
                && let Some(port) = up.bridge_port()
            {
                up.transmit(self.out.drain(port));
            }
            self.out.clear();
        }
        // Queues → guests.
        for vif in &mut self.vifs {
            work |= vif.rx_action(&self.dom0, &self.pool, &self.cfg, &mut self.batch, now);
        }
        Ok(work)
    }

    /// Re-arms the tx rings (`final_check_for_requests`; rx rings are armed by the rx pass when
    /// it lacks buffers) and the uplink, then blocks until an event arrives or `timeout` (capped
    /// at `Config::poll_interval`) passes. Events that then find no work are counted as spurious.
    pub fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        let mut more = false;
        for vif in &mut self.vifs {
            if vif.is_disabled() {
                continue;
            }
            match vif.tx.final_check_for_requests() {
                Ok(true) => more = true,
                Ok(false) => {}
                Err(e) => vif.disable(crate::vif::Fatal::Ring(e)),
            }
        }
        // Only if the uplink may take a frame now: with less room than one frame, waiting frames
        // are not work, and counting them would turn this wait into a spin.
        if let Some(up) = self.uplink.as_ref()
            && self.uplink_budget(Instant::now()) >= up.max_frame()
        {
            more |= up.has_work();
        }
        if more {
            return Ok(());
        }
        let pending = {
            let _b = xenoprof::blocked();
            self.dom0.wait(Some(timeout.min(self.cfg.poll_interval)))?
        };
        for vif in &mut self.vifs {
            if pending.contains(vif.port) {
                vif.event_pending = true;
            }
        }
        Ok(())
    }

    /// Serves until `stop` returns true: poll while there is work, wait when there is none.
    pub fn run_until(&mut self, mut stop: impl FnMut() -> bool) -> Result<(), Error> {
        while !stop() {
            let work = self.poll()?;
            self.account_spurious();
            if !work {
                self.wait(self.cfg.poll_interval)?;
            }
        }
        Ok(())
    }

    /// Bytes the uplink may take from the wire this pass: the room left in the fullest rx queue
    /// of a live vif (any frame may flood to every vif). A vif whose guest has posted no buffers
    /// for `STALL_GRACE` does not hold the wire back: frames for it are dropped at its queue (as
    /// Linux drops), so one stalled guest cannot pause the wire for the others.
    fn uplink_budget(&self, now: Instant) -> usize {
        self.vifs
            .iter()
            .filter(|v| !v.is_disabled())
            .filter(|v| {
                v.rx_stalled_since
                    .is_none_or(|t| now.duration_since(t) < STALL_GRACE)
            })
            .map(|v| self.cfg.rx_queue_bytes.saturating_sub(v.rx_queued_bytes))
            .min()
            .unwrap_or(self.cfg.rx_queue_bytes)
    }

    /// An event that led to a pass with no work for its vif is spurious (XSA-332 accounting).
    fn account_spurious(&mut self) {
        for vif in &mut self.vifs {
            if std::mem::take(&mut vif.event_pending) && !vif.did_work {
                vif.stats.spurious_events += 1;
                self.dom0.report_spurious(vif.port);
            }
            vif.did_work = false;
        }
    }

    fn poll_xenbus(&mut self) -> Result<(), Error> {
        while let Some(ev) = self.xs.read_watch(Some(Duration::ZERO))? {
            if ev.token == BE_TOKEN {
                match parse_device_path(&self.be_base, &ev.path) {
                    Some((fe, devid)) => self.probe(VifId { domid: fe, devid }),
                    // The watch's own registration event, or a change above the device level
                    // (vifs created before the backend started): look at everything.
                    None => self.scan(),
                }
            } else if ev.token == FE_TOKEN {
                let ids: Vec<VifId> = self
                    .devices
                    .values()
                    .filter(|d| ev.path.starts_with(&d.fe_path))
                    .map(|d| d.id)
                    .collect();
                for id in ids {
                    self.frontend_changed(id);
                }
            }
        }
        Ok(())
    }

    /// Probes every device directory under the backend tree.
    fn scan(&mut self) {
        let Ok(fes) = self.xs.directory(&self.be_base) else {
            return;
        };
        for fe in fes {
            let Ok(domid) = fe.parse() else { continue };
            let Ok(devs) = self.xs.directory(&format!("{}/{fe}", self.be_base)) else {
                continue;
            };
            for dev in devs {
                if let Ok(devid) = dev.parse() {
                    self.probe(VifId { domid, devid });
                }
            }
        }
    }

    /// A new device directory: write features, go to InitWait, watch the frontend.
    fn probe(&mut self, id: VifId) {
        if self.devices.contains_key(&id) {
            return;
        }
        let be_path = format!("{}/{}/{}", self.be_base, id.domid, id.devid);
        let Ok(fe_path) = self.xs.read(&format!("{be_path}/frontend")) else {
            return; // Not fully created yet; the next watch event retries.
        };
        for (k, v) in features(self.allow_flip) {
            let _ = self.xs.write(&format!("{be_path}/{k}"), v);
        }
        let _ = self.xs.write(&format!("{be_path}/state"), "2");
        let _ = self.xs.watch(&fe_path, FE_TOKEN);
        self.devices.insert(
            id,
            Device {
                id,
                be_path,
                fe_path,
                state: XenbusState::InitWait,
            },
        );
    }

    fn set_state(&mut self, id: VifId, state: XenbusState) {
        if let Some(d) = self.devices.get_mut(&id) {
            d.state = state;
            let _ = self
                .xs
                .write(&format!("{}/state", d.be_path), state.as_str());
        }
    }

    /// The frontend's directory changed: follow its state.
    fn frontend_changed(&mut self, id: VifId) {
        let Some(dev) = self.devices.get(&id).cloned() else {
            return;
        };
        let fe_state = self
            .xs
            .read(&format!("{}/state", dev.fe_path))
            .ok()
            .and_then(|s| XenbusState::parse(&s));
        match (fe_state, dev.state) {
            (Some(XenbusState::Initialised | XenbusState::Connected), XenbusState::InitWait) => {
                match read_frontend_keys(&self.xs, &dev.fe_path, self.allow_flip) {
                    Ok(keys) => match self.connect_vif(id, keys) {
                        Ok(_) => self.set_state(id, XenbusState::Connected),
                        Err(e) => self.fail(id, &e.to_string()),
                    },
                    Err(reason) => self.fail(id, &reason),
                }
            }
            (Some(XenbusState::Closing), s) if s != XenbusState::Closed => {
                self.disconnect_vif(id);
                self.set_state(id, XenbusState::Closing);
            }
            (Some(XenbusState::Closed) | None, s) if s != XenbusState::Closed => {
                self.disconnect_vif(id);
                self.set_state(id, XenbusState::Closed);
            }
            // A frontend that comes back after a close: offer the device again.
            (Some(XenbusState::Initialising), XenbusState::Closed) => {
                for (k, v) in features(self.allow_flip) {
                    let _ = self.xs.write(&format!("{}/{k}", dev.be_path), v);
                }
                let _ = self.xs.rm(&format!("{}/error", dev.be_path));
                self.set_state(id, XenbusState::InitWait);
            }
            _ => {}
        }
    }

    /// `xenbus_dev_fatal`: log, write `error`, close.
    fn fail(&mut self, id: VifId, reason: &str) {
        eprintln!("netback: {id}: cannot connect the frontend: {reason}");
        if let Some(d) = self.devices.get(&id) {
            let _ = self.xs.write(&format!("{}/error", d.be_path), reason);
        }
        self.disconnect_vif(id);
        self.set_state(id, XenbusState::Closed);
    }
}

impl Drop for Netback {
    fn drop(&mut self) {
        let ids: Vec<VifId> = self.vifs.iter().map(|v| v.id).collect();
        for id in ids {
            self.disconnect_vif(id);
        }
        self.out.clear();
        self.frames.clear();
        self.uplink = None;
        self.pool.release();
    }
}
