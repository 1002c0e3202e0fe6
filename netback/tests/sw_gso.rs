//! The rules that keep a frame from a guest that cannot take it hold for the segments software
//! GSO cuts from a super-frame exactly as for a frame that arrives whole, and a hostile
//! `gso_size` cannot make one frame into an unbounded number of segments: past
//! `offload::gso::MAX_SEGS` the frame is dropped uncut and counted, and the other guests are
//! served in the same pass.

use etherparse::PacketBuilder;
use netback::{Config, FrontendOffloads, VifStats};
use netif_ring::netif::{
    ExtraRepr, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, XEN_NETIF_GSO_TYPE_TCPV4,
};
use offload::csum;
use testkit::{Guest, Nb, RawFront, Scene};

const A: u8 = 1;
/// No `feature-sg`.
const NO_SG: u8 = 2;
/// `feature-sg`, no GSO.
const SG: u8 = 3;
/// Takes everything.
const ALL: u8 = 4;

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// A TCP/IPv4 frame from A to `dst` carrying `len` payload bytes, checksum partial (as a
/// sender of a super-frame leaves it).
fn tcp(dst: u8, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let b = PacketBuilder::ethernet2(mac(A), mac(dst))
        .ipv4([10, 0, 0, A], [10, 0, 0, dst], 64)
        .tcp(4000, 5201, 1_000_000, 65535)
        .ack(77);
    let mut out = Vec::with_capacity(b.size(len));
    b.write(&mut out, &payload).unwrap();
    csum::set_partial(&mut out).unwrap();
    out
}

fn gso(size: u16) -> netif_ring::netif::ExtraInfo {
    ExtraRepr::Gso {
        size,
        gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
        features: 0,
    }
    .emit(false)
}

struct World {
    nb: Nb,
    a: RawFront,
    no_sg: RawFront,
    sg: RawFront,
    all: RawFront,
    _xen: xen_model::Hypervisor,
}

fn world(cfg: Config) -> World {
    let mut s = Scene::new(cfg);
    let a = s.front(Guest::mac(A));
    let guest = |n: u8, offload: FrontendOffloads| Guest {
        offload,
        ..Guest::mac(n)
    };
    let mut no_sg = s.front(guest(NO_SG, FrontendOffloads::default()));
    let mut sg = s.front(guest(
        SG,
        FrontendOffloads {
            sg: true,
            ..FrontendOffloads::default()
        },
    ));
    let mut all = s.front(guest(ALL, FrontendOffloads::ALL));
    for g in [&mut no_sg, &mut sg, &mut all] {
        g.post_rx(200);
        // Each announces its MAC so frames to it are unicast.
        let mut hello = tcp(g.mac, 10);
        hello[..6].copy_from_slice(&[0xff; 6]);
        hello[6..12].copy_from_slice(&mac(g.mac));
        g.send(&hello);
        s.nb.poll().unwrap();
        g.reap_tx();
    }
    for g in [&mut no_sg, &mut sg, &mut all] {
        g.recv();
    }
    World {
        nb: s.nb,
        a,
        no_sg,
        sg,
        all,
        _xen: s.xen,
    }
}

impl World {
    /// A sends `frame` as a super-frame of MSS `mss` (or whole with `None`); one pass runs.
    fn send(&mut self, frame: &[u8], mss: Option<u16>) {
        match mss {
            Some(m) => self.a.send_with(
                frame,
                NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
                Some(gso(m)),
            ),
            None => self
                .a
                .send_with(frame, NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, None),
        }
        self.nb.poll().unwrap();
        self.a.reap_tx();
    }

    fn stats(&self, g: &RawFront) -> VifStats {
        self.nb.vif_stats(g.id()).unwrap()
    }
}

