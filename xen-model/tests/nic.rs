//! The NIC model as a device: frames the device (the wire's far end) writes land byte-exact in
//! buffers the driver posted in dom0's memory, descriptors are recycled, a device without posted
//! buffers waits and is woken, nobody misses a wakeup, and the driver's GRO merges what Linux
//! merges and nothing else, never reordering a flow.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, TcpHeader};
use hypervisor::XenDomain;
use netback::pool::{BufPool, NetFrame};
use netback::{Uplink, UplinkIo};
use offload::gro::Gro;
use offload::gso::{MAX_FRAME_LEN, SegCsum, segment};
use offload::{Csum, Gso, GsoKind, OffloadMeta};
use xen_model::nic::wire_nic;
use xen_model::nic::{Wire, WireNic};
use xen_model::{DomainHandle, EvtchnHandle, Hypervisor};

/// Hang guard for every wait: far above what any step takes; a wait that reaches it is a lost
/// wakeup.
const GUARD: Duration = Duration::from_secs(30);
/// A byte budget that never limits a poll.
const ANY: usize = usize::MAX / 2;
/// TCP payload per segment at MTU 1500 with no options.
const MSS: usize = 1460;

struct Rig {
    _xen: Hypervisor,
    dom0: DomainHandle,
    evtchn: EvtchnHandle,
    pool: BufPool<DomainHandle>,
    nic: WireNic<DomainHandle>,
    wire: Wire<DomainHandle>,
}

/// dom0 with a frame pool of `pool_pages`, a remote pseudo-domain, and the NIC between them.
fn rig(mtu: usize, pool_pages: usize) -> Rig {
    let xen = Hypervisor::new(16 * 1024).unwrap();
    let dom0 = xen.create_domain(8 * 1024).unwrap();
    let remote = xen.create_domain(16).unwrap();
    let evtchn = XenDomain::open_evtchn(&dom0).unwrap();
    let pool = BufPool::new(dom0.clone(), pool_pages);
    let (nic, wire) = wire_nic(&pool, &evtchn, &remote, mtu).unwrap();
    Rig {
        _xen: xen,
        dom0,
        evtchn,
        pool,
        nic,
        wire,
    }
}

impl Rig {
    /// One driver poll: the frames it hands the switch.
    fn poll(&mut self) -> Vec<NetFrame<DomainHandle>> {
        let io = UplinkIo {
            pool: &self.pool,
            evtchn: &self.evtchn,
        };
        let mut out = Vec::new();
        self.nic.receive(&io, &mut out, ANY);
        out
    }

    #[track_caller]
    fn send(&mut self, frame: &[u8]) {
        assert!(
            self.wire
                .send(frame.len(), |b| b.copy_from_slice(frame))
                .is_some(),
            "a posted buffer for the frame"
        );
    }
}

/// The bytes and meta of each frame, read back out of dom0's pages.
fn contents(frames: &[NetFrame<DomainHandle>]) -> Vec<(Vec<u8>, OffloadMeta)> {
    frames
        .iter()
        .map(|f| {
            let mut b = Vec::new();
            f.0.read_into(&mut b).unwrap();
            (b, f.meta())
        })
        .collect()
}

/// A non-IP frame of `len` bytes tagged by `seq`.
fn raw(len: usize, seq: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(seq);
    }
    f
}

/// Segment `i` (payload `mss` bytes) of TCP flow `sport` → 5201, checksums by etherparse, ids
/// incrementing, DF set.
fn seg(sport: u16, i: u32, mss: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..mss as u32)
        .map(|b| (b.wrapping_add(i * 31).wrapping_add(u32::from(sport))) as u8)
        .collect();
    let mut t = TcpHeader::new(sport, 5201, 1_000 + i * mss as u32, 512);
    t.ack = true;
    t.acknowledgment_number = 77;
    let l4 = t.header_len() + payload.len();
    let mut ip =
        Ipv4Header::new(l4 as u16, 64, IpNumber::TCP, [10, 0, 0, 1], [10, 0, 0, 2]).expect("fits");
    ip.identification = 100u16.wrapping_add(i as u16);
    ip.dont_fragment = true;
    ip.header_checksum = ip.calc_header_checksum();
    t.checksum = t.calc_checksum_ipv4(&ip, &payload).expect("fits");
    let mut out = Vec::new();
    Ethernet2Header {
        source: [0x02, 0, 0, 0, 0, 1],
        destination: [0x02, 0, 0, 0, 0, 2],
        ether_type: EtherType::IPV4,
    }
    .write(&mut out)
    .unwrap();
    ip.write(&mut out).unwrap();
    t.write(&mut out).unwrap();
    out.extend_from_slice(&payload);
    out
}

