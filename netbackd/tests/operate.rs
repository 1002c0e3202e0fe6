//! netbackd as an operator runs it, in a network namespace of the test's own: confined after
//! setup (the capability sets, no-new-privs and seccomp read back from /proc on the running
//! process, every thread), a syscall outside the allowlist killing it with SIGSYS, `netbackd
//! ctl` (list, stats, dump, close) and the Prometheus metrics against a live instance passing
//! traffic, and SIGHUP re-reading the config file. Root only: ignored by default, run with
//! `--ignored` as root (CI does); without root or the tools they fail saying what is missing.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use support::daemon::{Daemon, Netns, eventually, root_netns};
use support::peers::{answers_within, iperf3};

/// CAP_NET_ADMIN's bit in /proc's capability masks.
const NET_ADMIN: u64 = 1 << 12;

/// A scratch run directory for one test.
fn run_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("netbackd-op-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `netbackd ctl --run-dir DIR ARGS` (outside the namespace: the socket is a file).
fn ctl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netbackd"))
        .arg("ctl")
        .arg("--run-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run netbackd ctl")
}

#[track_caller]
fn ctl_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = ctl(dir, args);
    assert!(
        out.status.success(),
        "netbackd ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ctl {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Each thread's /proc status fields that confinement sets.
#[derive(Debug)]
struct TaskStatus {
    comm: String,
    uid: String,
    cap_eff: u64,
    cap_prm: u64,
    cap_bnd: u64,
    cap_inh: u64,
    no_new_privs: String,
    seccomp: String,
}

fn tasks(pid: u32) -> Vec<TaskStatus> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("its tasks") {
        let t = t.unwrap().path();
        let status = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let hex = |name: &str| u64::from_str_radix(&field(name), 16).unwrap_or(u64::MAX);
        out.push(TaskStatus {
            comm: std::fs::read_to_string(t.join("comm"))
                .unwrap_or_default()
                .trim()
                .into(),
            uid: field("Uid"),
            cap_eff: hex("CapEff"),
            cap_prm: hex("CapPrm"),
            cap_bnd: hex("CapBnd"),
            cap_inh: hex("CapInh"),
            no_new_privs: field("NoNewPrivs"),
            seccomp: field("Seccomp"),
        });
    }
    out
}

