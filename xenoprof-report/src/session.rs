//! Profiling sessions with Xenoprof's domain roles, and the class-level sampler.
//!
//! A [`Session`] names an initiator domain and the role of every other domain, then gathers:
//! - **samples**: at each sampler tick every running vCPU's current (domain, context, class) tag
//!   is read and counted, like Xenoprof's PC samples but at class granularity. A thread ticks at
//!   a fixed rate ([`SessionBuilder::sample_hz`]); tests call [`Session::tick`] by hand.
//! - **cycles and calls**: exact-mode counters, read as the difference from a baseline taken at
//!   start, so sessions never zero the shared per-thread counters and cannot disturb each other.
//! - optionally **PC samples** ([`Session::start_pc_sampling`]).
//!
//! Roles filter at collection time: active domains (and the initiator) keep class detail;
//! passive domains keep only the xen / kernel / user split; unmonitored domains' samples are
//! discarded (counted per domain in `discarded_samples`) and their cycles ignored.
//!
//! Samples are only meaningful while the global [`Mode`] is `Sampled` or `Exact`
//! (in `Off` the tags are stale, so a tick counts nothing).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xenoprof::class::Class;
use xenoprof::counters::CounterSnapshot;
use xenoprof::hooks::{self, Context, DomId, Mode};

use crate::error::Error;
use crate::profile::{DomainProfile, Profile, Role, Row};

/// Sets up a [`Session`].
#[derive(Debug, Clone)]
pub struct SessionBuilder {
    initiator: DomId,
    roles: BTreeMap<DomId, Role>,
    others: Role,
    sample_hz: u32,
    label: String,
    check_running: bool,
}

impl SessionBuilder {
    /// Marks `domids` active (class-level detail).
    pub fn active(mut self, domids: &[DomId]) -> Self {
        for &d in domids {
            if d != self.initiator {
                self.roles.insert(d, Role::Active);
            }
        }
        self
    }

    /// Marks `domids` passive (only the xen / kernel / user split).
    pub fn passive(mut self, domids: &[DomId]) -> Self {
        for &d in domids {
            if d != self.initiator {
                self.roles.insert(d, Role::Passive);
            }
        }
        self
    }

    /// Marks `domids` unmonitored (samples discarded).
    pub fn unmonitored(mut self, domids: &[DomId]) -> Self {
        for &d in domids {
            if d != self.initiator {
                self.roles.insert(d, Role::Unmonitored);
            }
        }
        self
    }

    /// The role of every domain not named (default: unmonitored, as in Xenoprof).
    pub fn others(mut self, role: Role) -> Self {
        self.others = if role == Role::Initiator {
            Role::Active
        } else {
            role
        };
        self
    }

    /// Starts a sampler thread at `hz` ticks per second on [`Session::start`] (0: none; call
    /// [`Session::tick`] yourself). The seed's OProfile used a fixed event count; 1000 Hz here
    /// gives about a thousand samples per busy vCPU per second.
    pub fn sample_hz(mut self, hz: u32) -> Self {
        self.sample_hz = hz;
        self
    }

    /// Also skip vCPUs whose thread the kernel reports as not runnable (state other than `R` in
    /// `/proc/self/task/TID/stat`): catches waits not wrapped in [`xenoprof::blocked`], at the
    /// cost of one small procfs read per vCPU per tick. Off by default.
    pub fn check_running(mut self, on: bool) -> Self {
        self.check_running = on;
        self
    }