/// What the slice engine makes of `frames` in one poll (each as the device marks it).
fn reference(frames: &[(Vec<u8>, OffloadMeta)]) -> Vec<(Vec<u8>, OffloadMeta)> {
    let mut gro = Gro::new();
    let mut out = Vec::new();
    let mut sink = |f: &[u8], m: &OffloadMeta| out.push((f.to_vec(), *m));
    for (f, m) in frames {
        gro.receive(f, m, &mut sink);
    }
    gro.flush(&mut sink);
    out
}

/// Every output cut back into wire frames.
fn expand(out: &[(Vec<u8>, OffloadMeta)]) -> Vec<Vec<u8>> {
    let mut scratch = vec![0u8; MAX_FRAME_LEN];
    let mut frames = Vec::new();
    for (f, m) in out {
        if m.gso.is_some() {
            segment(
                f,
                m,
                SegCsum::Complete,
                &mut scratch,
                &mut |s: &[u8], _: &_| frames.push(s.to_vec()),
            )
            .unwrap();
        } else {
            frames.push(f.clone());
        }
    }
    frames
}

/// TCP sequence numbers of flow `sport`'s segments, in the order they appear.
fn seqs(frames: &[Vec<u8>], sport: u16) -> Vec<u32> {
    frames
        .iter()
        .filter(|f| f.len() >= 54 && f[23] == 6 && u16::from_be_bytes([f[34], f[35]]) == sport)
        .map(|f| u32::from_be_bytes([f[38], f[39], f[40], f[41]]))
        .collect()
}

#[test]
fn frames_the_device_writes_arrive_byte_exact_in_dom0_pages() {
    for mtu in [1514, 9014, 65_549] {
        let mut r = rig(mtu, 2048);
        let sent = vec![raw(60, 1), raw(mtu, 2), raw(4097.min(mtu), 3), raw(1000, 4)];
        for f in &sent {
            r.send(f);
        }
        let out = r.poll();
        let got = contents(&out);
        assert_eq!(got.len(), sent.len(), "mtu {mtu}");
        for ((b, m), want) in got.iter().zip(&sent) {
            assert_eq!(b, want, "mtu {mtu}: byte-exact");
            assert_eq!(*m, OffloadMeta::NONE, "not TCP/UDP: nothing validated");
        }
        for f in &out {
            assert_eq!(f.0.pages().len(), f.len().div_ceil(4096), "no spare pages");
            for p in f.0.pages() {
                assert_eq!(
                    r.dom0.local_addr(p.pfn).unwrap(),
                    p.addr,
                    "a page of dom0's own memory"
                );
            }
        }
        // A TCP segment with a good checksum comes out validated by the device.
        r.send(&seg(40000, 0, 1000));
        let got = contents(&r.poll());
        assert_eq!(got, vec![(seg(40000, 0, 1000), OffloadMeta::VALIDATED)]);
    }
}

#[test]
fn descriptors_are_recycled() {
    let mut r = rig(1514, 512);
    let ring = r.nic.ring_size();
    assert_eq!(ring, 512 / 4, "a quarter of a small pool is posted");
    for round in 0..10u8 {
        for i in 0..ring {
            r.send(&raw(1514, round.wrapping_add(i as u8)));
        }
        let out = r.poll();
        assert_eq!(out.len(), ring);
        drop(out);
        assert!(
            r.pool.owned_pages() <= 2 * ring,
            "round {round}: {} pages owned; buffers are reused, not leaked",
            r.pool.owned_pages()
        );
    }
    assert!(r.wire.can_send(), "every descriptor is posted again");
    assert_eq!(r.wire.dma_errors(), 0);
}

#[test]
fn a_device_without_buffers_waits_loses_nothing_and_is_woken() {
    let mut r = rig(1514, 64);
    let ring = r.nic.ring_size();
    let mut sent = Vec::new();
    let mut i = 0u8;
    loop {
        let f = raw(200 + usize::from(i), i);
        if r.wire.send(f.len(), |b| b.copy_from_slice(&f)).is_none() {
            break;
        }
        sent.push(f);
        i += 1;
    }
    assert_eq!(
        sent.len(),
        ring,
        "the device takes exactly the posted buffers"
    );
    assert!(!r.wire.can_send());
    // The device asks to be woken when buffers come; nothing is there yet.
    assert!(!r.wire.arm(true), "no room and no frame from dom0 yet");
    let out = r.poll();
    assert!(
        r.wire.wait(GUARD),
        "the driver's repost woke the device (not the hang guard)"
    );
    assert!(r.wire.can_send());
    let more = raw(300, 99);
    r.send(&more);
    sent.push(more);
    let mut got = contents(&out);
    got.extend(contents(&r.poll()));
    let got: Vec<Vec<u8>> = got.into_iter().map(|(b, _)| b).collect();
    assert_eq!(got, sent, "no frame lost or reordered");
}

