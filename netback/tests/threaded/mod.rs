//! Test support for the lifecycle and spoofing tests: netback on its own backend thread (as
//! `two_guests.rs` runs it), real netfront guests driven from the test thread, and the
//! toolstack's view of xenstore. Nothing here is API of netback: the test thread reaches the
//! backend only through a job channel the backend thread checks between passes.
#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, TryRecvError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use netback::{Config, Netback, NetbackSnapshot, VifId};
use netfront::{FrontConfig, Netfront, RxMode};
use rustix::event::{EventfdFlags, eventfd};
use smoltcp::phy::{Device, RxToken, TxToken};
use xen_model::{DomainHandle, Hypervisor, VifPaths};

/// Hang guard for every wait: far above what any step takes, so it never decides a result on
/// a slow machine; it only turns a hang into a failure.
pub const GUARD: Duration = Duration::from_secs(30);

/// The backend as the backend thread owns it.
pub type Nb = Netback<DomainHandle>;
type Job = Box<dyn FnOnce(&mut Nb) + Send>;

/// netback serving on its own thread until dropped.
pub struct Backend {
    jobs: Option<mpsc::Sender<Job>>,
    /// Written after each job is queued, so a backend blocked in `wait` takes it at once
    /// (however long its poll interval).
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts netback in `dom0` on a new thread, with default settings.
    pub fn start(dom0: DomainHandle) -> Backend {
        Self::start_with(dom0, Config::default())
    }

    /// Starts netback in `dom0` on a new thread with `cfg`.
    pub fn start_with(dom0: DomainHandle, cfg: Config) -> Backend {
        let (tx, rx) = mpsc::channel::<Job>();
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd");
        let backend_wake = wake.try_clone().expect("dup eventfd");
        let thread = thread::spawn(move || {
            let mut nb = Netback::new(dom0, cfg, 2048).expect("netback starts");
            nb.set_wake_fd(backend_wake);
            loop {
                let mut job = None;
                nb.run_until(|| match rx.try_recv() {
                    Ok(j) => {
                        job = Some(j);
                        true
                    }
                    Err(TryRecvError::Empty) => false,
                    Err(TryRecvError::Disconnected) => true,
                })
                .expect("backend runs");
                match job {
                    Some(j) => j(&mut nb),
                    None => break,
                }
            }
        });
        Backend {
            jobs: Some(tx),
            wake,
            thread: Some(thread),
        }
    }

    /// Queues `job` and wakes the backend for it.
    #[track_caller]
    fn submit(&self, job: Job) {
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .expect("the backend thread is gone (did it panic?)");
        rustix::io::write(&self.wake, &1u64.to_ne_bytes()).expect("eventfd write");
    }

    /// Runs `f` on the backend thread between two passes and returns what it returns.
    #[track_caller]
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce(&mut Nb) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.submit(Box::new(move |nb| {
            let _ = tx.send(f(nb));
        }));
        rx.recv_timeout(GUARD)
            .expect("the backend thread did not answer (hung or panicked)")
    }

    /// Lets the backend handle every watch event queued so far (xenstore queues them when the
    /// write happens), then snapshots it: after this, whatever the backend would do about the
    /// writes made before the call is done.
    #[track_caller]
    pub fn settled(&self) -> NetbackSnapshot {
        self.run(|nb| {
            for _ in 0..1000 {
                if !nb.poll().expect("backend pass") {
                    break;
                }
            }
            nb.snapshot()
        })
    }

    /// Runs `f` while the backend thread is parked, so the backend sees all of `f`'s xenstore
    /// writes at once, as it would see a toolstack's transaction.
    #[track_caller]
    pub fn paused<R>(&self, f: impl FnOnce() -> R) -> R {
        let (parked_tx, parked_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        self.submit(Box::new(move |_| {
            let _ = parked_tx.send(());
            let _ = go_rx.recv_timeout(GUARD);
        }));
        parked_rx
            .recv_timeout(GUARD)
            .expect("the backend thread did not park");
        let r = f();
        let _ = go_tx.send(());
        r
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        drop(self.jobs.take());
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if r.is_err() && !thread::panicking() {
                panic!("the backend thread panicked");
            }
        }
    }
}

/// A machine with dom0 (domain 0) and netback serving it on its own thread.
pub fn machine() -> (Hypervisor, DomainHandle, Backend) {
    let xen = Hypervisor::new(32 * 1024).expect("machine");
    let dom0 = xen.create_domain(4096).expect("dom0");
    let backend = Backend::start(dom0.clone());
    (xen, dom0, backend)
}

/// Guest domain `domid` (created if needed) with vif `devid` added by the toolstack with MAC
/// `m`, as libxl lays it out (`online=1`, `state=1`).
pub fn guest(xen: &Hypervisor, domid: u16, devid: u32, m: [u8; 6]) -> (DomainHandle, VifPaths) {
    let dom = xen
        .domain(domid)
        .or_else(|_| xen.create_domain_with_id(domid, 1024))
        .expect("guest domain");
    let paths = xen.add_vif(domid, 0, devid, &mac_str(m)).expect("add_vif");
    (dom, paths)
}

/// Reads a node as the toolstack (empty if absent).
pub fn node(xen: &Hypervisor, path: &str) -> String {
    xen.xenstore().read(path).unwrap_or_default()
}

