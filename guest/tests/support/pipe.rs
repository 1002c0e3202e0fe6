//! Two smoltcp interfaces joined by an in-memory wire, one thread, a simulated clock: a guest
//! running `Services` and a client whose sockets the test scripts step by step. Every helper
//! drives the whole network until its condition holds, so tests read like a blocking client
//! and run the same way every time.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use guest::{Services, ServicesConfig, ServicesStats};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

/// The guest's address.
pub const GUEST: Ipv4Address = Ipv4Address::new(10, 199, 9, 2);
const CLIENT: Ipv4Address = Ipv4Address::new(10, 199, 9, 1);
/// Simulated time per network step.
const STEP_MICROS: i64 = 100;
/// Steps any one wait may take before the test fails (60 simulated seconds).
const MAX_STEPS: usize = 600_000;

/// Frames in flight each way: `queues[0]` towards the guest, `queues[1]` towards the client.
type Wire = Rc<RefCell<[VecDeque<Vec<u8>>; 2]>>;

/// One end of the wire as a smoltcp device.
struct End {
    wire: Wire,
    /// Which queue this end receives from.
    side: usize,
}

struct Rx(Vec<u8>);
struct Tx {
    wire: Wire,
    to: usize,
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.wire.borrow_mut()[self.to].push_back(frame);
        r
    }
}

impl Device for End {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
        let frame = self.wire.borrow_mut()[self.side].pop_front()?;
        Some((
            Rx(frame),
            Tx {
                wire: self.wire.clone(),
                to: 1 - self.side,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        Some(Tx {
            wire: self.wire.clone(),
            to: 1 - self.side,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

fn iface(dev: &mut End, mac: u8, addr: Ipv4Address) -> Interface {
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress([
        0x02, 0, 0, 0, 0, mac,
    ])));
    config.random_seed = u64::from(mac);
    let mut iface = Interface::new(config, dev, Instant::ZERO);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(addr), 24));
    });
    iface
}

/// The guest and a scripted client on one wire.
pub struct Net {
    now: Instant,
    guest_dev: End,
    guest: Interface,
    guest_sockets: SocketSet<'static>,
    services: Services,
    client_dev: End,
    client: Interface,
    client_sockets: SocketSet<'static>,
    next_port: u16,
}

impl Net {
    /// A guest serving `cfg`, and a client with no sockets yet.
    pub fn new(cfg: &ServicesConfig) -> Net {
        let wire: Wire = Rc::new(RefCell::new([VecDeque::new(), VecDeque::new()]));
        let mut guest_dev = End {
            wire: wire.clone(),
            side: 0,
        };
        let mut client_dev = End { wire, side: 1 };
        let guest = iface(&mut guest_dev, 2, GUEST);
        let client = iface(&mut client_dev, 1, CLIENT);
        let mut guest_sockets = SocketSet::new(Vec::new());
        let services = Services::new(&mut guest_sockets, cfg);
        Net {
            now: Instant::ZERO,
            guest_dev,
            guest,
            guest_sockets,
            services,
            client_dev,
            client,
            client_sockets: SocketSet::new(Vec::new()),
            next_port: 40000,
        }
    }

    /// The guest's counters.
    pub fn stats(&self) -> ServicesStats {
        self.services.stats()
    }

    /// One step: both interfaces poll, the services poll, the clock moves on.
    pub fn step(&mut self) {
        self.client
            .poll(self.now, &mut self.client_dev, &mut self.client_sockets);
        self.guest
            .poll(self.now, &mut self.guest_dev, &mut self.guest_sockets);
        if self.services.poll(&mut self.guest_sockets, self.now) {
            self.guest
                .poll(self.now, &mut self.guest_dev, &mut self.guest_sockets);
        }
        self.now += smoltcp::time::Duration::from_micros(STEP_MICROS as u64);
    }

    /// Simulated time so far.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Step until `cond` holds; fail naming `what` if it never does.
    #[track_caller]
    pub fn run_until(&mut self, what: &str, cond: impl FnMut(&mut Net) -> bool) {
        self.run_until_within(what, MAX_STEPS, cond);
    }

    /// Step until `cond` holds; fail naming `what` if it does not within `steps` steps.
    #[track_caller]
    pub fn run_until_within(
        &mut self,
        what: &str,
        steps: usize,
        mut cond: impl FnMut(&mut Net) -> bool,
    ) {
        for _ in 0..steps {
            if cond(self) {
                return;
            }
            self.step();
        }
        panic!(
            "gave up waiting for {what} after {steps} steps; guest stats {:?}",
            self.stats()
        );
    }

    /// A client socket of the client.
    pub fn sock(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.client_sockets.get_mut::<tcp::Socket<'static>>(h)
    }

    /// Open a connection to the guest's `port` (1 MiB buffers); do not wait for it.
    pub fn connect_nowait(&mut self, port: u16) -> SocketHandle {
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 1 << 20]),
            tcp::SocketBuffer::new(vec![0; 1 << 20]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        self.next_port += 1;
        sock.connect(self.client.context(), (GUEST, port), self.next_port)
            .expect("connect");
        self.client_sockets.add(sock)
    }

    /// Open a connection to the guest's `port` and wait until it is established.
    #[track_caller]
    pub fn connect(&mut self, port: u16) -> SocketHandle {
        let h = self.connect_nowait(port);
        self.run_until("connection established", |n| {
            n.sock(h).state() == tcp::State::Established
        });
        h
    }

    /// Queue all of `data`, stepping while the transmit buffer is full.
    #[track_caller]
    pub fn send(&mut self, h: SocketHandle, data: &[u8]) {
        let mut off = 0;
        self.run_until("data queued", |n| {
            off += n.sock(h).send_slice(&data[off..]).expect("send");
            off == data.len()
        });
    }

    /// Wait until everything queued on `h` has been acknowledged.
    #[track_caller]
    pub fn flush(&mut self, h: SocketHandle) {
        self.run_until("data acknowledged", |n| n.sock(h).send_queue() == 0);
    }

    /// Read exactly `len` bytes.
    #[track_caller]
    pub fn recv_exact(&mut self, h: SocketHandle, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        let mut got = 0;
        self.run_until("bytes to read", |n| {
            if let Ok(k) = n.sock(h).recv_slice(&mut buf[got..]) {
                got += k;
            }
            got == len
        });
        buf
    }

    /// Read until the guest closes its half; hands each chunk to `f`; returns the byte count.
    #[track_caller]
    pub fn recv_to_end(&mut self, h: SocketHandle, mut f: impl FnMut(&[u8])) -> u64 {
        let mut total = 0u64;
        self.run_until("the guest's FIN", |n| {
            loop {
                match n.sock(h).recv(|b| (b.len(), b.to_vec())) {
                    Ok(chunk) if !chunk.is_empty() => {
                        total += chunk.len() as u64;
                        f(&chunk);
                    }
                    Ok(_) => return false,
                    Err(_) => return true,
                }
            }
        });
        total
    }

    /// Wait until the connection is gone (reset, or closed by both sides).
    #[track_caller]
    pub fn wait_closed(&mut self, h: SocketHandle) {
        self.run_until("connection closed", |n| {
            matches!(n.sock(h).state(), tcp::State::Closed | tcp::State::TimeWait)
        });
    }

    /// Close our half and wait until the connection is gone.
    #[track_caller]
    pub fn close(&mut self, h: SocketHandle) {
        self.sock(h).close();
        self.wait_closed(h);
    }
}
