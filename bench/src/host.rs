//! The TCP hosts of the experiments, each a smoltcp interface over a link [`Endpoint`]: the
//! remote sender and the guest receiver of `tcp-rx` ([`run_host`]), or any host serving several
//! streams ([`serve`]: the remote host of `many` sends one stream to each guest). Each runs on
//! its own thread, registered as a vCPU of its domain, with its TCP work in
//! `scope(Class::TCP)`.
//!
//! The stream carries a counting pattern (stream byte `i` is `i mod 256`), so the receiver can
//! check, when asked, that every byte arrived intact and in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::Backoff;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use xenoprof::{Class, Context, DomId};

use crate::Error;
use crate::link::Endpoint;

/// The sender's TCP send buffer (machine notes: >= 1 MiB when the stacks run on different
/// cores).
pub const SOCKET_BUFFER: usize = 2 << 20;
/// The receiver's TCP buffer, which is its advertised window and so bounds the bytes in
/// flight: kept under netback's per-vif rx queue cap (`Config::rx_queue_bytes`, 512 KiB of
/// frames, headers included), so a guest that falls behind sees its queue absorb everything in
/// flight instead of drops. netback drops at a full vif queue rather than holding the wire back
/// for every guest, and smoltcp has no SACK: a drop costs a retransmission timeout. Measured
/// with 448 KiB, 1 MiB and 2 MiB windows (and queues sized to match): no difference beyond the
/// run-to-run spread on this machine.
pub const RECEIVE_WINDOW: usize = 448 << 10;
/// The receiver's listening port (iperf3's).
pub const PORT: u16 = 5201;
/// Shortest sleep once a backoff found nothing to do.
pub const MIN_WAIT: Duration = Duration::from_micros(50);
/// Longest sleep in one wait, so a stop request is seen promptly even with no timer pending.
pub const MAX_WAIT: Duration = Duration::from_millis(10);

pub(crate) const REMOTE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub(crate) const REMOTE_IP: [u8; 4] = [10, 0, 0, 1];
const GUEST_IP: [u8; 4] = [10, 0, 0, 2];

/// The counting pattern: `PATTERN[i] == i as u8`, long enough to fill any chunk at any phase.
static PATTERN: [u8; 4096 + 256] = {
    let mut p = [0u8; 4096 + 256];
    let mut i = 0;
    while i < p.len() {
        p[i] = i as u8;
        i += 1;
    }
    p
};

/// Writes the pattern for stream offset `offset` into `buf`.
pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    let mut phase = (offset % 256) as usize;
    for chunk in buf.chunks_mut(4096) {
        chunk.copy_from_slice(&PATTERN[phase..phase + chunk.len()]);
        phase = (phase + chunk.len()) % 256;
    }
}

/// Checks `buf` against the pattern at stream offset `offset`; the first wrong byte on failure.
pub fn check_pattern(offset: u64, buf: &[u8]) -> Result<(), Error> {
    let mut phase = (offset % 256) as usize;
    for (n, chunk) in buf.chunks(4096).enumerate() {
        let want = &PATTERN[phase..phase + chunk.len()];
        if chunk != want {
            let (i, (&found, &expected)) = chunk
                .iter()
                .zip(want)
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .unwrap_or((0, (&0, &0)));
            return Err(Error::Corrupt {
                offset: offset + (n * 4096 + i) as u64,
                expected,
                found,
            });
        }
        phase = (phase + chunk.len()) % 256;
    }
    Ok(())
}

/// What the host threads share with the experiment's controller.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set by the controller: finish now.
    pub stop: AtomicBool,
    /// Stream bytes the guest's application has read.
    pub bytes: AtomicU64,
    /// Frames the guest's device has received.
    pub frames: AtomicU64,
    /// Frames the remote host's device has sent: TCP segments on the wire, at most MTU-sized
    /// (retransmissions included).
    pub wire_frames: AtomicU64,
}

impl Shared {
    fn stopping(&self) -> bool {
        // Relaxed: pairs with the relaxed store in the controller; the flag carries no data, and
        // `Link::shutdown` (a lock) follows it to wake blocked hosts.
        self.stop.load(Ordering::Relaxed)
    }
}

/// Which side a host plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connects and sends the pattern as fast as the window allows.
    Sender,
    /// Listens, reads and discards (checking the pattern when asked).
    Receiver {
        /// Check every byte against the pattern.
        verify: bool,
    },
}

/// One TCP connection a host serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// Which end of the data it is.
    pub role: Role,
    /// Whether this end opens the connection (connects to `peer`:`port` from `local_port`)
    /// rather than listening on `port`.
    pub opens: bool,
    /// The other host's IPv4 address (used by the end that opens).
    pub peer: [u8; 4],
    /// The listening end's port.
    pub port: u16,
    /// The opening end's own port (distinct per stream on one host).
    pub local_port: u16,
}

