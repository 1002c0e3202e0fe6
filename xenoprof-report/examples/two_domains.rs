//! Two domains under a profiling session, run twice, reported and diffed.
//!
//! dom0 is the driver domain: per packet it runs netback and the bridge in its kernel and makes
//! hypercalls (grant table, domain lookup, event channel; in the baseline also page-table
//! remaps and page allocation, as page flipping did). dom1 is the guest: netfront and TCP in its
//! kernel, the application in user space. dom7 runs too but is unmonitored.
//!
//! Run 1 ("page flip") and run 2 ("grant copy") do the same number of packets; the example prints
//! the seed-shaped table of each, the exact-mode cycles table of run 2, the PC-sample
//! Function / Module table where perf_event_open is allowed, writes both profiles as JSON and
//! prints the diff in cycles per packet.
//!
//! ```text
//! cargo run --release -p xenoprof-report --example two_domains [OUT_DIR] [PACKETS]
//! xenoprof diff OUT_DIR/page-flip.json OUT_DIR/grant-copy.json --unit packets
//! ```

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::mpsc;

use xenoprof::{
    Class, Context, Mode, blocked, hypercall, register_vcpu, scope, set_context, set_mode,
};
use xenoprof_report::{Error, Metric, Profile, Role, Session, Work, diff, render, render_diff};

