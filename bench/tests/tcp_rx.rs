//! The experiment end to end over the direct link, kept short for debug builds. Runs share
//! xenoprof's process-wide mode, so they take a lock.

use std::sync::Mutex;
use std::time::Duration;

use bench::Error;
use bench::link::direct::DirectLink;
use bench::link::splitnet::SplitnetLink;
use bench::link::{DOM0, GUEST_DOMID, LinkConfig, Offload, REMOTE_DOMID, RxMode};
use bench::report::{REQUIRED_CLASSES, REQUIRED_KEYS, StepResult, render_step, run_step};
use bench::tcp_rx::{ProfileMode, RunConfig};

static RUN: Mutex<()> = Mutex::new(());

fn cfg(mtu: usize, profile: ProfileMode) -> RunConfig {
    RunConfig {
        link: LinkConfig {
            mtu,
            mode: RxMode::Copy,
            batch: 64,
            offload: Offload::Gso,
            dom0: DOM0,
            guest: GUEST_DOMID,
            remote: REMOTE_DOMID,
            placement: Default::default(),
        },
        warmup: Duration::from_millis(100),
        measure: Duration::from_millis(300),
        profile,
        sample_hz: 1000,
        verify: true,
        progress: false,
    }
}

fn run(c: &RunConfig) -> StepResult {
    let _g = RUN.lock().unwrap_or_else(|e| e.into_inner());
    run_step("test", &mut DirectLink::new(), c).expect("a run over the direct link")
}

#[test]
fn direct_link_carries_the_stream_intact_and_the_json_has_the_required_keys() {
    // `verify` makes the receiver check every byte against the counting pattern: a lost,
    // reordered or corrupted byte fails the run with Error::Corrupt.
    let r = run(&cfg(1500, ProfileMode::Exact));
    assert!(r.bytes > 0 && r.packets > 0, "no data measured: {r:?}");
    // Every full-sized data frame carries at most MSS = 1460 bytes (1448 with timestamps).
    assert!(
        r.bytes <= r.packets * 1460,
        "more bytes than frames can carry"
    );
    assert_eq!(r.link, "direct");
    assert_eq!(r.link_stats.dropped, 0);
    assert_eq!(r.profile.work.get("packets"), Some(&r.packets));
    // The guest and the remote host did TCP work that exact mode counted.
    let guest = &r.cycles_per_packet_by_domain["guest"];
    assert!(guest["tcp"] > 0.0, "{guest:?}");
    assert!(r.cycles_per_packet_by_domain["remote"]["tcp"] > 0.0);
    // No driver domain on this link: dom0's figures are all zero, but present.
    assert!(r.cycles_per_packet.values().all(|v| *v == Some(0.0)));
    let guest_cpu = r
        .cpu
        .iter()
        .find(|c| c.domid == GUEST_DOMID)
        .expect("guest CPU");
    assert_eq!(guest_cpu.vcpus, 1);
    assert!(guest_cpu.cpu_seconds > 0.0);

    let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    for key in REQUIRED_KEYS {
        assert!(v.get(*key).is_some(), "JSON lacks {key}");
    }
    for class in REQUIRED_CLASSES {
        assert!(v["cycles_per_packet"][*class].is_number(), "{class}");
    }
    assert_eq!(v["mode"], "copy");
    assert_eq!(v["mtu"], 1500);
    // The profile inside parses back as a xenoprof profile.
    let p = xenoprof_report::Profile::from_json(&v["profile"].to_string()).unwrap();
    assert!(p.domain(GUEST_DOMID).is_some());

    let text = render_step(&r);
    assert!(
        text.contains("Gb/s") && text.contains("code profile for dom1"),
        "{text}"
    );
}

#[test]
fn jumbo_frames_carry_more_than_a_standard_mss() {
    let r = run(&cfg(9000, ProfileMode::Off));
    assert!(r.packets > 0);
    // With a 9000-byte MTU the data frames must carry more than 1500-byte frames could.
    assert!(
        r.bytes > r.packets * 1500,
        "{} bytes in {} frames: jumbo MTU not used",
        r.bytes,
        r.packets
    );
    assert!(
        r.cycles_per_packet.values().all(Option::is_none),
        "unprofiled runs must not claim cycle figures"
    );
}

#[test]
fn sampled_mode_counts_samples_not_cycles() {
    let r = run(&cfg(65000, ProfileMode::Sampled));
    assert!(r.bytes > r.packets * 9000, "65000 MTU not used");
    assert_eq!(r.split.metric, "samples");
    assert!(r.profile.ticks > 0, "the sampler never ticked");
}

fn splitnet(mode: RxMode, batch: usize) -> StepResult {
    let mut c = cfg(1500, ProfileMode::Exact);
    c.link.mode = mode;
    c.link.batch = batch;
    let _g = RUN.lock().unwrap_or_else(|e| e.into_inner());
    run_step("test", &mut SplitnetLink::new(), &c).expect("a run over the splitnet link")
}

#[test]
fn splitnet_link_carries_the_stream_intact_through_netback() {
    // `verify` checks every byte; the driver domain's classes must show the path it took.
    let r = splitnet(RxMode::Copy, 64);
    assert_eq!(r.link, "splitnet");
    assert!(r.bytes > 0 && r.packets > 0, "no data measured: {r:?}");
    let c = &r.cycles_per_packet;
    let get = |k: &str| c.get(k).copied().flatten().unwrap_or(0.0);
    assert!(get("grant_table") > 0.0, "copy mode grant-copies: {c:?}");
    assert!(
        get("bridge") > 0.0,
        "every frame crosses bridge-lite: {c:?}"
    );
    assert!(get("netback") > 0.0, "{c:?}");
    assert_eq!(get("mm"), 0.0, "copy mode never remaps: {c:?}");
}

#[test]
fn a_split_placement_runs_intact_and_is_recorded_with_the_cross_cpu_probe() {
    use bench::placement::{Pin, Placement};
    let plan = Placement::plan(Pin::Split).expect("the CPUs this process may use");
    let mut c = cfg(1500, ProfileMode::Exact);
    c.link.placement = plan;
    let r = {
        let _g = RUN.lock().unwrap_or_else(|e| e.into_inner());
        run_step("test", &mut SplitnetLink::new(), &c).expect("a pinned run")
    };
    assert!(r.bytes > 0, "no data measured: {r:?}");
    assert_eq!(r.placement, Some(plan));
    if let (Some(d), Some(rem)) = (plan.dom0, plan.remote) {
        let probe = r.cross_cpu.as_ref().expect("two CPUs: the probe ran");
        assert_eq!(probe.cpus, (d, rem));
    }
    let v = serde_json::to_value(&r).unwrap();
    assert!(v.get("placement").is_some() && v.get("cross_cpu").is_some());
}

#[test]
fn splitnet_flip_mode_pays_in_mm() {
    let r = splitnet(RxMode::Flip, 1);
    assert!(r.bytes > 0 && r.packets > 0, "no data measured: {r:?}");
    let mm = r
        .cycles_per_packet
        .get("mm")
        .copied()
        .flatten()
        .unwrap_or(0.0);
    assert!(mm > 0.0, "a page flip remaps: {:?}", r.cycles_per_packet);
}

#[test]
fn a_run_with_no_measured_time_is_refused() {
    let mut c = cfg(1500, ProfileMode::Off);
    c.measure = Duration::ZERO;
    let _g = RUN.lock().unwrap_or_else(|e| e.into_inner());
    assert!(matches!(
        run_step("t", &mut DirectLink::new(), &c),
        Err(Error::Config(_))
    ));
}
