//! The driver-domain backend: every vif, the switch, the uplinks, and the loop a backend vCPU
//! runs.
//!
//! One pass ([`Netback::poll`]): control-plane events (a bounded number), then each vif's tx
//! ring into the switch, each uplink into the switch, the switch's output into each vif's rx
//! queue (or an uplink), then each vif's rx delivery. When a pass finds nothing to do,
//! [`Netback::wait`] re-arms every ring and uplink with the final checks and blocks until an
//! event arrives: on one `poll` over the backend's event-channel handle, its xenstore
//! connection, the uplinks' descriptors and an optional wake descriptor, where the hypervisor
//! offers descriptors (both implementations do), else on the event-channel handle alone. Ports
//! delivered by a wait are unmasked after the pass that served them (the late EOI).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bridge_lite::{Bridge, BridgeSnapshot, CaptureDirection, PortId, PortKind};
use hypervisor::{BackendDomain, EventChannel, Port, XenStore};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::batch::CopyBatch;
use crate::config::Config;
use crate::control::{ControlThread, ThreadJob};
use crate::device::{DEFAULT_SWITCH, DeviceConfig, VifMode};
use crate::error::{Error, FrontendError};
use crate::netdev::Netdevs;
use crate::offloads::{SegScratch, fit};
use crate::pool::{BufPool, MAX_FRAME_PAGES, NetFrame};
use crate::rate::Rate;
use crate::switch::{SwitchId, SwitchSnapshot, Switches};
use crate::uplink::{Uplink, UplinkIo, UplinkStats, Wakeup};
use crate::vif::{FrontendKeys, Queue, Vif, VifId, VifStats};
use crate::xenbus::{VifControl, Xenbus};

/// Control-plane commands carried out per pass (with the control plane on its own thread).
const COMMANDS_PER_PASS: usize = 64;

mod inspect;
pub use inspect::{DeviceInfo, QueueDump, RateInfo, RingDump, VifDump};
/// Departed vifs whose final counters are kept.
const DEPARTED_KEPT: usize = 64;

/// A snapshot of the backend's counters, `Send` so it can leave the backend thread.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NetbackSnapshot {
    /// Each connected vif's counters (disabled vifs included, with their reason).
    pub vifs: Vec<(VifId, VifStats)>,
    /// Final counters of the most recent vifs that disconnected (at most 64), oldest first.
    pub departed: Vec<(VifId, VifStats)>,
    /// Vifs that have disconnected since the backend started.
    pub departed_total: u64,
    /// The default switch's (`xenbr0`'s) per-port counters.
    pub bridge: BridgeSnapshot,
    /// Every switch's counters: the named ones and each host-mode vif's own.
    pub switches: Vec<SwitchSnapshot>,
    /// Grant-copy hypercalls, all vifs.
    pub copy_hypercalls: u64,
    /// Grant-copy ops submitted.
    pub copy_ops: u64,
    /// Backend pages held by the frame pool.
    pub pool_pages: usize,
    /// Each uplink's name, switch port (on its switch: see [`SwitchSnapshot::uplinks`]) and
    /// counters.
    pub uplinks: Vec<(String, PortId, UplinkStats)>,
    /// Devices the control plane tracks.
    pub devices: usize,
}

struct UplinkSlot<D: BackendDomain> {
    dev: Box<dyn Uplink<D>>,
    switch: SwitchId,
    port: PortId,
    /// The vif whose host netdev or emulated NIC this is (removed with its device).
    owner: Option<VifId>,
    /// Frames that could not be fitted to what it takes (counted into its `tx_errors`).
    unfit: u64,
}

/// A device the control plane has prepared (before InitWait): its configuration and the
/// switch its vif joins (a named one, or its own private one in host mode).
struct Prepared {
    cfg: DeviceConfig,
    switch: SwitchId,
}

/// The data path: everything a pass touches. The control plane drives it through
/// [`VifControl`].
struct Datapath<D: BackendDomain> {
    dom0: D,
    evtchn: D::Evtchn,
    cfg: Config,
    switches: Switches<D>,
    /// `xenbr0`: where uplinks go unless told otherwise and builtin vifs without a `bridge`.
    default_switch: SwitchId,
    /// Devices prepared by the control plane, connected or not.
    devices: HashMap<VifId, Prepared>,
    /// Makes host-mode vifs' netdevs (`None`: host mode is refused).
    netdevs: Option<Box<dyn Netdevs<D>>>,
    pool: BufPool<D>,
    batch: CopyBatch,
    vifs: Vec<Vif<D>>,
    departed: VecDeque<(VifId, VifStats)>,
    departed_total: u64,
    uplinks: Vec<UplinkSlot<D>>,
    frames: Vec<NetFrame<D>>,
    /// The pass's failed grant copies, routed back to their queues (reused).
    failed: Vec<(crate::batch::Owner, hypervisor::GrantStatus)>,
    /// Ports delivered by the last wait, unmasked after the next pass.
    delivered: Vec<Port>,
    /// pcap files to capture vifs into, started whenever the vif connects.
    captures: HashMap<VifId, PathBuf>,
    /// Software segmentation's buffers.
    seg: SegScratch,
    start: Instant,
    /// The transmit limit of vifs whose device has no `rate` key.
    default_rate: Option<Rate>,
}

