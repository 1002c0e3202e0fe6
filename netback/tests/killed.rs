//! A guest killed mid-stream: its domain destroyed while the backend holds its rings mapped and
//! grant copies to and from it are in flight, in both directions at once. The backend keeps
//! serving the other guests, accounts for every frame it took (delivered or counted as
//! dropped), and once the toolstack removes the device every frame, port and grant is back.

mod threaded;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use netback::VifStats;
use netfront::RxMode;
use smoltcp::phy::{Device, RxToken, TxToken};
use threaded::{GUARD, Guest, exchange, guest, mac, machine, vif};

/// A guest streaming frames to `peer` and taking whatever arrives, on its own thread, until
/// told to stop or its netfront fails (its domain is gone).
struct Streamer {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: thread::JoinHandle<(Guest, u64)>,
}

impl Streamer {
    fn start(mut g: Guest, peer: [u8; 6]) -> Streamer {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let thread = thread::spawn(move || {
            let mut received = 0u64;
            let mut tag = 0u32;
            // Relaxed: a flag polled in a loop; nothing is published through it.
            while !s.load(Ordering::Relaxed) {
                let mut busy = false;
                if let Some(tok) = g.nf.transmit(smoltcp::time::Instant::ZERO) {
                    tag += 1;
                    let f = Guest::frame(g.mac, peer, 1000, tag);
                    tok.consume(f.len(), |b| b.copy_from_slice(&f));
                    // Relaxed: a count read after the thread is told to stop or joined.
                    n.fetch_add(1, Ordering::Relaxed);
                    busy = true;
                }
                if g.nf.poll().is_err() {
                    break;
                }
                while let Some((rx, _)) = g.nf.receive(smoltcp::time::Instant::ZERO) {
                    rx.consume(|_| ());
                    received += 1;
                    busy = true;
                }
                if !busy && g.nf.wait(Some(Duration::from_millis(1))).is_err() {
                    break;
                }
            }
            (g, received)
        });
        Streamer { stop, sent, thread }
    }

    fn sent(&self) -> u64 {
        // Relaxed: a progress count.
        self.sent.load(Ordering::Relaxed)
    }

    fn finish(self) -> (Guest, u64, u64) {
        // Relaxed: the join below orders everything the thread did before us.
        self.stop.store(true, Ordering::Relaxed);
        let (g, received) = self.thread.join().expect("streamer thread");
        let sent = self.sent.load(Ordering::Relaxed);
        (g, sent, received)
    }
}

#[track_caller]
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < GUARD, "{what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Frames switched to a vif that it put on the guest's ring (some answered with an error,
/// `rx_copy_errors`) or dropped with a count: all of them, once none is queued.
fn rx_accounted(st: &VifStats) -> u64 {
    st.rx_packets + st.rx_queue_full + st.rx_expired + st.rx_unfit + st.rx_discarded
}

