//! `bench many` end to end, small: four guests on one backend beside one, every byte checked.
//! No throughput thresholds (the machine is shared): only that every guest received data and
//! the JSON carries what scripts read.

use std::process::Command;

use bench::many::REQUIRED_KEYS;

#[test]
fn four_vifs_each_receive_and_the_json_has_the_required_keys() {
    let dir = std::env::temp_dir().join(format!("bench-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("many.json");
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["many", "--vifs", "4", "--seconds", "0.5", "--warmup", "0.2"])
        .args(["--verify", "--quiet", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("many: 4 vifs on one backend"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    for k in REQUIRED_KEYS {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["vifs"], 4);
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    // Every guest read stream bytes in the window, and netback delivered frames to each.
    let gbps = v["per_vif_gbps"].as_array().unwrap();
    assert_eq!(gbps.len(), 4);
    assert!(gbps.iter().all(|g| g.as_f64().unwrap() > 0.0), "{gbps:?}");
    let vifs = v["many"]["per_vif"].as_array().unwrap();
    assert_eq!(vifs.len(), 4);
    assert!(vifs.iter().all(|x| x["rx_packets"].as_u64().unwrap() > 0));
    assert_eq!(v["one_vif"]["per_vif_gbps"].as_array().unwrap().len(), 1);
    let jain = v["jain"].as_f64().unwrap();
    assert!(jain > 0.0 && jain <= 1.0 + 1e-9, "{jain}");
    for k in ["cycles_per_packet", "cycles_per_packet_one_vif"] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}");
    }
    // The binary counts dom0's heap: the backend's growth is measured, not left out.
    assert!(v["many"]["memory"]["heap_growth_bytes"].is_i64());
    assert!(v["memory_per_vif_kib"].as_f64().unwrap() > 0.0);
    assert!(v["memory_per_vif_kib_rss"].is_number());
    // Queue marks stay within netback's cap.
    let q = &v["many"]["queues"];
    assert!(q["peak_bytes_max"].as_u64().unwrap() <= q["cap_bytes"].as_u64().unwrap());
}