/// Where the control plane runs.
enum Control<D: BackendDomain> {
    /// Inside [`Netback::poll`], on the data path's thread (a bounded number of watch events
    /// per pass): deterministic, for tests and tools that drive the backend by hand.
    Inline(Xenbus<D::Store>),
    /// On a thread of its own (`Config::control_thread`): the data path only executes the
    /// commands it sends.
    Thread(ControlThread),
}

impl<D: BackendDomain> std::fmt::Debug for Control<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Inline(x) => x.fmt(f),
            Control::Thread(t) => t.fmt(f),
        }
    }
}

/// The backend. Lives on one backend vCPU thread (it is not `Send`: frames are `Rc`s).
pub struct Netback<D: BackendDomain> {
    control: Control<D>,
    dp: Datapath<D>,
    wake: Option<OwnedFd>,
}

impl<D: BackendDomain> std::fmt::Debug for Netback<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netback")
            .field("dom0", &self.dp.dom0.domid())
            .field("vifs", &self.dp.vifs)
            .field("pool", &self.dp.pool)
            .field("control", &self.control)
            .finish()
    }
}

impl<D: BackendDomain> Netback<D> {
    /// A backend in `dom0` with an empty switch. `pool_pages` bounds the backend pages used for
    /// frames. Starts watching the backend directory for vifs the toolstack adds. Page flipping
    /// is offered if the hypervisor can transfer pages.
    pub fn new(dom0: D, cfg: Config, pool_pages: usize) -> Result<Netback<D>, Error> {
        cfg.validate()?;
        if pool_pages < MAX_FRAME_PAGES {
            return Err(Error::Config {
                what: "pool_pages",
                why: "must hold at least one maximum-size frame (17 pages)",
            });
        }
        let (domid, flip, policy, queues) = (
            dom0.domid(),
            dom0.can_transfer(),
            cfg.vif_mode,
            cfg.max_queues,
        );
        let control = if cfg.control_thread {
            Control::Thread(ControlThread::spawn(
                dom0.clone(),
                cfg.xenstore_timeout,
                move |xs| Xenbus::new(xs, domid, flip, policy, queues),
            )?)
        } else {
            Control::Inline(Xenbus::new(dom0.xenstore()?, domid, flip, policy, queues)?)
        };
        let evtchn = dom0.open_evtchn()?;
        let mut switches = Switches::new();
        let default_switch = switches.named_or_new(DEFAULT_SWITCH)?;
        Ok(Netback {
            control,
            dp: Datapath {
                batch: CopyBatch::new(cfg.copy_batch_ops),
                switches,
                default_switch,
                devices: HashMap::new(),
                netdevs: None,
                pool: BufPool::new(dom0.clone(), pool_pages),
                vifs: Vec::new(),
                departed: VecDeque::new(),
                departed_total: 0,
                uplinks: Vec::new(),
                frames: Vec::new(),
                failed: Vec::new(),
                delivered: Vec::new(),
                captures: HashMap::new(),
                seg: SegScratch::new(),
                start: Instant::now(),
                default_rate: None,
                cfg,
                evtchn,
                dom0,
            },
            wake: None,
        })
    }

    /// Whether frontends may ask for page flipping (`feature-rx-flip`). On by default where the
    /// hypervisor can transfer pages; refused where it cannot (real Xen from userspace).
    pub fn set_allow_flip(&mut self, allow: bool) -> Result<(), Error> {
        if allow && !self.dp.dom0.can_transfer() {
            return Err(Error::Config {
                what: "page flipping",
                why: "is not possible here: this hypervisor interface cannot transfer pages \
                      (use copy mode)",
            });
        }
        match &mut self.control {
            Control::Inline(x) => x.set_allow_flip(allow),
            Control::Thread(t) => t.allow_flip(allow),
        }
        Ok(())
    }

    /// A descriptor whose readability ends a [`Netback::wait`] (for example the read end of a
    /// self-pipe a signal handler writes); the backend drains it.
    pub fn set_wake_fd(&mut self, fd: OwnedFd) {
        self.wake = Some(fd);
    }

    /// Captures vif `id`'s traffic (both directions) into a pcap file at `path` from its next
    /// connect on (each connect starts the file afresh).
    pub fn capture_vif(&mut self, id: VifId, path: PathBuf) {
        self.dp.captures.insert(id, path);
    }

    /// The default switch (`xenbr0`), to add ports, static MACs or captures.
    pub fn bridge(&mut self) -> &mut Bridge {
        &mut self.dp.switches.get(self.dp.default_switch).bridge
    }

