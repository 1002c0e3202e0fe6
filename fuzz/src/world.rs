//! The world the netback targets run in: an embedded hypervisor, a backend in dom0, one hostile
//! frontend and a well-behaved pair of guests.
//!
//! Sentinels: every page of dom0 that the backend's frame pool cannot take, and every page of
//! the hostile guest that is not granted writable (or for transfer) to dom0, holds a known
//! pattern that must be unchanged at the end. The pool's pages sit between dom0 sentinels (the
//! pool can only take the odd pages of a run the harness freed), so a copy that runs off a pool
//! page lands on one. A hostile page whose writable grant is revoked gets a fresh pattern at
//! once: nothing may write it after that.

use hypervisor::{DomId, PAGE_SIZE, Pfn};
use netback::{Config, FrontendOffloads};
use testkit::{GRANT_CALLS, Guest, Machine, MidPass, RawFront, Scene, frame_between, mac};
use xen_model::{DomainHandle, Hypervisor};

use crate::hostile::Revocation;

/// The backend under test, on the model's dom0.
pub type Nb = testkit::Nb;

/// Slots of a tx or rx ring in one page.
pub const RING_SIZE: u32 = 256;
/// dom0's reservation.
pub const DOM0_PAGES: u64 = 2 * POOL_PAGES as u64 + 4;
/// Pages the backend's frame pool may take (every one between two dom0 sentinels).
pub const POOL_PAGES: usize = 80;
/// The hostile guest's reservation (2 ring pages, the rest data pages).
pub const HOSTILE_PAGES: u64 = 40;
/// Each well-behaved guest's reservation.
pub const GOOD_PAGES: u64 = 320;
/// The MAC number (last byte of `02:00:00:00:00:xx`) of the hostile guest and the pair.
pub const MAC_H: u8 = 9;
/// Sender of the pair.
pub const MAC_A: u8 = 1;
/// Receiver of the pair.
pub const MAC_B: u8 = 2;

/// The pattern a sentinel page holds: pseudo-random bytes, with the page's identity (domain,
/// pfn, refill generation) stamped at the start of every 64-byte line, so a copy from another
/// sentinel page or an older generation shows as well as a stray write.
pub fn pattern(dom: DomId, pfn: Pfn, generation: u32) -> Vec<u8> {
    thread_local! {
        static BASE: Vec<u8> = {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut out = Vec::with_capacity(PAGE_SIZE);
            for _ in 0..PAGE_SIZE / 8 {
                // xorshift64: cheap, and never a constant run.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.extend_from_slice(&x.to_le_bytes());
            }
            out
        };
    }
    let id = ((u64::from(dom) << 48) ^ (pfn.0 << 20) ^ u64::from(generation)).to_le_bytes();
    let mut p = BASE.with(|b| b.clone());
    for line in p.chunks_mut(64) {
        line[..8].copy_from_slice(&id);
    }
    p
}

/// A well-behaved guest of the pair: no offloads, so its frames are judged byte for byte.
pub fn good_guest(mac: u8) -> Guest {
    Guest {
        pages: GOOD_PAGES,
        offload: FrontendOffloads::default(),
        ..Guest::mac(mac)
    }
}

/// dom0's pages that no one may write: every page but the ones the pool may take.
#[derive(Debug)]
pub struct Dom0Sentinels {
    pages: Vec<(Pfn, Vec<u8>)>,
}

impl Dom0Sentinels {
    /// Takes all of dom0's reservation, fills it with patterns, and gives back only the odd
    /// pages of the first `2 * POOL_PAGES + 1`, lowest first, for the pool.
    pub fn lay(dom0: &DomainHandle) -> Self {
        let all: Vec<Pfn> = (0..DOM0_PAGES)
            .map(|_| dom0.alloc_page().expect("dom0 page"))
            .collect();
        let mut pages = Vec::new();
        let mut free = Vec::new();
        for (i, &pfn) in all.iter().enumerate() {
            if i % 2 == 1 && i < 2 * POOL_PAGES + 1 {
                free.push(pfn);
            } else {
                let p = pattern(dom0.domid(), pfn, 0);
                dom0.write(pfn, 0, &p).expect("dom0 write");
                pages.push((pfn, p));
            }
        }
        // Freed last = allocated first: the pool then grows upwards between sentinels.
        for pfn in free.into_iter().rev() {
            dom0.free_page(pfn).expect("free");
        }
        Self { pages }
    }

    /// Panics if a sentinel changed.
    pub fn check(&self, dom0: &DomainHandle) {
        let mut buf = vec![0u8; PAGE_SIZE];
        for (pfn, p) in &self.pages {
            dom0.read(*pfn, 0, &mut buf).expect("dom0 read");
            assert!(
                buf == *p,
                "dom0 sentinel page {pfn:?} was written at byte {}",
                first_diff(&buf, p)
            );
        }
    }
}

fn first_diff(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0)
}

/// The machine, dom0 with its sentinels, the backend and the well-behaved pair.
#[derive(Debug)]
pub struct Base {
    /// The machine.
    pub xen: Hypervisor,
    /// dom0.
    pub dom0: DomainHandle,
    /// The hostile guest's revocations in the middle of the backend's passes, on dom0's grant
    /// hypercalls.
    pub mid: MidPass<Revocation>,
    /// dom0's sentinel pages.
    pub sentinels: Dom0Sentinels,
    /// The backend.
    pub nb: Nb,
    /// The pair's sender.
    pub a: RawFront,
    /// The pair's receiver.
    pub b: RawFront,
}

/// Builds the machine, dom0 with its sentinels, the backend, and the well-behaved pair `a` →
/// `b` (not connected yet).
pub fn base(cfg: Config) -> Base {
    let m = Machine::builder()
        .frames(4096)
        .dom0_pages(DOM0_PAGES)
        .build()
        .expect("machine");
    let sentinels = Dom0Sentinels::lay(&m.dom0);
    let mid = MidPass::install(&m.dom0, GRANT_CALLS, Revocation::run);
    let Scene { xen, dom0, nb } = m.with_netback(cfg, POOL_PAGES);
    let a = RawFront::new(&xen, dom0.domid(), good_guest(MAC_A));
    let b = RawFront::new(&xen, dom0.domid(), good_guest(MAC_B));
    Base {
        xen,
        dom0,
        mid,
        sentinels,
        nb,
        a,
        b,
    }
}

/// The pair still works: `a` sends one frame to `b` and `b` receives it byte-exact, within a
/// bounded number of passes (draining what `b` had queued and retrying a frame the backend had
/// no buffer for). Neither vif may be disabled.
pub fn pair_exchanges(nb: &mut Nb, a: &mut RawFront, b: &mut RawFront, seq: u32) {
    let f = frame_between(mac(MAC_A), mac(MAC_B), 1000, seq);
    for round in 0..24 {
        a.reap_tx();
        b.drain();
        assert!(
            a.try_send(&f),
            "the sender's ring or memory is full (round {round})"
        );
        for _ in 0..3 {
            nb.poll().expect("netback poll");
        }
        let got = b.recv();
        if got.iter().any(|g| g.as_ref().is_ok_and(|g| *g == f)) {
            for f in [&*a, &*b] {
                let st = nb.vif_stats(f.id()).expect("pair vif exists");
                assert!(
                    st.fatal.is_none(),
                    "well-behaved vif disabled: {:?}",
                    st.fatal
                );
            }
            return;
        }
    }
    panic!(
        "the well-behaved pair no longer exchanges frames: a {:?}, b {:?}",
        nb.vif_stats(a.id()),
        nb.vif_stats(b.id())
    );
}