/// A host: its addresses and the streams it serves, each on its own TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Its IPv4 address.
    pub ip: [u8; 4],
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// Its streams.
    pub streams: Vec<Stream>,
}

impl HostSpec {
    /// The `tcp-rx` experiment's host playing `role`: the remote sender (10.0.0.1), which
    /// connects, or the guest receiver (10.0.0.2), which listens on [`PORT`]; one stream.
    pub fn single(role: Role) -> HostSpec {
        let (mac, ip, opens) = match role {
            Role::Sender => (REMOTE_MAC, REMOTE_IP, true),
            Role::Receiver { .. } => (GUEST_MAC, GUEST_IP, false),
        };
        HostSpec {
            mac,
            ip,
            prefix_len: 24,
            streams: vec![Stream {
                role,
                opens,
                peer: GUEST_IP,
                port: PORT,
                local_port: SENDER_PORT,
            }],
        }
    }
}

/// The first port an opening end uses (the ephemeral range's start).
pub const SENDER_PORT: u16 = 49152;

/// Runs one host on the calling thread until `shared.stop` is set or the link shuts down.
pub fn run_host<E: Endpoint>(
    dev: E,
    domid: DomId,
    role: Role,
    shared: Arc<Shared>,
) -> Result<(), Error> {
    serve(dev, domid, &HostSpec::single(role), shared)
}

/// A stream's socket and how far it has got.
struct Open {
    handle: SocketHandle,
    role: Role,
    /// Stream bytes sent or read so far.
    offset: u64,
    was_open: bool,
}

/// Runs the host `spec` on the calling thread until `shared.stop` is set or the link shuts
/// down. `shared.bytes` is the sum of what its receiving streams have read.
pub fn serve<E: Endpoint>(
    mut dev: E,
    domid: DomId,
    spec: &HostSpec,
    shared: Arc<Shared>,
) -> Result<(), Error> {
    xenoprof::register_vcpu(domid, Context::Kernel);
    let epoch = std::time::Instant::now();
    let now = || Instant::from_micros(epoch.elapsed().as_micros() as i64);
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(spec.mac)));
    config.random_seed = u64::from(domid) + 1;
    let mut iface = Interface::new(config, &mut dev, now());
    let ip = spec.ip;
    iface.update_ip_addrs(|a| {
        // One address into an empty list cannot overflow it.
        let _ = a.push(IpCidr::new(
            IpAddress::v4(ip[0], ip[1], ip[2], ip[3]),
            spec.prefix_len,
        ));
    });
    let mut sockets = SocketSet::new(Vec::with_capacity(spec.streams.len()));
    let mut open = Vec::with_capacity(spec.streams.len());
    for st in &spec.streams {
        let handle = sockets.add(socket(st.role));
        let s = sockets.get_mut::<tcp::Socket<'_>>(handle);
        if st.opens {
            let p = st.peer;
            s.connect(
                iface.context(),
                (IpAddress::v4(p[0], p[1], p[2], p[3]), st.port),
                st.local_port,
            )
            .map_err(|e| Error::Stalled(format!("cannot connect to port {}: {e}", st.port)))?;
        } else {
            s.listen(st.port)
                .map_err(|e| Error::Stalled(format!("cannot listen on port {}: {e}", st.port)))?;
        }
        open.push(Open {
            handle,
            role: st.role,
            offset: 0,
            was_open: false,
        });
    }
    let receives = open.iter().any(|o| matches!(o.role, Role::Receiver { .. }));
    let backoff = Backoff::new();
    while !shared.stopping() {
        let t = now();
        let (frames_before, tx_before) = (dev.rx_frames(), dev.tx_frames());
        let mut moved = 0;
        {
            let _tcp = xenoprof::scope(Class::TCP);
            iface.poll(t, &mut dev, &mut sockets);
            for o in &mut open {
                let s = sockets.get_mut::<tcp::Socket<'_>>(o.handle);
                if s.is_active() {
                    o.was_open = true;
                } else if o.was_open {
                    return Err(Error::Stalled(format!(
                        "the connection closed unexpectedly (state {})",
                        s.state()
                    )));
                }
                moved += app(s, o.role, &mut o.offset)?;
            }
        }
        {
            let _tcp = xenoprof::scope(Class::TCP);
            dev.flush();
        }
        if receives {
            // Relaxed: progress figures read by the controller, which needs no ordering with
            // anything else they describe. (A sender may share `shared` with its receiver, so
            // only a host that receives writes them.)
            let read: u64 = open
                .iter()
                .filter(|o| matches!(o.role, Role::Receiver { .. }))
                .map(|o| o.offset)
                .sum();
            shared.bytes.store(read, Ordering::Relaxed);
            shared.frames.store(dev.rx_frames(), Ordering::Relaxed);
        } else {
            // Relaxed: as above.
            shared.wire_frames.store(dev.tx_frames(), Ordering::Relaxed);
        }
        if moved > 0 || dev.rx_frames() != frames_before || dev.tx_frames() != tx_before {
            backoff.reset();
            continue;
        }
        if !backoff.is_completed() {
            // A wait, not work: not charged to any class (its CPU time still counts).
            let _idle = xenoprof::blocked();
            backoff.snooze();
            continue;
        }
        // Sleep until the next TCP timer, bounded both ways: a timer that claims to be due now
        // after a whole backoff without progress must not turn this into a busy loop.
        let delay = iface
            .poll_delay(now(), &sockets)
            .map_or(MAX_WAIT, |d| Duration::from_micros(d.total_micros()))
            .clamp(MIN_WAIT, MAX_WAIT);
        if !dev.wait(delay) {
            break;
        }
        backoff.reset();
    }
    Ok(())
}

