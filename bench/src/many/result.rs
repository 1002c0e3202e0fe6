//! `bench many`'s result: the JSON shape, each run's figures, the targets and how they are
//! checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xenoprof::DomId;

use super::Config;

/// The targets of issue 12.
pub mod targets {
    /// Jain's index over per-vif goodput, at least.
    pub const JAIN: f64 = 0.95;
    /// dom0 cycles per packet within this fraction of the one-vif run's.
    pub const CYCLES_SPREAD: f64 = 0.20;
    /// Backend memory per vif, at most (KiB).
    pub const MEMORY_PER_VIF_KIB: f64 = 600.0;
}

/// Jain's fairness index of `x`: (Σx)² / (n·Σx²). 1 when all are equal, 1/n when one takes
/// everything; 0 when there is nothing to judge (no values, or all zero).
pub fn jain(x: &[f64]) -> f64 {
    let sum: f64 = x.iter().sum();
    let squares: f64 = x.iter().map(|v| v * v).sum();
    if x.is_empty() || squares == 0.0 {
        return 0.0;
    }
    sum * sum / (x.len() as f64 * squares)
}

/// The median of `x` (the mean of the middle two for an even count; 0 when empty).
pub fn median(x: &[f64]) -> f64 {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// CPU use of one group of vCPU threads over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCpu {
    /// vCPU threads.
    pub vcpus: u32,
    /// CPU seconds, all of them together.
    pub cpu_seconds: f64,
    /// `cpu_seconds` per second of window (1.0 = one core busy).
    pub cores: f64,
    /// Seconds they were runnable but waiting for a CPU (schedstat): time the other threads
    /// and processes took. Xenoprof's exact mode charges such time to the class a thread was
    /// preempted in.
    pub runqueue_wait_seconds: f64,
    /// Xenoprof cycles per packet, every class and context.
    pub cycles_per_packet: f64,
}

/// Memory growth from "backend up, no guest" to "all guests streaming".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Process RSS before the guests were created (KiB).
    pub rss_before_kib: u64,
    /// Process RSS while all streamed, at the end of the window (KiB).
    pub rss_streaming_kib: u64,
    /// (a) RSS growth per vif: everything, guests and the remote host's sockets included.
    pub rss_per_vif_kib: f64,
    /// Frame-pool pages netback had taken before the guests.
    pub pool_pages_before: usize,
    /// ... and while streaming (the pool keeps what it took: its high-water mark).
    pub pool_pages_streaming: usize,
    /// Guest ring pages netback maps: two per vif (tx and rx).
    pub ring_pages: usize,
    /// Growth of dom0's live heap once every guest had connected, before any stream
    /// (bytes; `null`: not counted, no counting allocator): the vifs' fixed cost.
    pub heap_connected_bytes: Option<i64>,
    /// Growth of dom0's live heap while streaming (bytes; `null`: not counted): adds what
    /// queued frames hold (each frame's handle and page list).
    pub heap_growth_bytes: Option<i64>,
    /// (b) The backend's memory per vif: pool pages + ring pages + heap growth, over the vifs.
    pub backend_per_vif_kib: f64,
}

/// The vifs' rx-queue high-water marks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queues {
    /// The highest mark of any vif, in bytes.
    pub peak_bytes_max: u64,
    /// The median vif's mark, in bytes.
    pub peak_bytes_median: f64,
    /// The highest mark of any vif, in pages.
    pub peak_pages_max: u64,
    /// The median vif's mark, in pages.
    pub peak_pages_median: f64,
    /// netback's cap on one queue (`Config::rx_queue_bytes`).
    pub cap_bytes: u64,
    /// One queue's share of the frame pool with this many vifs (pages).
    pub share_pages: u64,
    /// Every mark within the cap and the share.
    pub bounded: bool,
}