    /// A label stored in the profile.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The session, stopped and empty.
    pub fn build(self) -> Session {
        Session {
            shared: Arc::new(Shared {
                initiator: self.initiator,
                roles: self.roles,
                others: self.others,
                sample_hz: self.sample_hz,
                label: self.label,
                check_running: self.check_running,
                state: Mutex::new(State::default()),
            }),
            sampler: None,
            #[cfg(feature = "pc-sampling")]
            pc: None,
            pc_error: None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    running: bool,
    ticks: u64,
    discarded: BTreeMap<DomId, u64>,
    /// (domain, context, class or `None` for passive) → samples.
    samples: BTreeMap<(DomId, Context, Option<Class>), u64>,
    /// Exact counters gathered over finished run intervals, by index in `hooks::vcpus()`.
    accum: HashMap<usize, CounterSnapshot>,
    /// Counters at the start of the current run interval (vCPUs registered later start at 0).
    base: HashMap<usize, CounterSnapshot>,
    started: Option<Instant>,
    wall: Duration,
}

#[derive(Debug)]
struct Shared {
    initiator: DomId,
    roles: BTreeMap<DomId, Role>,
    others: Role,
    sample_hz: u32,
    label: String,
    check_running: bool,
    state: Mutex<State>,
}

/// Whether the kernel says thread `tid` of this process is runnable (`R`). Unknown: yes.
fn thread_runnable(tid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return true;
    };
    // "pid (comm) S ...": comm may contain spaces and parentheses, so split at the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_none_or(|state| state == 'R')
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn role(&self, domid: DomId) -> Role {
        if domid == self.initiator {
            return Role::Initiator;
        }
        self.roles.get(&domid).copied().unwrap_or(self.others)
    }

    fn tick(&self) -> u64 {
        if hooks::mode() == Mode::Off {
            return 0;
        }
        let vcpus = hooks::vcpus();
        let mut st = self.state();
        if !st.running {
            return 0;
        }
        st.ticks += 1;
        let mut counted = 0;
        for v in &vcpus {
            if !v.is_running() {
                continue;
            }
            if self.check_running && v.tid().is_some_and(|t| !thread_runnable(t)) {
                continue;
            }
            let (ctx, class) = v.current();
            let key = match self.role(v.domid()) {
                Role::Unmonitored => {
                    *st.discarded.entry(v.domid()).or_insert(0) += 1;
                    continue;
                }
                Role::Passive => (v.domid(), ctx, None),
                Role::Initiator | Role::Active => (v.domid(), ctx, Some(class)),
            };
            *st.samples.entry(key).or_insert(0) += 1;
            counted += 1;
        }
        counted
    }
}

/// A profiling session. See the module documentation.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    sampler: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    #[cfg(feature = "pc-sampling")]
    pc: Option<crate::pc::PcSampler>,
    pc_error: Option<String>,
}

fn read_all() -> HashMap<usize, CounterSnapshot> {
    hooks::vcpus()
        .iter()
        .enumerate()
        .map(|(i, v)| (i, v.snapshot()))
        .collect()
}

impl Session {
    /// A session set up by domain `initiator` (usually 0).
    pub fn builder(initiator: DomId) -> SessionBuilder {
        SessionBuilder {
            initiator,
            roles: BTreeMap::new(),
            others: Role::Unmonitored,
            sample_hz: 0,
            label: String::new(),
            check_running: false,
        }
    }

    /// The role `domid` has in this session.
    pub fn role(&self, domid: DomId) -> Role {
        self.shared.role(domid)
    }

    /// Whether the session is gathering.
    pub fn is_running(&self) -> bool {
        self.shared.state().running
    }

    /// Forgets everything gathered (like `opcontrol --reset`). Allowed while running.
    pub fn reset(&mut self) {
        let mut st = self.shared.state();
        let running = st.running;
        *st = State::default();
        if running {
            st.running = true;
            st.base = read_all();
            st.started = Some(Instant::now());
        }
        drop(st);
        #[cfg(feature = "pc-sampling")]
        if let Some(pc) = &self.pc {
            pc.reset();
        }
    }

    /// Starts gathering (like `opcontrol --start`); a no-op when running. Starts the sampler
    /// thread when a rate was configured.
    pub fn start(&mut self) -> Result<(), Error> {
        {
            let mut st = self.shared.state();
            if st.running {
                return Ok(());
            }
            st.running = true;
            st.base = read_all();
            st.started = Some(Instant::now());
        }
        if self.shared.sample_hz > 0 && self.sampler.is_none() {
            let period = Duration::from_nanos(1_000_000_000 / u64::from(self.shared.sample_hz));
            let (tx, rx) = mpsc::channel::<()>();
            let shared = self.shared.clone();
            let handle = std::thread::Builder::new()
                .name("xenoprof-sampler".into())
                .spawn(move || {
                    let mut next = Instant::now() + period;
                    loop {
                        let wait = next.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(wait) {
                            Err(RecvTimeoutError::Timeout) => {
                                shared.tick();
                                next += period;
                                // After a long stall, do not burst to catch up.
                                let now = Instant::now();
                                if next < now {
                                    next = now + period;
                                }
                            }
                            _ => break,
                        }
                    }
                })
                .map_err(Error::Spawn)?;
            self.sampler = Some((tx, handle));
        }
        Ok(())
    }

    /// Stops gathering (like `opcontrol --stop`); what was gathered stays for [`Self::snapshot`].
    pub fn stop(&mut self) {
        if let Some((tx, handle)) = self.sampler.take() {
            drop(tx);
            let _ = handle.join();
        }
        #[cfg(feature = "pc-sampling")]
        if let Some(pc) = &mut self.pc {
            pc.stop();
        }
        let mut st = self.shared.state();
        if !st.running {
            return;
        }
        st.running = false;
        let now = read_all();
        for (i, snap) in now {
            let delta = snap.since(st.base.get(&i).unwrap_or(&CounterSnapshot::ZERO));
            st.accum
                .entry(i)
                .or_insert(CounterSnapshot::ZERO)
                .add(&delta);
        }
        st.base.clear();
        if let Some(t) = st.started.take() {
            st.wall += t.elapsed();
        }
    }

