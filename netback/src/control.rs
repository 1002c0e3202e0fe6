//! The control plane on its own thread (`Config::control_thread`): xenstore's watches, the
//! xenbus handshakes and the vif lifecycle run there, so a slow or vanished xenstored never
//! stalls a packet (DESIGN decision 12: control never waits on data, data never waits on
//! control).
//!
//! - Every xenstore request has a deadline (`Config::xenstore_timeout`); a request past it, or
//!   a connection that broke, makes the control plane connect again (with a growing pause) and
//!   resynchronise: watches registered again, every device looked at afresh, its state written
//!   again ([`Xenbus::reconnect`]). Nothing is decided on what a failed read seemed to say.
//! - What the control plane asks of the data path travels as [`DataCmd`]s over a channel, with
//!   an eventfd that wakes the data path's wait; the data path executes them between passes
//!   and answers. The control plane waits for the answer (connecting a vif must be done before
//!   Connected is written, unmapping before Closed), never the other way round: the data path
//!   only ever looks at the channel without blocking.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use hypervisor::{BackendDomain, XenStore, XenbusState};
use rustix::event::{EventfdFlags, eventfd};

use crate::device::DeviceConfig;
use crate::error::{Error, FrontendError};
use crate::rate::Rate;
use crate::vif::{FrontendKeys, VifId};
use crate::xenbus::{VifControl, Xenbus};

/// How long the control plane waits for the data path to carry out a command before it gives
/// up on it (a data path that does not answer in this long is wedged; systemd's watchdog
/// restarts such a backend).
const DATA_ANSWER: Duration = Duration::from_secs(10);
/// How long one wait for watch events lasts (the stop flag is looked at in between).
const WATCH_WAIT: Duration = Duration::from_millis(100);
/// The pause before the first reconnect attempt, doubled per failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the control plane asks of the data path.
pub(crate) enum DataCmd {
    Prepare(VifId, DeviceConfig, Sender<Result<(), String>>),
    Connect(VifId, FrontendKeys, Sender<Result<(), FrontendError>>),
    Disconnect(VifId, Sender<()>),
    Release(VifId, Sender<()>),
    SetRate(VifId, Option<Rate>),
    SetXdpHeadroom(VifId, u16, Sender<()>),
    SetMulticastControl(VifId, bool),
}

impl DataCmd {
    /// Carries the command out on the data path and answers it.
    pub(crate) fn execute(self, dp: &mut impl VifControl) {
        // A control plane that stopped waiting drops its receiver: the answer is lost, not an
        // error here.
        match self {
            DataCmd::Prepare(id, cfg, reply) => {
                let _ = reply.send(dp.prepare(id, &cfg));
            }
            DataCmd::Connect(id, keys, reply) => {
                let _ = reply.send(dp.connect(id, keys));
            }
            DataCmd::Disconnect(id, reply) => {
                dp.disconnect(id);
                let _ = reply.send(());
            }
            DataCmd::Release(id, reply) => {
                dp.release(id);
                let _ = reply.send(());
            }
            DataCmd::SetRate(id, rate) => dp.set_rate(id, rate),
            DataCmd::SetXdpHeadroom(id, h, reply) => {
                dp.set_xdp_headroom(id, h);
                let _ = reply.send(());
            }
            DataCmd::SetMulticastControl(id, on) => dp.set_multicast_control(id, on),
        }
    }
}

/// The control plane's side of the data path: [`VifControl`] as commands it waits on.
struct DataLink {
    cmds: Sender<DataCmd>,
    /// Written after each command, so a data path blocked in its wait takes it at once.
    wake: Arc<OwnedFd>,
}

impl DataLink {
    fn send(&self, cmd: DataCmd) {
        if self.cmds.send(cmd).is_ok() {
            let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
        }
    }

    /// Sends a command and waits for its answer; `None` if the data path did not answer.
    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> DataCmd) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        self.send(make(tx));
        match rx.recv_timeout(DATA_ANSWER) {
            Ok(v) => Some(v),
            Err(RecvTimeoutError::Timeout) => {
                log::error!(
                    "the data path did not answer the control plane within {DATA_ANSWER:?}: it is \
                     wedged; restart netbackd (systemd's watchdog does)"
                );
                None
            }
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }
}

impl VifControl for DataLink {
    fn prepare(&mut self, id: VifId, cfg: &DeviceConfig) -> Result<(), String> {
        let cfg = cfg.clone();
        self.ask(|r| DataCmd::Prepare(id, cfg, r))
            .unwrap_or_else(|| Err("the data path did not answer; see the log".into()))
    }

