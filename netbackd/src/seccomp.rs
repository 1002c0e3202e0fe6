//! The seccomp allowlist: the syscalls netbackd makes once it is set up, found by running
//! every mode and the tests under `strace -f -c` (see docs/SECURITY.md, "Confinement"), and
//! nothing else. A syscall outside it kills the whole process (`SECCOMP_RET_KILL_PROCESS`):
//! the kernel logs it to the audit log (or, without auditd, to the kernel log: `dmesg` shows
//! `audit: type=1326 ... comm="netbackd" ... sig=31 ... syscall=N`), and the service manager
//! sees the process killed by SIGSYS (exit status 159 in a shell; systemd says
//! `status=31/SYS`).
//!
//! One list serves every thread: the threads share most of their work (the backend's and the
//! embedded guests' vCPUs run the same memory, futex and event code), and the ones that do not
//! (control socket, metrics) make a subset of the backend's syscalls. Arguments are checked
//! where it narrows something real: `socket` only for the families netbackd uses.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Syscalls allowed with any arguments, by name (as strace and the audit log name them).
pub fn allowed() -> Vec<(&'static str, i64)> {
    let mut v: Vec<(&'static str, i64)> = vec![
        // Memory: the allocator, thread stacks, the frame pool's and guests' mappings, gntdev
        // maps (mmap of the device), the embedded machine's memfd views.
        ("brk", libc::SYS_brk),
        ("mmap", libc::SYS_mmap),
        ("munmap", libc::SYS_munmap),
        ("mremap", libc::SYS_mremap),
        ("mprotect", libc::SYS_mprotect),
        ("madvise", libc::SYS_madvise),
        // Threads and waiting.
        ("futex", libc::SYS_futex),
        ("sched_yield", libc::SYS_sched_yield),
        ("sched_getaffinity", libc::SYS_sched_getaffinity),
        ("clone", libc::SYS_clone),
        ("clone3", libc::SYS_clone3),
        ("set_robust_list", libc::SYS_set_robust_list),
        ("rseq", libc::SYS_rseq),
        ("gettid", libc::SYS_gettid),
        ("getpid", libc::SYS_getpid),
        ("geteuid", libc::SYS_geteuid),
        ("getrandom", libc::SYS_getrandom),
        ("clock_gettime", libc::SYS_clock_gettime),
        ("clock_nanosleep", libc::SYS_clock_nanosleep),
        ("nanosleep", libc::SYS_nanosleep),
        ("ppoll", libc::SYS_ppoll),
        // A sleeping call (futex, clock_nanosleep, ppoll with a timeout) that a stop interrupts
        // (SIGSTOP and SIGCONT, a debugger or strace attaching) resumes through it.
        ("restart_syscall", libc::SYS_restart_syscall),
        ("prctl", libc::SYS_prctl),
        // Signals (signal-hook's handlers write to a socketpair; a second SIGTERM exits).
        ("rt_sigaction", libc::SYS_rt_sigaction),
        ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
        ("rt_sigreturn", libc::SYS_rt_sigreturn),
        ("sigaltstack", libc::SYS_sigaltstack),
        ("tgkill", libc::SYS_tgkill),
        ("exit", libc::SYS_exit),
        ("exit_group", libc::SYS_exit_group),
        // Descriptors: gntdev, evtchn, xenstore, TAPs, packet sockets, the control and
        // metrics sockets, the stats and pcap files.
        ("read", libc::SYS_read),
        ("write", libc::SYS_write),
        ("readv", libc::SYS_readv),
        ("writev", libc::SYS_writev),
        ("close", libc::SYS_close),
        ("ioctl", libc::SYS_ioctl),
        ("fcntl", libc::SYS_fcntl),
        ("fstat", libc::SYS_fstat),
        ("newfstatat", libc::SYS_newfstatat),
        ("statx", libc::SYS_statx),
        ("openat", libc::SYS_openat),
        ("unlinkat", libc::SYS_unlinkat),
        ("renameat2", libc::SYS_renameat2),
        // Uplinks' and the embedded NIC's wakeups.
        ("eventfd2", libc::SYS_eventfd2),
        // The embedded machine's memfd-backed memory.
        ("fallocate", libc::SYS_fallocate),
        // Sockets already made (accept4 on the control and metrics listeners), and the
        // datagram ones sd_notify makes (and connects) per message.
        ("connect", libc::SYS_connect),
        ("accept4", libc::SYS_accept4),
        ("getsockopt", libc::SYS_getsockopt),
        ("setsockopt", libc::SYS_setsockopt),
        ("shutdown", libc::SYS_shutdown),
        ("sendto", libc::SYS_sendto),
        ("recvfrom", libc::SYS_recvfrom),
        ("sendmsg", libc::SYS_sendmsg),
        ("sendmmsg", libc::SYS_sendmmsg),
        ("recvmmsg", libc::SYS_recvmmsg),
        // Credentials: capget (reading); capset can only lower what is left (permitted is
        // the kept set).
        ("capget", libc::SYS_capget),
        ("capset", libc::SYS_capset),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("poll", libc::SYS_poll),
        ("open", libc::SYS_open),
        ("stat", libc::SYS_stat),
        ("lstat", libc::SYS_lstat),
        ("arch_prctl", libc::SYS_arch_prctl),
        ("eventfd", libc::SYS_eventfd),
        // The stats file's rename, the control socket's removal at exit, /proc/self/exe for a
        // panic's backtrace.
        ("rename", libc::SYS_rename),
        ("unlink", libc::SYS_unlink),
        ("readlink", libc::SYS_readlink),
    ]);
    v
}

