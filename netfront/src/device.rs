//! [`Netfront`]: connect, poll, wait, close, and the smoltcp device.

use std::time::{Duration, Instant};

use std::sync::Arc;

use hypervisor::{DomId, Eoi, EventChannel, FrontendDomain, GrantRef, Pfn, Port, XenStore};
use netif_ring::FrontRing;
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use xenoprof::Class;

use crate::config::FrontConfig;
use crate::ctrl::CtrlChannel;
use crate::error::{Error, Result};
use crate::ringmem::guest_ring;
use crate::rx::RxPath;
use crate::rxcheck::RxPolicy;
use crate::stats::Stats;
use crate::tx::{TxCsum, TxPath};
use crate::xenbus::{self, BackendFeatures, XenbusState};

const WATCH_TOKEN: &str = "netfront-backend-state";

/// One queue: its rings (with their pages and grants), its event channel(s), its paths.
#[derive(Debug)]
struct FrontQueue {
    tx_ring: (Pfn, GrantRef),
    rx_ring: (Pfn, GrantRef),
    /// Its transmit side's port (the only one without split event channels).
    tx_port: Port,
    /// Its receive side's port: `tx_port` unless split.
    rx_port: Port,
    /// Each port's late end of interrupt (XSA-391: a backend storming us is throttled); index
    /// 1 only when split.
    eoi: [hypervisor::LateEoi; 2],
    /// Each port's response consumer indices at its last event's end-of-interrupt decision:
    /// whether they moved since is whether work was done. Only a decision about an event
    /// moves it, so work done while no event was outstanding counts for the next one (which
    /// may be the event that announced it: the guest often consumes responses before it
    /// collects their event).
    work_mark: [u32; 2],
}

impl FrontQueue {
    fn split(&self) -> bool {
        self.tx_port != self.rx_port
    }

    /// The responses consumed on a port's side(s), from this queue's paths: side 0 is tx (and
    /// rx too with one port).
    fn mark<D: FrontendDomain>(&self, side: usize, tx: &TxPath<D>, rx: &RxPath<D>) -> u32 {
        let (t, r) = (tx.ring.rsp_cons(), rx.ring.rsp_cons());
        match (self.split(), side) {
            (false, _) => t.wrapping_add(r),
            (true, 0) => t,
            (true, _) => r,
        }
    }
}

/// A connected vif frontend: the guest's network device.
#[derive(Debug)]
pub struct Netfront<D: FrontendDomain> {
    pub(crate) dom: D,
    pub(crate) xs: D::Store,
    pub(crate) fe_dir: String,
    pub(crate) be_dir: String,
    pub(crate) backend: DomId,
    pub(crate) evtchn: Arc<D::Evtchn>,
    /// Ports delivered by the last wait (reused).
    delivered: Vec<Port>,
    /// At least one.
    queues: Vec<FrontQueue>,
    /// Each queue's transmit path (by queue index; apart from `queues` so a smoltcp token can
    /// borrow one queue's receive path and every transmit path at once).
    pub(crate) tx: Vec<TxPath<D>>,
    /// Each queue's receive path.
    rx: Vec<RxPath<D>>,
    /// The queue `receive` looks at first (round robin).
    rx_next: usize,
    /// The queue whose frame `receive` handed out last.
    last_rx_queue: Option<usize>,
    pub(crate) cfg: FrontConfig,
    pub(crate) features: BackendFeatures,
    disconnected: Option<Error>,
    /// The ctrl ring, when receive hashing was asked for.
    pub(crate) ctrl: Option<CtrlChannel<D>>,
    /// Ctrl requests answered.
    pub(crate) ctrl_answered: u64,
    /// The rx headroom the backend applies (`xdp-headroom`).
    pub(crate) xdp_headroom: u16,
}

