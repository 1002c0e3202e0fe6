//! PC sampling end to end, where the kernel allows perf_event_open; elsewhere the refusal must
//! explain itself. The test burns CPU in a named function until enough samples arrive (bounded
//! by a generous iteration cap, never by a timing assertion).

#![cfg(feature = "pc-sampling")]

use std::hint::black_box;

use xenoprof::{Context, register_vcpu};
use xenoprof_report::{Error, PcSampler};

/// The work the samples must land in. Every instruction of the loop is in this function, also
/// in an unoptimised build: a `for` over a range would call `Range::next`, `spec_next` and
/// `Step::forward_unchecked`, which a debug build does not inline, and most leaf samples would
/// name those instead.
#[inline(never)]
fn xenoprof_pc_test_busy_function(seed: u64) -> u64 {
    let mut x = seed | 1;
    let mut i = 0u32;
    while i < 200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
    }
    black_box(x)
}

#[test]
fn pc_samples_name_the_busy_function_or_explain_the_refusal() {
    let c = register_vcpu(4000, Context::Kernel);
    let mut pc = match PcSampler::start(999) {
        Ok(pc) => pc,
        Err(e @ Error::PerfEventOpen { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("perf_event_paranoid") && msg.contains("CAP_PERFMON"),
                "{msg}"
            );
            eprintln!("PC sampling refused here; checked the message instead: {msg}");
            return;
        }
        Err(e) => panic!("unexpected error: {e}"),
    };
    let mut x = 0;
    for round in 0..5_000 {
        x = xenoprof_pc_test_busy_function(x);
        if round % 64 == 0 && pc.samples() >= 50 {
            break;
        }
    }
    pc.stop();
    let tid = c.tid();
    let profile = pc.profile(&|t| (Some(t) == tid).then_some(4000), &|d| d == 4000, false);
    assert!(profile.samples > 0, "no samples from the busy thread");
    let top = profile
        .functions
        .iter()
        .find(|f| f.function.contains("xenoprof_pc_test_busy_function"))
        .unwrap_or_else(|| panic!("busy function not in the table: {:?}", profile.functions));
    assert!(
        top.samples * 2 >= profile.functions[0].samples,
        "busy function far from the top: {:?}",
        profile.functions
    );
    assert!(
        profile
            .folded
            .iter()
            .all(|f| f.stack.starts_with("dom4000;"))
    );
    assert!(
        profile
            .folded_text()
            .lines()
            .all(|l| l.rsplit_once(' ').is_some())
    );
}
