//! Counters.

/// A snapshot of the frontend's counters ([`crate::Netfront::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Frames handed to the stack.
    pub rx_packets: u64,
    /// Bytes handed to the stack.
    pub rx_bytes: u64,
    /// Rx frames dropped because a slot's status was an error (< 0).
    pub rx_drop_status: u64,
    /// Rx frames dropped because a slot's offset + size passed the page end.
    pub rx_drop_bad_slot: u64,
    /// Rx frames dropped for being longer than the configured maximum frame.
    pub rx_drop_too_long: u64,
    /// Rx frames dropped in flip mode because no page was transferred.
    pub rx_drop_no_transfer: u64,
    /// Rx extra-info slots skipped (not negotiated, ignored).
    pub rx_extra_ignored: u64,
    /// Rx buffers posted.
    pub rx_posted: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Tx frames the backend answered with an error status (counted once per frame slot).
    pub tx_errors: u64,
    /// Tx frames dropped before sending (no room, or longer than the maximum).
    pub tx_drop: u64,
    /// Tx responses with an unknown or idle id (a buggy backend; ignored).
    pub tx_bad_response: u64,
    /// Grants the backend still held when their response came (retried later).
    pub grant_busy: u64,
    /// Event-channel notifications sent.
    pub notifies: u64,
    /// Wakeups from `wait` that found no work.
    pub spurious_wakeups: u64,
}

impl Stats {
    /// Adds `o`'s counters to these.
    pub fn merge(&mut self, o: &Stats) {
        let Stats {
            rx_packets,
            rx_bytes,
            rx_drop_status,
            rx_drop_bad_slot,
            rx_drop_too_long,
            rx_drop_no_transfer,
            rx_extra_ignored,
            rx_posted,
            tx_packets,
            tx_bytes,
            tx_errors,
            tx_drop,
            tx_bad_response,
            grant_busy,
            notifies,
            spurious_wakeups,
        } = *o;
        self.rx_packets += rx_packets;
        self.rx_bytes += rx_bytes;
        self.rx_drop_status += rx_drop_status;
        self.rx_drop_bad_slot += rx_drop_bad_slot;
        self.rx_drop_too_long += rx_drop_too_long;
        self.rx_drop_no_transfer += rx_drop_no_transfer;
        self.rx_extra_ignored += rx_extra_ignored;
        self.rx_posted += rx_posted;
        self.tx_packets += tx_packets;
        self.tx_bytes += tx_bytes;
        self.tx_errors += tx_errors;
        self.tx_drop += tx_drop;
        self.tx_bad_response += tx_bad_response;
        self.grant_busy += grant_busy;
        self.notifies += notifies;
        self.spurious_wakeups += spurious_wakeups;
    }

    /// Rx frames dropped, all reasons.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_drop_status
            + self.rx_drop_bad_slot
            + self.rx_drop_too_long
            + self.rx_drop_no_transfer
    }
}
