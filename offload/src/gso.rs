//! Software segmentation of a TCP super-frame, for an egress that cannot take one (Linux's
//! `tcp_gso_segment` with `inet_gso_segment` / `ipv6_gso_segment`).
//!
//! Each segment is the super-frame's headers followed by at most MSS payload bytes, with:
//! - IPv4: total length set, id = the super-frame's id + segment index (kept when
//!   [`Gso::fixed_id`](crate::Gso::fixed_id)), header checksum recomputed; IPv6: payload length
//!   set (extension headers are copied as they are);
//! - TCP: seq advanced by the payload already sent; CWR only on the first segment, FIN and PSH
//!   only on the last; the checksum complete ([`SegCsum::Complete`]) or left as the
//!   pseudo-header sum ([`SegCsum::Partial`]) for an egress that finishes it.
//!
//! A super-frame whose payload fits in one MSS comes out as one segment equal to itself (apart
//! from the checksum), as Linux hands such a frame on unsegmented. Segments are built one at a
//! time in the caller's scratch buffer and lent to `out`; nothing is allocated.

use crate::csum::{self, Checksum};
use crate::parse::{self, L3Kind, field, tcp_flags};
use crate::{Csum, Error, OffloadMeta};

/// The largest Ethernet frame this crate handles: an 802.1Q-tagged header and a 65 535-byte IP
/// datagram. A scratch buffer of this size fits any segment.
pub const MAX_FRAME_LEN: usize = 18 + 65_535;

/// What each segment's TCP checksum field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegCsum {
    /// The full checksum; segments are handed out as [`Csum::Validated`].
    Complete,
    /// The pseudo-header sum; segments are handed out as [`Csum::Partial`] for an egress that
    /// completes checksums itself.
    Partial,
}

/// Cuts the super-frame `frame` described by `meta.gso` into segments of at most MSS payload
/// bytes and hands each to `out` with its metadata; returns the number of segments.
///
/// `scratch` must hold one segment (headers + MSS; [`MAX_FRAME_LEN`] always does). Bytes after
/// the IP datagram (Ethernet padding) are dropped. Errors: no GSO in `meta`, MSS 0, a frame that
/// is not TCP over the IP version `meta` names, or one shorter than its IP length.
pub fn segment<F>(
    frame: &[u8],
    meta: &OffloadMeta,
    mode: SegCsum,
    scratch: &mut [u8],
    out: &mut F,
) -> Result<usize, Error>
where
    F: FnMut(&[u8], &OffloadMeta),
{
    let gso = meta.gso.ok_or(Error::NotGso)?;
    if gso.size == 0 {
        return Err(Error::GsoSizeZero);
    }
    let loc = parse::locate(frame)?;
    if loc.gso_kind() != Some(gso.kind) {
        return Err(Error::GsoMismatch { kind: gso.kind });
    }
    if frame.len() < loc.ip_end {
        return Err(Error::Truncated {
            what: "IP datagram",
            need: loc.ip_end,
            have: frame.len(),
        });
    }
    let hdr_len = loc.hdr_len();
    let payload = &frame[hdr_len..loc.ip_end];
    let mss = usize::from(gso.size);
    let need = hdr_len + mss.min(payload.len());
    if scratch.len() < need {
        return Err(Error::ScratchTooSmall {
            need,
            have: scratch.len(),
        });
    }

    scratch[..hdr_len].copy_from_slice(&frame[..hdr_len]);
    let l3 = loc.l3_start;
    let th = loc.csum_start;
    let seq0 = parse::be32(frame, th + field::TCP_SEQ);
    let flags0 = frame[th + field::TCP_FLAGS];
    let id0 = parse::be16(frame, l3 + field::V4_ID);
    let ihl = th - l3; // IPv4 header length, or IPv6 header plus extension headers
    let seg_meta = OffloadMeta {
        csum: match mode {
            SegCsum::Complete => Csum::Validated,
            SegCsum::Partial => Csum::Partial {
                start: th as u16,
                offset: field::TCP_CSUM as u16,
            },
        },
        gso: None,
    };

    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = payload
            .get(i * mss..((i + 1) * mss).min(payload.len()))
            .unwrap_or(&[]);
        let seg_len = hdr_len + chunk.len();
        let seg = &mut scratch[..seg_len];
        seg[hdr_len..].copy_from_slice(chunk);

        let ip_len = seg_len - l3;
        match loc.l3 {
            L3Kind::Ipv4 => {
                parse::put16(seg, l3 + field::V4_TOTAL_LEN, ip_len as u16);
                if !gso.fixed_id {
                    parse::put16(seg, l3 + field::V4_ID, id0.wrapping_add(i as u16));
                }
                csum::fill_ipv4_header(seg, l3, ihl);
            }
            L3Kind::Ipv6 => {
                parse::put16(seg, l3 + field::V6_PAYLOAD_LEN, (ip_len - 40) as u16);
            }
        }

        parse::put32(
            seg,
            th + field::TCP_SEQ,
            seq0.wrapping_add((i * mss) as u32),
        );
        let mut flags = flags0;
        if i != 0 {
            flags &= !tcp_flags::CWR;
        }
        if i + 1 != count {
            flags &= !(tcp_flags::FIN | tcp_flags::PSH);
        }
        seg[th + field::TCP_FLAGS] = flags;

        let l4_len = seg_len - th;
        let p = csum::pseudo(seg, &loc, l4_len).sum();
        parse::put16(seg, th + field::TCP_CSUM, p);
        if mode == SegCsum::Complete {
            let c = Checksum::new().add(&seg[th..]).finish();
            parse::put16(seg, th + field::TCP_CSUM, c);
        }
        out(seg, &seg_meta);
    }
    Ok(count)
}
