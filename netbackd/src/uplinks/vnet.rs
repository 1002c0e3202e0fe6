//! The glue between an uplink's virtio-net header and a frame's [`OffloadMeta`], both ways, as
//! a TAP with `IFF_VNET_HDR` and a packet socket with `PACKET_VNET_HDR` lay it out: the legacy
//! 10-byte header, little-endian, right before the Ethernet frame.
//!
//! The mapping itself is [`offload::virtio`]'s (Linux's `virtio_net_hdr_to_skb` and
//! `virtio_net_hdr_from_skb`); this module splits a received buffer and builds the header a
//! frame leaves with.

use offload::virtio::VirtioNetHdr;
use offload::{Error, OffloadMeta};

/// Bytes of the header before each frame.
pub const HDR_LEN: usize = VirtioNetHdr::LEN;

/// Splits a buffer read from the device (header, then frame) into the frame's metadata and the
/// frame. A buffer shorter than the header, or a header that does not fit its frame (a GSO type
/// other than TCP, a checksum range outside the frame) is an error: drop the frame.
pub fn split_rx(buf: &[u8]) -> Result<(OffloadMeta, &[u8]), Error> {
    let (hdr, frame) = buf.split_first_chunk::<HDR_LEN>().ok_or(Error::Truncated {
        what: "virtio-net header",
        need: HDR_LEN,
        have: buf.len(),
    })?;
    let meta = VirtioNetHdr::from_bytes(hdr).to_meta(frame)?;
    Ok((meta, frame))
}

