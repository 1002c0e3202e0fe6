//! The scale benchmark (`bench many`): many guests on one backend, each receiving a stream.
//!
//! One run builds a [`ManyMachine`] for `n` guests: one netback in dom0 serving every vif
//! through xenbus, the NIC model's wire to one remote host. The remote host is one smoltcp
//! interface with `n` TCP sockets, one stream to each guest (10.0.0.2, 10.0.0.3, ... with MACs
//! 02:00:00:00:00:02, ...); each guest is netfront + smoltcp with one receiving socket. Every
//! guest is a thread of its own (a vCPU, as real Xen schedules each guest's vCPU), as are dom0
//! and the remote host; all of them block on event channels when idle.
//!
//! [`run`] does a one-vif run, then the `n`-vif run, in the same process with the same duration,
//! and compares them: per-vif goodput and Jain's fairness index, dom0's cycles per packet
//! (xenoprof exact mode, every class and context of the driver domain, over the TCP segments
//! the remote host put on the wire, so GRO's super-frames compare across runs), memory per
//! vif, and the rx queues' high-water marks.
//!
//! Memory per vif is measured twice, from "machine and backend up, no guest yet" to "all guests
//! streaming": (a) the process's RSS growth over `n` — everything, guests' socket buffers and
//! the remote host's included — and (b) the backend's own: frame-pool pages it took, the two
//! ring pages it maps per vif, and its heap growth (when the binary counts dom0's heap with
//! [`CountingAlloc`]), over `n`. The 600 KiB target is checked against (b): it is about what a
//! guest costs the backend; what a guest spends on itself is not the backend's cost.

mod report;
mod result;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xenoprof::{Context, DomId, Mode};
use xenoprof_report::Session;

pub use self::report::{REQUIRED_KEYS, render};
pub use self::result::{
    Check, Checks, Drops, GroupCpu, MEMORY_BASIS, ManyResult, Memory, Queues, RunFigures,
    VifFigures, jain, median, targets,
};
use crate::Error;
use crate::cputime::{thread_wait_ns, vcpu_cpu_ns};
use crate::heap::CountingAlloc;
use crate::host::{
    HostSpec, PORT, REMOTE_IP, REMOTE_MAC, Role, SENDER_PORT, Shared, Stream, serve,
};
use crate::link::many::{Dom0Report, ManyConfig, ManyMachine, guest_domid};
pub use crate::link::many::{guest_ip, guest_mac};
use crate::link::splitnet::POOL_PAGES;
use crate::link::{DOM0, REMOTE_DOMID};
use crate::placement::{CrossCpu, Placement, SAMPLE_EVERY, Sampler, probe_cpus};
use crate::report::cycles_by_class;
use crate::tcp_rx::{panic_text, progress_bar, tick_until};

/// `bench many`'s settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Guests in the scaled run (1..=256).
    pub vifs: usize,
    /// IP MTU.
    pub mtu: usize,
    /// Netback's grant operations per hypercall.
    pub batch: usize,
    /// Streaming time before each run's window.
    pub warmup: Duration,
    /// Each run's measured window.
    pub measure: Duration,
    /// Receivers check every byte against the counting pattern.
    pub verify: bool,
    /// Progress bar on stderr.
    pub progress: bool,
    /// dom0's heap counter, when the binary installed it as the global allocator.
    pub heap: Option<&'static CountingAlloc>,
}

/// Guest `i`'s stream from the remote host. The guest opens it, as `iperf3 -R` does (the
/// client receives): its ARP request teaches the remote host its address. Were the remote host
/// to open all of them, smoltcp would resolve one guest per second (its neighbour cache sends
/// at most one ARP request a second, for the whole interface).
fn stream(i: usize, role: Role) -> Stream {
    Stream {
        role,
        opens: matches!(role, Role::Receiver { .. }),
        peer: REMOTE_IP,
        port: PORT + i as u16,
        local_port: SENDER_PORT,
    }
}

/// Guest `i`: one receiving stream, which it opens to the remote host's port `PORT + i`.
pub fn guest_host(i: usize, verify: bool) -> HostSpec {
    HostSpec {
        mac: guest_mac(i),
        ip: guest_ip(i),
        prefix_len: 16,
        streams: vec![stream(i, Role::Receiver { verify })],
    }
}

