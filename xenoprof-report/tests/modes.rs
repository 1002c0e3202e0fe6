//! `Mode::Off` and `Mode::Sampled`, in their own test process: the mode is process-wide, so
//! these tests take `MODE_LOCK` for their whole body and nothing else in this binary changes it.

use std::sync::Mutex;

use xenoprof::{
    Class, ClockSource, Context, ManualClock, Mode, flush, register_vcpu_with_clock, scope,
    set_mode,
};
use xenoprof_report::{Role, Session};

static MODE_LOCK: Mutex<()> = Mutex::new(());

#[test]
fn off_mode_charges_nothing_and_samples_nothing() {
    let _l = MODE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    set_mode(Mode::Off);
    let clock = ManualClock::new();
    let c = register_vcpu_with_clock(1, Context::Kernel, ClockSource::Manual(clock.clone()));
    let mut s = Session::builder(1).others(Role::Unmonitored).build();
    s.start().expect("start");
    {
        let _b = scope(Class::BRIDGE);
        clock.advance(50);
        assert_eq!(s.tick(), 0, "Off mode: tags are stale, nothing is sampled");
    }
    flush();
    assert_eq!(c.cycles(Context::Kernel, Class::BRIDGE), 0);
    assert_eq!(c.calls(Context::Kernel, Class::BRIDGE), 0);
}

#[test]
fn sampled_mode_publishes_tags_but_counts_no_cycles() {
    let _l = MODE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    set_mode(Mode::Sampled);
    let clock = ManualClock::new();
    let c = register_vcpu_with_clock(2, Context::Kernel, ClockSource::Manual(clock.clone()));
    let mut s = Session::builder(2).others(Role::Unmonitored).build();
    s.start().expect("start");
    {
        let _b = scope(Class::BRIDGE);
        clock.advance(50);
        assert_eq!(c.current(), (Context::Kernel, Class::BRIDGE));
        assert_eq!(s.tick(), 1);
    }
    assert_eq!(c.current(), (Context::Kernel, Class::OTHER));
    flush();
    assert_eq!(c.cycles(Context::Kernel, Class::BRIDGE), 0);
    s.stop();
    let p = s.snapshot();
    let row = p.domain(2).and_then(|d| d.rows.first()).expect("a row");
    assert_eq!((row.class.as_deref(), row.samples), (Some("bridge"), 1));
    set_mode(Mode::Off);
}

#[test]
fn sampler_thread_ticks_at_its_rate() {
    // Counts only that the thread samples at all, never how many in a given time.
    let _l = MODE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    set_mode(Mode::Sampled);
    register_vcpu_with_clock(3, Context::Kernel, ClockSource::Tsc);
    let mut s = Session::builder(3).sample_hz(2000).build();
    let _b = scope(Class::COPY);
    s.start().expect("start");
    let mut waited = 0;
    while s.snapshot().ticks == 0 && waited < 5000 {
        std::thread::sleep(std::time::Duration::from_millis(1));
        waited += 1;
    }
    s.stop();
    let p = s.snapshot();
    assert!(p.ticks > 0, "the sampler thread never ticked");
    let d = p.domain(3).expect("dom3 sampled");
    assert!(d.rows.iter().all(|r| r.class.as_deref() == Some("copy")));
    set_mode(Mode::Off);
}
