//! A test-only backend: just enough netback to exercise the frontend. It serves one or more
//! vifs from dom0 on its own thread: xenbus handshake, tx by grant copy into its own pages, rx by
//! grant copy (or page transfer in flip mode) into the posted buffers, teardown. Frames from the
//! frontends are captured and routed per [`Route`]; tests can inject frames for delivery.
//!
//! Offloads are laid out as Linux netback lays them out (`xenvif_rx_skb`): the first data slot
//! carries the checksum flags, `more_data` and `extra_info`; the extra-info slots follow it, each
//! consuming a request; then the other data slots. A routed frame keeps its checksum state
//! (tx `csum_blank` becomes rx `csum_blank|data_validated`, as `offload::netif::to_rx` maps it).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hypervisor::abi::{GnttabCopy, GnttabCopyPtr, GnttabTransfer};
use hypervisor::ringpage::mapped_ring;
use hypervisor::{DomId, GrantRef, GrantStatus, Pfn, Port};
use netif_ring::netif::{
    ExtraInfo, NETIF_RSP_ERROR, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED,
    NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    NETTXF_MORE_DATA, RxResponse, TxResponse, XEN_NETIF_EXTRA_TYPE_GSO,
};
use netif_ring::{PageRing, RxBackRing, TxBackRing};
use offload::{Csum, Gso, GsoKind, OffloadMeta};
use xen_model::{DomainHandle, EvtchnHandle, GrantMapping, Hypervisor, XsConnection};

pub const PAGE: usize = 4096;

/// Where frames sent by a frontend go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Captured only.
    Capture,
    /// Back to the same vif.
    Loopback,
    /// To the other vif (two vifs).
    Cross,
}

/// Misbehaviour to show the frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    None,
    /// After connecting, write an impossible `rsp_prod` into the tx ring.
    BogusTxRspProd,
    /// After connecting, write an impossible `rsp_prod` into the rx ring.
    BogusRxRspProd,
    /// Answer every rx request with an offset that runs past the page end.
    RxOffsetPastPage,
    /// Ignore the frontend's Closing: keep the rings mapped.
    IgnoreClose,
    /// Answer rx requests with NETIF_RSP_ERROR.
    RxErrorStatus,
    /// Put a (GSO) extra-info slot after each frame's first slot.
    RxExtraInfo,
    /// Answer tx requests with ids the frontend never used.
    TxBadId,
    /// Notify every connected frontend on every pass, work or not (XSA-391's storm); serves
    /// normally otherwise.
    EventStorm,
}

#[derive(Debug, Clone)]
pub struct Opts {
    pub features: Vec<(&'static str, &'static str)>,
    pub route: Route,
    pub hostile: Hostile,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            features: vec![
                ("feature-rx-copy", "1"),
                ("feature-rx-flip", "1"),
                ("feature-sg", "1"),
                ("feature-rx-notify", "1"),
            ],
            route: Route::Capture,
            hostile: Hostile::None,
        }
    }
}

/// A frame to deliver into an rx ring, with the metadata netback would put beside it.
#[derive(Debug, Clone, Default)]
pub struct RxFrame {
    pub data: Vec<u8>,
    /// `NETRXF_csum_blank` / `NETRXF_data_validated` bits for the first slot.
    pub csum_flags: u16,
    /// Extra-info slots after the first slot, in order (netback: one GSO slot). Their flags
    /// are written as given (set `XEN_NETIF_EXTRA_FLAG_MORE` on all but the last yourself).
    pub extras: Vec<ExtraInfo>,
    /// Publish the first slot and the extras only: the rest of the frame never comes.
    pub truncate_after_extras: bool,
    /// Bytes left free before the data in each buffer (XDP headroom); the data slots carry
    /// `PAGE - headroom` bytes each.
    pub headroom: u16,
    /// With a headroom, answer as Linux's netback does: offset 0 and a status that counts the
    /// headroom (the frontend learns where the data is from the XDP extra).
    pub linux_headroom: bool,
}

impl RxFrame {
    /// A frame without offload metadata.
    pub fn plain(data: Vec<u8>) -> Self {
        Self {
            data,
            ..Self::default()
        }
    }

