//! A frame's flow, for spreading traffic over queues: the same TCP or UDP connection (or, for
//! other IP traffic, the same pair of addresses) always hashes to the same value, so its frames
//! stay in order on one queue, as Linux's `skb_get_hash` keeps a flow on one queue.
//!
//! Reads only the fixed headers (Ethernet, one optional 802.1Q tag, IPv4 without looking past
//! options, IPv6's fixed header): what a frame's head holds. Anything it cannot read hashes by
//! its MAC addresses. The hash is symmetric in nothing: it is for one direction's queue choice.

/// The flow's hash (never panics, whatever the bytes).
pub fn flow_hash(frame: &[u8]) -> u32 {
    let mut h = Fnv::new();
    let Some(mut et) = be16(frame, 12) else {
        return h.finish();
    };
    let mut l3 = 14;
    if et == 0x8100 || et == 0x88a8 {
        let Some(inner) = be16(frame, 16) else {
            return h.bytes(frame.get(..12).unwrap_or(frame)).finish();
        };
        et = inner;
        l3 = 18;
    }
    let tuple = match et {
        0x0800 => ipv4(frame, l3, &mut h),
        0x86dd => ipv6(frame, l3, &mut h),
        _ => false,
    };
    if !tuple {
        // Not IP, or headers cut short: the MAC pair keeps a station's frames together.
        h = Fnv::new();
        h.bytes(frame.get(..12).unwrap_or(frame));
    }
    h.finish()
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Feeds the IPv4 addresses, protocol and (first fragment of TCP/UDP) ports.
fn ipv4(f: &[u8], l3: usize, h: &mut Fnv) -> bool {
    let Some(&vihl) = f.get(l3) else { return false };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let (Some(&proto), Some(addrs), Some(frag)) =
        (f.get(l3 + 9), f.get(l3 + 12..l3 + 20), be16(f, l3 + 6))
    else {
        return false;
    };
    if vihl >> 4 != 4 || ihl < 20 {
        return false;
    }
    h.bytes(addrs);
    h.bytes(&[proto]);
    // Only an unfragmented packet (or a first fragment) carries the ports.
    if frag & 0x1fff == 0
        && (proto == 6 || proto == 17)
        && let Some(ports) = f.get(l3 + ihl..l3 + ihl + 4)
    {
        h.bytes(ports);
    }
    true
}

/// Feeds the IPv6 addresses, next header and (TCP/UDP right after the fixed header) ports.
fn ipv6(f: &[u8], l3: usize, h: &mut Fnv) -> bool {
    let (Some(&next), Some(addrs)) = (f.get(l3 + 6), f.get(l3 + 8..l3 + 40)) else {
        return false;
    };
    h.bytes(addrs);
    h.bytes(&[next]);
    if (next == 6 || next == 17)
        && let Some(ports) = f.get(l3 + 40..l3 + 44)
    {
        h.bytes(ports);
    }
    true
}

/// FNV-1a, 32 bits, with a final avalanche so `% queues` spreads well for any count.
struct Fnv(u32);

impl Fnv {
    fn new() -> Self {
        Fnv(0x811c_9dc5)
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        for &x in b {
            self.0 = (self.0 ^ u32::from(x)).wrapping_mul(0x0100_0193);
        }
        self
    }

    fn finish(&self) -> u32 {
        // murmur3's fmix32.
        let mut x = self.0;
        x ^= x >> 16;
        x = x.wrapping_mul(0x85eb_ca6b);
        x ^= x >> 13;
        x = x.wrapping_mul(0xc2b2_ae35);
        x ^ (x >> 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(src_port: u16, dst_port: u16, payload: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + 10];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[14 + 9] = 6;
        f[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 1]);
        f[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&src_port.to_be_bytes());
        f[36..38].copy_from_slice(&dst_port.to_be_bytes());
        for b in &mut f[54..] {
            *b = payload;
        }
        f
    }

    #[test]
    fn a_flow_keeps_its_hash_and_flows_spread() {
        assert_eq!(
            flow_hash(&tcp4(40000, 5201, 1)),
            flow_hash(&tcp4(40000, 5201, 9)),
            "the payload is not the flow"
        );
        let mut per_queue = [0u32; 4];
        for port in 0..1000u16 {
            per_queue[(flow_hash(&tcp4(30000 + port, 5201, 0)) % 4) as usize] += 1;
        }
        assert!(
            per_queue.iter().all(|&n| (200..300).contains(&n)),
            "1000 flows over 4 queues: {per_queue:?}"
        );
    }

    #[test]
    fn anything_hashes_without_panicking() {
        for len in 0..80 {
            let f = vec![0x45u8; len];
            let _ = flow_hash(&f);
            let mut v = tcp4(1, 2, 3);
            v.truncate(len);
            let _ = flow_hash(&v);
        }
    }
}
