//! What the netback targets' scenes share. The ring targets ([`netback_tx`](crate::netback_tx),
//! [`netback_rx`](crate::netback_rx)) set up the same world (the hostile guest's vif connected
//! directly next to the pair), run the backend the same way (a pass with the mid-pass
//! revocations, the pair keeping up, at most [`SETTLE_PASSES`] passes to go idle), decode the
//! same grant ops, watch the hostile vif's fatal error the same way and end with the same checks;
//! [`xenbus_keys`](crate::xenbus_keys) shares the sentinel checks.

use netback::{Config, RxMode, VifStats};

use crate::Input;
use crate::hostile::{Hostile, Revocation};
use crate::world::{self, Base, pair_exchanges};

/// Passes a ring target's settle makes at most while the backend still reports work.
pub const SETTLE_PASSES: usize = 300;

/// The world of a ring target: [`world::base`] with `cfg`, the hostile guest (rx in `mode`) and
/// the pair, all three connected directly (the pair's MACs pinned, their ports locked), and 64
/// rx buffers posted by each of the pair.
pub fn setup(cfg: Config, mode: RxMode) -> (Base, Hostile) {
    let mut w = world::base(cfg);
    let h = Hostile::new(&w.xen, w.dom0.domid(), w.a.dom.domid(), mode);
    h.front.connect(&mut w.nb);
    w.a.connect_pinned(&mut w.nb);
    w.b.connect_pinned(&mut w.nb);
    w.b.post_rx(64);
    w.a.post_rx(64);
    (w, h)
}

/// The hostile vif's counters.
pub fn stats(w: &Base, h: &Hostile) -> VifStats {
    w.nb.vif_stats(h.id())
        .expect("the hostile vif stays connected")
}

/// Runs one backend pass with the scheduled mid-pass revocations, and has the hostile guest take
/// note of the ones made. Returns the backend's answer (work left) and the grefs revoked during
/// the pass.
pub fn pass(w: &mut Base, h: &mut Hostile) -> (bool, Vec<u32>) {
    w.mid.begin();
    let work = w.nb.poll().expect("netback poll");
    let done: Vec<Revocation> = w.mid.end().into_iter().map(|(_, r)| r).collect();
    h.reconcile(&done);
    (
        work,
        done.iter().filter(|m| m.ok).map(|m| m.gref.0).collect(),
    )
}

/// After a pass, the pair keeps up: `a` reaps its tx responses, and both take what arrived and
/// post buffers back.
pub fn pair_keeps_up(w: &mut Base) {
    w.a.reap_tx();
    w.a.drain();
    w.b.drain();
}

/// Calls `poll` (one pass and its checks) until it reports no work left, at most
/// [`SETTLE_PASSES`] times.
pub fn until_idle(mut poll: impl FnMut() -> bool) {
    for _ in 0..SETTLE_PASSES {
        if !poll() {
            break;
        }
    }
}

/// Op `REVOKE` (`grant`): the hostile guest revokes a grant between passes. A revocation
/// scheduled for the next pass names a gref number, which the next grant may reuse, so those
/// whose grant is now gone are dropped.
pub fn revoke(w: &Base, h: &mut Hostile, input: &mut Input<'_>) {
    let i = input.u8() as usize;
    h.revoke(i);
    let grants = &h.grants;
    w.mid.retain(|m| grants[m.grant].live);
}

/// Op `MID_REVOKE` (`grant, call`): the hostile guest revokes a grant during the next pass,
/// before the backend's `1 + call % 4`-th grant hypercall of it.
pub fn mid_revoke(w: &Base, h: &mut Hostile, input: &mut Input<'_>) {
    let i = input.u8() as usize;
    let at = 1 + input.below(4) as u32;
    if let Some(m) = h.mid_pass_revoke(i) {
        w.mid.schedule(at, m);
    }
}

/// Watches the hostile vif's fatal error: once set, it has a reason, stays set, and the ring's
/// `rsp_prod` does not move again.
#[derive(Debug, Default)]
pub struct FatalWatch {
    /// `rsp_prod` when the vif was found disabled.
    at: Option<u32>,
}

impl FatalWatch {
    /// Checks the vif's state after a pass that left the ring's `rsp_prod` at `rsp_prod`.
    pub fn check(&mut self, st: &VifStats, rsp_prod: u32) {
        match (&st.fatal, self.at) {
            (Some(f), None) => {
                assert!(!f.to_string().is_empty(), "a fatal error without a reason");
                self.at = Some(rsp_prod);
            }
            (Some(_), Some(at)) => {
                assert_eq!(rsp_prod, at, "a disabled vif got more responses")
            }
            (None, Some(_)) => panic!("a disabled vif came back"),
            (None, None) => {}
        }
    }
}

/// No sentinel page of the hostile guest or of dom0 changed.
pub fn sentinels_intact(w: &Base, h: &Hostile) {
    h.check_sentinels();
    w.sentinels.check(&w.dom0);
}

/// The checks at the end of a ring target's run, once settled: no sentinel changed, the pair
/// exchanges a frame byte-exact, and that exchange changed no sentinel either.
pub fn check_end(w: &mut Base, h: &Hostile) {
    sentinels_intact(w, h);
    pair_exchanges(&mut w.nb, &mut w.a, &mut w.b, 0xfeed);
    sentinels_intact(w, h);
}