    /// A frame with its offload metadata, laid out by `offload::netif::to_rx` (netback's
    /// mapping).
    pub fn with_meta(data: Vec<u8>, meta: &OffloadMeta) -> Self {
        let (flags, extra) = offload::netif::to_rx(meta, data.len());
        Self {
            data,
            csum_flags: flags & (NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED),
            extras: extra.into_iter().collect(),
            ..Self::default()
        }
    }

    /// A GSO super-frame (partial checksum) with MSS `mss`.
    pub fn gso(data: Vec<u8>, kind: GsoKind, mss: u16) -> Self {
        let loc = offload::parse::locate(&data).expect("a TCP frame");
        let meta = OffloadMeta {
            csum: Csum::Partial {
                start: loc.csum_start as u16,
                offset: loc.csum_offset as u16,
            },
            gso: Some(Gso::new(kind, mss)),
        };
        Self::with_meta(data, &meta)
    }
}

/// How the double laid out one delivered frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxLayout {
    /// The first response's flags.
    pub first_flags: u16,
    /// The extra-info slots' bytes, as written into the ring.
    pub extras: Vec<[u8; 8]>,
    /// Ring slots used (data and extra).
    pub slots: usize,
}

impl Opts {
    /// The default features plus Linux netback's offload keys (`feature-gso-tcpv4`,
    /// `feature-gso-tcpv6`, `feature-ipv6-csum-offload`).
    pub fn offloads() -> Self {
        let mut o = Self::default();
        o.features.extend([
            ("feature-gso-tcpv4", "1"),
            ("feature-gso-tcpv6", "1"),
            ("feature-ipv6-csum-offload", "1"),
        ]);
        o
    }
}

type Mapped = PageRing<GrantMapping>;

struct Conn {
    tx: TxBackRing<Mapped>,
    rx: RxBackRing<Mapped>,
    port: Port,
    copy: bool,
}

struct Vif {
    fe: DomId,
    be_dir: String,
    fe_dir: String,
    conn: Option<Conn>,
    pending: VecDeque<RxFrame>,
    closed: bool,
}

/// What the backend saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Frames received from frontends: (vif index, bytes).
    pub frames: Vec<(usize, Vec<u8>)>,
    /// The first tx request's flags of each frame in `frames`.
    pub tx_flags: Vec<u16>,
    /// Frames delivered into rx rings.
    pub delivered: usize,
    /// How each delivered frame was laid out, in order.
    pub rx_layouts: Vec<RxLayout>,
    /// Notifications sent by `Hostile::EventStorm`.
    pub storm_notifies: u64,
}

