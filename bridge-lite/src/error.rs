//! The crate's one error type.

use crate::frame::MacAddr;
use crate::port::PortId;

/// Everything that can go wrong at bridge-lite's boundary.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The port number names no port on this bridge (never added, or removed).
    #[error(
        "{port} does not exist on this bridge (removed or never added); use an id returned by \
         add_port"
    )]
    NoSuchPort {
        /// The port asked for.
        port: PortId,
    },
    /// The bridge already has its configured maximum number of ports.
    #[error("the bridge already has {max} ports; remove one or raise BridgeConfig::max_ports")]
    TooManyPorts {
        /// The configured maximum.
        max: usize,
    },
    /// Every free port number is still quarantined: a forwarder may still be in a batch that
    /// began before its port was removed (see [`crate::Bridge::add_port`]).
    #[error(
        "every free port number of this bridge (max {max}) belonged to a port removed while a \
         forwarder was still using it; try again once every forwarder has forwarded a batch \
         since, or drop idle forwarders"
    )]
    PortNumbersBusy {
        /// The configured maximum.
        max: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid bridge configuration: {what}")]
    InvalidConfig {
        /// Which value, and its allowed range.
        what: &'static str,
    },
    /// A multicast or all-zero address was given where a unicast station address is needed.
    #[error(
        "{mac} is not a unicast station address (multicast or all-zero); static entries need a \
         unicast MAC"
    )]
    InvalidMac {
        /// The rejected address.
        mac: MacAddr,
    },
    /// A static entry could not be placed: its table bucket holds only static entries.
    #[error(
        "no room for a static entry for {mac}: its table bucket holds only static entries; \
         remove some static entries or build the bridge with a larger fdb_capacity"
    )]
    FdbBucketFull {
        /// The address that did not fit.
        mac: MacAddr,
    },
    /// A capture is already running on the port.
    #[error("a capture is already running on {port}; stop it before starting another")]
    CaptureRunning {
        /// The port.
        port: PortId,
    },
    /// No capture is running on the port.
    #[error("no capture is running on {port}")]
    NoCapture {
        /// The port.
        port: PortId,
    },
    /// Writing the pcap file failed; the capture was stopped at the first error.
    #[error(
        "pcap capture of {port} failed and was stopped: {source}; check that the output file \
         is writable and the disk is not full"
    )]
    Capture {
        /// The captured port.
        port: PortId,
        /// What the pcap writer reported.
        source: pcap_file::PcapError,
    },
    /// A MAC address string is not six colon-separated hex bytes.
    #[error(
        "{0:?} is not a MAC address; write six hex bytes separated by colons, e.g. \
         00:16:3e:00:00:02"
    )]
    BadMacString(String),
    /// A frame failed validation ([`crate::inspect`]).
    #[error("malformed frame: {reason}")]
    Malformed {
        /// What the parser found wrong.
        reason: String,
    },
}
