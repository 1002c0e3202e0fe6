//! Ports: identity, kind, state and counters.

use std::fmt;
use std::net::IpAddr;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::fdb::FdbStats;

/// A port's number on its bridge. Numbers of removed ports are reused by later ports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub(crate) u16);

impl PortId {
    /// The port numbered `n`, for tools and models that drive a MAC table ([`crate::fdb::Fdb`])
    /// directly; a bridge hands out its own ids.
    pub const fn new(n: u16) -> Self {
        PortId(n)
    }

    /// The port number as an index (0-based).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl Serialize for PortId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl fmt::Debug for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// What sits behind a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A guest's virtual interface, `vif<domid>.<handle>` in Xen's naming.
    Vif {
        /// The guest domain.
        domid: u16,
        /// The interface number within the guest (`vif` device handle).
        handle: u32,
    },
    /// The physical (or remote-host) side of the driver domain.
    Uplink,
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortKind::Vif { domid, handle } => write!(f, "vif{domid}.{handle}"),
            PortKind::Uplink => f.write_str("uplink"),
        }
    }
}

/// Why the bridge dropped a frame. Each reason has its own counter in [`DropCounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the 14-byte Ethernet header (counted on the ingress port).
    TooShort,
    /// The source address has the group bit set (counted on the ingress port).
    SrcMulticast,
    /// The source address is 00:00:00:00:00:00 (counted on the ingress port).
    SrcZero,
    /// Received on a port that is down (counted on the ingress port).
    IngressDown,
    /// Destined to a port that is down (counted on that egress port).
    EgressDown,
    /// Known unicast whose destination is on the ingress port itself; a frame never goes back
    /// out the port it came in on (counted on the ingress port).
    Hairpin,
    /// Received on a locked port from a source MAC that is not pinned to (or, before locking,
    /// learned on) that port: anti-spoofing, counted on the ingress port.
    SrcNotAllowed,
    /// Received on an IP-locked port from an IPv4 or IPv6 source address, or with an ARP
    /// sender address, that is not the port's (nor DHCP from 0.0.0.0, an ARP probe, `::` or
    /// link-local). The remaining reasons up to [`DropReason::IpHeadShort`] are IP lock drops
    /// too, all counted on the ingress port; see [`crate::Bridge::set_port_ips`].
    SrcIpNotAllowed,
    /// ARP whose sender hardware address is not the frame's source MAC.
    ArpSenderMac,
    /// IPv6 Neighbour Advertisement whose target is not one of the port's addresses nor the
    /// link-local address it is sent from.
    NdTargetNotAllowed,
    /// ICMPv6 Router Advertisement or Redirect from a port that is not a router.
    NotARouter,
    /// VLAN-tagged (the switch does not look inside tags, so it cannot check the addresses).
    VlanTagged,
    /// An EtherType the lock cannot check (not IPv4, ARP or IPv6), not allowed on the port.
    EtherTypeNotAllowed,
    /// IPv4, IPv6 or ARP header that is malformed or truncated: wrong version, IPv4 header
    /// shorter than 20 bytes, ARP not for Ethernet and IPv4, a checked field past the end of the
    /// frame (or of the IPv6 payload), or too many IPv6 extension headers.
    IpMalformed,
    /// The checked fields are inside the frame but beyond the head its handle lends, so the
    /// lock cannot decide (see [`crate::Frame::bytes`]).
    IpHeadShort,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 15] = [
        DropReason::TooShort,
        DropReason::SrcMulticast,
        DropReason::SrcZero,
        DropReason::IngressDown,
        DropReason::EgressDown,
        DropReason::Hairpin,
        DropReason::SrcNotAllowed,
        DropReason::SrcIpNotAllowed,
        DropReason::ArpSenderMac,
        DropReason::NdTargetNotAllowed,
        DropReason::NotARouter,
        DropReason::VlanTagged,
        DropReason::EtherTypeNotAllowed,
        DropReason::IpMalformed,
        DropReason::IpHeadShort,
    ];

    /// Short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::SrcMulticast => "src_multicast",
            DropReason::SrcZero => "src_zero",
            DropReason::IngressDown => "ingress_down",
            DropReason::EgressDown => "egress_down",
            DropReason::Hairpin => "hairpin",
            DropReason::SrcNotAllowed => "src_not_allowed",
            DropReason::SrcIpNotAllowed => "src_ip_not_allowed",
            DropReason::ArpSenderMac => "arp_sender_mac",
            DropReason::NdTargetNotAllowed => "nd_target_not_allowed",
            DropReason::NotARouter => "not_a_router",
            DropReason::VlanTagged => "vlan_tagged",
            DropReason::EtherTypeNotAllowed => "ethertype_not_allowed",
            DropReason::IpMalformed => "ip_malformed",
            DropReason::IpHeadShort => "ip_head_short",
        }
    }
}

