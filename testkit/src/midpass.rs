//! Guest actions in the middle of a backend pass: a grant revoked between two batched grant
//! copies, a ring slot rewritten after the backend read it, as a guest on another vCPU could.
//!
//! [`MidPass`] sits on the backend domain's hypercall hook (`xen_model::Hypercall`): a test
//! schedules actions for the next pass, each for the backend's `n`-th counted call of that pass,
//! and the hook runs them, on the backend's thread, just before that call.

use std::sync::{Arc, Mutex, MutexGuard};

use xen_model::{DomainHandle, Hypercall};

/// The backend's grant copies and transfers: the hypercalls of a pass.
pub const GRANT_CALLS: &[Hypercall] = &[Hypercall::GrantCopy, Hypercall::GrantTransfer];

/// Actions scheduled inside a backend's passes. Cheap to clone (the state is shared with the
/// hook).
pub struct MidPass<A> {
    state: Arc<Mutex<State<A>>>,
}

struct State<A> {
    /// Counted calls made since the last [`MidPass::begin`].
    calls: u32,
    /// Actions not yet run, with the call they precede (counting from 1).
    pending: Vec<(u32, A)>,
    /// Actions run, with the call they preceded, in order.
    done: Vec<(Hypercall, A)>,
    run: fn(&mut A),
}

impl<A> Clone for MidPass<A> {
    fn clone(&self) -> Self {
        MidPass {
            state: self.state.clone(),
        }
    }
}

impl<A> MidPass<A> {
    fn lock(&self) -> MutexGuard<'_, State<A>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<A> std::fmt::Debug for MidPass<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("MidPass")
            .field("calls", &s.calls)
            .field("pending", &s.pending.len())
            .field("done", &s.done.len())
            .finish()
    }
}

impl<A: Send + 'static> MidPass<A> {
    /// Hooks `backend`'s calls of the kinds in `counted`: before each, the actions scheduled
    /// for it (or for an earlier call) run, in the order they were scheduled, through `run`.
    /// Panics if the domain has a hook already.
    #[track_caller]
    pub fn install(backend: &DomainHandle, counted: &'static [Hypercall], run: fn(&mut A)) -> Self {
        let state = Arc::new(Mutex::new(State {
            calls: 0,
            pending: Vec::new(),
            done: Vec::new(),
            run,
        }));
        let s = state.clone();
        backend
            .on_hypercall(Arc::new(move |call| {
                if counted.contains(&call) {
                    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                    s.before(call);
                }
            }))
            .unwrap_or_else(|_| panic!("domain {} has a hypercall hook already", backend.domid()));
        MidPass { state }
    }

    /// Schedules `action` for just before the `at_call`-th counted call (from 1) after the
    /// next [`MidPass::begin`].
    pub fn schedule(&self, at_call: u32, action: A) {
        self.lock().pending.push((at_call, action));
    }

    /// Keeps only the scheduled actions `keep` accepts.
    pub fn retain(&self, mut keep: impl FnMut(&A) -> bool) {
        self.lock().pending.retain(|(_, a)| keep(a));
    }

    /// A pass begins: calls count from 1 again.
    pub fn begin(&self) {
        self.lock().calls = 0;
    }

    /// The pass ended: drops the actions that did not run and returns those that did, with the
    /// call each preceded, in order.
    pub fn end(&self) -> Vec<(Hypercall, A)> {
        let mut s = self.lock();
        s.pending.clear();
        std::mem::take(&mut s.done)
    }
}

impl<A> State<A> {
    fn before(&mut self, call: Hypercall) {
        self.calls += 1;
        let calls = self.calls;
        let (now, later): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|(at, _)| *at <= calls);
        self.pending = later;
        for (_, mut a) in now {
            (self.run)(&mut a);
            self.done.push((call, a));
        }
    }
}
