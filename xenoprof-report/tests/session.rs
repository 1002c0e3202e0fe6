//! Session, sampler, report, diff and JSON tests: deterministic (manual clock, hand-ticked
//! sampler, barriers between the vCPU threads and the test).
//!
//! Isolation: the profiling mode is process-wide and cargo runs these tests on parallel threads.
//! Every test here sets `Mode::Exact` (which also publishes sampler tags) and never another mode;
//! tests of `Off` and `Sampled` live in `tests/modes.rs`, a separate process. Every test uses
//! its own domids and a session whose other domains are unmonitored, so vCPUs of concurrent
//! tests never reach its figures (they only show up in `discarded_samples` under their own
//! domids, which no test asserts on except for its own domids).

use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

use xenoprof::{
    Class, ClockSource, Context, DomId, ManualClock, Mode, blocked, flush, hypercall,
    register_vcpu_with_clock, scope, set_context, set_mode,
};
use xenoprof_report::report::{domain_table, split};
use xenoprof_report::{Metric, Profile, Role, Session, Work, diff};

/// A vCPU thread driven step by step: it runs `body`, which calls `sync()` after each state it
/// wants sampled; the test side calls `Vcpu::step` to wait for that state, sample, and release.
struct Vcpu {
    barrier: Arc<Barrier>,
    handle: Option<JoinHandle<()>>,
}

impl Vcpu {
    fn spawn(domid: DomId, body: impl FnOnce(&dyn Fn(), &ManualClock) + Send + 'static) -> Vcpu {
        let barrier = Arc::new(Barrier::new(2));
        let b = barrier.clone();
        let handle = std::thread::spawn(move || {
            let c = ManualClock::new();
            register_vcpu_with_clock(domid, Context::Kernel, ClockSource::Manual(c.clone()));
            b.wait(); // registered
            b.wait();
            let sync = || {
                b.wait(); // state reached
                b.wait(); // test has sampled
            };
            body(&sync, &c);
        });
        barrier.wait();
        barrier.wait();
        Vcpu {
            barrier,
            handle: Some(handle),
        }
    }

    /// Waits until the vCPU reached its next `sync()`, runs `f`, then lets it go on.
    fn step(&self, f: impl FnOnce()) {
        self.barrier.wait();
        f();
        self.barrier.wait();
    }

    fn join(mut self) {
        if let Some(h) = self.handle.take() {
            h.join().expect("vCPU thread panicked");
        }
    }
}

fn ticks(s: &Session, n: u64) {
    for _ in 0..n {
        s.tick();
    }
}

fn started(initiator: DomId, active: &[DomId], passive: &[DomId]) -> Session {
    set_mode(Mode::Exact);
    let mut s = Session::builder(initiator)
        .active(active)
        .passive(passive)
        .others(Role::Unmonitored)
        .build();
    s.start().expect("start");
    s
}

fn row<'a>(
    p: &'a Profile,
    d: DomId,
    ctx: Context,
    class: Option<&str>,
) -> Option<&'a xenoprof_report::Row> {
    p.domain(d)?
        .rows
        .iter()
        .find(|r| r.context == ctx && r.class.as_deref() == class)
}

fn samples(p: &Profile, d: DomId, ctx: Context, class: &str) -> u64 {
    row(p, d, ctx, Some(class)).map_or(0, |r| r.samples)
}

fn cycles(p: &Profile, d: DomId, ctx: Context, class: &str) -> u64 {
    row(p, d, ctx, Some(class)).map_or(0, |r| r.cycles)
}

#[test]
fn nested_scopes_are_sampled_and_charged_to_the_inner_class() {
    let s = started(100, &[], &[]);
    let v = Vcpu::spawn(100, |sync, clock| {
        let _a = scope(Class::NETBACK);
        clock.advance(30);
        sync();
        {
            let _b = scope(Class::BRIDGE);
            clock.advance(20);
            sync();
        }
        clock.advance(5);
        sync();
    });
    v.step(|| ticks(&s, 3));
    v.step(|| ticks(&s, 2));
    v.step(|| ticks(&s, 4));
    v.join(); // the scopes close (and charge their last cycles) as the vCPU finishes
    let p = s.snapshot();
    assert_eq!(samples(&p, 100, Context::Kernel, "netback"), 3 + 4);
    assert_eq!(samples(&p, 100, Context::Kernel, "bridge"), 2);
    assert_eq!(cycles(&p, 100, Context::Kernel, "netback"), 30 + 5);
    assert_eq!(cycles(&p, 100, Context::Kernel, "bridge"), 20);
    assert_eq!(
        row(&p, 100, Context::Kernel, Some("bridge")).map(|r| r.calls),
        Some(1)
    );
}

