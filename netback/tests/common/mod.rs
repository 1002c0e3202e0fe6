//! A frontend driven by hand, for netback's tests: it speaks the ring protocol directly (so tests
//! can also break it on purpose), with no netfront in the way.
#![allow(dead_code)]

use std::collections::HashMap;

use hypervisor::ringpage::{OwnRingPage, own_ring};
use hypervisor::{GrantRef, PAGE_SIZE, Pfn, Port};
use netback::{Config, FrontendKeys, FrontendOffloads, Netback, RxMode, VifId};
use netif_ring::netif::{
    NETRXF_MORE_DATA, NETTXF_MORE_DATA, RxRequest, RxResponse, TxRequest, TxResponse,
};
use netif_ring::{FrontRing, PageRing, RxRing, TxRing};
use xen_model::{DomainHandle, EvtchnHandle, Hypervisor};

pub type TxFront = FrontRing<TxRing, PageRing<OwnRingPage<DomainHandle>>>;
pub type RxFront = FrontRing<RxRing, PageRing<OwnRingPage<DomainHandle>>>;
pub type Nb = Netback<DomainHandle>;

/// A machine with dom0 and a netback on the calling thread.
pub fn machine(cfg: Config) -> (Hypervisor, DomainHandle, Nb) {
    let xen = Hypervisor::new(16 * 1024).unwrap();
    let dom0 = xen.create_domain(4096).unwrap();
    let nb = Netback::new(dom0.clone(), cfg, 2048).unwrap();
    (xen, dom0, nb)
}

/// An Ethernet frame from `src` to `dst` (locally administered MACs built from the numbers) of
/// `len` bytes with a counting payload tagged by `seq`.
pub fn frame(src: u8, dst: u8, len: usize, seq: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, dst]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, src]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental EtherType
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(seq);
    }
    f
}

pub struct RawFront {
    pub dom: DomainHandle,
    pub evtchn: EvtchnHandle,
    pub backend: u16,
    pub tx: TxFront,
    pub rx: RxFront,
    pub keys: FrontendKeys,
    pub port: Port,
    pub mac: u8,
    /// Tx pages by request id.
    tx_pages: HashMap<u16, (Pfn, GrantRef)>,
    /// Rx buffers by request id.
    rx_bufs: HashMap<u16, (Pfn, GrantRef)>,
    /// Rx request ids in the order they were posted (responses come back in that order).
    rx_order: std::collections::VecDeque<u16>,
    next_id: u16,
    pub tx_responses: Vec<TxResponse>,
    partial: Vec<u8>,
}

impl RawFront {
    /// A guest with rings granted to `dom0`, in `mode`.
    pub fn new(xen: &Hypervisor, dom0: &DomainHandle, mac: u8, mode: RxMode) -> RawFront {
        let dom = xen.create_domain(1024).unwrap();
        let be = dom0.domid();
        let txp = dom.alloc_page().unwrap();
        let rxp = dom.alloc_page().unwrap();
        let tx = FrontRing::init(own_ring(&dom, txp).unwrap());
        let rx = FrontRing::init(own_ring(&dom, rxp).unwrap());
        let tx_ring_ref = dom.grant_access(be, txp, false).unwrap();
        let rx_ring_ref = dom.grant_access(be, rxp, false).unwrap();
        let evtchn = dom.open_evtchn();
        let port = evtchn.alloc_unbound(be).unwrap();
        RawFront {
            dom,
            evtchn,
            backend: be,
            tx,
            rx,
            keys: FrontendKeys {
                tx_ring_ref,
                rx_ring_ref,
                event_channel: port,
                mode,
                // A frontend driven by hand: it reassembles multi-slot frames but takes no
                // partial checksums or super-frames unless a test says so.
                offload: FrontendOffloads {
                    sg: true,
                    ..FrontendOffloads::default()
                },
            },
            port,
            mac,
            tx_pages: HashMap::new(),
            rx_bufs: HashMap::new(),
            rx_order: std::collections::VecDeque::new(),
            next_id: 0,
            tx_responses: Vec::new(),
            partial: Vec::new(),
        }
    }

    pub fn id(&self) -> VifId {
        VifId {
            domid: self.dom.domid(),
            devid: 0,
        }
    }

