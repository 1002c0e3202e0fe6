//! The Linux host's network devices that `netbackd` plugs into its switch as uplinks.
//!
//! - [`tap`]: a TAP device (the host's own stack as a switch port, like `xenbr0` in dom0), with
//!   the [virtio-net header](vnet) for checksum and segmentation offload.
//! - [`packet`]: an AF_PACKET socket on a NIC or veth, promiscuous, batched with
//!   `recvmmsg`/`sendmmsg`, optionally with the virtio-net header (`PACKET_VNET_HDR`).
//! - [`iface`]: interface names, and putting an interface into a Linux bridge (what Xen's
//!   `vif-bridge` script does with a vif netdev).
//! - [`netns`]: throwaway network namespaces for tests (used by this crate's and netbackd's).
//!
//! Everything opens in the network namespace of the calling thread.
//!
//! # Why no TAP crate
//!
//! We need an L2 TAP with `IFF_NO_PI`, `IFF_VNET_HDR` with the raw header bytes in our hands,
//! `TUNSETOFFLOAD` with flags we choose, `TUNSETVNETHDRSZ`, a non-blocking descriptor we poll
//! ourselves, and attaching to an existing persistent TAP while knowing whether we created it.
//! `tun-rs` consumes the header itself (it splits GSO frames into segments and completes
//! checksums for a TUN's IP packets), fixes the offload flags and never sets the header size;
//! `tappers` and `tun-tap` have no virtio-net header or offload support; `tidy-tuntap` has no
//! offloads and sits on an old nix with a bindgen build. So the six TUN/TAP ioctls, plus the
//! AF_PACKET options, `recvmmsg` and `sendmmsg`, live in one audited module (`sys.rs`) over
//! `libc`; everything with a safe wrapper (open, read, write, sockets, `setns`, interface
//! indices) goes through `rustix`, and interface configuration through a small safe
//! rtnetlink module.
#![deny(unsafe_code)]

mod error;
pub mod iface;
mod netlink;
pub mod netns;
pub mod packet;
#[allow(unsafe_code)]
mod sys;
pub mod tap;
pub mod vnet;

pub use error::Error;
pub use packet::{PacketConfig, PacketSocket, PacketStats, RecvBatch, RecvFrame};
pub use tap::{Tap, TapConfig};
