//! bridge-lite: a minimal L2 learning switch for a Xen driver domain.
//!
//! A driver domain that only moves frames between a NIC and its guests' vifs needs learning and
//! forwarding, nothing more. bridge-lite is that switch: ports (guest [`PortKind::Vif`]s and
//! an [`PortKind::Uplink`]), a fixed-capacity MAC table ([`fdb`]), a batch API that turns a
//! burst of frame *handles* from one port into per-port output queues ([`Bridge::forward`],
//! [`Output`]), per-port counters with drop reasons ([`PortStats`]), anti-spoofing per port
//! (MAC: [`Bridge::set_port_locked`]; IP: [`Bridge::set_port_ips`], see [`iplock`]), and pcap
//! capture of any port ([`Bridge::start_capture`]).
//!
//! The switch moves handles, never bytes: see [`frame`] for the handle contract and why it is
//! generic. The hot path reads only the fixed 14-byte Ethernet header; full validation with
//! etherparse lives in [`inspect()`] for the control path and tests.
//!
//! ```
//! use std::time::Duration;
//! use bridge_lite::{Bridge, BridgeConfig, MacAddr, Output, PortKind, testkit::udp_frame};
//!
//! let mut br = Bridge::new(BridgeConfig::default()).unwrap();
//! let uplink = br.add_port(PortKind::Uplink).unwrap();
//! let vif = br.add_port(PortKind::Vif { domid: 1, handle: 0 }).unwrap();
//! let (guest, remote) = (MacAddr::local(1), MacAddr::local(2));
//!
//! // The guest speaks first: its frame floods (destination unknown) and its MAC is learned.
//! let hello = udp_frame(guest, remote, 60, 0);
//! let mut out = Output::new();
//! br.forward(vif, &mut vec![hello.as_slice()], Duration::ZERO, &mut out).unwrap();
//! assert_eq!(out.queue(uplink).len(), 1);
//! out.clear();
//!
//! // The reply is known unicast: it goes to the vif only.
//! let reply = udp_frame(remote, guest, 60, 1);
//! br.forward(uplink, &mut vec![reply.as_slice()], Duration::from_millis(1), &mut out).unwrap();
//! assert_eq!(out.queue(vif).len(), 1);
//! assert_eq!(br.port_stats(vif).unwrap().tx_frames, 1);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bridge;
mod capture;
mod error;
pub mod fdb;
mod forwarder;
pub mod frame;
mod inspect;
pub mod iplock;
mod output;
mod port;
mod stats;
mod sync;
mod table;
pub mod testkit;

pub use bridge::{Bridge, BridgeConfig};
pub use capture::{CaptureDirection, CaptureSummary, SNAPLEN};
pub use error::BridgeError;
pub use fdb::{FdbEntry, FdbStats};
pub use forwarder::Forwarder;
pub use frame::{ETH_HLEN, Frame, FrameRef, MacAddr};
pub use inspect::{FrameInfo, inspect};
pub use iplock::IpLockOptions;
pub use output::Output;
pub use port::{BridgeSnapshot, DropCounts, DropReason, PortId, PortKind, PortSnapshot, PortStats};
pub use sync::SeededBug;
#[cfg(loom)]
pub use sync::seed_bug;
