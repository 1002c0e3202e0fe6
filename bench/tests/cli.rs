//! The command line: the smoke run CI relies on, and the refusals.

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
fn splitnet_link_and_ladder_refuse_until_built() {
    for args in [
        &["tcp-rx", "--link", "splitnet", "--quiet"][..],
        &["ladder", "--seconds", "0.2", "--quiet"][..],
    ] {
        let out = bench().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(
                "the splitnet link (netback + netfront) is not built yet; use --link direct"
            ),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let out = bench().args(["tcp-rx", "--mtu", "100"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("576..=65535"));
}
