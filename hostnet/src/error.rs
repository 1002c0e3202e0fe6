//! The crate's one error type: each message says what was wrong and what to do.
//!
//! Where the advice depends on the call (which privilege a refused call lacks), the variant
//! carries the advice chosen where the error is raised ([`denied`]), not a guess made here.

use std::io;
use std::net::Ipv4Addr;

/// Errors from opening and configuring host network devices, and from the [`Netns`] test kit.
///
/// Setup errors are typed so a program can react (and so its user reads what to do); the data
/// path (`recv`, `send`) returns plain [`io::Error`]s.
///
/// [`Netns`]: crate::netns::Netns
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/net/tun` does not exist or its driver is not loaded.
    #[error("no /dev/net/tun: load the tun module (modprobe tun) or run where TAP devices exist")]
    NoTunDevice,
    /// The kernel refused an operation for lack of privilege.
    #[error("{op} on {name}: not permitted: {hint}")]
    NotPermitted {
        /// What was attempted.
        op: &'static str,
        /// The interface (or path) it was attempted on.
        name: String,
        /// What to do: which privilege the call needs, chosen by whoever made it.
        hint: &'static str,
    },
    /// The name belongs to a device that is not a TAP (a veth, a TUN, a NIC...).
    #[error(
        "interface name {name} is in use by a device that is not a TAP: choose another name, or \
         remove that device (ip link del {name}) if it is yours"
    )]
    NameInUse {
        /// The interface name.
        name: String,
    },
    /// The TAP exists but another open file (usually another process) is attached to it.
    #[error(
        "TAP {name} is already attached by another process (or another open of it): stop that \
         process or choose another name"
    )]
    TapBusy {
        /// The interface name.
        name: String,
    },
    /// The interface name cannot be a Linux interface name.
    #[error(
        "bad interface name {name:?}: {reason}; use 1 to 15 bytes without '/', ':' or whitespace"
    )]
    BadName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// No interface of that name in this network namespace.
    #[error(
        "no such interface {name}: check the name with `ip link` (in the network namespace the \
         program runs in)"
    )]
    NoSuchInterface {
        /// The interface name.
        name: String,
    },
    /// No TAP of that name to attach to ([`Tap::attach`](crate::Tap::attach) never creates
    /// one).
    #[error(
        "no TAP {name} to attach to (attaching never creates one): check the name with `ip \
         link`, and that whatever makes it has started (QEMU, for an HVM guest's \
         vif<domid>.<devid>-emu)"
    )]
    NoSuchTap {
        /// The interface name.
        name: String,
    },
    /// No bridge of that name to put an interface into.
    #[error(
        "no bridge {name}: create it (ip link add {name} type bridge; ip link set {name} up) or \
         name an existing one"
    )]
    NoSuchBridge {
        /// The bridge's name.
        name: String,
    },
    /// The interface named as a bridge takes no ports.
    #[error(
        "{name} is not a bridge (it takes no ports): name a Linux bridge (ip -d link show type \
         bridge lists them)"
    )]
    NotABridge {
        /// The interface's name.
        name: String,
    },
    /// The address (with that prefix) is already on the interface.
    #[error(
        "address {addr}/{prefix_len} is already on {name}: remove it (ip addr del \
         {addr}/{prefix_len} dev {name}) or choose another address"
    )]
    AddressInUse {
        /// The interface name.
        name: String,
        /// The address.
        addr: Ipv4Addr,
        /// Its prefix length.
        prefix_len: u8,
    },
    /// A configuration value the kernel would reject.
    #[error("bad configuration: {what}")]
    BadConfig {
        /// What is wrong and what to do instead.
        what: String,
    },
    /// The test kit needs root (network namespaces).
    #[error(
        "not root: network namespaces need root (or CAP_SYS_ADMIN and CAP_NET_ADMIN); run as \
         root to include these tests"
    )]
    NotRoot,
    /// An external tool the test kit runs is not installed.
    #[error("`{tool}` not found: install iproute2 (apt-get install iproute2)")]
    ToolMissing {
        /// The program's name.
        tool: &'static str,
    },
    /// An external command exited unsuccessfully.
    #[error("`{command}` failed (exit {}): {}", exit_status(*status), stderr.trim())]
    Command {
        /// The command line.
        command: String,
        /// Its exit code (`None` when killed by a signal).
        status: Option<i32>,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Any other failure of a system call, with the errno.
    #[error("{op} on {name}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The interface (or path) it was attempted on.
        name: String,
        /// The error the kernel returned.
        source: io::Error,
    },
}

/// What [`Error::NotPermitted`] advises, by the privilege the refused call needs. Each call
/// site passes the one that fits its call to [`Error::io`].
pub(crate) mod denied {
    /// TAP devices, links and addresses (`TUNSETIFF`, rtnetlink): `CAP_NET_ADMIN`.
    pub(crate) const NET_ADMIN: &str =
        "run as root or with CAP_NET_ADMIN (setcap cap_net_admin+ep on the program)";
    /// `AF_PACKET` sockets: `CAP_NET_RAW`.
    pub(crate) const NET_RAW: &str =
        "run as root or with CAP_NET_RAW (setcap cap_net_raw+ep on the program)";
    /// Opening `/dev/net/tun`: the device node's permissions, or a container's device rules;
    /// `CAP_NET_ADMIN` does not help here.
    pub(crate) const TUN_DEVICE: &str = "check the permissions of /dev/net/tun (normally \
         crw-rw-rw-) or run as root; in a container, let it use the device (docker run --device \
         /dev/net/tun)";
    /// Opening and joining a named network namespace (`setns`): `CAP_SYS_ADMIN`.
    pub(crate) const NETNS: &str = "run as root (joining a network namespace needs CAP_SYS_ADMIN)";
    /// Starting `ip`: the program file itself may not be executed.
    pub(crate) const EXEC: &str =
        "check that `ip` (iproute2) is an executable file this user may run";
}

impl Error {
    /// Wraps a system call's error, turning the errnos every caller treats alike (EPERM, EACCES)
    /// into their typed variant, which advises `denied` (a [`denied`] constant: what the call
    /// needs).
    pub(crate) fn io(
        op: &'static str,
        name: &str,
        source: impl Into<io::Error>,
        denied: &'static str,
    ) -> Self {
        let source = source.into();
        match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => Error::NotPermitted {
                op,
                name: name.to_owned(),
                hint: denied,
            },
            _ => Error::Io {
                op,
                name: name.to_owned(),
                source,
            },
        }
    }
}

/// The exit part of [`Error::Command`]'s message: the code, or "killed".
fn exit_status(status: Option<i32>) -> String {
    status.map_or_else(|| "killed".to_owned(), |c| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_errnos_become_not_permitted() {
        for errno in [libc::EPERM, libc::EACCES] {
            let e = Error::io(
                "creating TAP",
                "tap0",
                io::Error::from_raw_os_error(errno),
                denied::NET_ADMIN,
            );
            assert!(matches!(e, Error::NotPermitted { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.starts_with("creating TAP on tap0: not permitted"),
                "{msg}"
            );
            assert!(msg.contains("CAP_NET_ADMIN"), "{msg}");
            // The advice is the raise site's: a packet socket needs CAP_NET_RAW, not NET_ADMIN.
            let msg = Error::io(
                "opening AF_PACKET socket",
                "eth0",
                io::Error::from_raw_os_error(errno),
                denied::NET_RAW,
            )
            .to_string();
            assert!(
                msg.contains("CAP_NET_RAW") && !msg.contains("CAP_NET_ADMIN"),
                "{msg}"
            );
        }
        let e = Error::io(
            "creating TAP",
            "tap0",
            io::Error::from_raw_os_error(libc::ENOMEM),
            denied::NET_ADMIN,
        );
        assert!(matches!(e, Error::Io { .. }));
        assert!(
            std::error::Error::source(&e).is_some(),
            "the errno stays reachable"
        );
    }
}
