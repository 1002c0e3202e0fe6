//! Real Xen, from a Linux dom0 or driver domain's userspace: the seam's implementation and the
//! raw layer under it.
//!
//! The seam: [`XenHost`] is the calling domain as netback's `BackendDomain` (`XenDomain +
//! GrantOps + GuestMemory`): its memory is an [`Arena`] of this process, grant copies go to
//! gntdev in one ioctl per batch, grant maps are [`GntdevMapping`]s, and it opens
//! [`XenEvtchn`] event-channel handles and [`XenXs`] xenstore connections. Errors cross the
//! seam as [`hypervisor::Error`]: the neutral variant where there is one (`XsNoEntry`, `BadPort`,
//! ...), else `Platform` carrying the message of this layer's [`Error`], with its advice.
//!
//! The raw layer, pure Rust over `libc`, no libxen* libraries:
//!
//! - [`Gntdev`] (`/dev/xen/gntdev`): batched grant copies with the local side given by virtual
//!   address, and grant maps ([`GntdevMapping`]) of a guest's pages (rings).
//! - [`Evtchn`] (`/dev/xen/evtchn`): bind, notify, unbind; pending ports read from the device
//!   and unmasked by writing them back (late EOI); ring overflow recovered without losing
//!   events.
//! - [`xs::XsClient`] (xenstored's socket, or `/dev/xen/xenbus`): read, write, directory,
//!   permissions, watches, transactions over the xenstore wire protocol ([`xs::wire`]).
//!
//! What it needs: a Linux kernel running as a Xen dom0 or driver domain, with `xen-gntdev` and
//! `xen-evtchn` loaded (`/dev/xen/gntdev`, `/dev/xen/evtchn`), xenstored running (its socket in
//! `/var/run/xenstored/` or `/run/xenstored/`) or the kernel's `/dev/xen/xenbus`, and root (the
//! device nodes and socket are root-only by default; mapping and copying another domain's
//! grants also needs that domain to have granted them to this one). [`available`] checks all
//! of this and says what is missing.
//!
//! Every descriptor is close-on-exec and owned; dropping a handle closes it, which also makes
//! the kernel release what was bound or mapped through it.

#[allow(unsafe_code)]
mod arena;
mod error;
#[allow(unsafe_code)]
pub mod evtchn;
#[allow(unsafe_code)]
pub mod gntdev;
mod handle;
mod host;
mod stats;
mod store;
#[allow(unsafe_code)]
mod sys;
pub mod xs;

use std::fs::OpenOptions;
use std::path::Path;

pub use arena::Arena;
pub use error::{Error, Result};
pub use evtchn::{DevEvtchn, EVTCHN_PATH, Evtchn, EvtchnIo, EvtchnIoctl, Notifier};
pub use gntdev::{GNTDEV_PATH, Gntdev, GntdevIo, GntdevMapping, GrantCopySegment, GrantSide};
pub use handle::XenEvtchn;
pub use host::XenHost;
pub use stats::XenStats;
pub use store::XenXs;
pub use xs::XsClient;

/// Checks that this process can use real Xen: the device nodes exist and open, and xenstore is
/// reachable. The error names what is missing and what to do, e.g. "no /dev/xen/gntdev: load
/// xen-gntdev (modprobe xen-gntdev) in a Xen dom0 or driver domain".
pub fn available() -> Result<()> {
    if !Path::new("/dev/xen").exists() {
        return Err(Error::Unavailable {
            what: "no /dev/xen".into(),
            hint: "this is not a Xen domain (or its xen drivers are not loaded): run in a Xen \
                   dom0 or driver domain",
        });
    }
    // Opening is harmless (nothing is bound or mapped) and catches permissions too.
    for (path, module) in [
        (
            GNTDEV_PATH,
            "load xen-gntdev (modprobe xen-gntdev) in a Xen dom0 or driver domain",
        ),
        (
            EVTCHN_PATH,
            "load xen-evtchn (modprobe xen-evtchn) in a Xen dom0 or driver domain",
        ),
    ] {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::open_failed(path, module, &e))?;
    }
    XsClient::open().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_passes_on_xen_or_names_what_is_missing() {
        match available() {
            Ok(()) => println!("real Xen is available here"),
            Err(e) => {
                eprintln!("not on Xen here: checked the refusal instead: {e}");
                let Error::Unavailable { what, hint } = &e else {
                    panic!("expected Unavailable, got {e:?}");
                };
                assert!(
                    what.starts_with("no ") || what.contains("permission denied"),
                    "{what}"
                );
                assert!(!hint.is_empty());
            }
        }
    }

    #[test]
    fn open_errors_say_what_to_do() {
        let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = Error::open_failed(
            GNTDEV_PATH,
            "load xen-gntdev (modprobe xen-gntdev)",
            &missing,
        );
        assert_eq!(
            e.to_string(),
            "no /dev/xen/gntdev: load xen-gntdev (modprobe xen-gntdev)"
        );
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        let e = Error::open_failed(EVTCHN_PATH, "unused", &denied);
        assert_eq!(
            e.to_string(),
            "permission denied opening /dev/xen/evtchn: run as root in dom0 or a driver domain"
        );
    }
}