/// The remote host: one sending stream to each of `n` guests, listening on `PORT + i` for
/// guest `i`.
pub fn remote_host(n: usize) -> HostSpec {
    HostSpec {
        mac: REMOTE_MAC,
        ip: REMOTE_IP,
        prefix_len: 16,
        streams: (0..n).map(|i| stream(i, Role::Sender)).collect(),
    }
}

/// The `VmRSS` line of a `/proc/<pid>/status` text, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut f = line["VmRSS:".len()..].split_ascii_whitespace();
    let kib = f.next()?.parse().ok()?;
    (f.next() == Some("kB")).then_some(kib)
}

fn vm_rss_kib() -> Result<u64, Error> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(parse_vm_rss_kib)
        .ok_or_else(|| {
            Error::Config(
                "cannot read VmRSS from /proc/self/status: run where procfs is mounted".into(),
            )
        })
}

/// Runs one vif, then `cfg.vifs`, and compares them. Sets xenoprof's mode to `Exact` for the
/// runs and back to `Off`; do not run two experiments at once in one process.
pub fn run(cfg: &Config) -> Result<ManyResult, Error> {
    if cfg.measure.is_zero() {
        return Err(Error::Config(
            "the measured window must be longer than 0 s".into(),
        ));
    }
    let one = run_once(cfg, 1)?;
    let many = run_once(cfg, cfg.vifs)?;
    Ok(ManyResult::new(cfg, one, many))
}

/// How long the streams may take to start moving (grows with the guests: each connects
/// through ARP and a handshake).
fn connect_timeout(n: usize) -> Duration {
    Duration::from_secs(10) + Duration::from_millis(100) * n as u32
}

type HostThread = (String, JoinHandle<Result<(), Error>>);

/// The hosts' progress figures and threads.
struct Hosts {
    guests: Vec<Arc<Shared>>,
    remote: Arc<Shared>,
    threads: Vec<HostThread>,
}

impl Hosts {
    fn bytes(&self) -> Vec<u64> {
        // Relaxed: pairs with the hosts' stores in `host::serve`; progress figures, ordered
        // with nothing else.
        self.guests
            .iter()
            .map(|s| s.bytes.load(Ordering::Relaxed))
            .collect()
    }

    fn frames(&self) -> u64 {
        // Relaxed: as in `bytes`.
        self.guests
            .iter()
            .map(|s| s.frames.load(Ordering::Relaxed))
            .sum()
    }

    /// TCP segments the remote host has sent (MTU-sized frames on the wire, whatever GRO and
    /// GSO merge on the way): the unit of "per packet", comparable between runs whose
    /// super-frames differ in size.
    fn wire_frames(&self) -> u64 {
        // Relaxed: as in `bytes`.
        self.remote.wire_frames.load(Ordering::Relaxed)
    }

    fn failed(&self) -> Option<&str> {
        self.threads
            .iter()
            .find(|(_, h)| h.is_finished())
            .map(|(n, _)| n.as_str())
    }