#[test]
fn context_switches_split_samples_and_cycles() {
    let s = started(110, &[], &[]);
    let v = Vcpu::spawn(110, |sync, clock| {
        set_context(Context::User);
        clock.advance(7);
        sync();
        set_context(Context::Kernel);
        let _n = scope(Class::NETFRONT);
        clock.advance(11);
        sync();
        {
            let _h = hypercall(Class::GRANT_TABLE);
            clock.advance(13);
            sync();
            let _m = scope(Class::MM);
            clock.advance(17);
            sync();
        }
        clock.advance(19);
        sync();
    });
    v.step(|| ticks(&s, 1));
    v.step(|| ticks(&s, 2));
    v.step(|| ticks(&s, 3));
    v.step(|| ticks(&s, 4));
    v.step(|| ticks(&s, 5));
    v.join();
    let p = s.snapshot();
    assert_eq!(samples(&p, 110, Context::User, "other"), 1);
    assert_eq!(samples(&p, 110, Context::Kernel, "netfront"), 2 + 5);
    assert_eq!(samples(&p, 110, Context::Xen, "grant_table"), 3);
    assert_eq!(samples(&p, 110, Context::Xen, "mm"), 4);
    assert_eq!(cycles(&p, 110, Context::User, "other"), 7);
    assert_eq!(cycles(&p, 110, Context::Kernel, "netfront"), 11 + 19);
    assert_eq!(cycles(&p, 110, Context::Xen, "grant_table"), 13);
    assert_eq!(cycles(&p, 110, Context::Xen, "mm"), 17);
    assert_eq!(cycles(&p, 110, Context::Kernel, "grant_table"), 0);
    let sp = split(&p, Metric::Samples);
    let total = (1 + 2 + 5 + 3 + 4) as f64;
    assert!((sp.user - 100.0 / total).abs() < 1e-9);
    assert!((sp.xen - 700.0 / total).abs() < 1e-9);
}

#[test]
fn roles_active_passive_unmonitored() {
    let s = started(120, &[121], &[122]);
    let work = |sync: &dyn Fn(), clock: &ManualClock| {
        let _b = scope(Class::BRIDGE);
        {
            let _g = hypercall(Class::GRANT_TABLE);
            clock.advance(40);
        }
        clock.advance(60);
        sync();
    };
    let vs: Vec<Vcpu> = [121, 122, 123].map(|d| Vcpu::spawn(d, work)).into();
    // Take all three steps together: each vCPU is parked at its sync point while we tick.
    for v in &vs {
        v.barrier.wait();
    }
    ticks(&s, 6);
    for v in &vs {
        v.barrier.wait();
    }
    for v in vs {
        v.join();
    }
    let p = s.snapshot();
    // Active: class detail.
    assert_eq!(p.domain(121).map(|d| d.role), Some(Role::Active));
    assert_eq!(samples(&p, 121, Context::Kernel, "bridge"), 6);
    assert_eq!(cycles(&p, 121, Context::Xen, "grant_table"), 40);
    assert_eq!(cycles(&p, 121, Context::Kernel, "bridge"), 60);
    // Passive: only the context split, no class names.
    let d = p.domain(122).expect("passive domain present");
    assert_eq!(d.role, Role::Passive);
    assert!(d.rows.iter().all(|r| r.class.is_none()));
    assert_eq!(
        row(&p, 122, Context::Kernel, None).map(|r| r.samples),
        Some(6)
    );
    assert_eq!(row(&p, 122, Context::Xen, None).map(|r| r.cycles), Some(40));
    assert_eq!(
        row(&p, 122, Context::Kernel, None).map(|r| r.cycles),
        Some(60)
    );
    // Unmonitored: discarded.
    assert!(p.domain(123).is_none());
    assert_eq!(p.discarded_samples.get(&123), Some(&6));
    assert_eq!(s.role(123), Role::Unmonitored);
    // The initiator itself is reported as such.
    assert_eq!(s.role(120), Role::Initiator);
}

