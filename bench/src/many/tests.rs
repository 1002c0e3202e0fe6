use std::collections::BTreeSet;

use super::*;

#[track_caller]
fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn jain_is_one_when_equal_and_one_over_n_when_one_takes_all() {
    close(jain(&[2.0, 2.0, 2.0, 2.0]), 1.0);
    close(jain(&[5.0, 0.0, 0.0, 0.0]), 0.25);
    // (1 + 2 + 3)^2 / (3 * (1 + 4 + 9)) = 36 / 42
    close(jain(&[1.0, 2.0, 3.0]), 36.0 / 42.0);
    // Scale does not matter.
    close(jain(&[10.0, 20.0, 30.0]), jain(&[1.0, 2.0, 3.0]));
    close(jain(&[7.0]), 1.0);
    // Nothing to judge.
    close(jain(&[]), 0.0);
    close(jain(&[0.0, 0.0]), 0.0);
}

#[test]
fn median_of_odd_and_even_counts() {
    close(median(&[3.0, 1.0, 2.0]), 2.0);
    close(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    close(median(&[]), 0.0);
}

#[test]
fn vm_rss_is_read_from_a_status_text() {
    let status = "Name:\tbench\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
    assert_eq!(parse_vm_rss_kib(status), Some(12345));
    assert_eq!(parse_vm_rss_kib("VmRSS: 12 MB\n"), None);
    assert_eq!(parse_vm_rss_kib("Name: x\n"), None);
    // And this process has one.
    assert!(vm_rss_kib().unwrap() > 0);
}

#[test]
fn guests_get_distinct_addresses_in_one_subnet() {
    assert_eq!(guest_ip(0), [10, 0, 0, 2]);
    assert_eq!(guest_mac(0), [2, 0, 0, 0, 0, 2]);
    assert_eq!(guest_ip(254), [10, 0, 1, 0]);
    let ips: BTreeSet<[u8; 4]> = (0..256).map(guest_ip).collect();
    let macs: BTreeSet<[u8; 6]> = (0..256).map(guest_mac).collect();
    assert_eq!((ips.len(), macs.len()), (256, 256));
    assert!(!ips.contains(&REMOTE_IP) && !macs.contains(&REMOTE_MAC));
    // The remote host listens on one port per guest; each guest opens its stream to its own.
    let r = remote_host(3);
    assert_eq!(r.streams.len(), 3);
    assert!(r.streams.iter().all(|s| !s.opens && s.role == Role::Sender));
    let ports: BTreeSet<u16> = r.streams.iter().map(|s| s.port).collect();
    assert_eq!(ports.len(), 3);
    let g = guest_host(2, false);
    assert!(g.streams[0].opens && g.streams[0].peer == REMOTE_IP);
    assert_eq!(g.streams[0].port, r.streams[2].port);
}

fn figures(n: usize, cpp: f64, backend_kib: f64, peak: u64) -> RunFigures {
    let per_vif_gbps = vec![1.0; n];
    let cpu = GroupCpu {
        vcpus: 1,
        cpu_seconds: 1.0,
        cores: 0.5,
        runqueue_wait_seconds: 0.1,
        cycles_per_packet: 100.0,
    };
    RunFigures {
        vifs: n,
        seconds: 2.0,
        total_gbps: n as f64,
        jain: jain(&per_vif_gbps),
        per_vif_gbps,
        packets: 1000,
        guest_frames: 1000,
        cycles_per_packet: cpp,
        cycles_per_packet_by_class: [("netback".to_string(), cpp)].into(),
        cpu_cycles_per_packet: cpp,
        wait_cycles_per_packet: 10.0,
        dom0: cpu.clone(),
        guests: cpu.clone(),
        remote: cpu,
        notifies_per_packet: 0.01,
        grant_ops_per_hypercall: 20.0,
        memory: Memory {
            rss_before_kib: 1000,
            rss_streaming_kib: 2000,
            rss_per_vif_kib: 1000.0 / n as f64,
            pool_pages_before: 0,
            pool_pages_streaming: 100,
            ring_pages: 2 * n,
            heap_connected_bytes: Some(1024),
            heap_growth_bytes: Some(4096),
            backend_per_vif_kib: backend_kib,
        },
        queues: Queues {
            peak_bytes_max: peak,
            peak_bytes_median: peak as f64 / 2.0,
            peak_pages_max: 10,
            peak_pages_median: 5.0,
            cap_bytes: 512 * 1024,
            share_pages: 126,
            bounded: peak <= 512 * 1024,
        },
        per_vif: Vec::new(),
        drops: Drops::default(),
        cross_cpu: None,
    }
}

fn config() -> Config {
    Config {
        vifs: 4,
        mtu: 1500,
        batch: 64,
        warmup: Duration::from_millis(1),
        measure: Duration::from_millis(1),
        verify: false,
        progress: false,
        heap: None,
    }
}

#[test]
fn the_json_has_the_required_keys_and_round_trips() {
    let r = ManyResult::new(
        &config(),
        figures(1, 1000.0, 900.0, 1000),
        figures(4, 1100.0, 300.0, 2000),
    );
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    for k in REQUIRED_KEYS {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    assert_eq!(v["vifs"], 4);
    assert_eq!(v["per_vif_gbps"].as_array().map(Vec::len), Some(4));
    assert_eq!(v["cycles_per_packet"], 1100.0);
    assert_eq!(v["cycles_per_packet_one_vif"], 1000.0);
    assert_eq!(v["memory_per_vif_kib"], 300.0);
    assert_eq!(v["memory_per_vif_kib_rss"], 250.0);
    assert!(
        v["memory_target_basis"]
            .as_str()
            .unwrap()
            .contains("backend")
    );
    assert!(v["many"]["queues"]["peak_bytes_max"].is_u64());
    let back: ManyResult = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn targets_are_checked_against_the_scaled_run() {
    let ok = ManyResult::new(
        &config(),
        figures(1, 1000.0, 9000.0, 600 * 1024),
        figures(4, 1190.0, 599.0, 1000),
    );
    let c = &ok.checks;
    assert!(c.jain.met && c.cycles_per_packet.met && c.memory_per_vif.met);
    assert!(c.cpu_cycles_per_packet.met);
    assert!(c.queues_bounded.met);
    close(c.cycles_per_packet.value, 1.19);
    let bad = ManyResult::new(
        &config(),
        figures(1, 1000.0, 10.0, 0),
        figures(4, 790.0, 601.0, 600 * 1024),
    );
    let c = &bad.checks;
    assert!(!c.cycles_per_packet.met, "0.79x is outside ±20%");
    assert!(!c.memory_per_vif.met && !c.queues_bounded.met);
    let text = render(&bad);
    assert!(
        text.contains("MISSED") && text.contains("NOT BOUNDED"),
        "{text}"
    );
    assert!(text.contains("netback"), "classes listed: {text}");
}

#[test]
fn a_run_whose_cpus_moved_is_flagged_in_the_report() {
    use crate::placement::CrossCpu;
    let probe = |during: Vec<f64>| CrossCpu {
        cpus: (0, 1),
        before_ns: Some(64.0),
        during_ns: during,
        after_ns: Some(65.0),
    };
    let mut one = figures(1, 1000.0, 900.0, 1000);
    let mut many = figures(4, 1100.0, 300.0, 2000);
    one.cross_cpu = Some(probe(vec![63.0, 64.0]));
    many.cross_cpu = Some(probe(vec![64.0, 318.0]));
    let text = render(&ManyResult::new(&config(), one.clone(), many));
    assert!(
        text.contains("cross-CPU round trip, 1 vif: CPU 0 <-> 1: 64 ns before"),
        "{text}"
    );
    assert_eq!(text.matches("MOVED during the run").count(), 1, "{text}");
    let steady = figures(4, 1100.0, 300.0, 2000);
    let text = render(&ManyResult::new(&config(), one, steady));
    assert!(!text.contains("MOVED"), "{text}");
}
