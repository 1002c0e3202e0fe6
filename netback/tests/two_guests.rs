//! The integration test of the data path: dom0 runs netback and bridge-lite; two guests run
//! netfront and smoltcp, each on its own vCPU thread. A TCP connection between the guests carries
//! 10 MiB, checked byte for byte, in copy mode and in flip mode. Then the guests disconnect and
//! the hypervisor's free-frame count must be back where it started.
//!
//! `cargo test --release -p netback --test two_guests -- --nocapture` prints the throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use netback::{Config, Netback, NetbackSnapshot};
use netfront::{FrontConfig, Netfront, RxMode};
use smoltcp::iface::{Config as IfConfig, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use xen_model::{DomainHandle, Hypervisor};

const TOTAL: usize = 10 << 20;
const PORT: u16 = 5000;
/// The whole exchange must finish within this, or the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(120);

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

struct Guest {
    nf: Netfront<DomainHandle>,
    iface: Interface,
    sockets: SocketSet<'static>,
    tcp: SocketHandle,
    start: StdInstant,
}

impl Guest {
    fn new(dom: DomainHandle, n: u8, mode: RxMode) -> Guest {
        let cfg = FrontConfig {
            rx_mode: mode,
            timeout: Duration::from_secs(20),
            ..FrontConfig::default()
        };
        let mut nf = Netfront::connect(dom, 0, cfg).expect("frontend connects");
        let mut c = IfConfig::new(HardwareAddress::Ethernet(EthernetAddress([
            2, 0, 0, 0, 0, n,
        ])));
        c.random_seed = u64::from(n);
        let mut iface = Interface::new(c, &mut nf, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::v4(10, 0, 0, n), 24)).unwrap();
        });
        let mut sockets = SocketSet::new(vec![]);
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 << 10]),
            tcp::SocketBuffer::new(vec![0; 256 << 10]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        let tcp = sockets.add(sock);
        Guest {
            nf,
            iface,
            sockets,
            tcp,
            start: StdInstant::now(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    /// One round: the stack, the device, and a bounded wait if nothing moved.
    fn step(&mut self, app_progress: bool) {
        let t = self.now();
        let polled = self.iface.poll(t, &mut self.nf, &mut self.sockets) != PollResult::None;
        let dev = self.nf.poll().expect("rings stay healthy");
        if !(polled || dev || app_progress) {
            let d = self
                .iface
                .poll_delay(t, &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(Duration::from_millis(5))
                .min(Duration::from_millis(5));
            self.nf.wait(Some(d)).expect("wait");
        }
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket<'static>>(self.tcp)
    }
}

fn run(mode: RxMode) -> (f64, NetbackSnapshot) {
    let xen = Hypervisor::new(48 * 1024).unwrap();
    let dom0 = xen.create_domain(8192).unwrap();
    let (g1, g2) = (
        xen.create_domain(4096).unwrap(),
        xen.create_domain(4096).unwrap(),
    );
    let frames_before = xen.free_frames();
    xen.add_vif(g1.domid(), dom0.domid(), 0, "02:00:00:00:00:01")
        .unwrap();
    xen.add_vif(g2.domid(), dom0.domid(), 0, "02:00:00:00:00:02")
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let stop0 = stop.clone();
    let backend = thread::spawn(move || {
        xenoprof::register_vcpu(dom0.domid(), xenoprof::Context::Kernel);
        let mut nb = Netback::new(dom0, Config::default(), 4096).expect("netback starts");
        // Relaxed: a stop flag; the join below orders everything that matters.
        nb.run_until(|| stop0.load(Ordering::Relaxed))
            .expect("backend runs");
        nb.snapshot()
    });

    let receiver = thread::spawn(move || {
        xenoprof::register_vcpu(g2.domid(), xenoprof::Context::Kernel);
        let mut g = Guest::new(g2, 2, mode);
        g.socket().listen(PORT).unwrap();
        let mut got = 0usize;
        let mut first: Option<StdInstant> = None;
        while got < TOTAL {
            assert!(
                g.start.elapsed() < DEADLINE,
                "receiver stalled at {got} of {TOTAL}"
            );
            let mut progress = false;
            let s = g.socket();
            while s.can_recv() {
                let n = s
                    .recv(|buf| {
                        for (i, b) in buf.iter().enumerate() {
                            assert_eq!(*b, pattern(got + i), "byte {} corrupted", got + i);
                        }
                        (buf.len(), buf.len())
                    })
                    .unwrap();
                if n == 0 {
                    break;
                }
                first.get_or_insert_with(StdInstant::now);
                got += n;
                progress = true;
            }
            g.step(progress);
        }
        let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
        // Let the FIN and the last ACKs go out before tearing down.
        let until = StdInstant::now() + Duration::from_millis(200);
        while StdInstant::now() < until {
            g.step(false);
        }
        let Guest { nf, .. } = g;
        nf.close().expect("receiver closes cleanly");
        secs
    });

    let sender = thread::spawn(move || {
        xenoprof::register_vcpu(g1.domid(), xenoprof::Context::Kernel);
        let mut g = Guest::new(g1, 1, mode);
        let cx = g.iface.context();
        g.sockets
            .get_mut::<tcp::Socket<'static>>(g.tcp)
            .connect(cx, (Ipv4Address::new(10, 0, 0, 2), PORT), 40000)
            .unwrap();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        loop {
            assert!(
                g.start.elapsed() < DEADLINE,
                "sender stalled at {sent} of {TOTAL}"
            );
            let mut progress = false;
            let s = g.socket();
            if sent < TOTAL && s.can_send() {
                let n = (TOTAL - sent).min(chunk.len());
                for (i, b) in chunk[..n].iter_mut().enumerate() {
                    *b = pattern(sent + i);
                }
                let k = s.send_slice(&chunk[..n]).unwrap();
                sent += k;
                progress = k > 0;
            }
            if sent == TOTAL && s.send_queue() == 0 {
                s.close();
                break;
            }
            g.step(progress);
        }
        let until = StdInstant::now() + Duration::from_millis(300);
        while StdInstant::now() < until {
            g.step(false);
        }
        let Guest { nf, .. } = g;
        nf.close().expect("sender closes cleanly");
    });

    sender.join().expect("sender thread");
    let secs = receiver.join().expect("receiver thread");
    // Relaxed: the backend thread only needs to see it eventually; it polls at most 20 ms apart.
    stop.store(true, Ordering::Relaxed);
    let snap = backend.join().expect("backend thread");
    assert_eq!(
        xen.free_frames(),
        frames_before,
        "every frame returned after the guests disconnect"
    );
    let gbps = TOTAL as f64 * 8.0 / secs / 1e9;
    eprintln!("two guests, {mode:?} mode: 10 MiB in {secs:.3} s = {gbps:.3} Gb/s; {snap:?}");
    (gbps, snap)
}

#[test]
fn ten_mib_between_two_guests_copy_mode() {
    let (_, snap) = run(RxMode::Copy);
    assert_eq!(snap.departed.len(), 2, "both vifs disconnected");
    for (id, st) in &snap.departed {
        assert!(st.fatal.is_none(), "{id}: {st:?}");
        assert!(st.rx_packets > 0 && st.tx_packets > 0, "{id}: {st:?}");
    }
}

#[test]
fn ten_mib_between_two_guests_flip_mode() {
    let (_, snap) = run(RxMode::Flip);
    assert_eq!(snap.departed.len(), 2, "both vifs disconnected");
    for (id, st) in &snap.departed {
        assert!(st.fatal.is_none(), "{id}: {st:?}");
        assert!(st.rx_packets > 0 && st.tx_packets > 0, "{id}: {st:?}");
    }
}
