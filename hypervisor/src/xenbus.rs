//! `io/xenbus.h`: the states both ends of a split device publish in their `state` node.

/// `enum xenbus_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum XenbusState {
    /// 0.
    Unknown = 0,
    /// 1: the device is being set up.
    Initialising = 1,
    /// 2: the backend wrote its features and waits for the frontend.
    InitWait = 2,
    /// 3: the frontend's keys are written (unused by netfront, which goes straight to Connected).
    Initialised = 3,
    /// 4: connected.
    Connected = 4,
    /// 5: tearing down.
    Closing = 5,
    /// 6: torn down.
    Closed = 6,
    /// 7.
    Reconfiguring = 7,
    /// 8.
    Reconfigured = 8,
}

impl XenbusState {
    /// Parses a `state` node's value.
    pub fn parse(s: &str) -> Option<Self> {
        use XenbusState::*;
        Some(match s.trim().parse::<u32>().ok()? {
            0 => Unknown,
            1 => Initialising,
            2 => InitWait,
            3 => Initialised,
            4 => Connected,
            5 => Closing,
            6 => Closed,
            7 => Reconfiguring,
            8 => Reconfigured,
            _ => return None,
        })
    }

    /// The node value.
    pub fn as_str(self) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6", "7", "8"][self as usize]
    }
}
