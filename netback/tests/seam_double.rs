//! netback over a second, minimal implementation of the hypervisor seam
//! (`hypervisor::double`), which shares no code with the embedded model: if netback connects,
//! switches, reports failures, tears down and releases everything over it, netback depends on
//! the seam alone. The double has no descriptors, so netback's fallback wait (on its
//! event-channel handle) is what blocks here.
//!
//! Two frontends are driven by hand through the double's traits (no netfront), netback is
//! polled on the test's thread. Nothing here measures time: loops are bounded in passes.

use std::collections::HashMap;
use std::time::Duration;

use hypervisor::double::{Dom, Double, Store, VifPaths};
use hypervisor::ringpage::{OwnRingPage, own_ring};
use hypervisor::{
    DomId, EventChannel, FrontendDomain, GrantRef, PAGE_SIZE, Pfn, Port, XenDomain, XenStore,
};
use netback::{Config, Netback, VifId};
use netif_ring::netif::{
    NETIF_RSP_ERROR, NETIF_RSP_OKAY, NETRXF_MORE_DATA, NETTXF_MORE_DATA, RxRequest, TxRequest,
    TxResponse,
};
use netif_ring::{FrontRing, PageRing, RxRing, TxRing};

type Nb = Netback<Dom>;

const BACKEND: DomId = 0;
/// Backend pages for frames: several 9014-byte frames in flight.
const POOL_PAGES: usize = 64;

/// An Ethernet frame from `02:00:00:00:00:<src>` to `..:<dst>` of `len` bytes, its payload a
/// counting pattern tagged by `seq`.
fn frame(src: u8, dst: u8, len: usize, seq: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, dst]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, src]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental EtherType
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(seq);
    }
    f
}

/// A netfront played by hand over any frontend domain of the seam: rings in its own pages,
/// granted to the backend; one tx slot per page-sized chunk; one page per rx buffer.
struct Front<D: FrontendDomain> {
    dom: D,
    evtchn: D::Evtchn,
    fe_path: String,
    tx: FrontRing<TxRing, PageRing<OwnRingPage<D>>>,
    rx: FrontRing<RxRing, PageRing<OwnRingPage<D>>>,
    ring_pages: [(Pfn, GrantRef); 2],
    port: Port,
    /// Granted pages by request id, tx and rx.
    tx_pages: HashMap<u16, (Pfn, GrantRef)>,
    rx_bufs: HashMap<u16, (Pfn, GrantRef)>,
    next_id: u16,
    partial: Vec<u8>,
}

impl<D: FrontendDomain> Front<D> {
    fn new(dom: D, fe_path: &str) -> Self {
        let (txp, rxp) = (dom.alloc_page().unwrap(), dom.alloc_page().unwrap());
        let tx = FrontRing::init(own_ring(&dom, txp).unwrap());
        let rx = FrontRing::init(own_ring(&dom, rxp).unwrap());
        let tx_ref = dom.grant_access(BACKEND, txp, false).unwrap();
        let rx_ref = dom.grant_access(BACKEND, rxp, false).unwrap();
        let evtchn = dom.open_evtchn().unwrap();
        let port = evtchn.alloc_unbound(BACKEND).unwrap();
        Front {
            dom,
            evtchn,
            fe_path: fe_path.to_string(),
            tx,
            rx,
            ring_pages: [(txp, tx_ref), (rxp, rx_ref)],
            port,
            tx_pages: HashMap::new(),
            rx_bufs: HashMap::new(),
            next_id: 0,
            partial: Vec::new(),
        }
    }

    fn id(&self) -> VifId {
        VifId {
            domid: self.dom.domid(),
            devid: 0,
        }
    }

    fn set_state(&self, state: &str) {
        let xs = self.dom.xenstore().unwrap();
        xs.write(&format!("{}/state", self.fe_path), state).unwrap();
    }

    /// Writes the keys netback reads, asking for copy mode unless told otherwise, then Connected.
    fn connect(&self, request_rx_copy: &str) {
        let xs = self.dom.xenstore().unwrap();
        for (key, v) in [
            ("tx-ring-ref", self.ring_pages[0].1.0.to_string()),
            ("rx-ring-ref", self.ring_pages[1].1.0.to_string()),
            ("event-channel", self.port.0.to_string()),
            ("request-rx-copy", request_rx_copy.to_string()),
            ("feature-rx-notify", "1".into()),
            ("feature-sg", "1".into()),
        ] {
            xs.write(&format!("{}/{key}", self.fe_path), &v).unwrap();
        }
        self.set_state("4");
    }

