//! The `direct` link: the remote host's smoltcp and the guest's smoltcp joined by two in-memory
//! frame queues, with no driver domain in between.
//!
//! It measures what the two TCP stacks cost by themselves, so it is the ceiling the splitnet path
//! can approach, never a splitnet figure. Frames live in buffers of one Ethernet MTU each that
//! circulate between the two ends (sent frames one way, emptied buffers back), so once warm no
//! frame allocates. Checksums are neither computed nor verified (the capabilities say so), as a
//! NIC with checksum offload would present them; nothing between the ends can corrupt a frame.
//!
//! Waiting is event-channel shaped: a receiver with nothing to do marks itself waiting under the
//! queue's lock and blocks on a condvar; a sender that publishes frames wakes it only if that mark
//! is set (the notification suppression of ring.h's `req_event`, reduced to a flag).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::{Endpoint, Link, LinkConfig, LinkStats};
use crate::Error;

/// Frames a queue holds before it drops (the TCP window keeps it far below this).
pub const QUEUE_FRAMES: usize = 8192;
/// Frames a sender queues privately before it publishes them without waiting for `flush`.
pub const TX_BATCH: usize = 64;
/// Bytes a sender queues privately before it publishes them, and bytes `receive` hands out
/// per poll (until the next `flush`), like NAPI's budget. Without it, jumbo frames make the two
/// stacks take turns: a whole window arrives, is processed, and is acknowledged only at the end
/// of the poll, while the sender waits.
pub const BURST_BYTES: usize = 256 << 10;

/// A frame buffer (one Ethernet MTU long) and the length of the frame in it.
type Frame = (Vec<u8>, usize);

/// One direction: frames from one end to the other, and empty buffers back.
#[derive(Debug, Default)]
struct Pipe {
    state: Mutex<PipeState>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct PipeState {
    /// Published frames the receiving end has not taken yet.
    frames: VecDeque<Frame>,
    /// Emptied buffers the receiving end handed back for the sending end.
    spare: Vec<Vec<u8>>,
    /// The receiving end is blocked in `wait` (wake it on publish).
    waiting: bool,
    /// The link is shut down.
    closed: bool,
    /// Frames dropped because `frames` was full.
    dropped: u64,
    /// Times a publish woke the receiving end.
    notifies: u64,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `direct` link. See the module documentation.
#[derive(Debug, Default)]
pub struct DirectLink {
    pipes: Vec<Arc<Pipe>>,
}

impl DirectLink {
    /// A link not yet built.
    pub fn new() -> DirectLink {
        DirectLink::default()
    }
}

impl Link for DirectLink {
    type Remote = DirectEndpoint;
    type Guest = DirectEndpoint;

    fn name(&self) -> &'static str {
        "direct"
    }

    fn description(&self) -> String {
        "direct: smoltcp to smoltcp through in-memory queues, no driver domain \
         (an upper bound for the splitnet path, not a splitnet figure)"
            .to_string()
    }

    fn build(&mut self, cfg: &LinkConfig) -> Result<(DirectEndpoint, DirectEndpoint), Error> {
        if !(576..=65535).contains(&cfg.mtu) {
            return Err(Error::Config(format!(
                "IP MTU {} is outside 576..=65535",
                cfg.mtu
            )));
        }
        let to_guest = Arc::new(Pipe::default());
        let to_remote = Arc::new(Pipe::default());
        self.pipes = vec![to_guest.clone(), to_remote.clone()];
        let eth = cfg.ethernet_mtu();
        Ok((
            DirectEndpoint::new(to_guest.clone(), to_remote.clone(), eth),
            DirectEndpoint::new(to_remote, to_guest, eth),
        ))
    }

    fn shutdown(&mut self) -> Result<LinkStats, Error> {
        let mut stats = LinkStats::default();
        for p in self.pipes.drain(..) {
            let mut st = p.lock();
            st.closed = true;
            stats.add_drops("pipe_full", st.dropped);
            stats.notifies += st.notifies;
            drop(st);
            p.ready.notify_all();
        }
        Ok(stats)
    }
}

/// One end of a [`DirectLink`].
#[derive(Debug)]
pub struct DirectEndpoint {
    tx: Arc<Pipe>,
    rx: Arc<Pipe>,
    frame_len: usize,
    /// Transmitted, not yet published.
    outbox: Vec<Frame>,
    /// Taken from `rx`, not yet handed to smoltcp.
    inbox: VecDeque<Frame>,
    /// Empty buffers for our transmits.
    free: Vec<Vec<u8>>,
    /// Consumed receive buffers, to hand back to the peer through `rx.spare`.
    used: Vec<Vec<u8>>,
    rx_frames: u64,
    tx_frames: u64,
    /// Bytes handed to smoltcp since the last flush.
    rx_burst: usize,
    /// Bytes in `outbox`.
    tx_burst: usize,
}

impl DirectEndpoint {
    fn new(tx: Arc<Pipe>, rx: Arc<Pipe>, frame_len: usize) -> DirectEndpoint {
        DirectEndpoint {
            tx,
            rx,
            frame_len,
            outbox: Vec::with_capacity(TX_BATCH),
            inbox: VecDeque::new(),
            free: Vec::new(),
            used: Vec::new(),
            rx_frames: 0,
            tx_frames: 0,
            rx_burst: 0,
            tx_burst: 0,
        }
    }