    /// Stops every host and joins them; the first failure.
    fn stop_and_join(self) -> Result<(), Error> {
        for s in self.guests.iter().chain([&self.remote]) {
            // Relaxed: pairs with the load in `Shared::stopping`; the flag carries no data,
            // and the machine's shutdown wakes hosts blocked in a wait.
            s.stop.store(true, Ordering::Relaxed);
        }
        let mut first = None;
        for (name, h) in self.threads {
            let r = h.join().unwrap_or_else(|p| {
                Err(Error::Thread {
                    role: "host",
                    what: format!("{name} panicked: {}", panic_text(&p)),
                })
            });
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn spawn_hosts(
    remote_dev: crate::link::splitnet::WireEndpoint,
    guest_devs: Vec<crate::link::splitnet::GuestEndpoint>,
    verify: bool,
) -> Result<Hosts, Error> {
    let n = guest_devs.len();
    let mut hosts = Hosts {
        guests: Vec::with_capacity(n),
        remote: Arc::new(Shared::default()),
        threads: Vec::with_capacity(n + 1),
    };
    let spawn = |name: String, f: Box<dyn FnOnce() -> Result<(), Error> + Send>| {
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(f)
            .map(|h| (name, h))
            .map_err(Error::Spawn)
    };
    for (i, dev) in guest_devs.into_iter().enumerate() {
        let shared = Arc::new(Shared::default());
        hosts.guests.push(shared.clone());
        let spec = guest_host(i, verify);
        let t = spawn(
            format!("guest{}-vcpu0", guest_domid(i)),
            Box::new(move || serve(dev, guest_domid(i), &spec, shared)),
        );
        match t {
            Ok(t) => hosts.threads.push(t),
            Err(e) => {
                let _ = hosts.stop_and_join();
                return Err(e);
            }
        }
    }
    let shared = hosts.remote.clone();
    let spec = remote_host(n);
    match spawn(
        "remote-host".into(),
        Box::new(move || serve(remote_dev, REMOTE_DOMID, &spec, shared)),
    ) {
        Ok(t) => hosts.threads.push(t),
        Err(e) => {
            let _ = hosts.stop_and_join();
            return Err(e);
        }
    }
    Ok(hosts)
}

/// One run with `n` guests, from an empty machine to its teardown.
fn run_once(cfg: &Config, n: usize) -> Result<RunFigures, Error> {
    let mcfg = ManyConfig {
        vifs: n,
        mtu: cfg.mtu,
        batch: cfg.batch,
        heap: cfg.heap,
    };
    let (mut machine, remote_dev) = ManyMachine::start(mcfg)?;
    let before = (vm_rss_kib()?, machine.report()?);
    let guest_devs = machine.add_guests()?;
    let connected = machine.report()?;
    xenoprof::set_mode(Mode::Exact);
    let hosts = spawn_hosts(remote_dev, guest_devs, cfg.verify)?;
    let outcome = measure(cfg, n, &machine, &hosts, before, connected);
    // Stop everything whatever happened, then report the first failure.
    let stopped = machine.shutdown();
    let joined = hosts.stop_and_join();
    xenoprof::set_mode(Mode::Off);
    let figures = outcome?;
    joined?;
    stopped?;
    Ok(figures)
}

/// Checks the hosts and the machine are still running.
fn alive(machine: &ManyMachine, hosts: &Hosts) -> Result<(), Error> {
    if let Some(name) = hosts.failed() {
        return Err(Error::Stalled(format!("{name} stopped during the run")));
    }
    if machine.dom0_ended() {
        return Err(Error::Stalled(
            "dom0's netback stopped during the run".into(),
        ));
    }
    Ok(())
}

fn measure(
    cfg: &Config,
    n: usize,
    machine: &ManyMachine,
    hosts: &Hosts,
    (rss0, base): (u64, Dom0Report),
    connected: Dom0Report,
) -> Result<RunFigures, Error> {
    let bar = progress_bar(
        cfg.progress,
        cfg.warmup + cfg.measure,
        format!("many: {n} vif{}", if n == 1 { "" } else { "s" }),
    );
    bar.set_message("connecting");
    let start = Instant::now();
    let timeout = connect_timeout(n);
    while hosts.bytes().contains(&0) {
        alive(machine, hosts)?;
        if start.elapsed() > timeout {
            let idle: Vec<String> = hosts
                .bytes()
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == 0)
                .map(|(i, _)| guest_domid(i).to_string())
                .collect();
            return Err(Error::Stalled(format!(
                "guests {} received nothing within {timeout:?}",
                idle.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut cross_cpu = probe_cpus(&Placement::default()).map(CrossCpu::before);
    bar.set_message("warm-up");
    let check = || alive(machine, hosts);
    let total = || hosts.bytes().iter().sum::<u64>();
    const STALLED: &str = "no guest read a byte";
    tick_until(
        &bar,
        Instant::now() + cfg.warmup,
        0,
        &check,
        &total,
        STALLED,
    )?;

    let mut session = Session::builder(DOM0)
        .active(
            &(0..n)
                .map(guest_domid)
                .chain([REMOTE_DOMID])
                .collect::<Vec<_>>(),
        )
        .label(format!("many {n} vifs MTU {}", cfg.mtu))
        .build();
    let in_run = |d: DomId| d == DOM0 || d == REMOTE_DOMID || (1..=n as DomId).contains(&d);
    let cpu0 = vcpu_cpu_ns(in_run);
    let wait0 = wait_ns(&cpu0);
    let (b0, f0, w0, t0) = (
        hosts.bytes(),
        hosts.frames(),
        hosts.wire_frames(),
        Instant::now(),
    );
    session.start()?;
    let off = cfg.warmup.as_millis() as u64;
    // A short cross-CPU probe about once a second (see `placement.rs`).
    let probe = std::cell::RefCell::new(Sampler::new(cross_cpu.as_mut(), SAMPLE_EVERY));
    let progress = || {
        let b = total();
        let gbps = (b - b0.iter().sum::<u64>()) as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e9;
        bar.set_message(format!("measuring: {gbps:.2} Gb/s"));
        probe.borrow_mut().tick();
        b
    };
    tick_until(&bar, t0 + cfg.measure, off, &check, &progress, STALLED)?;
    session.stop();
    let (b1, f1, w1, seconds) = (
        hosts.bytes(),
        hosts.frames(),
        hosts.wire_frames(),
        t0.elapsed().as_secs_f64(),
    );
    let cpu1 = vcpu_cpu_ns(in_run);
    let wait1 = wait_ns(&cpu1);
    // Memory while every stream still flows.
    let rss1 = vm_rss_kib()?;
    let now = machine.report()?;
    bar.finish_and_clear();
    if let Some(c) = cross_cpu.as_mut() {
        c.finish();
    }

    // Per wire segment: a GSO super-frame carries a different number of segments in the
    // one-vif and the N-vif run, so per guest frame would compare unlike things.
    let packets = w1 - w0;
    let guest_frames = f1 - f0;
    let per_vif_gbps: Vec<f64> = b0
        .iter()
        .zip(&b1)
        .map(|(a, b)| (b - a) as f64 * 8.0 / seconds / 1e9)
        .collect();
    let profile = session.snapshot();
    let per_packet = |c: u64| c as f64 / packets.max(1) as f64;
    let dom0_classes = cycles_by_class(&profile, DOM0, &Context::ALL);
    let cycles_of = |d: DomId| -> u64 {
        cycles_by_class(&profile, d, &Context::ALL)
            .values()
            .sum::<u64>()
    };
    let group = |keep: &dyn Fn(DomId) -> bool, cycles: u64| {
        let (mut vcpus, mut ns, mut waited) = (0u32, 0u64, 0u64);
        for (tid, (d, end)) in &cpu1 {
            if keep(*d) {
                vcpus += 1;
                ns += end.saturating_sub(cpu0.get(tid).map_or(0, |(_, b)| *b));
                let w = wait1.get(tid).copied().unwrap_or(0);
                waited += w.saturating_sub(wait0.get(tid).copied().unwrap_or(w));
            }
        }
        GroupCpu {
            vcpus,
            cpu_seconds: ns as f64 / 1e9,
            cores: ns as f64 / 1e9 / seconds,
            runqueue_wait_seconds: waited as f64 / 1e9,
            cycles_per_packet: per_packet(cycles),
        }
    };
    let dom0 = group(&|d| d == DOM0, cycles_of(DOM0));
    let guests_cycles = (0..n).map(|i| cycles_of(guest_domid(i))).sum();
    let guests = group(&|d| d != DOM0 && d != REMOTE_DOMID, guests_cycles);
    let remote = group(&|d| d == REMOTE_DOMID, cycles_of(REMOTE_DOMID));
    let tsc_hz = xenoprof::tsc_hz() as f64;
    let notifies: u64 = now.netback.vifs.iter().map(|(_, v)| v.notifies).sum();
    Ok(RunFigures {
        per_vif: per_vif(&now, &per_vif_gbps),
        vifs: n,
        seconds,
        total_gbps: per_vif_gbps.iter().sum(),
        jain: jain(&per_vif_gbps),
        per_vif_gbps,
        packets,
        guest_frames,
        cycles_per_packet: per_packet(dom0_classes.values().sum()),
        cycles_per_packet_by_class: dom0_classes
            .into_iter()
            .filter(|(_, c)| *c > 0)
            .map(|(k, c)| (k, per_packet(c)))
            .collect(),
        cpu_cycles_per_packet: dom0.cpu_seconds * tsc_hz / packets.max(1) as f64,
        wait_cycles_per_packet: dom0.runqueue_wait_seconds * tsc_hz / packets.max(1) as f64,
        dom0,
        guests,
        remote,
        notifies_per_packet: notifies as f64 / packets.max(1) as f64,
        grant_ops_per_hypercall: now.netback.copy_ops as f64
            / now.netback.copy_hypercalls.max(1) as f64,
        memory: memory(n, rss0, rss1, [&base, &connected, &now]),
        queues: queues(n, &now),
        drops: drops(&now),
        cross_cpu,
    })
}

/// Run-queue wait so far of each thread in `cpu` (by tid).
fn wait_ns(cpu: &BTreeMap<u32, (DomId, u64)>) -> BTreeMap<u32, u64> {
    cpu.keys()
        .filter_map(|&tid| Some((tid, thread_wait_ns(tid)?)))
        .collect()
}

/// Each vif's figures: netback's counters beside the goodput its guest read (guest `i` is
/// domain `i + 1`).
fn per_vif(now: &Dom0Report, gbps: &[f64]) -> Vec<VifFigures> {
    now.netback
        .vifs
        .iter()
        .map(|(id, v)| VifFigures {
            domid: id.domid,
            gbps: usize::from(id.domid)
                .checked_sub(1)
                .and_then(|i| gbps.get(i))
                .copied()
                .unwrap_or(0.0),
            rx_packets: v.rx_packets,
            rx_queue_full: v.rx_queue_full,
            notifies: v.notifies,
            rx_queue_peak_bytes: v.rx_queue_peak_bytes,
            rx_queue_peak_pages: v.rx_queue_peak_pages,
        })
        .collect()
}

/// Memory figures from dom0's reports before the guests, once they connected, and streaming.
fn memory(n: usize, rss0: u64, rss1: u64, [base, connected, now]: [&Dom0Report; 3]) -> Memory {
    let growth = |r: &Dom0Report| match (base.heap_bytes, r.heap_bytes) {
        (Some(a), Some(b)) => Some(b as i64 - a as i64),
        _ => None,
    };
    let heap = growth(now);
    let (p0, p1) = (base.netback.pool_pages, now.netback.pool_pages);
    let ring_pages = 2 * n;
    let page = hypervisor::PAGE_SIZE as f64;
    let backend = (p1.saturating_sub(p0) + ring_pages) as f64 * page + heap.unwrap_or(0) as f64;
    Memory {
        rss_before_kib: rss0,
        rss_streaming_kib: rss1,
        rss_per_vif_kib: rss1.saturating_sub(rss0) as f64 / n as f64,
        pool_pages_before: p0,
        pool_pages_streaming: p1,
        ring_pages,
        heap_connected_bytes: growth(connected),
        heap_growth_bytes: heap,
        backend_per_vif_kib: backend / 1024.0 / n as f64,
    }
}

fn queues(n: usize, now: &Dom0Report) -> Queues {
    let bytes: Vec<f64> = now
        .netback
        .vifs
        .iter()
        .map(|(_, v)| v.rx_queue_peak_bytes as f64)
        .collect();
    let pages: Vec<f64> = now
        .netback
        .vifs
        .iter()
        .map(|(_, v)| v.rx_queue_peak_pages as f64)
        .collect();
    let cap_bytes = netback::Config::default().rx_queue_bytes as u64;
    // netback's share rule: the pool over (vifs + 1), at least one largest frame.
    let share_pages = (POOL_PAGES / (n + 1)).max(netback::pool::MAX_FRAME_PAGES) as u64;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max) as u64;
    let (peak_bytes_max, peak_pages_max) = (max(&bytes), max(&pages));
    Queues {
        peak_bytes_max,
        peak_bytes_median: median(&bytes),
        peak_pages_max,
        peak_pages_median: median(&pages),
        cap_bytes,
        share_pages,
        bounded: peak_bytes_max <= cap_bytes && peak_pages_max <= share_pages,
    }
}

fn drops(now: &Dom0Report) -> Drops {
    let mut d = Drops::default();
    for (_, v) in &now.netback.vifs {
        d.rx_queue_full += v.rx_queue_full;
        d.rx_expired += v.rx_expired;
    }
    for (_, _, u) in &now.netback.uplinks {
        d.uplink += u.rx_no_buffer + u.tx_dropped;
    }
    d
}

#[cfg(test)]
mod tests;