impl<D: FrontendDomain> Netfront<D> {
    /// Connects vif `devid` of domain `dom` (blocking handshake; the backend must be running on
    /// another thread). See the crate docs for the order of steps.
    pub fn connect(dom: D, devid: u32, cfg: FrontConfig) -> Result<Self> {
        cfg.validate()?;
        let _s = xenoprof::scope(Class::NETFRONT);
        let xs = dom.xenstore().map_err(Error::hv("open xenstore"))?;
        let fe_dir = format!("/local/domain/{}/device/vif/{devid}", dom.domid());
        // Only a missing node means the toolstack has not created the vif; any other failure
        // (xenstore gone, access refused) is the hypervisor's, with its own advice.
        let no_device = |op| {
            let path = fe_dir.clone();
            move |e| match e {
                hypervisor::Error::XsNoEntry(_) => Error::NoDevice { path },
                source => Error::Hypervisor { op, source },
            }
        };
        let be_dir = xs
            .read(&format!("{fe_dir}/backend"))
            .map_err(no_device("xenstore read backend"))?;
        let be_id_path = format!("{fe_dir}/backend-id");
        let be_id_s = xs
            .read(&be_id_path)
            .map_err(no_device("xenstore read backend-id"))?;
        let backend: DomId = be_id_s
            .trim()
            .parse()
            .map_err(|_| Error::BadXenstoreValue {
                path: be_id_path,
                value: be_id_s.clone(),
            })?;
        xenbus::switch_state(&xs, &fe_dir, XenbusState::Initialising)?;
        xs.watch(&format!("{be_dir}/state"), WATCH_TOKEN)
            .map_err(Error::hv("xenstore watch backend state"))?;
        let watch_path = format!("{be_dir}/state");
        let unwatch = |xs: &D::Store| {
            let _ = xs.unwatch(&watch_path, WATCH_TOKEN);
        };
        let waited = xenbus::wait_for_offer(&xs, &be_dir, cfg.timeout);
        if let Err(e) = waited {
            unwatch(&xs);
            return Err(e);
        }
        let features = match BackendFeatures::read(&xs, &be_dir) {
            Ok(f) => f,
            Err(e) => {
                unwatch(&xs);
                return Err(e);
            }
        };
        if let Err(why) = features.check(&cfg) {
            // As Linux's xenbus_dev_fatal: say why in `error`, then close.
            let _ = xs.write(&format!("{fe_dir}/error"), &why);
            let _ = xenbus::switch_state(&xs, &fe_dir, XenbusState::Closing);
            let _ = xenbus::switch_state(&xs, &fe_dir, XenbusState::Closed);
            unwatch(&xs);
            return Err(Error::FeatureMismatch(why));
        }
        let fe_dir2 = fe_dir.clone();
        let nf = match Self::setup(dom, xs, fe_dir, be_dir, backend, cfg, features) {
            Ok(nf) => nf,
            Err((e, xs)) => {
                let _ = xs.write(&format!("{fe_dir2}/error"), &e.to_string());
                let _ = xenbus::switch_state(&xs, &fe_dir2, XenbusState::Closed);
                unwatch(&xs);
                return Err(e);
            }
        };
        nf.publish_and_wait()
    }