    fn next_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Transmits `data`, one slot per page-sized chunk (read-only grants), and pushes.
    fn send(&mut self, data: &[u8]) {
        let chunks: Vec<&[u8]> = data.chunks(PAGE_SIZE).collect();
        for (i, c) in chunks.iter().enumerate() {
            let pfn = self.dom.alloc_page().unwrap();
            self.dom.write(pfn, 0, c).unwrap();
            let gref = self.dom.grant_access(BACKEND, pfn, true).unwrap();
            let id = self.next_id();
            self.tx_pages.insert(id, (pfn, gref));
            let more = i + 1 < chunks.len();
            let size = if i == 0 { data.len() } else { c.len() };
            self.put_tx(TxRequest {
                gref: gref.0,
                offset: 0,
                flags: if more { NETTXF_MORE_DATA } else { 0 },
                id,
                size: size as u16,
            });
        }
        self.push_tx();
    }

    fn put_tx(&mut self, req: TxRequest) {
        self.tx.put_request(req).unwrap();
    }

    fn push_tx(&mut self) {
        if self.tx.push_requests_and_check_notify() {
            self.evtchn.notify(self.port).unwrap();
        }
    }

    /// Collects tx responses, ending and freeing the pages of those answered.
    fn reap_tx(&mut self) -> Vec<TxResponse> {
        let mut out = Vec::new();
        while let Some(rsp) = self.tx.next_response().unwrap() {
            if let Some((pfn, gref)) = self.tx_pages.remove(&rsp.id) {
                self.dom.end_access(gref).unwrap();
                self.dom.free_page(pfn).unwrap();
            }
            out.push(rsp);
        }
        out
    }

    fn put_rx(&mut self, gref: u32) -> u16 {
        let id = self.next_id();
        self.rx.put_request(RxRequest { id, pad: 0, gref }).unwrap();
        id
    }

    fn push_rx(&mut self) {
        if self.rx.push_requests_and_check_notify() {
            self.evtchn.notify(self.port).unwrap();
        }
    }

    /// Posts `n` rx buffers (writable grants) and pushes.
    fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            let pfn = self.dom.alloc_page().unwrap();
            let gref = self.dom.grant_access(BACKEND, pfn, false).unwrap();
            let id = self.put_rx(gref.0);
            self.rx_bufs.insert(id, (pfn, gref));
        }
        self.push_rx();
    }

    /// Received frames, multi-slot chains joined; an error response as `Err(status)`.
    fn recv(&mut self) -> Vec<Result<Vec<u8>, i16>> {
        let mut out = Vec::new();
        while let Some(rsp) = self.rx.next_response().unwrap() {
            // Buffers posted by hand (a bad gref) have no page; data for one is a bug.
            let data = match self.rx_bufs.remove(&rsp.id) {
                Some((pfn, gref)) => {
                    self.dom.end_access(gref).unwrap();
                    let mut bytes = vec![0u8; rsp.status.max(0) as usize];
                    self.dom.read(pfn, rsp.offset as usize, &mut bytes).unwrap();
                    self.dom.free_page(pfn).unwrap();
                    Some(bytes)
                }
                None => None,
            };
            match data {
                _ if rsp.status < 0 => {
                    self.partial.clear();
                    out.push(Err(rsp.status));
                }
                None => out.push(Err(i16::MIN)),
                Some(bytes) => {
                    self.partial.extend_from_slice(&bytes);
                    if rsp.flags & NETRXF_MORE_DATA == 0 {
                        out.push(Ok(std::mem::take(&mut self.partial)));
                    }
                }
            }
        }
        out
    }

    /// Takes everything down as a frontend does after Closed: buffers, rings, grants, port.
    fn teardown(mut self) {
        self.reap_tx();
        for (_, (pfn, gref)) in self.tx_pages.drain().chain(self.rx_bufs.drain()) {
            self.dom.end_access(gref).unwrap();
            self.dom.free_page(pfn).unwrap();
        }
        let Front {
            dom,
            evtchn,
            tx,
            rx,
            ring_pages,
            port,
            ..
        } = self;
        drop((tx, rx));
        for (pfn, gref) in ring_pages {
            dom.end_access(gref).unwrap();
            dom.free_page(pfn).unwrap();
        }
        evtchn.unbind(port).unwrap();
    }
}

