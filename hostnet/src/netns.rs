//! A test kit: throwaway network namespaces.
//!
//! [`Netns::new`] creates a uniquely named namespace (`ip netns add`) with its loopback up;
//! [`Netns::ip`] and [`Netns::exec`] run commands inside it; [`Netns::run`] runs a closure on a
//! thread that has joined it (`setns`), so sockets and devices that closure opens belong to the
//! namespace while the handles it returns work from any thread. Dropping the guard deletes the
//! namespace, with every interface in it, even when the test panicked.
//!
//! Tests that need it need root: mark them `#[ignore = "needs root ...: run as root with
//! --ignored"]`, and let them fail, never skip, when asked to run without it:
//!
//! ```no_run
//! use hostnet::netns::Netns;
//!
//! let ns = Netns::new("mytest").unwrap_or_else(|e| panic!("cannot run: {e}"));
//! ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]).unwrap();
//! let index = ns.run(|| std::fs::read_to_string("/proc/self/net/dev")).unwrap();
//! ```

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::thread::LinkNameSpaceType;

use crate::Error;
use crate::error::denied;

/// `ip netns add` and `del` mount and unmount under /run/netns; one at a time per process.
static IP_NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Makes names unique within this process (the pid makes them unique across processes).
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A network namespace that exists as long as this guard (see the [module docs](self)).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `PREFIX-PID-N` and brings its loopback up.
    ///
    /// Errors: [`Error::NotRoot`], [`Error::ToolMissing`] (no `ip`), [`Error::Command`].
    pub fn new(prefix: &str) -> Result<Netns, Error> {
        if !rustix::process::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        // Relaxed: the counter only hands out distinct numbers; it orders no other memory.
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{id}", std::process::id());
        {
            let _serial = IP_NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run(Command::new("ip").args(["netns", "add", &name]))?;
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (for `ip -n NAME`, `ip netns exec NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...`; returns its stdout, or [`Error::Command`] with its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String, Error> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `PROGRAM ARGS...` inside the namespace (`ip netns exec`, which also mounts the
    /// namespace's own /sys); returns its stdout, or [`Error::Command`] with its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, Error> {
        run(self.command(program).args(args))
    }

    /// A [`Command`] that runs `program` inside the namespace, to add arguments, environment or
    /// stdio and spawn it yourself (for a long-running peer like `iperf3 -s`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Moves the calling thread into the namespace (`setns(CLONE_NEWNET)`) for good: for a
    /// long-lived thread of the test's own (a guest, a peer) whose sockets and devices must
    /// belong to the namespace.
    pub fn enter(&self) -> Result<(), Error> {
        enter(&self.name)
    }

    /// Runs `f` on a new thread that has joined the namespace (`setns(CLONE_NEWNET)`), and
    /// returns what it returns. A panic in `f` is passed on to the caller.
    pub fn run<R, F>(&self, f: F) -> Result<R, Error>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                self.enter()?;
                Ok(f())
            });
            match worker.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// Moves the calling thread into the named namespace (see [`Netns::enter`]), for a thread that
/// does not hold the guard.
pub fn enter(name: &str) -> Result<(), Error> {
    let path = format!("/run/netns/{name}");
    let file =
        File::open(&path).map_err(|e| Error::io("opening namespace", &path, e, denied::NETNS))?;
    rustix::thread::move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| Error::io("entering namespace (setns)", &path, e, denied::NETNS))
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _serial = IP_NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!(
                "hostnet: could not delete network namespace {}: {e}",
                self.name
            );
        }
    }
}

/// Runs `cmd` to completion; its stdout on success.
fn run(cmd: &mut Command) -> Result<String, Error> {
    let line = || {
        let mut s = cmd.get_program().to_string_lossy().into_owned();
        for a in cmd.get_args() {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    let command = line();
    let out: Output = cmd.output().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::ToolMissing { tool: "ip" },
        _ => Error::io("running", &command, e, denied::EXEC),
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