#[test]
fn start_stop_reset_and_snapshot_while_running() {
    set_mode(Mode::Exact);
    let mut s = Session::builder(130).build();
    let v = Vcpu::spawn(130, |sync, clock| {
        for cycles in [100, 10, 1000, 3] {
            let _t = scope(Class::TCP);
            clock.advance(cycles);
            flush(); // charge up to now, so the parked vCPU's time is visible
            sync();
        }
    });
    v.step(|| assert_eq!(s.tick(), 0, "a session that never started counts nothing"));
    v.step(|| {
        s.start().expect("start");
        ticks(&s, 2);
        assert!(s.is_running());
        let p = s.snapshot(); // while running
        assert_eq!(samples(&p, 130, Context::Kernel, "tcp"), 2);
        assert_eq!(
            cycles(&p, 130, Context::Kernel, "tcp"),
            0,
            "charged before start"
        );
        s.stop();
        assert!(!s.is_running());
    });
    v.step(|| {
        assert_eq!(s.tick(), 0, "a stopped session counts nothing");
        let p = s.snapshot();
        assert_eq!(samples(&p, 130, Context::Kernel, "tcp"), 2);
        assert_eq!(cycles(&p, 130, Context::Kernel, "tcp"), 0);
        s.reset();
        assert!(s.snapshot().domain(130).is_none_or(|d| d.rows.is_empty()));
        s.start().expect("restart");
    });
    v.step(|| {
        ticks(&s, 1);
        let p = s.snapshot();
        assert_eq!(samples(&p, 130, Context::Kernel, "tcp"), 1);
        assert_eq!(cycles(&p, 130, Context::Kernel, "tcp"), 3);
        assert_eq!(
            row(&p, 130, Context::Kernel, Some("tcp")).map(|r| r.calls),
            Some(1)
        );
    });
    v.join();
}

#[test]
fn blocked_and_exited_vcpus_are_not_sampled() {
    let s = started(140, &[], &[]);
    let v = Vcpu::spawn(140, |sync, clock| {
        let _n = scope(Class::NETBACK);
        clock.advance(9);
        {
            let _b = blocked();
            clock.advance(500); // waiting: charged to nothing
            sync();
        }
        clock.advance(1);
        flush();
        sync();
    });
    v.step(|| assert_eq!(s.tick(), 0, "blocked vCPU sampled"));
    v.step(|| assert_eq!(s.tick(), 1));
    v.join();
    assert_eq!(s.tick(), 0, "exited vCPU sampled");
    let p = s.snapshot();
    assert_eq!(cycles(&p, 140, Context::Kernel, "netback"), 9 + 1);
    assert_eq!(samples(&p, 140, Context::Kernel, "netback"), 1);
}

/// A profile with the given (context, class, samples, cycles) rows for one active domain.
fn synthetic(domid: DomId, rows: &[(Context, &str, u64, u64)]) -> Profile {
    let mut p = Profile::new("synthetic");
    p.domains.push(xenoprof_report::DomainProfile {
        domid,
        role: Role::Active,
        vcpus: 1,
        rows: rows
            .iter()
            .map(|&(context, class, samples, cycles)| xenoprof_report::Row {
                context,
                class: Some(class.to_string()),
                samples,
                cycles,
                calls: 1,
            })
            .collect(),
    });
    p
}

#[test]
fn table_columns_and_split_add_up_to_100_percent() {
    // Figures shaped like the seed's dom0 table (more classes than the top N shown).
    let rows = [
        (Context::Kernel, "netback", 15020, 1),
        (Context::Kernel, "bridge", 12670, 2),
        (Context::Kernel, "tcp", 9118, 3),
        (Context::Kernel, "copy", 6958, 4),
        (Context::Kernel, "ring", 6003, 5),
        (Context::Kernel, "other", 3367, 6),
        (Context::Xen, "mm", 11590, 7),
        (Context::Xen, "grant_table", 10967, 8),
        (Context::Xen, "find_domain", 5545, 9),
        (Context::Xen, "page_alloc", 4418, 10),
        (Context::Xen, "event_channel", 2314, 11),
        (Context::Xen, "other", 7817, 12),
        (Context::User, "other", 317, 13),
    ];
    let p = synthetic(0, &rows);
    for metric in [Metric::Samples, Metric::Cycles] {
        let t = domain_table(&p.domains[0], metric, 3);
        let input_total: u64 = rows
            .iter()
            .map(|r| if metric == Metric::Samples { r.2 } else { r.3 })
            .sum();
        assert_eq!(t.total, input_total);
        for col in [&t.kernel, &t.xen, &t.user] {
            assert!(col.rows.len() <= 3);
            assert!(
                col.rows.windows(2).all(|w| w[0].value >= w[1].value),
                "sorted"
            );
            let shown: u64 = col.rows.iter().map(|r| r.value).sum::<u64>() + col.other.value;
            assert_eq!(shown, col.total.value, "rows + other = TOTAL");
            let pct: f64 = col.rows.iter().map(|r| r.percent).sum::<f64>() + col.other.percent;
            assert!((pct - col.total.percent).abs() < 1e-9);
        }
        let sum = t.kernel.total.percent + t.xen.total.percent + t.user.total.percent;
        assert!((sum - 100.0).abs() < 1e-9, "domain columns sum to {sum}");
        let sp = split(&p, metric);
        assert!((sp.kernel + sp.xen + sp.user - 100.0).abs() < 1e-9);
    }
    let text = xenoprof_report::render(&p, Metric::Samples, 3);
    assert!(text.contains("Kernel (dom0)") && text.contains("Xen (in dom0 context)"));
    assert!(text.contains("TOTAL") && text.contains("other"));
}

