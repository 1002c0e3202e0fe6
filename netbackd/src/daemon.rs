//! The backend's loop, the same on the embedded hypervisor and on real Xen: switches made,
//! uplinks attached to theirs, host-mode vifs' netdevs provided ([`HostNetdevs`]), captures
//! started, counters printed on a timer and on SIGUSR1. On SIGINT/SIGTERM it stops: by default
//! leaving every device as it is (Connected vifs, persistent netdevs) for the next instance to
//! take over, with `--close-on-exit` closing every device (Closing, then Closed) and removing
//! the netdevs; either way every mapping and event channel of this process is released.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_lite::CaptureDirection;
use guest::GuestReport;
use hypervisor::BackendDomain;
use netback::{Config, Netback, VifId};

use crate::Error;
use crate::cli::{Args, parse_vif};
use crate::config::Loaded;
use crate::ctl::{self, CtlFeed, CtlQueue};
use crate::logging::LogControl;
use crate::metrics::{Latest, PUBLISH_EVERY, Snapshot};
use crate::netdevs::HostNetdevs;
use crate::ops::{self, DropWatch};
use crate::report::Report;

/// How often the backend looks at its timers when nothing else wakes it.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Backend pages for frames (each 4 KiB).
pub const POOL_PAGES: usize = 8 * 1024;

/// What signals tell the program: stop (SIGINT/SIGTERM; a second one exits at once), print the
/// counters (SIGUSR1), re-read the config file (SIGHUP), and a descriptor that becomes readable
/// on any of them, for the backend's poll.
#[derive(Debug)]
pub struct Signals {
    /// Set by SIGINT or SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// Set by SIGUSR1.
    pub report: Arc<AtomicBool>,
    /// Set by SIGHUP.
    pub reload: Arc<AtomicBool>,
    wake: Option<UnixStream>,
    waker: Waker,
}

/// Ends the backend's wait from another thread (the control socket's): a byte on the same
/// socket pair the signal handlers write to.
#[derive(Debug, Clone)]
pub struct Waker(Arc<UnixStream>);

impl Waker {
    /// Wakes the backend (a full pipe means a wakeup is already pending).
    pub fn wake(&self) {
        use std::io::Write;
        let _ = (&*self.0).write(&[1]);
    }
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> Result<Signals, Error> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        let (r, w) = UnixStream::pair().map_err(|e| Error::Os("socketpair", e))?;
        r.set_nonblocking(true)
            .map_err(|e| Error::Os("socketpair", e))?;
        w.set_nonblocking(true)
            .map_err(|e| Error::Os("socketpair", e))?;
        let reg = |r: std::io::Result<signal_hook::SigId>| {
            r.map(|_| ())
                .map_err(|e| Error::Os("installing a signal handler", e))
        };
        for (sig, code) in [(SIGINT, 130), (SIGTERM, 143)] {
            // A second signal while stopping exits at once (registered first, so it sees the
            // flag as the first signal left it).
            reg(signal_hook::flag::register_conditional_shutdown(
                sig,
                code,
                stop.clone(),
            ))?;
            reg(signal_hook::flag::register(sig, stop.clone()))?;
        }
        reg(signal_hook::flag::register(SIGUSR1, report.clone()))?;
        reg(signal_hook::flag::register(SIGHUP, reload.clone()))?;
        for sig in [SIGINT, SIGTERM, SIGUSR1, SIGHUP] {
            let w = w.try_clone().map_err(|e| Error::Os("dup", e))?;
            reg(signal_hook::low_level::pipe::register(sig, w))?;
        }
        Ok(Signals {
            stop,
            report,
            reload,
            wake: Some(r),
            waker: Waker(Arc::new(w)),
        })
    }

    /// The descriptor that wakes the backend's poll on a signal (taken once).
    pub fn take_wake_fd(&mut self) -> Option<OwnedFd> {
        self.wake.take().map(OwnedFd::from)
    }

    /// What wakes the backend from another thread.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Whether a stop was asked for.
    pub fn stopping(&self) -> bool {
        // Relaxed: a flag set by a signal handler; nothing else is published through it.
        self.stop.load(Ordering::Relaxed)
    }
}

