//! The internet checksum (RFC 1071) and the checksum offload operations built on it.
//!
//! [`Checksum`] accumulates a ones'-complement sum over any number of byte chunks. Each chunk is
//! summed eight bytes at a time in host byte order (a ones'-complement sum is byte-order
//! independent, RFC 1071 §2(B)), and a chunk that starts at an odd position of the whole is
//! byte-swapped before it is added (§2(A)), so a frame split at any byte, odd or even, sums to
//! the same value as the contiguous frame.
//!
//! Offload operations, Linux's names in brackets:
//! - [`set_partial`]: write the pseudo-header sum into the checksum field, as a sender leaving the
//!   checksum to hardware does (`CHECKSUM_PARTIAL`, `skb_checksum_setup(.., recalculate)`).
//! - [`complete`] / [`complete_at`] / [`complete_chunks`]: finish a partial checksum
//!   (`skb_checksum_help`).
//! - [`fill`]: compute a checksum from scratch; [`verify`]: check one.

use core::ops::Range;

use crate::Error;
use crate::parse::{self, L3Kind, L4Loc, field};

/// A running ones'-complement sum (RFC 1071).
///
/// Bytes are added with [`Checksum::add`] in order, in as many chunks as the data lives in;
/// numbers (pseudo-header fields) with [`Checksum::add_u16`]/[`Checksum::add_u32`], which do
/// not move the byte position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    /// Sum of 16-bit words in host byte order, not yet folded; kept below 2^63.
    acc: u64,
    /// The bytes added so far have odd length: the next chunk starts in the low byte of a word.
    odd: bool,
}

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Checksum {
        Checksum { acc: 0, odd: false }
    }

    /// Adds the next `data` bytes of the summed region.
    #[inline]
    pub fn add(&mut self, data: &[u8]) -> &mut Checksum {
        if data.is_empty() {
            return self;
        }
        let mut s = fold_to_u16(sum_native(data));
        if self.odd {
            // This chunk starts at an odd position: each of its bytes sits one byte later in the
            // 16-bit words of the whole than where sum_native put it. Rotating the sum by a
            // byte is the same as summing the rotated words (RFC 1071 §2(A)).
            s = s.swap_bytes();
        }
        self.acc += u64::from(s);
        self.odd ^= data.len() % 2 == 1;
        self
    }

    /// Adds the part of `chunk` that lies in `range`, where `chunk` holds a frame's bytes from
    /// logical position `at` on: how a frame living in pieces (pages) is summed piece by piece,
    /// in order. Pieces wholly outside `range` add nothing.
    #[inline]
    pub fn add_clipped(&mut self, chunk: &[u8], at: usize, range: &Range<usize>) -> &mut Checksum {
        let (lo, hi) = (at, at + chunk.len());
        if hi > range.start && lo < range.end {
            self.add(&chunk[range.start.max(lo) - lo..range.end.min(hi) - lo]);
        }
        self
    }

    /// Adds a 16-bit number (host value, as it would read big-endian in a header).
    #[inline]
    pub fn add_u16(&mut self, v: u16) -> &mut Checksum {
        self.acc += u64::from(v.to_be());
        self
    }

    /// Adds a 32-bit number as its two 16-bit halves.
    #[inline]
    pub fn add_u32(&mut self, v: u32) -> &mut Checksum {
        self.add_u16((v >> 16) as u16).add_u16(v as u16)
    }

    /// The folded ones'-complement sum, as a host number (not complemented). This is what a
    /// partial checksum field holds.
    #[inline]
    pub fn sum(&self) -> u16 {
        u16::from_be(fold_to_u16(self.acc))
    }

    /// The checksum to write into a header: the complement of [`Checksum::sum`].
    #[inline]
    pub fn finish(&self) -> u16 {
        !self.sum()
    }
}

/// Folds a 64-bit sum of host-order words to 16 bits with end-around carry.
#[inline]
fn fold_to_u16(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u16
}