    /// Takes everything the peer published (one lock) and hands back our emptied buffers.
    fn refill(&mut self) {
        let mut st = self.rx.lock();
        // `inbox` is empty: swapping keeps both deques' capacity, so nothing allocates.
        std::mem::swap(&mut st.frames, &mut self.inbox);
        st.spare.append(&mut self.used);
    }
}

/// Moves `outbox` into the pipe; returns whether the peer must be woken.
fn publish(tx: &Pipe, outbox: &mut Vec<Frame>, free: &mut Vec<Vec<u8>>) -> bool {
    let mut st = tx.lock();
    for f in outbox.drain(..) {
        if st.frames.len() < QUEUE_FRAMES {
            st.frames.push_back(f);
        } else {
            st.dropped += 1;
            free.push(f.0);
        }
    }
    free.append(&mut st.spare);
    st.notifies += u64::from(st.waiting);
    st.waiting
}

impl Endpoint for DirectEndpoint {
    fn flush(&mut self) {
        self.rx_burst = 0;
        self.tx_burst = 0;
        if self.outbox.is_empty() {
            return;
        }
        if publish(&self.tx, &mut self.outbox, &mut self.free) {
            self.tx.ready.notify_one();
        }
    }

    fn wait(&mut self, timeout: Duration) -> bool {
        let _blocked = xenoprof::blocked();
        let mut st = self.rx.lock();
        if st.closed {
            return false;
        }
        if !st.frames.is_empty() {
            return true;
        }
        st.waiting = true;
        let (mut st, _) = self
            .rx
            .ready
            .wait_timeout_while(st, timeout, |s| s.frames.is_empty() && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        st.waiting = false;
        !st.closed
    }

    fn rx_frames(&self) -> u64 {
        self.rx_frames
    }

    fn tx_frames(&self) -> u64 {
        self.tx_frames
    }
}

/// A received frame, lent to smoltcp; its buffer goes back to the peer after `consume`.
#[derive(Debug)]
pub struct DirectRxToken<'a> {
    frame: Option<Frame>,
    used: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for DirectRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        let (buf, len) = self.frame.take().unwrap_or_default();
        let r = f(&buf[..len]);
        self.used.push(buf);
        r
    }
}

impl Drop for DirectRxToken<'_> {
    fn drop(&mut self) {
        if let Some((buf, _)) = self.frame.take() {
            self.used.push(buf);
        }
    }
}

/// A transmit slot: a free buffer that is queued for the peer after `consume`.
#[derive(Debug)]
pub struct DirectTxToken<'a> {
    tx: &'a Pipe,
    outbox: &'a mut Vec<Frame>,
    free: &'a mut Vec<Vec<u8>>,
    frame_len: usize,
    tx_frames: &'a mut u64,
    tx_burst: &'a mut usize,
}

impl phy::TxToken for DirectTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // Buffers are allocated only while the circulating set grows to the number of frames
        // in flight; after that every frame reuses one.
        let mut buf = self
            .free
            .pop()
            .unwrap_or_else(|| vec![0; self.frame_len.max(len)]);
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let r = f(&mut buf[..len]);
        self.outbox.push((buf, len));
        *self.tx_frames += 1;
        *self.tx_burst += len;
        if self.outbox.len() >= TX_BATCH || *self.tx_burst >= BURST_BYTES {
            *self.tx_burst = 0;
            if publish(self.tx, self.outbox, self.free) {
                self.tx.ready.notify_one();
            }
        }
        r
    }
}

