//! The backend's cost per byte against the physical floor, both measured in the same run.
//!
//! The backend's figure: dom0 kernel + xen cycles (xenoprof exact mode) of the classes that
//! deliver bytes into the guest -- netback, bridge-lite, the grant copies and the hypervisor
//! work they call on ([`BACKEND_CLASSES`]) -- per KiB the guest read. The simulated NIC's own
//! classes (`nic`, its `gro`, the wire's `dma`), the sender's `tcp` and unclaimed `other` time
//! are left out and reported beside it.
//!
//! The floor: TSC cycles of one `memcpy` of the same number of bytes in chunks of the run's
//! average delivered frame, between buffers larger than a core's caches hold (so each chunk
//! comes from and goes to memory the way a guest's fresh buffers do), timed right after the
//! run on the controller thread in blocks of about 1 MiB; the median block is the figure (a
//! preempted block counts time it did not run). The ratio of the two says how far the backend
//! is from moving each byte once. The backend's exact counters are TSC spans too: on a busy
//! machine a preemption inside a scope inflates them, so compare runs whose probe held.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The dom0 classes whose cycles count as the backend's delivery work.
pub const BACKEND_CLASSES: &[&str] = &[
    "netback",
    "bridge",
    "grant_table",
    "copy",
    "mm",
    "page_alloc",
    "event_channel",
    "find_domain",
    "ring",
];

/// The ratio the issue asks the backend to stay within.
pub const GOAL_RATIO: f64 = 1.5;

/// Bytes the memcpy floor copies at most (enough for a steady figure, well under a second).
pub const FLOOR_MAX_BYTES: u64 = 256 << 20;
/// Each side's buffer span for the floor copy: past a core's L2, as fresh guest buffers are.
pub const FLOOR_SPAN: usize = 8 << 20;

/// The backend's cost per KiB delivered and the floor, from one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Floor {
    /// dom0 + xen cycles of [`BACKEND_CLASSES`] per KiB the guest read.
    pub backend_cycles_per_kib: f64,
    /// dom0 + xen cycles of the other classes per KiB (the NIC, unclaimed time): not counted.
    pub excluded_cycles_per_kib: BTreeMap<String, f64>,
    /// TSC cycles per KiB of the memcpy floor (the median block).
    pub memcpy_cycles_per_kib: f64,
    /// The fastest block's cycles per KiB.
    #[serde(default)]
    pub memcpy_min_cycles_per_kib: f64,
    /// Bytes per memcpy call: the run's average delivered frame.
    pub memcpy_chunk: usize,
    /// Bytes the floor copied.
    pub memcpy_bytes: u64,
    /// `backend_cycles_per_kib / memcpy_cycles_per_kib`.
    pub ratio: f64,
}

/// A timed memcpy: `bytes` bytes copied in chunks of `chunk`, timed per block of about 1 MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemcpyTiming {
    /// Bytes per copy call.
    pub chunk: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Blocks timed.
    pub blocks: usize,
    /// The median block's TSC cycles per KiB: the floor. A block the scheduler preempted
    /// counts the time it did not run; the median leaves those out on a busy machine, as the
    /// cross-CPU probe takes its fastest batch.
    pub median_cycles_per_kib: f64,
    /// The fastest block's cycles per KiB.
    pub min_cycles_per_kib: f64,
}

/// Bytes per timed block of the floor copy (rounded down to whole chunks, at least one).
pub const FLOOR_BLOCK: usize = 1 << 20;

/// Cycles per KiB of `bytes` (0 when nothing moved).
pub fn cycles_per_kib(cycles: u64, bytes: u64) -> f64 {
    if bytes == 0 {
        return 0.0;
    }
    cycles as f64 * 1024.0 / bytes as f64
}

/// The median of `v` (the mean of the middle two for an even count; 0 for none). Sorts `v`.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The chunk the floor copies in: the average delivered frame (`bytes / packets`), kept within
/// 64 B..=64 KiB.
pub fn chunk_for(bytes: u64, packets: u64) -> usize {
    let avg = bytes / packets.max(1);
    avg.clamp(64, 64 * 1024) as usize
}

/// Copies `total` bytes (capped at [`FLOOR_MAX_BYTES`]) in chunks of `chunk` from one
/// [`FLOOR_SPAN`] buffer into another, walking both, timing each block of about
/// [`FLOOR_BLOCK`] bytes with the TSC.
pub fn time_memcpy(total: u64, chunk: usize) -> MemcpyTiming {
    let chunk = chunk.clamp(1, FLOOR_SPAN);
    let total = total.min(FLOOR_MAX_BYTES);
    let src: Vec<u8> = (0..FLOOR_SPAN).map(|i| i as u8).collect();
    let mut dst = vec![0u8; FLOOR_SPAN];
    let per_span = FLOOR_SPAN / chunk;
    let per_block = (FLOOR_BLOCK / chunk).max(1) as u64;
    let calls = total / chunk as u64;
    let mut rates = Vec::with_capacity((calls / per_block + 1) as usize);
    let mut i = 0u64;
    while i < calls {
        let n = per_block.min(calls - i);
        let t0 = xenoprof::tsc();
        for k in i..i + n {
            let at = (k as usize % per_span) * chunk;
            dst[at..at + chunk].copy_from_slice(std::hint::black_box(&src[at..at + chunk]));
        }
        let t1 = xenoprof::tsc();
        rates.push(cycles_per_kib(t1.saturating_sub(t0), n * chunk as u64));
        i += n;
    }
    std::hint::black_box(&dst);
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    MemcpyTiming {
        chunk,
        bytes: calls * chunk as u64,
        blocks: rates.len(),
        median_cycles_per_kib: median(&mut rates),
        min_cycles_per_kib: if min.is_finite() { min } else { 0.0 },
    }
}