fn killed_mid_stream(mode: RxMode) {
    let (xen, dom0, be) = machine();
    let (db, _) = guest(&xen, 2, 0, mac(3));
    let (dc, _) = guest(&xen, 3, 0, mac(4));
    let mut c = Guest::connect(&dc, 0, mac(4), RxMode::Copy);
    let b = Guest::connect(&db, 0, mac(3), RxMode::Copy);
    let frames_before_a = xen.free_frames();
    let dom0_ports_before_a = dom0.evtchn_ports_in_use();
    let (da, pa) = guest(&xen, 1, 0, mac(2));
    let a = Guest::connect(&da, 0, mac(2), mode);
    drop(da);

    // A and B stream at each other: A's tx requests and B's frames into A's buffers are in
    // flight through the backend when A dies.
    let sa = Streamer::start(a, mac(3));
    let sb = Streamer::start(b, mac(2));
    wait_for("the streams never got going", || {
        sa.sent() > 200 && sb.sent() > 200
    });
    xen.destroy_domain(1).expect("destroy A");
    let b_sent_at_kill = sb.sent();
    // B keeps sending to A's MAC. Until the backend sees A's frontend directory go (it goes
    // with the domain) these are frames for a dead guest, dropped and counted at A's vif;
    // after that A's MAC has left the switch and they flood as unknown unicast, to C.
    wait_for("B stopped sending after A died", || {
        sb.sent() > b_sent_at_kill + 100
    });
    let (mut b, b_sent, mut b_received) = sb.finish();
    let (a, _, _) = sa.finish();
    drop(a);
    let stats_of = |snap: &netback::NetbackSnapshot, domid| {
        snap.vifs
            .iter()
            .find(|(id, _)| *id == vif(domid, 0))
            .map(|(_, st)| st.clone())
            .expect("connected")
    };
    // B and C take what is still in their rings and what the backend still holds queued for
    // them (B stopped taking frames while A's were arriving), until a settled backend puts
    // nothing more on either ring.
    let mut c_received = 0;
    let mut last = None;
    let start = Instant::now();
    let snap = loop {
        assert!(
            start.elapsed() < GUARD,
            "B's and C's last frames never arrived"
        );
        while b.try_recv().is_some() {
            b_received += 1;
        }
        while c.try_recv().is_some() {
            c_received += 1;
        }
        let snap = be.settled();
        let now = (stats_of(&snap, 2).rx_packets, stats_of(&snap, 3).rx_packets);
        if last == Some(now) && now == (b_received, c_received) {
            break snap;
        }
        last = Some(now);
        thread::sleep(Duration::from_millis(1));
    };
    assert!(
        snap.vifs.iter().all(|(id, _)| *id != vif(1, 0)),
        "A's vif went with A's frontend directory: {snap:?}"
    );
    let a_st = snap
        .departed
        .iter()
        .find(|(id, _)| *id == vif(1, 0))
        .map(|(_, st)| st.clone())
        .expect("A's final counters are kept");
    let b_st = stats_of(&snap, 2);
    assert!(
        snap.vifs.iter().all(|(_, st)| st.fatal.is_none()),
        "{snap:?}"
    );
    let floods: u64 = snap
        .bridge
        .ports
        .iter()
        .filter(|p| matches!(p.kind, bridge_lite::PortKind::Vif { domid: 2, .. }))
        .map(|p| p.stats.rx_unknown_unicast)
        .sum();
    eprintln!(
        "B sent {b_sent} to A ({b_sent_at_kill} before the kill); A: {} on its ring ({} of them \
         failed), {} dropped; {floods} flooded after A left; A sent {} (B got {}, {} dropped)",
        a_st.rx_packets,
        a_st.rx_copy_errors,
        rx_accounted(&a_st) - a_st.rx_packets,
        a_st.tx_packets,
        b_st.rx_packets,
        rx_accounted(&b_st) - b_st.rx_packets,
    );
    // Nothing vanished uncounted. The backend took every frame B sent; each was delivered to A,
    // dropped at A's vif with a count, or (after A left) flooded to C.
    assert_eq!(
        b_st.tx_packets, b_sent,
        "the backend took every frame B sent"
    );
    assert_eq!(
        rx_accounted(&a_st) + floods,
        b_sent,
        "every frame for A delivered, counted as dropped or flooded: {a_st:?}"
    );
    // Every frame the backend took from A reached B's ring or was dropped at B's vif with a
    // count (B's queue overflows when A outruns it).
    assert_eq!(rx_accounted(&b_st), a_st.tx_packets, "{b_st:?}");
    assert_eq!(
        b_received, b_st.rx_packets,
        "B took every frame on its ring"
    );
    assert_eq!(
        rx_accounted(&stats_of(&snap, 3)),
        floods,
        "C got every flood or counted it dropped"
    );
    exchange(&mut b, &mut c, 4);

    // The toolstack cleans up after the dead domain (libxl removes the backend directory).
    xen.xenstore().rm(&pa.backend).expect("rm backend dir");
    let snap = be.settled();
    assert_eq!(snap.devices, 2, "A's device is forgotten");
    // Nothing of A is left: its frames (once its last handle, the backend's ring mappings,
    // went), dom0's ports, its switch port, the pool's pages.
    assert_eq!(snap.bridge.ports.len(), 2, "B's and C's switch ports");
    assert_eq!(
        dom0.evtchn_ports_in_use(),
        dom0_ports_before_a,
        "dom0's ports"
    );
    assert_eq!(
        xen.free_frames(),
        frames_before_a,
        "A's frames all returned"
    );
    let (owned, free) = be.run(|nb| (nb.pool().owned_pages(), nb.pool().free_pages()));
    assert_eq!(free, owned, "every pool page is back at rest");
    exchange(&mut b, &mut c, 4);
    b.close();
    c.close();
}

#[test]
fn a_copy_mode_guest_killed_mid_stream_both_ways() {
    killed_mid_stream(RxMode::Copy);
}

#[test]
fn a_flip_mode_guest_killed_mid_stream_both_ways() {
    killed_mid_stream(RxMode::Flip);
}