#[test]
fn no_segment_longer_than_a_page_reaches_a_frontend_without_sg() {
    let mut w = world(Config::default());
    let before = w.stats(&w.no_sg);
    // Whole: a 6066-byte frame is kept from the guest without feature-sg.
    w.send(&tcp(NO_SG, 6000), None);
    assert!(w.no_sg.recv().is_empty());
    assert_eq!(w.stats(&w.no_sg).rx_unfit, 1);
    // Cut by software GSO with MSS 6000: every segment would be 6054 bytes, so the same rule
    // keeps the frame from it, before it is cut (one drop, no segment queued).
    w.send(&tcp(NO_SG, 4 * 6000), Some(6000));
    assert!(w.no_sg.recv().is_empty());
    let st = w.stats(&w.no_sg);
    assert_eq!(st.rx_unfit, 2, "{st:?}");
    assert_eq!(st.rx_packets, before.rx_packets);
    assert_eq!(
        st.rx_queue_peak_pages, before.rx_queue_peak_pages,
        "no segment was made or held for it"
    );
    // With an MSS whose segments fit a page, it gets all of them, each one slot.
    w.send(&tcp(NO_SG, 4 * 1448), Some(1448));
    let got = w.no_sg.recv_meta();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|f| f.slots == 1 && f.data.len() <= 4096));
    assert!(got.iter().all(|f| csum::verify(&f.data)));
    assert_eq!(w.stats(&w.no_sg).rx_unfit, 2);
}

#[test]
fn a_frontend_without_gso_never_sees_a_super_frame_or_its_extra() {
    let mut w = world(Config::default());
    w.send(&tcp(SG, 10 * 1448), Some(1448));
    let got = w.sg.recv_meta();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|f| f.extra.is_none() && f.extras.is_empty()));
    assert!(got.iter().all(|f| f.data.len() == 54 + 1448));
    assert_eq!(w.stats(&w.sg).rx_gso_frames, 0);
    // The one that takes GSO gets the same frame whole.
    w.send(&tcp(ALL, 10 * 1448), Some(1448));
    let got = w.all.recv_meta();
    assert_eq!(got.len(), 1);
    assert!(got[0].extra.is_some());
    assert_eq!(w.stats(&w.all).rx_gso_frames, 1);
}

#[test]
fn a_hostile_mss_cannot_make_one_frame_into_unbounded_segments() {
    let mut w = world(Config::default());
    let big = tcp(SG, 65_000);
    let before = w.stats(&w.sg);
    // MSS 1 would be 65 000 segments; 47 would still be more than MAX_SEGS (1365).
    for mss in [1u16, 47] {
        // In the same pass a well-behaved frame goes to another guest.
        let ok = tcp(ALL, 1000);
        w.a.send_with(
            &big,
            NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
            Some(gso(mss)),
        );
        w.a.send_with(&ok, NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, None);
        w.nb.poll().unwrap();
        w.a.reap_tx();
        let got = w.all.recv();
        assert_eq!(got.len(), 1, "the other guest is served in the same pass");
        assert!(got[0].as_ref().is_ok_and(|g| g.len() == ok.len()));
    }
    assert!(w.sg.recv().is_empty(), "not one segment of them");
    let st = w.stats(&w.sg);
    assert_eq!(st.rx_gso_too_many_segs, 2, "each counted once: {st:?}");
    assert_eq!(st.rx_unfit, 0);
    assert_eq!(
        st.rx_queue_peak_pages, before.rx_queue_peak_pages,
        "nothing was cut, nothing held"
    );
    assert_eq!(st.rx_packets, before.rx_packets);
    assert!(
        w.stats(&w.a).fatal.is_none(),
        "a drop, not a protocol error"
    );
    // At the cap's MSS (48) a 64 KiB frame is a legal 1355 segments: cut, as far as the
    // guest's queue and the pool go (the rest are its queue's drops, not this counter's).
    w.send(&big, Some(48));
    let st = w.stats(&w.sg);
    assert_eq!(st.rx_gso_too_many_segs, 2);
    let delivered = w.sg.recv().len() as u64;
    assert!(delivered > 0, "{st:?}");
    assert!(delivered + st.rx_queue_full + st.rx_unfit <= 1355);
    // A frontend that takes GSO gets even the hostile frame whole: nothing is cut for it, as
    // Linux hands it on.
    let mut whole = big.clone();
    whole[..6].copy_from_slice(&mac(ALL));
    w.send(&whole, Some(1));
    let got = w.all.recv_meta();
    assert_eq!(got.len(), 1);
    assert_eq!(w.stats(&w.all).rx_gso_too_many_segs, 0);
}