    fn connect(&mut self, id: VifId, keys: FrontendKeys) -> Result<(), FrontendError> {
        self.ask(|r| DataCmd::Connect(id, keys, r))
            .unwrap_or(Err(FrontendError::NoSwitchPort {
                hint: "the data path did not answer the control plane; see the log",
            }))
    }

    fn disconnect(&mut self, id: VifId) {
        self.ask(|r| DataCmd::Disconnect(id, r));
    }

    fn release(&mut self, id: VifId) {
        self.ask(|r| DataCmd::Release(id, r));
    }

    fn set_rate(&mut self, id: VifId, rate: Option<Rate>) {
        self.send(DataCmd::SetRate(id, rate));
    }

    fn set_xdp_headroom(&mut self, id: VifId, headroom: u16) {
        // Waited for: the control plane writes Connected back once the headroom applies, and
        // the frontend may post buffers laid out for it right after.
        self.ask(|r| DataCmd::SetXdpHeadroom(id, headroom, r));
    }

    fn set_multicast_control(&mut self, id: VifId, on: bool) {
        self.send(DataCmd::SetMulticastControl(id, on));
    }
}

/// What the data path's owner asks of the control plane.
enum CtlCmd {
    /// Close every device and release it (`--close-on-exit`); answered when done.
    CloseAll(Sender<()>),
    /// Close one device (the operator's `ctl close`); answered with whether it was tracked.
    Close(VifId, Sender<bool>),
    AllowFlip(bool),
    /// Run this on the control thread and answer with its result.
    Run(ThreadJob, Sender<Result<(), String>>),
}

/// Work the backend's owner runs on each thread the backend made (e.g. confining it: Linux
/// keeps credentials and capabilities per thread).
pub type ThreadJob = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The data path's handle on the control thread.
pub(crate) struct ControlThread {
    /// Commands for the data path, executed between passes.
    pub(crate) cmds: Receiver<DataCmd>,
    /// Readable while commands may wait (drained by [`ControlThread::drain_wake`]).
    wake: Arc<OwnedFd>,
    ctl: Sender<CtlCmd>,
    stop: Arc<AtomicBool>,
    /// Each tracked device's state as the control plane last wrote it, published after every
    /// event it handled (operators' tools read it; the data path never waits on it).
    states: Arc<Mutex<HashMap<VifId, XenbusState>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlThread")
            .field("devices", &self.devices())
            .finish()
    }
}

impl ControlThread {
    /// Starts the control plane of `dom0`'s backend on its own thread, with `xenbus` made by
    /// `make` over the connection it is given.
    pub(crate) fn spawn<D: BackendDomain>(
        dom0: D,
        xs_timeout: Duration,
        make: impl FnOnce(D::Store) -> Result<Xenbus<D::Store>, Error> + Send + 'static,
    ) -> Result<ControlThread, Error> {
        let wake = Arc::new(
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(|e| {
                Error::Hypervisor(hypervisor::Error::Os {
                    op: "eventfd for the control plane",
                    errno: e.raw_os_error(),
                    hint: "the process is out of file descriptors: raise its limit (ulimit -n)",
                })
            })?,
        );
        let (cmd_tx, cmds) = mpsc::channel();
        let (ctl, ctl_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let states = Arc::new(Mutex::new(HashMap::new()));
        // The first connection is made here, so a backend that cannot reach xenstore at all
        // fails to start with the reason.
        let xs = dom0.xenstore()?;
        xs.set_request_timeout(Some(xs_timeout));
        let xenbus = make(xs)?;
        let link = DataLink {
            cmds: cmd_tx,
            wake: wake.clone(),
        };
        let (stop2, states2) = (stop.clone(), states.clone());
        let thread = std::thread::Builder::new()
            .name("netback-control".into())
            .spawn(move || run(dom0, xs_timeout, xenbus, link, ctl_rx, &stop2, &states2))
            .map_err(|e| {
                Error::Hypervisor(hypervisor::Error::Os {
                    op: "spawning the control plane's thread",
                    errno: e.raw_os_error().unwrap_or(0),
                    hint: "the process is out of threads or memory: check its limits",
                })
            })?;
        Ok(ControlThread {
            cmds,
            wake,
            ctl,
            stop,
            states,
            thread: Some(thread),
        })
    }

    /// The descriptor the data path's wait polls: readable when a command may wait.
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Empties the wake descriptor (before looking at the channel, so no command is missed).
    pub(crate) fn drain_wake(&self) {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&*self.wake, &mut b);
    }

