//! netbackd on real Xen: the calling domain (dom0 or a driver domain) serves every vif the
//! toolstack gives it, through `/dev/xen/gntdev`, `/dev/xen/evtchn` and xenstore
//! (`xen_linux::XenHost`). Guests are real domains; there are no embedded ones. One netbackd
//! per backend domain ([`InstanceLock`]); vifs a previous one left connected are taken over.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hypervisor::GuestMemory;
use xen_linux::XenHost;

use crate::Error;
use crate::confine::Plan;
use crate::ctl;
use crate::daemon::{self, POOL_PAGES, Run, Signals, Sockets, Startup};
use crate::lock::InstanceLock;
use crate::metrics::Latest;

/// Serves until SIGINT/SIGTERM, then releases every mapping and event channel it holds,
/// leaving the devices for the next instance (or, with `--close-on-exit`, closing each first:
/// Closing, then Closed).
///
/// Everything is opened first (the hypervisor's devices, xenstore, the lock, the control and
/// metrics sockets, the uplinks), then the process confines itself ([`crate::confine`]), then
/// it tells systemd it is ready and serves.
pub fn run(start: Startup, mut signals: Signals) -> Result<(), Error> {
    let args = start.args().clone();
    let plan = Plan::for_args(&args).map_err(Error::Confine)?;
    // The frame pool plus room for the rings' and the program's own pages.
    let host = XenHost::open(POOL_PAGES + 256).map_err(Error::Hypervisor)?;
    // Before anything reads or writes the backend tree.
    let lock = InstanceLock::acquire(&args.run_dir, host.domid()).map_err(Error::Lock)?;
    log::info!(
        "the only netbackd for domain {} (lock {}, pid {})",
        host.domid(),
        lock.path().display(),
        std::process::id()
    );
    log::info!(
        "real Xen: serving vifs of domain {} ({}); guests attach with the toolstack \
         (xl network-attach, or vif = [...] in their config)",
        host.domid(),
        host.xs_endpoint().display()
    );
    let sockets = Sockets::bind(&args, true)?;
    let (queue, feed) = ctl::channel();
    let latest = args.metrics.map(|_| Latest::default());
    let stats = host.clone();
    let mut run = Run {
        args: args.clone(),
        loaded: start.loaded,
        argv: start.argv,
        start: Instant::now(),
        stop: signals.stop.clone(),
        report: signals.report.clone(),
        reload: signals.reload.clone(),
        wake: signals.take_wake_fd(),
        guests: Arc::new(Mutex::new(Vec::new())),
        hypervisor: Box::new(move || {
            let s = stats.stats();
            Some(serde_json::json!({
                "kind": "xen",
                "gntdev_ioctls": s.gntdev_ioctls,
                "copy_calls": s.copy_calls,
                "copy_ops": s.copy_ops,
                "copy_failed": s.copy_failed,
                "copy_refused": s.copy_refused,
                "copy_bytes": s.copy_bytes,
                "maps": s.maps,
                "map_failures": s.map_failures,
                "unmap_failures": s.unmap_failures,
                "evtchn_ioctls": s.evtchn_ioctls,
                "evtchn_overflows": s.evtchn_overflows,
            }))
        }),
        log: start.log,
        ctl: Some(queue),
        latest: latest.clone(),
    };
    let mut nb = daemon::build(host.clone(), &mut run)?;
    // The backend's own threads confine themselves; then this one and, with the seccomp filter,
    // the process. The ctl and metrics threads are made confined.
    daemon::confine_backend_threads(&mut nb, &plan)?;
    daemon::confine_process(&plan)?;
    sockets.serve(Some(feed), signals.waker(), latest)?;
    daemon::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving the backend domain's vifs"),
    ]);
    if args.debug_forbidden_syscall {
        crate::confine::forbidden_syscall();
    }
    daemon::serve(&mut nb, &mut run)?;
    drop(nb);
    log::info!("exit: {}", host.stats());
    drop(lock);
    Ok(())
}