/// Sum of `data` as 16-bit words in host byte order, unfolded.
///
/// Eight bytes at a time, each split into two 32-bit halves added into four independent 64-bit
/// accumulators: no carry chain, and a loop the compiler vectorises. A 64-bit accumulator takes
/// 2^31 such additions before it could overflow; blocks of 64 MiB stay far below that.
#[inline]
fn sum_native(data: &[u8]) -> u64 {
    const BLOCK: usize = 1 << 26;
    let mut total: u64 = 0;
    for block in data.chunks(BLOCK) {
        let (words, rest) = block.as_chunks::<8>();
        let (quads, tail) = words.as_chunks::<4>();
        let mut acc = [0u64; 4];
        for q in quads {
            for (a, w) in acc.iter_mut().zip(q) {
                let w = u64::from_ne_bytes(*w);
                *a += (w & 0xFFFF_FFFF) + (w >> 32);
            }
        }
        let mut s =
            u64::from(fold_to_u16(acc[0] + acc[1])) + u64::from(fold_to_u16(acc[2] + acc[3]));
        for w in tail {
            let w = u64::from_ne_bytes(*w);
            s += (w & 0xFFFF_FFFF) + (w >> 32);
        }
        if !rest.is_empty() {
            // Zero padding after the last byte is exactly RFC 1071's odd-byte rule.
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            let w = u64::from_ne_bytes(last);
            s += (w & 0xFFFF_FFFF) + (w >> 32);
        }
        total += u64::from(fold_to_u16(s));
    }
    total
}

/// The ones'-complement sum of `data` (folded, not complemented), as a host number.
pub fn sum(data: &[u8]) -> u16 {
    Checksum::new().add(data).sum()
}

/// The internet checksum of `data`: the complement of its ones'-complement sum.
pub fn checksum(data: &[u8]) -> u16 {
    Checksum::new().add(data).finish()
}

/// The IPv4 pseudo-header sum for an L4 segment of `l4_len` bytes.
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> Checksum {
    let mut c = Checksum::new();
    c.add(&src)
        .add(&dst)
        .add_u16(u16::from(proto))
        .add_u16(l4_len);
    c
}

/// The IPv6 pseudo-header sum (RFC 8200 §8.1) for an upper-layer packet of `l4_len` bytes.
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], next: u8, l4_len: u32) -> Checksum {
    let mut c = Checksum::new();
    c.add(src).add(dst).add_u32(l4_len).add_u16(u16::from(next));
    c
}

/// The pseudo-header sum of a located frame for an L4 length of `l4_len` bytes. IPv6 uses the
/// header's destination even behind a routing header, as Linux's `skb_checksum_setup` does.
pub fn pseudo(frame: &[u8], loc: &L4Loc, l4_len: usize) -> Checksum {
    let l3 = loc.l3_start;
    match loc.l3 {
        L3Kind::Ipv4 => {
            let a = &frame[l3 + field::V4_SRC..l3 + field::V4_SRC + 8];
            let mut c = Checksum::new();
            // l4_len fits: an IPv4 datagram is at most 65535 bytes.
            c.add(a)
                .add_u16(u16::from(loc.proto()))
                .add_u16(l4_len as u16);
            c
        }
        L3Kind::Ipv6 => {
            let a = &frame[l3 + field::V6_SRC..l3 + field::V6_SRC + 32];
            let mut c = Checksum::new();
            c.add(a)
                .add_u32(l4_len as u32)
                .add_u16(u16::from(loc.proto()));
            c
        }
    }
}

/// Computes and writes the IPv4 header checksum of the header at `l3` (`ihl` bytes long).
pub fn fill_ipv4_header(frame: &mut [u8], l3: usize, ihl: usize) {
    parse::put16(frame, l3 + field::V4_CSUM, 0);
    let c = checksum(&frame[l3..l3 + ihl]);
    parse::put16(frame, l3 + field::V4_CSUM, c);
}

/// Whether the IPv4 header at `l3` (`ihl` bytes long) has a correct header checksum.
pub fn ipv4_header_ok(frame: &[u8], l3: usize, ihl: usize) -> bool {
    frame.len() >= l3 + ihl && sum(&frame[l3..l3 + ihl]) == 0xFFFF
}

