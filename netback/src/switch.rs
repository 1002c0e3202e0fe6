//! The backend's switches: bridge-lite instances, one per `bridge=` name a builtin vif may
//! join, plus one private two-port switch per host-mode vif (the vif and its netdev: with
//! learning off it floods every frame to the one other port, a pipe through the same plumbing,
//! counters and pcap as everything else).
//!
//! A vif joins only the switch its device names, never another one: vifs meant for different
//! bridges never share a broadcast domain.
//!
//! A builtin vif's port is locked to its configured MAC (a static entry). Two vifs can claim
//! one MAC at once while a guest moves between domains (save/restore, a localhost migration:
//! the new domain's vif connects before the old one goes, and a cancelled migration resumes the
//! old one): the newest connected claimant holds the entry, and when it goes the previous
//! claimant still connected gets it back, so the survivor is never left locked out.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use bridge_lite::{Bridge, BridgeConfig, BridgeSnapshot, MacAddr, Output, PortId};
use hypervisor::BackendDomain;

use crate::pool::NetFrame;
use crate::vif::VifId;

/// A switch's index in [`Switches`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct SwitchId(pub usize);

/// One switch and the frames it queued in the current pass.
pub(crate) struct Switch<D: BackendDomain> {
    pub(crate) name: String,
    pub(crate) bridge: Bridge,
    pub(crate) out: Output<NetFrame<D>>,
    /// The host-mode vif this private switch serves (`None`: a named switch).
    pub(crate) owner: Option<VifId>,
    /// Per MAC, the ports claiming it, oldest first; the last holds the static entry.
    claims: HashMap<MacAddr, Vec<PortId>>,
}

impl<D: BackendDomain> fmt::Debug for Switch<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Switch")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .finish()
    }
}

impl<D: BackendDomain> Switch<D> {
    fn new(name: &str, owner: Option<VifId>) -> Result<Self, bridge_lite::BridgeError> {
        Ok(Self {
            name: name.to_string(),
            bridge: Bridge::new(BridgeConfig::default())?,
            out: Output::new(),
            owner,
            claims: HashMap::new(),
        })
    }

    /// Locks `port` to `mac`: the port accepts only that source, and `mac` is pinned to it (the
    /// newest claimant wins; see the module docs). Returns false if the table could not hold
    /// the entry (the port then stays unlocked).
    pub(crate) fn claim_mac(&mut self, mac: MacAddr, port: PortId) -> bool {
        if self.bridge.add_static(mac, port).is_err() {
            return false;
        }
        let _ = self.bridge.set_port_locked(port, true);
        self.claims.entry(mac).or_default().push(port);
        true
    }

    /// `port` (already removed from the bridge, which flushed its entries) gives up `mac`: if it
    /// held the entry, the newest other claimant gets it back.
    pub(crate) fn release_mac(&mut self, mac: MacAddr, port: PortId) {
        let Some(ports) = self.claims.get_mut(&mac) else {
            return;
        };
        let held = ports.last() == Some(&port);
        ports.retain(|p| *p != port);
        match ports.last() {
            Some(&next) if held => {
                if self.bridge.add_static(mac, next).is_err() {
                    log::warn!("{}: cannot hand {mac} back to {next}", self.name);
                }
            }
            Some(_) => {}
            None => {
                self.claims.remove(&mac);
            }
        }
    }

    /// Locks `port`'s source IP addresses (the `ip` key).
    pub(crate) fn lock_ips(&mut self, port: PortId, ips: &[IpAddr]) -> bool {
        self.bridge.set_port_ips(port, ips).is_ok()
    }
}

/// Every switch of the backend: named ones by name, private ones by owner.
pub(crate) struct Switches<D: BackendDomain> {
    slots: Vec<Option<Switch<D>>>,
}

impl<D: BackendDomain> fmt::Debug for Switches<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.slots.iter().flatten()).finish()
    }
}

impl<D: BackendDomain> Switches<D> {
    /// No switches.
    pub(crate) fn new() -> Self {
        Self { slots: Vec::new() }
    }

    fn insert(&mut self, sw: Switch<D>) -> SwitchId {
        match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(sw);
                SwitchId(i)
            }
            None => {
                self.slots.push(Some(sw));
                SwitchId(self.slots.len() - 1)
            }
        }
    }

    /// The named switch `name`, if there is one.
    pub(crate) fn named(&self, name: &str) -> Option<SwitchId> {
        self.slots
            .iter()
            .position(|s| {
                s.as_ref()
                    .is_some_and(|s| s.owner.is_none() && s.name == name)
            })
            .map(SwitchId)
    }

    /// The named switch `name`, made if there is none yet.
    pub(crate) fn named_or_new(
        &mut self,
        name: &str,
    ) -> Result<SwitchId, bridge_lite::BridgeError> {
        match self.named(name) {
            Some(id) => Ok(id),
            None => Ok(self.insert(Switch::new(name, None)?)),
        }
    }

    /// A new private switch for host-mode vif `owner`, named after its netdev.
    pub(crate) fn private(
        &mut self,
        name: &str,
        owner: VifId,
    ) -> Result<SwitchId, bridge_lite::BridgeError> {
        Ok(self.insert(Switch::new(name, Some(owner))?))
    }

    /// Drops a switch (a private one whose device went away).
    pub(crate) fn remove(&mut self, id: SwitchId) {
        if let Some(s) = self.slots.get_mut(id.0) {
            *s = None;
        }
    }

    /// The switch `id`. Panics on an id this set never handed out or already removed: ids
    /// are the backend's own, never a guest's.
    pub(crate) fn get(&mut self, id: SwitchId) -> &mut Switch<D> {
        self.slots[id.0]
            .as_mut()
            .expect("a switch id the backend holds names a live switch")
    }

    /// The switch `id`, to read (as [`Switches::get`]).
    pub(crate) fn get_ref(&self, id: SwitchId) -> &Switch<D> {
        self.slots[id.0]
            .as_ref()
            .expect("a switch id the backend holds names a live switch")
    }

    /// Every switch with its id.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (SwitchId, &mut Switch<D>)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|s| (SwitchId(i), s)))
    }

    /// Every switch with its id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SwitchId, &Switch<D>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (SwitchId(i), s)))
    }

    /// Names of the named switches, for messages.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.iter()
            .filter(|(_, s)| s.owner.is_none())
            .map(|(_, s)| s.name.as_str())
            .collect()
    }

    /// Every switch's counters.
    pub(crate) fn snapshots(&self) -> Vec<SwitchSnapshot> {
        self.iter()
            .map(|(id, s)| SwitchSnapshot {
                id,
                name: s.name.clone(),
                owner: s.owner,
                bridge: s.bridge.snapshot(),
                uplinks: Vec::new(),
            })
            .collect()
    }
}

/// One switch's counters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwitchSnapshot {
    /// Its index.
    pub id: SwitchId,
    /// Its name: the `bridge=` name of a named switch, the netdev of a host-mode vif's own.
    pub name: String,
    /// The host-mode vif a private switch serves.
    pub owner: Option<VifId>,
    /// Per-port counters.
    pub bridge: BridgeSnapshot,
    /// The name of each uplink port (a TAP, a NIC, a host-mode vif's netdev): port numbers
    /// are per switch, so this, not [`NetbackSnapshot::uplinks`](crate::NetbackSnapshot), names
    /// a port of this switch.
    pub uplinks: Vec<(PortId, String)>,
}
