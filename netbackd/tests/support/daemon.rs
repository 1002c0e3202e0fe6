//! The real `netbackd` binary, run inside a network namespace of the test's own.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use hostnet::netns::Netns;
use rustix::process::{Pid, Signal, kill_process};

/// The namespace for a test, or why the test cannot run here (not root, a tool missing).
pub fn netns(tag: &str, tools: &[&str]) -> Result<Netns, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not root: network namespaces and TAP devices need root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun: load the tun module (modprobe tun)".into());
    }
    for tool in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(format!(
                "`{tool}` not found: install it (apt-get install -y iproute2 iputils-ping iperf3)"
            ));
        }
    }
    Netns::new(tag).map_err(|e| e.to_string())
}

/// Why a test that needs root and host tools is ignored by default. CI runs as root and
/// includes them (`cargo test -p netbackd -p hostnet -- --ignored`).
pub const NEEDS_ROOT: &str = "needs root, /dev/net/tun and iproute2/iputils-ping/iperf3 \
                              (run as root: cargo test -p netbackd -- --ignored)";

/// A fresh namespace for a test that was asked to run (it is `#[ignore]`d by default): missing
/// prerequisites fail it with what to install, never skip it silently.
#[track_caller]
pub fn root_netns(tag: &str, tools: &[&str]) -> Netns {
    netns(tag, tools).unwrap_or_else(|why| panic!("{tag}: cannot run: {why}"))
}

/// Runs a command to completion and insists it succeeds.
#[track_caller]
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits for a child, killing it after `limit` (a hang guard, not a performance threshold).
pub fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() >= limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

/// A running netbackd; killed on drop if still running.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    /// Starts `netbackd ARGS` inside `ns` (stdout and stderr captured).
    pub fn start(ns: &Netns, args: &[&str]) -> Daemon {
        Self::start_without(ns, args, &[])
    }

    /// [`Daemon::start`] without the environment variables `unset` (e.g. `NETBACKD_SECCOMP`,
    /// which a run checking the allowlist sets, for a test of the filter's kill).
    pub fn start_without(ns: &Netns, args: &[&str], unset: &[&str]) -> Daemon {
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_netbackd"));
        for var in unset {
            cmd.env_remove(var);
        }
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netbackd");
        Daemon { child: Some(child) }
    }

    /// Sends a signal to the `ip netns exec` wrapper's child: `ip netns exec` execs the
    /// program, so the pid is netbackd's own.
    pub fn signal(&self, sig: Signal) {
        let pid = self.child.as_ref().expect("running").id();
        kill_process(Pid::from_raw(pid as i32).expect("pid"), sig).expect("kill");
    }

    /// Its pid (`ip netns exec` execs the program: the pid is netbackd's own).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// Waits for it to exit (bounded), returning what it printed.
    pub fn wait(mut self, limit: Duration) -> Output {
        wait_bounded(self.child.take().expect("running"), limit)
    }

    /// Kills it and returns its stderr (for a failure message).
    pub fn kill_and_log(&mut self) -> String {
        let Some(mut c) = self.child.take() else {
            return String::new();
        };
        let _ = c.kill();
        let mut s = String::new();
        if let Some(mut e) = c.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        let _ = c.wait();
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes (a hang guard); returns whether
/// it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
