//! netbackd on the embedded hypervisor: a machine with dom0 (the driver domain, whose vCPU runs
//! the backend) and `--guests N` guests created at start; the [toolstack](crate::toolstack)
//! adds each guest's vif as its `--guest-*` options configure it and plays its hotplug script,
//! and each guest connects to the backend through xenbus as a frontend does.
//!
//! At exit the toolstack destroys the guests. With `--close-on-exit` the backend first closes
//! every device (the guests see Closing, then Closed) and removes the vif netdevs; without it
//! the backend leaves the devices as they are, persistent vif netdevs included, and the guests
//! go as destroyed domains go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use guest::{Guest, GuestReport, GuestSpec};
use netfront::RxMode;
use xen_model::{DomainHandle, Hypervisor};

use crate::Error;
use crate::cli::{Args, Mode};
use crate::confine::Plan;
use crate::ctl;
use crate::daemon::{self, POOL_PAGES, Run, Signals, Sockets, Startup};
use crate::metrics::Latest;
use crate::toolstack;

/// The driver domain's reservation: the frame pool plus room for everything else it allocates.
const DOM0_PAGES: u64 = POOL_PAGES as u64 + 1024;
/// Each guest's reservation: netfront's 256 rx buffers, 256 tx pages and two rings, with room.
const GUEST_PAGES: u64 = 1024;

