//! Full frame validation with etherparse, for the control path, tools and tests. The forwarding
//! hot path never calls this: it reads only the fixed 14-byte header
//! ([`crate::frame::read_macs`]).

use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

use crate::error::BridgeError;
use crate::frame::{ETH_HLEN, MacAddr};

/// What [`inspect`] found in a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    /// Destination address.
    pub dst: MacAddr,
    /// Source address.
    pub src: MacAddr,
    /// The EtherType after any VLAN tags.
    pub ether_type: u16,
    /// The outer VLAN id, when tagged.
    pub vlan: Option<u16>,
    /// Network layer: "ipv4", "ipv6", "arp" or `None`.
    pub network: Option<&'static str>,
    /// Transport layer: "tcp", "udp", "icmpv4", "icmpv6", "igmp" or `None`.
    pub transport: Option<&'static str>,
    /// Frame length in bytes.
    pub len: usize,
}

/// Parses a whole Ethernet II frame (VLAN tags, IPv4/IPv6/ARP, TCP/UDP/ICMP) and reports its
/// headers, or why it is malformed (truncated headers, bad IP header length, ...). A frame
/// whose upper layers etherparse does not know is accepted with `network`/`transport` `None`.
pub fn inspect(frame: &[u8]) -> Result<FrameInfo, BridgeError> {
    if frame.len() < ETH_HLEN {
        return Err(BridgeError::Malformed {
            reason: format!(
                "{} bytes is shorter than the {ETH_HLEN}-byte Ethernet header",
                frame.len()
            ),
        });
    }
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| BridgeError::Malformed {
        reason: e.to_string(),
    })?;
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return Err(BridgeError::Malformed {
            reason: "no Ethernet II header".into(),
        });
    };
    let vlan = p.vlan().map(|v| match v {
        etherparse::VlanSlice::SingleVlan(s) => s.vlan_identifier().value(),
        etherparse::VlanSlice::DoubleVlan(d) => d.outer.vlan_identifier().value(),
    });
    let ether_type = p
        .vlan()
        .map(|v| match v {
            etherparse::VlanSlice::SingleVlan(s) => s.ether_type(),
            etherparse::VlanSlice::DoubleVlan(d) => d.inner.ether_type(),
        })
        .unwrap_or_else(|| eth.ether_type())
        .0;
    let network = p.net.as_ref().map(|n| match n {
        NetSlice::Ipv4(_) => "ipv4",
        NetSlice::Ipv6(_) => "ipv6",
        NetSlice::Arp(_) => "arp",
    });
    let transport = p.transport.as_ref().map(|t| match t {
        TransportSlice::Tcp(_) => "tcp",
        TransportSlice::Udp(_) => "udp",
        TransportSlice::Icmpv4(_) => "icmpv4",
        TransportSlice::Icmpv6(_) => "icmpv6",
        TransportSlice::Igmp(_) => "igmp",
    });
    Ok(FrameInfo {
        dst: MacAddr(eth.destination()),
        src: MacAddr(eth.source()),
        ether_type,
        vlan,
        network,
        transport,
        len: frame.len(),
    })
}