    /// The named switch `name`, if there is one.
    pub fn switch_bridge(&mut self, name: &str) -> Option<&mut Bridge> {
        let id = self.dp.switches.named(name)?;
        Some(&mut self.dp.switches.get(id).bridge)
    }

    /// Makes the named switch `name` (builtin vifs whose `bridge` key names it join it);
    /// nothing if it exists. `xenbr0` always exists.
    pub fn add_switch(&mut self, name: &str) -> Result<SwitchId, Error> {
        Ok(self.dp.switches.named_or_new(name)?)
    }

    /// Gives the backend a way to make host-mode vifs' netdevs; without one, host-mode vifs
    /// are refused.
    pub fn set_netdevs(&mut self, netdevs: Box<dyn Netdevs<D>>) {
        self.dp.netdevs = Some(netdevs);
    }

    /// The frame pool (backend pages).
    pub fn pool(&self) -> &BufPool<D> {
        &self.dp.pool
    }

    /// The backend's event-channel handle (for uplinks that are woken through a port).
    pub fn evtchn(&self) -> &D::Evtchn {
        &self.dp.evtchn
    }

    /// Plugs an uplink into the default switch (`xenbr0`); returns its port.
    pub fn attach_uplink(&mut self, dev: Box<dyn Uplink<D>>) -> Result<PortId, Error> {
        self.attach_uplink_to(DEFAULT_SWITCH, dev)
    }

    /// Plugs an uplink into the named switch `switch` (made if it does not exist yet); returns
    /// its port.
    pub fn attach_uplink_to(
        &mut self,
        switch: &str,
        dev: Box<dyn Uplink<D>>,
    ) -> Result<PortId, Error> {
        let id = self.dp.switches.named_or_new(switch)?;
        let port = self.dp.plug_uplink(id, dev, None)?;
        Ok(port)
    }

    /// Connects a vif from keys read elsewhere (the control plane does this itself; tests and
    /// tools that drive a frontend by hand call it directly). Returns its local port.
    pub fn connect_vif(&mut self, id: VifId, keys: FrontendKeys) -> Result<Port, Error> {
        self.dp
            .connect(id, keys)
            .map_err(|reason| Error::Frontend { id, reason })?;
        Ok(self.dp.vifs.last().map(Vif::port).unwrap_or_default())
    }

    /// Runs `job` on every thread this backend made (the control plane's, when it has its own),
    /// waiting for each: how its owner confines them (credentials and capabilities are per
    /// thread on Linux). The calling thread is not included. The first error is returned.
    pub fn run_on_threads(&mut self, job: ThreadJob) -> Result<(), String> {
        match &self.control {
            Control::Inline(_) => Ok(()),
            Control::Thread(t) => t.run_job(job, &mut self.dp),
        }
    }

    /// Disconnects a vif: unbinds its channel, unmaps its rings, unplugs it from the switch.
    pub fn disconnect_vif(&mut self, id: VifId) -> Option<VifStats> {
        self.dp.remove(id)
    }

    /// Closes every device (Closing, then Closed), releasing every mapping and event channel:
    /// what a backend does when it stops.
    pub fn close_all(&mut self) {
        match &mut self.control {
            Control::Inline(x) => x.close_all(&mut self.dp),
            Control::Thread(t) => t.close_all(&mut self.dp),
        }
        let ids: Vec<VifId> = self.dp.vifs.iter().map(|v| v.id).collect();
        for id in ids {
            self.dp.remove(id);
        }
    }

    /// The vif's counters.
    pub fn vif_stats(&self, id: VifId) -> Option<VifStats> {
        self.dp.vifs.iter().find(|v| v.id == id).map(Vif::stats)
    }

    /// Connected vifs.
    pub fn vifs(&self) -> impl Iterator<Item = &Vif<D>> {
        self.dp.vifs.iter()
    }

    /// Counters of everything, for reports.
    pub fn snapshot(&self) -> NetbackSnapshot {
        let dp = &self.dp;
        NetbackSnapshot {
            vifs: dp.vifs.iter().map(|v| (v.id, v.stats())).collect(),
            departed: dp.departed.iter().cloned().collect(),
            departed_total: dp.departed_total,
            bridge: dp.switches.get_ref(dp.default_switch).bridge.snapshot(),
            switches: {
                let mut switches = dp.switches.snapshots();
                for u in &dp.uplinks {
                    if let Some(s) = switches.iter_mut().find(|s| s.id == u.switch) {
                        s.uplinks.push((u.port, u.dev.name().to_string()));
                    }
                }
                switches
            },
            copy_hypercalls: dp.batch.hypercalls,
            copy_ops: dp.batch.ops_done,
            pool_pages: dp.pool.owned_pages(),
            uplinks: dp
                .uplinks
                .iter()
                .map(|u| {
                    let mut st = u.dev.stats();
                    st.tx_errors += u.unfit;
                    (u.dev.name().to_string(), u.port, st)
                })
                .collect(),
            devices: match &self.control {
                Control::Inline(x) => x.devices(),
                Control::Thread(t) => t.devices(),
            },
        }
    }