/// Writes the pseudo-header sum into the frame's checksum field, the layout a sender uses when it
/// leaves the checksum to an offload (`CHECKSUM_PARTIAL`; what `skb_checksum_setup` writes when
/// asked to recalculate). Needs only the headers: the L4 length comes from the IP header.
pub fn set_partial(frame: &mut [u8]) -> Result<L4Loc, Error> {
    let loc = parse::locate(frame)?;
    let p = pseudo(frame, &loc, loc.l4_len()).sum();
    parse::put16(frame, loc.csum_field(), p);
    Ok(loc)
}

/// Completes a partial checksum (the field holds the pseudo-header sum), as Linux's
/// `skb_checksum_help`: sums `frame[start..]`, complements, writes it at `start + offset`, with a
/// result of 0 written as 0xFFFF (`CSUM_MANGLED_0`; the same value in ones'-complement, and what
/// UDP requires since 0 means "no checksum").
///
/// `frame` must end where the IP datagram ends (slice off Ethernet padding first).
pub fn complete_at(frame: &mut [u8], start: usize, offset: usize) -> Result<(), Error> {
    let field = check_range(start, offset, frame.len())?;
    let c = Checksum::new().add(&frame[start..]).finish();
    parse::put16(frame, field, mangle0(c));
    Ok(())
}

/// Locates the frame's L4 header and completes its partial checksum (see [`complete_at`]); the
/// frame must hold the whole IP datagram. Bytes after the datagram (Ethernet padding) are not
/// summed.
pub fn complete(frame: &mut [u8]) -> Result<L4Loc, Error> {
    let loc = parse::locate(frame)?;
    whole(frame, &loc)?;
    complete_at(&mut frame[..loc.ip_end], loc.csum_start, loc.csum_offset)?;
    Ok(loc)
}

/// Computes the frame's L4 checksum from scratch and writes it: [`set_partial`] then
/// [`complete`].
pub fn fill(frame: &mut [u8]) -> Result<L4Loc, Error> {
    let loc = parse::locate(frame)?;
    whole(frame, &loc)?;
    let p = pseudo(frame, &loc, loc.l4_len()).sum();
    parse::put16(frame, loc.csum_field(), p);
    complete_at(&mut frame[..loc.ip_end], loc.csum_start, loc.csum_offset)?;
    Ok(loc)
}

/// Whether the frame's TCP/UDP checksum is correct. An IPv4 UDP checksum of 0 means "none" and
/// is accepted; over IPv6 it is not (RFC 8200 §8.1). Fragments, non-TCP/UDP frames and frames
/// shorter than their IP length are not verifiable and return false. The IPv4 header checksum is
/// not part of this (it is not covered by `CHECKSUM_UNNECESSARY` either).
pub fn verify(frame: &[u8]) -> bool {
    let Ok(loc) = parse::locate(frame) else {
        return false;
    };
    if frame.len() < loc.ip_end {
        return false;
    }
    if loc.l4 == parse::L4Kind::Udp && parse::be16(frame, loc.csum_field()) == 0 {
        return loc.l3 == L3Kind::Ipv4;
    }
    let mut c = pseudo(frame, &loc, loc.l4_len());
    c.add(&frame[loc.csum_start..loc.ip_end]);
    c.sum() == 0xFFFF
}

/// Sums the bytes at logical positions `range` of a frame that lives in `chunks` (for example
/// 4 KiB pages), in order. Positions past the last chunk are not summed.
pub fn sum_chunks<'a, I>(chunks: I, range: Range<usize>) -> Checksum
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut c = Checksum::new();
    let mut pos = 0;
    for chunk in chunks {
        if pos >= range.end {
            break;
        }
        c.add_clipped(chunk, pos, &range);
        pos += chunk.len();
    }
    c
}

