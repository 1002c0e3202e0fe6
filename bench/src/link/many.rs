//! The splitnet machine with many guests on one backend, for `bench many`.
//!
//! [`ManyMachine::start`] builds what the splitnet link builds, less the guest: the machine,
//! dom0, the remote host's pseudo-domain, and one dom0 vCPU thread running netback with the NIC
//! model's wire attached. Nothing of any guest exists yet, so memory read now is the baseline.
//! [`ManyMachine::add_guests`] then creates each guest as a toolstack would (domain, `add_vif`
//! with its own MAC) and connects its netfront through the real xenbus handshake with the
//! running backend. [`ManyMachine::report`] asks the dom0 thread for netback's counters, its
//! frame pool and its heap (with a [`CountingAlloc`]); [`ManyMachine::shutdown`] stops it.
//!
//! The dom0 thread serves every vif with the loop `Netback::run_until` runs (poll while there
//! is work, wait on the event channels when there is none), plus a look at a flag between
//! passes so a report can be taken while the guests stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use netback::{Config, Netback, NetbackSnapshot};
use netfront::Netfront;
use testkit::Machine;
use xen_model::DomainHandle;
use xen_model::nic::Wire;
use xenoprof::DomId;

use super::splitnet::{
    DOM0_PAGES, GuestEndpoint, POOL_PAGES, REMOTE_HV_DOMID, WireEndpoint, assembly, check_mtu,
    front_config, netback_config,
};
use super::{DOM0, Offload, RxMode};
use crate::Error;
use crate::heap::{self, CountingAlloc};

/// Each guest's reservation: room for netfront's 256 receive and 256 transmit pages and its
/// rings (the guests' stacks live on the heap, not in these pages).
pub const GUEST_PAGES: u64 = 1024;
/// The most guests one machine takes here: the remote host's smoltcp neighbour cache holds 256
/// entries (bench's `iface-neighbor-cache-count-256`), one per guest.
pub const MAX_GUESTS: usize = 256;
/// How long a report request may wait for the dom0 thread.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Guest `i` (0-based): its domain id (1, 2, ...), the same in the hypervisor and in xenoprof.
pub fn guest_domid(i: usize) -> DomId {
    i as DomId + 1
}

/// Guest `i`'s MAC (02:00:00:00:00:02 for the first: the `tcp-rx` guest's).
pub fn guest_mac(i: usize) -> [u8; 6] {
    let n = i + 2;
    [0x02, 0, 0, 0, (n >> 8) as u8, n as u8]
}

/// Guest `i`'s IPv4 address in 10.0.0.0/16 (10.0.0.2 for the first; the remote host is
/// 10.0.0.1).
pub fn guest_ip(i: usize) -> [u8; 4] {
    let n = i + 2;
    [10, 0, (n >> 8) as u8, n as u8]
}

/// What the machine is asked to be.
#[derive(Debug, Clone, Copy)]
pub struct ManyConfig {
    /// Guests it will hold (1..=[`MAX_GUESTS`]).
    pub vifs: usize,
    /// IP MTU.
    pub mtu: usize,
    /// Netback's grant operations per hypercall.
    pub batch: usize,
    /// The allocator counting dom0's heap, if the binary installed one.
    pub heap: Option<&'static CountingAlloc>,
}

/// What the dom0 thread reports.
#[derive(Debug, Clone)]
pub struct Dom0Report {
    /// netback's counters (vifs, frame pool pages, switch, uplinks).
    pub netback: NetbackSnapshot,
    /// Live heap bytes dom0's thread allocated, when counted (`None`: no counting allocator).
    pub heap_bytes: Option<u64>,
}

/// A request to the dom0 thread, answered between two passes.
struct Mailbox {
    want: AtomicBool,
    reply: Sender<Dom0Report>,
}

/// The machine. See the module documentation.
pub struct ManyMachine {
    machine: Machine,
    cfg: ManyConfig,
    stop: Arc<AtomicBool>,
    mailbox: Arc<Mailbox>,
    replies: Receiver<Dom0Report>,
    dom0: Option<JoinHandle<Result<(), String>>>,
    guests: usize,
}

impl std::fmt::Debug for ManyMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManyMachine")
            .field("cfg", &self.cfg)
            .field("guests", &self.guests)
            .finish()
    }
}

impl ManyMachine {
    /// Builds the machine and starts dom0's netback with the wire attached; returns it and the
    /// remote host's device.
    pub fn start(cfg: ManyConfig) -> Result<(ManyMachine, WireEndpoint), Error> {
        if !(1..=MAX_GUESTS).contains(&cfg.vifs) {
            return Err(Error::Config(format!(
                "{} vifs: use 1..={MAX_GUESTS} (one remote host serves at most {MAX_GUESTS} \
                 guests)",
                cfg.vifs
            )));
        }
        check_mtu(cfg.mtu)?;
        let guest_frames = cfg.vifs as u64 * (GUEST_PAGES + hypervisor::GNTTAB_FRAMES as u64);
        let frames = DOM0_PAGES + guest_frames + 4 * 1024;
        let machine = Machine::builder()
            .frames(frames)
            .dom0_id(DOM0)
            .dom0_pages(DOM0_PAGES)
            .build()
            .map_err(assembly)?;
        let remote = machine.remote(REMOTE_HV_DOMID).map_err(assembly)?;
        let dom0 = machine.dom0.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (reply, replies) = mpsc::channel();
        let mailbox = Arc::new(Mailbox {
            want: AtomicBool::new(false),
            reply,
        });
        let (wire_tx, wire_rx) = mpsc::channel();
        let eth_mtu = cfg.mtu + 14;
        let nb_cfg = netback_config(cfg.batch);
        let (s, m) = (stop.clone(), mailbox.clone());
        let handle = thread::Builder::new()
            .name("dom0-netback".into())
            .spawn(move || dom0_main(dom0, remote, nb_cfg, eth_mtu, cfg.heap, s, m, wire_tx))
            .map_err(Error::Spawn)?;
        let machine = ManyMachine {
            machine,
            cfg,
            stop: stop.clone(),
            mailbox,
            replies,
            dom0: Some(handle),
            guests: 0,
        };
        let wire = wire_rx
            .recv()
            .map_err(|_| Error::Config("many: dom0 exited before attaching the wire".into()))?
            .map_err(|e| Error::Config(format!("many: uplink: {e}")))?;
        Ok((machine, WireEndpoint::new(wire, eth_mtu, stop)))
    }