    /// One pass over the control plane and every vif and uplink, at the monotonic clock's
    /// `now`. Returns whether any work was done (or control-plane events are still waiting).
    pub fn poll(&mut self) -> Result<bool, Error> {
        self.poll_at(Instant::now())
    }

    /// [`Netback::poll`] at a time the caller gives: everything timed in a pass (queue stamps
    /// and their expiry, MAC ageing, delayed ends of interrupt, rate credit) reads this one
    /// `now`. Tests drive time by hand with it instead of sleeping; it must not go backwards.
    pub fn poll_at(&mut self, now: Instant) -> Result<bool, Error> {
        let more = match &mut self.control {
            Control::Inline(x) => x.poll(&mut self.dp)?,
            Control::Thread(t) => {
                // The control plane's commands, a bounded number per pass: looking never
                // blocks, and the control plane waits for the answers.
                t.drain_wake();
                let mut n = 0;
                while n < COMMANDS_PER_PASS {
                    let Ok(cmd) = t.cmds.try_recv() else { break };
                    cmd.execute(&mut self.dp);
                    n += 1;
                }
                n == COMMANDS_PER_PASS
            }
        };
        let work = self.dp.pass(now)?;
        self.dp.end_of_interrupt(now);
        Ok(work || more)
    }

    /// Re-arms the tx rings (`final_check_for_requests`; rx rings are armed by the rx pass when
    /// it lacks buffers) and the uplinks, then blocks until an event arrives or `timeout`
    /// (capped at `Config::poll_interval`) passes.
    pub fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        if self.dp.rearm() {
            return Ok(());
        }
        let mut timeout = timeout.min(self.dp.cfg.poll_interval);
        let now = Instant::now();
        if let Some(t) = self.dp.next_deadline(now) {
            timeout = timeout.min(t.saturating_duration_since(now));
        }
        let dp = &mut self.dp;
        let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(4 + dp.uplinks.len());
        let evtchn_fd = dp.evtchn.as_fd();
        let xs_fd = match &self.control {
            Control::Inline(x) => x.store().as_fd(),
            Control::Thread(t) => Some(t.wake_fd()),
        };
        match (evtchn_fd, xs_fd) {
            (Some(e), Some(x)) => {
                fds.push(e);
                fds.push(x);
                for u in &dp.uplinks {
                    if let Wakeup::Fd(fd) = u.dev.wakeup() {
                        fds.push(fd);
                    }
                }
                if let Some(w) = &self.wake {
                    fds.push(w.as_fd());
                }
                let mut pfds: Vec<PollFd<'_>> = fds
                    .iter()
                    .map(|fd| PollFd::new(fd, PollFlags::IN))
                    .collect();
                let ts = Timespec::try_from(timeout).unwrap_or(Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                });
                {
                    let _b = xenoprof::blocked();
                    match poll(&mut pfds, Some(&ts)) {
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(e) => {
                            return Err(Error::Hypervisor(hypervisor::Error::Os {
                                op: "poll(2) on the backend's event descriptors",
                                errno: e.raw_os_error(),
                                hint: "a descriptor the backend waits on was closed under it; \
                                       restart the backend",
                            }));
                        }
                    }
                }
                if let Some(w) = &self.wake
                    && pfds.last().is_some_and(|p| !p.revents().is_empty())
                {
                    let mut buf = [0u8; 64];
                    let _ = rustix::io::read(w, &mut buf);
                }
                drop(pfds);
                dp.evtchn.wait(Some(Duration::ZERO), &mut dp.delivered)?;
            }
            _ => {
                let _b = xenoprof::blocked();
                dp.evtchn.wait(Some(timeout), &mut dp.delivered)?;
            }
        }
        for v in &mut dp.vifs {
            v.ctrl_delivered(&dp.delivered);
        }
        for q in dp.vifs.iter_mut().flat_map(|v| v.queues.iter_mut()) {
            if dp.delivered.contains(&q.tx_port) {
                q.eoi[0].delivered();
            }
            if q.split() && dp.delivered.contains(&q.rx_port) {
                q.eoi[1].delivered();
            }
        }
        Ok(())
    }

    /// Serves until `stop` returns true: poll while there is work; when a pass finds none,
    /// keep passing for up to `Config::busy_poll` (yielding between passes), then wait.
    pub fn run_until(&mut self, mut stop: impl FnMut() -> bool) -> Result<(), Error> {
        while !stop() {
            if !self.poll()? && !self.busy_poll()? {
                self.wait(self.dp.cfg.poll_interval)?;
            }
        }
        Ok(())
    }

    /// Passes again, yielding the CPU between passes so a runnable peer (on two cores, the
    /// very vCPU about to produce the work) is never starved, until a pass finds work or
    /// `Config::busy_poll` has gone by. Returns whether work was found.
    fn busy_poll(&mut self) -> Result<bool, Error> {
        let budget = self.dp.cfg.busy_poll;
        if budget.is_zero() {
            return Ok(false);
        }
        let end = Instant::now() + budget;
        loop {
            {
                // A yield is a wait, not work: charged to no class.
                let _b = xenoprof::blocked();
                std::thread::yield_now();
            }
            if self.poll()? {
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
        }
    }
}

