//! Profiling hooks: vCPU registration, contexts and class scopes.
//!
//! Every thread that does work worth attributing registers as a vCPU of a domain
//! ([`register_vcpu`]). From then on it is always in one [`Context`] (xen, kernel or user) and
//! inside a stack of class scopes. [`scope`] tags work with a class; [`hypercall`] additionally
//! switches the context to `xen` for its duration, as a trap into the hypervisor does. The
//! innermost scope owns the time while it runs.
//!
//! In [`Mode::Exact`] each transition reads the TSC and charges the elapsed cycles to the
//! (context, class) the thread was in, in counters owned by that thread: the hot path takes no
//! lock and writes no cache line another thread writes. In [`Mode::Sampled`] transitions only
//! publish the thread's current tag, which a sampler reads at a fixed rate. In [`Mode::Off`] a
//! transition is one relaxed load and a branch.
//!
//! The per-thread state is a `const`-initialised thread-local of plain `Cell`s with no destructor,
//! so reaching it costs one TLS address computation: no lazy-init check, no `RefCell` borrow flag.
//! There is no scope stack: the thread's state is one packed tag word (context, class, blocked),
//! the same word the sampler reads; each guard keeps the tag it replaced and restores it on drop,
//! so nesting is unlimited. The thread's counters are reached through a `&'static` obtained by
//! leaking one `Arc` clone per registration (registration is rare; the registry keeps every
//! vCPU's counters for reports anyway).
//!
//! With the crate feature `enabled` turned off every hook compiles to nothing: the guards are
//! zero-sized and the functions are empty `#[inline(always)]` bodies.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::class::Class;
use crate::counters::{TAG_BLOCKED, TAG_CTX_MASK, VcpuCounters, pack_tag};

/// A domain id as Xen numbers them (dom0 is 0).
pub type DomId = u16;

/// Where a vCPU is executing, as Xenoprof splits samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Context {
    /// In the hypervisor (a hypercall, or work done on the domain's behalf).
    Xen = 0,
    /// In the domain's kernel (netback, netfront, the bridge, ...).
    Kernel = 1,
    /// In the domain's user space.
    User = 2,
}

/// Number of contexts.
pub const CONTEXTS: usize = 3;

impl Context {
    /// All contexts in report order.
    pub const ALL: [Context; CONTEXTS] = [Context::Xen, Context::Kernel, Context::User];

    /// Lower-case name used in reports and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Context::Xen => "xen",
            Context::Kernel => "kernel",
            Context::User => "user",
        }
    }

    pub(crate) const fn from_u8(v: u8) -> Context {
        match v {
            0 => Context::Xen,
            1 => Context::Kernel,
            _ => Context::User,
        }
    }
}

/// What the hooks do at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Hooks do nothing beyond one relaxed load.
    Off = 0,
    /// Count TSC cycles and calls per (domain, context, class); also publish tags for a sampler.
    Exact = 1,
    /// Publish each thread's current tag for a sampler.
    Sampled = 2,
}

const OFF: u8 = Mode::Off as u8;
const EXACT: u8 = Mode::Exact as u8;

static MODE: AtomicU8 = AtomicU8::new(OFF);

/// Sets the global (process-wide) profiling mode. Threads see the change at their next hook.
pub fn set_mode(mode: Mode) {
    // Relaxed: the mode is advisory; pairs with the relaxed loads in `mode` and `enter`. A hook
    // that sees the old mode for a few more transitions only shifts a handful of cycles.
    MODE.store(mode as u8, Ordering::Relaxed);
}

/// The current global profiling mode.
#[inline(always)]
pub fn mode() -> Mode {
    // Relaxed: pairs with the relaxed store in `set_mode`; no data is published through it.
    match MODE.load(Ordering::Relaxed) {
        EXACT => Mode::Exact,
        2 => Mode::Sampled,
        _ => Mode::Off,
    }
}

