//! The backend's tunables, with Linux netback's defaults.

use std::time::Duration;

/// Netback tunables. `Config::default()` is Linux's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Packets delivered to one vif per rx pass (Linux `RX_BATCH_SIZE`).
    pub rx_batch_packets: usize,
    /// Grant-copy ops per hypercall (Linux `COPY_BATCH_SIZE`); 1 is one hypercall per op.
    pub copy_batch_ops: usize,
    /// Page transfers per hypercall in flip mode; 1 is one hypercall per page.
    pub flip_batch_pages: usize,
    /// Packets taken from one vif's tx ring per pass.
    pub tx_batch_packets: usize,
    /// Bytes queued for one vif's rx before further frames are dropped (Linux: 512 KiB).
    pub rx_queue_bytes: usize,
    /// A tx packet chaining more slots than this after its first is dropped
    /// (`XEN_NETBK_LEGACY_SLOTS_MAX`, 18: so 19 slots in all pass, as in Linux).
    pub tx_slots_drop: usize,
    /// A tx packet chaining more slots than this after its first disables the vif
    /// (`fatal_skb_slots`, 20).
    pub tx_slots_fatal: usize,
    /// A frame that waits in a vif's rx queue longer than this is dropped (Linux stamps each
    /// skb with `rx_drain_timeout_msecs`, 10 s), so a stalled guest cannot pin backend memory.
    pub rx_drain_timeout: Duration,
    /// Upper bound on how long the backend blocks with nothing to wake it: a safety net only.
    /// Events, watches and uplinks wake it at once, and it wakes for its own timers (rx
    /// expiry, delayed end of interrupt) when they are due; `tests/wakeups.rs` runs with this
    /// set to hours.
    pub poll_interval: Duration,
    /// MACs a vif's switch port may learn at once (`None`: no cap), so a guest cycling source
    /// addresses cannot push everyone else out of the MAC table. A port locked to the guest's
    /// configured MAC learns nothing anyway.
    pub vif_mac_limit: Option<u32>,
    /// An event channel whose events keep finding no work has its end of interrupt delayed,
    /// doubling from 1 ms per further spurious event up to this (XSA-332's lateeoi), so a guest
    /// notifying in a loop cannot buy unbounded backend passes.
    pub max_eoi_delay: Duration,
    /// How long the serving loop keeps passing over the rings and uplinks, yielding the CPU
    /// between passes, after a pass found no work and before it arms and blocks (Linux's
    /// `busy_poll`). Work arriving within it costs neither the peer's notification nor a
    /// wakeup; an idle backend pays it once per idle spell. Zero: block at once.
    pub busy_poll: Duration,
    /// How each vif's mode (host netdev or builtin switch) is chosen; by default from its
    /// `script` key (`vif-splitnet`: builtin).
    pub vif_mode: crate::ModePolicy,
    /// Queues a frontend may ask for (`multi-queue-max-queues`): Linux's default, min(8, online
    /// CPUs of the backend domain).
    pub max_queues: u32,
    /// Runs the control plane (xenstore watches, handshakes, lifecycle) on a thread of its own,
    /// so a slow or vanished xenstored never stalls the data path (default false: it runs
    /// inside `Netback::poll`, which tests rely on for determinism; netbackd turns it on).
    pub control_thread: bool,
    /// The deadline of each xenstore request the control thread makes (default 2 s); past it
    /// the connection is given up and made again.
    pub xenstore_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rx_batch_packets: 64,
            copy_batch_ops: 64,
            flip_batch_pages: 64,
            tx_batch_packets: 64,
            rx_queue_bytes: 512 * 1024,
            tx_slots_drop: netif_ring::netif::XEN_NETIF_NR_SLOTS_MIN as usize,
            tx_slots_fatal: 20,
            rx_drain_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(20),
            vif_mac_limit: Some(64),
            max_eoi_delay: Duration::from_millis(100),
            busy_poll: Duration::from_micros(20),
            vif_mode: crate::ModePolicy::Auto,
            max_queues: std::thread::available_parallelism().map_or(1, |n| n.get().min(8) as u32),
            control_thread: false,
            xenstore_timeout: Duration::from_secs(2),
        }
    }
}

impl Config {
    /// Checks the values make sense, saying which one does not and why.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |what: &'static str, why: &'static str| Err(crate::Error::Config { what, why });
        if self.rx_batch_packets == 0 || self.tx_batch_packets == 0 {
            return bad("rx_batch_packets/tx_batch_packets", "must be at least 1");
        }
        if self.copy_batch_ops == 0 || self.flip_batch_pages == 0 {
            return bad(
                "copy_batch_ops/flip_batch_pages",
                "must be at least 1 (1 = unbatched)",
            );
        }
        if self.tx_slots_drop > self.tx_slots_fatal {
            return bad("tx_slots_drop", "must not exceed tx_slots_fatal");
        }
        if self.tx_slots_drop + 1 < netif_ring::netif::XEN_NETIF_NR_SLOTS_MIN as usize {
            return bad(
                "tx_slots_drop",
                "every backend must accept XEN_NETIF_NR_SLOTS_MIN (18) slots per packet",
            );
        }
        if self.rx_queue_bytes < netif_ring::netif::MAX_FRAME {
            return bad(
                "rx_queue_bytes",
                "must hold at least one maximum-size frame (65549 B)",
            );
        }
        if !(1..=64).contains(&self.max_queues) {
            return bad("max_queues", "must be 1..=64");
        }
        if self.busy_poll > Duration::from_millis(10) {
            return bad(
                "busy_poll",
                "at most 10 ms: longer belongs to blocking, which wakes on every event anyway",
            );
        }
        Ok(())
    }
}