fn state(xs: &Store, dir: &str) -> String {
    xs.read(&format!("{dir}/state")).unwrap_or_default()
}

/// Runs netback until `done` holds: a pass while there is work, the (fallback) wait when there
/// is none. Bounded in passes, not in time.
#[track_caller]
fn drive(nb: &mut Nb, mut done: impl FnMut(&Nb) -> bool) {
    for _ in 0..500 {
        if done(nb) {
            return;
        }
        if !nb.poll().unwrap() {
            nb.wait(Duration::from_millis(5)).unwrap();
        }
    }
    panic!("netback did not get there over the double");
}

/// Two frontends, A (domain 1) and B (domain 2), connected to netback in domain 0 through the
/// xenstore handshake.
struct Rig {
    double: Double,
    xs: Store,
    nb: Nb,
    a: Front<Dom>,
    b: Front<Dom>,
    pa: VifPaths,
    pb: VifPaths,
}

fn mac(n: u8) -> String {
    format!("02:00:00:00:00:{n:02x}")
}

fn connected() -> Rig {
    let double = Double::new();
    let dom0 = double.domain(BACKEND);
    let xs = dom0.xenstore().unwrap();
    let mut nb = Netback::new(dom0, Config::default(), POOL_PAGES).unwrap();
    let pa = double.add_vif(1, BACKEND, 0, &mac(1));
    let pb = double.add_vif(2, BACKEND, 0, &mac(2));
    drive(&mut nb, |_| {
        state(&xs, &pa.backend) == "2" && state(&xs, &pb.backend) == "2"
    });
    let feature = |k: &str| xs.read(&format!("{}/{k}", pa.backend)).unwrap();
    assert_eq!(feature("feature-rx-copy"), "1");
    assert_eq!(
        feature("feature-rx-flip"),
        "0",
        "the double cannot transfer pages, so flipping must not be offered"
    );
    let a = Front::new(double.domain(1), &pa.frontend);
    let b = Front::new(double.domain(2), &pb.frontend);
    a.connect("1");
    b.connect("1");
    drive(&mut nb, |_| {
        state(&xs, &pa.backend) == "4" && state(&xs, &pb.backend) == "4"
    });
    assert_eq!(nb.vifs().count(), 2);
    assert_eq!(double.live_mappings(), 4, "two rings per vif, mapped");
    assert_eq!(double.ports_in_use(BACKEND), 2, "one bound port per vif");
    Rig {
        double,
        xs,
        nb,
        a,
        b,
        pa,
        pb,
    }
}

/// What frontend `f` receives, driving netback until `n` frames (or errors) have arrived.
#[track_caller]
fn receive(nb: &mut Nb, f: &mut Front<Dom>, n: usize) -> Vec<Result<Vec<u8>, i16>> {
    let mut got = Vec::new();
    drive(nb, |_| {
        got.extend(f.recv());
        got.len() >= n
    });
    assert_eq!(got.len(), n, "{got:?}");
    got
}

