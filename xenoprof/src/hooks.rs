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
//! With the crate feature `enabled` turned off every hook compiles to nothing: the guards are
//! zero-sized and the functions are empty `#[inline(always)]` bodies.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::class::{Class, MAX_CLASSES};

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

    const fn from_u8(v: u8) -> Context {
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
    /// Count TSC cycles and calls per (domain, context, class).
    Exact = 1,
    /// Publish each thread's current tag for a sampler.
    Sampled = 2,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Off as u8);

/// Sets the global profiling mode. Threads see the change at their next hook.
pub fn set_mode(mode: Mode) {
    // Relaxed: the mode is advisory; a hook that sees the old mode for a few more transitions
    // only shifts a handful of cycles between modes. No data is published through it.
    MODE.store(mode as u8, Ordering::Relaxed);
}

/// The current global profiling mode.
#[inline(always)]
pub fn mode() -> Mode {
    // Relaxed: see `set_mode`; pairs with nothing.
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::Exact,
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
        // Relaxed: the test thread that advances the clock is the thread that reads it.
        self.0.fetch_add(cycles, Ordering::Relaxed);
    }
    /// The current reading.
    pub fn now(&self) -> u64 {
        // Relaxed: pairs with the relaxed `fetch_add` in `advance` on the same thread.
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

/// Maximum scope nesting depth tracked per thread; deeper scopes are charged to the deepest.
pub const MAX_DEPTH: usize = 32;

/// One thread's counters. Written only by the owning thread; read by reports.
#[derive(Debug)]
pub struct VcpuCounters {
    domid: DomId,
    vcpu: u32,
    /// `cycles[ctx * MAX_CLASSES + class]`.
    cycles: Box<[AtomicU64]>,
    /// `calls[ctx * MAX_CLASSES + class]`: scope entries.
    calls: Box<[AtomicU64]>,
    /// The thread's current (context, class), packed for the sampler: `ctx << 8 | class`.
    tag: AtomicU32,
}

impl VcpuCounters {
    fn new(domid: DomId, vcpu: u32) -> Self {
        let zeros = || {
            (0..CONTEXTS * MAX_CLASSES)
                .map(|_| AtomicU64::new(0))
                .collect()
        };
        Self {
            domid,
            vcpu,
            cycles: zeros(),
            calls: zeros(),
            tag: AtomicU32::new(pack_tag(Context::Kernel, Class::OTHER)),
        }
    }

    /// The domain this vCPU belongs to.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The vCPU number within its domain (registration order).
    pub fn vcpu(&self) -> u32 {
        self.vcpu
    }

    /// Cycles charged so far to (ctx, class).
    pub fn cycles(&self, ctx: Context, class: Class) -> u64 {
        // Relaxed: a report may read a value a few transitions old; the owner's stores are
        // single-writer and the report only needs each counter individually consistent.
        self.cycles[slot(ctx, class)].load(Ordering::Relaxed)
    }

    /// Scope entries so far for (ctx, class).
    pub fn calls(&self, ctx: Context, class: Class) -> u64 {
        // Relaxed: as in `cycles`.
        self.calls[slot(ctx, class)].load(Ordering::Relaxed)
    }

    /// The (context, class) the thread is in now, as a sampler sees it.
    pub fn current(&self) -> (Context, Class) {
        // Relaxed: pairs with the relaxed tag store in `State::publish`; a sample is a snapshot
        // of one word and needs no ordering with other memory.
        unpack_tag(self.tag.load(Ordering::Relaxed))
    }

    /// Zeroes every counter (used by session reset).
    pub fn reset(&self) {
        for c in self.cycles.iter().chain(self.calls.iter()) {
            // Relaxed: resets race benignly with the owner's increments; a session resets
            // while stopped.
            c.store(0, Ordering::Relaxed);
        }
    }
}

#[inline(always)]
fn slot(ctx: Context, class: Class) -> usize {
    ctx as usize * MAX_CLASSES + class.index()
}

#[inline(always)]
fn pack_tag(ctx: Context, class: Class) -> u32 {
    ((ctx as u32) << 8) | class.index() as u32
}

fn unpack_tag(tag: u32) -> (Context, Class) {
    let ctx = Context::from_u8((tag >> 8) as u8);
    let class = Class::from_index((tag & 0xff) as usize).unwrap_or(Class::OTHER);
    (ctx, class)
}

static VCPUS: Mutex<Vec<Arc<VcpuCounters>>> = Mutex::new(Vec::new());

/// Every vCPU registered so far, in registration order.
pub fn vcpus() -> Vec<Arc<VcpuCounters>> {
    VCPUS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

struct State {
    counters: Arc<VcpuCounters>,
    clock: ClockSource,
    ctx: Cell<Context>,
    stack: Cell<[Class; MAX_DEPTH]>,
    depth: Cell<usize>,
    last: Cell<u64>,
}

impl State {
    #[inline(always)]
    fn now(&self) -> u64 {
        match &self.clock {
            ClockSource::Tsc => tsc(),
            ClockSource::Manual(m) => m.now(),
        }
    }

    #[inline(always)]
    fn top(&self) -> Class {
        let d = self.depth.get();
        if d == 0 {
            Class::OTHER
        } else {
            self.stack.get()[d.min(MAX_DEPTH) - 1]
        }
    }

    /// Charges the cycles since the last transition to the current (ctx, class).
    #[inline(always)]
    fn charge(&self, mode: Mode) {
        if mode != Mode::Exact {
            return;
        }
        let now = self.now();
        let i = slot(self.ctx.get(), self.top());
        let delta = now.wrapping_sub(self.last.get());
        self.last.set(now);
        let c = &self.counters.cycles[i];
        // Relaxed load+store, not fetch_add: this thread is the only writer, so no locked RMW is
        // needed; readers (reports) pair with nothing and accept a slightly stale value.
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    fn publish(&self) {
        // Relaxed: pairs with the relaxed load in `VcpuCounters::current` (the sampler).
        self.counters
            .tag
            .store(pack_tag(self.ctx.get(), self.top()), Ordering::Relaxed);
    }

    #[inline(always)]
    fn enter(&self, mode: Mode, ctx: Option<Context>, class: Class) -> Context {
        self.charge(mode);
        let prev_ctx = self.ctx.get();
        if let Some(c) = ctx {
            self.ctx.set(c);
        }
        let d = self.depth.get();
        if d < MAX_DEPTH {
            let mut s = self.stack.get();
            s[d] = class;
            self.stack.set(s);
        }
        self.depth.set(d + 1);
        if mode == Mode::Exact {
            let c = &self.counters.calls[slot(self.ctx.get(), class)];
            // Relaxed single-writer increment, as in `charge`.
            c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        self.publish();
        prev_ctx
    }

    #[inline(always)]
    fn leave(&self, mode: Mode, prev_ctx: Context) {
        self.charge(mode);
        self.depth.set(self.depth.get().saturating_sub(1));
        self.ctx.set(prev_ctx);
        self.publish();
    }
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Registers the calling thread as a vCPU of `domid`, starting in `ctx`, with the TSC clock.
/// Registering again replaces the thread's identity (its old counters stay in reports).
pub fn register_vcpu(domid: DomId, ctx: Context) -> Arc<VcpuCounters> {
    register_vcpu_with_clock(domid, ctx, ClockSource::Tsc)
}

/// Like [`register_vcpu`] with an explicit clock, for deterministic tests.
pub fn register_vcpu_with_clock(
    domid: DomId,
    ctx: Context,
    clock: ClockSource,
) -> Arc<VcpuCounters> {
    let counters = {
        let mut all = VCPUS.lock().unwrap_or_else(|e| e.into_inner());
        let vcpu = all.iter().filter(|v| v.domid == domid).count() as u32;
        let c = Arc::new(VcpuCounters::new(domid, vcpu));
        all.push(c.clone());
        c
    };
    let state = State {
        counters: counters.clone(),
        ctx: Cell::new(ctx),
        stack: Cell::new([Class::OTHER; MAX_DEPTH]),
        depth: Cell::new(0),
        last: Cell::new(0),
        clock,
    };
    state.last.set(state.now());
    state.publish();
    STATE.with(|s| *s.borrow_mut() = Some(state));
    counters
}

/// Charges the calling thread's time up to now, so a report taken next sees it. Call before
/// snapshotting counters at the end of a measurement.
pub fn flush() {
    let mode = mode();
    STATE.with(|s| {
        if let Some(st) = s.borrow().as_ref() {
            st.charge(mode);
        }
    });
}

/// Sets the calling thread's context outside any scope (e.g. a vCPU moving to user space).
pub fn set_context(ctx: Context) {
    let mode = mode();
    STATE.with(|s| {
        if let Some(st) = s.borrow().as_ref() {
            st.charge(mode);
            st.ctx.set(ctx);
            st.publish();
        }
    });
}

/// A class scope; leaving it (drop) returns the time to the enclosing scope.
#[must_use = "a scope ends when this guard is dropped"]
#[derive(Debug)]
pub struct Scope {
    #[cfg(feature = "enabled")]
    prev_ctx: Option<Context>,
    // Not Send: a scope must end on the thread that entered it.
    _not_send: std::marker::PhantomData<*const ()>,
}

#[cfg(feature = "enabled")]
#[inline(always)]
fn enter(ctx: Option<Context>, class: Class) -> Scope {
    let mode = mode();
    let prev_ctx = if mode == Mode::Off {
        None
    } else {
        STATE.with(|s| s.borrow().as_ref().map(|st| st.enter(mode, ctx, class)))
    };
    Scope {
        prev_ctx,
        _not_send: std::marker::PhantomData,
    }
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
        if let Some(prev) = self.prev_ctx {
            // The mode is re-read: a scope entered while on and left after `set_mode(Off)` still
            // pops its stack entry, it just stops charging.
            let mode = mode();
            STATE.with(|s| {
                if let Some(st) = s.borrow().as_ref() {
                    st.leave(mode, prev);
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
}
