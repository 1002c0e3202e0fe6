//! A misbehaving frontend: every case in "What Linux netback does with what it is given". Fatal
//! cases disable that vif with a counter and a reason; single bad packets are dropped and
//! counted; the backend never panics and a well-behaved vif next to it keeps working.

use std::time::Duration;

use netback::{Config, Fatal};
use netif_ring::RingError;
use netif_ring::netif::{
    ExtraInfo, NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_EXTRA_INFO,
    NETTXF_MORE_DATA, TxRequest, XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_EXTRA_TYPE_MAX,
    XEN_NETIF_GSO_TYPE_TCPV4,
};
use testkit::{Guest, Nb, RawFront, broadcast, frame};
use xen_model::{DomainHandle, Hypervisor};

/// A hostile frontend `h` and a well-behaved pair `a` → `b` on the same backend.
struct Scene {
    xen: Hypervisor,
    dom0: DomainHandle,
    nb: Nb,
    h: RawFront,
    a: RawFront,
    b: RawFront,
}

fn scene(cfg: Config) -> Scene {
    let mut s = testkit::Scene::new(cfg);
    let h = s.front(Guest::mac(9));
    let a = s.front(Guest::mac(1));
    let mut b = s.front(Guest::mac(2));
    b.post_rx(32);
    b.send(&frame(2, 1, 60, 0));
    s.nb.poll().unwrap();
    let testkit::Scene { xen, dom0, nb } = s;
    Scene {
        xen,
        dom0,
        nb,
        h,
        a,
        b,
    }
}

impl Scene {
    /// The good pair still passes traffic.
    #[track_caller]
    fn others_carry_on(&mut self) {
        let f = frame(1, 2, 800, 42);
        self.a.send(&f);
        self.nb.poll().unwrap();
        let got = self.b.recv();
        assert_eq!(got.len(), 1, "the well-behaved vif still receives");
        assert!(got[0].as_ref().is_ok_and(|g| *g == f));
        assert!(self.nb.vif_stats(self.a.id()).unwrap().fatal.is_none());
    }

    fn fatal(&self) -> Option<Fatal> {
        self.nb.vif_stats(self.h.id()).unwrap().fatal
    }

    /// Pushes hand-built requests from the hostile frontend and runs a pass.
    fn push(&mut self, reqs: &[TxRequest]) {
        for r in reqs {
            self.h.tx.put_request(*r).unwrap();
        }
        self.h.push_tx();
        self.nb.poll().unwrap();
    }

    fn req(&mut self, size: u16, flags: u16, offset: u16, id: u16) -> TxRequest {
        // The page holds whatever of the claimed data fits; the claim itself is what is tested.
        let n = (size as usize).min(4096 - offset as usize);
        let data = if n >= 14 {
            frame(9, 2, n, 0)
        } else {
            vec![0xab; n]
        };
        let gref = self.h.tx_page(offset as usize, &data);
        TxRequest {
            gref: gref.0,
            offset,
            flags,
            id,
            size,
        }
    }
}

#[test]
fn tx_ring_overflow_is_fatal() {
    let mut s = scene(Config::default());
    s.h.set_tx_req_prod(10_000);
    s.nb.poll().unwrap();
    assert!(
        matches!(
            s.fatal(),
            Some(Fatal::Ring(RingError::RequestOverflow { .. }))
        ),
        "{:?}",
        s.fatal()
    );
    s.others_carry_on();
}

impl Scene {
    /// A chain of `n` slots in all, 100 bytes each, from the hostile guest.
    fn chain(&mut self, n: u16) -> Vec<TxRequest> {
        (0..n)
            .map(|i| {
                let flags = if i + 1 < n { NETTXF_MORE_DATA } else { 0 };
                self.req(if i == 0 { n * 100 } else { 100 }, flags, 0, i)
            })
            .collect()
    }
}