impl<D: BackendDomain> Datapath<D> {
    /// One pass over every vif and uplink. Returns whether any work was done.
    fn pass(&mut self, now: Instant) -> Result<bool, Error> {
        let since = now.duration_since(self.start);
        let mut work = false;
        // Guest → switch: every queue's copies in one batch (one hypercall carries the ops of
        // many guests), then each queue answers its slots.
        self.batch.begin_pass(self.slots());
        let mut slot = 0u32;
        for vif in &mut self.vifs {
            for q in &mut vif.queues {
                work |= q.tx_build(
                    slot,
                    &self.dom0,
                    &self.pool,
                    &self.cfg,
                    &mut self.batch,
                    &mut vif.mcast,
                    now,
                );
                slot += 1;
            }
        }
        self.batch.flush(&self.dom0);
        self.route_failures(Queue::tx_failed);
        let mut slot = 0;
        for vif in &mut self.vifs {
            self.frames.clear();
            work |= vif.ctrl_action(&self.dom0, &self.evtchn);
            for q in &mut vif.queues {
                q.tx_finish(&self.evtchn, &mut self.frames, self.batch.calls(slot));
                slot += 1;
            }
            vif.propagate_fatal();
            if !self.frames.is_empty() {
                let sw = self.switches.get(vif.switch);
                sw.bridge
                    .forward(vif.bridge_port, &mut self.frames, since, &mut sw.out)?;
            }
        }
        // Outside → switch, NAPI-style: at most one vif queue's worth of bytes per uplink per
        // pass, so a pass's work is bounded and every uplink (each host-mode vif has its own)
        // gets its turn. No guest holds the uplinks back: a frame for a vif whose queue is full
        // is that vif's drop (`rx_queue_full`), as Linux drops at a full vif queue, and every
        // other guest's traffic keeps flowing.
        let budget = self.cfg.rx_queue_bytes;
        for i in 0..self.uplinks.len() {
            self.frames.clear();
            let io = UplinkIo {
                pool: &self.pool,
                evtchn: &self.evtchn,
            };
            let u = &mut self.uplinks[i];
            work |= u.dev.receive(&io, &mut self.frames, budget);
            if !self.frames.is_empty() {
                let sw = self.switches.get(u.switch);
                sw.bridge
                    .forward(u.port, &mut self.frames, since, &mut sw.out)?;
            }
        }
        // Switch → queues, each frame fitted to what its port takes (a checksum completed, a
        // super-frame segmented) only if the port cannot take it as it is.
        if self.switches.iter().any(|(_, s)| !s.out.is_empty()) {
            let cap = self.cfg.rx_queue_bytes;
            let share = self.share_pages();
            for vif in &mut self.vifs {
                let to = vif.accepts;
                // Each queue gets its share of the vif's byte cap and pages.
                let n = vif.queues.len();
                let (cap, share) = (cap / n, (share / n).max(crate::pool::MAX_FRAME_PAGES));
                let out = &mut self.switches.get(vif.switch).out;
                for f in out.drain(vif.bridge_port) {
                    let Some((qi, hash)) = vif.rx_select(&f) else {
                        continue;
                    };
                    let q = &mut vif.queues[qi];
                    let fitted = fit(f, to, &self.pool, &mut self.seg, &mut |f| {
                        q.enqueue_rx(f, now, cap, share, hash)
                    });
                    if fitted.is_err() {
                        q.stats.rx_unfit += 1;
                    }
                }
            }
            for i in 0..self.uplinks.len() {
                let (switch, port) = (self.uplinks[i].switch, self.uplinks[i].port);
                let to = self.uplinks[i].dev.accepts();
                self.frames.clear();
                for f in self.switches.get(switch).out.drain(port) {
                    let frames = &mut self.frames;
                    if fit(f, to, &self.pool, &mut self.seg, &mut |f| frames.push(f)).is_err() {
                        self.uplinks[i].unfit += 1;
                    }
                }
                if !self.frames.is_empty() {
                    let io = UplinkIo {
                        pool: &self.pool,
                        evtchn: &self.evtchn,
                    };
                    self.uplinks[i].dev.transmit(&io, &mut self.frames);
                }
            }
            for (_, sw) in self.switches.iter_mut() {
                sw.out.clear();
            }
        }
        // Queues → guests: every queue's copies in one batch, then each pushes its responses.
        self.batch.begin_pass(self.slots());
        let queues = self.vifs.iter_mut().flat_map(|v| v.queues.iter_mut());
        for (slot, q) in (0u32..).zip(queues) {
            q.rx_build(slot, &self.dom0, &self.cfg, &mut self.batch, now);
        }
        self.batch.flush(&self.dom0);
        self.route_failures(Queue::rx_failed);
        let mut slot = 0;
        for vif in &mut self.vifs {
            for q in &mut vif.queues {
                work |= q.rx_finish(&self.dom0, &self.evtchn, self.batch.calls(slot));
                slot += 1;
            }
            vif.propagate_fatal();
        }
        Ok(work)
    }