    /// Creates guests `0..vifs` (domains 1..=vifs), each with vif 0 of MAC [`guest_mac`], and
    /// connects their netfronts; returns their devices in order.
    pub fn add_guests(&mut self) -> Result<Vec<GuestEndpoint>, Error> {
        let mut out = Vec::with_capacity(self.cfg.vifs);
        for i in 0..self.cfg.vifs {
            let domid = guest_domid(i);
            let guest = self
                .machine
                .vif_guest(domid, GUEST_PAGES, guest_mac(i))
                .map_err(assembly)?;
            let nf = Netfront::connect(
                guest,
                0,
                front_config(RxMode::Copy, self.cfg.mtu, Offload::Gso),
            )
            .map_err(|e| Error::Config(format!("many: guest {domid}'s netfront: {e}")))?;
            out.push(GuestEndpoint::new(nf, self.stop.clone()));
            self.guests += 1;
        }
        Ok(out)
    }

    /// netback's counters, pool and heap now, taken by the dom0 thread between two passes.
    pub fn report(&self) -> Result<Dom0Report, Error> {
        // Drop any answer to an earlier request that timed out.
        while self.replies.try_recv().is_ok() {}
        // Relaxed: pairs with the swap in `dom0_main`; the flag carries no data (the reply
        // travels through the channel, which orders it).
        self.mailbox.want.store(true, Ordering::Relaxed);
        match self.replies.recv_timeout(REPORT_TIMEOUT) {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => Err(Error::Stalled(format!(
                "dom0 did not answer a report request within {REPORT_TIMEOUT:?}"
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(self.dom0_failure()),
        }
    }

    /// Whether the dom0 thread has ended (it only ends on `shutdown` or failure).
    pub fn dom0_ended(&self) -> bool {
        self.dom0.as_ref().is_none_or(|h| h.is_finished())
    }

    fn dom0_failure(&self) -> Error {
        Error::Thread {
            role: "dom0 netback",
            what: "it stopped during the run".into(),
        }
    }

    /// Stops everything the machine runs: every endpoint's `wait` returns `false` from now on
    /// and the dom0 thread is joined. Safe to call twice.
    pub fn shutdown(&mut self) -> Result<(), Error> {
        // Relaxed: pairs with the loads in `dom0_main` and the endpoints' waits; the flag
        // carries no data, and the join orders the rest.
        self.stop.store(true, Ordering::Relaxed);
        match self.dom0.take() {
            Some(h) => h
                .join()
                .map_err(|_| Error::Config("many: the dom0 thread panicked".into()))?
                .map_err(|e| Error::Config(format!("many: netback: {e}"))),
            None => Ok(()),
        }
    }
}

impl Drop for ManyMachine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The dom0 vCPU: netback serving every vif, counted by the heap allocator.
#[allow(clippy::too_many_arguments)]
fn dom0_main(
    dom0: DomainHandle,
    remote: DomainHandle,
    cfg: Config,
    eth_mtu: usize,
    heap: Option<&'static CountingAlloc>,
    stop: Arc<AtomicBool>,
    mailbox: Arc<Mailbox>,
    wire_tx: Sender<Result<Wire<DomainHandle>, String>>,
) -> Result<(), String> {
    xenoprof::register_vcpu(DOM0, xenoprof::Context::Kernel);
    let heap = heap.filter(|_| heap::count_this_thread());
    let interval = cfg.poll_interval;
    let mut nb = Netback::new(dom0, cfg, POOL_PAGES).map_err(|e| e.to_string())?;
    let wire = xen_model::nic::attach(&mut nb, &remote, eth_mtu).map(|(_, w)| w);
    let ok = wire.is_ok();
    let _ = wire_tx.send(wire.map_err(|e| e.to_string()));
    if !ok {
        return Err("the wire could not be attached".into());
    }
    // Relaxed: pairs with the store in `ManyMachine::shutdown`; the join orders what matters.
    while !stop.load(Ordering::Relaxed) {
        // Relaxed: pairs with the store in `ManyMachine::report`; the reply goes by channel.
        if mailbox.want.swap(false, Ordering::Relaxed) {
            // Read before the snapshot allocates its copy.
            let heap_bytes = heap.map(CountingAlloc::live_bytes);
            let _ = mailbox.reply.send(Dom0Report {
                netback: nb.snapshot(),
                heap_bytes,
            });
        }
        if !nb.poll().map_err(|e| e.to_string())? {
            nb.wait(interval).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
