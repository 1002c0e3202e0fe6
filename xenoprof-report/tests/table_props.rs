//! Properties of the seed-shaped table and the diff over arbitrary figures.

use proptest::prelude::*;
use xenoprof::Context;
use xenoprof_report::report::{domain_table, split};
use xenoprof_report::{DomainProfile, Metric, Profile, Role, Row, Work, diff};

const CLASSES: [&str; 8] = [
    "other",
    "mm",
    "grant_table",
    "bridge",
    "netback",
    "tcp",
    "copy",
    "ring",
];

fn profile(figs: &[(u8, u8, u32, u32)], passive: bool, work: u64) -> Profile {
    let mut p = Profile::new("prop");
    let mut rows: Vec<Row> = Vec::new();
    for &(ctx, class, samples, cycles) in figs {
        let context = Context::ALL[usize::from(ctx) % 3];
        let class = (!passive).then(|| CLASSES[usize::from(class) % CLASSES.len()].to_string());
        // One row per (context, class), as a session produces.
        match rows
            .iter_mut()
            .find(|r| r.context == context && r.class == class)
        {
            Some(r) => {
                r.samples += u64::from(samples);
                r.cycles += u64::from(cycles);
            }
            None => rows.push(Row {
                context,
                class,
                samples: u64::from(samples),
                cycles: u64::from(cycles),
                calls: 1,
            }),
        }
    }
    p.domains.push(DomainProfile {
        domid: 5,
        role: if passive { Role::Passive } else { Role::Active },
        vcpus: 1,
        rows,
    });
    p.set_work("packets", work);
    p
}

proptest! {
    #[test]
    fn columns_add_up_and_domains_make_100_percent(
        figs in prop::collection::vec((0u8..3, 0u8..8, 0u32..1_000_000, 0u32..1_000_000), 1..40),
        top in 1usize..8,
        passive in any::<bool>(),
    ) {
        let p = profile(&figs, passive, 1);
        for metric in [Metric::Samples, Metric::Cycles] {
            let t = domain_table(&p.domains[0], metric, top);
            let mut sum = 0;
            for col in [&t.kernel, &t.xen, &t.user] {
                prop_assert!(col.rows.len() <= top);
                prop_assert!(col.rows.iter().all(|r| r.class != "other"));
                prop_assert!(col.rows.windows(2).all(|w| w[0].value >= w[1].value));
                let shown: u64 = col.rows.iter().map(|r| r.value).sum::<u64>() + col.other.value;
                prop_assert_eq!(shown, col.total.value);
                sum += col.total.value;
            }
            prop_assert_eq!(sum, t.total);
            if t.total > 0 {
                let pct = t.kernel.total.percent + t.xen.total.percent + t.user.total.percent;
                prop_assert!((pct - 100.0).abs() < 1e-9);
                let sp = split(&p, metric);
                prop_assert!((sp.kernel + sp.xen + sp.user - 100.0).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn diff_rows_sum_to_the_total(
        a in prop::collection::vec((0u8..3, 0u8..8, 0u32..1000, 0u32..1_000_000), 1..20),
        b in prop::collection::vec((0u8..3, 0u8..8, 0u32..1000, 0u32..1_000_000), 1..20),
        wa in 1u64..10_000,
        wb in 1u64..10_000,
    ) {
        let (pa, pb) = (profile(&a, false, wa), profile(&b, false, wb));
        let d = diff(&pa, &pb, Metric::Cycles, &Work::recorded("packets")).expect("diff");
        let saved: f64 = d.rows.iter().map(|r| r.saved).sum();
        prop_assert!((saved - d.total.saved).abs() <= 1e-6 * d.total.before.abs().max(1.0));
        prop_assert!(d.rows.windows(2).all(|w| w[0].saved >= w[1].saved));
        for r in &d.rows {
            prop_assert!((r.before - r.after - r.saved).abs() < 1e-9 * r.before.abs().max(1.0));
        }
    }
}
