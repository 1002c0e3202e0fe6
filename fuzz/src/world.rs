//! The world the netback targets run in: an embedded hypervisor, a backend in dom0, one hostile
//! frontend and a well-behaved pair of guests.
//!
//! Sentinels: every page of dom0 that the backend's frame pool cannot take, and every page of
//! the hostile guest that is not granted writable (or for transfer) to dom0, holds a known
//! pattern that must be unchanged at the end. The pool's pages sit between dom0 sentinels (the
//! pool can only take the odd pages of a run the harness freed), so a copy that runs off a pool
//! page lands on one. A hostile page whose writable grant is revoked gets a fresh pattern at
//! once: nothing may write it after that.

use std::collections::HashMap;

use xen_model::{DomainHandle, EvtchnHandle, Hypervisor};
use hypervisor::ringpage::{OwnRingPage, own_ring};
use hypervisor::{DomId, GrantRef, PAGE_SIZE, Pfn, Port};
use netback::{Config, FrontendKeys, FrontendOffloads, Netback, RxMode, VifId};

use crate::hooked::HookedDom0;
use netif_ring::netif::{NETRXF_MORE_DATA, NETTXF_MORE_DATA, RxRequest, RxResponse, TxRequest};
use netif_ring::{FrontRing, PageRing, RxRing, TxRing};

/// A frontend's tx ring over one of its own pages.
pub type TxFront = FrontRing<TxRing, PageRing<OwnRingPage<DomainHandle>>>;
/// A frontend's rx ring over one of its own pages.
pub type RxFront = FrontRing<RxRing, PageRing<OwnRingPage<DomainHandle>>>;
/// The backend under test, on dom0 with a hook in its grant hypercalls.
pub type Nb = Netback<HookedDom0>;

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

/// A MAC of the test's family.
pub fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// An Ethernet frame `src` → `dst` of `len` bytes (at least 14) with a payload tagged by `seq`.
pub fn frame(src: [u8; 6], dst: [u8; 6], len: usize, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    let tag = seq.to_le_bytes();
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7) ^ tag[i % 4];
    }
    f
}

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

/// A well-behaved frontend driven by hand (as netback's own tests do).
#[derive(Debug)]
pub struct Front {
    /// The guest.
    pub dom: DomainHandle,
    /// Its event-channel handle.
    pub evtchn: EvtchnHandle,
    /// Its port to the backend.
    pub port: Port,
    /// Its rings.
    pub tx: TxFront,
    /// Its rings.
    pub rx: RxFront,
    /// What it would write to xenstore.
    pub keys: FrontendKeys,
    /// Its MAC number.
    pub mac: u8,
    backend: DomId,
    tx_pages: HashMap<u16, (Pfn, GrantRef)>,
    rx_bufs: HashMap<u16, (Pfn, GrantRef)>,
    next_id: u16,
    partial: Vec<u8>,
}

impl Front {
    /// A guest with both rings granted to `backend`.
    pub fn new(xen: &Hypervisor, backend: DomId, mac: u8, pages: u64) -> Front {
        let dom = xen
            .create_domain(pages)
            .expect("machine has room for the guest");
        let txp = dom.alloc_page().expect("ring page");
        let rxp = dom.alloc_page().expect("ring page");
        let tx = FrontRing::init(own_ring(&dom, txp).expect("pin tx ring"));
        let rx = FrontRing::init(own_ring(&dom, rxp).expect("pin rx ring"));
        let tx_ring_ref = dom.grant_access(backend, txp, false).expect("grant");
        let rx_ring_ref = dom.grant_access(backend, rxp, false).expect("grant");
        let evtchn = dom.open_evtchn();
        let port = evtchn.alloc_unbound(backend).expect("port");
        Front {
            dom,
            evtchn,
            port,
            tx,
            rx,
            keys: FrontendKeys {
                tx_ring_ref,
                rx_ring_ref,
                event_channel: port,
                mode: RxMode::Copy,
                // No offloads: the well-behaved guests' frames are judged byte for byte.
                offload: FrontendOffloads::default(),
            },
            mac,
            backend,
            tx_pages: HashMap::new(),
            rx_bufs: HashMap::new(),
            next_id: 0,
            partial: Vec::new(),
        }
    }

    /// Its vif's id.
    pub fn id(&self) -> VifId {
        VifId {
            domid: self.dom.domid(),
            devid: 0,
        }
    }

