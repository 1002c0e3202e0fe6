//! The command line: the smoke runs CI relies on (tcp-rx and the ladder), and refusals.

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bench"))
}

#[test]
fn smoke_run_writes_json_that_parses() {
    let dir = std::env::temp_dir().join(format!("bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("r.json"), dir.join("r.svg"));
    let out = bench()
        .args([
            "tcp-rx",
            "--link",
            "direct",
            "--seconds",
            "0.3",
            "--warmup",
            "0.1",
        ])
        .args(["--mtu", "1500", "--verify", "--quiet", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tcp-rx over the direct link"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["throughput_gbps"].as_f64().unwrap() > 0.0);
    assert!(v["cycles_per_packet"]["grant_table"].is_number());
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.contains("<svg") && chart.contains(">\nguest\n</text>"));
    // The saved JSON re-renders: text report and chart.
    let svg2 = dir.join("again.svg");
    let out = bench()
        .arg("report")
        .arg(&json)
        .arg("--svg")
        .arg(&svg2)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tcp-rx over the direct link"));
    assert!(std::fs::read_to_string(&svg2).unwrap().contains("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ladder_smoke_run_writes_five_steps_and_a_chart() {
    let dir = std::env::temp_dir().join(format!("bench-ladder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("l.json"), dir.join("l.svg"));
    let out = bench()
        .args(["ladder", "--seconds", "0.5", "--quiet", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let steps = v
        .as_array()
        .expect("the ladder's JSON is an array of steps");
    assert_eq!(steps.len(), 5);
    let modes: Vec<_> = steps.iter().map(|s| s["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["flip", "copy", "copy", "copy", "copy"]);
    let batches: Vec<_> = steps.iter().map(|s| s["batch"].as_u64().unwrap()).collect();
    assert_eq!(batches, [1, 1, 64, 64, 64]);
    let offloads: Vec<_> = steps
        .iter()
        .map(|s| s["offload"].as_str().unwrap())
        .collect();
    assert_eq!(offloads, ["none", "none", "none", "csum", "gso"]);
    for s in steps {
        assert_eq!(s["link"], "splitnet");
        // Something crossed the link in each window (a debug build's guest can spend a short
        // window inside one stack poll, so either end's count will do).
        let moved = s["packets"].as_u64().unwrap() + s["wire_packets"].as_u64().unwrap();
        assert!(moved > 0, "{s}");
        assert!(s["cycles_per_packet"]["mm"].is_number());
    }
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let out = bench().args(["tcp-rx", "--mtu", "100"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("576..=65535"));
}

#[test]
fn probe_prints_the_cross_cpu_round_trip_or_says_why_not() {
    let probe = || {
        let out = bench().args(["probe", "--ns"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.trim().parse::<f64>().expect("a number of ns, or nan")
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // nan: one usable CPU, or a probe thread not scheduled within the probe's second while
    // other tests load the machine; with two CPUs one of three tries must answer.
    let answers: Vec<f64> = (0..3).map(|_| probe()).collect();
    if cpus >= 2 {
        let v = answers.iter().copied().find(|v| !v.is_nan());
        let v = v.unwrap_or_else(|| panic!("no probe answered: {answers:?}"));
        assert!(v > 0.0 && v < 1e9, "{v}");
    } else {
        assert!(answers.iter().all(|v| v.is_nan()), "{answers:?}");
    }
    let out = bench().arg("probe").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("cross-CPU round trip"), "{text}");
}
