//! Interface names and indices, and putting an interface into a bridge.

use std::os::fd::AsFd;

use crate::Error;
use crate::error::denied;
use crate::netlink::Route;

/// Checks `name` against the kernel's rules for an interface name (`dev_valid_name`): 1 to 15
/// bytes, not `.` or `..`, no `/`, `:`, whitespace or NUL.
pub fn check_name(name: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() >= crate::sys::IFNAMSIZ {
        return bad("it is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not interface names");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return bad("it contains '/', ':', a NUL or whitespace");
    }
    Ok(())
}

/// The index of interface `name` in the network namespace of socket `sock` (any socket);
/// `denied` is the advice should the kernel refuse (see [`denied`](crate::error::denied)).
pub(crate) fn index(sock: impl AsFd, name: &str, denied: &'static str) -> Result<u32, Error> {
    check_name(name)?;
    rustix::net::netdevice::name_to_index(sock, name).map_err(|e| match e {
        rustix::io::Errno::NODEV => Error::NoSuchInterface {
            name: name.to_owned(),
        },
        e => Error::io("looking up interface", name, e, denied),
    })
}

/// Puts interface `dev` into the Linux bridge `bridge` and brings it up (`ip link set DEV
/// master BRIDGE up`), in the calling thread's network namespace: what Xen's `vif-bridge`
/// hotplug script does with a vif's netdev. Nothing changes if it is there already.
///
/// Errors: [`Error::NoSuchInterface`] (no `dev`), [`Error::NoSuchBridge`],
/// [`Error::NotABridge`] (`bridge` takes no ports), [`Error::NotPermitted`], [`Error::Io`].
pub fn join_bridge(dev: &str, bridge: &str) -> Result<(), Error> {
    let mut route =
        Route::open().map_err(|e| Error::io("opening rtnetlink", dev, e, denied::NET_ADMIN))?;
    let port = index(&route, dev, denied::NET_ADMIN)?;
    let master = index(&route, bridge, denied::NET_ADMIN).map_err(|e| match e {
        Error::NoSuchInterface { name } => Error::NoSuchBridge { name },
        e => e,
    })?;
    route
        .set_master(port, master)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => Error::NotABridge {
                name: bridge.to_owned(),
            },
            _ => Error::io("putting into a bridge", dev, e, denied::NET_ADMIN),
        })?;
    route
        .set_up(port, true)
        .map_err(|e| Error::io("setting interface up", dev, e, denied::NET_ADMIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernel_rules() {
        for ok in ["tap0", "a", "uplink-0.1_x", "fifteen-bytes15", "tap%d"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "sixteen-bytes-16",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "tab\t",
            "nul\0",
        ] {
            match check_name(bad) {
                Err(Error::BadName { name, .. }) => assert_eq!(name, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