pub struct TestBackend {
    stop: Arc<AtomicBool>,
    inject: Sender<(usize, RxFrame)>,
    pub seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl TestBackend {
    /// Starts serving `vifs` = (frontend domid, devid) from `dom0`.
    pub fn start(xen: &Hypervisor, dom0: DomainHandle, vifs: &[(DomId, u32)], opts: Opts) -> Self {
        let mut v = Vec::new();
        for &(fe, devid) in vifs {
            let p = xen
                .add_vif(fe, dom0.domid(), devid, "00:16:3e:00:00:01")
                .expect("add_vif");
            v.push(Vif {
                fe,
                be_dir: p.backend,
                fe_dir: p.frontend,
                conn: None,
                pending: VecDeque::new(),
                closed: false,
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (inject, rx) = channel();
        let thread = {
            let stop = stop.clone();
            let seen = seen.clone();
            std::thread::spawn(move || run(dom0, v, opts, stop, seen, rx))
        };
        Self {
            stop,
            inject,
            seen,
            thread: Some(thread),
        }
    }

    /// Queues a frame for delivery into vif `i`'s rx ring.
    pub fn inject(&self, i: usize, frame: Vec<u8>) {
        self.inject_rx(i, RxFrame::plain(frame));
    }

    /// Queues a frame with offload metadata for delivery into vif `i`'s rx ring.
    pub fn inject_rx(&self, i: usize, frame: RxFrame) {
        self.inject.send((i, frame)).expect("backend alive");
    }

    pub fn frames(&self) -> Vec<(usize, Vec<u8>)> {
        self.seen.lock().unwrap().frames.clone()
    }

    /// The first tx request's flags of every captured frame.
    pub fn tx_flags(&self) -> Vec<u16> {
        self.seen.lock().unwrap().tx_flags.clone()
    }

    /// Notifications the storm has sent so far.
    pub fn storm_notifies(&self) -> u64 {
        self.seen.lock().unwrap().storm_notifies
    }

    pub fn rx_layouts(&self) -> Vec<RxLayout> {
        self.seen.lock().unwrap().rx_layouts.clone()
    }

    pub fn stop(mut self) {
        // Relaxed: a stop request publishes no data; pairs with the loop's Relaxed load, and
        // join() orders everything after.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("backend thread panicked");
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        // Relaxed: a stop request publishes no data; pairs with the loop's Relaxed load, and
        // join() orders everything after.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn state(xs: &XsConnection, dir: &str) -> u32 {
    xs.read(&format!("{dir}/state"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

fn run(
    dom0: DomainHandle,
    mut vifs: Vec<Vif>,
    opts: Opts,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    inject: Receiver<(usize, RxFrame)>,
) {
    let xs = dom0.xenstore();
    let evtchn = dom0.open_evtchn();
    let mut delivered = Vec::new();
    for v in &vifs {
        for (k, val) in &opts.features {
            xs.write(&format!("{}/{k}", v.be_dir), val).unwrap();
        }
        xs.write(&format!("{}/state", v.be_dir), "2").unwrap();
        xs.watch(&format!("{}/state", v.fe_dir), "fe").unwrap();
    }
    let staging: Vec<Pfn> = (0..20).map(|_| dom0.alloc_page().unwrap()).collect();
    let mut frame = vec![0u8; 70000];
    // Relaxed: pairs with the Relaxed store in stop()/drop(); only a flag.
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        // Control plane.
        while let Ok(Some(_)) = xs.read_watch(Some(Duration::ZERO)) {
            for v in vifs.iter_mut() {
                let s = state(&xs, &v.fe_dir);
                if s == 4 && v.conn.is_none() && !v.closed {
                    v.conn = Some(connect(&dom0, &evtchn, &xs, v, opts.hostile));
                } else if s >= 5 && v.conn.is_some() && opts.hostile != Hostile::IgnoreClose {
                    if let Some(c) = v.conn.take() {
                        let _ = evtchn.unbind(c.port);
                    } // unmaps the rings
                    xs.write(&format!("{}/state", v.be_dir), "5").unwrap();
                    v.closed = true;
                } else if s == 6 && v.closed {
                    xs.write(&format!("{}/state", v.be_dir), "6").unwrap();
                }
            }
        }
        while let Ok((i, f)) = inject.try_recv() {
            vifs[i].pending.push_back(f);
        }
        // TX: guest -> backend.
        for i in 0..vifs.len() {
            let fe = vifs[i].fe;
            let Some(c) = vifs[i].conn.as_mut() else {
                continue;
            };
            if matches!(
                opts.hostile,
                Hostile::BogusTxRspProd | Hostile::BogusRxRspProd
            ) {
                // A broken backend: it published garbage and serves nothing.
                continue;
            }
            let mut out = Vec::new();
            let mut answered = false;
            while let Ok(Some(first)) = c.tx.next_request() {
                busy = true;
                answered = true;
                let mut slots = vec![first];
                while slots.last().unwrap().flags & NETTXF_MORE_DATA != 0 {
                    match c.tx.next_request() {
                        Ok(Some(r)) => slots.push(r),
                        _ => break,
                    }
                }
                let rest: usize = slots[1..].iter().map(|s| s.size as usize).sum();
                let total = first.size as usize;
                let mut ops = Vec::new();
                for (k, s) in slots.iter().enumerate() {
                    let len = if k == 0 {
                        total - rest
                    } else {
                        s.size as usize
                    };
                    ops.push(GnttabCopy::new(
                        GnttabCopyPtr::gref(fe, GrantRef(s.gref), s.offset),
                        GnttabCopyPtr::local(staging[k], 0),
                        len as u16,
                    ));
                }
                dom0.grant_copy_abi(&mut ops).unwrap();
                let ok = ops.iter().all(|o| o.status() == GrantStatus::Okay);
                let mut at = 0;
                for (k, o) in ops.iter().enumerate() {
                    dom0.read(staging[k], 0, &mut frame[at..at + o.len as usize])
                        .unwrap();
                    at += o.len as usize;
                }
                for s in &slots {
                    let status = if ok { NETIF_RSP_OKAY } else { NETIF_RSP_ERROR };
                    let id = if opts.hostile == Hostile::TxBadId {
                        s.id.wrapping_add(1000)
                    } else {
                        s.id
                    };
                    c.tx.put_response(TxResponse { id, status }).unwrap();
                }
                if ok {
                    out.push((frame[..total].to_vec(), first.flags));
                }
            }
            if answered && c.tx.push_responses_and_check_notify() {
                evtchn.notify(c.port).unwrap();
            }
            for (f, flags) in out {
                {
                    let mut s = seen.lock().unwrap();
                    s.frames.push((i, f.clone()));
                    s.tx_flags.push(flags);
                }
                // The checksum state travels with the frame, as netback's from_tx/to_rx map it.
                let csum_flags = if flags & NETTXF_CSUM_BLANK != 0 {
                    NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED
                } else if flags & NETTXF_DATA_VALIDATED != 0 {
                    NETRXF_DATA_VALIDATED
                } else {
                    0
                };
                let rf = RxFrame {
                    csum_flags,
                    ..RxFrame::plain(f)
                };
                match opts.route {
                    Route::Capture => {}
                    Route::Loopback => vifs[i].pending.push_back(rf),
                    Route::Cross => {
                        let j = 1 - i;
                        vifs[j].pending.push_back(rf);
                    }
                }
            }
        }
        // RX: backend -> guest.
        for v in vifs.iter_mut() {
            let fe = v.fe;
            let Some(c) = v.conn.as_mut() else {
                continue;
            };
            let mut delivered = 0;
            while let Some(f) = v.pending.front() {
                let need = f.data.len().div_ceil(PAGE - usize::from(f.headroom)).max(1)
                    + f.extras.len()
                    + usize::from(opts.hostile == Hostile::RxExtraInfo);
                if c.rx.unconsumed_requests().unwrap_or(0) < need as u32 {
                    break;
                }
                let mut f = v.pending.pop_front().unwrap();
                if opts.hostile == Hostile::RxExtraInfo {
                    // A GSO slot (MSS 1344, TCPv4) on every frame, whatever it holds.
                    f.extras.push(ExtraInfo {
                        type_: XEN_NETIF_EXTRA_TYPE_GSO,
                        flags: 0,
                        u: [0x40, 0x05, 1, 0, 0, 0],
                    });
                }
                busy = true;
                let layout = deliver(&dom0, fe, c, &staging, &f, opts.hostile);
                seen.lock().unwrap().rx_layouts.push(layout);
                delivered += 1;
                if f.truncate_after_extras {
                    // Publish now: the cut-short frame ends the ring's responses.
                    break;
                }
            }
            if delivered > 0 {
                seen.lock().unwrap().delivered += delivered;
                if c.rx.push_responses_and_check_notify() {
                    evtchn.notify(c.port).unwrap();
                }
            }
        }
        if opts.hostile == Hostile::EventStorm {
            let mut sent = 0;
            for v in &vifs {
                if let Some(c) = &v.conn {
                    evtchn.notify(c.port).unwrap();
                    sent += 1;
                }
            }
            seen.lock().unwrap().storm_notifies += sent;
            // Storming, not sleeping: only yield the CPU to the frontend's thread.
            delivered.clear();
            let _ = evtchn.wait(Some(Duration::ZERO), &mut delivered);
            let _ = evtchn.unmask(&delivered);
            std::thread::yield_now();
            continue;
        }
        if !busy {
            // Final checks, then sleep on the event channel (bounded).
            let mut work = false;
            for v in vifs.iter_mut() {
                if let Some(c) = v.conn.as_mut() {
                    work |= c.tx.final_check_for_requests().unwrap_or(false);
                    work |=
                        !v.pending.is_empty() && c.rx.final_check_for_requests().unwrap_or(false);
                }
            }
            if !work {
                delivered.clear();
                let _ = evtchn.wait(Some(Duration::from_millis(2)), &mut delivered);
                let _ = evtchn.unmask(&delivered);
            }
        }
    }
    for v in vifs.iter_mut() {
        v.conn = None;
    }
}

fn connect(
    dom0: &DomainHandle,
    evtchn: &EvtchnHandle,
    xs: &XsConnection,
    v: &Vif,
    hostile: Hostile,
) -> Conn {
    let rd = |k: &str| -> u32 {
        xs.read(&format!("{}/{k}", v.fe_dir))
            .unwrap_or_else(|_| panic!("frontend key {k} missing"))
            .parse()
            .unwrap()
    };
    let map = |gref: u32| -> Mapped {
        mapped_ring(dom0.map_grant_ref(v.fe, GrantRef(gref)).unwrap()).unwrap()
    };
    let tx = TxBackRing::attach(map(rd("tx-ring-ref")));
    let rx = RxBackRing::attach(map(rd("rx-ring-ref")));
    let port = evtchn
        .bind_interdomain(v.fe, Port(rd("event-channel")))
        .unwrap();
    let copy = rd("request-rx-copy") == 1;
    match hostile {
        Hostile::BogusTxRspProd => {
            netif_ring::raw::set_rsp_prod(tx.mem(), 1000);
            evtchn.notify(port).unwrap();
        }
        Hostile::BogusRxRspProd => {
            netif_ring::raw::set_rsp_prod(rx.mem(), 1000);
            evtchn.notify(port).unwrap();
        }
        _ => {}
    }
    xs.write(&format!("{}/state", v.be_dir), "4").unwrap();
    Conn { tx, rx, port, copy }
}

/// Delivers one frame as Linux netback lays it out; returns the layout.
fn deliver(
    dom0: &DomainHandle,
    fe: DomId,
    c: &mut Conn,
    staging: &[Pfn],
    f: &RxFrame,
    hostile: Hostile,
) -> RxLayout {
    let room = PAGE - usize::from(f.headroom);
    let chunks: Vec<&[u8]> = if f.data.is_empty() {
        vec![&f.data[..]]
    } else {
        f.data.chunks(room).collect()
    };
    let n = chunks.len();
    let mut layout = RxLayout {
        first_flags: 0,
        extras: Vec::new(),
        slots: 0,
    };
    for (k, chunk) in chunks.iter().enumerate() {
        let req = c.rx.next_request().unwrap().unwrap();
        dom0.write(staging[k], 0, chunk).unwrap();
        let ok = if c.copy {
            let mut op = [GnttabCopy::new(
                GnttabCopyPtr::local(staging[k], 0),
                GnttabCopyPtr::gref(fe, GrantRef(req.gref), f.headroom),
                chunk.len() as u16,
            )];
            dom0.grant_copy_abi(&mut op).unwrap();
            op[0].status() == GrantStatus::Okay
        } else {
            let mut op = [GnttabTransfer::new(staging[k], fe, GrantRef(req.gref))];
            dom0.grant_transfer_abi(&mut op).unwrap();
            op[0].status() == GrantStatus::Okay
        };
        let offset = if hostile == Hostile::RxOffsetPastPage {
            4000
        } else if f.linux_headroom {
            0
        } else {
            f.headroom
        };
        let mut flags = if k + 1 < n { NETRXF_MORE_DATA } else { 0 };
        if k == 0 {
            flags |= f.csum_flags;
            if !f.extras.is_empty() {
                flags |= NETRXF_EXTRA_INFO;
            }
            layout.first_flags = flags;
        }
        let status = if ok && hostile != Hostile::RxErrorStatus {
            let counted = if f.linux_headroom { f.headroom } else { 0 };
            (chunk.len() + usize::from(counted)) as i16
        } else {
            NETIF_RSP_ERROR
        };
        c.rx.put_response(RxResponse {
            id: req.id,
            offset,
            flags,
            status,
        })
        .unwrap();
        layout.slots += 1;
        if k == 0 {
            for x in &f.extras {
                // The extra slot consumes a request (its buffer goes unused), as in Linux.
                let _ = c.rx.next_request().unwrap().unwrap();
                c.rx.put_response_as(*x).unwrap();
                layout.slots += 1;
                let mut b = [0u8; 8];
                b[0] = x.type_;
                b[1] = x.flags;
                b[2..].copy_from_slice(&x.u);
                layout.extras.push(b);
            }
            if f.truncate_after_extras {
                break;
            }
        }
    }
    layout
}

/// A test frame: Ethernet header then a counting pattern seeded by `seed`.
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect();
    if len >= 14 {
        f[..6].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
    }
    f
}

/// A machine with dom0 and `guests` guests.
pub fn machine(guests: usize) -> (Hypervisor, DomainHandle, Vec<DomainHandle>) {
    let xen = Hypervisor::new(8192).unwrap();
    let dom0 = xen.create_domain(512).unwrap();
    let gs = (0..guests)
        .map(|_| xen.create_domain(1024).unwrap())
        .collect();
    (xen, dom0, gs)
}
