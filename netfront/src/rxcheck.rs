//! What netfront checks on a received frame before the stack sees it: the offload metadata the
//! backend sent (checksum flags, the GSO extra-info slot) and, for TCP/UDP frames that came
//! without `NETRXF_data_validated`, the checksum itself.
//!
//! The checksum policy (see the crate docs for the measurements behind it): with checksum
//! offload negotiated, smoltcp's TCP and UDP receive verification is off and netfront is the
//! one place a TCP/UDP checksum is checked, once, and only when the backend has not vouched for
//! the data. A `csum_blank` frame (its field holds only the pseudo-header sum: it was never
//! checksummed, it never left the machine) and a `data_validated` frame are delivered without a
//! pass over the data, as Linux delivers `CHECKSUM_PARTIAL`/`CHECKSUM_UNNECESSARY` skbs.
//!
//! Everything a backend sends is checked as Linux's netfront does (`xennet_get_extras`,
//! `xennet_set_skb_gso`, `checksum_setup`, through [`offload::netif::from_rx`]); anything wrong
//! drops the frame with a reason, never a panic.

use netif_ring::netif::{ExtraInfo, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED};
use offload::csum::{self, Checksum};
use offload::parse::{self, L3Kind, L4Kind};
use offload::{Csum, Error as OffloadError};

/// Header bytes copied out of the pages before parsing (Linux's `RX_COPY_THRESHOLD`): enough
/// for Ethernet, a VLAN tag, IPv4 or IPv6 and TCP with options. Longer header chains are copied
/// on demand.
const HDR_GUESS: usize = 256;

/// Why a frame is dropped (one counter each, see [`crate::Stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// A slot's status was an error.
    Status,
    /// A slot's offset + size passed the page end, or its buffer could not be taken.
    Slot,
    /// Longer than the largest frame accepted.
    TooLong,
    /// Flip mode: no page was transferred.
    NoTransfer,
    /// The frame's responses stopped before its `more_data`/`extra_info` said they would.
    Incomplete,
    /// An extra-info slot that is malformed, not GSO, or a second GSO slot.
    Extra,
    /// `csum_blank` or GSO, which this frontend did not negotiate.
    NotNegotiated,
    /// A GSO frame whose headers are not TCP over the IP version its type says.
    GsoMismatch,
    /// `csum_blank` on a frame that is not an unfragmented TCP/UDP packet over IPv4/IPv6.
    CsumBlank,
    /// A TCP/UDP checksum netfront verified and found wrong.
    Csum,
}

/// How a frame that passed went to the stack (one counter each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// A GSO super-frame (always a partial checksum).
    Gso,
    /// `csum_blank`: a partial checksum, not verified (nothing to verify).
    Blank,
    /// `data_validated`: the backend vouched for the checksum.
    Validated,
    /// Netfront verified the TCP/UDP checksum itself.
    Verified,
    /// Nothing to verify here: not TCP/UDP, or checksum offload is off (smoltcp verifies).
    Plain,
}

/// What this frontend negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxPolicy {
    /// Checksum offload: `csum_blank` accepted, smoltcp's TCP/UDP rx verification off.
    pub(crate) csum_offload: bool,
    /// `feature-gso-tcpv4`/`-tcpv6` written.
    pub(crate) gso: bool,
    /// The largest frame without GSO (MTU + 14).
    pub(crate) max_plain: usize,
}

