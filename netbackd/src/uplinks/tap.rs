//! A TAP device as a switch port: the host's own stack behind it.

use std::os::fd::AsFd;

use hostnet::Tap;
use hostnet::tap::offload as tun_f;
use netback::pool::NetFrame;
use netback::{Accepts, Uplink, UplinkIo, UplinkStats, Wakeup};
use netif_ring::netif::{ETH_HLEN, MAX_FRAME};

use super::gro::EgressGro;
use super::{RX_BURST, send_out, take_in_with_hdr, vnet};

/// The offloads a TAP is opened with when they are on: partial checksums and TCP super-frames
/// over IPv4 and IPv6 (UDP fragmentation and segmentation have no place in netif).
pub const OFFLOADS: u32 = tun_f::CSUM | tun_f::TSO4 | tun_f::TSO6;

/// What a port takes as is when its TAP was opened with the `TUN_F_*` flags `flags`.
fn accepts_for(flags: u32) -> Accepts {
    let csum = flags & tun_f::CSUM != 0;
    Accepts {
        sg: true,
        csum,
        ipv6_csum: csum,
        gso_tcpv4: csum && flags & tun_f::TSO4 != 0,
        gso_tcpv6: csum && flags & tun_f::TSO6 != 0,
    }
}

/// A TAP device as a switch port.
#[derive(Debug)]
pub struct TapUplink {
    name: String,
    tap: Tap,
    /// Bytes of virtio-net header before each frame (0: bare frames).
    hdr_len: usize,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    max_frame: usize,
    accepts: Accepts,
    /// Coalesces a guest's consecutive TCP segments into super-frames before they are
    /// written, when the TAP takes TCP super-frames over both IP versions (`gro.rs`).
    gro: Option<EgressGro>,
    stats: UplinkStats,
}

impl TapUplink {
    /// The port `name` for `tap`, opened with the `TUN_F_*` offloads `offload` and this MTU.
    pub(crate) fn new(name: String, tap: Tap, offload: u32, mtu: u32) -> Self {
        let accepts = if tap.vnet_hdr_len() == vnet::HDR_LEN {
            accepts_for(offload)
        } else {
            Accepts::NONE
        };
        let max_frame = if offload & (tun_f::TSO4 | tun_f::TSO6) != 0 {
            // A super-frame: a 64 KiB IP datagram and its Ethernet header.
            MAX_FRAME
        } else {
            (mtu as usize + ETH_HLEN + 4).min(MAX_FRAME)
        };
        Self {
            name,
            hdr_len: tap.vnet_hdr_len(),
            accepts,
            gro: (accepts.gso_tcpv4 && accepts.gso_tcpv6).then(EgressGro::new),
            tap,
            rx_buf: vec![0; Tap::RECV_BUF_LEN],
            tx_buf: Vec::with_capacity(MAX_FRAME),
            max_frame,
            stats: UplinkStats::default(),
        }
    }
}

impl<D: hypervisor::BackendDomain> Uplink<D> for TapUplink {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn receive(&mut self, io: &UplinkIo<'_, D>, out: &mut Vec<NetFrame<D>>, budget: usize) -> bool {
        let mut taken = 0usize;
        let mut n = 0;
        while n < RX_BURST && taken + self.max_frame <= budget {
            match self.tap.recv(&mut self.rx_buf) {
                Ok(Some(len)) => {
                    n += 1;
                    taken += len.saturating_sub(self.hdr_len);
                    take_in_with_hdr(io, &self.rx_buf[..len], self.hdr_len, &mut self.stats, out);
                }
                Ok(None) => break,
                // The kernel could not describe a frame in the header (and dropped it): the
                // ones behind it are still there.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    n += 1;
                    self.stats.rx_errors += 1;
                }
                Err(e) => {
                    self.stats.rx_errors += 1;
                    log::warn!("{}: read failed: {e}", self.name);
                    break;
                }
            }
        }
        n > 0
    }

    fn transmit(&mut self, _io: &UplinkIo<'_, D>, frames: &mut Vec<NetFrame<D>>) {
        let tap = &self.tap;
        let send = |parts: &[std::io::IoSlice<'_>]| tap.send_vectored(parts);
        match &mut self.gro {
            Some(gro) => gro.transmit(frames, &mut self.tx_buf, &mut self.stats, &send),
            None => send_out(
                frames,
                &mut self.tx_buf,
                self.hdr_len,
                &mut self.stats,
                send,
            ),
        }
    }

    fn arm(&mut self) -> bool {
        // The descriptor is level-triggered: the backend's poll sees waiting frames itself.
        false
    }

    fn wakeup(&self) -> Wakeup<'_> {
        Wakeup::Fd(self.tap.as_fd())
    }

    fn stats(&self) -> UplinkStats {
        self.stats
    }

    fn accepts(&self) -> Accepts {
        self.accepts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_takes_what_it_was_opened_with() {
        assert_eq!(accepts_for(OFFLOADS), Accepts::ALL);
        assert_eq!(accepts_for(0), Accepts::NONE);
        let csum_only = accepts_for(tun_f::CSUM);
        assert!(csum_only.csum && csum_only.ipv6_csum);
        assert!(!csum_only.gso_tcpv4 && !csum_only.gso_tcpv6);
        let v4 = accepts_for(tun_f::CSUM | tun_f::TSO4);
        assert!(v4.gso_tcpv4 && !v4.gso_tcpv6);
    }
}
