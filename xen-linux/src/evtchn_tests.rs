use std::collections::VecDeque;

use super::*;

/// One scripted answer to `read()`.
#[derive(Debug)]
enum Step {
    Ports(Vec<u32>),
    Bytes(Vec<u8>),
    Errno(i32),
}

/// A fake `/dev/xen/evtchn`: scripted reads, recorded writes and ioctls. When the script runs
/// out, reads say EAGAIN (nothing pending), as the non-blocking device does.
#[derive(Debug, Default)]
struct FakeDev {
    reads: VecDeque<Step>,
    writes: Vec<Vec<u8>>,
    ioctls: Vec<EvtchnIoctl>,
    next_port: u32,
    read_calls: usize,
}

impl FakeDev {
    fn script(steps: impl IntoIterator<Item = Step>) -> Self {
        FakeDev {
            reads: steps.into_iter().collect(),
            next_port: 5,
            ..Self::default()
        }
    }

    fn written_ports(&self) -> Vec<u32> {
        self.writes
            .iter()
            .flat_map(|w| {
                w.chunks_exact(4)
                    .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            })
            .collect()
    }
}

impl EvtchnIo for FakeDev {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_calls += 1;
        match self.reads.pop_front() {
            None => Err(io::Error::from_raw_os_error(libc::EAGAIN)),
            Some(Step::Errno(e)) => Err(io::Error::from_raw_os_error(e)),
            Some(Step::Ports(ports)) => {
                let bytes: Vec<u8> = ports.iter().flat_map(|p| p.to_ne_bytes()).collect();
                // Like the driver: whole ports, at most what fits.
                let n = bytes.len().min(buf.len() & !3);
                buf[..n].copy_from_slice(&bytes[..n]);
                Ok(n)
            }
            Some(Step::Bytes(bytes)) => {
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes.push(buf.to_vec());
        Ok(buf.len())
    }

    fn ioctl(&mut self, op: EvtchnIoctl) -> io::Result<u32> {
        self.ioctls.push(op);
        match op {
            EvtchnIoctl::BindInterdomain { .. } | EvtchnIoctl::BindUnboundPort { .. } => {
                let p = self.next_port;
                self.next_port += 2;
                Ok(p)
            }
            _ => Ok(0),
        }
    }
}

/// An `Evtchn` over `dev` with ports 5, 7 and 9 bound.
fn with_three_ports(dev: FakeDev) -> Evtchn<FakeDev> {
    let mut ev = Evtchn::with_io(dev);
    for remote in [10, 11, 12] {
        ev.bind_interdomain(1, Port(remote)).unwrap();
    }
    assert_eq!(
        ev.bound_ports().collect::<Vec<_>>(),
        [Port(5), Port(7), Port(9)]
    );
    ev
}

fn ports(v: &[u32]) -> Vec<Port> {
    v.iter().map(|&p| Port(p)).collect()
}

#[test]
fn pending_drains_partial_reads_until_eagain() {
    let dev = FakeDev::script([Step::Ports(vec![7]), Step::Ports(vec![5, 9])]);
    let mut ev = with_three_ports(dev);
    let mut out = vec![Port(99)];
    assert_eq!(ev.pending(&mut out).unwrap(), 3);
    assert_eq!(out, ports(&[99, 7, 5, 9]), "appended, in delivery order");
    assert_eq!(ev.io().read_calls, 3, "two reads with ports, one EAGAIN");
    out.clear();
    assert_eq!(ev.pending(&mut out).unwrap(), 0);
    assert!(out.is_empty());
}

#[test]
fn an_interrupted_read_is_retried() {
    let dev = FakeDev::script([Step::Errno(libc::EINTR), Step::Ports(vec![9])]);
    let mut ev = with_three_ports(dev);
    let mut out = Vec::new();
    ev.pending(&mut out).unwrap();
    assert_eq!(out, ports(&[9]));
}

#[test]
fn overflow_resets_and_reports_every_bound_port() {
    let dev = FakeDev::script([
        Step::Ports(vec![7]),
        Step::Errno(libc::EFBIG),
        Step::Ports(vec![5]),
    ]);
    let mut ev = with_three_ports(dev);
    let mut out = vec![Port(1)];
    assert_eq!(ev.pending(&mut out).unwrap(), 3);
    assert_eq!(
        out,
        ports(&[1, 5, 7, 9]),
        "every bound port once, 7 not duplicated"
    );
    assert_eq!(ev.overflows(), 1);
    assert_eq!(ev.io().ioctls.last(), Some(&EvtchnIoctl::Reset));
    // Events after the reset are read normally on the next call.
    out.clear();
    ev.pending(&mut out).unwrap();
    assert_eq!(out, ports(&[5]));
}

#[test]
fn unmask_writes_the_port_back() {
    let mut ev = with_three_ports(FakeDev::script([]));
    ev.unmask(Port(7)).unwrap();
    assert_eq!(ev.io().writes, [7u32.to_ne_bytes().to_vec()]);
    // A page of ports per write.
    let many: Vec<Port> = (0..1500).map(Port).collect();
    ev.unmask_many(&many).unwrap();
    let sizes: Vec<usize> = ev.io().writes.iter().map(Vec::len).collect();
    assert_eq!(sizes, [4, 4096, 476 * 4]);
    assert_eq!(
        ev.io().written_ports()[1..],
        (0..1500).collect::<Vec<u32>>()[..]
    );
}

#[test]
fn ports_not_bound_here_are_dropped_and_counted() {
    let dev = FakeDev::script([Step::Ports(vec![5, 42, 9])]);
    let mut ev = with_three_ports(dev);
    ev.unbind(Port(9)).unwrap();
    let mut out = Vec::new();
    ev.pending(&mut out).unwrap();
    assert_eq!(out, ports(&[5]));
    assert_eq!(ev.strays(), 2, "42 was never bound, 9 was unbound");
}

#[test]
fn a_read_of_partial_ports_is_an_error() {
    let dev = FakeDev::script([Step::Bytes(vec![5, 0, 0, 0, 7, 0])]);
    let mut ev = with_three_ports(dev);
    let err = ev.pending(&mut Vec::new()).unwrap_err();
    assert_eq!(
        err,
        Error::ShortIo {
            op: "read /dev/xen/evtchn",
            expected: 4,
            got: 6
        }
    );
}

#[test]
fn other_read_errors_are_reported() {
    let dev = FakeDev::script([Step::Errno(libc::EFAULT)]);
    let mut ev = with_three_ports(dev);
    let err = ev.pending(&mut Vec::new()).unwrap_err();
    assert_eq!(
        err,
        Error::Os {
            op: "read /dev/xen/evtchn",
            errno: libc::EFAULT,
            hint: crate::error::OS_HINT,
        }
    );
}

#[test]
fn binds_notifies_and_unbinds_go_to_the_device_and_are_counted() {
    let mut ev = Evtchn::with_io(FakeDev::script([]));
    let local = ev.bind_interdomain(3, Port(17)).unwrap();
    let unbound = ev.bind_unbound_port(3).unwrap();
    ev.notify(local).unwrap();
    ev.unbind(local).unwrap();
    ev.reset().unwrap();
    assert_eq!(
        ev.io().ioctls,
        [
            EvtchnIoctl::BindInterdomain {
                remote_domid: 3,
                remote_port: Port(17)
            },
            EvtchnIoctl::BindUnboundPort { remote_domid: 3 },
            EvtchnIoctl::Notify(local),
            EvtchnIoctl::Unbind(local),
            EvtchnIoctl::Reset,
        ]
    );
    assert_eq!(ev.hypercalls(), 5);
    assert_eq!(ev.bound_ports().collect::<Vec<_>>(), [unbound]);
}

#[test]
fn ioctl_numbers_match_linux_uapi() {
    let table = [
        (
            "IOCTL_EVTCHN_BIND_INTERDOMAIN",
            IOCTL_EVTCHN_BIND_INTERDOMAIN,
            0x0008_4501,
        ),
        (
            "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
            IOCTL_EVTCHN_BIND_UNBOUND_PORT,
            0x0004_4502,
        ),
        ("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND, 0x0004_4503),
        ("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY, 0x0004_4504),
        ("IOCTL_EVTCHN_RESET", IOCTL_EVTCHN_RESET, 0x0000_4505),
    ];
    for (name, got, want) in table {
        println!("{name} = {got:#010x}");
        assert_eq!(got, want, "{name}");
        assert_eq!((got >> 8) & 0xff, u32::from(b'E'), "{name}");
    }
}

#[test]
fn the_real_device_opens_or_the_test_says_why_not() {
    match Evtchn::open() {
        Ok(mut ev) => {
            // Nothing is bound on a fresh descriptor: nothing can be pending.
            let mut out = Vec::new();
            assert_eq!(ev.pending(&mut out).unwrap(), 0);
        }
        Err(e) => {
            eprintln!("not on Xen here: checked the refusal instead: {e}");
            assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        }
    }
}