    /// Queues served in a pass (each queue's slot is its position in vif, then queue order).
    fn slots(&self) -> usize {
        self.vifs.iter().map(|v| v.queues.len()).sum()
    }

    /// Hands the pass's failed grant copies to their queues (`fail(queue, item)`), in slot
    /// order: the batch reports them in submission order, which is slot order.
    fn route_failures(&mut self, fail: fn(&mut Queue<D>, u32)) {
        self.batch.take_failed(&mut self.failed);
        if self.failed.is_empty() {
            return;
        }
        let mut it = self.failed.iter().peekable();
        for (slot, q) in self
            .vifs
            .iter_mut()
            .flat_map(|v| v.queues.iter_mut())
            .enumerate()
        {
            while let Some((owner, _)) = it.next_if(|(o, _)| o.slot as usize == slot) {
                fail(q, owner.item);
            }
        }
    }

    /// Before blocking: the final checks on every tx ring and uplink. True if work arrived.
    fn rearm(&mut self) -> bool {
        let mut more = false;
        for vif in &mut self.vifs {
            for q in &mut vif.queues {
                // A queue waiting for rate credit has requests it may not take yet: the wait
                // wakes for it at its credit's moment instead (`next_deadline`).
                if q.is_disabled() || q.tx_waiting_until().is_some() {
                    continue;
                }
                match q.tx.final_check_for_requests() {
                    Ok(true) => more = true,
                    Ok(false) => {}
                    Err(e) => q.disable(crate::vif::Fatal::Ring(e)),
                }
            }
            vif.propagate_fatal();
            more |= vif.ctrl_rearm();
        }
        for u in &mut self.uplinks {
            more |= u.dev.arm();
        }
        more
    }

    /// The late EOI: unmasks the ports the last wait delivered, now that the pass has served
    /// them. An event is spurious (XSA-332 accounting) when no work was done on its port's
    /// side of its queue (both sides, for a queue with one port) since the previous one: passes look at every ring whatever the events, so work an event
    /// announced is often done before the event is collected, and that is not spurious. A vif
    /// whose events keep finding no work has its EOI held back, 1 ms after the second spurious
    /// event in a row and doubling up to `max_eoi_delay`, as Linux's lateeoi does, so notifying
    /// in a loop cannot buy unbounded passes; work resets it.
    fn end_of_interrupt(&mut self, now: Instant) {
        for q in self.vifs.iter_mut().flat_map(|v| v.queues.iter_mut()) {
            let sides = if q.split() { 2 } else { 1 };
            for side in 0..sides {
                let port = if side == 0 { q.tx_port } else { q.rx_port };
                // `did_work` is cleared only at a decision: work done by passes that collected
                // no event counts for the next event, which may be the one that announced it.
                let worked = q.did_work[side];
                match q.eoi[side].end_of_interrupt(worked, now, self.cfg.max_eoi_delay) {
                    hypervisor::Eoi::Idle | hypervisor::Eoi::Spurious => {}
                    hypervisor::Eoi::Worked => q.did_work[side] = false,
                    hypervisor::Eoi::Delayed => self.delivered.retain(|p| *p != port),
                }
                if q.eoi[side].take_due(now) {
                    self.delivered.push(port);
                }
            }
        }
        for v in &mut self.vifs {
            v.ctrl_end_of_interrupt(now, self.cfg.max_eoi_delay, &mut self.delivered);
        }
        if !self.delivered.is_empty() {
            // A port that was closed meanwhile is simply not ours any more.
            let _ = self.evtchn.unmask(&self.delivered);
            self.delivered.clear();
        }
    }

