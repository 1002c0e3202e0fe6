//! Grant copy cost per op, batched (64 ops per hypercall) against one hypercall per op, as the
//! ladder's steps (2) and (3) issue them: netback's rx pattern, a backend page (local address)
//! copied into a guest rx grant, 1514 bytes, a different page and grant every op. Between rounds
//! the guest ends and re-grants its buffers, as netfront does per packet.
//!
//! `cargo bench -p hypervisor --bench copy_batch`: runs both batch sizes interleaved, in rounds,
//! with xenoprof in exact mode, and prints per op the `grant_table`, `find_domain` and `copy`
//! cycles (xen context), the TSC cycles of the whole calls with the hooks on and (run right
//! after) off, medians over the rounds, and the batched/unbatched ratio of `grant_table`
//! measured in this same run.
//!
//! `--guest-thread` runs the guest's re-granting on a second thread, so the grant entries move
//! between cores as in the ladder (noisier on a loaded machine).
//!
//! `... --bench copy_batch -- --only N [--rounds R]`: runs only batch size N (for
//! `valgrind --tool=callgrind --toggle-collect='*grant_copy*'`, whose instruction counts divided
//! by the ops issued are the deterministic measure); prints the ops issued.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use hypervisor::{CopyOp, CopyPtr, GrantOps, GrantRef, GrantStatus, LocalAddr, Pfn};
use xen_model::{DomainHandle, Hypervisor};
use xenoprof::{Class, Context};

/// Distinct pages and grants per round (a ring's worth of rx buffers).
const OPS_PER_ROUND: usize = 256;
const LEN: u16 = 1514;

struct Setup {
    _xen: Hypervisor,
    d0: DomainHandle,
    src: Vec<LocalAddr>,
    /// The guest's rx grants, as the guest last posted them.
    rx: Arc<Mutex<Vec<GrantRef>>>,
    guest: GuestSide,
}

/// Where the guest's per-round re-granting runs.
enum GuestSide {
    /// On the measuring thread (its cache lines stay local).
    Inline(Guest),
    /// On its own thread, handing rounds back and forth through `turn` (the grant entries move
    /// between cores as they do in the ladder).
    Thread {
        turn: Arc<AtomicU32>,
        stop: Arc<AtomicBool>,
        join: Option<thread::JoinHandle<()>>,
    },
}

struct Guest {
    g: DomainHandle,
    rx_pfn: Vec<Pfn>,
}

impl Guest {
    /// The guest takes its buffers back and posts them again, as netfront does per packet.
    fn regrant(&self, rx: &Mutex<Vec<GrantRef>>) {
        let mut rx = rx.lock().expect("rx list");
        for (r, p) in rx.iter_mut().zip(&self.rx_pfn) {
            self.g.end_access(*r).expect("end");
            *r = self.g.grant_access(0, *p, false).expect("grant");
        }
    }
}

const DOM0_TURN: u32 = 0;
const GUEST_TURN: u32 = 1;

fn wait_for(turn: &AtomicU32, want: u32, stop: &AtomicBool) -> bool {
    let mut spins = 0u32;
    // Acquire: pairs with the Release store handing the turn over (the other side's writes to
    // the grant entries and the rx list happen-before ours).
    while turn.load(Ordering::Acquire) != want {
        // Relaxed: only ends the loop; no data is published through it.
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        spins += 1;
        if spins < 200 {
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }
    true
}

fn setup(threaded: bool) -> Setup {
    let xen = Hypervisor::new(4096).expect("machine");
    let d0 = xen.create_domain_with_id(0, 1024).expect("dom0");
    let g = xen.create_domain_with_id(1, 1024).expect("guest");
    let src = (0..OPS_PER_ROUND)
        .map(|i| {
            let p = d0.alloc_page().expect("page");
            d0.write(p, 0, &[i as u8; 4096]).expect("fill");
            d0.local_addr(p).expect("addr")
        })
        .collect();
    let rx_pfn: Vec<Pfn> = (0..OPS_PER_ROUND)
        .map(|_| g.alloc_page().expect("page"))
        .collect();
    let rx = Arc::new(Mutex::new(
        rx_pfn
            .iter()
            .map(|p| g.grant_access(0, *p, false).expect("grant"))
            .collect(),
    ));
    let guest = Guest { g, rx_pfn };
    let guest = if threaded {
        let turn = Arc::new(AtomicU32::new(DOM0_TURN));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, st, list) = (turn.clone(), stop.clone(), rx.clone());
        let join = thread::spawn(move || {
            while wait_for(&t, GUEST_TURN, &st) {
                guest.regrant(&list);
                // Release: pairs with the Acquire load in `wait_for` on the dom0 side.
                t.store(DOM0_TURN, Ordering::Release);
            }
        });
        GuestSide::Thread {
            turn,
            stop,
            join: Some(join),
        }
    } else {
        GuestSide::Inline(guest)
    };
    Setup {
        _xen: xen,
        d0,
        src,
        rx,
        guest,
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let GuestSide::Thread { stop, join, .. } = &mut self.guest {
            // Relaxed: the guest thread polls it; joining synchronises.
            stop.store(true, Ordering::Relaxed);
            if let Some(j) = join.take() {
                let _ = j.join();
            }
        }
    }
}

