//! The late end of interrupt for one event channel: Linux's `xen_irq_lateeoi` policy, which
//! answered XSA-332 (a frontend storming its backend with events) and XSA-391 (a backend
//! storming its frontend).
//!
//! A delivered port stays masked until its driver has done the work the event announced and
//! calls [`LateEoi::end_of_interrupt`]. An event is *spurious* when no work was done since the
//! previous decision; after two spurious events in a row the unmask is held back, 1 ms and
//! doubling with every further one up to a cap, so a peer notifying in a loop buys one wakeup
//! per delay instead of one per notification. Any work resets the streak. The driver must not
//! sleep past [`LateEoi::deadline`], and unmasks when [`LateEoi::take_due`] says so.
//!
//! Pure bookkeeping: the caller owns the port and the clock; the counts of spurious and delayed
//! events are kept here, so every driver reports them the same way.

use std::time::{Duration, Instant};

/// What to do with the port at an end of interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eoi {
    /// No delivered event was waiting for its end of interrupt.
    Idle,
    /// The event found work: unmask now.
    Worked,
    /// The event found no work, but the streak is short: unmask now (and count it).
    Spurious,
    /// The event found no work again: keep the port masked until [`LateEoi::deadline`] (count
    /// it as spurious and as delayed).
    Delayed,
}

/// One port's late-EOI state. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct LateEoi {
    /// An event was delivered and its end of interrupt not decided yet.
    pending: bool,
    /// Spurious events in a row.
    streak: u32,
    /// When a held-back end of interrupt comes due.
    eoi_at: Option<Instant>,
    /// Events that found no work ([`Eoi::Spurious`] and [`Eoi::Delayed`]).
    spurious: u64,
    /// Ends of interrupt held back ([`Eoi::Delayed`]).
    delayed: u64,
}

impl LateEoi {
    /// A port with no event outstanding.
    pub fn new() -> Self {
        Self::default()
    }

    /// Its event was delivered (the port is masked until the end of interrupt).
    pub fn delivered(&mut self) {
        self.pending = true;
    }

    /// Decides the end of interrupt for the delivered event, if one waits: `worked` says
    /// whether any work was done since the previous decision (not since the event: work the
    /// event announced is often done before the event is collected, and that is not spurious).
    /// On [`Eoi::Delayed`] the port must stay masked until [`LateEoi::take_due`].
    pub fn end_of_interrupt(&mut self, worked: bool, now: Instant, max_delay: Duration) -> Eoi {
        if !std::mem::take(&mut self.pending) {
            return Eoi::Idle;
        }
        if worked {
            self.streak = 0;
            return Eoi::Worked;
        }
        self.spurious += 1;
        self.streak = self.streak.saturating_add(1);
        if self.streak < 2 {
            return Eoi::Spurious;
        }
        self.delayed += 1;
        let delay = Duration::from_millis(1)
            .saturating_mul(1 << (self.streak - 2).min(20))
            .min(max_delay);
        self.eoi_at = Some(now + delay);
        Eoi::Delayed
    }

    /// Whether a held-back end of interrupt has come due (then the caller unmasks the port).
    pub fn take_due(&mut self, now: Instant) -> bool {
        if self.eoi_at.is_some_and(|t| now >= t) {
            self.eoi_at = None;
            return true;
        }
        false
    }

    /// When a held-back end of interrupt comes due: the caller's wait must not sleep past it.
    pub fn deadline(&self) -> Option<Instant> {
        self.eoi_at
    }

    /// Events so far that found no work (each [`Eoi::Spurious`] or [`Eoi::Delayed`]).
    pub fn spurious(&self) -> u64 {
        self.spurious
    }

    /// Ends of interrupt held back so far (each [`Eoi::Delayed`]).
    pub fn delayed(&self) -> u64 {
        self.delayed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_millis(100);

    #[test]
    fn no_event_means_nothing_to_decide() {
        let mut e = LateEoi::new();
        let t = Instant::now();
        assert_eq!(e.end_of_interrupt(false, t, MAX), Eoi::Idle);
        assert_eq!(e.deadline(), None);
        assert!(!e.take_due(t));
    }

    #[test]
    fn the_second_spurious_event_in_a_row_is_held_back_and_the_delay_doubles_to_the_cap() {
        let mut e = LateEoi::new();
        let t = Instant::now();
        e.delivered();
        assert_eq!(e.end_of_interrupt(false, t, MAX), Eoi::Spurious);
        assert_eq!(e.deadline(), None);
        let mut want = Duration::from_millis(1);
        for _ in 0..12 {
            e.delivered();
            assert_eq!(e.end_of_interrupt(false, t, MAX), Eoi::Delayed);
            assert_eq!(e.deadline(), Some(t + want));
            assert!(!e.take_due(t + want - Duration::from_nanos(1)));
            assert!(e.take_due(t + want));
            assert_eq!(e.deadline(), None, "due once only");
            want = (want * 2).min(MAX);
        }
        assert_eq!(want, MAX);
        assert_eq!((e.spurious(), e.delayed()), (13, 12));
    }

    #[test]
    fn work_resets_the_streak() {
        let mut e = LateEoi::new();
        let t = Instant::now();
        for _ in 0..3 {
            e.delivered();
            e.end_of_interrupt(false, t, MAX);
        }
        assert!(e.take_due(t + MAX));
        e.delivered();
        assert_eq!(e.end_of_interrupt(true, t, MAX), Eoi::Worked);
        e.delivered();
        assert_eq!(e.end_of_interrupt(false, t, MAX), Eoi::Spurious);
    }

    #[test]
    fn a_long_storm_does_not_overflow() {
        let mut e = LateEoi::new();
        let t = Instant::now();
        for _ in 0..100_000 {
            e.delivered();
            e.end_of_interrupt(false, t, Duration::MAX);
            e.take_due(t + Duration::from_secs(3600));
        }
        e.delivered();
        assert_eq!(e.end_of_interrupt(false, t, Duration::MAX), Eoi::Delayed);
        assert_eq!(e.deadline(), Some(t + Duration::from_millis(1 << 20)));
    }
}