/// The backend's tunables from the command line.
pub fn config(args: &Args) -> Config {
    Config {
        copy_batch_ops: args.batch,
        flip_batch_pages: args.batch,
        poll_interval: POLL_INTERVAL,
        vif_mode: args.vif_mode.into(),
        // xenstore on its own thread: a slow or restarting xenstored never stalls packets.
        control_thread: true,
        max_queues: args.max_queues.unwrap_or(Config::default().max_queues),
        ..Config::default()
    }
}

/// What the backend thread needs besides its domain.
pub struct Run {
    /// The command line (and config file) in force.
    pub args: Args,
    /// How the options were put together, for SIGHUP to read the file again.
    pub loaded: Loaded,
    /// The program's arguments as it was started.
    pub argv: Vec<OsString>,
    /// When the program started.
    pub start: Instant,
    /// Set by SIGINT/SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// Set by SIGUSR1.
    pub report: Arc<AtomicBool>,
    /// Set by SIGHUP.
    pub reload: Arc<AtomicBool>,
    /// Wakes the backend's poll on a signal.
    pub wake: Option<OwnedFd>,
    /// The embedded guests' counters, as they register.
    pub guests: Arc<Mutex<Vec<Arc<Mutex<GuestReport>>>>>,
    /// Hypervisor-wide counters for the report.
    pub hypervisor: Box<dyn Fn() -> Option<serde_json::Value> + Send>,
    /// The log's level control.
    pub log: LogControl,
    /// Requests from the control socket.
    pub ctl: Option<CtlQueue>,
    /// Where snapshots for the metrics go (with --metrics).
    pub latest: Option<Latest>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("args", &self.args).finish()
    }
}

/// The program's sockets, bound before it confines itself.
#[derive(Debug)]
pub struct Sockets {
    /// The control socket (none if another netbackd answers on this run directory's).
    pub ctl: Option<(UnixListener, PathBuf)>,
    /// The metrics listener and its address, with --metrics.
    pub metrics: Option<(TcpListener, std::net::SocketAddr)>,
}

impl Sockets {
    /// Binds the control socket in --run-dir and, with --metrics, the metrics listener.
    /// `exclusive`: this instance holds the backend domain's lock, so a live socket there is
    /// an error rather than another embedded instance's.
    pub fn bind(args: &Args, exclusive: bool) -> Result<Sockets, Error> {
        let ctl = match ctl::bind(&args.run_dir) {
            Ok(l) => Some(l),
            Err(e @ ctl::CtlError::InUse { .. }) if !exclusive => {
                tracing::warn!("{e}; this netbackd serves no control socket");
                None
            }
            Err(e) => return Err(Error::Ctl(e)),
        };
        let metrics = match args.metrics {
            Some(addr) => {
                let l = TcpListener::bind(addr).map_err(|e| Error::Metrics { addr, source: e })?;
                // Asked now: after confinement getsockname(2) is not allowed.
                let bound = l.local_addr().map_err(|e| Error::Os("metrics socket", e))?;
                Some((l, bound))
            }
            None => None,
        };
        Ok(Sockets { ctl, metrics })
    }

    /// Serves them on threads of their own; returns the backend's ends.
    pub fn serve(
        self,
        feed: Option<CtlFeed>,
        waker: Waker,
        latest: Option<Latest>,
    ) -> Result<(), Error> {
        if let (Some((l, path)), Some(feed)) = (self.ctl, feed) {
            ctl::spawn(l, feed, waker).map_err(|e| Error::Os("spawning the control thread", e))?;
            // Removed at a clean exit (a socket left by a crash is replaced by the next one).
            *CTL_SOCKET.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.clone());
            tracing::info!(socket = %path.display(), "control socket: netbackd ctl list|stats|dump|close");
        }
        if let (Some((l, addr)), Some(latest)) = (self.metrics, latest) {
            crate::metrics::spawn(l, latest)
                .map_err(|e| Error::Os("spawning the metrics thread", e))?;
            tracing::info!(%addr, "metrics: http://{addr}/metrics");
        }
        Ok(())
    }
}

