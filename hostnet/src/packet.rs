//! An AF_PACKET socket on a host interface (a NIC, a veth, a bridge port): every frame the
//! interface receives, in batches, and frames sent straight out of it.
//!
//! Receiving uses `recvmmsg` into the reused slots of a [`RecvBatch`] (no allocation per frame).
//! A `TPACKET_V3` ring would save the copy, at the price of a shared mapping whose frames the
//! kernel and we hand back and forth; at the rates an uplink of this project sees the copy is
//! cheap next to the rest of the path, so the simpler, safe-to-use design comes first.
//!
//! With [`PacketConfig::vnet_hdr`] (`PACKET_VNET_HDR`) every frame received comes behind a
//! 10-byte [virtio-net header](crate::vnet) saying what the kernel knows of it (a partial
//! checksum, a GSO super-frame), as a TAP's do, and every frame sent must carry one: the kernel
//! then completes checksums and segments super-frames for the interface as it needs. Each
//! `recvmmsg` slot then holds the header and the frame after it.

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::net::{AddressFamily, SendAncillaryBuffer, SendFlags, SocketFlags, SocketType};

use crate::error::denied;
use crate::sys::{self, MMSG_MAX, RecvMeta};
use crate::vnet::HdrLen;
use crate::{Error, iface};

/// `ETH_P_ALL`: every protocol.
const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;

/// Kernel counters of a [`PacketSocket`], accumulated since it was bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketStats {
    /// Frames that reached the socket, including the dropped ones.
    pub packets: u64,
    /// Frames the kernel dropped because the socket's receive queue was full.
    pub drops: u64,
}

/// How to open a [`PacketSocket`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketConfig {
    /// Put the legacy 10-byte virtio-net header before every frame received and expect one
    /// before every frame sent (`PACKET_VNET_HDR`).
    pub vnet_hdr: bool,
}

/// An AF_PACKET raw socket bound to one interface (see the [module docs](self)).
///
/// It is promiscuous (frames for the guests' MACs arrive) and sees only frames arriving at the
/// interface: never its own transmits (Linux never loops a socket's frames back to it) nor
/// frames the host's stack or other sockets send out of the interface
/// (`PACKET_IGNORE_OUTGOING`), which a switch port must not take in as if from the wire. It is
/// non-blocking: poll its descriptor for input.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
    vnet_hdr: Option<HdrLen>,
    stats: Cell<PacketStats>,
}

impl PacketSocket {
    /// Opens a socket on interface `ifname` of the calling thread's network namespace, with
    /// bare Ethernet frames.
    ///
    /// Errors: [`Error::BadName`], [`Error::NoSuchInterface`], [`Error::NotPermitted`] (needs
    /// CAP_NET_RAW), or [`Error::Io`].
    pub fn bind(ifname: &str) -> Result<PacketSocket, Error> {
        PacketSocket::bind_with(ifname, &PacketConfig::default())
    }

