//! The iperf3 server's state machine over smoltcp sockets.
//!
//! Sockets ("slots") come in two pools on the same port. Control-pool sockets (small buffers)
//! always listen; stream-pool sockets (large buffers, added to the socket set first so smoltcp
//! offers them incoming connections first) listen only while a test is connecting its data
//! streams. What a connection is does not depend on its pool but on its cookie and the test's
//! phase, as in iperf3's own server:
//!
//! - no test: the connection's cookie starts one; it is the control connection;
//! - a test connecting streams: a matching cookie makes a data stream, any other is refused;
//! - a test in any other phase: refused at once with `ACCESS_DENIED`, cookie unread.
//!
//! The test then follows iperf3's server (`iperf_server_api.c`): `PARAM_EXCHANGE`, the client's
//! parameters, `CREATE_STREAMS`, `TEST_START` + `TEST_RUNNING` once every stream is connected,
//! data until the client's `TEST_END`, `EXCHANGE_RESULTS` (the client's results in, ours out),
//! `DISPLAY_RESULTS`, and the client's `IPERF_DONE`. The client's timer sets the test's length;
//! the server only enforces iperf3's limit of the test time plus 40 s of grace.

mod session;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

use super::proto::{COOKIE_SIZE, Cookie, FrameReader, MAX_PARAMS_JSON, State};
use crate::{ServiceCounters, ServicesStats, fast_socket, reusable};

/// How long a new connection may take to send its cookie.
const COOKIE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client may take between the control connection and `TEST_RUNNING`, and
/// between `TEST_END` and `IPERF_DONE`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// iperf3's grace after the test time: 4 s round trip × 10 state transitions.
const GRACE: Duration = Duration::from_secs(40);
/// How long a connection we closed may linger before we reset it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive on control connections, and how long any connection may leave data or a probe
/// unacknowledged before smoltcp drops it: a client that vanishes cannot hold the server.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// Period of the byte pattern sent in reverse mode: byte `k` of a stream is `k % 251`.
pub const PATTERN_PERIOD: usize = 251;
/// The pattern buffer: a whole number of periods, so it wraps seamlessly.
const PATTERN_LEN: usize = PATTERN_PERIOD * 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    Control,
    Stream,
}

#[derive(Debug)]
enum Role {
    /// No connection: listening, or waiting to.
    Free,
    /// A new connection whose cookie is still arriving.
    Cookie {
        buf: Cookie,
        got: usize,
        deadline: Instant,
    },
    /// The test's control connection.
    Control,
    /// One of the test's data streams.
    Stream,
    /// Closed (or refused) by us; received bytes are dropped until the socket is reusable,
    /// and it is reset at the deadline.
    Closing { deadline: Instant },
}

#[derive(Debug)]
struct Slot {
    handle: SocketHandle,
    pool: Pool,
    role: Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the client's parameters.
    Params,
    /// Waiting for the data streams to connect.
    CreateStreams,
    /// Data flows until the client's `TEST_END`.
    Running,
    /// Reading the client's results.
    Results,
    /// Our results sent; waiting for `IPERF_DONE`.
    Display,
}

#[derive(Debug)]
struct Stream {
    slot: usize,
    bytes: u64,
    /// Where in the pattern the next byte sent comes from.
    pattern_pos: usize,
}

#[derive(Debug)]
struct Test {
    ctrl: usize,
    cookie: Cookie,
    phase: Phase,
    reverse: bool,
    parallel: usize,
    /// Seconds the client omits at the start (`-O`) and the test time (`-t`, 0: by bytes).
    omit: u32,
    time: u32,
    streams: Vec<Stream>,
    /// Bytes count from here (`TEST_START` plus the omitted seconds).
    count_from: Instant,
    /// When `TEST_END` arrived.
    end: Instant,
    deadline: Option<Instant>,
}

/// How a test ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// `IPERF_DONE` received.
    Completed,
    /// The client terminated, vanished, a stream failed, or the time limit passed.
    Aborted,
    /// The client sent something malformed or out of turn: its connections are reset.
    ProtocolError,
    /// We refuse the test: `SERVER_ERROR` with this iperf3 error code, then close.
    ServerError(i32),
}

/// The iperf3 server: its sockets, the current test, counters.
#[derive(Debug)]
pub struct Iperf3Server {
    port: u16,
    slots: Vec<Slot>,
    test: Option<Test>,
    max_streams: usize,
    /// Reads the current JSON message; its buffer is kept from test to test.
    reader: FrameReader,
    /// Reverse-mode data comes from here.
    pattern: Box<[u8]>,
    counters: ServiceCounters,
    completed: u64,
    aborted: u64,
    denied: u64,
    protocol_errors: u64,
}

