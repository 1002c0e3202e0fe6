//! The NIC driver's work per received frame, by design, in the same run.
//!
//! `cargo bench -p netback --bench nic`. Each sample: the device side puts 256 in-order TCP
//! segments (1514-byte frames of one flow) on the wire, untimed; then one driver poll is timed,
//! up to the frames it hands the switch. The designs:
//! - `copy`: the driver before the DMA model: each frame copied out of the wire's buffer into a
//!   fresh pool buffer;
//! - `dma`: the device wrote the frames into posted buffers; the driver hands them on as they
//!   are (GRO off) and reposts;
//! - `dma+gro`: the same with GRO merging into the first segment's own buffer (the design in
//!   use);
//! - `dma+gro(slice)`: GRO through `offload::gro::Gro`'s own 64 KiB buffers, each super-frame
//!   then copied into a fresh pool buffer (the second copy the in-place design avoids).
//!
//! Everything runs on one thread, so the frames are hot in cache: this is the CPU work of each
//! design, without the cross-core misses `bench tcp-rx` also pays. After criterion's groups it
//! prints the median ns per frame of 101 interleaved samples with their spread.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group};
use hypervisor::XenDomain;
use netback::pool::{BufPool, NetFrame};
use netback::{Uplink, UplinkIo};
use offload::OffloadMeta;
use offload::gro::Gro;
use xen_model::nic::wire_nic;
use xen_model::nic::{Wire, WireNic};
use xen_model::{DomainHandle, EvtchnHandle, Hypervisor};

const FRAMES: usize = 256;
const MSS: usize = 1460;

/// Segment `i` of one TCP flow over IPv4 (ids incrementing, DF, checksums filled).
fn seg(i: u32) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + MSS];
    f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 20 + MSS) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&(i * MSS as u32).to_be_bytes());
    tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;
    tcp[14..16].copy_from_slice(&512u16.to_be_bytes());
    for (j, b) in f[54..].iter_mut().enumerate() {
        *b = (j as u32).wrapping_add(i) as u8;
    }
    offload::csum::fill_ipv4_header(&mut f, 14, 20);
    offload::csum::fill(&mut f).expect("a TCP frame");
    f
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Design {
    Copy,
    Dma,
    DmaGro,
    DmaGroSlice,
}

const DESIGNS: [Design; 4] = [
    Design::Copy,
    Design::Dma,
    Design::DmaGro,
    Design::DmaGroSlice,
];

struct Rig {
    _xen: Hypervisor,
    evtchn: EvtchnHandle,
    pool: BufPool<DomainHandle>,
    nic: WireNic<DomainHandle>,
    wire: Wire<DomainHandle>,
    frames: Vec<Vec<u8>>,
    /// The wire's buffers for `copy`.
    vecs: Vec<Vec<u8>>,
    slice: Gro,
    out: Vec<NetFrame<DomainHandle>>,
}

impl Rig {
    fn new(design: Design) -> Rig {
        let xen = Hypervisor::new(16 * 1024).expect("machine");
        let dom0 = xen.create_domain(8 * 1024).expect("dom0");
        let remote = xen.create_domain(16).expect("remote");
        let evtchn = XenDomain::open_evtchn(&dom0).expect("evtchn");
        let pool = BufPool::new(dom0, 4096);
        let (mut nic, wire) = wire_nic(&pool, &evtchn, &remote, 1514).expect("nic");
        nic.set_gro(design == Design::DmaGro);
        Rig {
            _xen: xen,
            evtchn,
            pool,
            nic,
            wire,
            frames: (0..FRAMES as u32).map(seg).collect(),
            vecs: (0..FRAMES).map(|_| Vec::with_capacity(1514)).collect(),
            slice: Gro::new(),
            out: Vec::new(),
        }
    }

    /// The device's side of one sample (untimed).
    fn device(&mut self, design: Design) {
        for (i, f) in self.frames.iter().enumerate() {
            if design == Design::Copy {
                self.vecs[i].clear();
                self.vecs[i].extend_from_slice(f);
            } else {
                let sent = self.wire.send(f.len(), |b| b.copy_from_slice(f));
                assert!(sent.is_some(), "the ring holds a poll's frames");
            }
        }
    }

    /// The driver's side of one sample (timed): frames into `out`.
    fn driver(&mut self, design: Design) {
        let pool = &self.pool;
        let out = &mut self.out;
        match design {
            Design::Copy => {
                for v in &self.vecs {
                    let mut b = pool.alloc(v.len()).expect("pool");
                    b.fill(v).expect("fill");
                    out.push(NetFrame::new(b));
                }
            }
            Design::Dma | Design::DmaGro => {
                let io = UplinkIo {
                    pool,
                    evtchn: &self.evtchn,
                };
                self.nic.receive(&io, out, usize::MAX / 2);
            }
            Design::DmaGroSlice => {
                let io = UplinkIo {
                    pool,
                    evtchn: &self.evtchn,
                };
                let mut frames = Vec::new();
                self.nic.receive(&io, &mut frames, usize::MAX / 2);
                let mut emit = |f: &[u8], m: &OffloadMeta| {
                    let mut b = pool.alloc(f.len()).expect("pool");
                    b.fill(f).expect("fill");
                    b.set_meta(*m);
                    out.push(NetFrame::new(b));
                };
                for f in &frames {
                    let (pfn, len, meta) = (f.0.pages()[0].pfn, f.len(), f.meta());
                    pool.dom()
                        .with_page(pfn, |p| self.slice.receive(&p[..len], &meta, &mut emit))
                        .expect("page");
                }
                self.slice.flush(&mut emit);
            }
        }
    }

    /// One sample: ns per frame of the driver's poll.
    fn sample(&mut self, design: Design) -> f64 {
        self.device(design);
        let t = Instant::now();
        self.driver(design);
        let ns = t.elapsed().as_nanos() as f64 / FRAMES as f64;
        let want = if matches!(design, Design::Copy | Design::Dma) {
            FRAMES
        } else {
            FRAMES.div_ceil(44)
        };
        assert_eq!(self.out.len(), want, "{design:?}");
        black_box(&self.out);
        self.out.clear();
        ns
    }
}

fn groups(c: &mut Criterion) {
    let mut g = c.benchmark_group("nic/256x1514");
    for d in DESIGNS {
        let mut rig = Rig::new(d);
        g.bench_function(format!("{d:?}"), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    rig.device(d);
                    let t = Instant::now();
                    rig.driver(d);
                    total += t.elapsed();
                    rig.out.clear();
                }
                total
            })
        });
    }
    g.finish();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summary() {
    println!(
        "\nNIC driver, ns per frame (median of 101 interleaved polls of 256 frames, min..max)"
    );
    let mut rigs: Vec<Rig> = DESIGNS.iter().map(|d| Rig::new(*d)).collect();
    let mut samples = vec![Vec::new(); DESIGNS.len()];
    for round in 0..111 {
        for (i, d) in DESIGNS.iter().enumerate() {
            let ns = rigs[i].sample(*d);
            // The first rounds warm the pools and caches.
            if round >= 10 {
                samples[i].push(ns);
            }
        }
    }
    let base = median(&mut samples[0].clone());
    for (d, s) in DESIGNS.iter().zip(&mut samples) {
        let m = median(s);
        println!(
            "  {:<16} {m:7.1} ({:.1}..{:.1})  {:.2}x copy",
            format!("{d:?}"),
            s[0],
            s[s.len() - 1],
            m / base
        );
    }
}

criterion_group!(benches, groups);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
