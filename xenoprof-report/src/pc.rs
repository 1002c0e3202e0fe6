//! Real PC sampling: `perf_event_open` with the cpu-clock software event, symbolized with
//! blazesym into OProfile's "Function / Module" table and folded stacks for flamegraph tools.
//!
//! All `unsafe` (the syscall, the ring-buffer mapping) stays inside the maintained `perf-event2`
//! crate, so this crate keeps `#![forbid(unsafe_code)]`.
//!
//! Where the kernel allows it (root or CAP_PERFMON, or `perf_event_paranoid` ≤ 0) one sampler per
//! online CPU watches every task and keeps this process's samples, with kernel IPs. Otherwise it
//! falls back to sampling this process only (new threads inherit the event; user IPs only). If
//! both are refused, [`PcSampler::start`] returns [`Error::PerfEventOpen`] saying why and what to
//! do; class-level sampling and exact counting keep working.
//!
//! User-space call chains come from frame pointers: build with
//! `RUSTFLAGS="-C force-frame-pointers=yes"` for deep stacks; without them the leaf function is
//! still exact.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use blazesym::symbolize::source::{Kernel, Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use perf_event::data::Record;
use perf_event::events::Software;
use perf_event::{Builder, SampleFlag, Sampler};
use serde::{Deserialize, Serialize};
use xenoprof::hooks::DomId;

use crate::error::Error;

/// Addresses at or above this are kernel text on x86-64.
const KERNEL_START: u64 = 0xffff_8000_0000_0000;
/// Call-chain context markers (`PERF_CONTEXT_*`) are the top 4095 values of u64.
const CONTEXT_MARKER: u64 = u64::MAX - 4095;
/// Ring buffer per sampler.
const MAP_BYTES: usize = 256 * 1024;
/// How often the drain thread empties the ring buffers.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// Deepest call chain kept.
const MAX_STACK: u16 = 64;

/// How the PC sampler watches the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PcScope {
    /// One sampler per CPU watching all tasks, filtered to this process; kernel IPs included.
    PerCpu,
    /// This process only, inherited by threads created after start; user IPs only.
    Process,
}

/// Raw samples, aggregated by (thread, call chain) as they arrive.
#[derive(Debug, Default)]
pub(crate) struct RawSamples {
    /// (tid, chain leaf-first with return addresses already moved into the call) → count.
    pub stacks: HashMap<(u32, Vec<u64>), u64>,
    pub samples: u64,
    pub lost: u64,
}

/// A running PC sampler: a drain thread owning the perf samplers.
#[derive(Debug)]
pub struct PcSampler {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    raw: Arc<Mutex<RawSamples>>,
    freq_hz: u64,
    scope: PcScope,
}

fn paranoid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Online CPUs from sysfs ("0-1,4"), falling back to the available parallelism.
fn online_cpus() -> Vec<usize> {
    let parsed = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| {
            let mut cpus = Vec::new();
            for part in s.trim().split(',') {
                match part.split_once('-') {
                    Some((a, b)) => cpus.extend(a.parse::<usize>().ok()?..=b.parse().ok()?),
                    None => cpus.push(part.parse().ok()?),
                }
            }
            Some(cpus)
        });
    parsed.unwrap_or_else(|| {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    })
}

fn builder(freq_hz: u64) -> Builder<'static> {
    let mut b = Builder::new(Software::CPU_CLOCK);
    b.sample_frequency(freq_hz)
        .sample(SampleFlag::IP | SampleFlag::TID | SampleFlag::CALLCHAIN)
        .sample_max_stack(MAX_STACK);
    b
}

fn open(freq_hz: u64) -> Result<(Vec<Sampler>, PcScope), Error> {
    let per_cpu = || -> std::io::Result<Vec<Sampler>> {
        online_cpus()
            .into_iter()
            .map(|cpu| {
                builder(freq_hz)
                    .any_pid()
                    .one_cpu(cpu)
                    .include_kernel()
                    .build()?
                    .sampled(MAP_BYTES)
            })
            .collect()
    };
    match per_cpu() {
        Ok(s) => Ok((s, PcScope::PerCpu)),
        Err(_) => {
            let s = builder(freq_hz)
                .observe_self()
                .any_cpu()
                .inherit(true)
                .exclude_kernel(true)
                .build()
                .and_then(|c| c.sampled(MAP_BYTES))
                .map_err(|source| Error::PerfEventOpen {
                    paranoid: paranoid(),
                    source,
                })?;
            Ok((vec![s], PcScope::Process))
        }
    }
}

