//! [`XenEvtchn`]: an event-channel handle of the seam ([`EventChannel`]) over one
//! `/dev/xen/evtchn` descriptor.
//!
//! Delivery is the kernel's: when a port fires, the driver disables its interrupt and queues
//! the port; the port stays masked until userspace writes it back ([`EventChannel::unmask`],
//! the late EOI), and an event arriving meanwhile stays pending in Xen and is delivered on
//! unmask. That is exactly the trait's contract, so this adapter adds no masking of its own.
//!
//! [`EventChannel::wait`] polls a duplicate of the descriptor without holding the handle's
//! lock (binds, notifies and unmasks from other threads proceed meanwhile), then drains the
//! queued ports under it. An overflowed driver ring is recovered by the raw layer
//! ([`Evtchn::pending`]): reset, and every bound port reported.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use std::{fmt, io};

use xenoprof::Class;

use super::evtchn::{DevEvtchn, Evtchn, EvtchnIo};
use super::stats::Counters;
use super::sys;
use hypervisor::error::{Error, Result};
use hypervisor::traits::EventChannel;
use hypervisor::types::{DomId, Port};

/// An event-channel handle on real Xen: the ports bound or allocated through it are delivered
/// to it alone. Dropping it closes the descriptor, which unbinds every port.
#[derive(Debug)]
pub struct XenEvtchn<I: EvtchnIo + fmt::Debug = DevEvtchn> {
    ev: Mutex<Evtchn<I>>,
    /// A duplicate of the device descriptor, polled without the lock.
    fd: OwnedFd,
    counters: Arc<Counters>,
}

impl XenEvtchn<DevEvtchn> {
    /// Opens a handle on `/dev/xen/evtchn` (the error says what is missing).
    pub fn open() -> Result<Self> {
        Self::open_counted(Arc::default())
    }

    /// Opens a handle whose ioctls count in a host's counters.
    pub(crate) fn open_counted(counters: Arc<Counters>) -> Result<Self> {
        Self::with_io(DevEvtchn::open()?, counters)
    }
}

impl<I: EvtchnIo + AsFd + fmt::Debug> XenEvtchn<I> {
    /// A handle over `io` (the real device, or a fake in tests).
    pub(crate) fn with_io(io: I, counters: Arc<Counters>) -> Result<Self> {
        let fd = io.as_fd().try_clone_to_owned().map_err(|e| {
            super::Error::os(
                "dup of the /dev/xen/evtchn descriptor",
                &e,
                super::error::FD_HINT,
            )
        })?;
        Ok(XenEvtchn {
            ev: Mutex::new(Evtchn::with_io(io)),
            fd,
            counters,
        })
    }
}

impl<I: EvtchnIo + fmt::Debug> XenEvtchn<I> {
    /// Runs `f` on the raw handle under the lock, counting the ioctls and overflows it caused.
    fn with<R>(&self, f: impl FnOnce(&mut Evtchn<I>) -> R) -> R {
        let mut ev: MutexGuard<'_, Evtchn<I>> = self.ev.lock().unwrap_or_else(|e| e.into_inner());
        let (calls, overflows) = (ev.hypercalls(), ev.overflows());
        let r = f(&mut ev);
        Counters::add(&self.counters.evtchn_ioctls, ev.hypercalls() - calls);
        Counters::add(&self.counters.evtchn_overflows, ev.overflows() - overflows);
        r
    }

    /// Appends the ports queued now; whether any were.
    fn collect(&self, pending: &mut Vec<Port>) -> Result<bool> {
        Ok(self.with(|ev| ev.pending(pending))? > 0)
    }

    /// Ports bound through this handle.
    pub fn bound_ports(&self) -> Vec<Port> {
        self.with(|ev| ev.bound_ports().collect())
    }

    /// Ports read from the driver that were not bound here (unbound since they fired).
    pub fn strays(&self) -> u64 {
        self.with(|ev| ev.strays())
    }
}

/// The seam's error for a failed evtchn ioctl: the neutral variant where the errno has one
/// meaning (Linux's `evtchn_ioctl`, Xen's `evtchn_bind_interdomain`/`alloc_unbound`).
fn ioctl_error(e: super::Error, call: Call) -> Error {
    let super::Error::Os { errno, .. } = e else {
        return e.into();
    };
    match (errno, call) {
        // The port is not bound through this descriptor.
        (libc::ENOTCONN, Call::Port(p)) => Error::BadPort(p),
        // Not an unbound port of `remote` waiting for us (or not a port at all).
        (libc::EINVAL, Call::Bind(remote, Some(port))) => Error::PortNotBindable { remote, port },
        (libc::ESRCH, Call::Bind(remote, _)) => Error::NoSuchDomain(remote),
        (libc::ENOSPC, Call::Bind(..)) => Error::NoFreePort,
        _ => e.into(),
    }
}

#[derive(Clone, Copy)]
enum Call {
    Bind(DomId, Option<Port>),
    Port(Port),
}

impl<I: EvtchnIo + Send + fmt::Debug> EventChannel for XenEvtchn<I> {
    fn alloc_unbound(&self, remote: DomId) -> Result<Port> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        self.with(|ev| ev.bind_unbound_port(remote))
            .map_err(|e| ioctl_error(e, Call::Bind(remote, None)))
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        self.with(|ev| ev.bind_interdomain(remote, remote_port))
            .map_err(|e| ioctl_error(e, Call::Bind(remote, Some(remote_port))))
    }

    fn unbind(&self, port: Port) -> Result<()> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        self.with(|ev| ev.unbind(port))
            .map_err(|e| ioctl_error(e, Call::Port(port)))
    }

    fn notify(&self, port: Port) -> Result<()> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        self.with(|ev| ev.notify(port))
            .map_err(|e| ioctl_error(e, Call::Port(port)))
    }

    fn wait(&self, timeout: Option<Duration>, pending: &mut Vec<Port>) -> Result<()> {
        // Ports already queued are delivered without sleeping (and a zero timeout only looks).
        if self.collect(pending)? || timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            // Readable when ports are queued, POLLERR on overflow (`pending` then recovers).
            let ready = sys::poll_readable(self.fd.as_fd(), left).map_err(|e| poll_error(&e))?;
            if !ready {
                return Ok(());
            }
            // Only strays read: keep waiting for the rest of the time.
            if self.collect(pending)? || left == Some(Duration::ZERO) {
                return Ok(());
            }
        }
    }

    fn unmask(&self, ports: &[Port]) -> Result<()> {
        let _h = xenoprof::hypercall(Class::EVENT_CHANNEL);
        self.with(|ev| ev.unmask_many(ports)).map_err(Error::from)
    }

    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}

fn poll_error(e: &io::Error) -> Error {
    super::Error::os("poll on /dev/xen/evtchn", e, super::error::POLL_HINT).into()
}

#[cfg(test)]
#[path = "handle_tests.rs"]
mod tests;