/// What `main` hands to either mode: the options and how they were put together, the log.
#[derive(Debug)]
pub struct Startup {
    /// The options in force, and the config file's keys.
    pub loaded: Loaded,
    /// The program's arguments as it was started (SIGHUP parses them again).
    pub argv: Vec<OsString>,
    /// The log's level control.
    pub log: LogControl,
}

impl Startup {
    /// The options in force.
    pub fn args(&self) -> &Args {
        &self.loaded.args
    }
}

/// Confines the calling thread, then every thread (seccomp), and says what is kept: what
/// `main`'s thread does once everything is open and every other thread has confined itself.
pub fn confine_process(plan: &crate::confine::Plan) -> Result<(), Error> {
    crate::confine::confine_thread(plan).map_err(Error::Confine)?;
    crate::confine::install_seccomp(plan).map_err(Error::Confine)?;
    tracing::info!(
        caps = ?plan.keep.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>(),
        user = plan.user.as_ref().map_or("root", |u| u.name.as_str()),
        seccomp = plan.seccomp,
        "{}",
        plan.describe()
    );
    Ok(())
}

/// Confines every thread the backend made (its control plane's), each doing it itself: Linux
/// keeps credentials and capabilities per thread. Done before [`confine_process`] installs the
/// seccomp filter.
pub fn confine_backend_threads<D: BackendDomain>(
    nb: &mut Netback<D>,
    plan: &crate::confine::Plan,
) -> Result<(), Error> {
    let plan = plan.clone();
    nb.run_on_threads(std::sync::Arc::new(move || {
        crate::confine::confine_thread(&plan).map_err(|e| e.to_string())
    }))
    .map_err(Error::ConfineThreads)
}

/// The control socket this process serves, removed at exit ([`remove_ctl_socket`]).
static CTL_SOCKET: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Removes the control socket this process made, if any.
pub fn remove_ctl_socket() {
    if let Some(p) = CTL_SOCKET.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = std::fs::remove_file(p);
    }
}

/// Tells the service manager (systemd's `Type=notify`) something, if it listens.
pub fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot tell the service manager (NOTIFY_SOCKET)");
    }
}

/// Builds the backend in `dom0` with the switches, uplinks and captures the command line asks
/// for, able to make host-mode vifs' netdevs.
pub fn build<D: BackendDomain>(dom0: D, run: &mut Run) -> Result<Netback<D>, Error> {
    let args = &run.args;
    let mut nb = Netback::new(dom0, config(args), POOL_PAGES).map_err(Error::Netback)?;
    nb.set_netdevs(Box::new(HostNetdevs));
    for name in &args.switches {
        nb.add_switch(name).map_err(Error::Netback)?;
        log::info!("switch {name}: no uplink; its builtin vifs talk among themselves");
    }
    for spec in &args.uplinks {
        let up = crate::uplinks::open::<D>(spec, args.mtu).map_err(|e| Error::Uplink {
            uplink: spec.port_name(),
            source: e,
        })?;
        let port = nb
            .attach_uplink_to(spec.switch(), up)
            .map_err(Error::Netback)?;
        for p in args.pcaps.iter().filter(|p| p.port == spec.port_name()) {
            let f = std::fs::File::create(&p.file).map_err(|e| Error::File {
                path: p.file.clone(),
                source: e,
            })?;
            nb.switch_bridge(spec.switch())
                .expect("attach_uplink_to made the switch")
                .start_capture(port, std::io::BufWriter::new(f), CaptureDirection::Both)
                .map_err(|e| Error::Netback(e.into()))?;
            log::info!("capturing {} into {}", p.port, p.file.display());
        }
    }
    for p in &args.pcaps {
        if let Some((domid, devid)) = parse_vif(&p.port) {
            nb.capture_vif(VifId { domid, devid }, p.file.clone());
            log::info!(
                "capturing {} into {} once it connects",
                p.port,
                p.file.display()
            );
        }
    }
    if let Some(w) = run.wake.take() {
        nb.set_wake_fd(w);
    }
    Ok(nb)
}

