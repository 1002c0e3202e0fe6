//! Guest receive stall detection (Linux 6.1's `xenvif_rx_queue_stalled`,
//! `xenvif_rx_queue_ready` and the carrier they switch).
//!
//! A queue is *stalled* when frames wait for it, its guest has no receive request posted at
//! all, and nothing was put on its ring for `Config::rx_stall_timeout` (60 s, Linux's
//! `rx_stall_timeout_msecs`). Then, as Linux turns the vif's carrier off:
//! - the frames queued for it are dropped at once (counted in `rx_stall_drops`) rather than
//!   left to expire one by one, and the guest is asked to notify as soon as it posts one buffer
//!   (`req_event = req_cons + 1`);
//! - while any queue of the vif is stalled, every frame switched to the vif is dropped on
//!   arrival and counted (`rx_stall_drops`), never held, so a guest that stopped reading pins
//!   no backend pages;
//! - a stalled queue is *ready* again on the first pass that finds a request posted; the stall
//!   clock restarts then, and the carrier is on again once no queue of the vif is stalled.
//!
//! Like Linux, the clock runs from the last frame put on the ring (or from the first pass after
//! connecting, or from the last recovery), and a queue with nothing waiting never stalls: a
//! guest that is idle, or has buffers posted that are too few for the frame at the head (that
//! frame expires after `rx_drain_timeout`), is not reported. Time is the pass's `now`.

use std::time::{Duration, Instant};

use hypervisor::BackendDomain;

use crate::vif::{Fatal, Queue};

impl<D: BackendDomain> Queue<D> {
    /// Run at the start of each rx pass of this queue: switches it to stalled or back to ready.
    /// `timeout` zero turns detection off (a queue stalled meanwhile is made ready).
    pub(crate) fn rx_watch_stall(&mut self, now: Instant, timeout: Duration) {
        let since = *self.rx_last_progress.get_or_insert(now);
        if self.rx_stalled {
            if timeout.is_zero() {
                self.rx_ready(now);
                return;
            }
            match self.rx.unconsumed_requests() {
                Ok(0) => {}
                Ok(_) => self.rx_ready(now),
                Err(e) => self.disable(Fatal::Ring(e)),
            }
            return;
        }
        if timeout.is_zero()
            || self.rx_queue.is_empty()
            || now.saturating_duration_since(since) < timeout
        {
            return;
        }
        match self.rx.unconsumed_requests() {
            Ok(0) => self.rx_stall(now, timeout),
            Ok(_) => {}
            Err(e) => self.disable(Fatal::Ring(e)),
        }
    }

    /// When this queue would be found stalled if nothing changes (frames wait and the guest
    /// posts nothing): the backend's wait must not sleep past it.
    pub(crate) fn rx_stall_deadline(&self, timeout: Duration) -> Option<Instant> {
        if timeout.is_zero() || self.rx_stalled || self.rx_queue.is_empty() {
            return None;
        }
        self.rx_last_progress.map(|t| t + timeout)
    }

    /// Frames were put on the ring this pass: the stall clock starts again.
    pub(crate) fn rx_progress(&mut self, now: Instant) {
        self.rx_last_progress = Some(now);
    }

    /// Whether this queue's guest receive is stalled (its vif's carrier is off). A disabled
    /// queue is not: being disabled says more, and its frames count as discarded.
    pub(crate) fn is_rx_stalled(&self) -> bool {
        self.rx_stalled && !self.is_disabled()
    }

    fn rx_stall(&mut self, now: Instant, timeout: Duration) {
        self.rx_stalled = true;
        self.stats.rx_stalls += 1;
        let dropped = self.rx_queue.clear() as u64;
        self.stats.rx_stall_drops += dropped;
        // Ask for an event at the first buffer posted, so recovery needs no timer.
        let at = self.rx.req_cons().wrapping_add(1);
        self.rx.set_req_event(at);
        let idle = self
            .rx_last_progress
            .map_or(timeout, |t| now.saturating_duration_since(t));
        crate::ratelimit::guest_log(
            log::Level::Warn,
            self.id,
            format_args!(
                "{} queue {}: guest rx stalled: no receive buffer posted and nothing delivered \
                 for {} s while frames waited; carrier off, {dropped} queued frame(s) dropped \
                 and frames for it are dropped until the guest posts buffers again",
                self.id,
                self.index,
                idle.as_secs()
            ),
        );
    }

    fn rx_ready(&mut self, now: Instant) {
        self.rx_stalled = false;
        self.rx_last_progress = Some(now);
        crate::ratelimit::guest_log(
            log::Level::Info,
            self.id,
            format_args!(
                "{} queue {}: guest rx ready: it posted receive buffers again",
                self.id, self.index
            ),
        );
    }
}