    /// The earliest moment a pass has timed work to do without any event arriving: a delayed
    /// end of interrupt, a queued frame expiring, or a vif's rate credit arriving. `wait`
    /// never sleeps past it, so nothing timed depends on `Config::poll_interval`. Only moments
    /// after `now` count: the pass just run handled those before it (a past one would make
    /// `wait` spin).
    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.vifs
            .iter()
            .flat_map(|v| v.queues.iter())
            .flat_map(|q| {
                let expiry = q.rx_queue.oldest().map(|t| t + self.cfg.rx_drain_timeout);
                [
                    q.eoi[0].deadline(),
                    q.eoi[1].deadline(),
                    expiry,
                    q.tx_waiting_until(),
                ]
            })
            .flatten()
            .chain(self.vifs.iter().filter_map(Vif::ctrl_deadline))
            .filter(|t| *t > now)
            .min()
    }

    /// Pages one vif's rx queue may pin: an equal share of the pool, one share kept back for
    /// frames in flight and on their way to the uplinks, so queued frames of one guest can never
    /// take the pages another guest's transmit needs.
    fn share_pages(&self) -> usize {
        (self.pool.limit() / (self.vifs.len() + 1)).max(crate::pool::MAX_FRAME_PAGES)
    }

    /// Takes a vif out: unbinds its channel, unmaps its rings (dropping the ring mappings),
    /// unplugs it from its switch (handing its MAC back to an older claimant), keeps its final
    /// counters. Its device stays prepared (a host netdev stays).
    fn remove(&mut self, id: VifId) -> Option<VifStats> {
        let i = self.vifs.iter().position(|v| v.id == id)?;
        let mut vif = self.vifs.swap_remove(i);
        for q in &mut vif.queues {
            q.stats.rx_discarded += q.rx_queue.clear() as u64;
        }
        vif.unbind(&self.evtchn);
        let ports = vif.ports();
        let sw = self.switches.get(vif.switch);
        let _ = sw.bridge.remove_port(vif.bridge_port);
        if let Some(mac) = vif.mac {
            sw.release_mac(mac, vif.bridge_port);
        }
        sw.out.clear();
        self.delivered.retain(|p| !ports.contains(p));
        let stats = vif.stats();
        drop(vif);
        if self.departed.len() == DEPARTED_KEPT {
            self.departed.pop_front();
        }
        self.departed.push_back((id, stats.clone()));
        self.departed_total += 1;
        Some(stats)
    }

    /// Plugs `dev` into switch `switch` (on behalf of vif `owner`'s device, if any).
    fn plug_uplink(
        &mut self,
        switch: SwitchId,
        dev: Box<dyn Uplink<D>>,
        owner: Option<VifId>,
    ) -> Result<PortId, bridge_lite::BridgeError> {
        let sw = self.switches.get(switch);
        let port = sw.bridge.add_port(PortKind::Uplink)?;
        if owner.is_some() {
            // A host netdev's or emulated NIC's frames go to their vif whatever their MACs.
            let _ = sw.bridge.set_port_learning(port, false);
        }
        log::info!("{} on switch {} port {port}", dev.name(), sw.name);
        self.uplinks.push(UplinkSlot {
            dev,
            switch,
            port,
            owner,
            unfit: 0,
        });
        Ok(port)
    }

    /// Unplugs and drops the uplinks of vif `id`'s device (its host netdev, its emulated NIC).
    fn unplug_owned(&mut self, id: VifId) {
        let mut i = 0;
        while i < self.uplinks.len() {
            if self.uplinks[i].owner == Some(id) {
                let u = self.uplinks.swap_remove(i);
                let sw = self.switches.get(u.switch);
                let _ = sw.bridge.remove_port(u.port);
                sw.out.clear();
            } else {
                i += 1;
            }
        }
    }

    /// Connects vif `id` on its prepared device (a builtin vif on `xenbr0` if the control
    /// plane prepared none: tools that drive a frontend by hand).
    fn connect(&mut self, id: VifId, keys: FrontendKeys) -> Result<(), FrontendError> {
        if self.vifs.iter().any(|v| v.id == id) {
            self.remove(id);
        }
        let (switch, cfg) = match self.devices.get(&id) {
            Some(p) => (p.switch, p.cfg.clone()),
            None => (self.default_switch, DeviceConfig::builtin(id)),
        };
        let builtin = cfg.mode == VifMode::Builtin;
        let sw = self.switches.get(switch);
        let port = sw
            .bridge
            .add_port(PortKind::Vif {
                domid: id.domid,
                handle: id.devid,
            })
            .map_err(|e| FrontendError::NoSwitchPort {
                hint: if matches!(e, bridge_lite::BridgeError::TooManyPorts { .. }) {
                    "the switch is full; detach a vif first"
                } else {
                    "the switch refused the port"
                },
            })?;
        let mut mac = None;
        if builtin {
            let _ = sw.bridge.set_port_mac_limit(port, self.cfg.vif_mac_limit);
            if let Some(m) = cfg.mac {
                // Anti-spoofing: the port accepts only the MAC the toolstack configured.
                if sw.claim_mac(m, port) {
                    mac = Some(m);
                } else {
                    log::warn!("{id}: cannot pin {m} to its port; the port is not locked");
                }
            }
            if !cfg.ips.is_empty() && !sw.lock_ips(port, &cfg.ips) {
                log::warn!("{id}: cannot lock its port to {:?}", cfg.ips);
            }
        } else {
            // Host mode: the host's own bridge or routes decide; the pipe to the netdev learns
            // nothing and floods to its one other port.
            let _ = sw.bridge.set_port_learning(port, false);
        }
        let connected = Vif::connect(&self.dom0, &self.evtchn, id, &keys, switch, port, mac);
        match connected {
            Ok(mut vif) => {
                vif.set_rate(cfg.rate.or(self.default_rate));
                self.vifs.push(vif);
                if let Some(path) = self.captures.get(&id) {
                    let started = std::fs::File::create(path)
                        .map_err(|e| e.to_string())
                        .and_then(|f| {
                            self.switches
                                .get(switch)
                                .bridge
                                .start_capture(
                                    port,
                                    std::io::BufWriter::new(f),
                                    CaptureDirection::Both,
                                )
                                .map_err(|e| e.to_string())
                        });
                    if let Err(e) = started {
                        log::warn!("{id}: cannot capture into {}: {e}", path.display());
                    }
                }
                Ok(())
            }
            Err(e) => {
                let sw = self.switches.get(switch);
                let _ = sw.bridge.remove_port(port);
                if let Some(m) = mac {
                    sw.release_mac(m, port);
                }
                Err(e)
            }
        }
    }
}