/// The header `frame` leaves with, for its metadata `meta`: `NEEDS_CSUM` with the checksum's
/// range for a partial checksum, the GSO type and MSS for a super-frame, `DATA_VALID` for a
/// validated checksum, all zero for a plain frame. An error when the metadata does not match
/// the frame's headers (GSO on a frame that is not TCP over that IP version).
pub fn tx_header(meta: &OffloadMeta, frame: &[u8]) -> Result<[u8; HDR_LEN], Error> {
    Ok(VirtioNetHdr::from_meta(meta, frame)?.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload::{Csum, Gso, GsoKind};

    const ETH: usize = 14;
    const IP: usize = 20;
    const TCP: usize = 32;

    /// An Ethernet + IPv4 + TCP (with 12 bytes of options) frame with `payload` bytes of data.
    fn tcp4(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; ETH + IP + TCP + payload];
        f[0..6].copy_from_slice(&[0x00, 0x16, 0x3e, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[ETH..ETH + IP];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IP + TCP + payload) as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 199, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 199, 0, 2]);
        let tcp = &mut f[ETH + IP..ETH + IP + TCP];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&7u16.to_be_bytes());
        tcp[12] = ((TCP / 4) as u8) << 4;
        tcp[13] = 0x18; // PSH, ACK
        for (i, b) in f[ETH + IP + TCP..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    /// `hdr` then `frame`, as read from the device.
    fn buffer(hdr: [u8; HDR_LEN], frame: &[u8]) -> Vec<u8> {
        let mut b = hdr.to_vec();
        b.extend_from_slice(frame);
        b
    }

    #[test]
    fn a_linux_super_frame_header_maps_to_gso_meta() {
        // What Linux's TCP stack hands a TAP for a 64 KiB TSO write: NEEDS_CSUM over the TCP
        // header on, GSO TCPv4 with the MSS, hdr_len the headers' length (little-endian).
        let frame = tcp4(44 * 1448);
        let hdr = [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let read = buffer(hdr, &frame);
        let (meta, got) = split_rx(&read).unwrap();
        assert_eq!(
            got,
            frame.as_slice(),
            "the frame is what follows the header"
        );
        assert_eq!(
            meta,
            OffloadMeta {
                csum: Csum::Partial {
                    start: 34,
                    offset: 16
                },
                gso: Some(Gso::new(GsoKind::Tcpv4, 1448)),
            }
        );
        // The same with ECN (CWR on the first segment): still TCPv4 GSO.
        let hdr = [1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let (meta, _) = split_rx(&buffer(hdr, &frame)).unwrap();
        assert_eq!(meta.gso, Some(Gso::new(GsoKind::Tcpv4, 1448)));
    }

    #[test]
    fn plain_and_validated_frames_map_to_no_offload() {
        let frame = tcp4(100);
        let (meta, _) = split_rx(&buffer([0; HDR_LEN], &frame)).unwrap();
        assert_eq!(meta, OffloadMeta::NONE);
        let (meta, _) = split_rx(&buffer([2, 0, 0, 0, 0, 0, 0, 0, 0, 0], &frame)).unwrap();
        assert_eq!(meta, OffloadMeta::VALIDATED);
    }

    #[test]
    fn headers_that_do_not_fit_their_frame_are_refused() {
        let frame = tcp4(4000);
        // Shorter than the header.
        assert!(matches!(
            split_rx(&[0u8; 9]),
            Err(Error::Truncated { have: 9, .. })
        ));
        // UDP fragmentation offload: not something a switch port takes.
        let ufo = [1, 3, 42, 0, 0xa8, 0x05, 34, 0, 6, 0];
        assert!(split_rx(&buffer(ufo, &frame)).is_err());
        // A checksum range past the frame's end.
        let past = [1, 0, 0, 0, 0, 0, 0xff, 0x7f, 16, 0];
        assert!(matches!(
            split_rx(&buffer(past, &frame)),
            Err(Error::CsumOutOfRange { .. })
        ));
        // GSO with MSS 0.
        let zero = [1, 1, 66, 0, 0, 0, 34, 0, 16, 0];
        assert!(split_rx(&buffer(zero, &frame)).is_err());
    }

    #[test]
    fn a_partial_checksum_from_netback_maps_to_needs_csum() {
        let frame = tcp4(1000);
        let meta = OffloadMeta {
            csum: Csum::Partial {
                start: (ETH + IP) as u16,
                offset: 16,
            },
            gso: None,
        };
        let hdr = tx_header(&meta, &frame).unwrap();
        // flags NEEDS_CSUM, no GSO, csum_start 34 and csum_offset 16, little-endian.
        assert_eq!(hdr, [1, 0, 0, 0, 0, 0, 34, 0, 16, 0]);
        // And back: what Linux reads is what netback meant.
        let (back, _) = split_rx(&buffer(hdr, &frame)).unwrap();
        assert_eq!(back, meta);
    }

    #[test]
    fn a_super_frame_from_netback_carries_its_mss_type_and_header_length() {
        let frame = tcp4(10 * 1448);
        let meta = OffloadMeta {
            csum: Csum::Partial {
                start: (ETH + IP) as u16,
                offset: 16,
            },
            gso: Some(Gso::new(GsoKind::Tcpv4, 1448)),
        };
        let hdr = tx_header(&meta, &frame).unwrap();
        let total = (ETH + IP + TCP) as u8;
        assert_eq!(hdr, [1, 1, total, 0, 0xa8, 0x05, 34, 0, 16, 0]);
        let (back, _) = split_rx(&buffer(hdr, &frame)).unwrap();
        assert_eq!(back, meta);
        // A validated frame says so; a plain one says nothing.
        assert_eq!(
            tx_header(&OffloadMeta::VALIDATED, &frame).unwrap(),
            [2, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(tx_header(&OffloadMeta::NONE, &frame).unwrap(), [0; HDR_LEN]);
        // GSO claimed for a frame that is not TCP over IPv6: refused, not sent.
        let v6 = OffloadMeta {
            gso: Some(Gso::new(GsoKind::Tcpv6, 1448)),
            ..meta
        };
        assert!(matches!(
            tx_header(&v6, &frame),
            Err(Error::GsoMismatch { .. })
        ));
    }
}
