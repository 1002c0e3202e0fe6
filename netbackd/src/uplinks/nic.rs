//! An existing interface (a NIC, a veth) as a switch port, through an `AF_PACKET` socket.

use std::os::fd::AsFd;

use hostnet::{PacketSocket, RecvBatch};
use netback::pool::NetFrame;
use netback::{Accepts, Uplink, UplinkIo, UplinkStats, Wakeup};
use netif_ring::netif::MAX_FRAME;

use super::{RX_BURST, send_out, take_in_with_hdr, vnet};

/// Frames per `recvmmsg` on a NIC uplink.
const NIC_BATCH: usize = 4;

/// An existing interface, through an `AF_PACKET` socket, as a switch port.
///
/// With the virtio-net header (`PACKET_VNET_HDR`) the socket hands up what the interface
/// received as Linux has it: a frame the host's stack sent out of a veth with a partial
/// checksum, a super-frame a NIC's GRO (or a veth's TSO) built; and it takes frames the same
/// way, Linux completing checksums and segmenting super-frames for the interface if it cannot.
#[derive(Debug)]
pub struct NicUplink {
    name: String,
    sock: PacketSocket,
    /// Bytes of virtio-net header before each frame (0: bare frames).
    hdr_len: usize,
    batch: RecvBatch,
    tx_buf: Vec<u8>,
    stats: UplinkStats,
}

impl NicUplink {
    /// The port `name` for `sock`.
    pub(crate) fn new(name: String, sock: PacketSocket) -> Self {
        let hdr_len = sock.vnet_hdr_len();
        Self {
            name,
            // Slots for a full-size frame and its header: a NIC with GRO hands packet sockets
            // its 64 KiB super-frames. Four per call keep one call within a vif queue's room.
            batch: RecvBatch::new(NIC_BATCH, hdr_len + MAX_FRAME),
            hdr_len,
            sock,
            tx_buf: Vec::with_capacity(MAX_FRAME),
            stats: UplinkStats::default(),
        }
    }
}

impl<D: hypervisor::BackendDomain> Uplink<D> for NicUplink {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_frame(&self) -> usize {
        // One receive call takes up to a batch of full-size frames.
        MAX_FRAME * NIC_BATCH
    }

    fn receive(&mut self, io: &UplinkIo<'_, D>, out: &mut Vec<NetFrame<D>>, budget: usize) -> bool {
        let mut taken = 0usize;
        let mut any = false;
        let mut calls = 0;
        while calls < RX_BURST / NIC_BATCH && taken + MAX_FRAME * NIC_BATCH <= budget {
            calls += 1;
            match self.sock.recv_batch(&mut self.batch) {
                Ok(0) => break,
                Ok(_) => {
                    any = true;
                    for f in self.batch.iter() {
                        taken += f.len.saturating_sub(self.hdr_len);
                        if f.truncated {
                            self.stats.rx_errors += 1;
                            continue;
                        }
                        take_in_with_hdr(io, f.data, self.hdr_len, &mut self.stats, out);
                    }
                    if self.batch.len() < self.batch.capacity() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // The kernel could not describe a frame in the header (a UDP super-frame) and
                // dropped it: the ones behind it are still there.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput && self.hdr_len > 0 => {
                    any = true;
                    self.stats.rx_errors += 1;
                }
                Err(e) => {
                    self.stats.rx_errors += 1;
                    log::warn!("{}: receive failed: {e}", self.name);
                    break;
                }
            }
        }
        any
    }

    fn transmit(&mut self, _io: &UplinkIo<'_, D>, frames: &mut Vec<NetFrame<D>>) {
        let sock = &self.sock;
        send_out(
            frames,
            &mut self.tx_buf,
            self.hdr_len,
            &mut self.stats,
            |parts| sock.send_vectored(parts),
        );
    }

    fn arm(&mut self) -> bool {
        false
    }

    fn wakeup(&self) -> Wakeup<'_> {
        Wakeup::Fd(self.sock.as_fd())
    }

    fn stats(&self) -> UplinkStats {
        self.stats
    }

    fn accepts(&self) -> Accepts {
        // A packet socket with the header takes every offload the header can say: the kernel
        // checks the frame against it and does in software what the interface cannot.
        if self.hdr_len == vnet::HDR_LEN {
            Accepts::ALL
        } else {
            Accepts::NONE
        }
    }
}