    fn next_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Transmits `data` (one slot per page-sized chunk) and pushes. False if the ring or the
    /// reservation has no room (nothing is put then).
    pub fn send(&mut self, data: &[u8]) -> bool {
        let chunks: Vec<&[u8]> = data.chunks(PAGE_SIZE).collect();
        if self.tx.free_requests() < chunks.len() as u32 {
            return false;
        }
        let mut reqs = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let Ok(pfn) = self.dom.alloc_page() else {
                for (id, _) in reqs {
                    if let Some((pfn, gref)) = self.tx_pages.remove(&id) {
                        let _ = self.dom.end_access(gref);
                        let _ = self.dom.free_page(pfn);
                    }
                }
                return false;
            };
            self.dom.write(pfn, 0, c).expect("write own page");
            let gref = self
                .dom
                .grant_access(self.backend, pfn, true)
                .expect("grant");
            let id = self.next_id();
            self.tx_pages.insert(id, (pfn, gref));
            let more = i + 1 < chunks.len();
            let size = if i == 0 { data.len() } else { c.len() } as u16;
            reqs.push((id, (gref, more, size)));
        }
        for (id, (gref, more, size)) in reqs {
            let req = TxRequest {
                gref: gref.0,
                offset: 0,
                flags: if more { NETTXF_MORE_DATA } else { 0 },
                id,
                size,
            };
            self.tx.put_request(req).expect("room checked");
        }
        if self.tx.push_requests_and_check_notify() {
            let _ = self.evtchn.notify(self.port);
        }
        true
    }

    /// Collects tx responses and ends their grants; returns their statuses.
    pub fn reap_tx(&mut self) -> Vec<i16> {
        let mut out = Vec::new();
        while let Ok(Some(rsp)) = self.tx.next_response() {
            if let Some((pfn, gref)) = self.tx_pages.remove(&rsp.id) {
                self.dom
                    .end_access(gref)
                    .expect("a reaped grant is not in use");
                self.dom.free_page(pfn).expect("free");
            }
            out.push(rsp.status);
        }
        out
    }

    /// Posts up to `n` rx buffers and pushes.
    pub fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            if self.rx.is_full() {
                break;
            }
            let Ok(pfn) = self.dom.alloc_page() else {
                break;
            };
            let gref = self
                .dom
                .grant_access(self.backend, pfn, false)
                .expect("grant");
            let id = self.next_id();
            self.rx_bufs.insert(id, (pfn, gref));
            self.rx
                .put_request(RxRequest {
                    id,
                    pad: 0,
                    gref: gref.0,
                })
                .expect("not full");
        }
        if self.rx.push_requests_and_check_notify() {
            let _ = self.evtchn.notify(self.port);
        }
    }

    /// Takes what arrived and posts buffers back up to 64 (a guest that keeps up).
    pub fn drain(&mut self) -> Vec<Result<Vec<u8>, i16>> {
        let got = self.recv();
        let want = 64usize.saturating_sub(self.posted());
        self.post_rx(want);
        got
    }

    /// Rx buffers posted and not yet answered.
    pub fn posted(&self) -> usize {
        self.rx_bufs.len()
    }

    /// Received frames (chains joined); failed slots as `Err(status)`.
    pub fn recv(&mut self) -> Vec<Result<Vec<u8>, i16>> {
        let mut out = Vec::new();
        while let Ok(Some(rsp)) = self.rx.next_response() {
            let rsp: RxResponse = rsp;
            let Some((pfn, gref)) = self.rx_bufs.remove(&rsp.id) else {
                panic!(
                    "the backend answered rx id {} that was never posted",
                    rsp.id
                );
            };
            self.dom
                .end_access(gref)
                .expect("an answered buffer's grant is free");
            if rsp.status < 0 {
                self.partial.clear();
                out.push(Err(rsp.status));
            } else {
                let mut buf = vec![0u8; rsp.status as usize];
                self.dom
                    .read(pfn, rsp.offset as usize, &mut buf)
                    .expect("the response lies in the page");
                self.partial.extend_from_slice(&buf);
                if rsp.flags & NETRXF_MORE_DATA == 0 {
                    out.push(Ok(std::mem::take(&mut self.partial)));
                }
            }
            self.dom.free_page(pfn).expect("free");
        }
        out
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
    /// dom0, as the harness uses it.
    pub dom0: DomainHandle,
    /// dom0 as the backend sees it (with the mid-pass hook).
    pub hooked: HookedDom0,
    /// dom0's sentinel pages.
    pub sentinels: Dom0Sentinels,
    /// The backend.
    pub nb: Nb,
    /// The pair's sender.
    pub a: Front,
    /// The pair's receiver.
    pub b: Front,
}

/// Builds the machine, dom0 with its sentinels, the backend, and the well-behaved pair `a` →
/// `b` (not connected yet).
pub fn base(cfg: Config) -> Base {
    let xen = Hypervisor::new(4096).expect("machine");
    let dom0 = xen.create_domain(DOM0_PAGES).expect("dom0");
    let sentinels = Dom0Sentinels::lay(&dom0);
    let hooked = HookedDom0::new(dom0.clone());
    let nb = Netback::new(hooked.clone(), cfg, POOL_PAGES).expect("netback");
    let a = Front::new(&xen, dom0.domid(), MAC_A, GOOD_PAGES);
    let b = Front::new(&xen, dom0.domid(), MAC_B, GOOD_PAGES);
    Base {
        xen,
        dom0,
        hooked,
        sentinels,
        nb,
        a,
        b,
    }
}

/// Connects `f` directly (no xenbus) and, if `pin`, pins its MAC to its port and locks it.
pub fn connect(nb: &mut Nb, f: &FrontendKeys, id: VifId, pin: Option<u8>) {
    nb.connect_vif(id, *f).expect("connect");
    if let Some(m) = pin {
        let port = nb
            .vifs()
            .find(|v| v.id() == id)
            .map(|v| v.bridge_port())
            .expect("connected vif");
        let br = nb.bridge();
        br.add_static(bridge_lite::MacAddr(mac(m)), port)
            .expect("pin MAC");
        br.set_port_locked(port, true).expect("lock");
    }
}

/// The pair still works: `a` sends one frame to `b` and `b` receives it byte-exact, within a
/// bounded number of passes (draining what `b` had queued and retrying a frame the backend had
/// no buffer for). Neither vif may be disabled.
pub fn pair_exchanges(nb: &mut Nb, a: &mut Front, b: &mut Front, seq: u32) {
    let f = frame(mac(MAC_A), mac(MAC_B), 1000, seq);
    for round in 0..24 {
        a.reap_tx();
        b.drain();
        assert!(
            a.send(&f),
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