/// The source of cycle counts for exact mode.
#[derive(Debug, Clone)]
pub enum ClockSource {
    /// The CPU's time-stamp counter (constant and synchronised on the machines we run on).
    Tsc,
    /// A clock advanced by hand, for deterministic tests.
    Manual(ManualClock),
}

/// A clock advanced explicitly; cloning shares the same counter.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }
    /// Moves the clock forward by `cycles`.
    pub fn advance(&self, cycles: u64) {
        // Relaxed: the test thread that advances the clock is the thread that reads it; across
        // threads a test orders its steps with a barrier, which synchronises on its own.
        self.0.fetch_add(cycles, Ordering::Relaxed);
    }
    /// The current reading.
    pub fn now(&self) -> u64 {
        // Relaxed: pairs with the relaxed `fetch_add` in `advance`.
        self.0.load(Ordering::Relaxed)
    }
}

fn tsc_clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Raw TSC reading (cycles), as exact mode uses it.
#[inline]
pub fn tsc() -> u64 {
    tsc_clock().raw()
}

/// TSC ticks per second, measured once against the monotonic clock (about 20 ms on first call).
pub fn tsc_hz() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        let clock = tsc_clock();
        let (t0, c0) = (std::time::Instant::now(), clock.raw());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (t1, c1) = (std::time::Instant::now(), clock.raw());
        let ns = t1.duration_since(t0).as_nanos().max(1);
        (u128::from(c1.wrapping_sub(c0)) * 1_000_000_000 / ns) as u64
    })
}

/// Kept for compatibility: scopes now nest without limit (each guard remembers what it
/// replaced), so no depth is tracked.
pub const MAX_DEPTH: usize = usize::MAX;

static VCPUS: Mutex<Vec<Arc<VcpuCounters>>> = Mutex::new(Vec::new());

/// Every vCPU registered so far, in registration order (exited threads included, marked offline).
pub fn vcpus() -> Vec<Arc<VcpuCounters>> {
    VCPUS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The calling thread's profiling state. Plain cells, `const`-initialised, no destructor.
///
/// There is no scope stack: the thread's whole state is one packed tag word (context, class,
/// blocked flag: the word the sampler reads), and each guard keeps the tag it replaced and
/// restores it when dropped. The innermost scope owns the time because its tag is current.
struct Local {
    counters: Cell<Option<&'static VcpuCounters>>,
    /// `None`: the TSC. `Some`: a manual clock's counter.
    clock: Cell<Option<&'static AtomicU64>>,
    tag: Cell<u32>,
    last: Cell<u64>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            counters: Cell::new(None),
            clock: Cell::new(None),
            tag: Cell::new(pack_tag(Context::Kernel, Class::OTHER)),
            last: Cell::new(0),
        }
    };
}

/// Marks the thread's counters offline when the thread exits, so samplers stop counting it.
/// Kept apart from `LOCAL` so the hot-path thread-local has no destructor.
struct ExitGuard(Cell<Option<Arc<VcpuCounters>>>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.set_offline();
        }
    }
}

thread_local! {
    static EXIT_GUARD: ExitGuard = const { ExitGuard(Cell::new(None)) };
}

/// A guard's "nothing to restore" marker (no real tag has all bits set).
const NO_TAG: u32 = u32::MAX;

impl Local {
    #[inline(always)]
    fn now(&self) -> u64 {
        match self.clock.get() {
            None => tsc(),
            // Relaxed: pairs with the relaxed `fetch_add` in `ManualClock::advance`.
            Some(m) => m.load(Ordering::Relaxed),
        }
    }

    /// Charges the cycles since the last transition to the (context, class) of `tag`.
    #[inline(always)]
    fn charge(&self, c: &VcpuCounters, tag: u32) {
        let now = self.now();
        c.add_cycles_tag(tag, now.wrapping_sub(self.last.get()));
        self.last.set(now);
    }

