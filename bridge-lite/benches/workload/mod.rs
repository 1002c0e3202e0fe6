//! The forwarding workload shared by `benches/forward.rs` and `examples/forward_rate.rs`, and
//! the in-run baseline: a naive learning switch over `std::collections::HashMap`.
//!
//! Topology: an uplink and 8 vif ports. `macs` guest stations sit behind the vifs (station k on
//! vif k % 8) and `macs` remote stations behind the uplink; both sets are learned before
//! measuring, so the table holds `2 * macs` entries. The measured traffic is uplink -> guests:
//! frame i comes from remote station i % macs and goes to guest station (i * 7919) % macs, so
//! consecutive frames hit scattered table buckets. Every frame is known unicast (the common
//! case in a steady state); each forwarded frame learns its source and looks up its destination.
//!
//! Frame sizes are wire sizes: "64" is a 60-byte buffer (plus the 4-byte FCS the wire adds),
//! "1514" a 1514-byte buffer. Only the 14-byte header is read either way; the larger pool just
//! spreads those headers over more memory.
//!
//! [`build_guest_tx`] measures the other direction, one guest's transmit through its locked
//! vif port (MAC-locked, as netback locks every vif with a configured MAC, and optionally
//! IP-locked) to `macs` remote stations behind the uplink: the cost of the IP lock's check.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use bridge_lite::testkit::udp_frame;
use bridge_lite::{Bridge, BridgeConfig, Forwarder, MacAddr, Output, PortId, PortKind};

/// Vif ports behind which the guest stations sit.
pub const VIFS: usize = 8;
/// Distinct frames cycled through (independent of `macs`, so every case touches as many
/// frame headers).
pub const POOL: usize = 2048;

fn guest(k: usize) -> MacAddr {
    MacAddr::local(k as u32 + 1)
}
fn remote(k: usize) -> MacAddr {
    MacAddr::local(0x0100_0000 + k as u32)
}

/// A ready-to-measure setup.
pub struct Workload {
    pub bridge: Bridge,
    pub uplink: PortId,
    /// The port the measured frames come in on (the uplink, or the guest's vif).
    pub ingress: PortId,
    pub pool: &'static [Vec<u8>],
    pub batch: usize,
    pub now: Duration,
    next: usize,
    handles: Vec<&'static [u8]>,
}

/// Wire size to buffer length.
pub fn buffer_len(wire_len: usize) -> usize {
    if wire_len <= 64 {
        wire_len - 4
    } else {
        wire_len
    }
}

/// Builds the bridge, learns every station, and makes the frame pool.
pub fn build(wire_len: usize, macs: usize, batch: usize) -> Workload {
    let mut bridge = Bridge::new(BridgeConfig {
        hash_seed: Some(0xb1d9e),
        ..BridgeConfig::default()
    })
    .expect("default config is valid");
    let uplink = bridge.add_port(PortKind::Uplink).expect("port");
    let vifs: Vec<PortId> = (0..VIFS)
        .map(|d| {
            bridge
                .add_port(PortKind::Vif {
                    domid: d as u16 + 1,
                    handle: 0,
                })
                .expect("port")
        })
        .collect();
    let now = Duration::from_secs(1);
    for k in 0..macs {
        let mut out = Output::new();
        let f = udp_frame(guest(k), MacAddr::BROADCAST, 60, 0);
        bridge
            .forward(vifs[k % VIFS], &mut vec![f.as_slice()], now, &mut out)
            .expect("learn");
        let f = udp_frame(remote(k), MacAddr::BROADCAST, 60, 0);
        bridge
            .forward(uplink, &mut vec![f.as_slice()], now, &mut out)
            .expect("learn");
    }
    assert_eq!(
        bridge.fdb_stats().occupied,
        2 * macs,
        "every station learned"
    );
    let pool = make_pool(wire_len, macs);
    bridge.reset_stats();
    Workload {
        bridge,
        uplink,
        ingress: uplink,
        pool,
        batch,
        now,
        next: 0,
        handles: Vec::new(),
    }
}

/// The guest's addresses: `udp_frame` sends from 192.0.2.1, `udp6_frame` from 2001:db8::1.
const GUEST_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// Which lock the guest's port has in [`build_guest_tx`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestTx {
    /// MAC lock only; IPv4 frames.
    MacLock,
    /// MAC and IP lock; IPv4 frames from the guest's address.
    IpLockV4,
    /// MAC and IP lock; IPv6 frames from the guest's address.
    IpLockV6,
}