impl<D: BackendDomain> VifControl for Datapath<D> {
    fn prepare(&mut self, id: VifId, cfg: &DeviceConfig) -> Result<(), String> {
        self.release(id);
        cfg.check()?;
        let switch = match cfg.mode {
            VifMode::Builtin => self.switches.named(&cfg.switch).ok_or_else(|| {
                format!(
                    "no splitnet switch named {:?} (this backend has {}): start netbackd with an \
                     uplink on it (--uplink ...,switch={}) or fix bridge= in the vif's config",
                    cfg.switch,
                    self.switches.names().join(", "),
                    cfg.switch
                )
            })?,
            VifMode::Host => {
                let Some(netdevs) = self.netdevs.as_mut() else {
                    return Err(
                        "host mode (a vif netdev for the toolstack's script) is not \
                                available in this backend: use script=vif-splitnet, or run \
                                netbackd with --vif-mode builtin"
                            .into(),
                    );
                };
                let dev = netdevs.open(id, &cfg.netdev, cfg.mtu)?;
                let switch = self
                    .switches
                    .private(&cfg.netdev, id)
                    .map_err(|e| e.to_string())?;
                if let Err(e) = self.plug_uplink(switch, dev, Some(id)) {
                    self.switches.remove(switch);
                    return Err(e.to_string());
                }
                switch
            }
        };
        if cfg.ioemu && cfg.mode == VifMode::Builtin {
            let name = format!("{}-emu", cfg.netdev);
            match self.netdevs.as_mut().map(|n| n.open_emulated(id, &name)) {
                Some(Ok(dev)) => {
                    if let Err(e) = self.plug_uplink(switch, dev, Some(id)) {
                        log::warn!("{id}: cannot put {name} on {}: {e}", cfg.switch);
                    }
                }
                Some(Err(e)) => log::info!("{id}: no emulated NIC yet ({e})"),
                None => {}
            }
        }
        self.devices.insert(
            id,
            Prepared {
                cfg: cfg.clone(),
                switch,
            },
        );
        Ok(())
    }

    fn connect(&mut self, id: VifId, keys: FrontendKeys) -> Result<(), FrontendError> {
        Datapath::connect(self, id, keys)
    }

    fn disconnect(&mut self, id: VifId) {
        self.remove(id);
    }

    fn release(&mut self, id: VifId) {
        self.remove(id);
        self.unplug_owned(id);
        let Some(p) = self.devices.remove(&id) else {
            return;
        };
        if p.cfg.mode == VifMode::Host {
            self.switches.remove(p.switch);
            if let Some(n) = self.netdevs.as_mut() {
                n.remove(id, &p.cfg.netdev);
            }
        }
    }

    fn set_rate(&mut self, id: VifId, rate: Option<Rate>) {
        if let Some(p) = self.devices.get_mut(&id) {
            p.cfg.rate = rate;
        }
        if let Some(v) = self.vifs.iter_mut().find(|v| v.id == id) {
            v.set_rate(rate.or(self.default_rate));
        }
    }

    fn set_xdp_headroom(&mut self, id: VifId, headroom: u16) {
        if let Some(v) = self.vifs.iter_mut().find(|v| v.id == id) {
            v.set_xdp_headroom(headroom);
        }
    }

    fn set_multicast_control(&mut self, id: VifId, on: bool) {
        if let Some(v) = self.vifs.iter_mut().find(|v| v.id == id) {
            v.set_multicast_control(on);
        }
    }
}

impl<D: BackendDomain> Drop for Netback<D> {
    fn drop(&mut self) {
        let ids: Vec<VifId> = self.dp.vifs.iter().map(|v| v.id).collect();
        for id in ids {
            self.dp.remove(id);
        }
        for (_, sw) in self.dp.switches.iter_mut() {
            sw.out.clear();
        }
        self.dp.frames.clear();
        self.dp.uplinks.clear();
        self.dp.pool.release();
    }
}