/// `socket(2)` families netbackd may still open: AF_UNIX (sd_notify), AF_INET (interface
/// ioctls when a host-mode netdev is made), AF_NETLINK, AF_PACKET (an HVM guest's emulated
/// NIC).
const SOCKET_FAMILIES: [i32; 4] = [
    libc::AF_UNIX,
    libc::AF_INET,
    libc::AF_NETLINK,
    libc::AF_PACKET,
];

/// With `NETBACKD_SECCOMP=log` in its environment netbackd logs syscalls outside the list
/// (the audit line's `code=0x7ffc0000`) instead of being killed: how the list is checked
/// against a whole test run (docs/SECURITY.md, "Confinement"). Never for production: it is
/// `--no-seccomp` with a record.
pub const LOG_ENV: &str = "NETBACKD_SECCOMP";

/// What a syscall outside the list does: kill the process, or (`NETBACKD_SECCOMP=log`) log it.
pub fn mismatch_action() -> SeccompAction {
    if std::env::var(LOG_ENV).is_ok_and(|v| v == "log") {
        SeccompAction::Log
    } else {
        SeccompAction::KillProcess
    }
}

/// The filter for this machine's architecture.
pub fn program() -> Result<BpfProgram, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for {}: {e}", std::env::consts::ARCH))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        allowed().into_iter().map(|(_, nr)| (nr, vec![])).collect();
    let families = SOCKET_FAMILIES
        .iter()
        .map(|f| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *f as u64)
                .and_then(|c| SeccompRule::new(vec![c]))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_socket, families);
    let filter = SeccompFilter::new(rules, mismatch_action(), SeccompAction::Allow, arch)
        .map_err(|e| e.to_string())?;
    BpfProgram::try_from(filter).map_err(|e| e.to_string())
}

/// Installs the filter on every thread of the process.
pub fn install() -> Result<(), String> {
    let prog = program()?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_and_names_no_syscall_twice() {
        let prog = program().unwrap();
        assert!(!prog.is_empty());
        let mut nrs: Vec<i64> = allowed().iter().map(|(_, n)| *n).collect();
        nrs.sort_unstable();
        let before = nrs.len();
        nrs.dedup();
        assert_eq!(before, nrs.len(), "a syscall is listed twice");
    }

    #[test]
    fn what_a_compromised_netbackd_would_want_is_not_there() {
        let names: Vec<&str> = allowed().iter().map(|(n, _)| *n).collect();
        for bad in [
            "execve",
            "execveat",
            "ptrace",
            "chroot",
            "mount",
            "setuid",
            "setresuid",
            "init_module",
            "kexec_load",
            "bpf",
            "process_vm_writev",
            "keyctl",
            "unshare",
            "setns",
            "pivot_root",
        ] {
            assert!(!names.contains(&bad), "{bad} is allowed");
        }
    }
}