/// An Ethernet II / IPv6 / UDP frame from 2001:db8::1, `len` bytes (at least 62).
pub fn udp6_frame(src: MacAddr, dst: MacAddr, len: usize, seq: u32) -> Vec<u8> {
    let payload: Vec<u8> = seq
        .to_be_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len.max(62) - 62)
        .collect();
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(src.0, dst.0)
        .ipv6(
            GUEST_V6.octets(),
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .udp(9, 9)
        .write(&mut out, &payload)
        .expect("building a test frame into a Vec");
    out
}

/// One guest on vif 1 sending to `macs` remote stations behind the uplink (all learned), its
/// port locked as `lock` says.
pub fn build_guest_tx(wire_len: usize, macs: usize, batch: usize, lock: GuestTx) -> Workload {
    let mut w = build(wire_len, macs, batch);
    let vif = w.bridge.ports().nth(1).expect("vif 1");
    let me = guest(0);
    w.bridge.add_static(me, vif).expect("static entry");
    w.bridge.set_port_locked(vif, true).expect("lock");
    if lock != GuestTx::MacLock {
        let ips = [IpAddr::V4(GUEST_V4), IpAddr::V6(GUEST_V6)];
        w.bridge.set_port_ips(vif, &ips).expect("ip lock");
    }
    let len = buffer_len(wire_len);
    let pool: Vec<Vec<u8>> = (0..POOL)
        .map(|i| {
            let to = remote((i * 7919) % macs);
            match lock {
                GuestTx::IpLockV6 => udp6_frame(me, to, len, i as u32),
                _ => udp_frame(me, to, len, i as u32),
            }
        })
        .collect();
    w.pool = Box::leak(pool.into_boxed_slice());
    w.ingress = vif;
    w
}

impl Workload {
    /// Forwards one batch from the uplink and drains the output queues (as netback would hand
    /// them to the vifs' rx paths). Returns the number of frames queued.
    #[inline]
    pub fn step(&mut self, out: &mut Output<&'static [u8]>) -> usize {
        let mut batch = std::mem::take(&mut self.handles);
        for _ in 0..self.batch {
            batch.push(self.pool[self.next].as_slice());
            self.next = (self.next + 1) % POOL;
        }
        self.now += Duration::from_micros(1);
        self.bridge
            .forward(self.ingress, &mut batch, self.now, out)
            .expect("forward");
        let n = out.len();
        out.clear();
        self.handles = batch;
        n
    }
}

/// One forwarding thread's share of a bridge: its own [`Forwarder`], ingress port and frames.
pub struct Stream {
    pub fwd: Forwarder,
    pub ingress: PortId,
    pool: &'static [Vec<u8>],
    batch: usize,
    now: Duration,
    next: usize,
    handles: Vec<&'static [u8]>,
}

impl Stream {
    /// As [`Workload::step`], through this stream's forwarder.
    #[inline]
    pub fn step(&mut self, out: &mut Output<&'static [u8]>) -> usize {
        let mut batch = std::mem::take(&mut self.handles);
        for _ in 0..self.batch {
            batch.push(self.pool[self.next].as_slice());
            self.next = (self.next + 1) % POOL;
        }
        self.now += Duration::from_micros(1);
        self.fwd
            .forward(self.ingress, &mut batch, self.now, out)
            .expect("forward");
        let n = out.len();
        out.clear();
        self.handles = batch;
        n
    }
}

/// Two streams over one bridge (set up as [`build`]) for two threads, each with its own
/// ingress port: the uplink's remote stations to the guests (the `build` traffic), and vif 1's
/// guests (stations 0, 8, 16, ...) to the remote stations. Every frame is known unicast.
pub fn build_two_streams(wire_len: usize, macs: usize, batch: usize) -> (Workload, Stream, Stream) {
    let w = build(wire_len, macs, batch);
    let vif1 = w.bridge.ports().nth(1).expect("vif 1");
    let len = buffer_len(wire_len);
    let guests: Vec<usize> = (0..macs).step_by(VIFS).collect();
    let pool: Vec<Vec<u8>> = (0..POOL)
        .map(|i| {
            let from = guest(guests[i % guests.len()]);
            udp_frame(from, remote((i * 7919) % macs), len, i as u32)
        })
        .collect();
    let down = Stream {
        fwd: w.bridge.forwarder(),
        ingress: w.uplink,
        pool: w.pool,
        batch,
        now: w.now,
        next: 0,
        handles: Vec::new(),
    };
    let up = Stream {
        fwd: w.bridge.forwarder(),
        ingress: vif1,
        pool: Box::leak(pool.into_boxed_slice()),
        batch,
        now: w.now,
        next: 0,
        handles: Vec::new(),
    };
    (w, down, up)
}