/// One vif's figures in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VifFigures {
    /// The guest's domain.
    pub domid: DomId,
    /// Its goodput in the window (Gb/s).
    pub gbps: f64,
    /// netback's counters for it over the whole run: frames delivered, dropped at its full
    /// queue, notifications sent, the queue's high-water marks.
    pub rx_packets: u64,
    /// See `rx_packets`.
    pub rx_queue_full: u64,
    /// See `rx_packets`.
    pub notifies: u64,
    /// See `rx_packets`.
    pub rx_queue_peak_bytes: u64,
    /// See `rx_packets`.
    pub rx_queue_peak_pages: u64,
}

/// Frames lost on the way, over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Drops {
    /// Dropped at a full vif rx queue (bytes cap or page share).
    pub rx_queue_full: u64,
    /// Expired in a vif rx queue.
    pub rx_expired: u64,
    /// Dropped by the uplink: no backend buffer, or the wire full towards the remote host.
    pub uplink: u64,
}

/// One run (one vif, or `n`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    /// Guests.
    pub vifs: usize,
    /// The measured window (s).
    pub seconds: f64,
    /// Each guest's goodput (Gb/s), guest 0 first.
    pub per_vif_gbps: Vec<f64>,
    /// All of them together.
    pub total_gbps: f64,
    /// Jain's index over `per_vif_gbps`.
    pub jain: f64,
    /// TCP segments the remote host sent in the window (MTU-sized frames on the wire): the
    /// unit of every "per packet" figure.
    pub packets: u64,
    /// Frames the guests' devices received in the window (a GSO super-frame counts once).
    #[serde(default)]
    pub guest_frames: u64,
    /// dom0's xenoprof cycles (every class and context) per packet.
    pub cycles_per_packet: f64,
    /// The same by class (classes with any cycles).
    pub cycles_per_packet_by_class: BTreeMap<String, f64>,
    /// dom0's CPU time (schedstat) per packet, in TSC cycles: unlike xenoprof's figure it does
    /// not count time a scope spent preempted.
    pub cpu_cycles_per_packet: f64,
    /// dom0's time waiting for a CPU per packet, in TSC cycles: most of the gap between the
    /// two figures above when the cores are oversubscribed.
    pub wait_cycles_per_packet: f64,
    /// dom0's thread.
    pub dom0: GroupCpu,
    /// The guests' threads together.
    pub guests: GroupCpu,
    /// The remote host's thread.
    pub remote: GroupCpu,
    /// Notifications netback sent per packet delivered.
    pub notifies_per_packet: f64,
    /// Grant copies per grant-copy hypercall (the batch's fill, whole run).
    pub grant_ops_per_hypercall: f64,
    /// Each vif, guest 0 first.
    pub per_vif: Vec<VifFigures>,
    /// Memory growth.
    pub memory: Memory,
    /// Queue high-water marks.
    pub queues: Queues,
    /// Frames lost.
    pub drops: Drops,
    /// The cache-line round trip between two CPUs before, during and after the run (absent
    /// in results from before it was recorded): the host's vCPU placement can change between
    /// the two runs and make every cross-core cost several times dearer in one of them.
    #[serde(default)]
    pub cross_cpu: Option<crate::placement::CrossCpu>,
}

/// A target and whether the run met it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was asked.
    pub target: String,
    /// What was measured.
    pub value: f64,
    /// Whether it was met.
    pub met: bool,
}

/// The targets, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// Jain's index of the `n`-vif run.
    pub jain: Check,
    /// dom0 cycles per packet, `n` vifs over one (the ratio).
    pub cycles_per_packet: Check,
    /// dom0 CPU cycles per packet (schedstat), `n` vifs over one: the same target, as a
    /// cross-check free of preemption (xenoprof's TSC intervals include time a scope spent
    /// preempted; the scheduler's CPU time does not).
    pub cpu_cycles_per_packet: Check,
    /// Backend memory per vif (KiB).
    pub memory_per_vif: Check,
    /// Highest queue mark over the cap (a ratio; at most 1 is bounded).
    pub queues_bounded: Check,
}