    /// Makes `new` the current tag, charging the time so far to the old one; returns the old.
    #[inline(always)]
    fn switch(&self, c: &VcpuCounters, mode: u8, new: u32) -> u32 {
        let cur = self.tag.get();
        if mode == EXACT {
            self.charge(c, cur);
        }
        self.tag.set(new);
        c.publish(new);
        cur
    }

    #[inline(always)]
    fn enter(&self, mode: u8, ctx: Option<Context>, class: Class) -> u32 {
        let Some(c) = self.counters.get() else {
            return NO_TAG;
        };
        let cur = self.tag.get();
        let ctx_bits = match ctx {
            Some(x) => (x as u32) << 8,
            None => cur & TAG_CTX_MASK,
        };
        let new = (cur & TAG_BLOCKED) | ctx_bits | class.index() as u32;
        if mode == EXACT {
            c.add_call_tag(new);
        }
        self.switch(c, mode, new)
    }

    #[inline(always)]
    fn leave(&self, mode: u8, prev: u32) {
        if let Some(c) = self.counters.get() {
            self.switch(c, mode, prev);
        }
    }
}

/// Registers the calling thread as a vCPU of `domid`, starting in `ctx`, with the TSC clock.
/// Registering again replaces the thread's identity (its old counters stay in reports, offline).
pub fn register_vcpu(domid: DomId, ctx: Context) -> Arc<VcpuCounters> {
    register_vcpu_with_clock(domid, ctx, ClockSource::Tsc)
}

/// The calling thread's Linux thread id, read from procfs (no unsafe, no libc call).
fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Like [`register_vcpu`] with an explicit clock, for deterministic tests.
pub fn register_vcpu_with_clock(
    domid: DomId,
    ctx: Context,
    clock: ClockSource,
) -> Arc<VcpuCounters> {
    let tid = current_tid();
    let counters = {
        let mut all = VCPUS.lock().unwrap_or_else(|e| e.into_inner());
        let vcpu = all.iter().filter(|v| v.domid() == domid).count() as u32;
        let c = Arc::new(VcpuCounters::new(domid, vcpu, tid, ctx));
        all.push(c.clone());
        c
    };
    // One leaked `Arc` per registration gives the hot path a `&'static` with no refcounting.
    let leaked: &'static VcpuCounters = Box::leak(Box::new(counters.clone()));
    let clock: Option<&'static AtomicU64> = match clock {
        ClockSource::Tsc => None,
        ClockSource::Manual(m) => Some(&**Box::leak(Box::new(m.0))),
    };
    LOCAL.with(|l| {
        l.counters.set(Some(leaked));
        l.clock.set(clock);
        l.tag.set(pack_tag(ctx, Class::OTHER));
        l.last.set(l.now());
    });
    EXIT_GUARD.with(|g| {
        if let Some(old) = g.0.replace(Some(counters.clone())) {
            old.set_offline();
        }
    });
    counters
}

/// Charges the calling thread's time up to now, so a report taken next sees it. Call before
/// snapshotting counters at the end of a measurement.
pub fn flush() {
    #[cfg(feature = "enabled")]
    if mode() == Mode::Exact {
        LOCAL.with(|l| {
            if let Some(c) = l.counters.get() {
                l.charge(c, l.tag.get());
            }
        });
    }
}

/// Sets the calling thread's context, keeping its class (e.g. a vCPU moving to user space).
/// Inside a scope, the change lasts until that scope ends.
pub fn set_context(ctx: Context) {
    #[cfg(feature = "enabled")]
    LOCAL.with(|l| {
        if let Some(c) = l.counters.get() {
            let new = (l.tag.get() & !TAG_CTX_MASK) | ((ctx as u32) << 8);
            l.switch(c, MODE.load(Ordering::Relaxed), new);
        }
    });
    #[cfg(not(feature = "enabled"))]
    let _ = ctx;
}