/// About `n` rounds of dependent integer work; never optimised away.
#[inline(always)]
fn burn(n: u32, seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

// One named function per kind of work, so the PC-sample table has something to name.
#[inline(never)]
fn netback_tx(p: u64) -> u64 {
    burn(300, p)
}
#[inline(never)]
fn bridge_forward(p: u64) -> u64 {
    burn(350, p)
}
#[inline(never)]
fn grant_table_op(p: u64) -> u64 {
    burn(200, p)
}
#[inline(never)]
fn find_domain_by_id(p: u64) -> u64 {
    burn(120, p)
}
#[inline(never)]
fn mm_update_va_mapping(p: u64) -> u64 {
    burn(500, p)
}
#[inline(never)]
fn alloc_domheap_page(p: u64) -> u64 {
    burn(150, p)
}
#[inline(never)]
fn grant_copy(src: &[u8], dst: &mut [u8]) {
    dst.copy_from_slice(src);
    black_box(dst);
}
#[inline(never)]
fn evtchn_send(p: u64) -> u64 {
    burn(40, p)
}
#[inline(never)]
fn netfront_rx(p: u64) -> u64 {
    burn(250, p)
}
#[inline(never)]
fn tcp_rcv(p: u64) -> u64 {
    burn(400, p)
}
#[inline(never)]
fn app_read(p: u64) -> u64 {
    burn(100, p)
}

#[derive(Clone, Copy, PartialEq)]
enum Rx {
    PageFlip,
    GrantCopy,
}

fn dom0(packets: u64, rx: Rx, to_guest: mpsc::SyncSender<u64>) {
    register_vcpu(0, Context::Kernel);
    let src = vec![0xa5u8; 1500];
    let mut dst = vec![0u8; 1500];
    for p in 0..packets {
        let _nb = scope(Class::NETBACK);
        let mut x = netback_tx(p);
        {
            let _b = scope(Class::BRIDGE);
            x ^= bridge_forward(x);
        }
        {
            let _g = hypercall(Class::GRANT_TABLE);
            x ^= grant_table_op(x);
            {
                let _f = scope(Class::FIND_DOMAIN);
                x ^= find_domain_by_id(x);
            }
            match rx {
                Rx::PageFlip => {
                    let _m = scope(Class::MM);
                    x ^= mm_update_va_mapping(x);
                    let _a = scope(Class::PAGE_ALLOC);
                    x ^= alloc_domheap_page(x);
                }
                Rx::GrantCopy => {
                    let _c = scope(Class::COPY);
                    grant_copy(&src, &mut dst);
                }
            }
        }
        {
            let _e = hypercall(Class::EVENT_CHANNEL);
            x ^= evtchn_send(x);
        }
        let _w = blocked(); // a full ring waits: not work
        if to_guest.send(x).is_err() {
            return;
        }
    }
}

fn guest(from_dom0: mpsc::Receiver<u64>) {
    register_vcpu(1, Context::Kernel);
    loop {
        let p = {
            let _w = blocked(); // waiting for an event
            match from_dom0.recv() {
                Ok(p) => p,
                Err(_) => return,
            }
        };
        let x = {
            let _n = scope(Class::NETFRONT);
            netfront_rx(p)
        };
        let x = {
            let _t = scope(Class::TCP);
            tcp_rcv(x)
        };
        set_context(Context::User);
        black_box(app_read(x));
        set_context(Context::Kernel);
    }
}

fn noisy_neighbour(stop: mpsc::Receiver<()>) {
    register_vcpu(7, Context::Kernel);
    let _t = scope(Class::TCP);
    let mut x = 1;
    while stop.try_recv().is_err() {
        x = burn(2000, x);
        let _w = blocked();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

fn run(label: &str, rx: Rx, packets: u64) -> Result<Profile, Error> {
    let mut session = Session::builder(0)
        .active(&[1])
        .unmonitored(&[7])
        .others(Role::Unmonitored)
        .sample_hz(997)
        .label(label)
        .build();
    session.start()?;
    match session.start_pc_sampling(499) {
        Ok(()) => {}
        Err(e) => eprintln!("note: {e}"),
    }
    let (tx, rxq) = mpsc::sync_channel(256);
    let (stop_tx, stop_rx) = mpsc::channel();
    let threads = [
        std::thread::spawn(move || dom0(packets, rx, tx)),
        std::thread::spawn(move || guest(rxq)),
        std::thread::spawn(move || noisy_neighbour(stop_rx)),
    ];
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mid = session.snapshot();
    println!(
        "[{label}] snapshot while running: {} samples so far",
        mid.total(None, Metric::Samples)
    );
    let [d0, g, n] = threads;
    let _ = d0.join();
    let _ = g.join();
    let _ = stop_tx.send(());
    let _ = n.join();
    session.stop();
    let mut p = session.snapshot();
    p.set_work("packets", packets);
    Ok(p)
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let out: PathBuf = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("xenoprof-two-domains"));
    let packets: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    std::fs::create_dir_all(&out).map_err(|source| Error::Io {
        path: out.clone(),
        source,
    })?;
    set_mode(Mode::Exact);

    let before = run("page flip", Rx::PageFlip, packets)?;
    let after = run("grant copy", Rx::GrantCopy, packets)?;

    println!();
    print!("{}", render(&before, Metric::Samples, 8));
    #[cfg(feature = "pc-sampling")]
    if let Some(pc) = &before.pc {
        println!();
        print!("{}", xenoprof_report::report::render_functions(pc, 15));
    }
    println!();
    print!("{}", render(&after, Metric::Samples, 8));
    println!();
    print!("{}", render(&after, Metric::Cycles, 8));

    let (a, b) = (out.join("page-flip.json"), out.join("grant-copy.json"));
    before.write_json(&a)?;
    after.write_json(&b)?;
    println!("\nwrote {} and {}", a.display(), b.display());
    #[cfg(feature = "pc-sampling")]
    if let Some(pc) = &before.pc {
        let f = out.join("page-flip.folded");
        std::fs::write(&f, pc.folded_text()).map_err(|source| Error::Io {
            path: f.clone(),
            source,
        })?;
        println!("wrote {} (folded stacks for flamegraph tools)", f.display());
    }

    let d = diff(&before, &after, Metric::Cycles, &Work::recorded("packets"))?;
    println!("\npage flip -> grant copy:");
    print!("{}", render_diff(&d));
    Ok(())
}