    /// Allocates rings, pages, grants and ports for every queue. On failure everything
    /// allocated so far is released again.
    #[allow(clippy::type_complexity)]
    fn setup(
        dom: D,
        xs: D::Store,
        fe_dir: String,
        be_dir: String,
        backend: DomId,
        cfg: FrontConfig,
        features: BackendFeatures,
    ) -> std::result::Result<Self, (Error, D::Store)> {
        let mut pages: Vec<Pfn> = Vec::new();
        let mut grants: Vec<GrantRef> = Vec::new();
        // Closing the handle (drop) closes its ports.
        let evtchn = match dom.open_evtchn() {
            Ok(h) => Arc::new(h),
            Err(e) => return Err((Error::hv("open event channel")(e), xs)),
        };
        let undo = |dom: &D, pages: &[Pfn], grants: &[GrantRef]| {
            for g in grants {
                let _ = dom.end_access(*g);
            }
            for p in pages {
                let _ = dom.free_page(*p);
            }
        };
        let alloc = |n: usize, pages: &mut Vec<Pfn>| -> Result<Vec<Pfn>> {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let p = dom.alloc_page().map_err(Error::hv("alloc_page"))?;
                pages.push(p);
                v.push(p);
            }
            Ok(v)
        };
        let num_queues = cfg.max_queues.min(features.max_queues).max(1);
        let split = cfg.split_event_channels && features.split_event_channels;
        let built = (|| -> Result<Self> {
            let ctrl = match cfg.hashing {
                Some(_) => Some(CtrlChannel::new(
                    &dom,
                    &evtchn,
                    backend,
                    &mut pages,
                    &mut grants,
                )?),
                None => None,
            };
            let max_frame = cfg.max_frame();
            let mut queues = Vec::with_capacity(num_queues as usize);
            let (mut txs, mut rxs) = (Vec::new(), Vec::new());
            for _ in 0..num_queues {
                let ring_pages = alloc(2, &mut pages)?;
                let tx_pages = alloc(cfg.tx_pages, &mut pages)?;
                let rx_pages = alloc(cfg.rx_buffers, &mut pages)?;
                let (tx_pfn, rx_pfn) = (ring_pages[0], ring_pages[1]);
                // Initialise before granting (FRONT_RING_INIT then gnttab_grant_foreign_access).
                let tx_ring = FrontRing::init(guest_ring(&dom, tx_pfn)?);
                let rx_ring = FrontRing::init(guest_ring(&dom, rx_pfn)?);
                let tx_gref = dom
                    .grant_access(backend, tx_pfn, false)
                    .map_err(Error::hv("grant tx ring"))?;
                grants.push(tx_gref);
                let rx_gref = dom
                    .grant_access(backend, rx_pfn, false)
                    .map_err(Error::hv("grant rx ring"))?;
                grants.push(rx_gref);
                let tx_port = evtchn
                    .alloc_unbound(backend)
                    .map_err(Error::hv("alloc_unbound"))?;
                let rx_port = if split {
                    evtchn
                        .alloc_unbound(backend)
                        .map_err(Error::hv("alloc_unbound"))?
                } else {
                    tx_port
                };
                let tx = TxPath::new(
                    dom.clone(),
                    backend,
                    tx_port,
                    evtchn.clone(),
                    tx_ring,
                    tx_pages,
                    max_frame,
                    TxCsum {
                        offload: cfg.csum_offload,
                        ipv6: features.ipv6_csum_offload,
                    },
                );
                let policy = RxPolicy {
                    csum_offload: cfg.csum_offload,
                    gso: cfg.gso_enabled(),
                    max_plain: max_frame,
                };
                let rx = RxPath::new(
                    dom.clone(),
                    backend,
                    rx_port,
                    evtchn.clone(),
                    cfg.rx_mode,
                    rx_ring,
                    rx_pages,
                    cfg.rx_refill_batch,
                    cfg.max_rx_frame(),
                    policy,
                );
                queues.push(FrontQueue {
                    tx_ring: (tx_pfn, tx_gref),
                    rx_ring: (rx_pfn, rx_gref),
                    tx_port,
                    rx_port,
                    eoi: [hypervisor::LateEoi::new(), hypervisor::LateEoi::new()],
                    work_mark: [0; 2],
                });
                txs.push(tx);
                rxs.push(rx);
            }
            Ok(Self {
                dom: dom.clone(),
                xs: dom.xenstore().map_err(Error::hv("open xenstore"))?,
                fe_dir: fe_dir.clone(),
                be_dir: be_dir.clone(),
                backend,
                evtchn: evtchn.clone(),
                delivered: Vec::new(),
                queues,
                tx: txs,
                rx: rxs,
                rx_next: 0,
                last_rx_queue: None,
                cfg: cfg.clone(),
                features,
                disconnected: None,
                ctrl,
                ctrl_answered: 0,
                xdp_headroom: 0,
            })
        })();
        match built {
            Ok(mut nf) => {
                // Keep the connection that holds the watch.
                nf.xs = xs;
                Ok(nf)
            }
            Err(e) => {
                undo(&dom, &pages, &grants);
                Err((e, xs))
            }
        }
    }

    /// Posts rx buffers, writes the keys, switches to Connected and waits for the backend.
    fn publish_and_wait(mut self) -> Result<Self> {
        let r = (|| -> Result<()> {
            for rx in &mut self.rx {
                rx.refill_all()?;
            }
            let xs = &self.xs;
            let fe = &self.fe_dir;
            let write = |k: &str, v: &str| {
                xs.write(&format!("{fe}/{k}"), v)
                    .map_err(Error::hv("xenstore write frontend key"))
            };
            // As Linux's talk_to_netback: the queue count when the backend offers multi-queue,
            // one queue's keys flat, several under queue-N/.
            if self.features.max_queues > 1 {
                write("multi-queue-num-queues", &self.queues.len().to_string())?;
            }
            let many = self.queues.len() > 1;
            for (n, q) in self.queues.iter().enumerate() {
                let dir = if many {
                    format!("queue-{n}/")
                } else {
                    String::new()
                };
                write(&format!("{dir}tx-ring-ref"), &q.tx_ring.1.0.to_string())?;
                write(&format!("{dir}rx-ring-ref"), &q.rx_ring.1.0.to_string())?;
                if q.split() {
                    write(&format!("{dir}event-channel-tx"), &q.tx_port.0.to_string())?;
                    write(&format!("{dir}event-channel-rx"), &q.rx_port.0.to_string())?;
                } else {
                    write(&format!("{dir}event-channel"), &q.tx_port.0.to_string())?;
                }
            }
            let copy = match self.cfg.rx_mode {
                crate::RxMode::Copy => "1",
                crate::RxMode::Flip => "0",
            };
            write("request-rx-copy", copy)?;
            write("feature-sg", "1")?;
            write("feature-rx-notify", "1")?;
            for (k, v) in xenbus::offload_keys(&self.cfg) {
                write(k, v)?;
            }
            if let Some(c) = &self.ctrl {
                write("ctrl-ring-ref", &c.page.1.0.to_string())?;
                write("event-channel-ctrl", &c.port.0.to_string())?;
            }
            // netif.h: before Connected. Written either way, so a reconnect inherits nothing.
            write(
                "request-multicast-control",
                if self.cfg.multicast.is_some() {
                    "1"
                } else {
                    "0"
                },
            )?;
            xenbus::switch_state(xs, fe, XenbusState::Connected)?;
            xenbus::wait_for_state(
                xs,
                &self.be_dir,
                "the backend's Connected",
                self.cfg.timeout,
                |s| s == XenbusState::Connected,
            )?;
            // The backend is bound now: tell it about the buffers posted above.
            for q in &self.queues {
                self.evtchn
                    .notify(q.rx_port)
                    .map_err(Error::hv("notify(connect)"))?;
            }
            // What the ctrl ring, multicast control and XDP headroom set up (crate::ctrl).
            if let Some(h) = self.cfg.hashing.clone() {
                self.set_up_hashing(&h)?;
            }
            for g in self.cfg.multicast.clone().unwrap_or_default() {
                self.subscribe(g)?;
            }
            if self.cfg.xdp_headroom != 0 {
                self.set_xdp_headroom(self.cfg.xdp_headroom)?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => Ok(self),
            Err(e) => {
                let _ = self
                    .xs
                    .write(&format!("{}/error", self.fe_dir), &e.to_string());
                let _ = self.teardown();
                Err(e)
            }
        }
    }

    /// The backend's features as read at connect.
    pub fn backend_features(&self) -> BackendFeatures {
        self.features
    }

    /// The frontend's xenstore directory.
    pub fn frontend_dir(&self) -> &str {
        &self.fe_dir
    }

    /// The local event-channel port of the first queue (its transmit side's when split).
    pub fn port(&self) -> Port {
        self.queues[0].tx_port
    }

    /// Every local port, each once.
    pub fn ports(&self) -> Vec<Port> {
        let mut v = Vec::new();
        for q in &self.queues {
            v.push(q.tx_port);
            if q.split() {
                v.push(q.rx_port);
            }
        }
        v
    }

    /// Queues negotiated with the backend.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// Whether the event channels are split (a port per direction per queue).
    pub fn split_event_channels(&self) -> bool {
        self.queues[0].split()
    }

    /// The backend's domain id.
    pub fn backend_id(&self) -> DomId {
        self.backend
    }

    /// The configuration.
    pub fn config(&self) -> &FrontConfig {
        &self.cfg
    }

    /// Whether a ctrl ring was made ([`FrontConfig::hashing`]).
    pub fn has_ctrl_ring(&self) -> bool {
        self.ctrl.is_some()
    }

    /// The rx headroom the backend applies, as last set ([`Netfront::set_xdp_headroom`]).
    pub fn xdp_headroom(&self) -> u16 {
        self.xdp_headroom
    }

    /// The queue the frame the stack took last came on, and its hash extra's (value,
    /// `_XEN_NETIF_CTRL_HASH_TYPE_*`) if it had one.
    pub fn last_rx(&self) -> Option<(usize, Option<(u32, u8)>)> {
        let q = self.last_rx_queue?;
        Some((q, self.rx[q].last_hash))
    }

    /// Each queue's counters (transmit and receive paths together).
    pub fn queue_stats(&self) -> Vec<Stats> {
        self.tx
            .iter()
            .zip(&self.rx)
            .map(|(t, r)| {
                let mut s = t.stats;
                s.merge(&r.stats);
                s
            })
            .collect()
    }

    /// Frames received and not yet taken by the stack.
    pub fn rx_pending(&self) -> usize {
        self.rx.iter().map(|r| r.ready.len()).sum()
    }

    pub(crate) fn disconnect(&mut self, e: Error) -> Error {
        if self.disconnected.is_none() {
            let why = e.to_string();
            let _ = self.xs.write(&format!("{}/error", self.fe_dir), &why);
            let _ = xenbus::switch_state(&self.xs, &self.fe_dir, XenbusState::Closing);
            self.disconnected = Some(e.clone());
        }
        e
    }

    pub(crate) fn check_connected(&self) -> Result<()> {
        match &self.disconnected {
            Some(e) => Err(Error::Disconnected(e.to_string())),
            None => Ok(()),
        }
    }

    /// Processes every queue's rings: reclaims tx, consumes rx responses, refills rx. Returns
    /// whether anything happened. A backend protocol violation disconnects the device
    /// (`Error::Ring`).
    pub fn poll(&mut self) -> Result<bool> {
        self.check_connected()?;
        let _s = xenoprof::scope(Class::NETFRONT);
        let r = (|| -> Result<bool> {
            let mut any = false;
            for (tx, rx) in self.tx.iter_mut().zip(&mut self.rx) {
                let t = tx.reclaim()?;
                let r = rx.process()?;
                let p = rx.refill(true)?;
                any |= t + r + p > 0;
            }
            Ok(any)
        })();
        r.map_err(|e| match e {
            Error::Ring(_) => self.disconnect(e),
            e => e,
        })
    }

    /// Final checks on every ring, then blocks on the event channel until an event or
    /// `timeout` (`None`: no limit). Returns at once if work is waiting. Also notices a backend
    /// that switched to Closing/Closed (`Error::BackendClosed`).
    ///
    /// The end of interrupt is late, as Linux netfront's since XSA-391: the port an event was
    /// delivered on stays masked until the next call, when the work it announced has been
    /// done (`poll` in between); an event that found no work again is held back longer
    /// ([`FrontConfig::max_eoi_delay`]), so a backend storming the channel is throttled.
    /// Nothing is lost meanwhile: events on a masked port stay pending and are delivered at
    /// the unmask, and this wait never sleeps past a held-back unmask.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.check_connected()?;
        let _s = xenoprof::scope(Class::NETFRONT);
        self.end_of_interrupt()?;
        self.check_backend()?;
        if self.rx_pending() > 0 {
            return Ok(());
        }
        let work = (|| -> std::result::Result<bool, netif_ring::RingError> {
            let mut any = false;
            for (tx, rx) in self.tx.iter_mut().zip(&mut self.rx) {
                any |=
                    tx.ring.final_check_for_responses()? | rx.ring.final_check_for_responses()?;
            }
            Ok(any)
        })();
        match work {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => {
                self.tx[0].broken.get_or_insert(e);
                return Err(self.disconnect(Error::Ring(e)));
            }
        }
        let deadline = self
            .queues
            .iter()
            .flat_map(|q| q.eoi.iter().filter_map(hypervisor::LateEoi::deadline))
            .min();
        let timeout = match deadline {
            Some(t) => {
                let until = t.saturating_duration_since(Instant::now());
                Some(timeout.map_or(until, |d| d.min(until)))
            }
            None => timeout,
        };
        self.delivered.clear();
        self.evtchn
            .wait(timeout, &mut self.delivered)
            .map_err(Error::hv("evtchn wait"))?;
        for q in &mut self.queues {
            if self.delivered.contains(&q.tx_port) {
                q.eoi[0].delivered();
            }
            if q.split() && self.delivered.contains(&q.rx_port) {
                q.eoi[1].delivered();
            }
        }
        Ok(())
    }

    /// Port `p` was delivered by a wait other than [`Self::wait`]'s: its queue's late end of
    /// interrupt will decide its unmask, as for an event `wait` collected.
    pub(crate) fn mark_delivered(&mut self, p: Port) {
        for q in &mut self.queues {
            if p == q.tx_port {
                q.eoi[0].delivered();
            }
            if q.split() && p == q.rx_port {
                q.eoi[1].delivered();
            }
        }
    }

    /// The late end of interrupt for the events the last wait delivered (see [`Self::wait`]),
    /// and held-back ones that have come due.
    fn end_of_interrupt(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut unmask = Vec::new();
        for (i, q) in self.queues.iter_mut().enumerate() {
            let sides = if q.split() { 2 } else { 1 };
            for side in 0..sides {
                let mark = q.mark(side, &self.tx[i], &self.rx[i]);
                let decision = q.eoi[side].end_of_interrupt(
                    mark != q.work_mark[side],
                    now,
                    self.cfg.max_eoi_delay,
                );
                if decision != Eoi::Idle {
                    q.work_mark[side] = mark;
                }
                let due = matches!(decision, Eoi::Worked | Eoi::Spurious);
                if due || q.eoi[side].take_due(now) {
                    unmask.push(if side == 0 { q.tx_port } else { q.rx_port });
                }
            }
        }
        if !unmask.is_empty() {
            self.evtchn
                .unmask(&unmask)
                .map_err(Error::hv("evtchn unmask"))?;
        }
        Ok(())
    }

    /// Drains backend-state watch events without blocking.
    fn check_backend(&mut self) -> Result<()> {
        let mut fired = false;
        while let Ok(Some(_)) = self.xs.read_watch(Some(Duration::ZERO)) {
            fired = true;
        }
        if fired {
            let s = xenbus::read_state(&self.xs, &self.be_dir)?;
            if matches!(s, XenbusState::Closing | XenbusState::Closed) {
                return Err(self.disconnect(Error::BackendClosed {
                    state: s as u32,
                    hint: "close this device",
                }));
            }
        }
        Ok(())
    }

    /// A snapshot of the counters, every queue together.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for (q, (tx, rx)) in self.queues.iter().zip(self.tx.iter().zip(&self.rx)) {
            s.merge(&tx.stats);
            s.merge(&rx.stats);
            for e in &q.eoi {
                s.spurious_wakeups += e.spurious();
                s.eoi_delayed += e.delayed();
            }
        }
        s.ctrl_requests = self.ctrl_answered;
        s
    }

    /// Tears down: Closing, wait for the backend to let go (Closing/Closed), end every grant,
    /// free every page, close the ports, Closed. A grant the backend still holds after the
    /// timeout is reported as [`Error::GrantsStillInUse`] and its page is not freed.
    pub fn close(self) -> Result<()> {
        let _s = xenoprof::scope(Class::NETFRONT);
        self.teardown()
    }

    fn teardown(self) -> Result<()> {
        let Self {
            dom,
            xs,
            fe_dir,
            be_dir,
            evtchn,
            queues,
            tx: txs,
            rx: rxs,
            cfg,
            ctrl,
            ..
        } = self;
        let _ = xenbus::switch_state(&xs, &fe_dir, XenbusState::Closing);
        // The backend unmaps the rings and stops copying before it leaves Connected.
        let _ = xenbus::wait_for_state(&xs, &be_dir, "the backend's Closing", cfg.timeout, |s| {
            s != XenbusState::Connected
        });
        let deadline = Instant::now() + cfg.timeout;
        let mut stuck: Vec<Pfn> = Vec::new();
        let mut free: Vec<Pfn> = Vec::new();
        // Ends a grant, retrying while the backend still holds it, until the deadline.
        let retry = |f: &dyn Fn() -> std::result::Result<(), hypervisor::Error>| -> bool {
            loop {
                match f() {
                    Ok(()) => return true,
                    Err(
                        hypervisor::Error::GrantInUse(_) | hypervisor::Error::TransferInProgress(_),
                    ) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return false,
                }
            }
        };
        let mut ports = Vec::new();
        if let Some(c) = ctrl {
            let CtrlChannel { ring, page, port } = c;
            // The ring (its page view) goes before its page can be freed.
            drop(ring);
            if retry(&|| dom.end_access(page.1)) {
                free.push(page.0);
            } else {
                stuck.push(page.0);
            }
            ports.push(port);
        }
        for ((q, mut tx), mut rx) in queues.into_iter().zip(txs).zip(rxs) {
            let FrontQueue {
                tx_ring,
                rx_ring,
                tx_port,
                rx_port,
                ..
            } = q;
            for (pfn, g) in tx.outstanding() {
                if !retry(&|| dom.end_access(g)) {
                    stuck.push(pfn);
                }
            }
            free.extend(tx.pages.iter().copied().filter(|p| !stuck.contains(p)));
            for buf in rx.take_posted() {
                if retry(&|| rx.end_for_teardown(buf)) {
                    free.push(buf.pfn);
                } else {
                    stuck.push(buf.pfn);
                }
            }
            free.extend(rx.take_owned_pages());
            // Drop the rings (their page views) before their pages can be freed and reused.
            drop(tx);
            drop(rx);
            for (pfn, g) in [tx_ring, rx_ring] {
                if retry(&|| dom.end_access(g)) {
                    free.push(pfn);
                } else {
                    stuck.push(pfn);
                }
            }
            ports.push(tx_port);
            if rx_port != tx_port {
                ports.push(rx_port);
            }
        }
        let mut first_err = None;
        for pfn in free {
            if let Err(e) = dom.free_page(pfn) {
                first_err.get_or_insert(Error::Hypervisor {
                    op: "free_page",
                    source: e,
                });
            }
        }
        for port in ports {
            if let Err(e) = evtchn.unbind(port) {
                first_err.get_or_insert(Error::Hypervisor {
                    op: "close event channel",
                    source: e,
                });
            }
        }
        let _ = xenbus::switch_state(&xs, &fe_dir, XenbusState::Closed);
        let _ = xs.unwatch(&format!("{be_dir}/state"), WATCH_TOKEN);
        if !stuck.is_empty() {
            return Err(Error::GrantsStillInUse { count: stuck.len() });
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A received frame, lent to the stack by [`phy::RxToken::consume`].
#[derive(Debug)]
pub struct NetfrontRxToken<'a, D: FrontendDomain> {
    rx: &'a mut RxPath<D>,
}

/// Room for one frame on the tx ring of whichever queue its flow hashes to.
#[derive(Debug)]
pub struct NetfrontTxToken<'a, D: FrontendDomain> {
    tx: &'a mut [TxPath<D>],
}