#[test]
fn more_than_20_slots_after_the_first_is_fatal_as_in_linux() {
    // Linux's xenvif_count_requests: fatal once `slots >= fatal_skb_slots` (20) before reading
    // another, where `slots` counts those after the first: 22 slots in all.
    let mut s = scene(Config::default());
    let reqs = s.chain(22);
    s.push(&reqs);
    assert_eq!(
        s.fatal(),
        Some(Fatal::TooManySlots {
            slots: 21,
            limit: 20
        })
    );
    s.others_carry_on();
}

#[test]
fn slot_limits_match_linux_19_pass_20_and_21_are_dropped() {
    // XEN_NETBK_LEGACY_SLOTS_MAX (18) counts slots after the first: 19 in all pass.
    let mut s = scene(Config::default());
    let reqs = s.chain(19);
    s.push(&reqs);
    let st = s.nb.vif_stats(s.h.id()).unwrap();
    assert_eq!((st.tx_packets, st.tx_too_many_slots), (1, 0), "{st:?}");
    assert_eq!(s.h.reap_tx(), 19);
    assert!(s.h.tx_responses.iter().all(|r| r.status == NETIF_RSP_OKAY));
    let got = s.b.recv();
    assert!(
        got.len() == 1 && got[0].as_ref().is_ok_and(|f| f.len() == 1900),
        "the 19-slot packet reached its destination"
    );
    for (n, dropped) in [(20u16, 1u64), (21, 2)] {
        s.h.tx_responses.clear();
        let reqs = s.chain(n);
        s.push(&reqs);
        let st = s.nb.vif_stats(s.h.id()).unwrap();
        assert!(st.fatal.is_none(), "{n} slots are dropped, not fatal");
        assert_eq!(st.tx_too_many_slots, dropped);
        assert_eq!(s.h.reap_tx(), n as usize, "every slot answered");
        assert!(s.h.tx_responses.iter().all(|r| r.status == NETIF_RSP_ERROR));
    }
    s.others_carry_on();
}

#[test]
fn later_slot_bigger_than_the_rest_drops_the_packet() {
    let mut s = scene(Config::default());
    let first = s.req(200, NETTXF_MORE_DATA, 0, 1);
    let second = s.req(300, 0, 0, 2);
    s.push(&[first, second]);
    let st = s.nb.vif_stats(s.h.id()).unwrap();
    assert!(st.fatal.is_none());
    assert_eq!(st.tx_oversize_slot, 1);
    s.others_carry_on();
}

#[test]
fn slot_crossing_its_page_is_fatal() {
    let mut s = scene(Config::default());
    let r = s.req(200, 0, 4000, 1);
    s.push(&[r]);
    assert_eq!(
        s.fatal(),
        Some(Fatal::SlotCrossesPage {
            offset: 4000,
            size: 200
        })
    );
    s.others_carry_on();
}

#[test]
fn later_slot_crossing_its_page_is_fatal() {
    let mut s = scene(Config::default());
    let first = s.req(1000, NETTXF_MORE_DATA, 0, 1);
    let second = s.req(500, 0, 3900, 2);
    s.push(&[first, second]);
    assert!(matches!(s.fatal(), Some(Fatal::SlotCrossesPage { .. })));
    s.others_carry_on();
}

#[test]
fn runt_first_slot_gets_an_error_response() {
    let mut s = scene(Config::default());
    let r = s.req(10, 0, 0, 7);
    s.push(&[r]);
    let st = s.nb.vif_stats(s.h.id()).unwrap();
    assert!(st.fatal.is_none());
    assert_eq!(st.tx_runt, 1);
    s.h.reap_tx();
    assert_eq!(s.h.tx_responses.len(), 1);
    assert_eq!(s.h.tx_responses[0].id, 7);
    assert_eq!(s.h.tx_responses[0].status, NETIF_RSP_ERROR);
    s.others_carry_on();
}

