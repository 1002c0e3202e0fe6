//! The port table: what forwarders need to know about ports (live, up, learning, locks,
//! captures, the flood list), as an immutable snapshot. The control path replaces it whole on
//! every change ([`arc_swap::ArcSwap::store`]); each forwarder checks once per batch whether it
//! changed (an [`arc_swap::Cache`]: one load of the pointer and a compare, no write) and
//! forwards the whole batch with one table. A change therefore applies to batches that begin
//! after it is published; a batch in progress finishes with the table it began with.

use std::sync::{Arc, Mutex};

use crate::capture::{Capture, CaptureDirection};
use crate::iplock::IpLock;
use crate::port::PortKind;

/// In [`PortTable::state`]: a port exists on this number.
pub(crate) const LIVE: u8 = 1;
/// In [`PortTable::state`]: the port is up.
pub(crate) const UP: u8 = 2;

/// A running capture, shared by the port table and the control path. Forwarders lock it only
/// to record a frame of this port; the control path takes the capture out to stop it, so a
/// forwarder still holding an older table then finds it empty and records nothing.
#[derive(Debug)]
pub(crate) struct CaptureSlot {
    pub(crate) dir: CaptureDirection,
    pub(crate) cap: Mutex<Option<Capture>>,
}

impl CaptureSlot {
    /// Records one frame, if the capture is still running.
    #[inline]
    pub(crate) fn record(&self, now: std::time::Duration, data: &[u8], frame_len: usize) {
        let mut c = self.cap.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = c.as_mut() {
            c.record(now, data, frame_len);
        }
    }
}

/// One port's settings.
#[derive(Debug, Clone)]
pub(crate) struct PortConf {
    pub(crate) kind: PortKind,
    /// The port's generation in the MAC table (see `Fdb::open_port`): learners withdraw
    /// entries they publish for a generation that is gone.
    pub(crate) generation: u32,
    pub(crate) learning: bool,
    pub(crate) locked: bool,
    pub(crate) ip_lock: Arc<IpLock>,
    pub(crate) capture: Option<Arc<CaptureSlot>>,
}

/// The port table. Indexed by port number.
#[derive(Debug, Clone, Default)]
pub(crate) struct PortTable {
    /// Bumped on every change; orders tables for the port-number quarantine.
    pub(crate) version: u64,
    /// Per port number: [`LIVE`] | [`UP`] (dense, for the per-frame checks).
    pub(crate) state: Vec<u8>,
    /// Per port number: its settings, `None` when no port has it.
    pub(crate) conf: Vec<Option<PortConf>>,
    /// Live port numbers in ascending order: the flood set.
    pub(crate) flood_list: Vec<u16>,
    /// Ports with a capture running (0: no capture costs anything per batch).
    pub(crate) captures: usize,
}

impl PortTable {
    /// Port `i`'s state bits (0 for a number beyond the table).
    #[inline(always)]
    pub(crate) fn state(&self, i: usize) -> u8 {
        self.state.get(i).copied().unwrap_or(0)
    }

    /// Port `i`'s settings, if it exists.
    #[inline(always)]
    pub(crate) fn conf(&self, i: usize) -> Option<&PortConf> {
        self.conf.get(i).and_then(Option::as_ref)
    }

    pub(crate) fn conf_mut(&mut self, i: usize) -> &mut PortConf {
        self.conf[i]
            .as_mut()
            .expect("the control path changes only ports it checked")
    }

    pub(crate) fn rebuild_flood_list(&mut self) {
        self.flood_list.clear();
        self.flood_list.extend(
            self.conf
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_some())
                .map(|(i, _)| i as u16),
        );
    }
}
