//! Counters.

/// A snapshot of the frontend's counters ([`crate::Netfront::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Frames handed to the stack.
    pub rx_packets: u64,
    /// Bytes handed to the stack.
    pub rx_bytes: u64,
    /// Rx GSO super-frames handed to the stack (one TCP segment larger than the MSS each).
    pub rx_gso: u64,
    /// Rx frames handed on with a partial checksum (`NETRXF_csum_blank`, every GSO frame):
    /// never summed by anyone.
    pub rx_csum_blank: u64,
    /// Rx frames handed on because the backend set `NETRXF_data_validated` (no `csum_blank`).
    pub rx_csum_validated: u64,
    /// Rx TCP/UDP frames without either flag whose checksum netfront verified (correct).
    pub rx_csum_verified: u64,
    /// Rx frames dropped because a slot's status was an error (< 0).
    pub rx_drop_status: u64,
    /// Rx frames dropped because a slot's offset + size passed the page end.
    pub rx_drop_bad_slot: u64,
    /// Rx frames dropped for being longer than the configured maximum frame (MTU + 14, or
    /// 65535 + 14 for GSO frames).
    pub rx_drop_too_long: u64,
    /// Rx frames dropped in flip mode because no page was transferred.
    pub rx_drop_no_transfer: u64,
    /// Rx frames whose responses stopped before their `more_data`/`extra_info` said (the rest
    /// never published: Linux's "Missing extra info" / "Need more slots").
    pub rx_drop_incomplete: u64,
    /// Rx frames with an extra-info slot that is malformed (type 0 or >= MAX, GSO size 0,
    /// unknown GSO type), not GSO, or a second GSO slot.
    pub rx_drop_bad_extra: u64,
    /// Rx frames with `csum_blank` or GSO when this frontend did not negotiate it.
    pub rx_drop_not_negotiated: u64,
    /// Rx GSO frames whose headers are not TCP over the IP version the GSO type names.
    pub rx_drop_gso_mismatch: u64,
    /// Rx frames with `csum_blank` that are not an unfragmented TCP/UDP packet over IPv4/IPv6.
    pub rx_drop_csum_blank: u64,
    /// Rx TCP/UDP frames (without `data_validated`) whose checksum netfront found wrong.
    pub rx_drop_csum: u64,
    /// Rx buffers posted.
    pub rx_posted: u64,
    /// Rx frames that came with a hash extra-info slot (receive hashing set up over the ctrl
    /// ring).
    pub rx_hash: u64,
    /// Rx frames that came with an XDP extra-info slot (a headroom before their data).
    pub rx_xdp: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// TCP/UDP frames sent with `NETTXF_csum_blank|NETTXF_data_validated` and only the
    /// pseudo-header sum in the checksum field.
    pub tx_csum_blank: u64,
    /// TCP/UDP frames whose checksum netfront completed itself before sending (IPv6 to a backend
    /// without `feature-ipv6-csum-offload`).
    pub tx_csum_filled: u64,
    /// Tx frames the backend answered with an error status (counted once per frame slot).
    pub tx_errors: u64,
    /// Tx frames dropped before sending (no room, or longer than the maximum).
    pub tx_drop: u64,
    /// Tx responses with an unknown or idle id (a buggy backend; ignored).
    pub tx_bad_response: u64,
    /// Multicast add/remove requests sent.
    pub tx_mcast: u64,
    /// Of those, adds the backend refused (its list was full).
    pub tx_mcast_refused: u64,
    /// Requests answered on the ctrl ring.
    pub ctrl_requests: u64,
    /// Grants the backend still held when their response came (retried later).
    pub grant_busy: u64,
    /// Event-channel notifications sent.
    pub notifies: u64,
    /// Events that found no work (the late end of interrupt's spurious count, XSA-391).
    pub spurious_wakeups: u64,
    /// Of those, events whose end of interrupt was held back: a backend storming the event
    /// channel is being throttled.
    pub eoi_delayed: u64,
}

impl Stats {
    /// Adds `o`'s counters to these.
    pub fn merge(&mut self, o: &Stats) {
        // Destructured so a new counter cannot be forgotten here.
        let Stats {
            rx_packets,
            rx_bytes,
            rx_gso,
            rx_csum_blank,
            rx_csum_validated,
            rx_csum_verified,
            rx_drop_status,
            rx_drop_bad_slot,
            rx_drop_too_long,
            rx_drop_no_transfer,
            rx_drop_incomplete,
            rx_drop_bad_extra,
            rx_drop_not_negotiated,
            rx_drop_gso_mismatch,
            rx_drop_csum_blank,
            rx_drop_csum,
            rx_posted,
            rx_hash,
            rx_xdp,
            tx_packets,
            tx_bytes,
            tx_csum_blank,
            tx_csum_filled,
            tx_errors,
            tx_drop,
            tx_bad_response,
            tx_mcast,
            tx_mcast_refused,
            ctrl_requests,
            grant_busy,
            notifies,
            spurious_wakeups,
            eoi_delayed,
        } = *o;
        self.rx_packets += rx_packets;
        self.rx_bytes += rx_bytes;
        self.rx_gso += rx_gso;
        self.rx_csum_blank += rx_csum_blank;
        self.rx_csum_validated += rx_csum_validated;
        self.rx_csum_verified += rx_csum_verified;
        self.rx_drop_status += rx_drop_status;
        self.rx_drop_bad_slot += rx_drop_bad_slot;
        self.rx_drop_too_long += rx_drop_too_long;
        self.rx_drop_no_transfer += rx_drop_no_transfer;
        self.rx_drop_incomplete += rx_drop_incomplete;
        self.rx_drop_bad_extra += rx_drop_bad_extra;
        self.rx_drop_not_negotiated += rx_drop_not_negotiated;
        self.rx_drop_gso_mismatch += rx_drop_gso_mismatch;
        self.rx_drop_csum_blank += rx_drop_csum_blank;
        self.rx_drop_csum += rx_drop_csum;
        self.rx_posted += rx_posted;
        self.rx_hash += rx_hash;
        self.rx_xdp += rx_xdp;
        self.tx_packets += tx_packets;
        self.tx_bytes += tx_bytes;
        self.tx_csum_blank += tx_csum_blank;
        self.tx_csum_filled += tx_csum_filled;
        self.tx_errors += tx_errors;
        self.tx_drop += tx_drop;
        self.tx_bad_response += tx_bad_response;
        self.tx_mcast += tx_mcast;
        self.tx_mcast_refused += tx_mcast_refused;
        self.ctrl_requests += ctrl_requests;
        self.grant_busy += grant_busy;
        self.notifies += notifies;
        self.spurious_wakeups += spurious_wakeups;
        self.eoi_delayed += eoi_delayed;
    }

    /// Rx frames dropped for bad offload metadata (the backend's extra-info slots and checksum
    /// flags).
    pub fn rx_drop_offload(&self) -> u64 {
        self.rx_drop_bad_extra
            + self.rx_drop_not_negotiated
            + self.rx_drop_gso_mismatch
            + self.rx_drop_csum_blank
    }

    /// Rx frames dropped, all reasons.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_drop_status
            + self.rx_drop_bad_slot
            + self.rx_drop_too_long
            + self.rx_drop_no_transfer
            + self.rx_drop_incomplete
            + self.rx_drop_offload()
            + self.rx_drop_csum
    }
}
