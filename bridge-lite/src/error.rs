//! The crate's one error type.

use std::fmt;

use crate::frame::MacAddr;
use crate::port::PortId;

/// Everything that can go wrong at bridge-lite's boundary.
#[derive(Debug)]
pub enum BridgeError {
    /// The port number names no port on this bridge (never added, or removed).
    NoSuchPort {
        /// The port asked for.
        port: PortId,
    },
    /// The bridge already has its configured maximum number of ports.
    TooManyPorts {
        /// The configured maximum.
        max: usize,
    },
    /// A configuration value is out of range.
    InvalidConfig {
        /// Which value, and its allowed range.
        what: &'static str,
    },
    /// A multicast or all-zero address was given where a unicast station address is needed.
    InvalidMac {
        /// The rejected address.
        mac: MacAddr,
    },
    /// A static entry could not be placed: its table bucket holds only static entries.
    FdbBucketFull {
        /// The address that did not fit.
        mac: MacAddr,
    },
    /// A capture is already running on the port.
    CaptureRunning {
        /// The port.
        port: PortId,
    },
    /// No capture is running on the port.
    NoCapture {
        /// The port.
        port: PortId,
    },
    /// Writing the pcap file failed; the capture was stopped at the first error.
    Capture {
        /// The captured port.
        port: PortId,
        /// What the pcap writer reported.
        source: pcap_file::PcapError,
    },
    /// A MAC address string is not six colon-separated hex bytes.
    BadMacString(String),
    /// A frame failed validation ([`crate::inspect`]).
    Malformed {
        /// What the parser found wrong.
        reason: String,
    },
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::NoSuchPort { port } => write!(
                f,
                "{port} does not exist on this bridge (removed or never added); \
                 use an id returned by add_port"
            ),
            BridgeError::TooManyPorts { max } => write!(
                f,
                "the bridge already has {max} ports; remove one or raise BridgeConfig::max_ports"
            ),
            BridgeError::InvalidConfig { what } => {
                write!(f, "invalid bridge configuration: {what}")
            }
            BridgeError::InvalidMac { mac } => write!(
                f,
                "{mac} is not a unicast station address (multicast or all-zero); \
                 static entries need a unicast MAC"
            ),
            BridgeError::FdbBucketFull { mac } => write!(
                f,
                "no room for a static entry for {mac}: its table bucket holds only static \
                 entries; remove some static entries or build the bridge with a larger \
                 fdb_capacity"
            ),
            BridgeError::CaptureRunning { port } => write!(
                f,
                "a capture is already running on {port}; stop it before starting another"
            ),
            BridgeError::NoCapture { port } => write!(f, "no capture is running on {port}"),
            BridgeError::Capture { port, source } => write!(
                f,
                "pcap capture of {port} failed and was stopped: {source}; check that the \
                 output file is writable and the disk is not full"
            ),
            BridgeError::BadMacString(s) => write!(
                f,
                "{s:?} is not a MAC address; write six hex bytes separated by colons, \
                 e.g. 00:16:3e:00:00:02"
            ),
            BridgeError::Malformed { reason } => write!(f, "malformed frame: {reason}"),
        }
    }
}

impl std::error::Error for BridgeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BridgeError::Capture { source, .. } => Some(source),
            _ => None,
        }
    }
}
