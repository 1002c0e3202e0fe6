//! `/dev/xen/evtchn`: event channels from Linux userspace.
//!
//! Semantics from Linux 6.1 `include/uapi/xen/evtchn.h` and `drivers/xen/evtchn.c`:
//!
//! - Binding ioctls return the new local port as the ioctl's return value.
//! - When an event arrives the driver masks the port (disables its irq) and queues it in a
//!   per-descriptor ring; `read()` returns queued ports, whole u32s, up to a page per call
//!   (`EAGAIN` when none and the descriptor is non-blocking). A delivered port stays masked
//!   until userspace `write()`s it back: the late EOI, so a storming guest cannot starve us.
//! - If the ring overflows the driver sets an overflow flag and `read()` fails with `EFBIG`
//!   until `IOCTL_EVTCHN_RESET`, which empties the ring. Ports dropped that way stay masked, so
//!   after a reset every bound port is reported pending here: a spurious event costs a check,
//!   a lost one a hang.
//! - `poll()` reports `POLLIN` when ports are queued and `POLLERR` on overflow: call
//!   [`Evtchn::pending`] on either.
//!
//! The read/unmask/overflow logic runs over [`EvtchnIo`], so tests drive it with a fake device.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use super::error::{Error, OS_HINT, Result};
use super::sys::{IOC_NONE, ioc};
use hypervisor::types::{DomId, PAGE_SIZE, Port};

/// The device node.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";
const EVTCHN_MODULE_HINT: &str =
    "load xen-evtchn (modprobe xen-evtchn) in a Xen dom0 or driver domain";

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
struct IoctlBindInterdomain {
    remote_domain: u32,
    remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
struct IoctlBindUnboundPort {
    remote_domain: u32,
}

/// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify` (both `{unsigned int port}`).
#[repr(C)]
struct IoctlPort {
    port: u32,
}

/// `_IOC(_IOC_NONE, 'E', 1, sizeof(struct ioctl_evtchn_bind_interdomain))`.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u32 =
    ioc(IOC_NONE, b'E', 1, size_of::<IoctlBindInterdomain>());
/// `_IOC(_IOC_NONE, 'E', 2, sizeof(struct ioctl_evtchn_bind_unbound_port))`.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u32 =
    ioc(IOC_NONE, b'E', 2, size_of::<IoctlBindUnboundPort>());
/// `_IOC(_IOC_NONE, 'E', 3, sizeof(struct ioctl_evtchn_unbind))`.
pub const IOCTL_EVTCHN_UNBIND: u32 = ioc(IOC_NONE, b'E', 3, size_of::<IoctlPort>());
/// `_IOC(_IOC_NONE, 'E', 4, sizeof(struct ioctl_evtchn_notify))`.
pub const IOCTL_EVTCHN_NOTIFY: u32 = ioc(IOC_NONE, b'E', 4, size_of::<IoctlPort>());
/// `_IOC(_IOC_NONE, 'E', 5, 0)`.
pub const IOCTL_EVTCHN_RESET: u32 = ioc(IOC_NONE, b'E', 5, 0);

const _: () = {
    assert!(IOCTL_EVTCHN_BIND_INTERDOMAIN == 0x0008_4501);
    assert!(IOCTL_EVTCHN_BIND_UNBOUND_PORT == 0x0004_4502);
    assert!(IOCTL_EVTCHN_UNBIND == 0x0004_4503);
    assert!(IOCTL_EVTCHN_NOTIFY == 0x0004_4504);
    assert!(IOCTL_EVTCHN_RESET == 0x0000_4505);
    assert!(size_of::<IoctlBindInterdomain>() == 8);
    assert!(offset_of!(IoctlBindInterdomain, remote_domain) == 0);
    assert!(offset_of!(IoctlBindInterdomain, remote_port) == 4);
    assert!(size_of::<IoctlBindUnboundPort>() == 4);
    assert!(size_of::<IoctlPort>() == 4);
};

/// Bytes per port in `read()`/`write()` (`evtchn_port_t`, u32).
const PORT_BYTES: usize = size_of::<u32>();
/// The driver moves at most a page of ports per `read()`/`write()`.
const PORTS_PER_IO: usize = PAGE_SIZE / PORT_BYTES;

/// An evtchn ioctl, with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvtchnIoctl {
    /// Bind a local port to `(remote_domid, remote_port)`; returns the local port.
    BindInterdomain {
        /// The peer domain.
        remote_domid: DomId,
        /// Its unbound port.
        remote_port: Port,
    },
    /// Allocate a local port the remote domain may bind; returns it.
    BindUnboundPort {
        /// The domain allowed to bind.
        remote_domid: DomId,
    },
    /// Close a port bound through this descriptor.
    Unbind(Port),
    /// Send an event on a port bound through this descriptor.
    Notify(Port),
    /// Empty the pending ring and clear the overflow flag.
    Reset,
}

impl EvtchnIoctl {
    /// The ioctl's name, for errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::BindInterdomain { .. } => "IOCTL_EVTCHN_BIND_INTERDOMAIN",
            Self::BindUnboundPort { .. } => "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
            Self::Unbind(_) => "IOCTL_EVTCHN_UNBIND",
            Self::Notify(_) => "IOCTL_EVTCHN_NOTIFY",
            Self::Reset => "IOCTL_EVTCHN_RESET",
        }
    }
}