impl<D: FrontendDomain> phy::RxToken for NetfrontRxToken<'_, D> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        self.rx.consume(f)
    }
}

impl<D: FrontendDomain> phy::TxToken for NetfrontTxToken<'_, D> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let txs = self.tx;
        if len > txs[0].scratch.len() {
            // Longer than the MTU we advertised: let the stack write it, then drop it.
            txs[0].stats.tx_drop += 1;
            return f(&mut vec![0; len]);
        }
        let r = f(&mut txs[0].scratch[..len]);
        let _s = xenoprof::scope(Class::NETFRONT);
        // The frame's flow picks its queue (Linux's xennet_select_queue); it was written into
        // queue 0's scratch buffer, which trades places with the chosen queue's (no copy).
        let qi = if txs.len() > 1 {
            offload::flow::flow_hash(&txs[0].scratch[..len]) as usize % txs.len()
        } else {
            0
        };
        if qi != 0 {
            let (first, rest) = txs.split_at_mut(qi);
            std::mem::swap(&mut first[0].scratch, &mut rest[0].scratch);
        }
        let tx = &mut txs[qi];
        let flags = tx.offload(len);
        // A failure is counted in tx_errors; smoltcp's TxToken has no error path, and a
        // disconnect shows up in the next poll.
        let _ = tx.send_scratch(len, flags);
        r
    }
}

