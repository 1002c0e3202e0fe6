//! `xenbus_keys`: a hostile guest's xenstore keys against netback's control plane, while a
//! well-behaved pair connected through xenbus carries on.
//!
//! The input is a program of xenstore writes and removals under the hostile frontend's
//! directory (`tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy`,
//! `multi-queue-num-queues`, `feature-*`, split event channels, queue subdirectories, `state`,
//! junk keys and values), attempted writes into its backend directory, grants made and revoked,
//! and backend passes, in any order.
//!
//! Invariants: netback never panics; after every pass the backend's `state` node holds a
//! XenbusState in its canonical form, the hostile device has a vif exactly when its backend is
//! Connected, a Connected backend has no `error` node, and the pair's backends stay Connected
//! with live vifs; the guest cannot write its backend directory; once the control plane has
//! settled, a backend in InitWait never faces a frontend in Initialised/Connected, and a backend
//! that left InitWait for Closed while the frontend asked to connect wrote an `error` node; the
//! control plane settles within a bounded number of passes; no sentinel page changed; the pair
//! still exchanges a frame byte-exact.

use hypervisor::XenbusState;
use netback::{Config, FrontendKeys, RxMode};
use testkit::{RawFront, mac, mac_string};
use xen_model::{Hypervisor, XsConnection};

use crate::hostile::{GrantKind, Hostile};
use crate::scene;
use crate::world::{self, Base, MAC_H, Nb, pair_exchanges};
use crate::{Input, Scenario};

/// Keys a frontend writes (and a few it should not).
pub const KEYS: [&str; 16] = [
    "tx-ring-ref",
    "rx-ring-ref",
    "event-channel",
    "request-rx-copy",
    "multi-queue-num-queues",
    "feature-rx-notify",
    "feature-sg",
    "feature-gso-tcpv4",
    "event-channel-tx",
    "event-channel-rx",
    "state",
    "queue-0/tx-ring-ref",
    "feature-no-csum-offload",
    "mac",
    "backend",
    "handle",
];

/// Op codes (first byte of each op, modulo their number).
pub mod op {
    /// `key, value`.
    pub const WRITE: u8 = 0;
    /// `key`.
    pub const RM: u8 = 1;
    /// `value`: the frontend's state node.
    pub const STATE: u8 = 2;
    /// One backend pass.
    pub const POLL: u8 = 3;
    /// Passes until the control plane settles, then the outcome checks.
    pub const SETTLE: u8 = 4;
    /// `key, value`: a write into the backend directory (must be refused).
    pub const WRITE_BACKEND: u8 = 5;
    /// The frontend removes its whole directory.
    pub const RM_DIR: u8 = 6;
    /// `page, kind`.
    pub const GRANT: u8 = 7;
    /// `grant`.
    pub const REVOKE: u8 = 8;
    /// All the right keys at once (a well-behaved frontend's writes), then `state`.
    pub const GOOD_KEYS: u8 = 9;
    /// Number of op codes.
    pub const COUNT: u8 = 10;
}

struct Scene {
    w: Base,
    h: Hostile,
    /// dom0's view of xenstore (reads the backend's nodes).
    xs0: XsConnection,
    /// The hostile guest's connection.
    hxs: XsConnection,
    be: String,
    fe: String,
    pair_be: [String; 2],
}

