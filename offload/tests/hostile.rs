//! Everything a peer controls: truncated and corrupted frames and metadata never panic.

mod common;

use common::*;
use netif_ring::netif::ExtraInfo;
use offload::gro::Gro;
use offload::gso::{self, MAX_FRAME_LEN, SegCsum};
use offload::virtio::VirtioNetHdr;
use offload::{Csum, Gso, GsoKind, OffloadMeta, csum, netif, parse};

fn seeds() -> Vec<Vec<u8>> {
    let small = |v6| {
        Tcp {
            v6,
            payload: pattern(90, 1),
            ..Tcp::default()
        }
        .frame()
    };
    vec![
        small(false),
        small(true),
        udp_v4(&pattern(33, 2)),
        v6_with_ext(0, 0, 6, &tcp_l4_v6(&pattern(50, 3))),
        v6_with_ext(44, 0, 17, &udp_l4_v6(&pattern(20, 4))),
        Tcp {
            ipv4_options: vec![1, 1, 1, 0],
            payload: pattern(40, 5),
            ..Tcp::default()
        }
        .frame(),
    ]
}

fn metas() -> [OffloadMeta; 4] {
    [
        OffloadMeta::NONE,
        OffloadMeta::VALIDATED,
        OffloadMeta {
            csum: Csum::Partial {
                start: 34,
                offset: 16,
            },
            gso: None,
        },
        OffloadMeta {
            csum: Csum::Partial {
                start: 34,
                offset: 16,
            },
            gso: Some(Gso::new(GsoKind::Tcpv4, 7)),
        },
    ]
}

/// Runs every entry point on `frame`; only panics matter.
fn exercise(frame: &[u8], gro: &mut Gro, scratch: &mut [u8]) {
    let mut sink = |_: &[u8], _: &OffloadMeta| {};
    let _ = parse::locate(frame);
    let _ = csum::verify(frame);
    let mut f = frame.to_vec();
    let _ = csum::complete(&mut f);
    let _ = csum::set_partial(&mut f);
    let _ = csum::fill(&mut f);
    let n = f.len();
    let _ = csum::complete_at(&mut f, n / 2, 3);
    for meta in metas() {
        gro.receive(frame, &meta, &mut sink);
        let _ = gso::segment(frame, &meta, SegCsum::Complete, scratch, &mut sink);
        let _ = VirtioNetHdr::from_meta(&meta, frame);
    }
    for h in [
        [1u8, 1, 66, 0, 7, 0, 34, 0, 16, 0],
        [0, 4, 0, 0, 1, 0, 0, 0, 0, 0],
        [1, 0x81, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ] {
        let _ = VirtioNetHdr::from_bytes(&h).to_meta(frame);
    }
    for flags in [0u16, 1, 2, 3, 9, 0xffff] {
        let gso_slot = ExtraInfo {
            type_: 1,
            flags: 0,
            u: [7, 0, 1, 0, 0, 0],
        };
        let mut f = frame.to_vec();
        let _ = netif::from_tx(flags, None, &mut f);
        let _ = netif::from_tx(flags, Some(&gso_slot), &mut f);
        let _ = netif::from_rx(flags, Some(&gso_slot), &mut f);
    }
}

#[test]
fn truncated_and_corrupted_frames_never_panic() {
    let mut gro = Gro::new();
    let mut scratch = vec![0u8; MAX_FRAME_LEN];
    for seed in seeds() {
        for len in 0..=seed.len() {
            exercise(&seed[..len], &mut gro, &mut scratch);
        }
        for at in 0..seed.len() {
            for v in [0x00, 0xFF, seed[at] ^ 0x80, seed[at].wrapping_add(1)] {
                let mut f = seed.clone();
                f[at] = v;
                exercise(&f, &mut gro, &mut scratch);
            }
        }
    }
    gro.flush(&mut |_: &[u8], _: &OffloadMeta| {});
    assert_eq!(gro.held(), 0);
}