/// `bench many`'s result: the JSON object. The top-level keys in [`REQUIRED_KEYS`] are the
/// contract scripts rely on; `one_vif` and `many` hold each run's details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManyResult {
    /// Guests in the scaled run.
    pub vifs: usize,
    /// Each run's measured window (s), as measured in the scaled run.
    pub seconds: f64,
    /// IP MTU.
    pub mtu: usize,
    /// Netback batch.
    pub batch: usize,
    /// Each guest's goodput in the scaled run (Gb/s).
    pub per_vif_gbps: Vec<f64>,
    /// Jain's index over `per_vif_gbps`.
    pub jain: f64,
    /// dom0 cycles per packet in the scaled run.
    pub cycles_per_packet: f64,
    /// dom0 cycles per packet in the one-vif run of the same process.
    pub cycles_per_packet_one_vif: f64,
    /// The backend's memory per vif (KiB): what the 600 KiB target is checked against.
    pub memory_per_vif_kib: f64,
    /// Process RSS growth per vif (KiB): everything, guests included.
    pub memory_per_vif_kib_rss: f64,
    /// Which figure the memory target is checked against, and why.
    pub memory_target_basis: String,
    /// The targets.
    pub checks: Checks,
    /// The one-vif run.
    pub one_vif: RunFigures,
    /// The scaled run.
    pub many: RunFigures,
}

/// What `memory_target_basis` says.
pub const MEMORY_BASIS: &str = "memory_per_vif_kib: the backend's memory per vif (frame-pool \
    pages + mapped ring pages + dom0 heap growth, over the vifs); the target is about what a \
    guest costs the backend, and the guests' own memory (their stacks' socket buffers) is not \
    the backend's cost. memory_per_vif_kib_rss is the whole process's RSS growth per vif.";

impl ManyResult {
    /// Puts the two runs together and checks the targets.
    pub fn new(cfg: &Config, one: RunFigures, many: RunFigures) -> ManyResult {
        let ratio = many.cycles_per_packet / one.cycles_per_packet.max(f64::MIN_POSITIVE);
        let cpu_ratio =
            many.cpu_cycles_per_packet / one.cpu_cycles_per_packet.max(f64::MIN_POSITIVE);
        let spread = format!(
            "{}..={} x the one-vif run",
            1.0 - targets::CYCLES_SPREAD,
            1.0 + targets::CYCLES_SPREAD
        );
        let queue_ratio = many.queues.peak_bytes_max as f64 / many.queues.cap_bytes.max(1) as f64;
        let checks = Checks {
            jain: Check {
                target: format!(">= {}", targets::JAIN),
                value: many.jain,
                met: many.jain >= targets::JAIN,
            },
            cycles_per_packet: Check {
                target: spread.clone(),
                value: ratio,
                met: (ratio - 1.0).abs() <= targets::CYCLES_SPREAD,
            },
            cpu_cycles_per_packet: Check {
                target: spread,
                value: cpu_ratio,
                met: (cpu_ratio - 1.0).abs() <= targets::CYCLES_SPREAD,
            },
            memory_per_vif: Check {
                target: format!("<= {} KiB (backend)", targets::MEMORY_PER_VIF_KIB),
                value: many.memory.backend_per_vif_kib,
                met: many.memory.backend_per_vif_kib <= targets::MEMORY_PER_VIF_KIB,
            },
            queues_bounded: Check {
                target: "every rx queue mark <= rx_queue_bytes and <= its pool share".into(),
                value: queue_ratio,
                met: many.queues.bounded,
            },
        };
        ManyResult {
            vifs: many.vifs,
            seconds: many.seconds,
            mtu: cfg.mtu,
            batch: cfg.batch,
            per_vif_gbps: many.per_vif_gbps.clone(),
            jain: many.jain,
            cycles_per_packet: many.cycles_per_packet,
            cycles_per_packet_one_vif: one.cycles_per_packet,
            memory_per_vif_kib: many.memory.backend_per_vif_kib,
            memory_per_vif_kib_rss: many.memory.rss_per_vif_kib,
            memory_target_basis: MEMORY_BASIS.into(),
            checks,
            one_vif: one,
            many,
        }
    }
}