/// What [`Evtchn`] needs from the device: the real one is [`DevEvtchn`]; tests script a fake.
pub trait EvtchnIo {
    /// `read()`: pending ports as native-endian u32s; `WouldBlock` when none.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// `write()`: ports to unmask, as native-endian u32s.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// An ioctl; returns the ioctl's non-negative return value (the port, for binds).
    fn ioctl(&mut self, op: EvtchnIoctl) -> io::Result<u32>;
}

/// The real `/dev/xen/evtchn`, opened non-blocking.
#[derive(Debug)]
pub struct DevEvtchn {
    file: Arc<File>,
}

impl DevEvtchn {
    /// Opens [`EVTCHN_PATH`] read-write, non-blocking, close-on-exec.
    pub fn open() -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(EVTCHN_PATH)
            .map_err(|e| Error::open_failed(EVTCHN_PATH, EVTCHN_MODULE_HINT, &e))?;
        Ok(DevEvtchn {
            file: Arc::new(file),
        })
    }

    /// A handle that can only notify, for other threads (same descriptor, so the same ports).
    pub fn notifier(&self) -> Notifier {
        Notifier {
            file: self.file.clone(),
        }
    }
}

impl EvtchnIo for DevEvtchn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.file).read(buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.file).write(buf)
    }

    fn ioctl(&mut self, op: EvtchnIoctl) -> io::Result<u32> {
        evtchn_ioctl(&self.file, op)
    }
}

impl AsFd for DevEvtchn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Issues one evtchn ioctl on `file`.
fn evtchn_ioctl(file: &File, op: EvtchnIoctl) -> io::Result<u32> {
    let fd = file.as_raw_fd();
    let rc = match op {
        EvtchnIoctl::BindInterdomain {
            remote_domid,
            remote_port,
        } => {
            let mut arg = IoctlBindInterdomain {
                remote_domain: remote_domid.into(),
                remote_port: remote_port.0,
            };
            // SAFETY: BIND_INTERDOMAIN reads exactly `struct ioctl_evtchn_bind_interdomain`,
            // the 8 bytes of `arg` (asserted above), which lives across the call.
            unsafe { libc::ioctl(fd, IOCTL_EVTCHN_BIND_INTERDOMAIN as libc::Ioctl, &mut arg) }
        }
        EvtchnIoctl::BindUnboundPort { remote_domid } => {
            let mut arg = IoctlBindUnboundPort {
                remote_domain: remote_domid.into(),
            };
            // SAFETY: BIND_UNBOUND_PORT reads exactly the 4 bytes of `arg` (asserted above).
            unsafe { libc::ioctl(fd, IOCTL_EVTCHN_BIND_UNBOUND_PORT as libc::Ioctl, &mut arg) }
        }
        EvtchnIoctl::Unbind(port) | EvtchnIoctl::Notify(port) => {
            let req = if matches!(op, EvtchnIoctl::Unbind(_)) {
                IOCTL_EVTCHN_UNBIND
            } else {
                IOCTL_EVTCHN_NOTIFY
            };
            let mut arg = IoctlPort { port: port.0 };
            // SAFETY: UNBIND and NOTIFY read exactly the 4 bytes of `arg` (asserted above).
            unsafe { libc::ioctl(fd, req as libc::Ioctl, &mut arg) }
        }
        // SAFETY: RESET takes no argument; the driver ignores the third word.
        EvtchnIoctl::Reset => unsafe { libc::ioctl(fd, IOCTL_EVTCHN_RESET as libc::Ioctl, 0) },
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as u32)
    }
}

/// A notify-only handle on a [`DevEvtchn`]'s descriptor, for threads other than the one that
/// reads events. `Send + Sync`; notifying takes `&self`.
#[derive(Debug, Clone)]
pub struct Notifier {
    file: Arc<File>,
}

impl Notifier {
    /// Sends an event on `port` (bound through the same descriptor).
    pub fn notify(&self, port: Port) -> Result<()> {
        evtchn_ioctl(&self.file, EvtchnIoctl::Notify(port))
            .map(drop)
            .map_err(|e| Error::os("IOCTL_EVTCHN_NOTIFY", &e, OS_HINT))
    }
}

/// Event channels through one descriptor: binds, notifies, and collects pending ports. Takes
/// `&mut self`: one thread reads events (use [`DevEvtchn::notifier`] to notify from others).
#[derive(Debug)]
pub struct Evtchn<I: EvtchnIo = DevEvtchn> {
    io: I,
    bound: BTreeSet<u32>,
    buf: Vec<u8>,
    hypercalls: u64,
    overflows: u64,
    strays: u64,
}

impl Evtchn<DevEvtchn> {
    /// Opens [`EVTCHN_PATH`]. The error says what is missing or what to do.
    pub fn open() -> Result<Self> {
        Ok(Self::with_io(DevEvtchn::open()?))
    }
}

