//! Test-frame construction with etherparse, shared by this crate's tests and benchmarks and by
//! the crates that use the bridge (netback's tests).

use crate::frame::MacAddr;

/// Smallest frame [`udp_frame`] can build: Ethernet (14) + IPv4 (20) + UDP (8).
pub const MIN_UDP_FRAME: usize = 42;

/// A valid Ethernet II / IPv4 / UDP frame from `src` to `dst`, exactly `len` bytes long
/// (without FCS; 60 bytes is the 64-byte wire minimum). `len` below [`MIN_UDP_FRAME`] is
/// raised to it. The payload is filled with `seq`'s bytes so frames are distinguishable.
///
/// # Panics
///
/// If `len` exceeds 65549 bytes (an IPv4 packet's 65535-byte limit plus the Ethernet header).
pub fn udp_frame(src: MacAddr, dst: MacAddr, len: usize, seq: u32) -> Vec<u8> {
    let payload_len = len.max(MIN_UDP_FRAME) - MIN_UDP_FRAME;
    let payload: Vec<u8> = seq
        .to_be_bytes()
        .iter()
        .copied()
        .cycle()
        .take(payload_len)
        .collect();
    let builder = etherparse::PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
        .udp(9, 9);
    let mut out = Vec::with_capacity(builder.size(payload_len));
    // Writing into a Vec cannot fail and the sizes are far below the IPv4 limit.
    builder
        .write(&mut out, &payload)
        .expect("building a test frame into a Vec");
    out
}