impl Floor {
    /// The figures of a run that delivered `bytes` with these dom0 + xen cycles by class, and
    /// the floor measured for it.
    pub fn new(dom0_cycles: &BTreeMap<String, u64>, bytes: u64, memcpy: MemcpyTiming) -> Floor {
        let backend: u64 = dom0_cycles
            .iter()
            .filter(|(c, _)| BACKEND_CLASSES.contains(&c.as_str()))
            .map(|(_, v)| v)
            .sum();
        let excluded = dom0_cycles
            .iter()
            .filter(|(c, v)| !BACKEND_CLASSES.contains(&c.as_str()) && **v > 0)
            .map(|(c, v)| (c.clone(), cycles_per_kib(*v, bytes)))
            .collect();
        let backend_cycles_per_kib = cycles_per_kib(backend, bytes);
        let memcpy_cycles_per_kib = memcpy.median_cycles_per_kib;
        Floor {
            backend_cycles_per_kib,
            excluded_cycles_per_kib: excluded,
            memcpy_cycles_per_kib,
            memcpy_min_cycles_per_kib: memcpy.min_cycles_per_kib,
            memcpy_chunk: memcpy.chunk,
            memcpy_bytes: memcpy.bytes,
            ratio: if memcpy_cycles_per_kib > 0.0 {
                backend_cycles_per_kib / memcpy_cycles_per_kib
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
        v.iter().map(|(c, n)| (c.to_string(), *n)).collect()
    }

    #[test]
    fn only_backend_classes_count_and_the_ratio_divides_per_kib_figures() {
        // 1 MiB delivered; backend classes 3000 + 1000 + 96 cycles, the NIC's 5000 left out.
        let dom0 = classes(&[
            ("netback", 3000),
            ("copy", 1000),
            ("event_channel", 96),
            ("nic", 5000),
            ("gro", 0),
            ("tcp", 7),
        ]);
        let memcpy = MemcpyTiming {
            chunk: 4096,
            bytes: 2 << 20,
            blocks: 2,
            median_cycles_per_kib: 2.0,
            min_cycles_per_kib: 1.5,
        };
        let f = Floor::new(&dom0, 1 << 20, memcpy);
        assert_eq!(f.backend_cycles_per_kib, 4096.0 / 1024.0);
        assert_eq!(
            f.memcpy_cycles_per_kib, 2.0,
            "the median block is the floor"
        );
        assert_eq!(f.memcpy_min_cycles_per_kib, 1.5);
        assert_eq!(f.ratio, 2.0);
        assert_eq!(
            f.excluded_cycles_per_kib.keys().collect::<Vec<_>>(),
            ["nic", "tcp"],
            "zero classes are not listed"
        );
        assert_eq!(f.excluded_cycles_per_kib["nic"], 5000.0 / 1024.0);
    }

    #[test]
    fn nothing_moved_gives_zeros_not_nan() {
        let memcpy = MemcpyTiming {
            chunk: 64,
            bytes: 0,
            blocks: 0,
            median_cycles_per_kib: 0.0,
            min_cycles_per_kib: 0.0,
        };
        let f = Floor::new(&classes(&[("netback", 10)]), 0, memcpy);
        assert_eq!(f.backend_cycles_per_kib, 0.0);
        assert_eq!(f.ratio, 0.0);
    }

    #[test]
    fn the_chunk_is_the_average_frame_within_bounds() {
        assert_eq!(chunk_for(1448 * 10, 10), 1448);
        assert_eq!(chunk_for(10 << 20, 10), 64 * 1024);
        assert_eq!(chunk_for(100, 10), 64);
        assert_eq!(chunk_for(5000, 0), 5000);
    }

    #[test]
    fn the_floor_copies_whole_chunks_in_timed_blocks() {
        let t = time_memcpy(10_000, 4096);
        assert_eq!(t.chunk, 4096);
        assert_eq!(t.bytes, 8192, "two whole chunks of 4096 fit in 10000 bytes");
        assert_eq!(t.blocks, 1);
        let t = time_memcpy((5 << 20) + 100, 1448);
        // 724 chunks of 1448 per ~1 MiB block; 3620 whole chunks in all.
        assert_eq!(t.bytes, 3620 * 1448);
        assert_eq!(t.blocks, 5);
        assert!(t.min_cycles_per_kib <= t.median_cycles_per_kib);
        let t = time_memcpy(u64::MAX, 65536);
        assert_eq!(t.bytes, FLOOR_MAX_BYTES, "capped");
        assert_eq!(t.blocks, 256);
    }

    #[test]
    fn the_median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0]), 3.0);
        // A preempted block (900) does not move it.
        assert_eq!(median(&mut [2.0, 900.0, 1.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
