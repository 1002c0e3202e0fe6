//! Rate-limited log lines about what a guest causes.
//!
//! A guest can make its backend log: a frontend that breaks the protocol disables its vif, one
//! that writes bad keys is refused, and it may do either again after every reconnect, as fast
//! as it can cycle its xenbus state. Linux's netback guards such lines with `net_ratelimit()`
//! (one budget for the whole host); here each vif has its own budget, so one noisy guest never
//! silences what another causes: at most [`BURST`] lines per vif per [`WINDOW`], then nothing
//! until the window ends, and the count of what was held back is said on the next line about
//! that vif or by [`flush_suppressed`], which the program calls now and then.
//!
//! The budget is process-wide (a vif's lines come from the control plane and the data path
//! alike, and outlive its connections), behind a mutex taken only when a line is logged.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::vif::VifId;

/// Lines about one vif allowed per window.
pub const BURST: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Vifs whose budgets are kept; past this, budgets whose window ended with nothing held back
/// are dropped (a guest cannot grow the table without bound by cycling devids).
const MAX_KEYS: usize = 4096;

/// What [`Limiter::check`] decides for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` lines about the same vif were held back before it.
    Emit {
        /// Lines held back in the window that ended.
        suppressed: u64,
    },
    /// Hold it back (counted).
    Suppress,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    start: Instant,
    emitted: u32,
    suppressed: u64,
}

/// Per-vif budgets of log lines: at most `burst` per `window` each.
#[derive(Debug)]
pub struct Limiter {
    burst: u32,
    window: Duration,
    budgets: HashMap<VifId, Budget>,
}

impl Limiter {
    /// At most `burst` lines per vif per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        Limiter {
            burst,
            window,
            budgets: HashMap::new(),
        }
    }

    /// Whether a line about `id` at `now` may be logged.
    pub fn check(&mut self, id: VifId, now: Instant) -> Verdict {
        if self.budgets.len() >= MAX_KEYS && !self.budgets.contains_key(&id) {
            let window = self.window;
            self.budgets
                .retain(|_, b| b.suppressed > 0 || now.saturating_duration_since(b.start) < window);
        }
        let b = self.budgets.entry(id).or_insert(Budget {
            start: now,
            emitted: 0,
            suppressed: 0,
        });
        let mut held = 0;
        if now.saturating_duration_since(b.start) >= self.window {
            held = b.suppressed;
            *b = Budget {
                start: now,
                emitted: 0,
                suppressed: 0,
            };
        }
        if b.emitted < self.burst {
            b.emitted += 1;
            Verdict::Emit { suppressed: held }
        } else {
            b.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// The vifs whose window has ended with lines held back, and how many; their counts start
    /// again from zero.
    pub fn take_ended(&mut self, now: Instant) -> Vec<(VifId, u64)> {
        let mut out = Vec::new();
        for (id, b) in &mut self.budgets {
            if b.suppressed > 0 && now.saturating_duration_since(b.start) >= self.window {
                out.push((*id, b.suppressed));
                b.suppressed = 0;
            }
        }
        out.sort_unstable();
        out
    }
}

static GUEST_LINES: Mutex<Option<Limiter>> = Mutex::new(None);

fn with_limiter<T>(f: impl FnOnce(&mut Limiter) -> T) -> T {
    // A panic while the lock was held leaves the budgets as they were: still usable.
    let mut g = GUEST_LINES.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(|| Limiter::new(BURST, WINDOW)))
}

/// Logs `args` at `level` about vif `id`, within the vif's budget of guest-caused lines (see
/// the [module docs](self)). A line after a held-back spell says how many were held back.
pub fn guest_log(level: log::Level, id: VifId, args: fmt::Arguments<'_>) {
    if !log::log_enabled!(target: "netback::guest", level) {
        return;
    }
    match with_limiter(|l| l.check(id, Instant::now())) {
        Verdict::Emit { suppressed: 0 } => {
            log::log!(target: "netback::guest", level, "{args}")
        }
        Verdict::Emit { suppressed } => log::log!(
            target: "netback::guest",
            level,
            "{args} ({suppressed} earlier line(s) about {id} suppressed: at most {BURST} per {}s)",
            WINDOW.as_secs()
        ),
        Verdict::Suppress => {}
    }
}

/// Says, for each vif whose window has ended with guest-caused lines held back, how many were;
/// the program calls it now and then (a held-back spell is reported even if the guest then
/// goes quiet).
pub fn flush_suppressed() {
    for (id, n) in with_limiter(|l| l.take_ended(Instant::now())) {
        log::warn!(
            target: "netback::guest",
            "{id}: {n} more line(s) about what its guest did were suppressed in the last {}s \
             (at most {BURST} per {}s per vif)",
            WINDOW.as_secs(),
            WINDOW.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: VifId = VifId { domid: 1, devid: 0 };
    const B: VifId = VifId { domid: 2, devid: 0 };

    #[test]
    fn each_vif_has_its_own_budget_and_the_held_back_count_is_said() {
        let t0 = Instant::now();
        let mut l = Limiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(l.check(A, t0), Verdict::Emit { suppressed: 0 });
        }
        for _ in 0..5 {
            assert_eq!(l.check(A, t0), Verdict::Suppress);
        }
        // Another guest's lines are not held back by the first one's.
        assert_eq!(l.check(B, t0), Verdict::Emit { suppressed: 0 });
        // Within the window nothing ended.
        assert!(l.take_ended(t0 + Duration::from_secs(59)).is_empty());
        // The next line after the window says what was held back.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(l.check(A, t1), Verdict::Emit { suppressed: 5 });
        assert_eq!(l.check(A, t1), Verdict::Emit { suppressed: 0 });
    }

    #[test]
    fn a_spell_that_goes_quiet_is_reported_once_by_take_ended() {
        let t0 = Instant::now();
        let mut l = Limiter::new(1, Duration::from_secs(10));
        l.check(A, t0);
        l.check(A, t0);
        l.check(A, t0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(l.take_ended(t1), vec![(A, 2)]);
        assert!(l.take_ended(t1).is_empty(), "reported once");
        // Its next line starts a fresh window with nothing left to say.
        assert_eq!(l.check(A, t1), Verdict::Emit { suppressed: 0 });
    }

    #[test]
    fn the_table_of_budgets_is_bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::new(1, Duration::from_secs(1));
        for devid in 0..MAX_KEYS as u32 {
            l.check(VifId { domid: 7, devid }, t0);
        }
        let later = t0 + Duration::from_secs(2);
        l.check(VifId { domid: 8, devid: 0 }, later);
        assert!(l.budgets.len() <= 2, "{}", l.budgets.len());
    }
}
