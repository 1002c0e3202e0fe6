//! A guest that keeps making its backend complain cannot flood the log: a frontend that starts
//! over and over with a bad event channel is refused every time, but what the backend logs
//! about it stays within its vif's budget, and another guest's lines are not held back by it.

use std::sync::Mutex;

use hypervisor::{VifConfig, XenbusState};
use netback::Config;
use testkit::{Guest, Scene, mac_string};

/// Every line logged, with its target.
static LINES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        LINES
            .lock()
            .unwrap()
            .push((r.target().to_string(), r.args().to_string()));
    }
    fn flush(&self) {}
}

#[track_caller]
fn settle(s: &mut Scene) {
    for _ in 0..64 {
        if !s.nb.poll().expect("netback polls") {
            return;
        }
    }
    panic!("the backend never settled");
}

fn lines_about(vif: &str, what: &str) -> usize {
    LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, l)| t == "netback::guest" && l.starts_with(vif) && l.contains(what))
        .count()
}

#[test]
fn a_guest_failing_in_a_loop_is_logged_within_its_budget() {
    static CAPTURE: Capture = Capture;
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let mut s = Scene::new(Config::default());
    let cycle = |s: &mut Scene, f: &testkit::RawFront, p: &hypervisor::VifPaths| {
        let xs = f.dom.xenstore();
        let fe = &p.frontend;
        xs.write(&format!("{fe}/state"), XenbusState::Initialising.as_str())
            .unwrap();
        settle(s);
        f.publish(p);
        // After publish: the event channel is not a number, so the connect is refused.
        xs.write(&format!("{fe}/event-channel"), "junk").unwrap();
        xs.write(&format!("{fe}/state"), XenbusState::Initialised.as_str())
            .unwrap();
        settle(s);
    };
    let cfg = |m: u8| {
        let mut c = VifConfig::new(&mac_string(testkit::mac(m)));
        c.script = Some("vif-splitnet".into());
        c
    };
    let a = s.guest(Guest::mac(1));
    let pa = a.add_vif(&s.xen, &cfg(1));
    settle(&mut s);
    for _ in 0..25 {
        cycle(&mut s, &a, &pa);
    }
    assert_eq!(
        a.backend_node(&pa, "state").as_deref(),
        Some("6"),
        "refused each time"
    );
    let closed = LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| l == "vif1.0: backend InitWait -> Closed")
        .count();
    assert_eq!(closed, 25, "the guest did fail 25 times");
    let logged = lines_about("vif1.0", "cannot connect the frontend");
    assert_eq!(
        logged,
        netback::ratelimit::BURST as usize,
        "25 refusals, logged {logged} times"
    );
    // Another guest's refusal is still logged.
    let b = s.guest(Guest::mac(2));
    let pb = b.add_vif(&s.xen, &cfg(2));
    settle(&mut s);
    cycle(&mut s, &b, &pb);
    assert_eq!(lines_about("vif2.0", "cannot connect the frontend"), 1);
}
