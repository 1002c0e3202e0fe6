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

/// The smallest MSS a TCP sender uses: Linux's `tcp_min_snd_mss` default (`TCP_MIN_SND_MSS`,
/// 48 bytes), the floor it puts under a peer's advertised MSS since CVE-2019-11479 so that a
/// peer cannot make it cut its data into tiny segments. Linux takes any non-zero `gso_size`
/// from a guest (`xenvif_set_skb_gso`) and bounds only UDP GSO per frame (`UDP_MAX_SEGMENTS`);
/// here a TCP super-frame is bounded by what a real sender could have produced.
pub const MIN_SEND_MSS: usize = 48;

/// The most segments [`segment`] cuts one super-frame into: the largest TCP payload (an IPv6
/// datagram of 65 535 payload bytes less a 20-byte TCP header; IPv4's is 20 bytes smaller) at
/// [`MIN_SEND_MSS`], 1365. A super-frame that would make more (`gso_size` 1 on a 64 KiB frame
/// makes 65 495) is refused with [`Error::TooManySegments`] before any work is done, so one
/// frame costs at most this many segments.
pub const MAX_SEGS: usize = (65_535 - 20usize).div_ceil(MIN_SEND_MSS);

/// What cutting a super-frame makes, known from its headers and length alone ([`plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Segments.
    pub segs: usize,
    /// Bytes of headers (Ethernet through TCP) each segment carries.
    pub hdr_len: usize,
    /// The longest segment (every one but the last is this long).
    pub largest: usize,
}

/// What [`segment`] would make of `frame` (all of it, or at least its headers: `len` is its
/// full length) described by `meta`, with the same checks, without doing any of the work:
/// an egress checks each segment will fit it before paying for the cut.
pub fn plan(frame: &[u8], len: usize, meta: &OffloadMeta) -> Result<Plan, Error> {
    let gso = meta.gso.ok_or(Error::NotGso)?;
    if gso.size == 0 {
        return Err(Error::GsoSizeZero);
    }
    let loc = parse::locate(frame)?;
    if loc.gso_kind() != Some(gso.kind) {
        return Err(Error::GsoMismatch { kind: gso.kind });
    }
    if len < loc.ip_end {
        return Err(Error::Truncated {
            what: "IP datagram",
            need: loc.ip_end,
            have: len,
        });
    }
    let hdr_len = loc.hdr_len();
    let payload = loc.ip_end - hdr_len;
    let mss = usize::from(gso.size);
    let segs = payload.div_ceil(mss).max(1);
    if segs > MAX_SEGS {
        return Err(Error::TooManySegments {
            segs,
            mss: gso.size,
            max: MAX_SEGS,
        });
    }
    Ok(Plan {
        segs,
        hdr_len,
        largest: hdr_len + mss.min(payload),
    })
}

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
/// is not TCP over the IP version `meta` names, one shorter than its IP length, or one that
/// would make more than [`MAX_SEGS`] segments (see [`plan`]).
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
    segment_while(frame, meta, mode, scratch, &mut |seg, m| {
        out(seg, m);
        true
    })
}

/// [`segment`], stopping after the segment for which `out` returns false (an egress that ran
/// out of buffers wastes no work on the rest); returns the segments handed out.
pub fn segment_while<F>(
    frame: &[u8],
    meta: &OffloadMeta,
    mode: SegCsum,
    scratch: &mut [u8],
    out: &mut F,
) -> Result<usize, Error>
where
    F: FnMut(&[u8], &OffloadMeta) -> bool,
{
    let Plan { segs: count, .. } = plan(frame, frame.len(), meta)?;
    let gso = meta.gso.ok_or(Error::NotGso)?;
    let loc = parse::locate(frame)?;
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
        if !out(seg, &seg_meta) {
            return Ok(i + 1);
        }
    }
    Ok(count)
}
