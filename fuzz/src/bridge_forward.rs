//! `bridge_forward`: `bridge_lite::Bridge` driven by a program decoded from the input: bursts of
//! arbitrary frames (runts included) on any port, ports up/down, added and removed, locked,
//! learning on/off, static MACs, per-port MAC limits, MAC removals, time passing, ageing and
//! captures.
//!
//! Invariants, after every step: nothing panics; `Fdb::check_invariants` holds; a static MAC
//! stays on its port until removed; a port never gains learned MACs past its limit. After every
//! burst: no frame leaves by its ingress port, a port that is down or gone, or twice by one port;
//! every frame out is at least 14 bytes with a unicast non-zero source; a locked port forwards
//! only sources the table pins to it; each frame is forwarded (one copy), flooded (one copy per
//! other up port) or dropped for a counted reason, and the counters add up exactly to that.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bridge_lite::{
    Bridge, BridgeConfig, CaptureDirection, DropReason, FrameRef, MacAddr, Output, PortId,
    PortKind, PortStats,
};

use crate::Input;

/// The MACs frames and static entries are drawn from (a selector byte ≥ 0xf0 reads 6 raw
/// bytes instead).
pub const MACS: [[u8; 6]; 8] = [
    [0xff; 6],
    [0; 6],
    [0x01, 0x00, 0x5e, 0, 0, 1],
    [0x02, 0, 0, 0, 0, 1],
    [0x02, 0, 0, 0, 0, 2],
    [0x02, 0, 0, 0, 0, 3],
    [0x02, 0, 0, 0, 0, 4],
    [0x02, 0, 0, 0, 0, 5],
];

/// Op codes (the first byte of each op, modulo their number).
pub mod op {
    /// `ingress, count, count × (dst, src, len, fill)`.
    pub const FORWARD: u8 = 0;
    /// `port, up`.
    pub const SET_UP: u8 = 1;
    /// `port, locked`.
    pub const LOCK: u8 = 2;
    /// `port, learning`.
    pub const LEARNING: u8 = 3;
    /// `mac, port`.
    pub const ADD_STATIC: u8 = 4;
    /// `mac`.
    pub const REMOVE_MAC: u8 = 5;
    /// `port, limit` (0xff: none, else `limit % 8`).
    pub const MAC_LIMIT: u8 = 6;
    /// `port`.
    pub const REMOVE_PORT: u8 = 7;
    /// `uplink?`.
    pub const ADD_PORT: u8 = 8;
    /// `u16`: time advances by that many 100 µs steps.
    pub const ADVANCE: u8 = 9;
    /// A full ageing sweep.
    pub const AGE: u8 = 10;
    /// `port, dir` (dir 3 stops).
    pub const CAPTURE: u8 = 11;
    /// Number of op codes.
    pub const COUNT: u8 = 12;
}

fn mac(input: &mut Input<'_>) -> MacAddr {
    let sel = input.u8();
    if sel >= 0xf0 {
        MacAddr(input.array())
    } else {
        MacAddr(MACS[sel as usize % MACS.len()])
    }
}

struct Model {
    br: Bridge,
    /// Every port id ever handed out (live or not), in order of first appearance.
    ids: Vec<PortId>,
    live: HashSet<PortId>,
    statics: HashMap<MacAddr, PortId>,
    limits: HashMap<PortId, u32>,
    now: Duration,
}

impl Model {
    fn port(&self, input: &mut Input<'_>) -> PortId {
        self.ids[input.u8() as usize % self.ids.len()]
    }

