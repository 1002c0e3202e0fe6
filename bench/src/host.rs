//! The two TCP hosts of the experiment, each a smoltcp interface over a link [`Endpoint`]: the
//! remote sender and the guest receiver. Each runs on its own thread, registered as a vCPU of
//! its domain, with its TCP work in `scope(Class::TCP)`.
//!
//! The stream carries a counting pattern (stream byte `i` is `i mod 256`), so the receiver can
//! check, when asked, that every byte arrived intact and in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::Backoff;
use smoltcp::iface::{Config, Interface, SocketSet};
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

const REMOTE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const REMOTE_IP: [u8; 4] = [10, 0, 0, 1];
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

/// Runs one host on the calling thread until `shared.stop` is set or the link shuts down.
pub fn run_host<E: Endpoint>(
    mut dev: E,
    domid: DomId,
    role: Role,
    shared: Arc<Shared>,
) -> Result<(), Error> {
    xenoprof::register_vcpu(domid, Context::Kernel);
    let epoch = std::time::Instant::now();
    let now = || Instant::from_micros(epoch.elapsed().as_micros() as i64);
    let (mac, ip) = match role {
        Role::Sender => (REMOTE_MAC, REMOTE_IP),
        Role::Receiver { .. } => (GUEST_MAC, GUEST_IP),
    };
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = u64::from(domid) + 1;
    let mut iface = Interface::new(config, &mut dev, now());
    iface.update_ip_addrs(|a| {
        // One address into an empty list cannot overflow it.
        let _ = a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24));
    });
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
    let mut sockets = SocketSet::new(Vec::with_capacity(1));
    let handle = sockets.add(sock);
    match role {
        Role::Sender => {
            let g = IpAddress::v4(GUEST_IP[0], GUEST_IP[1], GUEST_IP[2], GUEST_IP[3]);
            sockets
                .get_mut::<tcp::Socket<'_>>(handle)
                .connect(iface.context(), (g, PORT), 49152)
                .map_err(|e| Error::Stalled(format!("the sender cannot connect: {e}")))?;
        }
        Role::Receiver { .. } => {
            sockets
                .get_mut::<tcp::Socket<'_>>(handle)
                .listen(PORT)
                .map_err(|e| Error::Stalled(format!("the receiver cannot listen: {e}")))?;
        }
    }
    let backoff = Backoff::new();
    let mut offset = 0u64;
    let mut was_open = false;
    while !shared.stopping() {
        let t = now();
        let (frames_before, tx_before) = (dev.rx_frames(), dev.tx_frames());
        let moved = {
            let _tcp = xenoprof::scope(Class::TCP);
            iface.poll(t, &mut dev, &mut sockets);
            let s = sockets.get_mut::<tcp::Socket<'_>>(handle);
            if s.is_active() {
                was_open = true;
            } else if was_open {
                return Err(Error::Stalled(format!(
                    "the connection closed unexpectedly (state {})",
                    s.state()
                )));
            }
            app(s, role, &mut offset)?
        };
        {
            let _tcp = xenoprof::scope(Class::TCP);
            dev.flush();
        }
        if let Role::Receiver { .. } = role {
            // Relaxed: progress figures read by the controller, which needs no ordering with
            // anything else they describe.
            shared.bytes.store(offset, Ordering::Relaxed);
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
