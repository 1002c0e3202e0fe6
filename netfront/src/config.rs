//! Frontend settings.

use std::time::Duration;

use crate::error::{Error, Result};

pub use netif_ring::netif::RxMode;
use netif_ring::netif::{ETH_HLEN, MAX_FRAME, XEN_NETIF_NR_SLOTS_MIN};

/// Key bytes a backend keeps (Linux netback's `XEN_NETBK_MAX_HASH_KEY_SIZE`; a longer key is
/// refused).
pub(crate) const MAX_HASH_KEY: usize = 40;

/// The largest Ethernet frame a netif tx request can describe: the first slot's `size` is u16
/// (so the IP MTU is at most 65521, as in Linux).
const MAX_TX_FRAME: usize = netif_ring::netif::XEN_NETIF_MAX_TX_SIZE as usize;

/// Frontend settings for [`crate::Netfront::connect`].
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Copy or flip receive.
    pub rx_mode: RxMode,
    /// Receive buffer pages (default 256, the ring size). At most 256 are posted at once; more
    /// let smoltcp hold frames while the ring stays full.
    pub rx_buffers: usize,
    /// Refill the rx ring once this many buffers are free (one push and notify decision per
    /// batch; default 64).
    pub rx_refill_batch: usize,
    /// Transmit pages (default 256; at least the slots of one largest frame).
    pub tx_pages: usize,
    /// IP MTU (default 1500). At most 65521 (`XEN_NETIF_MAX_TX_SIZE` - 14), as in Linux.
    pub mtu: usize,
    /// How long the handshake and teardown wait for the backend (default 5 s).
    pub timeout: Duration,
    /// Checksum offload (default true), as Linux netfront always has it: TCP/UDP frames leave
    /// with `NETTXF_csum_blank|NETTXF_data_validated` and only the pseudo-header sum, received
    /// `csum_blank`/`data_validated` frames are not summed again, and netfront verifies the
    /// rest itself (smoltcp's TCP/UDP checksum work is off). False writes
    /// `feature-no-csum-offload=1`: smoltcp computes and verifies every checksum, and GSO is
    /// not offered either (a GSO frame always has a partial checksum).
    pub csum_offload: bool,
    /// Receive GSO (default true; needs `csum_offload`): writes `feature-gso-tcpv4=1` and
    /// `feature-gso-tcpv6=1`, so the backend may deliver TCP super-frames of up to 64 KiB (17
    /// data slots and one extra-info slot), handed to smoltcp as one frame whatever the MTU.
    pub gso: bool,
    /// The longest a storm of events that find no work may keep this frontend's event
    /// channel masked (default 100 ms): the late end of interrupt Linux gives frontends since
    /// XSA-391 (`hypervisor::LateEoi`), so a backend notifying in a loop cannot keep the guest
    /// busy. The delay starts at 1 ms on the second event in a row that found no work and
    /// doubles up to this.
    pub max_eoi_delay: Duration,
    /// Queues to ask for (default 1): as many as this and the backend's
    /// `multi-queue-max-queues` allow. Each queue has its own rings, event channel(s), `tx_pages`
    /// and `rx_buffers`; frames are sent on the queue their flow hashes to, as Linux's
    /// `xennet_select_queue` does.
    pub max_queues: u32,
    /// Split event channels (a port per direction per queue) when the backend offers
    /// `feature-split-event-channels` (default false; Linux's netfront always splits when it
    /// can).
    pub split_event_channels: bool,
    /// Receive-side hashing to set up over a ctrl ring, as a Windows guest sets up RSS (default
    /// none: no ctrl ring is made). Needs the backend's `feature-ctrl-ring`.
    pub hashing: Option<HashConfig>,
    /// Multicast control (default none: every multicast frame the backend floods arrives):
    /// `Some(groups)` writes `request-multicast-control=1` and subscribes each group with an
    /// MCAST_ADD request once connected, so only those groups (and broadcast) arrive. Needs the
    /// backend's `feature-multicast-control`.
    pub multicast: Option<Vec<[u8; 6]>>,
    /// Bytes to keep free before the data in each rx buffer (`xdp-headroom`, default 0), asked
    /// for once connected through the Reconfiguring handshake as Linux's netfront does when an
    /// XDP program is attached. Needs the backend's `feature-xdp-headroom`.
    pub xdp_headroom: u16,
}

/// Toeplitz hashing of received frames, set up over the ctrl ring ([`FrontConfig::hashing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashConfig {
    /// The Toeplitz key (at most 40 bytes; the backend reads missing bytes as zeros).
    pub key: Vec<u8>,
    /// `XEN_NETIF_CTRL_HASH_TYPE_*` flags: which packet types to hash.
    pub flags: u32,
    /// The table mapping `hash % len` to a queue: each entry below the number of queues
    /// negotiated. Empty: the backend's largest table, filled with the queues round robin.
    pub mapping: Vec<u32>,
}

