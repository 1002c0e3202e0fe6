//! Confinement after setup (DESIGN decision 14): once the hypervisor's devices, xenstore, the
//! uplinks and the program's own sockets are open, netbackd keeps only what serving still
//! needs.
//!
//! 1. **Capabilities.** Every capability but those of [`Plan::keep`] leaves the bounding,
//!    permitted, effective and inheritable sets (ambient is cleared):
//!    - `--xen` keeps `CAP_NET_ADMIN` unless `--vif-mode builtin`: new vifs arrive at any time,
//!      and a host-mode vif's netdev is a TAP netbackd must create (`TUNSETIFF` on a new
//!      device, its MTU, MAC and flags), make persistent and remove when the device goes;
//!    - `--xen` keeps `CAP_NET_RAW` unless `--vif-mode host`: an HVM guest's emulated NIC joins
//!      its builtin vif's switch through an `AF_PACKET` socket opened when the vif arrives;
//!    - the embedded hypervisor keeps `CAP_NET_ADMIN` only if some guest's vif is in host mode
//!      (its netdev goes when the device does, `--close-on-exit` included); with builtin vifs
//!      only it keeps nothing: its guests are all made at start.
//!
//!    Nothing else: the devices (`/dev/xen/*`, `/dev/net/tun`), xenstore and the sockets are
//!    open, and the kernel checks their permissions at open only.
//! 2. **`--user`.** The thread's credentials become the user's (uid, gid, no supplementary
//!    groups), keeping the capabilities above across the switch (`PR_SET_KEEPCAPS`).
//! 3. **No new privileges** (`PR_SET_NO_NEW_PRIVS`): no exec can ever gain any.
//! 4. **seccomp** ([`crate::seccomp`]): an allowlist of the syscalls netbackd makes, for every
//!    thread (`SECCOMP_FILTER_FLAG_TSYNC`); any other kills the process.
//!
//! Linux keeps credentials and capabilities per thread: each thread that exists when the
//! program confines itself does steps 1-3 itself ([`confine_thread`]); threads made later
//! inherit them. The seccomp filter is installed once, for all threads, after the last of them
//! ([`install_seccomp`]).

use std::collections::HashSet;
use std::path::Path;

use caps::{CapSet, Capability, CapsHashSet};
use rustix::process::{Gid, Uid};

use crate::cli::{Args, VifModeArg};

/// Why confinement failed: netbackd refuses to run half-confined.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// `--user` names no user.
    #[error(
        "--user {0:?}: no such user in /etc/passwd; create it (useradd --system --no-create-home \
         --shell /usr/sbin/nologin {0}) or give UID[:GID]"
    )]
    NoUser(String),
    /// A step failed.
    #[error("cannot {step}: {why}; run netbackd as root (it drops what it does not need itself)")]
    Step {
        /// What was attempted.
        step: &'static str,
        /// Why it failed.
        why: String,
    },
}

/// The user to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// As given.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// What confinement keeps and does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Capabilities kept, each with why.
    pub keep: Vec<(Capability, &'static str)>,
    /// The user to become, if any.
    pub user: Option<User>,
    /// Whether to install the seccomp allowlist.
    pub seccomp: bool,
}

impl Plan {
    /// What the command line's mode needs.
    pub fn for_args(args: &Args) -> Result<Plan, ConfineError> {
        let mut keep = Vec::new();
        if args.xen {
            if args.vif_mode != VifModeArg::Builtin {
                keep.push((
                    Capability::CAP_NET_ADMIN,
                    "host-mode vifs arrive at any time: their netdevs (TAPs) are made, set up \
                     and removed as they come and go",
                ));
            }
            if args.vif_mode != VifModeArg::Host {
                keep.push((
                    Capability::CAP_NET_RAW,
                    "an HVM guest's emulated NIC joins its builtin vif's switch through an \
                     AF_PACKET socket opened when the vif arrives",
                ));
            }
        } else if args.vif_mode == VifModeArg::Host
            || (args.vif_mode == VifModeArg::Auto
                && args.guest_script.as_deref() == Some("vif-bridge"))
        {
            keep.push((
                Capability::CAP_NET_ADMIN,
                "the guests' host-mode netdevs are removed when their devices go",
            ));
        }
        let user = args.user.as_deref().map(lookup_user).transpose()?;
        Ok(Plan {
            keep,
            user,
            seccomp: !args.no_seccomp,
        })
    }

