//! guest: an embedded guest, netfront + smoltcp services.
//!
//! - [`runner`]: a guest's vCPU thread ([`Guest`]): netfront connected through xenbus over any
//!   [`hypervisor::FrontendDomain`], smoltcp on top, the services below, counters published as it
//!   works ([`GuestReport`]), a stop on request. netbackd runs one per embedded guest.
//! - [`Services`]: what the guest serves, usable over any smoltcp device.
//!
//! The services an embedded guest runs on its IPv4 address, over any smoltcp device:
//!
//! - ICMP echo: answered by smoltcp's `Interface` itself (this crate enables smoltcp's
//!   `auto-icmp-echo-reply`); nothing here is involved.
//! - TCP echo on port 7 and TCP discard on port 9 ([`echo`]): a few concurrent connections
//!   each, every socket listening again once its connection has closed.
//! - An iperf3 server on port 5201 ([`iperf3`]) that the stock `iperf3` client tests against,
//!   normal and reverse (`-R`).
//!
//! Over a device of one's own, the guest's loop is the caller's ([`runner`] is one):
//!
//! ```text
//! loop {
//!     iface.poll(now, &mut device, &mut sockets);
//!     if services.poll(&mut sockets, now) { continue; }   // it queued data: let smoltcp send it
//!     block in the device until a frame arrives, or until the earlier of
//!     iface.poll_delay(now, &sockets) and services.poll_at() - now
//! }
//! ```
//!
//! `now` must be monotonic (`Instant::from_micros` of a monotonic clock, not
//! `smoltcp::time::Instant::now()`, which reads the wall clock). Once the sockets exist nothing
//! here allocates per packet; the iperf3 server allocates a little per test (its JSON).
#![forbid(unsafe_code)]

pub mod echo;
mod error;
pub mod iperf3;
pub mod runner;

use serde::Serialize;
use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;

use echo::{Kind, StreamService};
use iperf3::Iperf3Server;

pub use error::Error;
pub use runner::{Guest, GuestReport, GuestSpec};

/// TCP port of the echo service (RFC 862).
pub const ECHO_PORT: u16 = 7;
/// TCP port of the discard service (RFC 863).
pub const DISCARD_PORT: u16 = 9;
/// TCP port of the iperf3 server.
pub const IPERF3_PORT: u16 = 5201;

/// Smallest socket buffer accepted; smaller configured sizes are raised to it.
pub const MIN_BUFFER: usize = 4096;

/// Which services run and how big their sockets are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicesConfig {
    /// Serve TCP echo on [`ECHO_PORT`].
    pub echo: bool,
    /// Serve TCP discard on [`DISCARD_PORT`].
    pub discard: bool,
    /// Serve iperf3 on [`IPERF3_PORT`].
    pub iperf3: bool,
    /// Concurrent connections each of echo and discard accept (one socket each).
    pub connections: usize,
    /// Receive and transmit buffer of each echo, discard and iperf3 control socket.
    pub small_buffer: usize,
    /// Receive and transmit buffer of each iperf3 data-stream socket: large, so one stream can
    /// keep a fast link full. Each stream socket holds two of these.
    pub tcp_buffer: usize,
    /// Data streams one iperf3 test may open (`-P`); more are refused with iperf3's
    /// "too many parallel streams" error.
    pub iperf3_max_streams: usize,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            echo: true,
            discard: true,
            iperf3: true,
            connections: 4,
            small_buffer: 64 * 1024,
            tcp_buffer: 1024 * 1024,
            iperf3_max_streams: 2,
        }
    }
}

/// Counters of one TCP service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceCounters {
    /// Connections accepted (for iperf3: control, data and refused connections).
    pub connections: u64,
    /// Payload bytes received (for iperf3: on data streams).
    pub bytes_in: u64,
    /// Payload bytes sent (for iperf3: on data streams).
    pub bytes_out: u64,
}