/// Serves until SIGINT/SIGTERM, then (with `--close-on-exit`) closes every device, and
/// reports. Without `--close-on-exit` it never writes to the devices on the way out: the caller
/// drops the backend, which unmaps and unbinds what this process holds and nothing else.
///
/// Besides the backend's passes, each turn of the loop answers a bounded number of control
/// requests, and once a second publishes the counters for the metrics, warns (rate limited per
/// vif) about frames guests had dropped, and feeds systemd's watchdog: a wedged loop stops
/// feeding it.
pub fn serve<D: BackendDomain>(nb: &mut Netback<D>, run: &mut Run) -> Result<(), Error> {
    let mut interval = stats_interval(&run.args);
    let mut next = interval.map(|i| run.start + i);
    let watchdog = sd_notify::watchdog_enabled().map(|t| t / 2);
    let mut next_feed = Instant::now();
    let mut next_tick = Instant::now();
    let mut drops = DropWatch::default();
    ops::apply_default_rate(nb, &run.args);
    // Relaxed: flags set by signal handlers; nothing else is published through them.
    while !run.stop.load(Ordering::Relaxed) {
        if !nb.poll().map_err(Error::Netback)? {
            nb.wait(POLL_INTERVAL).map_err(Error::Netback)?;
        }
        if let Some(q) = &run.ctl {
            q.serve(|req| ops::answer(nb, run, req));
        }
        let now = Instant::now();
        if let Some(every) = watchdog
            && now >= next_feed
        {
            notify(&[sd_notify::NotifyState::Watchdog]);
            next_feed = now + every;
        }
        if now >= next_tick {
            next_tick = now + PUBLISH_EVERY;
            let snap = nb.snapshot();
            drops.warn(&snap);
            netback::ratelimit::flush_suppressed();
            if let Some(latest) = &run.latest {
                latest.publish(Snapshot {
                    at: now,
                    report: report(snap, run),
                    devices: nb.device_list(),
                });
            }
        }
        if run.reload.swap(false, Ordering::Relaxed) {
            ops::reload(nb, run);
            interval = stats_interval(&run.args);
            next = interval.map(|i| Instant::now() + i);
        }
        let due = next.is_some_and(|n| Instant::now() >= n);
        if run.report.swap(false, Ordering::Relaxed) || due {
            emit(nb, run);
            if let (Some(n), Some(i)) = (next.as_mut(), interval) {
                while *n <= Instant::now() {
                    *n += i;
                }
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    if run.args.close_on_exit {
        log::info!("stopping: closing every device (--close-on-exit)");
        nb.close_all();
    } else {
        log::info!(
            "stopping: leaving {} device(s) as they are, vifs connected and netdevs in place, \
             for the next netbackd to take over (--close-on-exit closes them)",
            nb.snapshot().devices
        );
    }
    emit(nb, run);
    Ok(())
}

fn stats_interval(args: &Args) -> Option<Duration> {
    (args.stats_interval > 0.0).then(|| Duration::from_secs_f64(args.stats_interval))
}

/// The counters as one report.
pub(crate) fn report(backend: netback::NetbackSnapshot, run: &Run) -> Report {
    let guests = run
        .guests
        .lock()
        .map(|g| {
            g.iter()
                .filter_map(|r| r.lock().ok().map(|r| r.clone()))
                .collect()
        })
        .unwrap_or_default();
    Report {
        uptime_s: run.start.elapsed().as_secs_f64(),
        backend,
        guests,
        hypervisor: (run.hypervisor)(),
    }
}

/// Prints the counters (and writes the JSON file).
fn emit<D: BackendDomain>(nb: &Netback<D>, run: &Run) {
    let report = report(nb.snapshot(), run);
    print!("{}", report.text());
    if let Some(path) = &run.args.stats_json
        && let Err(e) = report.write_json(path)
    {
        log::warn!("cannot write {}: {e}", path.display());
    }
}