    /// Opens a socket on interface `ifname` of the calling thread's network namespace, as
    /// `config` says.
    ///
    /// Errors: as [`bind`](Self::bind), and [`Error::BadConfig`] when the kernel has no
    /// `PACKET_VNET_HDR` (then open it without).
    pub fn bind_with(ifname: &str, config: &PacketConfig) -> Result<PacketSocket, Error> {
        iface::check_name(ifname)?;
        // Protocol 0 receives nothing until bind, so no frame of another interface slips in.
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| Error::io("opening AF_PACKET socket", ifname, e, denied::NET_RAW))?;
        let ifindex = iface::index(&fd, ifname, denied::NET_RAW)?;
        let fail = |op| move |e| Error::io(op, ifname, e, denied::NET_RAW);
        sys::set_int_opt(
            fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            1,
        )
        .map_err(fail("PACKET_IGNORE_OUTGOING"))?;
        // Before bind, so no frame is ever read without its header.
        if config.vnet_hdr {
            sys::set_int_opt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1).map_err(
                |e| match e.raw_os_error() {
                    Some(libc::ENOPROTOOPT | libc::EINVAL) => Error::BadConfig {
                        what: format!(
                            "this kernel has no PACKET_VNET_HDR for the socket on {ifname}: \
                             open it without the virtio-net header"
                        ),
                    },
                    _ => Error::io("PACKET_VNET_HDR", ifname, e, denied::NET_RAW),
                },
            )?;
        }
        sys::packet_add_membership(fd.as_fd(), ifindex, libc::PACKET_MR_PROMISC)
            .map_err(fail("PACKET_MR_PROMISC"))?;
        sys::packet_bind(fd.as_fd(), ifindex, ETH_P_ALL).map_err(|e| match e.raw_os_error() {
            Some(libc::ENODEV) => Error::NoSuchInterface {
                name: ifname.to_owned(),
            },
            _ => Error::io("binding AF_PACKET socket", ifname, e, denied::NET_RAW),
        })?;
        Ok(PacketSocket {
            fd,
            name: ifname.to_owned(),
            ifindex,
            vnet_hdr: config.vnet_hdr.then_some(HdrLen::Legacy),
            stats: Cell::new(PacketStats::default()),
        })
    }

    /// The virtio-net header before each frame, if any.
    pub fn vnet_hdr(&self) -> Option<HdrLen> {
        self.vnet_hdr
    }

    /// The virtio-net header's length in bytes (0 without one).
    pub fn vnet_hdr_len(&self) -> usize {
        self.vnet_hdr.map_or(0, HdrLen::bytes)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Receives the frames waiting, up to the batch's capacity, with one `recvmmsg`. Returns
    /// how many arrived (0 when none was waiting); read them with [`RecvBatch::get`] or
    /// [`RecvBatch::iter`]. A frame longer than a slot is cut and marked
    /// [`truncated`](RecvFrame::truncated), with its full length kept. With the virtio-net
    /// header each slot holds the header, then the frame, and the lengths count both.
    ///
    /// With the header, a frame the kernel cannot describe in one (a UDP super-frame) is
    /// dropped by the kernel and the call fails with `InvalidInput` (EINVAL); the frames behind
    /// it are still there for the next call.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.count = 0;
        let n = sys::recvmmsg(self.fd.as_fd(), &mut batch.buf, batch.slot, &mut batch.meta)?;
        batch.count = n;
        Ok(n)
    }

    /// Sends one frame out of the interface (its virtio-net header first, if enabled).
    /// `WouldBlock` when the socket's send queue is full.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(&self.fd, frame, SendFlags::DONTWAIT)?)
    }

    /// Sends one frame gathered from `parts` (for example the virtio-net header and the frame).
    /// `WouldBlock` when the socket's send queue is full; `EMSGSIZE` for a frame longer than
    /// the interface's MTU that is not a GSO super-frame.
    pub fn send_vectored(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut control = SendAncillaryBuffer::default();
        Ok(rustix::net::sendmsg(
            &self.fd,
            parts,
            &mut control,
            SendFlags::DONTWAIT,
        )?)
    }

    /// Sends frames with `sendmmsg` (64 per call). Returns how many were sent; fewer than
    /// `frames.len()` when the kernel stopped taking them (then retry the rest later). An error
    /// is returned only when not even the first frame was sent.
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < frames.len() {
            let chunk = &frames[sent..frames.len().min(sent + MMSG_MAX)];
            match sys::sendmmsg(self.fd.as_fd(), chunk) {
                Ok(n) => {
                    sent += n;
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }

    /// The kernel's counters (`PACKET_STATISTICS`), accumulated since the socket was bound.
    pub fn stats(&self) -> io::Result<PacketStats> {
        let (packets, drops) = sys::packet_statistics(self.fd.as_fd())?;
        // The kernel resets its counters on every read; add them to ours.
        let mut total = self.stats.get();
        total.packets += u64::from(packets);
        total.drops += u64::from(drops);
        self.stats.set(total);
        Ok(total)
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Reusable storage for [`PacketSocket::recv_batch`]: `frames` slots of `slot` bytes each.
#[derive(Debug)]
pub struct RecvBatch {
    buf: Box<[u8]>,
    slot: usize,
    meta: Box<[RecvMeta]>,
    count: usize,
}

/// One received frame, borrowed from a [`RecvBatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvFrame<'a> {
    /// The frame's bytes (only the first `slot` bytes when truncated).
    pub data: &'a [u8],
    /// Its full length on the wire.
    pub len: usize,
    /// Whether it was longer than the slot and cut.
    pub truncated: bool,
    /// Linux's `sll_pkttype`: 0 host, 1 broadcast, 2 multicast, 3 other host.
    pub pkttype: u8,
}

impl RecvBatch {
    /// The most frames one batch takes (one `recvmmsg` call).
    pub const MAX_FRAMES: usize = MMSG_MAX;

    /// Storage for `frames` frames (clamped to 1..=[`MAX_FRAMES`](Self::MAX_FRAMES)) of up to
    /// `slot` bytes each (at least 1). Use the interface's MTU + 14 (+ 4 for a VLAN tag), or
    /// 65549 where the NIC hands up GRO or GSO super-frames, plus the virtio-net header's
    /// length when the socket has one.
    pub fn new(frames: usize, slot: usize) -> RecvBatch {
        let frames = frames.clamp(1, Self::MAX_FRAMES);
        let slot = slot.max(1);
        RecvBatch {
            buf: vec![0; frames * slot].into_boxed_slice(),
            slot,
            meta: vec![RecvMeta::default(); frames].into_boxed_slice(),
            count: 0,
        }
    }

    /// How many frames the last receive filled.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last receive filled none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many frames fit.
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// The slot size in bytes.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Frame `i` of the last receive.
    pub fn get(&self, i: usize) -> Option<RecvFrame<'_>> {
        if i >= self.count {
            return None;
        }
        let m = self.meta[i];
        let start = i * self.slot;
        let kept = m.len.min(self.slot);
        Some(RecvFrame {
            data: &self.buf[start..start + kept],
            len: m.len,
            truncated: m.truncated,
            pkttype: m.pkttype,
        })
    }

    /// The frames of the last receive, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = RecvFrame<'_>> + '_ {
        (0..self.count).filter_map(|i| self.get(i))
    }
}
