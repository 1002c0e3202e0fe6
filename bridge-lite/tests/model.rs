//! Randomised checks: the bridge against a plain reference model, and a full table under churn.

use std::collections::HashMap;
use std::time::Duration;

use bridge_lite::testkit::udp_frame;
use bridge_lite::{Bridge, BridgeConfig, DropReason, FrameRef, MacAddr, Output, PortId, PortKind};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The forwarding rules written as plainly as possible, with unbounded memory.
struct Model {
    ageing: Duration,
    fdb: HashMap<MacAddr, (PortId, Duration)>,
}

impl Model {
    /// Egress ports for one frame, or `None` when it is dropped.
    fn forward(
        &mut self,
        frame: &[u8],
        ingress: PortId,
        ports: &[(PortId, bool)],
        now: Duration,
    ) -> Vec<PortId> {
        let up = |p: PortId| ports.iter().any(|&(q, u)| q == p && u);
        if !up(ingress) || frame.len() < 14 {
            return vec![];
        }
        let dst = MacAddr(frame[0..6].try_into().unwrap());
        let src = MacAddr(frame[6..12].try_into().unwrap());
        if src.is_multicast() || src == MacAddr::ZERO {
            return vec![];
        }
        self.fdb.insert(src, (ingress, now));
        if !dst.is_multicast()
            && let Some(&(p, seen)) = self.fdb.get(&dst)
            && now.saturating_sub(seen) <= self.ageing
        {
            return if p != ingress && up(p) {
                vec![p]
            } else {
                vec![]
            };
        }
        ports
            .iter()
            .filter(|&&(p, u)| u && p != ingress)
            .map(|&(p, _)| p)
            .collect()
    }
}

#[test]
fn bridge_matches_the_reference_model_on_random_traffic() {
    let ageing = Duration::from_secs(30);
    let mut br = Bridge::new(BridgeConfig {
        fdb_capacity: 1024,
        ageing,
        hash_seed: Some(11),
        ..BridgeConfig::default()
    })
    .unwrap();
    let mut ports: Vec<(PortId, bool)> = (0..5)
        .map(|d| {
            let kind = if d == 0 {
                PortKind::Uplink
            } else {
                PortKind::Vif {
                    domid: d,
                    handle: 0,
                }
            };
            (br.add_port(kind).unwrap(), true)
        })
        .collect();
    let mut model = Model {
        ageing,
        fdb: HashMap::new(),
    };
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let macs: Vec<MacAddr> = (1..=24)
        .map(MacAddr::local)
        .chain([MacAddr::BROADCAST, MacAddr([0x33, 0x33, 0, 0, 0, 1])])
        .collect();
    // A pool of frames: every (src, dst) pair plus some malformed ones.
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for &s in &macs[..24] {
        for &d in &macs {
            pool.push(udp_frame(s, d, 60, pool.len() as u32));
        }
    }
    pool.push(vec![0; 5]);
    let mut bad_src = udp_frame(MacAddr::local(1), MacAddr::local(2), 60, 0);
    bad_src[6] = 0x01;
    pool.push(bad_src);

    let mut now = Duration::ZERO;
    let mut out: Output<FrameRef<'_>> = Output::new();
    for _round in 0..3000 {
        now += Duration::from_millis(rng.below(4000));
        if rng.below(20) == 0 {
            let k = rng.below(ports.len() as u64) as usize;
            ports[k].1 = !ports[k].1;
            br.set_port_up(ports[k].0, ports[k].1).unwrap();
        }
        let ingress = ports[rng.below(ports.len() as u64) as usize].0;
        let n = 1 + rng.below(8) as usize;
        let mut batch: Vec<FrameRef<'_>> = (0..n)
            .map(|_| {
                let slot = rng.below(pool.len() as u64) as u32;
                FrameRef::new(slot, &pool[slot as usize])
            })
            .collect();
        let mut expected: HashMap<PortId, Vec<u32>> = HashMap::new();
        for f in &batch {
            for p in model.forward(f.data, ingress, &ports, now) {
                expected.entry(p).or_default().push(f.slot);
            }
        }
        br.forward(ingress, &mut batch, now, &mut out).unwrap();
        for &(p, _) in &ports {
            let got: Vec<u32> = out.drain(p).map(|f| f.slot).collect();
            assert_eq!(
                got,
                expected.remove(&p).unwrap_or_default(),
                "egress {p} at {now:?} (ingress {ingress})"
            );
        }
    }
    br.fdb().check_invariants().unwrap();
    let snap = br.snapshot();
    let floods: u64 = snap.ports.iter().map(|p| p.stats.floods).sum();
    let drops: u64 = snap.ports.iter().map(|p| p.stats.drops.total()).sum();
    assert!(floods > 0 && drops > 0 && snap.fdb.moves > 0 && snap.fdb.expired > 0);
}

