//! The backend's loop, the same on the embedded hypervisor and on real Xen: switches made,
//! uplinks attached to theirs, host-mode vifs' netdevs provided ([`HostNetdevs`]), captures
//! started, counters printed on a timer and on SIGUSR1. On SIGINT/SIGTERM it stops: by default
//! leaving every device as it is (Connected vifs, persistent netdevs) for the next instance to
//! take over, with `--close-on-exit` closing every device (Closing, then Closed) and removing
//! the netdevs; either way every mapping and event channel of this process is released.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_lite::CaptureDirection;
use guest::GuestReport;
use hypervisor::BackendDomain;
use netback::{Config, Netback, VifId};

use crate::Error;
use crate::cli::{Args, parse_vif};
use crate::netdevs::HostNetdevs;
use crate::report::Report;

/// How often the backend looks at its timers when nothing else wakes it.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Backend pages for frames (each 4 KiB).
pub const POOL_PAGES: usize = 8 * 1024;

/// What signals tell the program: stop (SIGINT/SIGTERM; a second one exits at once), print the
/// counters (SIGUSR1), and a descriptor that becomes readable on either, for the backend's poll.
#[derive(Debug)]
pub struct Signals {
    /// Set by SIGINT or SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// Set by SIGUSR1.
    pub report: Arc<AtomicBool>,
    wake: Option<UnixStream>,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> Result<Signals, Error> {
        use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(AtomicBool::new(false));
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
        for sig in [SIGINT, SIGTERM, SIGUSR1] {
            let w = w.try_clone().map_err(|e| Error::Os("dup", e))?;
            reg(signal_hook::low_level::pipe::register(sig, w))?;
        }
        Ok(Signals {
            stop,
            report,
            wake: Some(r),
        })
    }

    /// The descriptor that wakes the backend's poll on a signal (taken once).
    pub fn take_wake_fd(&mut self) -> Option<OwnedFd> {
        self.wake.take().map(OwnedFd::from)
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
    /// The command line.
    pub args: Args,
    /// When the program started.
    pub start: Instant,
    /// Set by SIGINT/SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// Set by SIGUSR1.
    pub report: Arc<AtomicBool>,
    /// Wakes the backend's poll on a signal.
    pub wake: Option<OwnedFd>,
    /// The embedded guests' counters, as they register.
    pub guests: Arc<Mutex<Vec<Arc<Mutex<GuestReport>>>>>,
    /// Hypervisor-wide counters for the report.
    pub hypervisor: Box<dyn Fn() -> Option<serde_json::Value> + Send>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("args", &self.args).finish()
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
pub fn serve<D: BackendDomain>(nb: &mut Netback<D>, run: &Run) -> Result<(), Error> {
    let args = &run.args;
    let interval =
        (args.stats_interval > 0.0).then(|| Duration::from_secs_f64(args.stats_interval));
    let mut next = interval.map(|i| run.start + i);
    // Relaxed: flags set by signal handlers; nothing else is published through them.
    while !run.stop.load(Ordering::Relaxed) {
        if !nb.poll().map_err(Error::Netback)? {
            nb.wait(POLL_INTERVAL).map_err(Error::Netback)?;
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
    if args.close_on_exit {
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

/// Prints the counters (and writes the JSON file).
fn emit<D: BackendDomain>(nb: &Netback<D>, run: &Run) {
    let guests = run
        .guests
        .lock()
        .map(|g| {
            g.iter()
                .filter_map(|r| r.lock().ok().map(|r| r.clone()))
                .collect()
        })
        .unwrap_or_default();
    let report = Report {
        uptime_s: run.start.elapsed().as_secs_f64(),
        backend: nb.snapshot(),
        guests,
        hypervisor: (run.hypervisor)(),
    };
    print!("{}", report.text());
    if let Some(path) = &run.args.stats_json
        && let Err(e) = report.write_json(path)
    {
        log::warn!("cannot write {}: {e}", path.display());
    }
}
