//! netbackd: the splitnet driver-domain program.
//!
//! It loads netback as the driver domain's backend. Each vif is served as the toolstack
//! configured it: in host mode as a netdev of this domain for the toolstack's own hotplug
//! script ([`netdevs`]: a persistent TAP, as Linux's xen-netback makes `vif<domid>.<devid>`);
//! in builtin mode as a port of the bridge-lite switch its `bridge=` names, whose other ports
//! are uplinks into Linux ([`uplinks`]: a TAP device, or an `AF_PACKET` socket on a NIC). On
//! real Xen ([`xen`]) one instance serves a backend domain ([`lock`]). By default it runs on
//! the embedded hypervisor with guests of its own ([`embedded`]), added by a small toolstack
//! ([`toolstack`]), each a [`guest`] crate vCPU: netfront, smoltcp and its services (ping, TCP
//! echo and discard, and a server the stock `iperf3` client tests against). The backend's loop
//! ([`daemon`]) is the same whatever hypervisor is below.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod confine;
pub mod ctl;
mod ctl_text;
pub mod daemon;
pub mod embedded;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod netdevs;
mod ops;
pub mod report;
pub mod seccomp;
pub mod toolstack;
pub mod uplinks;
pub mod xen;

use std::path::PathBuf;

/// What stops netbackd, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line asks for something impossible.
    #[error("{0}")]
    Args(String),
    /// An uplink could not be opened or set up.
    #[error("uplink {uplink}: {source}")]
    Uplink {
        /// Which (`tap:NAME`, `nic:IFNAME`).
        uplink: String,
        /// Why.
        #[source]
        source: hostnet::Error,
    },
    /// The hypervisor refused.
    #[error("hypervisor: {0}")]
    Hypervisor(#[source] hypervisor::Error),
    /// The backend refused.
    #[error("{0}")]
    Netback(#[source] netback::Error),
    /// A file could not be created.
    #[error(
        "cannot create {}: {source}; check the directory exists and is writable",
        path.display()
    )]
    File {
        /// Which.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another netbackd serves this backend domain, or its lock file cannot be made.
    #[error("{0}")]
    Lock(#[source] lock::LockError),
    /// The control socket could not be made.
    #[error("control socket: {0}")]
    Ctl(#[source] ctl::CtlError),
    /// The metrics listener could not be bound.
    #[error(
        "--metrics {addr}: cannot listen there: {source}; choose a free port (or an address \
         of this host)"
    )]
    Metrics {
        /// Where.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Confinement after setup failed.
    #[error("{0}")]
    Confine(#[source] confine::ConfineError),
    /// One of the backend's own threads could not confine itself.
    #[error("confining the backend's control-plane thread: {0}")]
    ConfineThreads(String),
    /// A system call failed.
    #[error("{0}: {1}")]
    Os(&'static str, #[source] std::io::Error),
    /// Frames were still held after every domain was destroyed.
    #[error(
        "{frames} frame(s) were still held after every domain was destroyed: a grant or mapping \
         leaked (a bug: please report it with the log above)"
    )]
    Leak {
        /// How many.
        frames: u64,
    },
}