#[test]
fn full_table_under_churn_keeps_its_invariants_and_learns_the_newest() {
    // 64 slots, thousands of stations: the table is always full.
    let mut br = Bridge::new(BridgeConfig {
        fdb_capacity: 64,
        ageing: Duration::from_secs(5),
        hash_seed: Some(99),
        ..BridgeConfig::default()
    })
    .unwrap();
    let ports: Vec<PortId> = (0..4)
        .map(|d| {
            br.add_port(PortKind::Vif {
                domid: d,
                handle: 0,
            })
            .unwrap()
        })
        .collect();
    let cap = br.fdb_stats().capacity;
    assert_eq!(cap, 64);
    // One port is capped: the per-port counts must stay exact through every eviction.
    let capped = ports[3];
    br.set_port_mac_limit(capped, Some(10)).unwrap();
    let mut rng = Rng(42);
    let frames: Vec<Vec<u8>> = (0..5000)
        .map(|i| {
            udp_frame(
                MacAddr::local(i),
                MacAddr::local(rng.below(5000) as u32),
                60,
                i,
            )
        })
        .collect();
    let mut out: Output<&[u8]> = Output::new();
    let mut now = Duration::ZERO;
    let mut sent = 0u64;
    for round in 0..2000 {
        now += Duration::from_millis(rng.below(50));
        if round % 500 == 499 {
            // A quiet spell longer than the ageing time: the next learns reuse expired slots.
            now += Duration::from_secs(10);
        }
        let ingress = ports[round % ports.len()];
        let mut batch: Vec<&[u8]> = (0..16)
            .map(|_| frames[rng.below(frames.len() as u64) as usize].as_slice())
            .collect();
        let last_src = MacAddr(batch[15][6..12].try_into().unwrap());
        sent += batch.len() as u64;
        br.forward(ingress, &mut batch, now, &mut out).unwrap();
        out.clear();
        br.fdb().check_invariants().unwrap();
        let st = br.fdb_stats();
        assert!(st.occupied <= cap);
        assert!(br.snapshot().ports[3].learned_macs <= 10);
        // The station that spoke last on an uncapped port is always reachable: learning never
        // fails without static entries, and LRU eviction never picks the entry just refreshed.
        if ingress != capped {
            assert_eq!(br.lookup(last_src, now), Some(ingress), "round {round}");
        }
        if round == 1999 {
            assert!(st.evictions > 1000, "a full table evicts: {st:?}");
            assert!(st.expired > 0, "ageing reclaims slots too: {st:?}");
            assert!(st.moves > 0, "MACs hop between ports: {st:?}");
        }
    }
    let snap = br.snapshot();
    let rx: u64 = snap.ports.iter().map(|p| p.stats.rx_frames).sum();
    assert_eq!(rx, sent);
    let hairpin: u64 = snap
        .ports
        .iter()
        .map(|p| p.stats.drops.get(DropReason::Hairpin))
        .sum();
    let other_drops: u64 = snap
        .ports
        .iter()
        .map(|p| p.stats.drops.total())
        .sum::<u64>()
        - hairpin;
    assert_eq!(
        other_drops, 0,
        "only hairpin drops with valid frames and all ports up"
    );
    assert!(snap.ports[3].stats.learn_refused > 0, "the cap was hit");
}