/// Drop counters of one port, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    counts: [u64; DropReason::ALL.len()],
}

impl Serialize for DropCounts {
    /// As a map from each reason's name to its count.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(DropReason::ALL.len()))?;
        for r in DropReason::ALL {
            m.serialize_entry(r.name(), &self.get(r))?;
        }
        m.end()
    }
}

impl DropCounts {
    /// Frames dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize]
    }

    /// Frames dropped for any reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    #[inline(always)]
    pub(crate) fn add(&mut self, reason: DropReason, n: u64) {
        self.counts[reason as usize] += n;
    }

    pub(crate) fn counts_mut(&mut self) -> &mut [u64; DropReason::ALL.len()] {
        &mut self.counts
    }
}

/// Counters of one port. A snapshot is a plain copy ([`crate::Bridge::port_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortStats {
    /// Frames received on this port (handed to the bridge), including dropped ones.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames queued for transmission on this port.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames received here that were flooded (broadcast, multicast, unknown unicast).
    pub floods: u64,
    /// Of those, broadcast frames.
    pub rx_broadcast: u64,
    /// Of those, multicast (non-broadcast) frames.
    pub rx_multicast: u64,
    /// Of those, unicast frames to an unknown (or aged-out) destination.
    pub rx_unknown_unicast: u64,
    /// MACs newly learned on this port.
    pub learned: u64,
    /// MACs that moved to this port from another one.
    pub moves_in: u64,
    /// Learns refused on this port (static entry elsewhere, or a bucket full of static entries).
    pub learn_refused: u64,
    /// Drops by reason.
    pub drops: DropCounts,
}

impl PortStats {
    /// Every counter as one array, in a fixed order (for summing and subtracting blocks).
    fn fields_mut(&mut self) -> [&mut u64; 11 + DropReason::ALL.len()] {
        let Self {
            rx_frames,
            rx_bytes,
            tx_frames,
            tx_bytes,
            floods,
            rx_broadcast,
            rx_multicast,
            rx_unknown_unicast,
            learned,
            moves_in,
            learn_refused,
            drops,
        } = self;
        let mut d = drops.counts_mut().iter_mut();
        let head = [
            rx_frames,
            rx_bytes,
            tx_frames,
            tx_bytes,
            floods,
            rx_broadcast,
            rx_multicast,
            rx_unknown_unicast,
            learned,
            moves_in,
            learn_refused,
        ];
        let mut head = head.into_iter();
        std::array::from_fn(|_| match head.next() {
            Some(f) => f,
            None => d.next().expect("11 fields then the drop counts"),
        })
    }

    /// Adds `o` counter by counter (wrapping, like the counters themselves).
    pub(crate) fn wrapping_add(&mut self, o: &PortStats) {
        let mut o = *o;
        for (a, b) in self.fields_mut().into_iter().zip(o.fields_mut()) {
            *a = a.wrapping_add(*b);
        }
    }

    /// Subtracts `o` counter by counter (wrapping).
    pub(crate) fn wrapping_sub(&mut self, o: &PortStats) {
        let mut o = *o;
        for (a, b) in self.fields_mut().into_iter().zip(o.fields_mut()) {
            *a = a.wrapping_sub(*b);
        }
    }
}

/// One port in a [`BridgeSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortSnapshot {
    /// The port.
    pub id: PortId,
    /// What is behind it.
    pub kind: PortKind,
    /// Forwarding state.
    pub up: bool,
    /// Whether the port learns source addresses.
    pub learning: bool,
    /// Whether the port is locked (accepts only pinned sources).
    pub locked: bool,
    /// The addresses the port's IP lock allows (empty: no IP lock).
    pub ips: Vec<IpAddr>,
    /// Learned MACs it holds in the table (expired ones until reclaimed).
    pub learned_macs: u32,
    /// Whether a pcap capture is running on it.
    pub capturing: bool,
    /// Its counters.
    pub stats: PortStats,
}

/// A copy of every counter of a bridge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BridgeSnapshot {
    /// Live ports in id order.
    pub ports: Vec<PortSnapshot>,
    /// The MAC table's counters.
    pub fdb: FdbStats,
}