impl phy::Device for DirectEndpoint {
    type RxToken<'a> = DirectRxToken<'a>;
    type TxToken<'a> = DirectTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(DirectRxToken<'_>, DirectTxToken<'_>)> {
        if self.rx_burst >= BURST_BYTES {
            return None;
        }
        if self.inbox.is_empty() {
            self.refill();
        }
        let frame = self.inbox.pop_front()?;
        self.rx_frames += 1;
        self.rx_burst += frame.1;
        Some((
            DirectRxToken {
                frame: Some(frame),
                used: &mut self.used,
            },
            DirectTxToken {
                tx: &self.tx,
                outbox: &mut self.outbox,
                free: &mut self.free,
                frame_len: self.frame_len,
                tx_frames: &mut self.tx_frames,
                tx_burst: &mut self.tx_burst,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<DirectTxToken<'_>> {
        Some(DirectTxToken {
            tx: &self.tx,
            outbox: &mut self.outbox,
            free: &mut self.free,
            frame_len: self.frame_len,
            tx_frames: &mut self.tx_frames,
            tx_burst: &mut self.tx_burst,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.frame_len;
        // No `max_burst_size`: smoltcp would clamp the advertised window to that many segments
        // (and compare it before window scaling), throttling the stream; the queue holds the
        // whole window anyway.
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{GUEST_DOMID, REMOTE_DOMID, RxMode};
    use smoltcp::phy::{Device, RxToken, TxToken};

    fn cfg() -> LinkConfig {
        LinkConfig {
            mtu: 1500,
            mode: RxMode::Copy,
            batch: 64,
            offload: crate::link::Offload::Gso,
            dom0: 0,
            guest: GUEST_DOMID,
            remote: REMOTE_DOMID,
            placement: Default::default(),
        }
    }

    fn send(ep: &mut DirectEndpoint, byte: u8, len: usize) {
        let t = ep.transmit(Instant::ZERO).expect("a tx token");
        t.consume(len, |b| b.fill(byte));
    }

    #[test]
    fn frames_arrive_in_order_after_flush_only() {
        let mut link = DirectLink::new();
        let (mut a, mut b) = link.build(&cfg()).unwrap();
        for i in 0..10u8 {
            send(&mut a, i, 60 + usize::from(i));
        }
        assert!(
            b.receive(Instant::ZERO).is_none(),
            "unflushed frames leaked"
        );
        a.flush();
        for i in 0..10u8 {
            let (rx, _) = b.receive(Instant::ZERO).expect("frame");
            rx.consume(|f| {
                assert_eq!(f.len(), 60 + usize::from(i));
                assert!(f.iter().all(|&x| x == i));
            });
        }
        assert!(b.receive(Instant::ZERO).is_none());
        assert_eq!((a.tx_frames(), b.rx_frames()), (10, 10));
        assert_eq!(link.shutdown().unwrap().dropped, 0);
    }

    #[test]
    fn buffers_circulate_without_growing() {
        let mut link = DirectLink::new();
        let (mut a, mut b) = link.build(&cfg()).unwrap();
        for _round in 0..50 {
            for _ in 0..8 {
                send(&mut a, 7, 1514);
            }
            a.flush();
            while let Some((rx, _)) = b.receive(Instant::ZERO) {
                rx.consume(|_| ());
            }
            // Hand the emptied buffers back (the next refill does it).
            b.refill();
        }
        // At most two rounds' worth of buffers ever existed.
        let pool = a.free.len() + a.tx.lock().spare.len() + b.used.len();
        assert!(pool <= 16, "{pool} buffers: the pool grows per frame");
    }

    #[test]
    fn batch_publishes_without_flush_and_wait_sees_it() {
        let mut link = DirectLink::new();
        let (mut a, mut b) = link.build(&cfg()).unwrap();
        for _ in 0..TX_BATCH {
            send(&mut a, 1, 100);
        }
        assert!(b.wait(Duration::from_secs(5)));
        assert!(b.receive(Instant::ZERO).is_some());
    }

    #[test]
    fn shutdown_releases_a_blocked_waiter() {
        let mut link = DirectLink::new();
        let (_a, mut b) = link.build(&cfg()).unwrap();
        let h = std::thread::spawn(move || b.wait(Duration::from_secs(60)));
        // Whether the waiter blocked before or after the shutdown, it must return false.
        link.shutdown().unwrap();
        assert!(!h.join().unwrap());
    }

    #[test]
    fn receive_budget_ends_a_poll_until_flush() {
        let mut c = cfg();
        c.mtu = 65000;
        let mut link = DirectLink::new();
        let (mut a, mut b) = link.build(&c).unwrap();
        let n = BURST_BYTES / 65014 + 3;
        for _ in 0..n {
            send(&mut a, 3, 65014);
        }
        a.flush();
        let mut got = 0;
        while let Some((rx, _)) = b.receive(Instant::ZERO) {
            rx.consume(|_| ());
            got += 1;
        }
        assert_eq!(got, BURST_BYTES.div_ceil(65014), "budget not applied");
        b.flush();
        while let Some((rx, _)) = b.receive(Instant::ZERO) {
            rx.consume(|_| ());
            got += 1;
        }
        assert_eq!(got, n, "frames lost across polls");
    }

    #[test]
    fn rejects_bad_mtu() {
        let mut c = cfg();
        c.mtu = 70000;
        assert!(matches!(DirectLink::new().build(&c), Err(Error::Config(_))));
    }
}