fn extra_case(type_: u8, u: [u8; 6]) -> Option<Fatal> {
    let mut s = scene(Config::default());
    let r = s.req(100, NETTXF_EXTRA_INFO, 0, 1);
    s.h.tx.put_request(r).unwrap();
    s.h.tx
        .put_request_as(ExtraInfo { type_, flags: 0, u })
        .unwrap();
    s.h.push_tx();
    s.nb.poll().unwrap();
    let f = s.fatal();
    s.others_carry_on();
    f
}

#[test]
fn extra_type_zero_is_fatal() {
    assert!(matches!(extra_case(0, [0; 6]), Some(Fatal::BadExtra(_))));
}

#[test]
fn extra_type_at_or_above_max_is_fatal() {
    assert!(matches!(
        extra_case(XEN_NETIF_EXTRA_TYPE_MAX, [0; 6]),
        Some(Fatal::BadExtra(_))
    ));
}

#[test]
fn gso_size_zero_is_fatal() {
    assert!(matches!(
        extra_case(
            XEN_NETIF_EXTRA_TYPE_GSO,
            [0, 0, XEN_NETIF_GSO_TYPE_TCPV4, 0, 0, 0]
        ),
        Some(Fatal::BadExtra(_))
    ));
}

#[test]
fn unknown_gso_type_is_fatal() {
    assert!(matches!(
        extra_case(XEN_NETIF_EXTRA_TYPE_GSO, [0xdc, 0x05, 9, 0, 0, 0]),
        Some(Fatal::BadExtra(_))
    ));
}

#[test]
fn valid_gso_extra_is_answered_with_null() {
    let mut s = scene(Config::default());
    let r = s.req(100, NETTXF_EXTRA_INFO, 0, 1);
    s.h.tx.put_request(r).unwrap();
    s.h.tx
        .put_request_as(ExtraInfo {
            type_: XEN_NETIF_EXTRA_TYPE_GSO,
            flags: 0,
            u: [0xdc, 0x05, XEN_NETIF_GSO_TYPE_TCPV4, 0, 0, 0],
        })
        .unwrap();
    s.h.push_tx();
    s.nb.poll().unwrap();
    assert!(s.fatal().is_none());
    s.h.reap_tx();
    let st: Vec<i16> = s.h.tx_responses.iter().map(|r| r.status).collect();
    assert_eq!(st, [NETIF_RSP_OKAY, NETIF_RSP_NULL]);
}

#[test]
fn chain_running_past_the_pushed_requests_is_fatal() {
    let mut s = scene(Config::default());
    let r = s.req(2000, NETTXF_MORE_DATA, 0, 1);
    s.push(&[r]);
    assert!(matches!(s.fatal(), Some(Fatal::TruncatedPacket { .. })));
    s.others_carry_on();
}

#[test]
fn bad_grant_ref_drops_the_packet_not_the_vif() {
    let mut s = scene(Config::default());
    let r = TxRequest {
        gref: 60_000,
        offset: 0,
        flags: 0,
        id: 3,
        size: 100,
    };
    s.push(&[r]);
    let st = s.nb.vif_stats(s.h.id()).unwrap();
    assert!(st.fatal.is_none());
    assert_eq!(st.tx_copy_errors, 1);
    s.h.reap_tx();
    assert_eq!(s.h.tx_responses[0].status, NETIF_RSP_ERROR);
    s.others_carry_on();
}

#[test]
fn rx_buffer_with_bad_grant_gets_an_error_response() {
    let mut s = scene(Config::default());
    // The hostile guest posts an rx buffer with a grant reference it never made.
    s.h.rx
        .put_request(netif_ring::netif::RxRequest {
            id: 5,
            pad: 0,
            gref: 59_999,
        })
        .unwrap();
    assert!(s.h.rx.push_requests_and_check_notify());
    // Broadcast so the switch floods to the hostile vif too.
    s.a.send(&broadcast(1, 300, 1));
    s.nb.poll().unwrap();
    let rsp = s.h.rx.next_response().unwrap().unwrap();
    assert_eq!(rsp.id, 5, "the patched response keeps its id");
    assert_eq!(rsp.status, NETIF_RSP_ERROR);
    assert_eq!(s.nb.vif_stats(s.h.id()).unwrap().rx_copy_errors, 1);
    assert!(s.fatal().is_none());
}