fn drain(samplers: &mut [Sampler], pid: u32, raw: &Mutex<RawSamples>) {
    let mut raw = raw.lock().unwrap_or_else(|e| e.into_inner());
    for s in samplers.iter_mut() {
        while let Some(rec) = s.next_record() {
            match rec.parse_record() {
                Ok(Record::Sample(smp)) => {
                    if smp.pid() != Some(pid) {
                        continue;
                    }
                    let tid = smp.tid().unwrap_or(0);
                    let chain = clean_chain(smp.ip(), smp.callchain().unwrap_or(&[]));
                    raw.samples += 1;
                    *raw.stacks.entry((tid, chain)).or_insert(0) += 1;
                }
                Ok(Record::Lost(l)) => raw.lost += l.lost,
                _ => {}
            }
        }
    }
}

/// Leaf-first chain without context markers; return addresses moved back into the call
/// instruction (`- 1`) so they symbolize to the caller's line, as perf does.
fn clean_chain(ip: Option<u64>, chain: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(chain.len().max(1));
    let mut first_in_context = true;
    for &a in chain {
        if a >= CONTEXT_MARKER {
            first_in_context = true;
            continue;
        }
        out.push(if first_in_context {
            a
        } else {
            a.wrapping_sub(1)
        });
        first_in_context = false;
    }
    if out.is_empty()
        && let Some(ip) = ip
    {
        out.push(ip);
    }
    out
}

impl PcSampler {
    /// Opens cpu-clock samplers at `freq_hz` and starts draining them.
    pub fn start(freq_hz: u64) -> Result<PcSampler, Error> {
        let raw = Arc::new(Mutex::new(RawSamples::default()));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<PcScope, Error>>();
        let raw2 = raw.clone();
        // The samplers are opened on the drain thread, which then owns them for their life.
        let thread = std::thread::Builder::new()
            .name("xenoprof-pc".into())
            .spawn(move || {
                let (mut samplers, scope) = match open(freq_hz) {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for s in &mut samplers {
                    if let Err(source) = s.enable() {
                        let _ = ready_tx.send(Err(Error::PerfEventOpen {
                            paranoid: paranoid(),
                            source,
                        }));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(scope));
                let pid = std::process::id();
                // Ends when the sender is dropped (stop) or sends.
                while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(DRAIN_EVERY) {
                    drain(&mut samplers, pid, &raw2);
                }
                for s in &mut samplers {
                    let _ = s.disable();
                }
                drain(&mut samplers, pid, &raw2);
            })
            .map_err(Error::Spawn)?;
        let scope = match ready_rx.recv() {
            Ok(Ok(scope)) => scope,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Spawn(std::io::Error::other(
                    "the PC sampler thread ended before opening its samplers",
                )));
            }
        };
        Ok(PcSampler {
            stop: Some(stop_tx),
            thread: Some(thread),
            raw,
            freq_hz,
            scope,
        })
    }

    /// How the process is watched.
    pub fn scope(&self) -> PcScope {
        self.scope
    }

    /// Whether the samplers are still open (not yet stopped).
    pub fn is_running(&self) -> bool {
        self.thread.is_some()
    }

    /// The requested sampling frequency.
    pub fn freq_hz(&self) -> u64 {
        self.freq_hz
    }

    /// Samples kept so far (this process's).
    pub fn samples(&self) -> u64 {
        self.raw.lock().unwrap_or_else(|e| e.into_inner()).samples
    }

    /// Forgets every sample taken so far.
    pub fn reset(&self) {
        *self.raw.lock().unwrap_or_else(|e| e.into_inner()) = RawSamples::default();
    }