/// Runs until SIGINT/SIGTERM. Returns once every guest has closed its netfront, every domain is
/// destroyed and every frame is back with the machine.
///
/// Everything is opened first (the backend's uplinks, the control and metrics sockets), the
/// guests' vifs are added and their hotplug scripts played; then the process confines itself
/// ([`crate::confine`]: the backend's thread confines itself once built, this one after the
/// toolstack's work, then seccomp for all), and only then do the guests start.
pub fn run(startup: Startup, mut signals: Signals) -> Result<(), Error> {
    let args = &startup.args().clone();
    let plan = Plan::for_args(args).map_err(Error::Confine)?;
    let start = Instant::now();
    let n = args.guests;
    let frames = DOM0_PAGES + u64::from(n) * GUEST_PAGES + 64 * (u64::from(n) + 1);
    let xen = Arc::new(Hypervisor::new(frames).map_err(Error::Hypervisor)?);
    let dom0 = xen
        .create_domain_with_id(0, DOM0_PAGES)
        .map_err(Error::Hypervisor)?;
    let doms: Vec<DomainHandle> = (1..=n)
        .map(|k| xen.create_domain_with_id(k, GUEST_PAGES))
        .collect::<Result<_, _>>()
        .map_err(Error::Hypervisor)?;
    log::info!(
        "embedded hypervisor: {} frames, dom0 and {n} guest(s) on {}",
        xen.total_frames(),
        args.guest_net
    );

    let sockets = Sockets::bind(args, false)?;
    let (queue, feed) = ctl::channel();
    let latest = args.metrics.map(|_| Latest::default());
    let guest_reports = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), Error>>();
    let backend = {
        let xen = xen.clone();
        let plan = plan.clone();
        let mut run = Run {
            args: args.clone(),
            loaded: startup.loaded,
            argv: startup.argv,
            start,
            stop: signals.stop.clone(),
            report: signals.report.clone(),
            reload: signals.reload.clone(),
            wake: signals.take_wake_fd(),
            guests: guest_reports.clone(),
            hypervisor: Box::new(move || serde_json::to_value(xen_stats(&xen)).ok()),
            log: startup.log,
            ctl: sockets.ctl.as_ref().map(|_| queue),
            latest: latest.clone(),
        };
        std::thread::Builder::new()
            .name("dom0-netback".into())
            .spawn(move || -> Result<(), Error> {
                let run = &mut run;
                xenoprof::register_vcpu(0, xenoprof::Context::Kernel);
                let built = daemon::build(dom0, run).and_then(|nb| {
                    let mut nb = nb;
                    crate::confine::confine_thread(&plan).map_err(Error::Confine)?;
                    daemon::confine_backend_threads(&mut nb, &plan)?;
                    Ok(nb)
                });
                let mut nb = match built {
                    Ok(nb) => {
                        let _ = ready_tx.send(Ok(()));
                        nb
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                daemon::serve(&mut nb, run)
            })
            .map_err(|e| Error::Os("spawning the backend's thread", e))?
    };
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = backend.join();
            return Err(e);
        }
        Err(_) => return Err(thread_died(backend)),
    }

    // The toolstack adds each guest's vif and runs its hotplug script; each guest then
    // connects through xenbus. A guest whose vif fails is not started, as `xl create` fails.
    let attached: Vec<_> = (1..=n)
        .map(|k| (k, toolstack::attach_vif(&xen, args, k)))
        .collect();
    // Everything is open and every script played: confine this thread and the process.
    daemon::confine_process(&plan)?;
    sockets.serve(Some(feed), signals.waker(), latest)?;
    let stop_guests = Arc::new(AtomicBool::new(false));
    let mut guests = Vec::new();
    let mut vifs = Vec::new();
    for ((k, attach), dom) in attached.into_iter().zip(doms) {
        let addr = args.guest_addr(k);
        let paths = match attach {
            Ok(paths) => paths,
            Err(why) => {
                log::error!(
                    "guest {k} ({addr}): its vif{k}.0 failed: {why}; the guest is not started \
                     (as xl create fails)"
                );
                if let Ok(mut v) = guest_reports.lock() {
                    v.push(Arc::new(Mutex::new(GuestReport {
                        index: k,
                        domid: k,
                        addr: addr.to_string(),
                        error: Some(format!("vif{k}.0 failed: {why}")),
                        ..GuestReport::default()
                    })));
                }
                continue;
            }
        };
        vifs.push(paths);
        let spec = GuestSpec {
            index: k,
            mac: Args::guest_mac(k),
            addr,
            prefix: args.guest_net.prefix_len(),
            mtu: args.mtu as usize,
            mode: match args.mode {
                Mode::Copy => RxMode::Copy,
                Mode::Flip => RxMode::Flip,
            },
        };
        let g = Guest::start(dom, spec, stop_guests.clone())
            .map_err(|e| Error::Os("spawning a guest's thread", e))?;
        if let Ok(mut v) = guest_reports.lock() {
            v.push(g.report.clone());
        }
        guests.push(g);
    }
    log::info!(
        "serving {} of {n} guest(s); SIGUSR1 prints counters, SIGHUP reads --config again, \
         SIGINT/SIGTERM stops (twice: at once)",
        guests.len()
    );
    daemon::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving the embedded guests"),
    ]);
    if args.debug_forbidden_syscall {
        crate::confine::forbidden_syscall();
    }

    let served = backend.join().map_err(|_| {
        Error::Os(
            "the backend's thread panicked",
            std::io::Error::other("panic"),
        )
    });
    // With --close-on-exit the backend has closed every device: the guests see it and close,
    // giving back every page and grant. Without it the backend has let go of the devices as
    // they were (its mappings released, nothing written): the toolstack destroys them as `xl
    // destroy` does, and the guests, seeing no backend, close.
    if !args.close_on_exit {
        let xs = xen.xenstore();
        for paths in &vifs {
            toolstack::destroy_vif(&xs, paths);
        }
    }
    // Relaxed: a stop flag; joins order the rest.
    stop_guests.store(true, Ordering::Relaxed);
    for g in guests {
        let r = g.join();
        if let Some(e) = r.error {
            log::warn!("guest {}: {e}", r.index);
        }
    }
    for k in (1..=n).chain([0]) {
        let _ = xen.destroy_domain(k);
    }
    let (free, total) = (xen.free_frames(), xen.total_frames());
    if free == total {
        log::info!("exit: every frame is back with the machine ({free} of {total} free)");
    } else {
        log::error!(
            "exit: {} frame(s) still held ({free} of {total} free): a grant or mapping leaked",
            total - free
        );
    }
    served??;
    if free != total {
        return Err(Error::Leak {
            frames: total - free,
        });
    }
    Ok(())
}

fn thread_died(h: std::thread::JoinHandle<Result<(), Error>>) -> Error {
    match h.join() {
        Ok(Err(e)) => e,
        _ => Error::Os(
            "the backend's thread",
            std::io::Error::other("it exited before it was ready"),
        ),
    }
}

/// The machine's counters as JSON-able data.
fn xen_stats(xen: &Hypervisor) -> serde_json::Value {
    let s = xen.stats();
    serde_json::json!({
        "kind": "embedded",
        "total_frames": xen.total_frames(),
        "free_frames": s.free_frames,
        "copy_calls": s.copy_calls,
        "copy_ops": s.copy_ops,
        "copy_failed": s.copy_failed,
        "copy_bytes": s.copy_bytes,
        "transfer_ops": s.transfer_ops,
        "maps": s.maps,
        "unmaps": s.unmaps,
    })
}
