//! What netbackd's seccomp filter adds to one syscall: times syscalls the data path makes
//! (a `read` that finds nothing, as an idle uplink's; a `ppoll` with no wait, as the backend's
//! final check) before and after installing the same allowlist, in one process.
//!
//! `cargo run --release -p netbackd --example seccomp_cost` (no root needed: it sets
//! no-new-privs itself).
#![forbid(unsafe_code)]

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Instant;

const N: u32 = 2_000_000;

fn per_call(mut f: impl FnMut()) -> f64 {
    for _ in 0..N / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..N {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(N)
}

fn measure(label: &str, sock: &mut UnixStream) -> (f64, f64) {
    let mut buf = [0u8; 64];
    let read = per_call(|| {
        let _ = sock.read(&mut buf);
    });
    let poll = per_call(|| {
        let _ = rustix::event::poll(&mut [], Some(&rustix::event::Timespec::default()));
    });
    println!("{label:<16} read (EAGAIN) {read:6.1} ns   ppoll (no wait) {poll:6.1} ns");
    (read, poll)
}

fn main() {
    let (mut a, _b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    let prog = netbackd::seccomp::program().expect("the filter compiles");
    println!(
        "allowlist: {} syscalls, {} BPF instructions",
        netbackd::seccomp::allowed().len() + 1,
        prog.len()
    );
    let before = measure("without filter", &mut a);
    seccompiler::apply_filter(&prog).expect("install the filter");
    let after = measure("with filter", &mut a);
    println!(
        "the filter adds {:.1} ns to read, {:.1} ns to ppoll",
        after.0 - before.0,
        after.1 - before.1
    );
}