#[test]
fn two_frontends_connect_and_frames_cross_byte_exact() {
    let Rig {
        double,
        mut nb,
        mut a,
        mut b,
        ..
    } = connected();
    // Flush the events binding left pending, so what follows starts with every port unmasked.
    nb.wait(Duration::ZERO).unwrap();
    nb.poll().unwrap();
    assert_eq!(double.masked_ports(BACKEND), 0);

    // B's first posting notifies; with no descriptor to poll, netback's wait takes the event
    // from its event-channel handle and leaves the port masked until the pass after it.
    let before = double.events_delivered(BACKEND);
    b.post_rx(8);
    nb.wait(Duration::from_secs(1)).unwrap();
    assert_eq!(double.events_delivered(BACKEND), before + 1);
    assert_eq!(double.masked_ports(BACKEND), 1);
    let t = std::time::Instant::now();
    nb.poll_at(t).unwrap();
    // The posting found no frame to deliver: its event was spurious, the second in a row after
    // the binding's, so the late EOI holds it back for a millisecond (XSA-332 throttling); a
    // pass after that unmasks it.
    nb.poll_at(t + Duration::from_millis(5)).unwrap();
    assert_eq!(double.masked_ports(BACKEND), 0, "a pass unmasked it");

    // One slot, a full-size frame, and a jumbo frame chained over three slots each way.
    let sizes = [60, 1514, 9014];
    let sent: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| frame(1, 2, len, i as u8))
        .collect();
    for f in &sent {
        a.send(f);
    }
    let got = receive(&mut nb, &mut b, 3);
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(g.as_deref(), Ok(&s[..]), "frame of {} bytes", s.len());
    }
    let rsps = a.reap_tx();
    assert_eq!(rsps.len(), 1 + 1 + 3, "every tx slot answered");
    assert!(rsps.iter().all(|r| r.status == NETIF_RSP_OKAY), "{rsps:?}");

    a.post_rx(8);
    let back = frame(2, 1, 9014, 9);
    b.send(&back);
    let got = receive(&mut nb, &mut a, 1);
    assert_eq!(got[0].as_deref(), Ok(&back[..]));

    let (sa, sb) = (nb.vif_stats(a.id()).unwrap(), nb.vif_stats(b.id()).unwrap());
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    assert_eq!((sa.tx_packets, sa.tx_bytes), (3, total));
    assert_eq!((sb.rx_packets, sb.rx_bytes), (3, total));
    assert_eq!((sb.tx_packets, sa.rx_packets), (1, 1));
    assert_eq!(sa.tx_copy_errors + sb.rx_copy_errors, 0);
    assert!(sa.fatal.is_none() && sb.fatal.is_none());
}

#[test]
fn failing_grants_are_answered_with_errors_and_counted() {
    let Rig {
        mut nb,
        mut a,
        mut b,
        ..
    } = connected();
    // rx: B posts a buffer whose gref is beyond its grant table.
    b.put_rx(60_000);
    b.push_rx();
    a.send(&frame(1, 2, 60, 1));
    let got = receive(&mut nb, &mut b, 1);
    assert_eq!(got, [Err(NETIF_RSP_ERROR)]);
    assert_eq!(nb.vif_stats(b.id()).unwrap().rx_copy_errors, 1);

    // tx: A names a gref it never granted.
    a.reap_tx();
    a.put_tx(TxRequest {
        gref: 60_000,
        offset: 0,
        flags: 0,
        id: 999,
        size: 60,
    });
    a.push_tx();
    let mut rsps = Vec::new();
    drive(&mut nb, |_| {
        rsps.extend(a.reap_tx());
        !rsps.is_empty()
    });
    assert_eq!(
        rsps,
        [TxResponse {
            id: 999,
            status: NETIF_RSP_ERROR
        }]
    );
    let sa = nb.vif_stats(a.id()).unwrap();
    assert_eq!((sa.tx_copy_errors, sa.tx_packets), (1, 1));

    // Neither vif was disabled: good traffic still flows.
    b.post_rx(4);
    let f = frame(1, 2, 1514, 2);
    a.send(&f);
    let got = receive(&mut nb, &mut b, 1);
    assert_eq!(got[0].as_deref(), Ok(&f[..]));
    assert!(nb.vifs().all(|v| !v.is_disabled()));
}

#[test]
fn frontend_closed_closes_the_backend_and_the_vif_is_gone() {
    let Rig {
        double,
        xs,
        mut nb,
        a,
        b,
        pa,
        pb,
    } = connected();
    let a_id = a.id();
    a.set_state("6");
    drive(&mut nb, |_| state(&xs, &pa.backend) == "6");
    assert!(nb.vifs().all(|v| v.id() != a_id), "A's vif is disconnected");
    assert!(nb.vif_stats(a_id).is_none());
    assert_eq!(double.live_mappings(), 2, "A's rings unmapped");
    assert_eq!(double.ports_in_use(BACKEND), 1, "A's port closed");
    // Unmapped for real: A can end its ring grants and free everything.
    a.teardown();
    assert_eq!(double.grants_in_use(1), 0);
    // The toolstack removes the device: netback forgets it; B is untouched.
    double.remove_vif(&pa);
    drive(&mut nb, |nb| nb.snapshot().devices == 1);
    assert_eq!(state(&xs, &pb.backend), "4");
    assert_eq!(nb.vifs().map(|v| v.id()).collect::<Vec<_>>(), [b.id()]);
}