/// The frame pool, leaked so handles can be `&'static [u8]` and one `Output` can be reused
/// across iterations (bench-only: a few MiB per case).
fn make_pool(wire_len: usize, macs: usize) -> &'static [Vec<u8>] {
    let len = buffer_len(wire_len);
    let pool: Vec<Vec<u8>> = (0..POOL)
        .map(|i| udp_frame(remote(i % macs), guest((i * 7919) % macs), len, i as u32))
        .collect();
    Box::leak(pool.into_boxed_slice())
}

/// The baseline: a learning switch written the obvious way (std `HashMap` keyed by the MAC
/// bytes, SipHash, same queues and the same rules for known unicast).
pub struct NaiveSwitch {
    fdb: HashMap<[u8; 6], (usize, Duration)>,
    ports: usize,
    pub queues: Vec<Vec<&'static [u8]>>,
}

impl NaiveSwitch {
    pub fn new(ports: usize) -> Self {
        Self {
            fdb: HashMap::new(),
            ports,
            queues: vec![Vec::new(); ports],
        }
    }

    pub fn forward(&mut self, ingress: usize, frames: &mut Vec<&'static [u8]>, now: Duration) {
        for f in frames.drain(..) {
            if f.len() < 14 || f[6] & 1 != 0 {
                continue;
            }
            let dst: [u8; 6] = f[0..6].try_into().expect("len checked");
            let src: [u8; 6] = f[6..12].try_into().expect("len checked");
            self.fdb.insert(src, (ingress, now));
            match self.fdb.get(&dst) {
                Some(&(p, _)) if dst[0] & 1 == 0 => {
                    if p != ingress {
                        self.queues[p].push(f);
                    }
                }
                _ => {
                    for p in (0..self.ports).filter(|&p| p != ingress) {
                        self.queues[p].push(f);
                    }
                }
            }
        }
    }
}

/// The same workload through the naive switch.
pub struct NaiveWorkload {
    pub switch: NaiveSwitch,
    pool: &'static [Vec<u8>],
    batch: usize,
    next: usize,
    now: Duration,
    handles: Vec<&'static [u8]>,
}

pub fn build_naive(wire_len: usize, macs: usize, batch: usize) -> NaiveWorkload {
    let pool = make_pool(wire_len, macs);
    let mut switch = NaiveSwitch::new(VIFS + 1);
    let now = Duration::from_secs(1);
    for k in 0..macs {
        let f: &'static [u8] =
            Box::leak(udp_frame(guest(k), MacAddr::BROADCAST, 60, 0).into_boxed_slice());
        switch.forward(1 + k % VIFS, &mut vec![f], now);
        let f: &'static [u8] =
            Box::leak(udp_frame(remote(k), MacAddr::BROADCAST, 60, 0).into_boxed_slice());
        switch.forward(0, &mut vec![f], now);
    }
    switch.queues.iter_mut().for_each(Vec::clear);
    NaiveWorkload {
        switch,
        pool,
        batch,
        next: 0,
        now,
        handles: Vec::new(),
    }
}

impl NaiveWorkload {
    #[inline]
    pub fn step(&mut self) -> usize {
        let mut batch = std::mem::take(&mut self.handles);
        for _ in 0..self.batch {
            batch.push(self.pool[self.next].as_slice());
            self.next = (self.next + 1) % POOL;
        }
        self.now += Duration::from_micros(1);
        self.switch.forward(0, &mut batch, self.now);
        let n = self.switch.queues.iter().map(Vec::len).sum();
        self.switch.queues.iter_mut().for_each(Vec::clear);
        self.handles = batch;
        n
    }
}

/// Rates of a measurement, in Mpps.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Median of the rounds.
    pub median: f64,
    /// Fastest round (least disturbed by other work on a shared machine).
    pub best: f64,
}

/// Runs `step` (which forwards `frames_per_step` frames) for about `total` split into `rounds`
/// rounds and returns the median and best round rates.
pub fn measure_mpps(
    mut step: impl FnMut() -> usize,
    frames_per_step: usize,
    total: Duration,
    rounds: usize,
) -> Rate {
    // Warm up caches and branch predictors.
    for _ in 0..10_000 {
        std::hint::black_box(step());
    }
    let per_round = total / rounds as u32;
    let mut rates: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            let mut frames = 0u64;
            let mut forwarded = 0u64;
            loop {
                for _ in 0..1024 {
                    forwarded += std::hint::black_box(step()) as u64;
                }
                frames += 1024 * frames_per_step as u64;
                if start.elapsed() >= per_round {
                    break;
                }
            }
            assert_eq!(
                forwarded, frames,
                "every frame is known unicast and forwarded once"
            );
            frames as f64 / start.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    Rate {
        median: rates[rates.len() / 2],
        best: rates[rates.len() - 1],
    }
}
