//! The crate's one error type: each message says what was wrong and what to do.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;

/// Errors from opening and configuring host network devices, and from the [`Netns`] test kit.
///
/// Setup errors are typed so a program can react (and so its user reads what to do); the data
/// path (`recv`, `send`) returns plain [`io::Error`]s.
///
/// [`Netns`]: crate::netns::Netns
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/net/tun` does not exist or its driver is not loaded.
    NoTunDevice,
    /// The kernel refused an operation for lack of privilege.
    NotPermitted {
        /// What was attempted.
        op: &'static str,
        /// The interface (or path) it was attempted on.
        name: String,
    },
    /// The name belongs to a device that is not a TAP (a veth, a TUN, a NIC...).
    NameInUse {
        /// The interface name.
        name: String,
    },
    /// The TAP exists but another open file (usually another process) is attached to it.
    TapBusy {
        /// The interface name.
        name: String,
    },
    /// The interface name cannot be a Linux interface name.
    BadName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// No interface of that name in this network namespace.
    NoSuchInterface {
        /// The interface name.
        name: String,
    },
    /// The address (with that prefix) is already on the interface.
    AddressInUse {
        /// The interface name.
        name: String,
        /// The address.
        addr: Ipv4Addr,
        /// Its prefix length.
        prefix_len: u8,
    },
    /// A configuration value the kernel would reject.
    BadConfig {
        /// What is wrong and what to do instead.
        what: String,
    },
    /// The test kit needs root (network namespaces).
    NotRoot,
    /// An external tool the test kit runs is not installed.
    ToolMissing {
        /// The program's name.
        tool: &'static str,
    },
    /// An external command exited unsuccessfully.
    Command {
        /// The command line.
        command: String,
        /// Its exit code (`None` when killed by a signal).
        status: Option<i32>,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Any other failure of a system call, with the errno.
    Io {
        /// What was attempted.
        op: &'static str,
        /// The interface (or path) it was attempted on.
        name: String,
        /// The error the kernel returned.
        source: io::Error,
    },
}

impl Error {
    /// Wraps a system call's error, turning the errnos every caller treats alike (EPERM, EACCES)
    /// into their typed variant.
    pub(crate) fn io(op: &'static str, name: &str, source: impl Into<io::Error>) -> Self {
        let source = source.into();
        match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => Error::NotPermitted {
                op,
                name: name.to_owned(),
            },
            _ => Error::Io {
                op,
                name: name.to_owned(),
                source,
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoTunDevice => write!(
                f,
                "no /dev/net/tun: load the tun module (modprobe tun) or run where TAP devices exist"
            ),
            Error::NotPermitted { op, name } => write!(
                f,
                "{op} on {name}: not permitted: run as root or with CAP_NET_ADMIN \
                 (setcap cap_net_admin+ep on the program)"
            ),
            Error::NameInUse { name } => write!(
                f,
                "interface name {name} is in use by a device that is not a TAP: choose another \
                 name, or remove that device (ip link del {name}) if it is yours"
            ),
            Error::TapBusy { name } => write!(
                f,
                "TAP {name} is already attached by another process (or another open of it): \
                 stop that process or choose another name"
            ),
            Error::BadName { name, reason } => write!(
                f,
                "bad interface name {name:?}: {reason}; use 1 to 15 bytes without '/', ':' or \
                 whitespace"
            ),
            Error::NoSuchInterface { name } => write!(
                f,
                "no such interface {name}: check the name with `ip link` (in the network \
                 namespace the program runs in)"
            ),
            Error::AddressInUse {
                name,
                addr,
                prefix_len,
            } => write!(
                f,
                "address {addr}/{prefix_len} is already on {name}: remove it \
                 (ip addr del {addr}/{prefix_len} dev {name}) or choose another address"
            ),
            Error::BadConfig { what } => write!(f, "bad configuration: {what}"),
            Error::NotRoot => write!(
                f,
                "not root: network namespaces need root (or CAP_SYS_ADMIN and CAP_NET_ADMIN); \
                 run as root to include these tests"
            ),
            Error::ToolMissing { tool } => write!(
                f,
                "`{tool}` not found: install iproute2 (apt-get install iproute2)"
            ),
            Error::Command {
                command,
                status,
                stderr,
            } => {
                let status = status.map_or_else(|| "killed".to_owned(), |c| c.to_string());
                write!(f, "`{command}` failed (exit {status}): {}", stderr.trim())
            }
            Error::Io { op, name, source } => write!(f, "{op} on {name}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_errnos_become_not_permitted() {
        for errno in [libc::EPERM, libc::EACCES] {
            let e = Error::io("creating TAP", "tap0", io::Error::from_raw_os_error(errno));
            assert!(matches!(e, Error::NotPermitted { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.starts_with("creating TAP on tap0: not permitted"),
                "{msg}"
            );
            assert!(msg.contains("CAP_NET_ADMIN"), "{msg}");
        }
        let e = Error::io(
            "creating TAP",
            "tap0",
            io::Error::from_raw_os_error(libc::ENOMEM),
        );
        assert!(matches!(e, Error::Io { .. }));
        assert!(
            std::error::Error::source(&e).is_some(),
            "the errno stays reachable"
        );
    }
}