    /// Devices the control plane knows.
    pub(crate) fn devices(&self) -> usize {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Each tracked device's state, as last published.
    pub(crate) fn device_states(&self) -> HashMap<VifId, XenbusState> {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Offers page flipping to devices probed from now on, or stops offering it.
    pub(crate) fn allow_flip(&self, allow: bool) {
        let _ = self.ctl.send(CtlCmd::AllowFlip(allow));
    }

    /// Closes every device (Closing, Closed, released), carrying out the data path's part
    /// with `dp` while the control plane does its own: the caller is the data path.
    pub(crate) fn close_all(&self, dp: &mut impl VifControl) {
        let (tx, rx) = mpsc::channel();
        if self.ctl.send(CtlCmd::CloseAll(tx)).is_ok() {
            self.serve_until(&rx, dp);
        }
    }

    /// Closes device `id` as the toolstack's detach would; false if it is not tracked. The
    /// caller is the data path, whose part is carried out with `dp` meanwhile.
    pub(crate) fn close(&self, id: VifId, dp: &mut impl VifControl) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.ctl.send(CtlCmd::Close(id, tx)).is_err() {
            return false;
        }
        self.serve_until(&rx, dp).unwrap_or(false)
    }

    /// Runs `job` on the control thread, the caller (the data path) serving its commands
    /// meanwhile.
    pub(crate) fn run_job(&self, job: ThreadJob, dp: &mut impl VifControl) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        if self.ctl.send(CtlCmd::Run(job, tx)).is_err() {
            return Err("the control plane's thread is gone".into());
        }
        self.serve_until(&rx, dp)
            .unwrap_or_else(|| Err("the control plane's thread is gone".into()))
    }

    /// Executes the control plane's commands with `dp` until `answer` comes (or the control
    /// plane is gone): the control plane may need the data path to finish what it was asked.
    fn serve_until<T>(&self, answer: &Receiver<T>, dp: &mut impl VifControl) -> Option<T> {
        let got = loop {
            match answer.recv_timeout(Duration::from_millis(5)) {
                Ok(v) => break Some(v),
                Err(RecvTimeoutError::Disconnected) => break None,
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.drain_wake();
            while let Ok(cmd) = self.cmds.try_recv() {
                cmd.execute(dp);
            }
        };
        // The last commands sent before the answer.
        while let Ok(cmd) = self.cmds.try_recv() {
            cmd.execute(dp);
        }
        got
    }
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        // Release: the control thread's Acquire load sees everything before the stop.
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            // The thread may be waiting for the data path (this thread) to answer: it gives up
            // after DATA_ANSWER at worst; the channels it waits on close with this object.
            let _ = t.join();
        }
    }
}

/// The control thread: watch events handled as they come; a broken connection replaced.
fn run<D: BackendDomain>(
    dom0: D,
    xs_timeout: Duration,
    mut xenbus: Xenbus<D::Store>,
    mut link: DataLink,
    ctl: Receiver<CtlCmd>,
    stop: &AtomicBool,
    states: &Mutex<HashMap<VifId, XenbusState>>,
) {
    let mut backoff = FIRST_BACKOFF;
    // Acquire: pairs with the Release store in `ControlThread::drop`.
    while !stop.load(Ordering::Acquire) {
        while let Ok(cmd) = ctl.try_recv() {
            match cmd {
                CtlCmd::CloseAll(done) => {
                    xenbus.close_all(&mut link);
                    let _ = done.send(());
                }
                CtlCmd::Close(id, done) => {
                    let _ = done.send(xenbus.close(id, &mut link));
                }
                CtlCmd::AllowFlip(a) => xenbus.set_allow_flip(a),
                CtlCmd::Run(job, done) => {
                    let _ = done.send(job());
                }
            }
        }
        let polled = match xenbus.wait_event(Some(WATCH_WAIT)) {
            // An event came: handle it and whatever else waits.
            Ok(Some(ev)) => xenbus
                .handle(ev, &mut link)
                .and_then(|()| xenbus.poll(&mut link)),
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        *states.lock().unwrap_or_else(PoisonError::into_inner) = xenbus.device_states();
        if polled.is_ok() && xenbus.broken().is_none() {
            backoff = FIRST_BACKOFF;
            continue;
        }
        let why = xenbus
            .broken()
            .map(Error::Hypervisor)
            .or(polled.err())
            .map_or_else(String::new, |e| e.to_string());
        log::warn!("xenstore: {why}; connecting again in {backoff:?} (packets keep flowing)");
        // Wait, then connect again until it works or the backend stops.
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        match dom0.xenstore() {
            Ok(xs) => {
                xs.set_request_timeout(Some(xs_timeout));
                if let Err(e) = xenbus.reconnect(xs, &mut link) {
                    log::warn!("xenstore: reconnecting failed: {e}");
                }
            }
            Err(e) => log::warn!("xenstore: cannot connect: {e}"),
        }
    }
}
