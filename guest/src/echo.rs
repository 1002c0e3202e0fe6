//! TCP echo (RFC 862) and TCP discard (RFC 863): a fixed pool of sockets on one port; each
//! serves one connection, and listens again once that connection has closed.

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

use super::{ServiceCounters, fast_socket, reusable};

/// What a [`StreamService`] does with received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Send them back.
    Echo,
    /// Count and drop them.
    Discard,
}

/// One socket of the pool and whether it holds a connection already counted.
#[derive(Debug)]
struct Slot {
    handle: SocketHandle,
    counted: bool,
}

/// An echo or discard service.
#[derive(Debug)]
pub struct StreamService {
    kind: Kind,
    port: u16,
    slots: Vec<Slot>,
    counters: ServiceCounters,
}

impl StreamService {
    /// Add `connections` (at least one) listening sockets with `buffer`-byte buffers.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        kind: Kind,
        port: u16,
        connections: usize,
        buffer: usize,
    ) -> Self {
        let rx = buffer;
        // Discard never sends: a token transmit buffer.
        let tx = if kind == Kind::Echo { buffer } else { 64 };
        let slots = (0..connections.max(1))
            .map(|_| Slot {
                handle: sockets.add(fast_socket(rx, tx)),
                counted: false,
            })
            .collect();
        StreamService {
            kind,
            port,
            slots,
            counters: ServiceCounters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> ServiceCounters {
        self.counters
    }

    /// Serve every connection; `scratch` stages echoed bytes. Returns true if anything moved.
    pub fn poll(&mut self, sockets: &mut SocketSet<'static>, scratch: &mut [u8]) -> bool {
        let mut work = false;
        for slot in &mut self.slots {
            let sock = sockets.get_mut::<tcp::Socket<'static>>(slot.handle);
            if reusable(sock) {
                // The port is non-zero and the socket not open: listen cannot fail.
                let _ = sock.listen(self.port);
                slot.counted = false;
                continue;
            }
            if !sock.is_active() {
                continue;
            }
            if !slot.counted && sock.state() != tcp::State::SynReceived {
                slot.counted = true;
                self.counters.connections += 1;
                work = true;
            }
            work |= match self.kind {
                Kind::Echo => echo(sock, scratch, &mut self.counters),
                Kind::Discard => discard(sock, &mut self.counters),
            };
            // The peer has closed and everything it sent has been handled: close our half
            // too (smoltcp sends whatever is still queued before the FIN).
            if sock.state() == tcp::State::CloseWait && !sock.can_recv() {
                sock.close();
                work = true;
            }
        }
        work
    }
}

/// Move as much as fits from the receive buffer to the transmit buffer, through `scratch`.
fn echo(sock: &mut tcp::Socket<'_>, scratch: &mut [u8], counters: &mut ServiceCounters) -> bool {
    if !sock.may_send() {
        // Our half is closed (we never close it first, so the connection is going away):
        // nothing can go back, drop what arrives.
        return discard(sock, counters);
    }
    let mut work = false;
    while sock.can_recv() {
        let room = sock.send_capacity() - sock.send_queue();
        let n = room.min(scratch.len());
        if n == 0 {
            break;
        }
        let Ok(got) = sock.recv_slice(&mut scratch[..n]) else {
            break;
        };
        if got == 0 {
            break;
        }
        // `room` bytes are free, so all `got <= room` are queued.
        let sent = sock.send_slice(&scratch[..got]).unwrap_or(0);
        debug_assert_eq!(sent, got);
        counters.bytes_in += got as u64;
        counters.bytes_out += sent as u64;
        work = true;
    }
    work
}

/// Drop everything received, counting it.
fn discard(sock: &mut tcp::Socket<'_>, counters: &mut ServiceCounters) -> bool {
    let mut work = false;
    while sock.can_recv() {
        match sock.recv(|buf| (buf.len(), buf.len())) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counters.bytes_in += n as u64;
                work = true;
            }
        }
    }
    work
}
