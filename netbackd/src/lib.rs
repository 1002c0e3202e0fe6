//! netbackd: the splitnet driver-domain program.
//!
//! It loads netback as the driver domain's backend: a bridge-lite switch whose ports are the
//! guests' vifs and uplinks into Linux ([`uplinks`]: a TAP device, or an `AF_PACKET` socket on a
//! NIC). By default it runs on the embedded hypervisor with guests of its own ([`embedded`]), each
//! a [`guest`] crate vCPU: netfront, smoltcp and its services (ping, TCP echo and discard, and a
//! server the stock `iperf3` client tests against). The backend's loop ([`daemon`]) is the same
//! whatever hypervisor is below.
#![forbid(unsafe_code)]

pub mod cli;
pub mod daemon;
pub mod embedded;
pub mod report;
pub mod uplinks;
pub mod xen;

use std::fmt;
use std::path::PathBuf;

/// What stops netbackd, each saying what to do.
#[derive(Debug)]
pub enum Error {
    /// The command line asks for something impossible.
    Args(String),
    /// An uplink could not be opened or set up.
    Uplink {
        /// Which (`tap:NAME`, `nic:IFNAME`).
        uplink: String,
        /// Why.
        source: hostnet::Error,
    },
    /// The hypervisor refused.
    Hypervisor(hypervisor::Error),
    /// The backend refused.
    Netback(netback::Error),
    /// A file could not be created.
    File {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A system call failed.
    Os(&'static str, std::io::Error),
    /// Frames were still held after every domain was destroyed.
    Leak {
        /// How many.
        frames: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Args(e) => write!(f, "{e}"),
            Error::Uplink { uplink, source } => write!(f, "uplink {uplink}: {source}"),
            Error::Hypervisor(e) => write!(f, "hypervisor: {e}"),
            Error::Netback(e) => write!(f, "{e}"),
            Error::File { path, source } => write!(
                f,
                "cannot create {}: {source}; check the directory exists and is writable",
                path.display()
            ),
            Error::Os(what, e) => write!(f, "{what}: {e}"),
            Error::Leak { frames } => write!(
                f,
                "{frames} frame(s) were still held after every domain was destroyed: a grant \
                 or mapping leaked (a bug: please report it with the log above)"
            ),
        }
    }
}

impl std::error::Error for Error {}