impl<I: EvtchnIo> Evtchn<I> {
    /// Event channels over `io`.
    pub fn with_io(io: I) -> Self {
        Evtchn {
            io,
            bound: BTreeSet::new(),
            buf: vec![0; PORTS_PER_IO * PORT_BYTES],
            hypercalls: 0,
            overflows: 0,
            strays: 0,
        }
    }

    /// The device.
    pub fn io(&self) -> &I {
        &self.io
    }

    fn ioctl(&mut self, op: EvtchnIoctl) -> Result<u32> {
        self.hypercalls += 1;
        loop {
            match self.io.ioctl(op) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| Error::os(op.name(), &e, OS_HINT)),
            }
        }
    }

    /// Binds a local port to `remote_port` of `remote_domid` (netback: the frontend's
    /// `event-channel`). The port starts unmasked.
    pub fn bind_interdomain(&mut self, remote_domid: DomId, remote_port: Port) -> Result<Port> {
        let port = self.ioctl(EvtchnIoctl::BindInterdomain {
            remote_domid,
            remote_port,
        })?;
        self.bound.insert(port);
        Ok(Port(port))
    }

    /// Allocates a local port for `remote_domid` to bind (a frontend's side).
    pub fn bind_unbound_port(&mut self, remote_domid: DomId) -> Result<Port> {
        let port = self.ioctl(EvtchnIoctl::BindUnboundPort { remote_domid })?;
        self.bound.insert(port);
        Ok(Port(port))
    }

    /// Closes a port bound through this descriptor.
    pub fn unbind(&mut self, port: Port) -> Result<()> {
        // Forget it first: whatever the kernel says, it is no longer ours to report.
        self.bound.remove(&port.0);
        self.ioctl(EvtchnIoctl::Unbind(port)).map(drop)
    }

    /// Sends an event to the peer of `port`.
    pub fn notify(&mut self, port: Port) -> Result<()> {
        self.ioctl(EvtchnIoctl::Notify(port)).map(drop)
    }

    /// Empties the driver's pending ring. Ports queued there are dropped and stay masked until
    /// unmasked; [`Evtchn::pending`] uses this only on overflow, reporting every bound port.
    pub fn reset(&mut self) -> Result<()> {
        self.ioctl(EvtchnIoctl::Reset).map(drop)
    }

    /// Appends the ports with pending events to `out`, draining the driver until it has none;
    /// returns how many were added. Each stays masked until [`Evtchn::unmask`]. After an
    /// overflow, every bound port is reported (see the module docs). Ports not bound here
    /// (unbound since the event was queued) are dropped and counted in [`Evtchn::strays`].
    pub fn pending(&mut self, out: &mut Vec<Port>) -> Result<usize> {
        let start = out.len();
        loop {
            let n = match self.io.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                    self.overflows += 1;
                    self.reset()?;
                    out.truncate(start);
                    out.extend(self.bound.iter().map(|&p| Port(p)));
                    return Ok(out.len() - start);
                }
                Err(e) => return Err(Error::os("read /dev/xen/evtchn", &e, OS_HINT)),
            };
            if n % PORT_BYTES != 0 || n > self.buf.len() {
                return Err(Error::ShortIo {
                    op: "read /dev/xen/evtchn",
                    expected: n - n % PORT_BYTES,
                    got: n,
                });
            }
            for chunk in self.buf[..n].chunks_exact(PORT_BYTES) {
                let port = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                if self.bound.contains(&port) {
                    out.push(Port(port));
                } else {
                    self.strays += 1;
                }
            }
        }
        Ok(out.len() - start)
    }

    /// Unmasks a delivered port (the late EOI): its next event can be delivered.
    pub fn unmask(&mut self, port: Port) -> Result<()> {
        self.unmask_many(&[port])
    }

    /// Unmasks several ports, a page of ports per `write()`.
    pub fn unmask_many(&mut self, ports: &[Port]) -> Result<()> {
        for chunk in ports.chunks(PORTS_PER_IO) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|p| p.0.to_ne_bytes()).collect();
            loop {
                match self.io.write(&bytes) {
                    Ok(n) if n == bytes.len() => break,
                    Ok(n) => {
                        return Err(Error::ShortIo {
                            op: "write /dev/xen/evtchn",
                            expected: bytes.len(),
                            got: n,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::os("write /dev/xen/evtchn", &e, OS_HINT)),
                }
            }
        }
        Ok(())
    }

    /// Ports bound through this descriptor.
    pub fn bound_ports(&self) -> impl Iterator<Item = Port> + '_ {
        self.bound.iter().map(|&p| Port(p))
    }

    /// ioctls issued (binds, unbinds, notifies, resets: each a hypercall or driver call).
    pub fn hypercalls(&self) -> u64 {
        self.hypercalls
    }

    /// Ring overflows recovered from.
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// Ports read that were not bound here.
    pub fn strays(&self) -> u64 {
        self.strays
    }
}

impl<I: EvtchnIo + AsFd> AsFd for Evtchn<I> {
    /// The descriptor to poll: readable when ports are pending, `POLLERR` on overflow.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

#[cfg(test)]
#[path = "evtchn_tests.rs"]
mod tests;
