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
//! run on the controller thread. The ratio of the two says how far the backend is from moving
//! each byte once.

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
    /// TSC cycles per KiB of the memcpy floor.
    pub memcpy_cycles_per_kib: f64,
    /// Bytes per memcpy call: the run's average delivered frame.
    pub memcpy_chunk: usize,
    /// Bytes the floor copied.
    pub memcpy_bytes: u64,
    /// `backend_cycles_per_kib / memcpy_cycles_per_kib`.
    pub ratio: f64,
}

/// A timed memcpy: `cycles` TSC ticks to copy `bytes` bytes in chunks of `chunk`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemcpyTiming {
    /// Bytes per copy call.
    pub chunk: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// TSC ticks taken.
    pub cycles: u64,
}

/// Cycles per KiB of `bytes` (0 when nothing moved).
pub fn cycles_per_kib(cycles: u64, bytes: u64) -> f64 {
    if bytes == 0 {
        return 0.0;
    }
    cycles as f64 * 1024.0 / bytes as f64
}

/// The chunk the floor copies in: the average delivered frame (`bytes / packets`), kept within
/// 64 B..=64 KiB.
pub fn chunk_for(bytes: u64, packets: u64) -> usize {
    let avg = bytes / packets.max(1);
    avg.clamp(64, 64 * 1024) as usize
}

/// Copies `total` bytes (capped at [`FLOOR_MAX_BYTES`]) in chunks of `chunk` from one
/// [`FLOOR_SPAN`] buffer into another, walking both, and returns the TSC ticks taken.
pub fn time_memcpy(total: u64, chunk: usize) -> MemcpyTiming {
    let chunk = chunk.clamp(1, FLOOR_SPAN);
    let total = total.min(FLOOR_MAX_BYTES);
    let src: Vec<u8> = (0..FLOOR_SPAN).map(|i| i as u8).collect();
    let mut dst = vec![0u8; FLOOR_SPAN];
    let per_span = FLOOR_SPAN / chunk;
    let calls = total / chunk as u64;
    let t0 = xenoprof::tsc();
    for i in 0..calls {
        let at = (i as usize % per_span) * chunk;
        dst[at..at + chunk].copy_from_slice(std::hint::black_box(&src[at..at + chunk]));
    }
    let t1 = xenoprof::tsc();
    std::hint::black_box(&dst);
    MemcpyTiming {
        chunk,
        bytes: calls * chunk as u64,
        cycles: t1.saturating_sub(t0),
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
        let memcpy_cycles_per_kib = cycles_per_kib(memcpy.cycles, memcpy.bytes);
        Floor {
            backend_cycles_per_kib,
            excluded_cycles_per_kib: excluded,
            memcpy_cycles_per_kib,
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
            cycles: 4096,
        };
        let f = Floor::new(&dom0, 1 << 20, memcpy);
        assert_eq!(f.backend_cycles_per_kib, 4096.0 / 1024.0);
        // 4096 cycles for 2048 KiB.
        assert_eq!(f.memcpy_cycles_per_kib, 2.0);
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
            cycles: 0,
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
    fn the_floor_copies_whole_chunks_and_counts_them() {
        let t = time_memcpy(10_000, 4096);
        assert_eq!(t.chunk, 4096);
        assert_eq!(t.bytes, 8192, "two whole chunks of 4096 fit in 10000 bytes");
        let t = time_memcpy(u64::MAX, 65536);
        assert_eq!(t.bytes, FLOOR_MAX_BYTES, "capped");
    }
}
