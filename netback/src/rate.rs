//! The `rate` key: xen-netback's credit scheduler on the guest's transmit.
//!
//! libxl writes `rate` as `bytes,usecs` (from `rate=10Mb/s@20ms` in the vif config; 50 ms when
//! no interval is given): the guest may send `bytes` per window of `usecs`. As Linux's
//! `tx_credit_exceeded`/`tx_add_credit`: each window adds `bytes` of credit, capped at
//! `max(bytes, 128 KiB)` so a 64 KiB super-frame can always go through eventually; a packet
//! bigger than the credit left waits for the next window (the vif's tx stops there, and the
//! backend's wait wakes at the window's end); a packet within it is taken and charged. With no
//! `rate` key (or `0,0`) the guest is not limited.

use std::time::{Duration, Instant};

/// The most credit a window may leave over: enough for a 64 KiB super-frame and then some, as
/// Linux (128 KiB).
const MIN_BURST: u64 = 128 * 1024;

/// A parsed `rate` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Bytes of credit per window.
    pub bytes: u64,
    /// The window.
    pub window: Duration,
}

impl Rate {
    /// Parses libxl's `bytes,usecs`. `None` for no limit (`0,0`, or either part zero).
    pub fn parse(s: &str) -> Result<Option<Rate>, RateError> {
        let bad = || RateError(s.to_string());
        let (b, u) = s.trim().split_once(',').ok_or_else(bad)?;
        let bytes: u64 = b.trim().parse().map_err(|_| bad())?;
        let usecs: u64 = u.trim().parse().map_err(|_| bad())?;
        if bytes == 0 || usecs == 0 {
            return Ok(None);
        }
        Ok(Some(Rate {
            bytes,
            window: Duration::from_micros(usecs),
        }))
    }

    /// Bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.window.as_secs_f64()
    }
}

/// A `rate` key that is not `bytes,usecs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rate {0:?} is not bytes,usecs (as libxl writes it, e.g. 1250000,50000 for 200 Mb/s in 50 ms \
     windows): the vif is not rate limited; fix the rate= setting of the vif"
)]
pub struct RateError(pub String);

/// One vif's transmit credit.
#[derive(Debug, Clone)]
pub(crate) struct Credit {
    rate: Rate,
    /// Bytes that may still go in this window.
    remaining: u64,
    /// When the current window started.
    window_start: Instant,
    /// Set while the vif's transmit waits for the next window: the moment it may go on.
    waiting_until: Option<Instant>,
}

impl Credit {
    /// Full credit from `now` (a rate set or changed starts with a whole window's worth).
    pub(crate) fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            remaining: rate.bytes,
            window_start: now,
            waiting_until: None,
        }
    }

    /// Linux's `tx_add_credit`: a window's credit, capped so bursts stay bounded.
    fn add_credit(&mut self) {
        let max_burst = self.rate.bytes.max(MIN_BURST);
        self.remaining = self
            .remaining
            .saturating_add(self.rate.bytes)
            .min(max_burst);
    }

    /// Whether a packet of `size` bytes may go now; charges it if so. Linux's
    /// `tx_credit_exceeded` plus the charge in `xenvif_tx_build_gops`; the credit timer's
    /// refill (`tx_credit_callback`) happens here, at the first look after it is due.
    pub(crate) fn take(&mut self, size: u64, now: Instant) -> bool {
        if let Some(until) = self.waiting_until {
            if now < until {
                return false;
            }
            self.waiting_until = None;
            self.add_credit();
        }
        let next = self.window_start + self.rate.window;
        if now >= next {
            self.window_start = now;
            self.add_credit();
        }
        if size > self.remaining {
            // Wait for the next window's credit (a window from now if this one just began).
            let at = if next > now {
                next
            } else {
                now + self.rate.window
            };
            self.waiting_until = Some(at);
            self.window_start = at;
            return false;
        }
        self.remaining -= size;
        true
    }

    /// A packet charged `charged` bytes at the gate was read with `actual` bytes (a frontend
    /// may rewrite a slot between two reads): charge the difference, never going below zero.
    pub(crate) fn correct(&mut self, charged: u64, actual: u64) {
        self.remaining = (self.remaining + charged).saturating_sub(actual);
    }

    /// When a waiting vif may send again (for the backend's wait), if it is waiting.
    pub(crate) fn waiting_until(&self) -> Option<Instant> {
        self.waiting_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_libxl_writes() {
        assert_eq!(
            Rate::parse("1250000,50000"),
            Ok(Some(Rate {
                bytes: 1_250_000,
                window: Duration::from_millis(50)
            }))
        );
        assert_eq!(
            Rate::parse(" 100 , 20000 \n"),
            Ok(Rate::parse("100,20000").unwrap())
        );
        assert_eq!(Rate::parse("0,0"), Ok(None));
        for bad in ["", "10", "10,", ",10", "a,b", "-1,5", "1,2,3"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
        let msg = Rate::parse("10Mb/s").unwrap_err().to_string();
        assert!(msg.contains("bytes,usecs") && msg.contains("fix"), "{msg}");
    }

    /// Sends `size`-byte packets as fast as credit allows over `span`, stepping the clock to
    /// each moment the scheduler says it may go on; returns the bytes sent.
    fn drive(rate: Rate, size: u64, span: Duration) -> u64 {
        let t0 = Instant::now();
        let mut c = Credit::new(rate, t0);
        let (mut now, mut sent) = (t0, 0);
        while now < t0 + span {
            if c.take(size, now) {
                sent += size;
            } else {
                now = c
                    .waiting_until()
                    .expect("a refused packet waits for a moment");
            }
        }
        sent
    }

    #[test]
    fn the_long_run_rate_is_the_configured_one() {
        // 10 Mb/s in 50 ms windows, MTU-sized and super-frame-sized packets, over 5 s.
        let rate = Rate::parse("62500,50000").unwrap().unwrap();
        for size in [1514, 9014, 65_000] {
            let sent = drive(rate, size, Duration::from_secs(5));
            let want = rate.bytes_per_sec() * 5.0;
            let ratio = sent as f64 / want;
            assert!(
                (0.9..=1.1).contains(&ratio),
                "size {size}: sent {sent} B in 5 s, want {want} ({ratio:.3}x)"
            );
        }
    }

    #[test]
    fn an_idle_spell_saves_up_one_window_not_many() {
        // As Linux: credit is added once when the window has passed, not once per window
        // missed, so a guest idle for a second bursts at most what it had plus one window.
        let rate = Rate::parse("10000,1000").unwrap().unwrap();
        let t0 = Instant::now();
        let mut c = Credit::new(rate, t0);
        let later = t0 + Duration::from_secs(1);
        let mut sent = 0;
        while c.take(1000, later) {
            sent += 1000;
        }
        assert_eq!(
            sent,
            2 * 10_000,
            "a full window left over plus one new window"
        );
        // And a big window never saves beyond max(bytes, 128 KiB).
        let rate = Rate::parse("100000,1000").unwrap().unwrap();
        let mut c = Credit::new(rate, t0);
        let mut sent = 0;
        while c.take(1000, later) {
            sent += 1000;
        }
        assert_eq!(sent, MIN_BURST / 1000 * 1000, "capped at the burst");
    }

    #[test]
    fn a_packet_bigger_than_a_window_still_goes() {
        // 1 KB per ms: a 64 KiB super-frame needs the burst cap, which allows it.
        let rate = Rate::parse("1000,1000").unwrap().unwrap();
        let sent = drive(rate, 65_000, Duration::from_secs(2));
        assert!(sent >= 65_000, "a super-frame never went");
    }
}
