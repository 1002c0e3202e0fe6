//! The [`Probe`] trait: profiling as a type parameter.
//!
//! A data-path type generic over `P: Probe` calls `self.probe.scope(Class::BRIDGE)` and friends.
//! Given `()`, every call is an empty `#[inline(always)]` body returning a zero-sized guard, so
//! the optimiser removes it entirely (as `vm-memory` does with its `impl Bitmap for ()`). Given
//! [`Hooks`], the calls go to the global hooks of this crate.
//!
//! ```
//! use xenoprof::{Class, Probe};
//!
//! struct Switch<P: Probe> { probe: P, forwarded: u64 }
//! impl<P: Probe> Switch<P> {
//!     fn forward(&mut self) {
//!         let _s = self.probe.scope(Class::BRIDGE);
//!         self.forwarded += 1;
//!     }
//! }
//! let mut quiet = Switch { probe: (), forwarded: 0 };        // profiling compiled away
//! let mut loud = Switch { probe: xenoprof::Hooks, forwarded: 0 }; // reports through the hooks
//! quiet.forward();
//! loud.forward();
//! ```

use crate::class::Class;
use crate::hooks::{self, Blocked, Context, Scope};

/// Something that can tag work with classes and contexts.
pub trait Probe: Copy + Send + Sync + 'static {
    /// The guard a scope returns; dropping it leaves the scope.
    type Guard;
    /// The guard [`Probe::blocked`] returns.
    type BlockedGuard;

    /// Enters a scope of `class` in the current context.
    fn scope(&self, class: Class) -> Self::Guard;
    /// Enters a scope of `class` in the `xen` context (a hypercall).
    fn hypercall(&self, class: Class) -> Self::Guard;
    /// Enters a scope of `class` in `ctx`.
    fn scope_in(&self, ctx: Context, class: Class) -> Self::Guard;
    /// Sets the thread's context outside any scope.
    fn set_context(&self, ctx: Context);
    /// Marks the vCPU blocked (waiting) until the guard drops.
    fn blocked(&self) -> Self::BlockedGuard;
}

/// The no-op probe: every call compiles to nothing.
impl Probe for () {
    type Guard = ();
    type BlockedGuard = ();

    #[inline(always)]
    fn scope(&self, _class: Class) {}
    #[inline(always)]
    fn hypercall(&self, _class: Class) {}
    #[inline(always)]
    fn scope_in(&self, _ctx: Context, _class: Class) {}
    #[inline(always)]
    fn set_context(&self, _ctx: Context) {}
    #[inline(always)]
    fn blocked(&self) {}
}

/// The real probe: the process-wide hooks ([`hooks::scope`] and friends), subject to the
/// global [`Mode`](crate::Mode) and the `enabled` feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks;

impl Probe for Hooks {
    type Guard = Scope;
    type BlockedGuard = Blocked;

    #[inline(always)]
    fn scope(&self, class: Class) -> Scope {
        hooks::scope(class)
    }
    #[inline(always)]
    fn hypercall(&self, class: Class) -> Scope {
        hooks::hypercall(class)
    }
    #[inline(always)]
    fn scope_in(&self, ctx: Context, class: Class) -> Scope {
        hooks::scope_in(ctx, class)
    }
    #[inline(always)]
    fn set_context(&self, ctx: Context) {
        hooks::set_context(ctx)
    }
    #[inline(always)]
    fn blocked(&self) -> Blocked {
        hooks::blocked()
    }
}

#[cfg(all(test, feature = "enabled"))]
mod tests {
    use super::*;
    use crate::hooks::{ClockSource, ManualClock, Mode, register_vcpu_with_clock, set_mode};

    fn work<P: Probe>(p: P) {
        let _s = p.scope(Class::RING);
        let _h = p.hypercall(Class::MM);
    }

    // Unit tests in this crate only ever set Mode::Exact (see hooks::tests).
    #[test]
    fn unit_probe_is_free_and_hooks_probe_counts() {
        assert_eq!(std::mem::size_of::<<() as Probe>::Guard>(), 0);
        assert_eq!(std::mem::size_of::<<() as Probe>::BlockedGuard>(), 0);
        set_mode(Mode::Exact);
        let c = register_vcpu_with_clock(
            902,
            Context::Kernel,
            ClockSource::Manual(ManualClock::new()),
        );
        work(());
        assert_eq!(c.calls(Context::Kernel, Class::RING), 0);
        work(Hooks);
        assert_eq!(c.calls(Context::Kernel, Class::RING), 1);
        assert_eq!(c.calls(Context::Xen, Class::MM), 1);
    }
}
