use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;

use rustix::event::{EventfdFlags, eventfd};

use super::*;
use crate::evtchn::EvtchnIoctl;

/// A port as the fake kernel and Xen see it.
#[derive(Debug, Default)]
struct PortState {
    /// The driver's `enabled` flag: cleared on delivery, set again by a write (the EOI).
    enabled: bool,
    /// Xen's pending bit: set by an event, cleared when the port is delivered.
    pending: bool,
}

/// `/dev/xen/evtchn` and Xen behind it, small: ports fire, the driver queues a fired port in
/// its ring and disables it, a write re-enables it and redelivers a pending event; a full ring
/// overflows (reads fail with EFBIG until RESET). Binding an interdomain port marks it pending,
/// as Xen's `evtchn_bind_interdomain` does.
#[derive(Debug)]
struct Kernel {
    ports: BTreeMap<u32, PortState>,
    ring: VecDeque<u32>,
    cap: usize,
    overflow: bool,
    next_port: u32,
    ioctls: Vec<EvtchnIoctl>,
    /// Fail the next bind with this errno.
    bind_errno: Option<i32>,
    ready: OwnedFd,
    signalled: bool,
}

impl Kernel {
    fn fire(&mut self, port: u32) {
        if let Some(s) = self.ports.get_mut(&port) {
            s.pending = true;
        }
        self.deliver(port);
    }

    fn deliver(&mut self, port: u32) {
        let Some(s) = self.ports.get_mut(&port) else {
            return;
        };
        if !(s.enabled && s.pending) {
            return;
        }
        (s.enabled, s.pending) = (false, false);
        if self.ring.len() < self.cap {
            self.ring.push_back(port);
        } else {
            self.overflow = true;
        }
        self.refresh();
    }

    /// The descriptor polls readable while ports are queued or the ring overflowed.
    fn refresh(&mut self) {
        let want = self.overflow || !self.ring.is_empty();
        if want != self.signalled {
            if want {
                rustix::io::write(&self.ready, &1u64.to_ne_bytes()).unwrap();
            } else {
                rustix::io::read(&self.ready, &mut [0u8; 8]).unwrap();
            }
            self.signalled = want;
        }
    }

    fn bind(&mut self, fire: bool) -> io::Result<u32> {
        if let Some(e) = self.bind_errno.take() {
            return Err(io::Error::from_raw_os_error(e));
        }
        let port = self.next_port;
        self.next_port += 1;
        self.ports.insert(
            port,
            PortState {
                enabled: true,
                pending: false,
            },
        );
        if fire {
            self.fire(port);
        }
        Ok(port)
    }
}

#[derive(Debug, Clone)]
struct FakeDev {
    kernel: Arc<Mutex<Kernel>>,
    fd: Arc<OwnedFd>,
}

impl FakeDev {
    fn new(cap: usize) -> Self {
        let ready = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).unwrap();
        let fd = Arc::new(ready.try_clone().unwrap());
        let kernel = Kernel {
            ports: BTreeMap::new(),
            ring: VecDeque::new(),
            cap,
            overflow: false,
            next_port: 5,
            ioctls: Vec::new(),
            bind_errno: None,
            ready,
            signalled: false,
        };
        FakeDev {
            kernel: Arc::new(Mutex::new(kernel)),
            fd,
        }
    }

    fn k(&self) -> MutexGuard<'_, Kernel> {
        self.kernel.lock().unwrap()
    }
}

impl AsFd for FakeDev {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl EvtchnIo for FakeDev {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut k = self.k();
        if k.overflow {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        let mut n = 0;
        while n + 4 <= buf.len() {
            let Some(p) = k.ring.pop_front() else { break };
            buf[n..n + 4].copy_from_slice(&p.to_ne_bytes());
            n += 4;
        }
        k.refresh();
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut k = self.k();
        for c in buf.chunks_exact(4) {
            let port = u32::from_ne_bytes(c.try_into().unwrap());
            if let Some(s) = k.ports.get_mut(&port)
                && !s.enabled
            {
                s.enabled = true;
                k.deliver(port);
            }
        }
        Ok(buf.len())
    }