/// The ring keys a well-behaved frontend writes before its `state`.
fn ring_keys(k: &FrontendKeys) -> [(&'static str, String); 4] {
    [
        ("tx-ring-ref", k.queues[0].tx_ring_ref.0.to_string()),
        ("rx-ring-ref", k.queues[0].rx_ring_ref.0.to_string()),
        ("event-channel", k.queues[0].event_channel.0.to_string()),
        ("request-rx-copy", "1".into()),
    ]
}

/// Brings a well-behaved frontend up through xenbus.
fn handshake(xen: &Hypervisor, nb: &mut Nb, f: &RawFront, xs0: &XsConnection) -> String {
    let paths = xen
        .add_vif(f.dom.domid(), 0, 0, &mac_string(mac(f.mac)))
        .expect("toolstack");
    let state = |xs0: &XsConnection| xs0.read(&format!("{}/state", paths.backend));
    for _ in 0..50 {
        nb.poll().expect("poll");
        if state(xs0).is_ok_and(|s| s == "2") {
            break;
        }
    }
    let xs = f.dom.xenstore();
    for (key, v) in ring_keys(&f.keys) {
        xs.write(&format!("{}/{key}", paths.frontend), &v)
            .expect("frontend write");
    }
    xs.write(&format!("{}/state", paths.frontend), "4")
        .expect("frontend write");
    for _ in 0..50 {
        nb.poll().expect("poll");
        if state(xs0).is_ok_and(|s| s == "4") {
            return paths.backend;
        }
    }
    panic!("a well-behaved frontend did not connect through xenbus");
}

impl Scene {
    fn new() -> Scene {
        let mut w = world::base(Config::default());
        let xs0 = w.xen.xenstore();
        let pair_be = [
            handshake(&w.xen, &mut w.nb, &w.a, &xs0),
            handshake(&w.xen, &mut w.nb, &w.b, &xs0),
        ];
        w.b.post_rx(64);
        let mut h = Hostile::new(&w.xen, w.dom0.domid(), w.a.dom.domid(), RxMode::Copy);
        for i in 0..8 {
            h.grant(i, GrantKind::ALL[i % 4]);
        }
        let paths = w
            .xen
            .add_vif(h.front.dom.domid(), 0, 0, &mac_string(mac(MAC_H)))
            .expect("toolstack");
        let hxs = h.front.dom.xenstore();
        Scene {
            w,
            h,
            xs0,
            hxs,
            be: paths.backend,
            fe: paths.frontend,
            pair_be,
        }
    }

    fn be_state(&self) -> XenbusState {
        let v = self
            .xs0
            .read(&format!("{}/state", self.be))
            .expect("the backend's state node exists");
        let s = XenbusState::parse(&v)
            .unwrap_or_else(|| panic!("backend state {v:?} is not a XenbusState"));
        assert_eq!(v, s.as_str(), "backend state {v:?} is not canonical");
        s
    }

    fn fe_state(&self) -> Option<XenbusState> {
        self.hxs
            .read(&format!("{}/state", self.fe))
            .ok()
            .and_then(|s| XenbusState::parse(&s))
    }

    fn has_error(&self) -> bool {
        self.xs0.read(&format!("{}/error", self.be)).is_ok()
    }

    /// One pass and the checks that hold after every pass.
    fn poll(&mut self) -> bool {
        let work = self.w.nb.poll().expect("netback poll");
        let be = self.be_state();
        let vif = self.w.nb.vifs().any(|v| v.id() == self.h.id());
        assert_eq!(
            vif,
            be == XenbusState::Connected,
            "backend state {be:?} but the vif {}",
            if vif { "exists" } else { "does not exist" }
        );
        if be == XenbusState::Connected {
            assert!(!self.has_error(), "a Connected backend has an error node");
        }
        for (f, be) in [(&self.w.a, &self.pair_be[0]), (&self.w.b, &self.pair_be[1])] {
            let s = self.xs0.read(&format!("{be}/state")).expect("pair state");
            assert_eq!(s, "4", "a well-behaved backend left Connected");
            let st = self
                .w
                .nb
                .vif_stats(f.id())
                .expect("a well-behaved vif was removed");
            assert!(st.fatal.is_none(), "a well-behaved vif was disabled");
        }
        work
    }

    /// Passes until the control plane (and the data path) has nothing left to do.
    fn settle(&mut self) {
        let before = self.be_state();
        for _ in 0..200 {
            if !self.poll() {
                let after = self.be_state();
                let fe = self.fe_state();
                let wants = matches!(fe, Some(XenbusState::Initialised | XenbusState::Connected));
                assert!(
                    !(after == XenbusState::InitWait && wants),
                    "the backend stays in InitWait while the frontend is {fe:?}"
                );
                if before == XenbusState::InitWait && after == XenbusState::Closed && wants {
                    assert!(
                        self.has_error(),
                        "the backend refused a connection without an error node"
                    );
                }
                return;
            }
        }
        panic!("the control plane does not settle");
    }

    fn value(&mut self, input: &mut Input<'_>) -> String {
        let grant = |h: &Hostile, i: u8| {
            if h.grants.is_empty() {
                "8".to_string()
            } else {
                h.grants[i as usize % h.grants.len()].gref.0.to_string()
            }
        };
        match input.below(20) {
            0 => self.h.front.keys.queues[0].tx_ring_ref.0.to_string(),
            1 => self.h.front.keys.queues[0].rx_ring_ref.0.to_string(),
            2 => self.h.front.keys.queues[0].event_channel.0.to_string(),
            3 => self.w.a.keys.queues[0].event_channel.0.to_string(),
            4 => self.w.a.keys.queues[0].tx_ring_ref.0.to_string(),
            5 => grant(&self.h, input.u8()),
            6..=14 => (input.below(9)).to_string(),
            15 => "4294967296".into(),
            16 => ["-1", " 4", "+4", "", "4 ", "0x4", "04"][input.below(7)].into(),
            17 => input.u32().to_string(),
            _ => {
                let n = input.below(24);
                String::from_utf8_lossy(input.bytes(n)).into_owned()
            }
        }
    }

    fn key(&mut self, input: &mut Input<'_>) -> String {
        let sel = input.u8();
        if sel >= 0xf0 {
            let n = input.below(16);
            String::from_utf8_lossy(input.bytes(n)).into_owned()
        } else {
            KEYS[sel as usize % KEYS.len()].to_string()
        }
    }
}

impl Scenario for Scene {
    const OPS: usize = 256;

    fn start(_input: &mut Input<'_>) -> Scene {
        Scene::new()
    }

    fn op(&mut self, input: &mut Input<'_>) {
        match input.u8() % op::COUNT {
            op::WRITE => {
                let (k, v) = (self.key(input), self.value(input));
                let _ = self.hxs.write(&format!("{}/{k}", self.fe), &v);
            }
            op::RM => {
                let k = self.key(input);
                let _ = self.hxs.rm(&format!("{}/{k}", self.fe));
            }
            op::STATE => {
                let v = self.value(input);
                let _ = self.hxs.write(&format!("{}/state", self.fe), &v);
            }
            op::POLL => {
                self.poll();
            }
            op::SETTLE => self.settle(),
            op::WRITE_BACKEND => {
                let (k, v) = (self.key(input), self.value(input));
                let path = format!("{}/{k}", self.be);
                let before = self.xs0.read(&path).ok();
                let r = self.hxs.write(&path, &v);
                assert!(r.is_err(), "the guest wrote its backend's {k}");
                assert_eq!(self.xs0.read(&path).ok(), before);
            }
            op::RM_DIR => {
                let _ = self.hxs.rm(&self.fe);
            }
            op::GRANT => self.h.grant_from(input),
            op::REVOKE => {
                let i = input.u8() as usize;
                self.h.try_revoke(i);
            }
            op::GOOD_KEYS => {
                for (key, v) in ring_keys(&self.h.front.keys) {
                    let _ = self.hxs.write(&format!("{}/{key}", self.fe), &v);
                }
                let s = ["1", "3", "4", "5", "6"][input.below(5)];
                let _ = self.hxs.write(&format!("{}/state", self.fe), s);
            }
            _ => unreachable!(),
        }
    }

    fn finish(mut self) {
        self.settle();
        scene::sentinels_intact(&self.w, &self.h);
        pair_exchanges(&mut self.w.nb, &mut self.w.a, &mut self.w.b, 0xfeed);
    }
}

/// The target.
pub fn run(data: &[u8]) {
    crate::input::run::<Scene>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(seed: usize) -> Scene {
        crate::input::replay(&crate::seeds::all()[5].1[seed])
    }

    #[test]
    fn seed_good_keys_connect() {
        let s = play(0);
        assert_eq!(s.be_state(), XenbusState::Connected);
        s.finish();
    }

    #[test]
    fn seed_too_many_queues_is_refused_with_an_error() {
        let s = play(1);
        assert_eq!(s.be_state(), XenbusState::Closed);
        assert!(s.has_error());
        s.finish();
    }
}
