//! A read-only view of the backend for operators' tools (netbackd's `ctl list` and `ctl dump`),
//! and the two operator actions that change it: close one device, and the default rate.
//!
//! Everything here is `Send` data copied out of the backend on its own thread; nothing hands
//! out a reference into it. A dump reads each ring's shared indices once (relaxed, as Linux's
//! debugfs `io_ring` file does): a diagnostic picture, not a protocol step.

use std::net::IpAddr;

use hypervisor::{BackendDomain, XenbusState};
use netif_ring::raw;

use super::Netback;
use crate::device::VifMode;
use crate::rate::Rate;
use crate::vif::{Vif, VifId};

/// One device as the backend serves it (`ctl list`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceInfo {
    /// Its vif.
    pub id: VifId,
    /// The state this backend last wrote (`None`: not one the control plane tracks, e.g. a
    /// vif connected by hand).
    #[serde(serialize_with = "state_as_text")]
    pub state: Option<XenbusState>,
    /// Host (a netdev) or builtin (a switch port).
    pub mode: VifMode,
    /// The switch its port is on: the `bridge=` switch in builtin mode, the netdev's private
    /// switch (named after the netdev) in host mode.
    pub switch: String,
    /// Host mode: its netdev.
    pub netdev: Option<String>,
    /// The MAC the toolstack configured.
    pub mac: Option<String>,
    /// The addresses its port is locked to (builtin mode).
    pub ips: Vec<IpAddr>,
    /// Queues the frontend set up (0 until it connects).
    pub queues: u32,
    /// The transmit limit in force: its `rate` key's, else the backend's default.
    pub rate: Option<RateInfo>,
    /// Whether the limit in force is the backend's default (no `rate` key).
    pub rate_is_default: bool,
    /// Whether its rings are mapped and served.
    pub connected: bool,
    /// Why the vif was disabled, if it was.
    pub disabled: Option<String>,
}

/// A transmit limit as an operator reads it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RateInfo {
    /// Bytes per window.
    pub bytes: u64,
    /// The window in microseconds.
    pub usecs: u64,
    /// Bytes per second.
    pub bytes_per_sec: f64,
}

impl From<Rate> for RateInfo {
    fn from(r: Rate) -> Self {
        RateInfo {
            bytes: r.bytes,
            usecs: r.window.as_micros() as u64,
            bytes_per_sec: r.bytes_per_sec(),
        }
    }
}

fn state_as_text<S: serde::Serializer>(s: &Option<XenbusState>, ser: S) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.collect_str(&format_args!("{s:?}")),
        None => ser.serialize_none(),
    }
}

/// One ring's indices: the shared ones as the page holds them now, the backend's private ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RingDump {
    /// Slots.
    pub size: u32,
    /// Shared: the frontend's producer of requests.
    pub req_prod: u32,
    /// Private: requests the backend has taken.
    pub req_cons: u32,
    /// Shared: where the backend asked to be notified of requests.
    pub req_event: u32,
    /// Shared: the responses the backend has published.
    pub rsp_prod: u32,
    /// Private: responses written, published or not.
    pub rsp_prod_pvt: u32,
    /// Shared: where the frontend asked to be notified of responses.
    pub rsp_event: u32,
    /// Requests pushed and not yet taken (`req_prod - req_cons`, wrapping).
    pub pending_requests: u32,
    /// Requests taken and not yet answered (`req_cons - rsp_prod_pvt`, wrapping).
    pub in_flight: u32,
}

/// One vif's rings and pending work (`ctl dump`, as Linux's debugfs `io_ring`), per queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VifDump {
    /// Its vif.
    pub id: VifId,
    /// Whether it was disabled.
    pub disabled: bool,
    /// Each of its queues, in queue order.
    pub queues: Vec<QueueDump>,
}

/// One queue's rings and pending work.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueDump {
    /// Its index among the vif's queues.
    pub index: u16,
    /// The local event-channel port of its transmit side (its only one unless split).
    pub tx_port: u32,
    /// The local port of its receive side (`tx_port` unless event channels are split).
    pub rx_port: u32,
    /// Guest → backend.
    pub tx: RingDump,
    /// Backend → guest.
    pub rx: RingDump,
    /// Frames queued for the guest, waiting for rx buffers.
    pub rx_queue_frames: usize,
    /// Their bytes.
    pub rx_queue_bytes: usize,
    /// Whether its transmit waits for rate credit (and for how many more microseconds).
    pub tx_credit_wait_us: Option<u64>,
    /// Whether an end of interrupt is being held back (an event storm, XSA-332).
    pub eoi_held_back: bool,
}