    /// Connects this frontend to `nb` directly (no xenbus).
    pub fn connect(&self, nb: &mut Nb) {
        nb.connect_vif(self.id(), self.keys).unwrap();
    }

    fn id_next(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Transmits `data`, one slot per page-sized chunk, and pushes.
    pub fn send(&mut self, data: &[u8]) {
        let chunks: Vec<&[u8]> = data.chunks(PAGE_SIZE).collect();
        for (i, c) in chunks.iter().enumerate() {
            let pfn = self.dom.alloc_page().unwrap();
            self.dom.write(pfn, 0, c).unwrap();
            let gref = self.dom.grant_access(self.backend, pfn, true).unwrap();
            let id = self.id_next();
            self.tx_pages.insert(id, (pfn, gref));
            let req = TxRequest {
                gref: gref.0,
                offset: 0,
                flags: if i + 1 < chunks.len() {
                    NETTXF_MORE_DATA
                } else {
                    0
                },
                id,
                size: if i == 0 {
                    data.len() as u16
                } else {
                    c.len() as u16
                },
            };
            self.tx.put_request(req).unwrap();
        }
        self.push_tx();
    }

    /// A granted tx page holding `data` at `offset`, for hand-built requests.
    pub fn tx_page(&mut self, offset: usize, data: &[u8]) -> GrantRef {
        let pfn = self.dom.alloc_page().unwrap();
        self.dom.write(pfn, offset, data).unwrap();
        self.dom.grant_access(self.backend, pfn, true).unwrap()
    }

    pub fn push_tx(&mut self) {
        if self.tx.push_requests_and_check_notify() {
            self.evtchn.notify(self.port).unwrap();
        }
    }

    /// Collects tx responses and ends their grants.
    pub fn reap_tx(&mut self) -> usize {
        let mut n = 0;
        while let Some(rsp) = self.tx.next_response().unwrap() {
            if let Some((pfn, gref)) = self.tx_pages.remove(&rsp.id) {
                self.dom.end_access(gref).unwrap();
                self.dom.free_page(pfn).unwrap();
            }
            self.tx_responses.push(rsp);
            n += 1;
        }
        n
    }

    /// Posts `n` rx buffers (copy: granted pages; flip: accept-transfer entries) and pushes.
    pub fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            let pfn = self.dom.alloc_page().unwrap();
            let gref = match self.keys.mode {
                RxMode::Copy => self.dom.grant_access(self.backend, pfn, false).unwrap(),
                RxMode::Flip => self.dom.grant_accept_transfer(self.backend, pfn).unwrap(),
            };
            let id = self.id_next();
            self.rx_bufs.insert(id, (pfn, gref));
            self.rx_order.push_back(id);
            self.rx
                .put_request(RxRequest {
                    id,
                    pad: 0,
                    gref: gref.0,
                })
                .unwrap();
        }
        if self.rx.push_requests_and_check_notify() {
            self.evtchn.notify(self.port).unwrap();
        }
    }

    /// Received frames (multi-slot chains joined); errors as `Err(status)`.
    pub fn recv(&mut self) -> Vec<Result<Vec<u8>, i16>> {
        let mut out = Vec::new();
        while let Some(rsp) = self.rx.next_response().unwrap() {
            let rsp: RxResponse = rsp;
            let Some((pfn, gref)) = self.rx_bufs.remove(&rsp.id) else {
                out.push(Err(i16::MIN));
                continue;
            };
            self.rx_order.retain(|i| *i != rsp.id);
            match self.keys.mode {
                RxMode::Copy => self.dom.end_access(gref).unwrap(),
                RxMode::Flip => {
                    let _ = self.dom.end_transfer(gref).unwrap();
                }
            }
            if rsp.status < 0 {
                self.partial.clear();
                out.push(Err(rsp.status));
            } else {
                let mut buf = vec![0u8; rsp.status as usize];
                self.dom.read(pfn, rsp.offset as usize, &mut buf).unwrap();
                self.partial.extend_from_slice(&buf);
                if rsp.flags & NETRXF_MORE_DATA == 0 {
                    out.push(Ok(std::mem::take(&mut self.partial)));
                }
            }
            self.dom.free_page(pfn).unwrap();
        }
        out
    }

    /// Received frames with their offload metadata, checking the rx protocol as netfront relies
    /// on it: one response per request, in request order (an extra-info slot consumes the
    /// request posted after the frame's first).
    pub fn recv_meta(&mut self) -> Vec<RxFrame> {
        let mut out = Vec::new();
        let mut cur: Option<RxFrame> = None;
        let mut want_extra = false;
        while let Some(&id) = self.rx_order.front() {
            let (pfn, gref) = self.rx_bufs[&id];
            if want_extra {
                // The extra-info slot overlays this request's response; its buffer is unused.
                let Some(e) = self
                    .rx
                    .next_response_as::<netif_ring::netif::ExtraInfo>()
                    .unwrap()
                else {
                    break;
                };
                want_extra = false;
                let f = cur.as_mut().expect("an extra slot follows a first slot");
                f.extra = Some(zerocopy::IntoBytes::as_bytes(&e).try_into().unwrap());
                self.dom.end_access(gref).unwrap();
                if f.first_flags & NETRXF_MORE_DATA == 0 {
                    out.push(cur.take().unwrap());
                }
            } else {
                let Some(rsp) = self.rx.next_response().unwrap() else {
                    break;
                };
                let rsp: RxResponse = rsp;
                assert_eq!(rsp.id, id, "responses come back in request order");
                assert!(rsp.status >= 0, "an rx error: {}", rsp.status);
                self.dom.end_access(gref).unwrap();
                let mut buf = vec![0u8; rsp.status as usize];
                self.dom.read(pfn, rsp.offset as usize, &mut buf).unwrap();
                let f = cur.get_or_insert_with(|| RxFrame {
                    first_flags: rsp.flags,
                    ..RxFrame::default()
                });
                f.data.extend_from_slice(&buf);
                f.slots += 1;
                want_extra = f.slots == 1 && rsp.flags & netif_ring::netif::NETRXF_EXTRA_INFO != 0;
                if rsp.flags & NETRXF_MORE_DATA == 0 && !want_extra {
                    out.push(cur.take().unwrap());
                }
            }
            self.rx_bufs.remove(&id);
            self.rx_order.pop_front();
            self.dom.free_page(pfn).unwrap();
        }
        if self.rx_order.is_empty() {
            assert!(
                self.rx.next_response().unwrap().is_none(),
                "a response for no posted request"
            );
        }
        out
    }

    /// Transmits `data` (one slot per page-sized chunk) with offload `flags` on the first
    /// request and, if given, a GSO extra-info slot after it, as Linux netfront lays it out.
    pub fn send_with(
        &mut self,
        data: &[u8],
        flags: u16,
        extra: Option<netif_ring::netif::ExtraInfo>,
    ) {
        let chunks: Vec<&[u8]> = data.chunks(PAGE_SIZE).collect();
        for (i, c) in chunks.iter().enumerate() {
            let pfn = self.dom.alloc_page().unwrap();
            self.dom.write(pfn, 0, c).unwrap();
            let gref = self.dom.grant_access(self.backend, pfn, true).unwrap();
            let id = self.id_next();
            self.tx_pages.insert(id, (pfn, gref));
            let mut f = if i + 1 < chunks.len() {
                NETTXF_MORE_DATA
            } else {
                0
            };
            if i == 0 {
                f |= flags;
                if extra.is_some() {
                    f |= netif_ring::netif::NETTXF_EXTRA_INFO;
                }
            }
            self.tx
                .put_request(TxRequest {
                    gref: gref.0,
                    offset: 0,
                    flags: f,
                    id,
                    size: if i == 0 {
                        data.len() as u16
                    } else {
                        c.len() as u16
                    },
                })
                .unwrap();
            if i == 0
                && let Some(e) = extra
            {
                self.tx.put_request_as(e).unwrap();
            }
        }
        self.push_tx();
    }
}

/// A frame received with its rx metadata.
#[derive(Debug, Default, Clone)]
pub struct RxFrame {
    /// The frame.
    pub data: Vec<u8>,
    /// The first slot's flags.
    pub first_flags: u16,
    /// The GSO extra-info slot's bytes, if one followed.
    pub extra: Option<[u8; 8]>,
    /// Data slots it took.
    pub slots: usize,
}