    fn keep_set(&self) -> CapsHashSet {
        self.keep.iter().map(|(c, _)| *c).collect()
    }

    /// One line saying what is kept.
    pub fn describe(&self) -> String {
        let caps = if self.keep.is_empty() {
            "no capabilities".to_string()
        } else {
            self.keep
                .iter()
                .map(|(c, why)| format!("{c} ({why})"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        format!(
            "confined: {caps}; {}; no new privileges; {}",
            self.user.as_ref().map_or_else(
                || "still root (uid 0; --user NAME runs as another)".to_string(),
                |u| format!("running as {} (uid {}, gid {})", u.name, u.uid, u.gid)
            ),
            if self.seccomp {
                "seccomp allowlist in force (a syscall outside it kills netbackd with SIGSYS: \
                 exit status 159, and the kernel's audit line type=1326 names the syscall)"
            } else {
                "NO seccomp filter (--no-seccomp: for debugging only)"
            }
        )
    }
}

/// Finds `spec` (NAME, or UID[:GID]) in /etc/passwd.
pub fn lookup_user(spec: &str) -> Result<User, ConfineError> {
    lookup_user_in(spec, Path::new("/etc/passwd"))
}

fn lookup_user_in(spec: &str, passwd: &Path) -> Result<User, ConfineError> {
    let numeric = |s: &str| s.parse::<u32>().ok();
    if let Some(uid) = spec.split(':').next().and_then(numeric) {
        let gid = match spec.split_once(':') {
            Some((_, g)) => numeric(g).ok_or_else(|| ConfineError::NoUser(spec.into()))?,
            None => uid,
        };
        return Ok(User {
            name: spec.into(),
            uid,
            gid,
        });
    }
    let text = std::fs::read_to_string(passwd).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[0] == spec)
        .and_then(|f| {
            Some(User {
                name: spec.into(),
                uid: numeric(f[2])?,
                gid: numeric(f[3])?,
            })
        })
        .ok_or_else(|| ConfineError::NoUser(spec.into()))
}

fn step(step: &'static str) -> impl Fn(caps::errors::CapsError) -> ConfineError {
    move |e| ConfineError::Step {
        step,
        why: e.to_string(),
    }
}

fn os_step(step: &'static str) -> impl Fn(rustix::io::Errno) -> ConfineError {
    move |e| ConfineError::Step {
        step,
        why: std::io::Error::from(e).to_string(),
    }
}

/// Confines the calling thread: the bounding set, the user, the capability sets, no new
/// privileges (steps 1-3 of the [module docs](self)). Threads it makes later inherit all of it.
pub fn confine_thread(plan: &Plan) -> Result<(), ConfineError> {
    let keep = plan.keep_set();
    let permitted = caps::read(None, CapSet::Permitted).map_err(step("read the capabilities"))?;
    // Dropping from the bounding set needs CAP_SETPCAP; a process started without it (not
    // root) has nothing there to fear.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::runtime::thread_all_supported() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(step("drop a capability from the bounding set"))?;
            }
        }
    }
    if let Some(u) = &plan.user {
        let (uid, gid) = (Uid::from_raw(u.uid), Gid::from_raw(u.gid));
        rustix::thread::set_keep_capabilities(true).map_err(os_step("keep capabilities"))?;
        rustix::thread::set_thread_groups(&[gid])
            .map_err(os_step("drop the supplementary groups"))?;
        rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(os_step("switch group"))?;
        rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(os_step("switch user"))?;
        rustix::thread::set_keep_capabilities(false).map_err(os_step("reset keep-caps"))?;
    }
    let kept: HashSet<Capability> = keep.intersection(&permitted).copied().collect();
    // Ambient first (it must stay within permitted and inheritable; absent before Linux 4.3:
    // nothing to clear there), then inheritable, then effective before permitted (effective
    // must stay within permitted at every step).
    let _ = caps::clear(None, CapSet::Ambient);
    caps::clear(None, CapSet::Inheritable).map_err(step("clear the inheritable capabilities"))?;
    caps::set(None, CapSet::Effective, &kept).map_err(step("set the effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(step("set the permitted capabilities"))?;
    rustix::thread::set_no_new_privs(true).map_err(os_step("set no-new-privs"))?;
    Ok(())
}

/// Installs the seccomp allowlist on every thread of the process (step 4), if the plan asks.
pub fn install_seccomp(plan: &Plan) -> Result<(), ConfineError> {
    if !plan.seccomp {
        return Ok(());
    }
    crate::seccomp::install().map_err(|why| ConfineError::Step {
        step: "install the seccomp filter",
        why,
    })
}

/// Testing aid (`--debug-forbidden-syscall`): a syscall outside the allowlist.
pub fn forbidden_syscall() {
    tracing::warn!(
        syscall = "chroot",
        "--debug-forbidden-syscall: calling chroot(2), which is outside the allowlist: the \
         kernel kills netbackd with SIGSYS now (exit status 159)"
    );
    let r = std::os::unix::fs::chroot("/");
    tracing::error!(
        result = ?r,
        "chroot(2) returned: the filter did not kill netbackd (--no-seccomp, or \
         NETBACKD_SECCOMP=log)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_by_name_or_number() {
        let p = std::env::temp_dir().join(format!("netbackd-passwd-{}", std::process::id()));
        std::fs::write(
            &p,
            "root:x:0:0:root:/root:/bin/bash\n# a comment\nnetbackd:x:998:997::/:/usr/sbin/nologin\n",
        )
        .unwrap();
        let u = lookup_user_in("netbackd", &p).unwrap();
        assert_eq!((u.uid, u.gid), (998, 997));
        let u = lookup_user_in("1234:99", &p).unwrap();
        assert_eq!((u.uid, u.gid), (1234, 99));
        let u = lookup_user_in("1234", &p).unwrap();
        assert_eq!((u.uid, u.gid), (1234, 1234));
        let e = lookup_user_in("nobody-here", &p).unwrap_err();
        assert!(e.to_string().contains("useradd"), "{e}");
        assert!(lookup_user_in("12:x", &p).is_err());
        std::fs::remove_file(p).unwrap();
    }

    fn plan(extra: &[&str]) -> Plan {
        use clap::Parser;
        let mut v = vec!["netbackd"];
        v.extend_from_slice(extra);
        Plan::for_args(&Args::try_parse_from(v).unwrap()).unwrap()
    }

    fn kept(p: &Plan) -> Vec<Capability> {
        let mut k: Vec<Capability> = p.keep.iter().map(|(c, _)| *c).collect();
        k.sort_by_key(|c| c.index());
        k
    }

    #[test]
    fn each_mode_keeps_what_it_needs_and_nothing_else() {
        use Capability::{CAP_NET_ADMIN, CAP_NET_RAW};
        assert_eq!(kept(&plan(&["--xen"])), [CAP_NET_ADMIN, CAP_NET_RAW]);
        assert_eq!(
            kept(&plan(&["--xen", "--vif-mode", "host"])),
            [CAP_NET_ADMIN]
        );
        assert_eq!(
            kept(&plan(&["--xen", "--vif-mode", "builtin"])),
            [CAP_NET_RAW]
        );
        assert!(kept(&plan(&[])).is_empty(), "embedded builtin guests");
        assert_eq!(
            kept(&plan(&["--guest-script", "vif-bridge"])),
            [CAP_NET_ADMIN]
        );
        assert_eq!(kept(&plan(&["--vif-mode", "host"])), [CAP_NET_ADMIN]);
        let p = plan(&["--no-seccomp"]);
        assert!(!p.seccomp);
        assert!(p.describe().contains("NO seccomp"));
        assert!(plan(&[]).describe().contains("SIGSYS"));
    }
}