    /// Stops sampling (after a final drain); the samples stay readable.
    pub fn stop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Symbolizes the samples so far. `domain_of(tid)` says which domain a thread is a vCPU of,
    /// and `keep(domid)` which domains get function detail; threads that are no vCPU are kept
    /// under `keep_unregistered`.
    pub fn profile(
        &self,
        domain_of: &dyn Fn(u32) -> Option<DomId>,
        keep: &dyn Fn(DomId) -> bool,
        keep_unregistered: bool,
    ) -> PcProfile {
        let raw = self.raw.lock().unwrap_or_else(|e| e.into_inner());
        symbolize(
            &raw,
            self.freq_hz,
            self.scope,
            domain_of,
            keep,
            keep_unregistered,
        )
    }
}

impl Drop for PcSampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One row of OProfile's table: samples whose IP fell in `function` of `module`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRow {
    /// Demangled function name, or the address in hex when unknown.
    pub function: String,
    /// The binary or shared object (`[kernel.kallsyms]` for the kernel).
    pub module: String,
    /// The Rust crate, read from the demangled path, when there is one.
    pub krate: Option<String>,
    /// Samples.
    pub samples: u64,
}

/// One folded stack: root-first frames joined by `;`, as flamegraph tools read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldedStack {
    /// `dom0;main;netback_tx;memcpy`
    pub stack: String,
    /// Samples with exactly this stack.
    pub count: u64,
}

/// Symbolized PC samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcProfile {
    /// Requested cpu-clock frequency.
    pub freq_hz: u64,
    /// How the process was watched.
    pub scope: PcScope,
    /// Samples kept (after role filtering).
    pub samples: u64,
    /// Samples the kernel dropped because the ring buffer was full.
    pub lost: u64,
    /// Functions by samples, descending.
    pub functions: Vec<FunctionRow>,
    /// Folded stacks by count, descending.
    pub folded: Vec<FoldedStack>,
}

impl PcProfile {
    /// The folded stacks as text: one `a;b;c count` line each, for flamegraph tools.
    pub fn folded_text(&self) -> String {
        self.folded
            .iter()
            .map(|f| format!("{} {}\n", f.stack, f.count))
            .collect()
    }
}

#[derive(Clone)]
struct Frame {
    function: String,
    module: String,
    krate: Option<String>,
}