    fn add_port(&mut self, uplink: bool) {
        let kind = if uplink {
            PortKind::Uplink
        } else {
            PortKind::Vif {
                domid: self.ids.len() as u16,
                handle: 0,
            }
        };
        match self.br.add_port(kind) {
            Ok(p) => {
                assert!(self.live.insert(p), "{p} handed out while live");
                assert_eq!(self.br.port_is_up(p).ok(), Some(true));
                assert_eq!(self.br.port_stats(p).ok(), Some(PortStats::default()));
                self.limits.remove(&p);
                if !self.ids.contains(&p) {
                    self.ids.push(p);
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }

    /// Checks that an op on a port that is not live failed, and one on a live port succeeded.
    #[track_caller]
    fn expect<T: std::fmt::Debug>(&self, p: PortId, r: Result<T, bridge_lite::BridgeError>) {
        assert_eq!(r.is_ok(), self.live.contains(&p), "{p}: {r:?}");
    }

    fn forward(&mut self, input: &mut Input<'_>) {
        let ingress = self.port(input);
        let n = 1 + input.below(8);
        let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(n);
        for _ in 0..n {
            let (dst, src) = (mac(input), mac(input));
            let len = input.below(72);
            let fill = input.u8();
            let mut f = Vec::with_capacity(len.max(14));
            f.extend_from_slice(&dst.0);
            f.extend_from_slice(&src.0);
            f.extend_from_slice(&0x88b5u16.to_be_bytes());
            f.resize(len.max(14), fill);
            f.truncate(len);
            bufs.push(f);
        }
        let mut frames: Vec<FrameRef<'_>> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| FrameRef::new(i as u32, b))
            .collect();
        let live: Vec<PortId> = self.br.ports().collect();
        let before: HashMap<PortId, PortStats> = live
            .iter()
            .map(|&p| (p, self.br.port_stats(p).unwrap_or_default()))
            .collect();
        let up: HashSet<PortId> = live
            .iter()
            .copied()
            .filter(|&p| self.br.port_is_up(p).unwrap_or(false))
            .collect();
        let others_up: Vec<PortId> = up.iter().copied().filter(|&p| p != ingress).collect();
        let others_down = live.len() - others_up.len() - usize::from(live.contains(&ingress));
        let locked = self
            .br
            .snapshot()
            .ports
            .iter()
            .any(|s| s.id == ingress && s.locked);
        let mut out = Output::new();
        let r = self.br.forward(ingress, &mut frames, self.now, &mut out);
        self.expect(ingress, r);
        if !self.live.contains(&ingress) {
            assert_eq!(
                frames.len(),
                n,
                "a failed forward must hand the frames back"
            );
            assert!(out.is_empty());
            return;
        }
        assert!(frames.is_empty(), "forward must drain the burst");

        // Where each frame went.
        let mut copies = vec![0usize; n];
        let mut out_bytes = 0u64;
        for (p, q) in out.iter() {
            if q.is_empty() {
                continue;
            }
            assert_ne!(p, ingress, "a frame went back out of its ingress port");
            assert!(self.live.contains(&p), "a frame went to removed port {p}");
            assert!(up.contains(&p), "a frame went to {p}, which is down");
            let mut seen = HashSet::new();
            for h in q {
                assert!(seen.insert(h.slot), "frame {} queued twice on {p}", h.slot);
                let b = &bufs[h.slot as usize];
                assert!(
                    std::ptr::eq(h.data, &b[..]),
                    "the handle is not the one passed in"
                );
                assert!(b.len() >= 14, "a {}-byte runt was forwarded", b.len());
                let src = MacAddr(b[6..12].try_into().expect("6 bytes"));
                assert!(
                    !src.is_multicast() && src != MacAddr::ZERO,
                    "bad source forwarded"
                );
                if locked {
                    assert_eq!(
                        self.br.lookup(src, self.now),
                        Some(ingress),
                        "locked {ingress} forwarded a source it does not own"
                    );
                }
                copies[h.slot as usize] += 1;
                out_bytes += b.len() as u64;
            }
        }
        for (i, &c) in copies.iter().enumerate() {
            assert!(
                c <= 1 || c == others_up.len(),
                "frame {i} went out {c} times; a flood makes {} copies",
                others_up.len()
            );
        }

        // The counters add up to exactly that.
        let after: HashMap<PortId, PortStats> = live
            .iter()
            .map(|&p| (p, self.br.port_stats(p).unwrap_or_default()))
            .collect();
        let d = |p: PortId, f: &dyn Fn(&PortStats) -> u64| f(&after[&p]) - f(&before[&p]);
        let drop = |p: PortId, r: DropReason| d(p, &|s| s.drops.get(r));
        let total_out = copies.iter().sum::<usize>() as i128;
        assert_eq!(d(ingress, &|s| s.rx_frames), n as u64);
        let rx_bytes: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        assert_eq!(d(ingress, &|s| s.rx_bytes), rx_bytes);
        let tx: u64 = live.iter().map(|&p| d(p, &|s| s.tx_frames)).sum();
        assert_eq!(tx as i128, total_out, "tx_frames count every copy");
        let tx_bytes: u64 = live.iter().map(|&p| d(p, &|s| s.tx_bytes)).sum();
        assert_eq!(tx_bytes, out_bytes);
        let floods = d(ingress, &|s| s.floods) as i128;
        assert_eq!(
            floods,
            d(ingress, &|s| s.rx_broadcast
                + s.rx_multicast
                + s.rx_unknown_unicast) as i128
        );
        let ingress_drops: u64 = [
            DropReason::TooShort,
            DropReason::SrcMulticast,
            DropReason::SrcZero,
            DropReason::IngressDown,
            DropReason::Hairpin,
            DropReason::SrcNotAllowed,
        ]
        .into_iter()
        .map(|r| drop(ingress, r))
        .sum();
        let egress_down: u64 = live.iter().map(|&p| drop(p, DropReason::EgressDown)).sum();
        let unicast_out = total_out - floods * others_up.len() as i128;
        let unicast_down = egress_down as i128 - floods * others_down as i128;
        assert!(
            unicast_out >= 0 && unicast_down >= 0,
            "counters: out {total_out}, floods {floods}, egress_down {egress_down}"
        );
        assert_eq!(
            ingress_drops as i128 + floods + unicast_out + unicast_down,
            n as i128,
            "every frame is forwarded, flooded or dropped for one counted reason"
        );
        let s = &after[&ingress];
        let b = &before[&ingress];
        let learn_events =
            (s.learned + s.moves_in + s.learn_refused) - (b.learned + b.moves_in + b.learn_refused);
        assert!(learn_events <= n as u64);
    }

    /// The invariants that hold after every step.
    fn check(&self, entries_before: &HashMap<PortId, u32>) {
        if let Err(e) = self.br.fdb().check_invariants() {
            panic!("fdb invariant broken: {e}");
        }
        for (m, &p) in &self.statics {
            assert_eq!(
                self.br.lookup(*m, self.now),
                Some(p),
                "static {m} left its port"
            );
        }
        for &p in &self.live {
            let now = self.br.fdb().port_entries(p);
            if let Some(&limit) = self.limits.get(&p) {
                let was = entries_before.get(&p).copied().unwrap_or(0);
                assert!(
                    now <= was.max(limit),
                    "{p} holds {now} learned MACs, limit {limit}, had {was}"
                );
            }
        }
        let snap = self.br.snapshot();
        assert_eq!(snap.ports.len(), self.live.len());
        assert_eq!(snap.fdb, self.br.fdb_stats());
    }
}

/// The target.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = BridgeConfig {
        fdb_capacity: [8, 16, 64, 1024][input.below(4)],
        ageing: Duration::from_millis(1 + input.u8() as u64),
        max_ports: 8,
        hash_seed: Some(input.u8() as u64),
        frames_per_sweep: 1 + input.below(32),
    };
    let nports = 2 + input.below(4);
    let mut m = Model {
        br: Bridge::new(cfg).expect("a valid config"),
        ids: Vec::new(),
        live: HashSet::new(),
        statics: HashMap::new(),
        limits: HashMap::new(),
        now: Duration::ZERO,
    };
    for i in 0..nports {
        m.add_port(i == 0);
    }
    let mut ops = 0;
    while !input.is_empty() && ops < 256 {
        ops += 1;
        let entries: HashMap<PortId, u32> = m
            .live
            .iter()
            .map(|&p| (p, m.br.fdb().port_entries(p)))
            .collect();
        match input.u8() % op::COUNT {
            op::FORWARD => m.forward(&mut input),
            op::SET_UP => {
                let (p, up) = (m.port(&mut input), input.bool());
                let r = m.br.set_port_up(p, up);
                m.expect(p, r);
            }
            op::LOCK => {
                let (p, on) = (m.port(&mut input), input.bool());
                let r = m.br.set_port_locked(p, on);
                m.expect(p, r);
            }
            op::LEARNING => {
                let (p, on) = (m.port(&mut input), input.bool());
                let r = m.br.set_port_learning(p, on);
                m.expect(p, r);
            }
            op::ADD_STATIC => {
                let (mac, p) = (mac(&mut input), m.port(&mut input));
                match m.br.add_static(mac, p) {
                    Ok(()) => {
                        assert!(m.live.contains(&p) && !mac.is_multicast() && mac != MacAddr::ZERO);
                        m.statics.insert(mac, p);
                    }
                    Err(_) => {
                        // A refused add may have dropped an older entry for the MAC.
                        m.statics.remove(&mac);
                    }
                }
            }
            op::REMOVE_MAC => {
                let mac = mac(&mut input);
                let was_static = m.statics.remove(&mac).is_some();
                let known = m.br.remove_mac(mac);
                assert!(known || !was_static, "static {mac} was not known");
                assert_eq!(
                    m.br.lookup(mac, m.now),
                    None,
                    "{mac} still known after removal"
                );
            }
            op::MAC_LIMIT => {
                let p = m.port(&mut input);
                let l = input.u8();
                let limit = (l != 0xff).then_some(u32::from(l % 8));
                let r = m.br.set_port_mac_limit(p, limit);
                m.expect(p, r);
                if m.live.contains(&p) {
                    match limit {
                        Some(l) => m.limits.insert(p, l),
                        None => m.limits.remove(&p),
                    };
                }
            }
            op::REMOVE_PORT => {
                let p = m.port(&mut input);
                let r = m.br.remove_port(p);
                m.expect(p, r);
                m.live.remove(&p);
                m.limits.remove(&p);
                m.statics.retain(|_, q| *q != p);
                assert_eq!(m.br.fdb().port_entries(p), 0);
                assert!(m.br.fdb_entries(m.now).iter().all(|e| e.port != p));
            }
            op::ADD_PORT => {
                let uplink = input.bool();
                m.add_port(uplink);
            }
            op::ADVANCE => {
                m.now += Duration::from_micros(100) * u32::from(input.u16());
            }
            op::AGE => {
                m.br.age(m.now);
                assert!(
                    m.br.fdb_entries(m.now)
                        .iter()
                        .all(|e| e.is_static || e.age.is_some())
                );
            }
            op::CAPTURE => {
                let p = m.port(&mut input);
                match input.below(4) {
                    3 => {
                        let _ = m.br.stop_capture(p);
                    }
                    d => {
                        let dir = [
                            CaptureDirection::Rx,
                            CaptureDirection::Tx,
                            CaptureDirection::Both,
                        ][d];
                        let _ = m.br.start_capture(p, std::io::sink(), dir);
                    }
                }
            }
            _ => unreachable!(),
        }
        m.check(&entries);
    }
}
