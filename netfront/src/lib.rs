//! netfront: the Xen guest network frontend, as a smoltcp [`phy::Device`](smoltcp::phy::Device).
//!
//! A guest domain calls [`Netfront::connect`] with its domain handle and a device id; the
//! toolstack must already have created the vif's xenstore directories
//! (`Hypervisor::add_vif`), and a backend (netback) must be serving it on another thread. The
//! handshake follows Linux `xen-netfront.c`: wait for the backend's InitWait, check its
//! features, allocate and grant the tx and rx rings, allocate an event channel, write
//! `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy`, `feature-sg`,
//! `feature-rx-notify` and the offload keys ([`xenbus::offload_keys`]), switch to Connected and
//! wait for the backend's Connected.
//!
//! Data path:
//! - **RX**: buffers are posted in batches, as granted pages (copy mode) or accept-transfer
//!   entries (flip mode); single-slot frames are lent straight from the page to
//!   `RxToken::consume`, multi-slot (`NETRXF_more_data`) frames are assembled.
//! - **TX**: a frame is written into pool pages, each granted read-only for its request and
//!   revoked on the response; frames longer than a page use several slots.
//! - [`Netfront::poll`] processes both rings; [`Netfront::wait`] does the final checks and
//!   blocks on the event channel. Notifications are sent only when the ring says so.
//!
//! # Offloads
//!
//! As Linux netfront, with [`FrontConfig::csum_offload`] and [`FrontConfig::gso`] on (the
//! default): `feature-no-csum-offload=0`, `feature-ipv6-csum-offload=1`, `feature-gso-tcpv4=1`,
//! `feature-gso-tcpv6=1`, written whatever the backend offers (they say what this frontend
//! receives; the backend's keys of the same names are about what it takes from us).
//!
//! - **GSO receive.** A super-frame arrives as Linux netback lays it out: first data slot
//!   (`more_data|extra_info` plus checksum flags), the GSO extra-info slot (its request's buffer
//!   is recycled), the other data slots; up to 65535 + 14 bytes in 17 data slots, whatever the
//!   MTU. It goes to smoltcp as one frame: smoltcp checks no frame length against
//!   `max_transmission_unit` on receive, and its TCP takes a segment longer than the MSS it
//!   advertised (tested: a 64 KiB super-frame is read whole and ACKed).
//! - **Checksums, receive.** smoltcp's checksum capabilities are per protocol and direction,
//!   not per frame, so netfront turns smoltcp's TCP and UDP checksums off and does the per-frame
//!   part ([`FrontConfig::csum_offload`]): `csum_blank` frames (the field holds the pseudo-header
//!   sum; the data never left the machine) and `data_validated` frames are handed on without a
//!   pass over the data, as Linux hands on `CHECKSUM_PARTIAL`/`CHECKSUM_UNNECESSARY` skbs, and
//!   netfront verifies the rest itself, over the pages, before smoltcp sees them (a wrong one is
//!   dropped and counted). The alternative, keeping smoltcp's verification and completing each
//!   `csum_blank` frame first, sums a `csum_blank` frame twice and a validated one once. Per
//!   frame (`cargo bench -p netfront --bench csum`, shared 2-core VM, one run): a 64 KiB
//!   `csum_blank` super-frame 34 ns here against 6.7 us (complete + smoltcp verify); a validated
//!   one 0 against 3.1 us; a plain one 2.3 us (netfront over 17 pages) against 3.1 us (smoltcp);
//!   at 1514 B 37 ns against 157 ns, 0 against 104 ns, and 127 ns against 104 ns. IPv4 header
//!   and ICMP checksums stay smoltcp's (no flag covers them). Frames netfront cannot verify (IP
//!   fragments) go to smoltcp unverified; this workspace builds smoltcp without IPv4 reassembly,
//!   so it refuses them. Enabling reassembly would need smoltcp's TCP/UDP verification back on.
//! - **Checksums, transmit.** As Linux sends a `CHECKSUM_PARTIAL` skb: smoltcp writes 0 into
//!   TCP/UDP checksum fields, netfront writes the pseudo-header sum and sets
//!   `NETTXF_csum_blank|NETTXF_data_validated`; whoever needs the full checksum (an egress that
//!   cannot carry the offload) completes it, and a frame to another guest is never summed at
//!   all. 24 ns per frame against 60 ns for smoltcp computing a 1514-byte segment (2.1 us at
//!   64 KiB). IPv6 frames get the same only if the backend wrote `feature-ipv6-csum-offload=1`
//!   (Linux's `NETIF_F_IPV6_CSUM`); otherwise netfront completes them before sending.
//! - **No transmit GSO.** smoltcp sends MSS-sized segments as built here. smoltcp 0.14 does have
//!   a `segmentation-offload` feature (`DeviceCapabilities::segmentation`,
//!   `PacketMeta::segmentation_offload_size`) through which a device could take TSO frames and
//!   send them with a GSO extra slot to a backend with `feature-gso-tcpv4`; it is not enabled in
//!   the workspace and not built here.
//! - **Hostile metadata** (a malformed or non-GSO extra slot, GSO size 0 or an unknown type, a
//!   GSO type that does not match the headers, `csum_blank` on a frame that is not TCP/UDP, an
//!   offload not negotiated, a frame whose slots stop early) drops the frame with a counter per
//!   reason ([`Stats`]); none of it can panic.
//!
//! With `csum_offload: false` netfront writes `feature-no-csum-offload=1` and no GSO keys, and
//! smoltcp computes and verifies every checksum.
//!
//! A backend that breaks the ring protocol (an impossible producer index) disconnects the
//! device with [`Error::Ring`]; nothing a backend writes can make this crate panic.
//!
//! # Ctrl ring, multicast control, XDP headroom
//!
//! As a Windows guest uses the first two: [`FrontConfig::hashing`] makes a ctrl ring and sets
//! up Toeplitz hashing over it once connected (algorithm, flags, key, mapping over the
//! negotiated queues); received frames then come with a hash extra-info slot, whose value is
//! recorded ([`Netfront::last_rx`], [`Stats::rx_hash`]). [`FrontConfig::multicast`] asks for
//! multicast control and subscribes its groups with MCAST_ADD requests ([`Netfront::subscribe`],
//! [`Netfront::unsubscribe`] later). As Linux's netfront asks for XDP headroom:
//! [`FrontConfig::xdp_headroom`] / [`Netfront::set_xdp_headroom`] run the Reconfiguring
//! handshake; received data then starts at the headroom in each buffer, which the rx path
//! follows from each response (and from the XDP extra, for a backend that counts the headroom
//! in the slot's size as Linux's does).
//!
//! No `unsafe`: ring pages become ring memory through `hypervisor::ringpage`, the audited place.
#![forbid(unsafe_code)]

mod config;
mod ctrl;
mod device;
mod error;
mod ringmem;
mod rx;
mod rxcheck;
mod stats;
mod tx;
pub mod xenbus;

pub use config::{FrontConfig, HashConfig, RxMode};
pub use device::{Netfront, NetfrontRxToken, NetfrontTxToken};
pub use error::{Error, Result};
pub use stats::Stats;