    fn ioctl(&mut self, op: EvtchnIoctl) -> io::Result<u32> {
        let mut k = self.k();
        k.ioctls.push(op);
        let notconn = || io::Error::from_raw_os_error(libc::ENOTCONN);
        match op {
            EvtchnIoctl::BindInterdomain { .. } => k.bind(true),
            EvtchnIoctl::BindUnboundPort { .. } => k.bind(false),
            EvtchnIoctl::Unbind(p) => k.ports.remove(&p.0).map(|_| 0).ok_or_else(notconn),
            EvtchnIoctl::Notify(p) => k.ports.get(&p.0).map(|_| 0).ok_or_else(notconn),
            EvtchnIoctl::Reset => {
                k.ring.clear();
                k.overflow = false;
                k.refresh();
                Ok(0)
            }
        }
    }
}

fn handle(cap: usize) -> (XenEvtchn<FakeDev>, FakeDev, Arc<Counters>) {
    let dev = FakeDev::new(cap);
    let counters = Arc::new(Counters::default());
    let h = XenEvtchn::with_io(dev.clone(), counters.clone()).unwrap();
    (h, dev, counters)
}

fn now(h: &XenEvtchn<FakeDev>) -> Vec<Port> {
    let mut out = Vec::new();
    h.wait(Some(Duration::ZERO), &mut out).unwrap();
    out
}

fn readable(h: &XenEvtchn<FakeDev>) -> bool {
    sys::poll_readable(h.as_fd().unwrap(), Some(Duration::ZERO)).unwrap()
}

#[test]
fn a_delivered_port_stays_masked_until_unmasked_then_redelivers() {
    let (h, dev, _) = handle(64);
    let p = h.bind_interdomain(1, Port(20)).unwrap();
    assert_eq!(
        now(&h),
        [p],
        "binding marks the new port pending (Xen does)"
    );
    h.unmask(&[p]).unwrap();
    assert_eq!(now(&h), []);

    dev.k().fire(p.0);
    assert_eq!(now(&h), [p]);
    dev.k().fire(p.0);
    dev.k().fire(p.0);
    assert_eq!(now(&h), [], "masked: the events wait in Xen");
    h.unmask(&[p]).unwrap();
    assert_eq!(now(&h), [p], "the end of interrupt redelivers, once");
    h.unmask(&[p]).unwrap();
    assert_eq!(now(&h), []);
}

#[test]
fn wait_appends_and_each_handle_sees_its_own_ports() {
    let (a, dev_a, _) = handle(64);
    let (b, dev_b, _) = handle(64);
    let pa = a.alloc_unbound(1).unwrap();
    let pb = b.alloc_unbound(1).unwrap();
    dev_a.k().fire(pa.0);
    let mut out = vec![Port(999)];
    a.wait(Some(Duration::ZERO), &mut out).unwrap();
    assert_eq!(out, [Port(999), pa], "appended");
    assert_eq!(now(&b), []);
    dev_b.k().fire(pb.0);
    assert_eq!(now(&b), [pb]);
}

#[test]
fn wait_sleeps_until_a_port_fires_or_the_time_is_up() {
    let (h, dev, _) = handle(64);
    let p = h.alloc_unbound(1).unwrap();
    let mut out = Vec::new();
    h.wait(Some(Duration::from_millis(5)), &mut out).unwrap();
    assert!(out.is_empty(), "nothing fired: the timeout ends the wait");

    let firer = std::thread::spawn(move || dev.k().fire(p.0));
    h.wait(None, &mut out).unwrap();
    firer.join().unwrap();
    assert_eq!(out, [p], "no limit: returns when the port fires");
}

#[test]
fn as_fd_polls_readable_exactly_while_ports_are_queued() {
    let (h, dev, _) = handle(64);
    let p = h.alloc_unbound(1).unwrap();
    assert!(!readable(&h));
    dev.k().fire(p.0);
    assert!(readable(&h));
    assert_eq!(now(&h), [p]);
    assert!(!readable(&h), "collected");
    h.unmask(&[p]).unwrap();
    assert!(!readable(&h), "nothing pending to redeliver");
}

#[test]
fn an_overflowed_ring_reports_every_bound_port_then_recovers() {
    let (h, dev, counters) = handle(2);
    let ports: Vec<Port> = (0..3).map(|_| h.alloc_unbound(1).unwrap()).collect();
    for p in &ports {
        dev.k().fire(p.0);
    }
    assert!(dev.k().overflow, "three events into a ring of two");
    assert!(
        readable(&h),
        "an overflow polls readable (POLLERR on the real device)"
    );
    let mut got = now(&h);
    got.sort();
    assert_eq!(got, ports, "every bound port, so none is lost");
    assert_eq!(Counters::get(&counters.evtchn_overflows), 1);
    assert_eq!(dev.k().ioctls.last(), Some(&EvtchnIoctl::Reset));
    assert!(!readable(&h));

    h.unmask(&ports).unwrap();
    dev.k().fire(ports[1].0);
    assert_eq!(now(&h), [ports[1]], "delivery is back to normal");
}

#[test]
fn a_port_unbound_after_it_fired_is_dropped_not_reported() {
    let (h, dev, _) = handle(64);
    let p = h.alloc_unbound(1).unwrap();
    dev.k().fire(p.0);
    h.unbind(p).unwrap();
    let mut out = Vec::new();
    h.wait(Some(Duration::from_millis(1)), &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(h.strays(), 1);
    assert!(h.bound_ports().is_empty());
}

#[test]
fn ioctl_errors_become_the_seams_errors() {
    let (h, dev, _) = handle(64);
    assert_eq!(h.unbind(Port(77)), Err(Error::BadPort(Port(77))));
    assert_eq!(h.notify(Port(77)), Err(Error::BadPort(Port(77))));
    dev.k().bind_errno = Some(libc::EINVAL);
    assert_eq!(
        h.bind_interdomain(3, Port(9)),
        Err(Error::PortNotBindable {
            remote: 3,
            port: Port(9)
        })
    );
    dev.k().bind_errno = Some(libc::ESRCH);
    assert_eq!(h.alloc_unbound(3), Err(Error::NoSuchDomain(3)));
    dev.k().bind_errno = Some(libc::ENOSPC);
    assert_eq!(h.alloc_unbound(3), Err(Error::NoFreePort));
    dev.k().bind_errno = Some(libc::EPERM);
    assert_eq!(
        h.alloc_unbound(3),
        Err(Error::Os {
            op: "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
            errno: libc::EPERM,
            hint: crate::error::OS_HINT,
        })
    );
}

#[test]
fn ioctls_count_in_the_shared_counters() {
    fn seam<E: EventChannel>(_: &E) {}
    let (h, _, counters) = handle(64);
    seam(&h);
    let p = h.alloc_unbound(1).unwrap();
    let q = h.bind_interdomain(1, Port(3)).unwrap();
    h.notify(p).unwrap();
    h.unbind(q).unwrap();
    h.unmask(&[p]).unwrap();
    assert_eq!(
        Counters::get(&counters.evtchn_ioctls),
        4,
        "binds, notify, unbind (a write is no ioctl)"
    );
}

#[test]
fn the_real_device_opens_or_the_test_says_why_not() {
    match XenEvtchn::open() {
        Ok(h) => {
            let mut out = Vec::new();
            h.wait(Some(Duration::ZERO), &mut out).unwrap();
            assert!(out.is_empty(), "nothing bound, nothing pending");
        }
        Err(e) => {
            eprintln!("not on Xen here: checked the refusal instead: {e}");
            assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        }
    }
}