/// Waits (on a watch, bounded by [`GUARD`]) until `path` reads `want`.
#[track_caller]
pub fn wait_node(xen: &Hypervisor, path: &str, want: &str) {
    let xs = xen.xenstore();
    xs.watch(path, "wait").expect("watch");
    let start = Instant::now();
    loop {
        if xs.read(path).unwrap_or_default() == want {
            return;
        }
        let left = GUARD.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "{path} never became {want:?} (it is {:?})",
            xs.read(path).unwrap_or_default()
        );
        let _ = xs.read_watch(Some(left));
    }
}

/// The vif's id.
pub fn vif(domid: u16, devid: u32) -> VifId {
    VifId { domid, devid }
}

/// A guest's vif: a real netfront, driven from the test thread through its smoltcp `Device`
/// tokens (raw Ethernet frames, no stack).
pub struct Guest {
    /// The frontend.
    pub nf: Netfront<DomainHandle>,
    /// The MAC the toolstack gave the vif (`mac` node).
    pub mac: [u8; 6],
    /// Frames sent so far (tags every frame's payload).
    sent: u32,
}

/// `00:16:3e:00:00:<n>`, Xen's OUI.
pub fn mac(n: u8) -> [u8; 6] {
    [0x00, 0x16, 0x3e, 0x00, 0x00, n]
}

/// `mac` as xenstore's `mac` node spells it.
pub fn mac_str(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

impl Guest {
    /// Connects vif `devid` of `dom` through xenbus (the toolstack must have added it).
    #[track_caller]
    pub fn connect(dom: &DomainHandle, devid: u32, mac: [u8; 6], mode: RxMode) -> Guest {
        let cfg = FrontConfig {
            rx_mode: mode,
            rx_buffers: 64,
            rx_refill_batch: 16,
            tx_pages: 64,
            timeout: GUARD,
            ..FrontConfig::default()
        };
        let nf = Netfront::connect(dom.clone(), devid, cfg).expect("netfront connects");
        Guest { nf, mac, sent: 0 }
    }

    /// A frame from `src` to `dst` of `len` bytes (at least 18), with a payload tagged by the
    /// frame's number so a mix-up between frames shows.
    pub fn frame(src: [u8; 6], dst: [u8; 6], len: usize, tag: u32) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental EtherType
        f[14..18].copy_from_slice(&tag.to_be_bytes());
        for (i, b) in f[18..].iter_mut().enumerate() {
            *b = (i as u32).wrapping_mul(131).wrapping_add(tag) as u8;
        }
        f
    }

    /// Transmits `frame` as is.
    #[track_caller]
    pub fn send_raw(&mut self, frame: &[u8]) {
        let start = Instant::now();
        loop {
            if let Some(tok) = self.nf.transmit(smoltcp::time::Instant::ZERO) {
                tok.consume(frame.len(), |b| b.copy_from_slice(frame));
                return;
            }
            assert!(start.elapsed() < GUARD, "no tx room");
            self.nf.poll().expect("netfront poll");
            self.nf.wait(Some(Duration::from_millis(5))).expect("wait");
        }
    }

    /// Sends a frame of `len` bytes to `dst` from the vif's own MAC; returns it.
    #[track_caller]
    pub fn send_to(&mut self, dst: [u8; 6], len: usize) -> Vec<u8> {
        self.sent += 1;
        let f = Self::frame(self.mac, dst, len, self.sent);
        self.send_raw(&f);
        f
    }

    /// A frame received, if one is waiting.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        self.nf.poll().expect("netfront poll");
        self.nf
            .receive(smoltcp::time::Instant::ZERO)
            .map(|(rx, _)| rx.consume(|b| b.to_vec()))
    }

    /// Closes the vif (Closing, the backend lets go, Closed); every grant must end.
    #[track_caller]
    pub fn close(self) {
        self.nf.close().expect("netfront closes cleanly");
    }
}

/// Frame lengths an exchange uses: minimum, odd, MTU-sized.
const LENS: [usize; 4] = [60, 333, 1000, 1514];

/// Receives `want` on `to`, in order and byte for byte, polling `from` meanwhile so its tx
/// side is reclaimed.
#[track_caller]
pub fn expect_frames(from: &mut Guest, to: &mut Guest, want: &[Vec<u8>]) {
    let start = Instant::now();
    for (i, w) in want.iter().enumerate() {
        let got = loop {
            if let Some(f) = to.try_recv() {
                break f;
            }
            assert!(
                start.elapsed() < GUARD,
                "frame {i} of {} never arrived",
                want.len()
            );
            from.nf.poll().expect("sender poll");
            to.nf.wait(Some(Duration::from_millis(5))).expect("wait");
        };
        assert_eq!(got.len(), w.len(), "frame {i}: length");
        assert!(got == *w, "frame {i}: bytes differ");
    }
}

/// `n` frames each way between `a` and `b`, checked byte for byte and in order.
#[track_caller]
pub fn exchange(a: &mut Guest, b: &mut Guest, n: usize) {
    let dst = b.mac;
    let sent: Vec<Vec<u8>> = (0..n)
        .map(|i| a.send_to(dst, LENS[i % LENS.len()]))
        .collect();
    expect_frames(a, b, &sent);
    let dst = a.mac;
    let sent: Vec<Vec<u8>> = (0..n)
        .map(|i| b.send_to(dst, LENS[i % LENS.len()]))
        .collect();
    expect_frames(b, a, &sent);
}