/// The crate of a demangled Rust path: `<netback::Vif as Foo>::bar` → `netback`.
pub(crate) fn crate_of(name: &str) -> Option<String> {
    let s = name.trim_start_matches('<').trim_start_matches('&');
    let (head, _) = s.split_once("::")?;
    (!head.is_empty() && head.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .then(|| head.to_string())
}

fn resolve(
    symbolizer: &Symbolizer,
    src: &Source<'_>,
    addrs: &[u64],
    out: &mut HashMap<u64, Frame>,
) {
    if addrs.is_empty() {
        return;
    }
    let kernel = matches!(src, Source::Kernel(_));
    let syms = symbolizer
        .symbolize(src, Input::AbsAddr(addrs))
        .unwrap_or_default();
    for (i, &a) in addrs.iter().enumerate() {
        let frame = match syms.get(i) {
            Some(Symbolized::Sym(sym)) => Frame {
                function: sym.name.to_string(),
                module: if kernel {
                    "[kernel.kallsyms]".to_string()
                } else {
                    sym.module
                        .as_deref()
                        .map(std::path::Path::new)
                        .and_then(|p| p.file_name())
                        .map_or_else(|| "?".into(), |f| f.to_string_lossy().into_owned())
                },
                krate: if kernel { None } else { crate_of(&sym.name) },
            },
            _ => Frame {
                function: format!("{a:#x}"),
                module: if kernel {
                    "[kernel.kallsyms]".into()
                } else {
                    "?".into()
                },
                krate: None,
            },
        };
        out.insert(a, frame);
    }
}

fn symbolize(
    raw: &RawSamples,
    freq_hz: u64,
    scope: PcScope,
    domain_of: &dyn Fn(u32) -> Option<DomId>,
    keep: &dyn Fn(DomId) -> bool,
    keep_unregistered: bool,
) -> PcProfile {
    let kept: Vec<(Option<DomId>, &Vec<u64>, u64)> = raw
        .stacks
        .iter()
        .filter_map(|((tid, chain), &n)| {
            let dom = domain_of(*tid);
            let ok = match dom {
                Some(d) => keep(d),
                None => keep_unregistered,
            };
            ok.then_some((dom, chain, n))
        })
        .collect();
    let mut user: Vec<u64> = Vec::new();
    let mut kern: Vec<u64> = Vec::new();
    for (_, chain, _) in &kept {
        for &a in chain.iter() {
            if a >= KERNEL_START {
                kern.push(a)
            } else {
                user.push(a)
            }
        }
    }
    for v in [&mut user, &mut kern] {
        v.sort_unstable();
        v.dedup();
    }
    let symbolizer = Symbolizer::new();
    let mut frames = HashMap::new();
    resolve(
        &symbolizer,
        &Source::Process(Process::new(blazesym::Pid::Slf)),
        &user,
        &mut frames,
    );
    resolve(
        &symbolizer,
        &Source::Kernel(Kernel::default()),
        &kern,
        &mut frames,
    );

    let mut functions: BTreeMap<(String, String), (Option<String>, u64)> = BTreeMap::new();
    let mut folded: BTreeMap<String, u64> = BTreeMap::new();
    let mut samples = 0;
    for (dom, chain, n) in kept {
        samples += n;
        let unknown = |a: u64| Frame {
            function: format!("{a:#x}"),
            module: "?".into(),
            krate: None,
        };
        let leaf = chain
            .first()
            .map(|&a| frames.get(&a).cloned().unwrap_or_else(|| unknown(a)));
        if let Some(f) = leaf {
            let e = functions
                .entry((f.function, f.module))
                .or_insert((f.krate, 0));
            e.1 += n;
        }
        let mut stack = match dom {
            Some(d) => format!("dom{d}"),
            None => "unregistered".to_string(),
        };
        for &a in chain.iter().rev() {
            stack.push(';');
            match frames.get(&a) {
                Some(f) => stack.push_str(&f.function.replace(';', ":")),
                None => stack.push_str(&format!("{a:#x}")),
            }
        }
        *folded.entry(stack).or_insert(0) += n;
    }
    let mut functions: Vec<FunctionRow> = functions
        .into_iter()
        .map(|((function, module), (krate, samples))| FunctionRow {
            function,
            module,
            krate,
            samples,
        })
        .collect();
    functions.sort_by(|a, b| {
        b.samples
            .cmp(&a.samples)
            .then_with(|| a.function.cmp(&b.function))
    });
    let mut folded: Vec<FoldedStack> = folded
        .into_iter()
        .map(|(stack, count)| FoldedStack { stack, count })
        .collect();
    folded.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.stack.cmp(&b.stack)));
    PcProfile {
        freq_hz,
        scope,
        samples,
        lost: raw.lost,
        functions,
        folded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_cleaning_drops_markers_and_adjusts_return_addresses() {
        let kernel_marker = u64::MAX - 127; // PERF_CONTEXT_KERNEL
        let user_marker = u64::MAX - 511; // PERF_CONTEXT_USER
        let chain = [
            kernel_marker,
            0xffff_ffff_8100_0010,
            0xffff_ffff_8100_0020,
            user_marker,
            0x1000,
            0x2000,
        ];
        assert_eq!(
            clean_chain(Some(1), &chain),
            vec![0xffff_ffff_8100_0010, 0xffff_ffff_8100_001f, 0x1000, 0x1fff]
        );
        assert_eq!(clean_chain(Some(0x42), &[]), vec![0x42]);
    }

    #[test]
    fn crate_names_come_from_the_demangled_path() {
        assert_eq!(crate_of("netback::rx::fill").as_deref(), Some("netback"));
        assert_eq!(
            crate_of("<bridge_lite::Switch as Foo>::bar").as_deref(),
            Some("bridge_lite")
        );
        assert_eq!(crate_of("memcpy"), None);
    }
}