/// A class scope; leaving it (drop) returns the time to the enclosing scope.
#[must_use = "a scope ends when this guard is dropped"]
#[derive(Debug)]
pub struct Scope {
    /// The tag this scope replaced, restored on drop; `NO_TAG` when the hooks were off.
    #[cfg(feature = "enabled")]
    prev: u32,
    // Not Send: a scope must end on the thread that entered it.
    _not_send: std::marker::PhantomData<*const ()>,
}

#[cfg(feature = "enabled")]
#[inline(always)]
fn enter(ctx: Option<Context>, class: Class) -> Scope {
    // Relaxed: pairs with the relaxed store in `set_mode`.
    let mode = MODE.load(Ordering::Relaxed);
    let prev = if mode == OFF {
        NO_TAG
    } else {
        // The closure is one call, so `with` (and the TLS address computation) inlines here
        // while the body stays out of line: this measured faster than inlining everything.
        LOCAL.with(|l| enter_slow(l, mode, ctx, class))
    };
    Scope {
        prev,
        _not_send: std::marker::PhantomData,
    }
}

#[cfg(feature = "enabled")]
#[inline(never)]
fn enter_slow(l: &Local, mode: u8, ctx: Option<Context>, class: Class) -> u32 {
    l.enter(mode, ctx, class)
}

#[cfg(feature = "enabled")]
#[inline(never)]
fn leave_slow(l: &Local, mode: u8, prev: u32) {
    l.leave(mode, prev)
}

#[cfg(not(feature = "enabled"))]
#[inline(always)]
fn enter(_ctx: Option<Context>, _class: Class) -> Scope {
    Scope {
        _not_send: std::marker::PhantomData,
    }
}

/// Enters a scope of `class` in the current context.
#[inline(always)]
pub fn scope(class: Class) -> Scope {
    enter(None, class)
}

/// Enters a scope of `class` in the `xen` context, as a hypercall does.
#[inline(always)]
pub fn hypercall(class: Class) -> Scope {
    enter(Some(Context::Xen), class)
}

/// Enters a scope of `class` in an explicit context.
#[inline(always)]
pub fn scope_in(ctx: Context, class: Class) -> Scope {
    enter(Some(ctx), class)
}

impl Drop for Scope {
    #[inline(always)]
    fn drop(&mut self) {
        #[cfg(feature = "enabled")]
        if self.prev != NO_TAG {
            // The mode is re-read: a scope entered while on and left after `set_mode(Off)` still
            // restores its tag, it just stops charging. Relaxed: pairs with `set_mode`.
            let mode = MODE.load(Ordering::Relaxed);
            LOCAL.with(|l| leave_slow(l, mode, self.prev));
        }
    }
}

/// A stretch where the vCPU waits (blocked on an event channel, sleeping): samplers skip it and
/// exact mode charges its time to nothing, as Xenoprof never samples a descheduled vCPU.
#[must_use = "the vCPU is blocked until this guard is dropped"]
#[derive(Debug)]
pub struct Blocked {
    #[cfg(feature = "enabled")]
    prev: u32,
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Marks the calling vCPU blocked until the guard drops. Wrap waits in it, not work.
#[inline]
pub fn blocked() -> Blocked {
    #[cfg(feature = "enabled")]
    {
        let prev = LOCAL.with(|l| match l.counters.get() {
            Some(c) => l.switch(c, MODE.load(Ordering::Relaxed), l.tag.get() | TAG_BLOCKED),
            None => NO_TAG,
        });
        Blocked {
            prev,
            _not_send: std::marker::PhantomData,
        }
    }
    #[cfg(not(feature = "enabled"))]
    Blocked {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for Blocked {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "enabled")]
        if self.prev != NO_TAG {
            LOCAL.with(|l| {
                if let Some(c) = l.counters.get() {
                    // The blocked stretch is charged to nothing: restart the interval here.
                    l.last.set(l.now());
                    l.tag.set(self.prev);
                    c.publish(self.prev);
                }
            });
        }
    }
}