/// What the services have done since they started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServicesStats {
    /// TCP echo.
    pub echo: ServiceCounters,
    /// TCP discard.
    pub discard: ServiceCounters,
    /// iperf3 (data-stream bytes; control bytes are not counted).
    pub iperf3: ServiceCounters,
    /// iperf3 tests that ran to the client's `IPERF_DONE`.
    pub iperf3_tests_completed: u64,
    /// iperf3 tests that ended otherwise: client terminated or vanished, a stream failed, a
    /// protocol error, or the server's time limit.
    pub iperf3_tests_aborted: u64,
    /// Connections refused with `ACCESS_DENIED` (a test was running, or a wrong cookie).
    pub iperf3_access_denied: u64,
    /// Connections closed because a client sent something malformed or out of turn, or sent
    /// nothing in time.
    pub protocol_errors: u64,
}

/// The running services: their sockets' handles and state. Device-agnostic: it only touches
/// sockets in the caller's [`SocketSet`].
#[derive(Debug)]
pub struct Services {
    echo: Option<StreamService>,
    discard: Option<StreamService>,
    iperf3: Option<Iperf3Server>,
    /// Staging for echo: received bytes pass through here on their way back out.
    scratch: Box<[u8]>,
}

impl Services {
    /// Add the configured services' listening sockets to `sockets`.
    ///
    /// iperf3's data-stream sockets are added first, so that while a test connects its streams
    /// they take incoming connections before the smaller control sockets do.
    pub fn new(sockets: &mut SocketSet<'static>, cfg: &ServicesConfig) -> Self {
        let small = cfg.small_buffer.max(MIN_BUFFER);
        let big = cfg.tcp_buffer.max(MIN_BUFFER);
        let iperf3 = cfg.iperf3.then(|| {
            Iperf3Server::new(
                sockets,
                IPERF3_PORT,
                cfg.iperf3_max_streams.max(1),
                small,
                big,
            )
        });
        let echo = cfg
            .echo
            .then(|| StreamService::new(sockets, Kind::Echo, ECHO_PORT, cfg.connections, small));
        let discard = cfg.discard.then(|| {
            StreamService::new(sockets, Kind::Discard, DISCARD_PORT, cfg.connections, small)
        });
        Services {
            echo,
            discard,
            iperf3,
            scratch: vec![0; small].into_boxed_slice(),
        }
    }

    /// Move data and advance every connection's state machine. Call after each
    /// `Interface::poll`. Returns true if it did anything (read, queued, accepted, closed): then
    /// poll the interface again before blocking, so queued data leaves.
    pub fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let mut work = false;
        if let Some(s) = &mut self.echo {
            work |= s.poll(sockets, &mut self.scratch);
        }
        if let Some(s) = &mut self.discard {
            work |= s.poll(sockets, &mut self.scratch);
        }
        if let Some(s) = &mut self.iperf3 {
            work |= s.poll(sockets, now);
        }
        work
    }

    /// The earliest time a service needs [`poll`](Self::poll) called without any packet
    /// arriving (an iperf3 time limit), if any.
    pub fn poll_at(&self) -> Option<Instant> {
        self.iperf3.as_ref().and_then(Iperf3Server::poll_at)
    }

    /// Counters so far.
    pub fn stats(&self) -> ServicesStats {
        let mut stats = ServicesStats::default();
        if let Some(s) = &self.echo {
            stats.echo = s.counters();
        }
        if let Some(s) = &self.discard {
            stats.discard = s.counters();
        }
        if let Some(s) = &self.iperf3 {
            s.add_stats(&mut stats);
        }
        stats
    }
}

/// A TCP socket set up as a fast endpoint: Nagle off (small writes such as iperf3's state bytes
/// leave at once), no delayed ACK (the sender's window reopens as soon as data is read).
pub(crate) fn fast_socket(rx: usize, tx: usize) -> tcp::Socket<'static> {
    let mut sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; rx]),
        tcp::SocketBuffer::new(vec![0; tx]),
    );
    sock.set_nagle_enabled(false);
    sock.set_ack_delay(None);
    sock
}

/// Whether a socket is done with its last connection and can listen again: fully closed (an
/// abort's RST already sent, which smoltcp marks by forgetting the remote endpoint), or in
/// TIME-WAIT, which `listen` ends at once (the peer has closed; a TIME-WAIT slot would
/// otherwise hold the socket for 10 s).
pub(crate) fn reusable(sock: &tcp::Socket<'_>) -> bool {
    match sock.state() {
        tcp::State::Closed => sock.remote_endpoint().is_none(),
        tcp::State::TimeWait => true,
        _ => false,
    }
}