#[test]
fn diff_normalises_by_work_and_reports_savings() {
    let mut before = synthetic(
        0,
        &[
            (Context::Xen, "mm", 0, 9000),
            (Context::Kernel, "bridge", 0, 3000),
        ],
    );
    let mut after = synthetic(
        0,
        &[
            (Context::Xen, "mm", 0, 2000),
            (Context::Kernel, "bridge", 0, 3300),
        ],
    );
    before.set_work("packets", 100);
    after.set_work("packets", 110);
    let d = diff(&before, &after, Metric::Cycles, &Work::recorded("packets")).expect("diff");
    let mm = d
        .rows
        .iter()
        .find(|r| r.class.as_deref() == Some("mm"))
        .expect("mm row");
    let (b, a) = (9000.0 / 100.0, 2000.0 / 110.0);
    assert!((mm.before - b).abs() < 1e-9 && (mm.after - a).abs() < 1e-9);
    assert!((mm.saved - (b - a)).abs() < 1e-9);
    assert!((mm.percent.expect("percent") - (b - a) / b * 100.0).abs() < 1e-9);
    let br = d
        .rows
        .iter()
        .find(|r| r.class.as_deref() == Some("bridge"))
        .expect("bridge row");
    assert!(
        br.saved.abs() < 1e-9,
        "same cycles per packet: nothing saved"
    );
    assert!((d.total.before - 12000.0 / 100.0).abs() < 1e-9);
    assert!((d.total.after - 5300.0 / 110.0).abs() < 1e-9);
    assert_eq!(
        d.rows[0].class.as_deref(),
        Some("mm"),
        "largest saving first"
    );
    // Explicit amounts override the recorded ones; missing work is an error, not a division by 0.
    let w = Work {
        unit: "packets".into(),
        before: Some(50),
        after: None,
    };
    let d2 = diff(&before, &after, Metric::Cycles, &w).expect("diff");
    assert!((d2.total.before - 12000.0 / 50.0).abs() < 1e-9);
    assert!(diff(&before, &after, Metric::Cycles, &Work::recorded("bytes")).is_err());
    assert!(xenoprof_report::render_diff(&d).contains("mm"));
}

#[test]
fn json_round_trip_of_a_recorded_profile() {
    let s = started(150, &[151], &[]);
    let v = Vcpu::spawn(151, |sync, clock| {
        let _g = hypercall(Class::GRANT_TABLE);
        clock.advance(77);
        flush();
        sync();
    });
    v.step(|| ticks(&s, 3));
    v.join();
    let mut p = s.snapshot();
    p.set_work("packets", 42);
    assert!(p.domain(151).is_some());
    let back = Profile::from_json(&p.to_json()).expect("parse");
    assert_eq!(back, p);
    let dir = std::env::temp_dir().join(format!("xenoprof-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let f = dir.join("p.json");
    p.write_json(&f).expect("write");
    assert_eq!(Profile::read_json(&f).expect("read"), p);
    let _ = std::fs::remove_dir_all(&dir);
    let bad = p.to_json().replacen("\"version\": 1", "\"version\": 99", 1);
    assert!(matches!(
        Profile::from_json(&bad),
        Err(xenoprof_report::Error::Version { found: 99, .. })
    ));
    assert!(Profile::from_json("{").is_err());
}

#[test]
fn check_running_skips_a_thread_sleeping_outside_blocked() {
    set_mode(Mode::Exact);
    let mut s = Session::builder(160).check_running(true).build();
    s.start().expect("start");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<u32>();
    let h = std::thread::spawn(move || {
        let c = xenoprof::register_vcpu(160, Context::Kernel);
        let _n = scope(Class::NETBACK);
        ready_tx.send(c.tid().unwrap_or(0)).expect("send");
        let _ = rx.recv(); // sleeps in the kernel, not wrapped in blocked()
    });
    let tid = ready_rx.recv().expect("ready");
    // Wait (bounded) until the kernel shows the thread asleep, then sample.
    let stat = format!("/proc/self/task/{tid}/stat");
    let asleep = (0..2000).any(|_| {
        let st = std::fs::read_to_string(&stat).unwrap_or_default();
        let state = st
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next());
        if state.is_some_and(|c| c != 'R') {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        false
    });
    if asleep {
        assert_eq!(s.tick(), 0, "a sleeping thread was sampled");
    }
    tx.send(()).expect("wake");
    h.join().expect("join");
}