/// One round: the guest's buffers copied into with `batch` ops per call, then re-granted.
/// Returns the TSC cycles spent in the copy calls.
fn round(s: &mut Setup, ops: &mut Vec<CopyOp>, batch: usize) -> u64 {
    if let GuestSide::Thread { turn, stop, .. } = &s.guest {
        assert!(wait_for(turn, DOM0_TURN, stop), "guest thread stopped");
    }
    ops.clear();
    {
        let rx = s.rx.lock().expect("rx list");
        ops.extend(
            (0..OPS_PER_ROUND)
                .map(|i| CopyOp::new(CopyPtr::Local(s.src[i]), CopyPtr::gref(1, rx[i], 0), LEN)),
        );
    }
    let t = xenoprof::tsc();
    for chunk in ops.chunks_mut(batch) {
        GrantOps::grant_copy(&s.d0, black_box(chunk)).expect("copy");
    }
    let cycles = xenoprof::tsc() - t;
    assert!(
        ops.iter().all(|o| o.status == GrantStatus::Okay),
        "every bench op must succeed"
    );
    match &s.guest {
        GuestSide::Inline(g) => g.regrant(&s.rx),
        // Release: pairs with the guest thread's Acquire load in `wait_for`.
        GuestSide::Thread { turn, .. } => turn.store(GUEST_TURN, Ordering::Release),
    }
    cycles
}

/// Per-op figures of one measured stretch.
#[derive(Clone, Copy, Default)]
struct PerOp {
    grant_table: f64,
    find_domain: f64,
    copy: f64,
    /// TSC cycles per op of the whole calls, profiling hooks included.
    call: f64,
    /// The same with the hooks off (`xenoprof::Mode::Off`), measured right after.
    call_unprofiled: f64,
}

fn measure(
    s: &mut Setup,
    ops: &mut Vec<CopyOp>,
    vcpu: &xenoprof::VcpuCounters,
    batch: usize,
    rounds: usize,
) -> PerOp {
    xenoprof::flush();
    let before = vcpu.snapshot();
    let call: u64 = (0..rounds).map(|_| round(s, ops, batch)).sum();
    xenoprof::flush();
    let d = vcpu.snapshot().since(&before);
    xenoprof::set_mode(xenoprof::Mode::Off);
    let unprofiled: u64 = (0..rounds).map(|_| round(s, ops, batch)).sum();
    xenoprof::set_mode(xenoprof::Mode::Exact);
    let n = (rounds * OPS_PER_ROUND) as f64;
    let cyc = |c: Class| d.cycles[Context::Xen as usize][c.index()] as f64 / n;
    PerOp {
        grant_table: cyc(Class::GRANT_TABLE),
        find_domain: cyc(Class::FIND_DOMAIN),
        copy: cyc(Class::COPY),
        call: call as f64 / n,
        call_unprofiled: unprofiled as f64 / n,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<usize>().expect("a number"))
    };
    let threaded = args.iter().any(|a| a == "--guest-thread");
    let mut s = setup(threaded);
    let mut ops = Vec::with_capacity(OPS_PER_ROUND);
    if let Some(batch) = arg("--only") {
        let rounds = arg("--rounds").unwrap_or(40);
        for _ in 0..rounds {
            round(&mut s, &mut ops, batch);
        }
        println!(
            "batch {batch}: {} ops in {} hypercalls",
            rounds * OPS_PER_ROUND,
            rounds * OPS_PER_ROUND.div_ceil(batch)
        );
        return;
    }
    xenoprof::set_mode(xenoprof::Mode::Exact);
    let vcpu = xenoprof::register_vcpu(0, Context::Kernel);
    const ROUNDS: usize = 31;
    const PER: usize = 40;
    for b in [1, 64] {
        measure(&mut s, &mut ops, &vcpu, b, PER);
    }
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        one.push(measure(&mut s, &mut ops, &vcpu, 1, PER));
        many.push(measure(&mut s, &mut ops, &vcpu, 64, PER));
    }
    let med = |v: &[PerOp], f: fn(&PerOp) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let ratios: Vec<f64> = one
        .iter()
        .zip(&many)
        .map(|(a, b)| b.grant_table / a.grant_table)
        .collect();
    for (name, v) in [("batch  1", &one), ("batch 64", &many)] {
        println!(
            "{name}: grant_table {:6.1}  find_domain {:5.1}  copy {:6.1};  whole call {:6.1}, \
             unprofiled {:6.1} cycles/op (medians of {ROUNDS} rounds of {} ops)",
            med(v, |p| p.grant_table),
            med(v, |p| p.find_domain),
            med(v, |p| p.copy),
            med(v, |p| p.call),
            med(v, |p| p.call_unprofiled),
            PER * OPS_PER_ROUND
        );
    }
    let mut r = ratios.clone();
    r.sort_by(f64::total_cmp);
    println!(
        "guest re-grants {}",
        if threaded {
            "on its own thread"
        } else {
            "inline"
        }
    );
    println!(
        "RATIO grant_table batched/unbatched: median {:.3} (round-pair min {:.3}, max {:.3})",
        r[r.len() / 2],
        r[0],
        r[r.len() - 1]
    );
}