/// Completes a partial checksum of a frame that lives in `chunks`: sums logical positions
/// `start..end` (`end` is where the IP datagram ends) and writes the result at `start + offset`,
/// even when those two bytes straddle two chunks. Same rules as [`complete_at`].
pub fn complete_chunks(
    chunks: &mut [&mut [u8]],
    start: usize,
    offset: usize,
    end: usize,
) -> Result<(), Error> {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    if end > total {
        return Err(Error::Truncated {
            what: "IP datagram",
            need: end,
            have: total,
        });
    }
    let field = check_range(start, offset, end)?;
    let c = sum_chunks(chunks.iter().map(|c| &**c), start..end).finish();
    write_chunks(chunks, field, &mangle0(c).to_be_bytes());
    Ok(())
}

/// Writes `bytes` at logical position `at` of a chunked frame (the caller checked the range).
fn write_chunks(chunks: &mut [&mut [u8]], at: usize, bytes: &[u8]) {
    let mut pos = 0;
    let mut src = bytes;
    let mut at = at;
    for chunk in chunks.iter_mut() {
        let (lo, hi) = (pos, pos + chunk.len());
        pos = hi;
        if at >= hi || src.is_empty() {
            continue;
        }
        let n = (hi - at).min(src.len());
        chunk[at - lo..at - lo + n].copy_from_slice(&src[..n]);
        src = &src[n..];
        at += n;
    }
}

fn mangle0(c: u16) -> u16 {
    if c == 0 { 0xFFFF } else { c }
}

fn check_range(start: usize, offset: usize, len: usize) -> Result<usize, Error> {
    match start.checked_add(offset).and_then(|f| f.checked_add(2)) {
        Some(end) if end <= len => Ok(start + offset),
        _ => Err(Error::CsumOutOfRange { start, offset, len }),
    }
}

fn whole(frame: &[u8], loc: &L4Loc) -> Result<(), Error> {
    if frame.len() < loc.ip_end {
        return Err(Error::Truncated {
            what: "IP datagram",
            need: loc.ip_end,
            have: frame.len(),
        });
    }
    Ok(())
}

/// The plain RFC 1071 loop: one big-endian 16-bit word at a time. The reference the fast sum is
/// tested and benchmarked against.
pub fn naive_checksum(data: &[u8]) -> u16 {
    let mut s: u64 = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        s += u64::from(u16::from_be_bytes([data[i], data[i + 1]]));
        i += 2;
    }
    if i < data.len() {
        s += u64::from(data[i]) << 8;
    }
    while s >> 16 != 0 {
        s = (s & 0xFFFF) + (s >> 16);
    }
    !(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(7) as u8)
            .collect()
    }

    #[test]
    fn fast_sum_matches_naive_at_every_length() {
        let d = data(300);
        for n in 0..d.len() {
            assert_eq!(checksum(&d[..n]), naive_checksum(&d[..n]), "length {n}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn all_ones_data_does_not_overflow() {
        let d = vec![0xFFu8; 70_000];
        assert_eq!(checksum(&d), naive_checksum(&d));
    }

    #[test]
    fn chunk_splits_at_any_byte_give_the_same_sum() {
        let d = data(257);
        let whole = checksum(&d);
        for a in 0..d.len() {
            for b in (a..d.len()).step_by(7) {
                let mut c = Checksum::new();
                c.add(&d[..a]).add(&d[a..b]).add(&d[b..]);
                assert_eq!(c.finish(), whole, "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn chunked_completion_writes_a_straddling_field() {
        let d = data(100);
        let mut flat = d.clone();
        flat[50] = 0x12;
        flat[51] = 0x34;
        complete_at(&mut flat, 40, 10).expect("in range");
        let mut pieces = d.clone();
        pieces[50] = 0x12;
        pieces[51] = 0x34;
        let (a, b) = pieces.split_at_mut(51);
        let (b, c) = b.split_at_mut(13);
        complete_chunks(&mut [a, b, c], 40, 10, 100).expect("in range");
        assert_eq!(pieces, flat);
    }

    #[test]
    fn out_of_range_field_is_an_error() {
        let mut d = data(20);
        assert!(matches!(
            complete_at(&mut d, 10, 9),
            Err(Error::CsumOutOfRange { .. })
        ));
        assert!(matches!(
            complete_at(&mut d, usize::MAX, 9),
            Err(Error::CsumOutOfRange { .. })
        ));
    }
}
