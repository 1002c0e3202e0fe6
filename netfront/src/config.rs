//! Frontend settings.

use std::time::Duration;

use crate::error::{Error, Result};

use ring::netif::ETH_HLEN;
pub use ring::netif::RxMode;

/// The largest Ethernet frame a netif tx request can describe: the first slot's `size` is u16
/// (so the IP MTU is at most 65521, as in Linux).
const MAX_TX_FRAME: usize = ring::netif::XEN_NETIF_MAX_TX_SIZE as usize;

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
        }
    }
}

impl FrontConfig {
    /// The largest Ethernet frame (header included) this configuration sends or accepts.
    pub fn max_frame(&self) -> usize {
        self.mtu + ETH_HLEN
    }

    /// Tx slots the largest frame needs.
    pub(crate) fn max_tx_slots(&self) -> usize {
        self.max_frame().div_ceil(ring::PAGE_SIZE)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.mtu < 68 || self.mtu > MAX_TX_FRAME - ETH_HLEN {
            return Err(Error::BadConfig(format!(
                "mtu {} is outside 68..={}",
                self.mtu,
                MAX_TX_FRAME - ETH_HLEN
            )));
        }
        if self.rx_buffers == 0 {
            return Err(Error::BadConfig("rx_buffers must be at least 1".into()));
        }
        if self.rx_refill_batch == 0 {
            return Err(Error::BadConfig(
                "rx_refill_batch must be at least 1".into(),
            ));
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
}