/// A TCP socket for `role`: the sender gets [`SOCKET_BUFFER`], the receiver [`RECEIVE_WINDOW`]; Nagle and
/// delayed ACKs are off.
fn socket(role: Role) -> tcp::Socket<'static> {
    let (rx, tx) = match role {
        Role::Sender => (64 << 10, SOCKET_BUFFER),
        Role::Receiver { .. } => (RECEIVE_WINDOW, 64 << 10),
    };
    let tx_storage = match role {
        // Pre-filled: see `app`. SOCKET_BUFFER is a multiple of 256.
        Role::Sender => (0..tx).map(|p| p as u8).collect(),
        Role::Receiver { .. } => vec![0; tx],
    };
    let mut sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; rx]),
        tcp::SocketBuffer::new(tx_storage),
    );
    sock.set_nagle_enabled(false);
    sock.set_ack_delay(None);
    sock
}

/// The application's share of one loop pass: bytes moved into or out of the socket.
fn app(s: &mut tcp::Socket<'_>, role: Role, offset: &mut u64) -> Result<usize, Error> {
    let mut moved = 0;
    match role {
        Role::Sender => {
            // Like iperf3, which sends one buffer over and over, the sender does not rewrite its
            // data: the socket's ring is pre-filled with `p as u8` at position `p`, and every
            // enqueue is a multiple of 256 bytes. smoltcp's ring only moves its write position
            // by enqueues (and resets it to 0 when empty), and its size is a multiple of 256, so
            // the write position stays congruent to the stream offset mod 256 and the ring
            // already holds the pattern. The check below rewrites a chunk that starts out of phase;
            // `--verify` (and tests/tcp_rx.rs) checks every byte at the receiver.
            while s.can_send() {
                let at = *offset;
                let n = s
                    .send(|buf| {
                        let n = buf.len() & !255;
                        if n > 0 && buf[0] != at as u8 {
                            fill_pattern(at, &mut buf[..n]);
                        }
                        (n, n)
                    })
                    .map_err(|e| Error::Stalled(format!("send failed: {e}")))?;
                if n == 0 {
                    break;
                }
                *offset += n as u64;
                moved += n;
            }
        }
        Role::Receiver { verify } => {
            while s.can_recv() {
                let at = *offset;
                let (n, ok) = s
                    .recv(|buf| {
                        let ok = if verify {
                            check_pattern(at, buf)
                        } else {
                            Ok(())
                        };
                        (buf.len(), (buf.len(), ok))
                    })
                    .map_err(|e| Error::Stalled(format!("receive failed: {e}")))?;
                ok?;
                if n == 0 {
                    break;
                }
                *offset += n as u64;
                moved += n;
            }
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_round_trips_at_any_phase_and_length() {
        for (off, len) in [
            (0u64, 1usize),
            (255, 2),
            (1000, 4096),
            (3, 10_000),
            (1 << 40, 65_000),
        ] {
            let mut b = vec![0u8; len];
            fill_pattern(off, &mut b);
            assert_eq!(b[0], off as u8);
            assert_eq!(b[len - 1], (off + len as u64 - 1) as u8);
            check_pattern(off, &b).unwrap();
        }
    }

    #[test]
    fn check_names_the_first_wrong_byte() {
        let mut b = vec![0u8; 9000];
        fill_pattern(17, &mut b);
        b[5000] ^= 0xff;
        b[6000] ^= 1;
        match check_pattern(17, &b) {
            Err(Error::Corrupt {
                offset,
                expected,
                found,
            }) => {
                assert_eq!(offset, 5017);
                assert_eq!(expected, 5017u64 as u8);
                assert_eq!(found, !(5017u64 as u8));
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // A stream shifted by one byte (a lost byte) is caught at its start.
        assert!(check_pattern(18, &b[..100]).is_err());
    }
}