    /// Takes one sample of every registered, running vCPU now. Returns how many were counted
    /// (not discarded). Does nothing while stopped or while the mode is `Off`.
    pub fn tick(&self) -> u64 {
        self.shared.tick()
    }

    /// Starts PC sampling at `freq_hz` with perf_event_open (cpu-clock). On refusal the error
    /// says why and what to do, and is also recorded in the profile's `pc_error`; everything
    /// else keeps working. [`Session::stop`] closes the samplers; after a restart call this
    /// again (the new samplers start empty).
    pub fn start_pc_sampling(&mut self, freq_hz: u64) -> Result<(), Error> {
        #[cfg(feature = "pc-sampling")]
        {
            if self.pc.as_ref().is_some_and(|pc| pc.is_running()) {
                return Ok(());
            }
            match crate::pc::PcSampler::start(freq_hz) {
                Ok(pc) => {
                    self.pc = Some(pc);
                    self.pc_error = None;
                    Ok(())
                }
                Err(e) => {
                    self.pc_error = Some(e.to_string());
                    Err(e)
                }
            }
        }
        #[cfg(not(feature = "pc-sampling"))]
        {
            let _ = freq_hz;
            self.pc_error = Some(Error::PcSamplingUnavailable.to_string());
            Err(Error::PcSamplingUnavailable)
        }
    }

    /// The figures gathered so far; may be taken while running.
    pub fn snapshot(&self) -> Profile {
        let vcpus = hooks::vcpus();
        let st = self.shared.state();
        let mut exact: HashMap<usize, CounterSnapshot> = st.accum.clone();
        if st.running {
            for (i, v) in vcpus.iter().enumerate() {
                let delta = v
                    .snapshot()
                    .since(st.base.get(&i).unwrap_or(&CounterSnapshot::ZERO));
                exact.entry(i).or_insert(CounterSnapshot::ZERO).add(&delta);
            }
        }
        // (domain) → (context, class or None) → (samples, cycles, calls)
        type Figures = (u64, u64, u64);
        type Rows = BTreeMap<(Context, Option<Class>), Figures>;
        let mut doms: BTreeMap<DomId, (u32, Rows)> = BTreeMap::new();
        // vCPUs of this session: alive now, or with exact figures in it.
        for (i, v) in vcpus.iter().enumerate() {
            let seen =
                !v.is_offline() || exact.get(&i).is_some_and(|s| *s != CounterSnapshot::ZERO);
            if seen && self.role(v.domid()) != Role::Unmonitored {
                doms.entry(v.domid()).or_default().0 += 1;
            }
        }
        for (&(d, ctx, class), &n) in &st.samples {
            doms.entry(d)
                .or_default()
                .1
                .entry((ctx, class))
                .or_default()
                .0 += n;
        }
        for (i, snap) in &exact {
            let Some(v) = vcpus.get(*i) else { continue };
            let role = self.role(v.domid());
            if role == Role::Unmonitored {
                continue;
            }
            let rows = &mut doms.entry(v.domid()).or_default().1;
            for ctx in Context::ALL {
                for class in Class::all() {
                    let (cy, ca) = (
                        snap.cycles[ctx as usize][class.index()],
                        snap.calls[ctx as usize][class.index()],
                    );
                    if cy == 0 && ca == 0 {
                        continue;
                    }
                    let key = (ctx, role.has_class_detail().then_some(class));
                    let e = rows.entry(key).or_default();
                    e.1 += cy;
                    e.2 += ca;
                }
            }
        }
        let mut p = Profile::new(self.shared.label.clone());
        p.sample_hz = self.shared.sample_hz;
        p.ticks = st.ticks;
        p.discarded_samples = st.discarded.clone();
        p.tsc_hz = hooks::tsc_hz();
        p.wall_ns =
            (st.wall + st.started.map_or(Duration::ZERO, |t| t.elapsed())).as_nanos() as u64;
        p.domains = doms
            .into_iter()
            .map(|(domid, (vcpus, rows))| DomainProfile {
                domid,
                role: self.role(domid),
                vcpus,
                rows: rows
                    .into_iter()
                    .filter(|(_, v)| *v != (0, 0, 0))
                    .map(|((context, class), (samples, cycles, calls))| Row {
                        context,
                        class: class.map(|c| c.name().to_string()),
                        samples,
                        cycles,
                        calls,
                    })
                    .collect(),
            })
            .collect();
        drop(st);
        p.pc_error = self.pc_error.clone();
        #[cfg(feature = "pc-sampling")]
        if let Some(pc) = &self.pc {
            let tids: HashMap<u32, DomId> = vcpus
                .iter()
                .filter_map(|v| Some((v.tid()?, v.domid())))
                .collect();
            p.pc = Some(pc.profile(
                &|tid| tids.get(&tid).copied(),
                &|d| self.role(d).has_class_detail(),
                false,
            ));
        }
        p
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.sampler.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}
