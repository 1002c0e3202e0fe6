//! Test frames: MACs of one locally administered family, numbered by their last byte, and
//! Ethernet frames whose payload is tagged by a sequence number, so two frames of one test
//! differ and a frame that arrives is told from one that did not.

/// The EtherType of every test frame: IEEE's local experimental 0x88b5, which no stack parses.
pub const ETHERTYPE: u16 = 0x88b5;

/// MAC number `n` of the test family: `02:00:00:00:00:nn`.
pub const fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// A MAC as the toolstack writes it into xenstore (`02:00:00:00:00:07`).
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// An Ethernet frame from MAC number `src` to MAC number `dst` (see [`mac`]) of `len` bytes (at
/// least the 14 of the header) with a payload tagged by `seq`.
pub fn frame(src: u8, dst: u8, len: usize, seq: u32) -> Vec<u8> {
    frame_between(mac(src), mac(dst), len, seq)
}

/// An Ethernet frame `src` → `dst` of `len` bytes (at least the 14 of the header) with a
/// payload tagged by `seq`: byte `i` is `7 i` xor byte `i % 4` of `seq` (little-endian).
pub fn frame_between(src: [u8; 6], dst: [u8; 6], len: usize, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    let tag = seq.to_le_bytes();
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7) ^ tag[i % 4];
    }
    f
}

/// A broadcast frame from MAC number `src` of `len` bytes, tagged by `seq`.
pub fn broadcast(src: u8, len: usize, seq: u32) -> Vec<u8> {
    frame_between(mac(src), [0xff; 6], len, seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_macs_and_differ_by_tag() {
        let f = frame(1, 2, 60, 7);
        assert_eq!((&f[..6], &f[6..12]), (&mac(2)[..], &mac(1)[..]));
        assert_eq!(f[12..14], [0x88, 0xb5]);
        assert_ne!(f, frame(1, 2, 60, 8));
        assert_eq!(frame(1, 2, 3, 0).len(), 14, "at least a header");
        assert_eq!(broadcast(3, 60, 0)[..6], [0xff; 6]);
        assert_eq!(mac_string(mac(7)), "02:00:00:00:00:07");
    }
}