#[test]
fn no_wakeup_is_lost_when_both_sides_block() {
    const FRAMES: u32 = 20_000;
    let (wire_tx, wire_rx) = mpsc::channel();
    let driver = thread::spawn(move || {
        let xen = Hypervisor::new(4096).unwrap();
        let dom0 = xen.create_domain(2048).unwrap();
        let remote = xen.create_domain(16).unwrap();
        let evtchn = XenDomain::open_evtchn(&dom0).unwrap();
        // A small ring, so the device runs out of buffers again and again.
        let pool = BufPool::new(dom0.clone(), 32);
        let (mut nic, wire) = wire_nic(&pool, &evtchn, &remote, 1514).unwrap();
        wire_tx.send(wire).unwrap();
        let io = UplinkIo {
            pool: &pool,
            evtchn: &evtchn,
        };
        let (mut next, mut out, mut delivered) = (0u32, Vec::new(), Vec::new());
        while next < FRAMES {
            out.clear();
            if nic.receive(&io, &mut out, ANY) {
                for f in contents(&out) {
                    assert_eq!(f.0, frame_n(next), "frame {next} in order");
                    next += 1;
                }
                continue;
            }
            if nic.arm() {
                continue;
            }
            delivered.clear();
            evtchn.wait(Some(GUARD), &mut delivered).unwrap();
            assert!(
                !delivered.is_empty(),
                "lost wakeup: the driver slept {GUARD:?}"
            );
            evtchn.unmask(&delivered).unwrap();
        }
        drop(xen);
    });
    let mut wire: Wire<DomainHandle> = wire_rx.recv().unwrap();
    let device = thread::spawn(move || {
        let mut n = 0u32;
        while n < FRAMES {
            let f = frame_n(n);
            if wire.send(f.len(), |b| b.copy_from_slice(&f)).is_some() {
                n += 1;
                // Publish in bursts of 7, and at the end.
                if n.is_multiple_of(7) || n == FRAMES {
                    wire.flush();
                }
                continue;
            }
            wire.flush();
            if wire.arm(true) {
                continue;
            }
            assert!(wire.wait(GUARD), "lost wakeup: the device slept {GUARD:?}");
        }
    });
    device.join().unwrap();
    driver.join().unwrap();
}

/// Frame `n` of the lost-wakeup test: its number in the payload.
fn frame_n(n: u32) -> Vec<u8> {
    let mut f = raw(64 + (n % 1400) as usize, n as u8);
    f[14..18].copy_from_slice(&n.to_be_bytes());
    f
}

#[test]
fn in_order_segments_of_one_flow_come_out_as_one_super_frame() {
    for (mtu, mss) in [(1514, MSS), (9014, 8960)] {
        let mut r = rig(mtu, 2048);
        // On by default only where frames fit a page.
        r.nic.set_gro(true);
        let n = (65_000 / mss) as u32;
        let sent: Vec<Vec<u8>> = (0..n).map(|i| seg(40000, i, mss)).collect();
        for f in &sent {
            r.send(f);
        }
        let out = r.poll();
        let got = contents(&out);
        assert_eq!(got.len(), 1, "mtu {mtu}: one super-frame");
        let (bytes, meta) = &got[0];
        assert_eq!(
            *meta,
            OffloadMeta {
                csum: Csum::Partial {
                    start: 34,
                    offset: 16
                },
                gso: Some(Gso::new(GsoKind::Tcpv4, mss as u16)),
            },
            "tcp4_gro_complete's layout"
        );
        assert!(bytes.len() > 4096 * 10, "spans many pages");
        let marked: Vec<_> = sent
            .iter()
            .map(|f| (f.clone(), OffloadMeta::VALIDATED))
            .collect();
        assert_eq!(got, reference(&marked), "the bytes the slice engine makes");
        assert_eq!(expand(&got), sent, "segmentation gives back every segment");
        // The switch sees the patched headers.
        assert_eq!(
            bridge_lite::Frame::bytes(&out[0]),
            &bytes[..netback::pool::HEAD],
            "the handle's head copy is the patched header"
        );
        let st = r.nic.stats();
        assert_eq!(
            (st.rx_frames, st.rx_gro_merged, st.rx_gro_super),
            (u64::from(n), u64::from(n) - 1, 1)
        );
        drop(out);
        let posted = r.nic.ring_size() * mtu.div_ceil(4096);
        assert_eq!(
            r.pool.owned_pages() - r.pool.free_pages(),
            posted,
            "every page but the posted buffers is back in the pool"
        );
    }
}