/// Waits for the log line saying netbackd confined itself, then reads every thread's status.
#[track_caller]
fn confined_tasks(d: &mut Daemon, ns: &Netns, guest: &str) -> Vec<TaskStatus> {
    assert!(
        answers_within(ns, guest, Duration::from_secs(20)),
        "the guest never answered:\n{}",
        d.kill_and_log()
    );
    tasks(d.pid())
}

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2 and iputils-ping: run as root with --ignored (CI does)"]
fn every_thread_is_confined_as_its_mode_needs() {
    let ns = root_netns("snbd-conf", &["ip", "ping"]);
    // Builtin vifs only: nothing kept, seccomp in force, no new privileges, every thread.
    let dir = run_dir("conf");
    let dir_s = dir.to_string_lossy().into_owned();
    let mut d = Daemon::start(
        &ns,
        &[
            "--guests",
            "2",
            "--guest-net",
            "10.199.50.0/24",
            "--uplink",
            "tap:sn0,addr=10.199.50.1/24",
            "--run-dir",
            &dir_s,
        ],
    );
    let ts = confined_tasks(&mut d, &ns, "10.199.50.2");
    let names: Vec<&str> = ts.iter().map(|t| t.comm.as_str()).collect();
    for want in ["netbackd", "dom0-netback", "netbackd-ctl"] {
        assert!(names.contains(&want), "no thread {want}: {names:?}");
    }
    for t in &ts {
        assert_eq!(t.seccomp, "2", "{t:?}");
        assert_eq!(t.no_new_privs, "1", "{t:?}");
        assert_eq!(
            (t.cap_eff, t.cap_prm, t.cap_bnd, t.cap_inh),
            (0, 0, 0, 0),
            "{t:?}"
        );
        assert!(t.uid.starts_with("0\t") || t.uid.starts_with("0 "), "{t:?}");
    }
    // A stop and a continue (an admin's kill -STOP/-CONT, a debugger attaching) resume its
    // sleeping calls through restart_syscall, which the filter must allow.
    d.signal(Signal::STOP);
    std::thread::sleep(Duration::from_millis(300));
    d.signal(Signal::CONT);
    assert!(
        answers_within(&ns, "10.199.50.3", Duration::from_secs(10)),
        "netbackd did not survive SIGSTOP and SIGCONT:\n{}",
        d.kill_and_log()
    );
    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("confined: no capabilities"), "{err}");
    assert!(
        !dir.join("ctl.sock").exists(),
        "the control socket was left behind"
    );

    // Host-mode guests as nobody: CAP_NET_ADMIN alone, in every set and every thread.
    ns.ip(&["link", "add", "xenbr0", "type", "bridge"]).unwrap();
    ns.ip(&["addr", "add", "10.199.51.1/24", "dev", "xenbr0"])
        .unwrap();
    ns.ip(&["link", "set", "xenbr0", "up"]).unwrap();
    let mut d = Daemon::start(
        &ns,
        &[
            "--guest-net",
            "10.199.51.0/24",
            "--guest-script",
            "vif-bridge",
            "--run-dir",
            &dir_s,
            "--user",
            "nobody",
            "--close-on-exit",
        ],
    );
    let ts = confined_tasks(&mut d, &ns, "10.199.51.2");
    for t in &ts {
        assert_eq!(t.seccomp, "2", "{t:?}");
        assert_eq!(t.no_new_privs, "1", "{t:?}");
        assert_eq!(
            (t.cap_eff, t.cap_prm, t.cap_bnd, t.cap_inh),
            (NET_ADMIN, NET_ADMIN, NET_ADMIN, 0),
            "{t:?}"
        );
        assert!(t.uid.split_whitespace().all(|u| u == "65534"), "{t:?}");
    }
    // The netdev goes at --close-on-exit: CAP_NET_ADMIN was kept for it.
    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("netdev vif1.0 removed"), "{err}");
    assert!(err.contains("running as nobody (uid 65534"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root and /dev/net/tun: run as root with --ignored (CI does)"]
fn a_syscall_outside_the_allowlist_kills_with_sigsys_and_the_log_names_it() {
    let ns = root_netns("snbd-sys", &["ip"]);
    let dir = run_dir("sys");
    let dir_s = dir.to_string_lossy().into_owned();
    let d = Daemon::start_without(
        &ns,
        &["--run-dir", &dir_s, "--debug-forbidden-syscall"],
        &["NETBACKD_SECCOMP"],
    );
    let out = d.wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(31),
        "not killed by SIGSYS ({}):\n{err}",
        out.status
    );
    assert!(err.contains("seccomp allowlist in force"), "{err}");
    assert!(
        err.contains("calling chroot(2)") && err.contains("SIGSYS"),
        "{err}"
    );
    assert!(!err.contains("chroot(2) returned"), "{err}");
    // The kernel's own record of it, where this machine lets us read the kernel log.
    if let Ok(k) = Command::new("dmesg").output()
        && k.status.success()
    {
        let k = String::from_utf8_lossy(&k.stdout);
        assert!(
            k.lines()
                .any(|l| l.contains("type=1326") && l.contains("syscall=161")),
            "no audit line for chroot in the kernel log"
        );
    }

    // --no-seccomp: the same call is merely refused (CAP_SYS_CHROOT is gone), and it serves on.
    let mut d = Daemon::start(
        &ns,
        &[
            "--run-dir",
            &dir_s,
            "--debug-forbidden-syscall",
            "--no-seccomp",
        ],
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            tasks(d.pid())
                .first()
                .is_some_and(|t| t.no_new_privs == "1")
        }),
        "{}",
        d.kill_and_log()
    );
    assert!(tasks(d.pid()).iter().all(|t| t.seccomp == "0"));
    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("NO seccomp filter") && err.contains("chroot(2) returned"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /metrics` from inside the namespace.
fn scrape(ns: &Netns, port: u16) -> String {
    ns.run(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    })
    .expect("run in the namespace")
}

/// A counter's value for the line whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<u64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2, iputils-ping and iperf3: run as root with --ignored (CI does)"]
fn ctl_and_metrics_answer_a_running_netbackd_under_traffic() {
    let ns = root_netns("snbd-ctl", &["ip", "ping", "iperf3"]);
    let dir = run_dir("ctl");
    let dir_s = dir.to_string_lossy().into_owned();
    let mut d = Daemon::start(
        &ns,
        &[
            "--guests",
            "2",
            "--guest-net",
            "10.199.52.0/24",
            "--uplink",
            "tap:sn0,addr=10.199.52.1/24",
            "--run-dir",
            &dir_s,
            "--metrics",
            "9181",
            "--default-rate",
            "125000000,100000",
        ],
    );
    for g in ["10.199.52.2", "10.199.52.3"] {
        assert!(
            answers_within(&ns, g, Duration::from_secs(20)),
            "{g}:\n{}",
            d.kill_and_log()
        );
    }
    // Root only: the directory and the socket.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ctl.sock")), 0o600);

    // ctl and a scrape while iperf3 runs: the data path keeps going and both answer.
    let busy = std::thread::scope(|s| {
        let load = s.spawn(|| iperf3(&ns, "10.199.52.2", &["-t", "3"]));
        std::thread::sleep(Duration::from_millis(800));
        let list = ctl_json(&dir, &["list", "--json"]);
        let text = scrape(&ns, 9181);
        (load.join().unwrap(), list, text)
    });
    assert!(busy.0 > 0, "iperf3 moved nothing");
    let list = busy.1.as_array().expect("a list").clone();
    assert_eq!(list.len(), 2, "{list:?}");
    let v1 = &list[0];
    assert_eq!(v1["vif"], "vif1.0");
    assert_eq!(
        (v1["domid"].as_u64(), v1["devid"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(v1["state"], "Connected");
    assert_eq!(v1["mode"], "builtin");
    assert_eq!(v1["switch"], "xenbr0");
    assert_eq!(v1["mac"], "00:16:3e:00:00:02");
    assert_eq!(v1["queues"], 1);
    assert_eq!(v1["rate"]["bytes"], 125_000_000);
    assert_eq!(v1["rate_is_default"], true);
    assert!(v1["counters"]["rx_packets"].as_u64().unwrap() > 0, "{v1}");
    assert!(busy.2.contains("# EOF"), "{}", busy.2);

    // The text forms.
    let out = ctl(&dir, &["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vif2.0") && text.contains("Connected") && text.contains("(default)"),
        "{text}"
    );

    // A dump: ring indices as Linux's io_ring shows them.
    let dump = ctl_json(&dir, &["dump", "vif1.0", "--json"]);
    assert_eq!(dump["queues"].as_array().map(Vec::len), Some(1), "{dump}");
    for ring in ["tx", "rx"] {
        let r = &dump["queues"][0][ring];
        assert_eq!(r["size"], 256, "{dump}");
        let (prod, cons) = (
            r["req_prod"].as_u64().unwrap(),
            r["req_cons"].as_u64().unwrap(),
        );
        assert_eq!(
            r["pending_requests"].as_u64().unwrap(),
            (prod as u32).wrapping_sub(cons as u32) as u64
        );
        assert!(r["rsp_prod"].as_u64().unwrap() > 0, "{dump}");
    }
    let out = ctl(&dir, &["dump", "vif1.0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("req_prod") && text.contains("rsp_prod_pvt"),
        "{text}"
    );
    let stats = ctl_json(&dir, &["stats", "--json"]);
    assert_eq!(
        stats["backend"]["vifs"].as_array().unwrap().len(),
        2,
        "{stats}"
    );

    // Metrics, a second later: per vif, per switch port, per uplink, with labels.
    std::thread::sleep(Duration::from_millis(1100));
    let text = scrape(&ns, 9181);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let rx = metric(&text, "netbackd_vif_rx_packets_total", &["vif=\"vif1.0\""]);
    assert!(rx.is_some_and(|n| n > 1000), "{text}");
    assert!(
        metric(
            &text,
            "netbackd_switch_port_rx_frames_total",
            &["switch=\"xenbr0\"", "port=\"tap:sn0\""]
        )
        .is_some_and(|n| n > 0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "netbackd_uplink_tx_frames_total",
            &["uplink=\"tap:sn0\""]
        )
        .is_some_and(|n| n > 0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "netbackd_vif_drops_total",
            &["vif=\"vif1.0\"", "reason=\"tx_runt\""]
        ),
        Some(0)
    );
    assert_eq!(metric(&text, "netbackd_vifs", &[]), Some(2));
    assert!(
        text.contains("netbackd_vif_info{") && text.contains("mode=\"builtin\""),
        "{text}"
    );

    // Errors say what to do.
    let out = ctl(&dir, &["dump", "vif9.0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not connected"));
    let out = ctl(&dir, &["close", "eth0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("vif<domid>.<devid>"));
    let out = ctl(Path::new("/nonexistent-run-dir"), &["list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is it running"));

    // close: Closing, then Closed; the other guest carries on.
    let out = ctl(&dir, &["close", "vif2.0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = ctl_json(&dir, &["list", "--json"]);
    let v2 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vif"] == "vif2.0")
        .unwrap()
        .clone();
    assert_eq!(v2["state"], "Closed", "{v2}");
    assert_eq!(v2["connected"], false);
    assert!(iperf3(&ns, "10.199.52.2", &["-t", "1"]) > 0);

    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("vif2.0: closing the device (asked by the operator)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root, /dev/net/tun, iproute2 and iputils-ping: run as root with --ignored (CI does)"]
fn sighup_applies_the_live_keys_and_names_what_needs_a_restart() {
    let ns = root_netns("snbd-hup", &["ip", "ping"]);
    let dir = run_dir("hup");
    let dir_s = dir.to_string_lossy().into_owned();
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("netbackd.toml");
    std::fs::write(
        &cfg,
        "guest-net = \"10.199.53.0/24\"\nuplink = [\"tap:sn0,addr=10.199.53.1/24\"]\nlog = \"info\"\nguests = 1\n",
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    // --log on the command line wins over the file, before and after the reload.
    let mut d = Daemon::start(
        &ns,
        &["--config", &cfg_s, "--run-dir", &dir_s, "--log", "info"],
    );
    assert!(
        answers_within(&ns, "10.199.53.2", Duration::from_secs(20)),
        "{}",
        d.kill_and_log()
    );
    let rate = || ctl_json(&dir, &["list", "--json"])[0]["rate"].clone();
    assert!(rate().is_null());
    std::fs::write(
        &cfg,
        "guest-net = \"10.199.53.0/24\"\nuplink = [\"tap:sn0,addr=10.199.53.1/24\"]\nlog = \"debug\"\nguests = 2\ndefault-rate = \"5000,10000\"\n",
    )
    .unwrap();
    d.signal(Signal::HUP);
    assert!(
        eventually(Duration::from_secs(10), || rate()["bytes"] == 5000),
        "the default rate never applied: {}",
        rate()
    );
    d.signal(Signal::TERM);
    let out = d.wait(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("SIGHUP: config read again: applied default-rate"),
        "{err}"
    );
    assert!(err.contains("guests changed but need a restart"), "{err}");
    assert!(
        err.contains("log changed but the command line gives them"),
        "{err}"
    );
    assert!(
        !err.contains(" DEBUG "),
        "the command line's --log info was overridden:\n{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
