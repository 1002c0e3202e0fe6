//! The virtio-net header a TAP (or an `AF_PACKET` socket with `PACKET_VNET_HDR`) puts before
//! every frame it hands out and expects before every frame written to it (linux/virtio_net.h,
//! `struct virtio_net_hdr` and `struct virtio_net_hdr_mrg_rxbuf`): here only its length, which
//! the device is configured with. The header's fields and their mapping to netif's offload
//! flags live in `offload::virtio`, the one definition the data path uses; all fields are
//! little-endian ([`Tap`](crate::tap::Tap) sets `TUNSETVNETLE`, so this holds on any host).

/// Which header a TAP uses (`TUNSETVNETHDRSZ`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HdrLen {
    /// `struct virtio_net_hdr`, 10 bytes: the legacy header.
    #[default]
    Legacy,
    /// `struct virtio_net_hdr_mrg_rxbuf`, 12 bytes: adds `num_buffers` (the virtio 1.0 layout).
    MrgRxbuf,
}

impl HdrLen {
    /// The header's size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            HdrLen::Legacy => 10,
            HdrLen::MrgRxbuf => 12,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_linux() {
        assert_eq!(HdrLen::Legacy.bytes(), 10);
        assert_eq!(HdrLen::MrgRxbuf.bytes(), 12);
    }
}
