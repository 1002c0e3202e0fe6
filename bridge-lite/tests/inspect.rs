//! Validation with etherparse, and the hot path's fixed-header read checked against it.

use bridge_lite::frame::read_macs;
use bridge_lite::testkit::udp_frame;
use bridge_lite::{BridgeError, MacAddr, inspect};
use etherparse::Ethernet2Slice;

#[test]
fn hot_path_header_read_agrees_with_etherparse() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..40usize {
        for _ in 0..50 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let ours = read_macs(&bytes);
            match Ethernet2Slice::from_slice_without_fcs(&bytes) {
                Ok(eth) => {
                    let (d, s) = ours.expect("etherparse accepted the header");
                    assert_eq!(MacAddr::from_u64(d).0, eth.destination());
                    assert_eq!(MacAddr::from_u64(s).0, eth.source());
                }
                Err(_) => assert_eq!(ours, None, "len {len}"),
            }
        }
    }
}

#[test]
fn inspect_reports_layers_and_rejects_truncated_headers() {
    let f = udp_frame(MacAddr::local(1), MacAddr::local(2), 60, 0);
    let info = inspect(&f).unwrap();
    assert_eq!(info.src, MacAddr::local(1));
    assert_eq!(info.dst, MacAddr::local(2));
    assert_eq!(info.ether_type, 0x0800);
    assert_eq!(
        (info.network, info.transport, info.vlan),
        (Some("ipv4"), Some("udp"), None)
    );
    // Cut inside the IPv4 header: the switch would forward it (it has 14 bytes), but
    // validation says what is wrong.
    let err = inspect(&f[..20]).unwrap_err();
    assert!(matches!(err, BridgeError::Malformed { .. }));
    assert!(
        inspect(&f[..10])
            .unwrap_err()
            .to_string()
            .contains("14-byte")
    );
    // A VLAN-tagged frame reports its tag and inner EtherType.
    let mut tagged = f[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
    tagged.extend_from_slice(&f[12..]);
    let info = inspect(&tagged).unwrap();
    assert_eq!((info.vlan, info.ether_type), (Some(42), 0x0800));
}