#[test]
fn flipping_is_refused_because_the_double_cannot_transfer() {
    let double = Double::new();
    let dom0 = double.domain(BACKEND);
    let mut nb = Netback::new(dom0.clone(), Config::default(), POOL_PAGES).unwrap();
    let err = nb.set_allow_flip(true).unwrap_err();
    assert!(
        matches!(
            err,
            netback::Error::Config {
                what: "page flipping",
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("cannot transfer pages") && msg.contains("copy mode"),
        "{msg}"
    );
    nb.set_allow_flip(false).unwrap();
    // A frontend that asks for flipping anyway is refused with an error node and Closed.
    let p = double.add_vif(1, BACKEND, 0, &mac(1));
    let xs = dom0.xenstore().unwrap();
    drive(&mut nb, |_| state(&xs, &p.backend) == "2");
    let f = Front::new(double.domain(1), &p.frontend);
    f.connect("0");
    drive(&mut nb, |_| state(&xs, &p.backend) == "6");
    let error = xs.read(&format!("{}/error", p.backend)).unwrap();
    assert!(error.contains("feature-rx-flip is 0"), "{error}");
    assert_eq!(nb.vifs().count(), 0);
    assert_eq!(double.live_mappings(), 0);
}

#[test]
fn dropping_netback_releases_every_mapping_port_watch_and_page() {
    let Rig {
        double,
        xs,
        mut nb,
        mut a,
        mut b,
        ..
    } = connected();
    b.post_rx(4);
    let f = frame(1, 2, 9014, 3);
    a.send(&f);
    let got = receive(&mut nb, &mut b, 1);
    assert_eq!(got[0].as_deref(), Ok(&f[..]));
    // A frame left queued for A (which posted no buffers) must not pin anything either.
    b.send(&frame(2, 1, 1514, 4));
    drive(&mut nb, |_| !b.reap_tx().is_empty());
    assert!(double.pages_in_use(BACKEND) > 0);
    assert_eq!(
        double.watches(),
        5,
        "the backend tree, and each frontend's state and request-multicast-control"
    );

    drop(nb);
    assert_eq!(double.live_mappings(), 0, "every ring unmapped");
    assert_eq!(double.ports_in_use(BACKEND), 0, "every bound port closed");
    assert_eq!(
        double.watches(),
        0,
        "the backend's xenstore connection closed"
    );
    assert_eq!(double.pages_in_use(BACKEND), 0, "every frame page returned");
    drop(xs);
    // The frontends' ports are unbound again (a new backend could bind them) and their grants
    // are no longer held: each frontend ends and frees everything.
    let rebind = double.domain(BACKEND).open_evtchn().unwrap();
    rebind.bind_interdomain(1, a.port).unwrap();
    drop(rebind);
    for (f, domid) in [(a, 1), (b, 2)] {
        f.teardown();
        assert_eq!(double.grants_in_use(domid), 0);
        assert_eq!(double.pages_in_use(domid), 0);
        assert_eq!(double.ports_in_use(domid), 0);
    }
}

#[test]
fn the_nic_model_uplink_runs_over_the_double_too() {
    let Rig {
        double,
        mut nb,
        mut b,
        ..
    } = connected();
    // The wire's far end is a pseudo-domain of its own, woken through the double's channels.
    let remote = double.domain(3);
    let (_port, mut wire) = xen_model::nic::attach(&mut nb, &remote, 1514).unwrap();
    assert_eq!(double.ports_in_use(3), 1);
    b.post_rx(4);
    let inbound = frame(3, 2, 1514, 5);
    assert!(
        wire.send(inbound.len(), |buf| buf.copy_from_slice(&inbound))
            .is_some()
    );
    wire.flush();
    let got = receive(&mut nb, &mut b, 1);
    assert_eq!(got[0].as_deref(), Ok(&inbound[..]));
    // B answers the remote host, whose MAC the switch learnt on the uplink's port.
    let outbound = frame(2, 3, 1000, 6);
    b.send(&outbound);
    let mut out = None;
    drive(&mut nb, |_| {
        out = out.take().or_else(|| wire.take_frame().map(|f| f.to_vec()));
        out.is_some()
    });
    assert_eq!(out.as_deref(), Some(&outbound[..]));
    drop(nb);
    assert_eq!(double.ports_in_use(BACKEND), 0, "the NIC's port closed too");
}