impl<D: FrontendDomain> Netfront<D> {
    /// Whether every queue has room for the largest frame (a token may send on any of them),
    /// reclaiming first where one has not. A backend protocol violation disconnects.
    fn tx_room(&mut self) -> bool {
        for i in 0..self.tx.len() {
            if !self.tx[i].has_room() {
                let _s = xenoprof::scope(Class::NETFRONT);
                if let Err(e) = self.tx[i].reclaim() {
                    self.disconnect(e);
                    return false;
                }
                if !self.tx[i].has_room() {
                    return false;
                }
            }
        }
        true
    }
}

impl<D: FrontendDomain> phy::Device for Netfront<D> {
    type RxToken<'a>
        = NetfrontRxToken<'a, D>
    where
        Self: 'a;
    type TxToken<'a>
        = NetfrontTxToken<'a, D>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.disconnected.is_some() {
            return None;
        }
        // The next queue with a frame, round robin, processing responses where none is ready.
        let n = self.rx.len();
        let mut found = None;
        for k in 0..n {
            let i = (self.rx_next + k) % n;
            if self.rx[i].ready.is_empty() {
                let _s = xenoprof::scope(Class::NETFRONT);
                if let Err(e) = self.rx[i].process() {
                    self.disconnect(e);
                    return None;
                }
            }
            if !self.rx[i].ready.is_empty() {
                found = Some(i);
                break;
            }
        }
        let i = found?;
        self.rx_next = (i + 1) % n;
        self.last_rx_queue = Some(i);
        // A frame received may need an answer; without room for one the stack still gets the
        // frame (its reply then waits for the next transmit).
        let _ = self.tx_room();
        if self.disconnected.is_some() {
            return None;
        }
        Some((
            NetfrontRxToken {
                rx: &mut self.rx[i],
            },
            NetfrontTxToken { tx: &mut self.tx },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        if self.disconnected.is_some() || !self.tx_room() {
            return None;
        }
        Some(NetfrontTxToken { tx: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.cfg.max_frame();
        caps.max_burst_size = None;
        caps.checksum = checksum_caps(self.cfg.csum_offload);
        caps
    }
}

/// smoltcp's checksum work on this device. Capabilities are per protocol and direction, not per
/// frame, so with checksum offload TCP and UDP are `Checksum::None` both ways and netfront does
/// the per-frame part: on transmit it writes the pseudo-header sum and sets `csum_blank` (the
/// backend or the receiver finishes it only where the frame meets something that needs it); on
/// receive it verifies only frames that came without `data_validated`/`csum_blank`
/// ([`crate::rxcheck`]). IPv4 header and ICMP checksums stay smoltcp's (no flag covers them).
/// Without checksum offload smoltcp does everything.
fn checksum_caps(csum_offload: bool) -> ChecksumCapabilities {
    let mut c = ChecksumCapabilities::default();
    if csum_offload {
        c.tcp = Checksum::None;
        c.udp = Checksum::None;
    }
    c
}