#[test]
fn rx_queue_is_capped_in_bytes_and_drained_when_the_guest_stalls() {
    let cfg = Config {
        rx_queue_bytes: 70_000,
        rx_drain_timeout: Duration::from_millis(50),
        ..Config::default()
    };
    let mut s = scene(cfg);
    // Time is the test's: the flood happens at one instant, however slow the machine.
    let t = std::time::Instant::now();
    // The hostile guest posts no rx buffers; the good guest floods it with broadcasts of one
    // 9014-byte frame each (several slots, the XSA-392 shape).
    for i in 0..20 {
        s.a.send(&broadcast(1, 9014, i));
        s.nb.poll_at(t).unwrap();
        s.a.reap_tx();
    }
    let st = s.nb.vif_stats(s.h.id()).unwrap();
    assert_eq!(
        st.rx_queue_full,
        20 - 7,
        "70 000 bytes hold 7 frames of 9014"
    );
    let later = t + Duration::from_millis(60);
    s.nb.poll_at(later).unwrap();
    s.nb.poll_at(later).unwrap();
    let st = s.nb.vif_stats(s.h.id()).unwrap();
    // 7 jumbo frames plus the 60-byte hello b flooded before it was learned.
    assert_eq!(
        st.rx_expired, 8,
        "frames older than the drain timeout are dropped"
    );
    assert!(st.fatal.is_none());
    // b posted 32 buffers: each 9014-byte frame takes 3, so b got 10 and queued the rest.
    assert!(s.b.recv().len() >= 10);
}

/// Runs the backend for `run` while another thread notifies from the hostile guest as fast as
/// it can; returns the notifies sent and the hostile vif's counters.
fn storm(cfg: Config, run: Duration) -> (u64, netback::VifStats, Scene) {
    let mut s = scene(cfg);
    let (ev, port) = (&s.h.evtchn, s.h.port);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let sent = std::thread::scope(|t| {
        let notifier = t.spawn(|| {
            let mut n = 0u64;
            // Relaxed: a stop flag; the scope's join orders the rest.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ev.notify(port).unwrap();
                n += 1;
                if n.is_multiple_of(64) {
                    std::thread::yield_now();
                }
            }
            n
        });
        let end = std::time::Instant::now() + run;
        s.nb.run_until(|| std::time::Instant::now() >= end).unwrap();
        // Relaxed: as above.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        notifier.join().unwrap()
    });
    let st = s.nb.vif_stats(s.h.id()).unwrap();
    (sent, st, s)
}

#[test]
fn an_event_storm_is_throttled_by_the_late_eoi() {
    // Without the throttle, every notify that arrives unmasked buys a pass; with it, the port
    // stays masked for a growing delay once events keep finding no work (XSA-332's lateeoi).
    let run = Duration::from_millis(300);
    let (sent_off, off, _) = storm(
        Config {
            max_eoi_delay: Duration::ZERO,
            ..Config::default()
        },
        run,
    );
    let (sent_on, on, mut s) = storm(Config::default(), run);
    assert!(
        sent_off > 1000 && sent_on > 1000,
        "the storm ran: {sent_off} / {sent_on} notifies"
    );
    assert!(on.eoi_delayed > 0, "{on:?}");
    eprintln!(
        "storm: {sent_off} notifies -> {} passes unthrottled; {sent_on} -> {} throttled",
        off.spurious_events, on.spurious_events
    );
    assert!(
        on.spurious_events * 5 < off.spurious_events,
        "throttled {} passes vs {} unthrottled",
        on.spurious_events,
        off.spurious_events
    );
    assert!(on.fatal.is_none());
    assert_eq!(s.nb.vif_stats(s.a.id()).unwrap().spurious_events, 0);
    // The neighbours carry on, and a real event on the hostile vif is still served.
    s.others_carry_on();
    let _ = (&s.xen, &s.dom0);
}