/// A received frame as the chunks (page slices) it lives in.
pub(crate) trait FrameSource {
    /// Calls `f` with each chunk in order until `f` returns false. Returns false if a chunk
    /// could not be read.
    fn visit(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> bool;
}

impl FrameSource for [&[u8]] {
    fn visit(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        for c in self {
            if !f(c) {
                break;
            }
        }
        true
    }
}

/// Copies the frame's first `out.len()` bytes into `out`.
fn copy_prefix(src: &(impl FrameSource + ?Sized), out: &mut [u8]) -> bool {
    let mut at = 0;
    let ok = src.visit(&mut |c| {
        let n = c.len().min(out.len() - at);
        out[at..at + n].copy_from_slice(&c[..n]);
        at += n;
        at < out.len()
    });
    ok && at == out.len()
}

/// Adds the frame's bytes `start..end` to `c`.
fn sum_range(
    src: &(impl FrameSource + ?Sized),
    start: usize,
    end: usize,
    c: &mut Checksum,
) -> bool {
    let mut pos = 0;
    src.visit(&mut |chunk| {
        c.add_clipped(chunk, pos, &(start..end));
        pos += chunk.len();
        pos < end
    }) && pos >= end
}

/// Runs `f` on a copy of the frame's headers, copying more when `f` says they were cut short
/// (an IPv6 extension-header chain longer than [`HDR_GUESS`]). `hdr` holds at least `len` bytes.
fn with_headers<T>(
    src: &(impl FrameSource + ?Sized),
    len: usize,
    hdr: &mut [u8],
    mut f: impl FnMut(&mut [u8]) -> Result<T, OffloadError>,
) -> Result<T, OffloadError> {
    let mut n = len.min(HDR_GUESS).min(hdr.len());
    loop {
        if !copy_prefix(src, &mut hdr[..n]) {
            return Err(OffloadError::Truncated {
                what: "frame pages",
                need: n,
                have: 0,
            });
        }
        match f(&mut hdr[..n]) {
            Err(OffloadError::Truncated { need, .. }) if need > n && need <= len.min(hdr.len()) => {
                n = need;
            }
            r => return r,
        }
    }
}

/// Checks a complete frame of `len` bytes whose first slot carried `flags` and which came with
/// the GSO extra-info slot `gso` (already parsed as GSO by the caller). `hdr` is scratch space of
/// at least `len` bytes.
pub(crate) fn check(
    src: &(impl FrameSource + ?Sized),
    len: usize,
    flags: u16,
    gso: Option<&ExtraInfo>,
    policy: &RxPolicy,
    hdr: &mut [u8],
) -> Result<Delivered, Bad> {
    let blank = flags & NETRXF_CSUM_BLANK != 0;
    let validated = flags & NETRXF_DATA_VALIDATED != 0;
    if (blank && !policy.csum_offload) || (gso.is_some() && !policy.gso) {
        return Err(Bad::NotNegotiated);
    }
    if gso.is_none() && len > policy.max_plain {
        return Err(Bad::TooLong);
    }
    if blank || gso.is_some() {
        // Linux's checksum_setup: the headers must be TCP/UDP (TCP of the GSO type's IP
        // version for GSO); a GSO frame without csum_blank becomes partial.
        let meta = with_headers(src, len, hdr, |h| offload::netif::from_rx(flags, gso, h))
            .map_err(|e| match e {
                OffloadError::Extra(_) | OffloadError::NotGsoExtra { .. } => Bad::Extra,
                _ if gso.is_some() => Bad::GsoMismatch,
                _ => Bad::CsumBlank,
            })?;
        return Ok(match (meta.gso, meta.csum) {
            (Some(_), _) => Delivered::Gso,
            (None, Csum::Partial { .. }) => Delivered::Blank,
            (None, _) => Delivered::Validated,
        });
    }
    if validated {
        return Ok(Delivered::Validated);
    }
    if !policy.csum_offload {
        // smoltcp verifies every checksum itself.
        return Ok(Delivered::Plain);
    }
    verify(src, len, hdr)
}

/// Verifies the TCP/UDP checksum of a frame nobody vouched for (smoltcp's TCP/UDP rx
/// verification is off). Frames without a TCP/UDP checksum to check (ARP, ICMP, other
/// protocols) and frames whose headers are not a TCP/UDP packet netfront can check (IP
/// fragments, malformed IP or TCP headers) are delivered as they are: smoltcp's own parser
/// refuses the malformed ones, and this workspace builds it without IPv4 reassembly, so it
/// refuses fragments too.
fn verify(src: &(impl FrameSource + ?Sized), len: usize, hdr: &mut [u8]) -> Result<Delivered, Bad> {
    let Ok(loc) = with_headers(src, len, hdr, |h| parse::locate(h)) else {
        return Ok(Delivered::Plain);
    };
    if len < loc.ip_end {
        // Shorter than its IP length: not a packet a checksum can be verified over.
        return Err(Bad::Csum);
    }
    let field = loc.csum_field();
    let stored = u16::from_be_bytes([hdr[field], hdr[field + 1]]);
    if loc.l4 == L4Kind::Udp && stored == 0 {
        // "No checksum": allowed over IPv4 only (RFC 768, RFC 8200 section 8.1).
        return if loc.l3 == L3Kind::Ipv4 {
            Ok(Delivered::Verified)
        } else {
            Err(Bad::Csum)
        };
    }
    let mut c = csum::pseudo(hdr, &loc, loc.l4_len());
    if sum_range(src, loc.csum_start, loc.ip_end, &mut c) && c.sum() == 0xFFFF {
        Ok(Delivered::Verified)
    } else {
        Err(Bad::Csum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netif_ring::netif::{ExtraRepr, NETRXF_MORE_DATA};
    use offload::{Gso, GsoKind, OffloadMeta};

    const POLICY: RxPolicy = RxPolicy {
        csum_offload: true,
        gso: true,
        max_plain: 9014,
    };

    /// An IPv4 TCP frame with `payload` bytes and a correct checksum.
    fn tcp4(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 54 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f[46] = 5 << 4;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        csum::fill_ipv4_header(&mut f, 14, 20);
        csum::fill(&mut f).expect("TCP frame");
        f
    }

    fn run(
        frame: &[u8],
        split: usize,
        flags: u16,
        gso: Option<ExtraInfo>,
    ) -> Result<Delivered, Bad> {
        let (a, b) = frame.split_at(split.min(frame.len()));
        let chunks: [&[u8]; 2] = [a, b];
        let mut hdr = vec![0u8; frame.len()];
        check(
            &chunks[..],
            frame.len(),
            flags,
            gso.as_ref(),
            &POLICY,
            &mut hdr,
        )
    }

    fn gso(kind: GsoKind, mss: u16) -> ExtraInfo {
        let meta = OffloadMeta {
            csum: Csum::Partial {
                start: 0,
                offset: 0,
            },
            gso: Some(Gso::new(kind, mss)),
        };
        offload::netif::to_rx(&meta, 70_000).1.expect("a GSO slot")
    }

    const BLANK: u16 = NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;

    #[test]
    fn plain_tcp_is_verified_at_every_page_split() {
        let f = tcp4(3000);
        for split in [0, 1, 13, 36, 53, 54, 55, 1001, 3054] {
            assert_eq!(
                run(&f, split, 0, None),
                Ok(Delivered::Verified),
                "split {split}"
            );
        }
        let mut bad = f.clone();
        bad[2000] ^= 0x40;
        assert_eq!(run(&bad, 4096, 0, None), Err(Bad::Csum));
        // Validated frames are not looked at, even when wrong.
        assert_eq!(
            run(&bad, 4096, NETRXF_DATA_VALIDATED, None),
            Ok(Delivered::Validated)
        );
    }

    #[test]
    fn csum_blank_and_gso_follow_checksum_setup() {
        let mut f = tcp4(5000);
        csum::set_partial(&mut f).expect("partial");
        assert_eq!(run(&f, 100, BLANK, None), Ok(Delivered::Blank));
        assert_eq!(
            run(
                &f,
                100,
                BLANK | NETRXF_MORE_DATA,
                Some(gso(GsoKind::Tcpv4, 1448))
            ),
            Ok(Delivered::Gso)
        );
        // GSO type against headers.
        assert_eq!(
            run(&f, 100, BLANK, Some(gso(GsoKind::Tcpv6, 1448))),
            Err(Bad::GsoMismatch)
        );
        // A GSO frame without csum_blank is still accepted (Linux's rx_gso_checksum_fixup).
        assert_eq!(
            run(&f, 100, 0, Some(gso(GsoKind::Tcpv4, 1448))),
            Ok(Delivered::Gso)
        );
        // csum_blank on ARP.
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&arp, 10, BLANK, None), Err(Bad::CsumBlank));
        // Headers split in a 10-byte first slot still parse.
        assert_eq!(run(&f, 10, BLANK, None), Ok(Delivered::Blank));
    }

    #[test]
    fn malformed_extras_are_refused() {
        let mut f = tcp4(100);
        csum::set_partial(&mut f).expect("partial");
        let bad_size = ExtraInfo {
            type_: 1,
            flags: 0,
            u: [0, 0, 1, 0, 0, 0],
        };
        let bad_type = ExtraInfo {
            type_: 1,
            flags: 0,
            u: [0xa8, 5, 3, 0, 0, 0],
        };
        assert_eq!(run(&f, 60, BLANK, Some(bad_size)), Err(Bad::Extra));
        assert_eq!(run(&f, 60, BLANK, Some(bad_type)), Err(Bad::Extra));
        let hash = ExtraRepr::Hash {
            hash_type: 1,
            algorithm: 1,
            value: [1, 2, 3, 4],
        }
        .emit(false);
        assert_eq!(run(&f, 60, BLANK, Some(hash)), Err(Bad::Extra));
    }

    #[test]
    fn offloads_not_negotiated_and_long_plain_frames_are_dropped() {
        let f = tcp4(2000);
        let mut hdr = vec![0u8; f.len()];
        let chunks: [&[u8]; 1] = [&f];
        let off = RxPolicy {
            csum_offload: false,
            gso: false,
            max_plain: 1514,
        };
        assert_eq!(
            check(&chunks[..], f.len(), BLANK, None, &off, &mut hdr),
            Err(Bad::NotNegotiated)
        );
        assert_eq!(
            check(&chunks[..], f.len(), 0, None, &off, &mut hdr),
            Err(Bad::TooLong)
        );
        let wide = RxPolicy {
            max_plain: 9014,
            ..off
        };
        // Offload off: smoltcp verifies, netfront does not.
        assert_eq!(
            check(&chunks[..], f.len(), 0, None, &wide, &mut hdr),
            Ok(Delivered::Plain)
        );
    }

    #[test]
    fn udp_zero_checksum_and_non_ip_frames() {
        let mut f = tcp4(40);
        f[23] = 17; // UDP
        f[38..40].copy_from_slice(&48u16.to_be_bytes());
        f[40..42].copy_from_slice(&[0, 0]);
        csum::fill_ipv4_header(&mut f, 14, 20);
        assert_eq!(run(&f, 30, 0, None), Ok(Delivered::Verified));
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&arp, 42, 0, None), Ok(Delivered::Plain));
        // A frame shorter than its IP length cannot be verified.
        let short = tcp4(100);
        assert_eq!(run(&short[..120], 60, 0, None), Err(Bad::Csum));
    }
}