fn ring_dump<K: netif_ring::RingKind, M: netif_ring::RingMem>(
    ring: &netif_ring::BackRing<K, M>,
) -> RingDump {
    let shared = raw::indices(ring.mem());
    let (req_cons, rsp_prod_pvt) = (ring.req_cons(), ring.rsp_prod_pvt());
    RingDump {
        size: ring.size(),
        req_prod: shared.req_prod,
        req_cons,
        req_event: shared.req_event,
        rsp_prod: shared.rsp_prod,
        rsp_prod_pvt,
        rsp_event: shared.rsp_event,
        pending_requests: shared.req_prod.wrapping_sub(req_cons),
        in_flight: req_cons.wrapping_sub(rsp_prod_pvt),
    }
}

impl<D: BackendDomain> Netback<D> {
    /// Every device the control plane tracks, and every vif connected by hand, in vif order.
    pub fn device_list(&self) -> Vec<DeviceInfo> {
        let dp = &self.dp;
        let mut ids: Vec<VifId> = dp.devices.keys().copied().collect();
        ids.extend(dp.vifs.iter().map(|v| v.id));
        ids.sort_unstable();
        ids.dedup();
        let states = match &self.control {
            super::Control::Inline(x) => x.device_states(),
            super::Control::Thread(t) => t.device_states(),
        };
        ids.into_iter()
            .map(|id| {
                let vif = dp.vifs.iter().find(|v| v.id == id);
                let prepared = dp.devices.get(&id);
                let cfg = prepared.map(|p| &p.cfg);
                let switch = prepared
                    .map(|p| p.switch)
                    .or(vif.map(Vif::switch))
                    .map(|s| dp.switches.get_ref(s).name.clone())
                    .unwrap_or_default();
                let own_rate = cfg.and_then(|c| c.rate);
                DeviceInfo {
                    id,
                    state: states.get(&id).copied(),
                    mode: cfg.map_or(VifMode::Builtin, |c| c.mode),
                    switch,
                    netdev: cfg
                        .filter(|c| c.mode == VifMode::Host)
                        .map(|c| c.netdev.clone()),
                    mac: cfg
                        .and_then(|c| c.mac)
                        .or(vif.and_then(Vif::mac))
                        .map(|m| m.to_string()),
                    ips: cfg.map(|c| c.ips.clone()).unwrap_or_default(),
                    queues: vif.map_or(0, |v| v.num_queues() as u32),
                    rate: vif
                        .and_then(Vif::rate)
                        .or(own_rate.or(dp.default_rate))
                        .map(RateInfo::from),
                    rate_is_default: own_rate.is_none() && dp.default_rate.is_some(),
                    connected: vif.is_some(),
                    disabled: vif.and_then(|v| v.stats().fatal.map(|f| f.to_string())),
                }
            })
            .collect()
    }

    /// Vif `id`'s rings and pending work, if it is connected.
    pub fn vif_dump(&self, id: VifId) -> Option<VifDump> {
        let v = self.dp.vifs.iter().find(|v| v.id == id)?;
        let now = std::time::Instant::now();
        Some(VifDump {
            id,
            disabled: v.is_disabled(),
            queues: v
                .queues
                .iter()
                .map(|q| QueueDump {
                    index: q.index,
                    tx_port: q.tx_port.0,
                    rx_port: q.rx_port.0,
                    tx: ring_dump(&q.tx),
                    rx: ring_dump(&q.rx),
                    rx_queue_frames: q.rx_queue.len(),
                    rx_queue_bytes: q.rx_queue.bytes(),
                    tx_credit_wait_us: q
                        .tx_waiting_until()
                        .map(|t| t.saturating_duration_since(now).as_micros() as u64),
                    eoi_held_back: q.eoi.iter().any(|e| e.deadline().is_some()),
                })
                .collect(),
        })
    }

    /// Closes device `id` as the toolstack's detach would (Closing, then Closed; the guest sees
    /// its backend go), keeping it tracked: its frontend may start over, or the toolstack may
    /// remove it. Returns false if no such device is tracked.
    pub fn close_device(&mut self, id: VifId) -> bool {
        match &mut self.control {
            super::Control::Inline(x) => x.close(id, &mut self.dp),
            super::Control::Thread(t) => t.close(id, &mut self.dp),
        }
    }

    /// The transmit limit of vifs whose device has no `rate` key (`None`: unlimited). Applies
    /// at once to the connected ones (with a fresh window of credit) and to later connects; a
    /// vif's own `rate` key always wins.
    pub fn set_default_rate(&mut self, rate: Option<Rate>) {
        let dp = &mut self.dp;
        if dp.default_rate == rate {
            return;
        }
        dp.default_rate = rate;
        for v in &mut dp.vifs {
            let own = dp.devices.get(&v.id).and_then(|p| p.cfg.rate);
            if own.is_none() {
                v.set_rate(rate);
            }
        }
    }

    /// The transmit limit of vifs without a `rate` key.
    pub fn default_rate(&self) -> Option<Rate> {
        self.dp.default_rate
    }
}