#[test]
fn out_of_order_and_non_tcp_frames_pass_unmerged_and_never_reorder_a_flow() {
    let mut r = rig(1514, 2048);
    let s: Vec<Vec<u8>> = (0..8).map(|i| seg(40000, i, MSS)).collect();
    let arp = raw(60, 7);
    // 0 1 [raw] 2 4 3 5 6 7.
    let order = [
        s[0].clone(),
        s[1].clone(),
        arp.clone(),
        s[2].clone(),
        s[4].clone(),
        s[3].clone(),
        s[5].clone(),
        s[6].clone(),
        s[7].clone(),
    ];
    for f in &order {
        r.send(f);
    }
    let got = contents(&r.poll());
    let marked: Vec<_> = order
        .iter()
        .map(|f| {
            let m = if f == &arp {
                OffloadMeta::NONE
            } else {
                OffloadMeta::VALIDATED
            };
            (f.clone(), m)
        })
        .collect();
    assert_eq!(got, reference(&marked));
    let shape: Vec<usize> = got
        .iter()
        .map(|(f, m)| {
            if m.gso.is_some() {
                expand(&[(f.clone(), *m)]).len()
            } else {
                1
            }
        })
        .collect();
    // The raw frame is no flow's: it passes at once, as Linux's GRO passes it, and the held
    // flow goes on: [0 1 2], then the gap: [4] alone, [3] alone, then [5 6 7].
    assert_eq!(shape, vec![1, 3, 1, 1, 3]);
    assert_eq!(got[0], (arp, OffloadMeta::NONE), "passed as it came");
    let tcp: Vec<Vec<u8>> = order.iter().filter(|f| f.len() > 60).cloned().collect();
    assert_eq!(expand(&got[1..]), tcp, "the flow's arrival order kept");
}

#[test]
fn interleaved_flows_merge_separately_and_stay_in_order_per_flow() {
    let mut r = rig(1514, 2048);
    let a: Vec<Vec<u8>> = (0..30).map(|i| seg(40000, i, MSS)).collect();
    let b: Vec<Vec<u8>> = (0..30).map(|i| seg(40001, i, MSS)).collect();
    for i in 0..30 {
        r.send(&a[i]);
        r.send(&b[i]);
    }
    let got = contents(&r.poll());
    assert_eq!(got.len(), 2, "one super-frame per flow");
    let frames = expand(&got);
    assert_eq!(seqs(&frames, 40000), seqs(&a, 40000));
    assert_eq!(seqs(&frames, 40001), seqs(&b, 40001));
    assert_eq!(frames.len(), 60);
}

#[test]
fn a_frame_with_a_bad_checksum_is_not_merged_and_goes_on_unvalidated() {
    let mut r = rig(1514, 2048);
    let s: Vec<Vec<u8>> = (0..4).map(|i| seg(40000, i, MSS)).collect();
    let mut bad = s[2].clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    for f in [&s[0], &s[1], &bad, &s[3]] {
        r.send(f);
    }
    let got = contents(&r.poll());
    assert_eq!(got.len(), 3);
    assert!(got[0].1.gso.is_some(), "0 and 1 merged");
    assert_eq!(
        got[1],
        (bad, OffloadMeta::NONE),
        "the bad one: not validated, untouched"
    );
    assert_eq!(got[2], (s[3].clone(), OffloadMeta::VALIDATED));
}

#[test]
fn gro_is_on_by_default_only_where_frames_fit_a_page() {
    for (mtu, merged) in [(1514, true), (9014, false)] {
        let mut r = rig(mtu, 2048);
        for i in 0..3 {
            r.send(&seg(40000, i, MSS));
        }
        let got = contents(&r.poll());
        assert_eq!(got.len() == 1, merged, "mtu {mtu}");
    }
}

#[test]
fn with_gro_off_frames_go_on_as_the_device_delivered_them() {
    let mut r = rig(1514, 2048);
    r.nic.set_gro(false);
    let s: Vec<Vec<u8>> = (0..5).map(|i| seg(40000, i, MSS)).collect();
    for f in &s {
        r.send(f);
    }
    let got = contents(&r.poll());
    let want: Vec<_> = s
        .iter()
        .map(|f| (f.clone(), OffloadMeta::VALIDATED))
        .collect();
    assert_eq!(got, want);
}