impl Default for FrontConfig {
    fn default() -> Self {
        Self {
            rx_mode: RxMode::Copy,
            rx_buffers: 256,
            rx_refill_batch: 64,
            tx_pages: 256,
            mtu: 1500,
            timeout: Duration::from_secs(5),
            csum_offload: true,
            gso: true,
            max_eoi_delay: Duration::from_millis(100),
            max_queues: 1,
            split_event_channels: false,
            hashing: None,
            multicast: None,
            xdp_headroom: 0,
        }
    }
}

impl FrontConfig {
    /// The largest Ethernet frame (header included) this configuration sends or accepts.
    pub fn max_frame(&self) -> usize {
        self.mtu + ETH_HLEN
    }

    /// Whether receive GSO is offered (asked for, and checksum offload is on).
    pub fn gso_enabled(&self) -> bool {
        self.gso && self.csum_offload
    }

    /// The largest frame accepted on receive: a GSO super-frame (65535 + 14 bytes) when GSO is
    /// offered, else [`FrontConfig::max_frame`].
    pub fn max_rx_frame(&self) -> usize {
        if self.gso_enabled() {
            MAX_FRAME
        } else {
            self.max_frame()
        }
    }

    /// Tx slots the largest frame needs.
    pub(crate) fn max_tx_slots(&self) -> usize {
        self.max_frame().div_ceil(netif_ring::PAGE_SIZE)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.mtu < 68 || self.mtu > MAX_TX_FRAME - ETH_HLEN {
            return Err(Error::BadConfig(format!(
                "mtu {} is outside 68..={}",
                self.mtu,
                MAX_TX_FRAME - ETH_HLEN
            )));
        }
        if !(1..=64).contains(&self.max_queues) {
            return Err(Error::BadConfig(format!(
                "max_queues {} is outside 1..=64",
                self.max_queues
            )));
        }
        if self.rx_buffers == 0 {
            return Err(Error::BadConfig("rx_buffers must be at least 1".into()));
        }
        let slots = XEN_NETIF_NR_SLOTS_MIN as usize;
        if self.gso_enabled() && self.rx_buffers < slots {
            return Err(Error::BadConfig(format!(
                "rx_buffers {} cannot hold one 64 KiB GSO frame ({slots} slots); raise rx_buffers \
                 or set gso: false",
                self.rx_buffers
            )));
        }
        if self.rx_refill_batch == 0 {
            return Err(Error::BadConfig(
                "rx_refill_batch must be at least 1".into(),
            ));
        }
        if let Some(h) = &self.hashing {
            if h.key.len() > MAX_HASH_KEY {
                return Err(Error::BadConfig(format!(
                    "hashing key of {} bytes: backends keep at most {} (Linux's limit)",
                    h.key.len(),
                    MAX_HASH_KEY
                )));
            }
            if h.flags & !netif_ring::ctrl::XEN_NETIF_CTRL_HASH_TYPE_ALL != 0 {
                return Err(Error::BadConfig(format!(
                    "hashing flags {:#x} name types netif.h does not define (the four it does \
                     are {:#x})",
                    h.flags,
                    netif_ring::ctrl::XEN_NETIF_CTRL_HASH_TYPE_ALL
                )));
            }
            if let Some(q) = h.mapping.iter().find(|q| **q >= self.max_queues) {
                return Err(Error::BadConfig(format!(
                    "hashing mapping names queue {q}, but max_queues is {}",
                    self.max_queues
                )));
            }
        }
        if self.tx_pages < self.max_tx_slots() {
            return Err(Error::BadConfig(format!(
                "tx_pages {} cannot hold one {}-byte frame ({} pages)",
                self.tx_pages,
                self.max_frame(),
                self.max_tx_slots()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_is_bounded_by_the_u16_tx_size() {
        let ok = FrontConfig {
            mtu: 65521,
            ..FrontConfig::default()
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.max_frame(), 65535);
        assert_eq!(ok.max_tx_slots(), 16);
        let big = FrontConfig {
            mtu: 65522,
            ..FrontConfig::default()
        };
        assert!(matches!(big.validate(), Err(Error::BadConfig(_))));
        let few = FrontConfig {
            mtu: 9000,
            tx_pages: 2,
            ..FrontConfig::default()
        };
        assert!(matches!(few.validate(), Err(Error::BadConfig(w)) if w.contains("tx_pages")));
    }

    #[test]
    fn gso_needs_checksum_offload_and_room_for_a_super_frame() {
        let d = FrontConfig::default();
        assert!(d.gso_enabled());
        assert_eq!(d.max_rx_frame(), 65535 + 14);
        let no_csum = FrontConfig {
            csum_offload: false,
            ..FrontConfig::default()
        };
        assert!(!no_csum.gso_enabled());
        assert_eq!(no_csum.max_rx_frame(), 1514);
        let small = FrontConfig {
            rx_buffers: 17,
            ..FrontConfig::default()
        };
        assert!(matches!(small.validate(), Err(Error::BadConfig(w)) if w.contains("GSO")));
        let small_no_gso = FrontConfig {
            gso: false,
            ..small
        };
        assert!(small_no_gso.validate().is_ok());
    }
}