impl Iperf3Server {
    /// Add `max_streams` stream sockets (`stream_buffer` each way) and two control sockets
    /// (`control_buffer` each way: one for the test, one to refuse others) to `sockets`.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        port: u16,
        max_streams: usize,
        control_buffer: usize,
        stream_buffer: usize,
    ) -> Self {
        let mut slots = Vec::with_capacity(max_streams + 2);
        for _ in 0..max_streams {
            let mut sock = fast_socket(stream_buffer, stream_buffer);
            sock.set_timeout(Some(PEER_TIMEOUT));
            slots.push(Slot {
                handle: sockets.add(sock),
                pool: Pool::Stream,
                role: Role::Free,
            });
        }
        for _ in 0..2 {
            let mut sock = fast_socket(control_buffer, control_buffer);
            sock.set_timeout(Some(PEER_TIMEOUT));
            sock.set_keep_alive(Some(KEEP_ALIVE));
            slots.push(Slot {
                handle: sockets.add(sock),
                pool: Pool::Control,
                role: Role::Free,
            });
        }
        let pattern = (0..PATTERN_LEN)
            .map(|k| (k % PATTERN_PERIOD) as u8)
            .collect();
        let mut server = Iperf3Server {
            port,
            slots,
            test: None,
            max_streams,
            reader: FrameReader::new(MAX_PARAMS_JSON),
            pattern,
            counters: ServiceCounters::default(),
            completed: 0,
            aborted: 0,
            denied: 0,
            protocol_errors: 0,
        };
        server.update_listeners(sockets);
        server
    }

    /// Copy this server's counters into `stats`.
    pub fn add_stats(&self, stats: &mut ServicesStats) {
        stats.iperf3 = self.counters;
        stats.iperf3_tests_completed = self.completed;
        stats.iperf3_tests_aborted = self.aborted;
        stats.iperf3_access_denied = self.denied;
        stats.protocol_errors += self.protocol_errors;
    }

    /// The earliest deadline of the test or of any connection.
    pub fn poll_at(&self) -> Option<Instant> {
        let slots = self.slots.iter().filter_map(|s| match s.role {
            Role::Cookie { deadline, .. } | Role::Closing { deadline } => Some(deadline),
            _ => None,
        });
        let test = self.test.as_ref().and_then(|t| t.deadline);
        slots.chain(test).min()
    }

    /// Advance every connection and the test. Returns true if anything happened.
    pub fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let mut work = false;
        for i in 0..self.slots.len() {
            work |= self.poll_slot(i, sockets, now);
        }
        work |= self.poll_test(sockets, now);
        work | self.update_listeners(sockets)
    }

    /// Control sockets always listen; exactly as many stream sockets as the test still lacks
    /// streams do.
    fn update_listeners(&mut self, sockets: &mut SocketSet<'static>) -> bool {
        let wanted = match &self.test {
            Some(t) if t.phase == Phase::CreateStreams => t.parallel - t.streams.len(),
            _ => 0,
        };
        let mut listening = 0;
        let mut work = false;
        for slot in self.slots.iter().filter(|s| matches!(s.role, Role::Free)) {
            let sock = sockets.get_mut::<tcp::Socket<'static>>(slot.handle);
            let is_listening = sock.state() == tcp::State::Listen;
            // A stream socket counts towards the wanted ones if it listens, can listen now, or
            // is already taking a connection (not yet established).
            let usable = is_listening || sock.state() == tcp::State::SynReceived || reusable(sock);
            let listen = match slot.pool {
                Pool::Control => true,
                Pool::Stream if usable && listening < wanted => {
                    listening += 1;
                    true
                }
                Pool::Stream => false,
            };
            if listen && !is_listening && reusable(sock) {
                // The port is non-zero and the socket not open: listen cannot fail.
                let _ = sock.listen(self.port);
                work = true;
            } else if !listen && is_listening {
                sock.close();
                work = true;
            }
        }
        work
    }

    /// Per-connection work outside the test: accept, read cookies, refuse, finish closing.
    fn poll_slot(&mut self, i: usize, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let sock = sockets.get_mut::<tcp::Socket<'static>>(self.slots[i].handle);
        match &mut self.slots[i].role {
            Role::Free => {
                let idle = matches!(
                    sock.state(),
                    tcp::State::Closed | tcp::State::Listen | tcp::State::SynReceived
                );
                if idle || reusable(sock) {
                    return false;
                }
                self.counters.connections += 1;
                let busy = self
                    .test
                    .as_ref()
                    .is_some_and(|t| t.phase != Phase::CreateStreams);
                if busy {
                    // As iperf3 does: refuse without reading, the bytes could be anything.
                    refuse(sock);
                    self.denied += 1;
                    self.slots[i].role = closing(now);
                } else {
                    self.slots[i].role = Role::Cookie {
                        buf: [0; COOKIE_SIZE],
                        got: 0,
                        deadline: now + COOKIE_TIMEOUT,
                    };
                    self.poll_slot(i, sockets, now);
                }
                true
            }
            Role::Cookie { buf, got, deadline } => {
                let mut work = false;
                if let Ok(n) = sock.recv_slice(&mut buf[*got..]) {
                    *got += n;
                    work = n > 0;
                }
                if *got == COOKIE_SIZE {
                    let cookie = *buf;
                    self.on_cookie(i, cookie, sockets, now);
                    true
                } else if !sock.may_recv() || now >= *deadline {
                    // Closed, reset, or silent before its cookie was complete.
                    sock.abort();
                    self.protocol_errors += 1;
                    self.slots[i].role = closing(now);
                    true
                } else {
                    work
                }
            }
            Role::Closing { deadline } => {
                let mut work = drain(sock) > 0;
                if reusable(sock) {
                    self.slots[i].role = Role::Free;
                    work = true;
                } else if now >= *deadline && sock.state() != tcp::State::Closed {
                    sock.abort();
                    work = true;
                }
                work
            }
            Role::Control | Role::Stream => false,
        }
    }

    /// A connection's cookie is complete: start a test, add a stream, or refuse it.
    fn on_cookie(
        &mut self,
        i: usize,
        cookie: Cookie,
        sockets: &mut SocketSet<'static>,
        now: Instant,
    ) {
        let handle = self.slots[i].handle;
        match &mut self.test {
            None => {
                self.slots[i].role = Role::Control;
                self.reader.reset(MAX_PARAMS_JSON);
                self.test = Some(Test {
                    ctrl: i,
                    cookie,
                    phase: Phase::Params,
                    reverse: false,
                    parallel: 0,
                    omit: 0,
                    time: 0,
                    streams: Vec::with_capacity(self.max_streams),
                    count_from: now,
                    end: now,
                    deadline: Some(now + HANDSHAKE_TIMEOUT),
                });
                let sock = sockets.get_mut::<tcp::Socket<'static>>(handle);
                if !send_all(sock, &[State::ParamExchange.byte()]) {
                    self.end_test(End::Aborted, sockets, now);
                }
            }
            Some(t)
                if t.phase == Phase::CreateStreams
                    && t.cookie == cookie
                    && t.streams.len() < t.parallel =>
            {
                self.slots[i].role = Role::Stream;
                t.streams.push(Stream {
                    slot: i,
                    bytes: 0,
                    pattern_pos: 0,
                });
                if t.streams.len() == t.parallel {
                    // All connected: start, as iperf3 does, with TEST_START then TEST_RUNNING.
                    let ctrl = sockets.get_mut::<tcp::Socket<'static>>(self.slots[t.ctrl].handle);
                    let sent =
                        send_all(ctrl, &[State::TestStart.byte(), State::TestRunning.byte()]);
                    t.phase = Phase::Running;
                    let omit = Duration::from_secs(u64::from(t.omit));
                    t.count_from = now + omit;
                    t.deadline = (t.time > 0)
                        .then(|| now + omit + Duration::from_secs(u64::from(t.time)) + GRACE);
                    if !sent {
                        self.end_test(End::Aborted, sockets, now);
                    }
                }
            }
            Some(_) => {
                refuse(sockets.get_mut::<tcp::Socket<'static>>(handle));
                self.denied += 1;
                self.slots[i].role = closing(now);
            }
        }
    }
}

fn closing(now: Instant) -> Role {
    Role::Closing {
        deadline: now + CLOSE_TIMEOUT,
    }
}

/// Queue all of `bytes` or nothing; false if they do not fit or the socket cannot send.
fn send_all(sock: &mut tcp::Socket<'_>, bytes: &[u8]) -> bool {
    sock.may_send()
        && sock.send_capacity() - sock.send_queue() >= bytes.len()
        && sock.send_slice(bytes) == Ok(bytes.len())
}

/// Tell a connection `ACCESS_DENIED` and close it.
fn refuse(sock: &mut tcp::Socket<'_>) {
    send_all(sock, &[State::AccessDenied.byte()]);
    sock.close();
}

/// Drop everything received; returns how many bytes.
fn drain(sock: &mut tcp::Socket<'_>) -> usize {
    let mut total = 0;
    while let Ok(n @ 1..) = sock.recv(|buf| (buf.len(), buf.len())) {
        total += n;
    }
    total
}