#[cfg(all(test, feature = "enabled"))]
mod tests {
    use super::*;

    // Tests run on their own threads; the global mode is shared, so every test here uses Exact.
    fn setup(domid: DomId) -> (ManualClock, Arc<VcpuCounters>) {
        set_mode(Mode::Exact);
        let clock = ManualClock::new();
        let c =
            register_vcpu_with_clock(domid, Context::Kernel, ClockSource::Manual(clock.clone()));
        (clock, c)
    }

    #[test]
    fn nested_scopes_charge_the_inner_class() {
        let (clock, c) = setup(900);
        clock.advance(5); // outside any scope: other
        {
            let _a = scope(Class::NETBACK);
            clock.advance(10);
            {
                let _b = scope(Class::BRIDGE);
                clock.advance(7);
            }
            clock.advance(3);
        }
        flush();
        assert_eq!(c.cycles(Context::Kernel, Class::OTHER), 5);
        assert_eq!(c.cycles(Context::Kernel, Class::NETBACK), 13);
        assert_eq!(c.cycles(Context::Kernel, Class::BRIDGE), 7);
        assert_eq!(c.calls(Context::Kernel, Class::NETBACK), 1);
        assert_eq!(c.calls(Context::Kernel, Class::BRIDGE), 1);
    }

    #[test]
    fn hypercall_switches_context_and_restores_it() {
        let (clock, c) = setup(901);
        {
            let _a = scope(Class::NETBACK);
            clock.advance(4);
            {
                let _h = hypercall(Class::GRANT_TABLE);
                assert_eq!(c.current(), (Context::Xen, Class::GRANT_TABLE));
                clock.advance(20);
                {
                    let _m = scope(Class::MM);
                    clock.advance(6);
                }
            }
            assert_eq!(c.current(), (Context::Kernel, Class::NETBACK));
            clock.advance(1);
        }
        flush();
        assert_eq!(c.cycles(Context::Kernel, Class::NETBACK), 5);
        assert_eq!(c.cycles(Context::Xen, Class::GRANT_TABLE), 20);
        assert_eq!(c.cycles(Context::Xen, Class::MM), 6);
        assert_eq!(c.cycles(Context::Kernel, Class::GRANT_TABLE), 0);
    }

    #[test]
    fn deep_nesting_unwinds_to_each_enclosing_class() {
        let (clock, c) = setup(904);
        fn nest(depth: u32, clock: &ManualClock) {
            if depth == 0 {
                return;
            }
            let class = if depth.is_multiple_of(2) {
                Class::RING
            } else {
                Class::COPY
            };
            let _s = scope(class);
            clock.advance(1);
            nest(depth - 1, clock);
            clock.advance(1);
        }
        nest(100, &clock);
        flush();
        assert_eq!(c.cycles(Context::Kernel, Class::RING), 100);
        assert_eq!(c.cycles(Context::Kernel, Class::COPY), 100);
        assert_eq!(c.calls(Context::Kernel, Class::RING), 50);
        assert_eq!(c.current(), (Context::Kernel, Class::OTHER));
    }
}

#[cfg(all(test, not(feature = "enabled")))]
mod disabled_tests {
    use super::*;

    #[test]
    fn hooks_compile_to_nothing() {
        assert_eq!(std::mem::size_of::<Scope>(), 0);
        assert_eq!(std::mem::size_of::<Blocked>(), 0);
        set_mode(Mode::Exact);
        let clock = ManualClock::new();
        let c = register_vcpu_with_clock(903, Context::Kernel, ClockSource::Manual(clock.clone()));
        {
            let _s = scope(Class::BRIDGE);
            clock.advance(10);
        }
        flush();
        assert_eq!(c.calls(Context::Kernel, Class::BRIDGE), 0);
        assert_eq!(c.cycles(Context::Kernel, Class::BRIDGE), 0);
    }
}
