//! `xenoprof`: print the seed-shaped report of a profile, or the diff of two.
//!
//! ```text
//! xenoprof report run.json [--metric samples|cycles|calls] [--top 10] [--functions 20]
//!                          [--folded out.folded]
//! xenoprof diff before.json after.json --unit packets [--before N] [--after N] [--metric cycles]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use xenoprof_report::{Error, Metric, Profile, Work, diff, render, render_diff};

#[derive(Parser)]
#[command(
    name = "xenoprof",
    version,
    about = "Xenoprof-style profile reports and diffs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum MetricArg {
    Samples,
    Cycles,
    Calls,
}

impl From<MetricArg> for Metric {
    fn from(m: MetricArg) -> Metric {
        match m {
            MetricArg::Samples => Metric::Samples,
            MetricArg::Cycles => Metric::Cycles,
            MetricArg::Calls => Metric::Calls,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the per-domain Kernel / Xen table and the overall split.
    Report {
        /// A profile JSON file.
        file: PathBuf,
        /// The figure to tabulate (default: samples, or cycles when there are no samples).
        #[arg(long, value_enum)]
        metric: Option<MetricArg>,
        /// Class rows per column before the rest is folded into "other".
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Rows of the PC-sample "Function / Module" table (0: none).
        #[arg(long, default_value_t = 20)]
        functions: usize,
        /// Write the PC samples' folded stacks (for flamegraph tools) to this file.
        #[arg(long)]
        folded: Option<PathBuf>,
    },
    /// Print per-class figures per unit of work before and after, and what was saved.
    Diff {
        /// The before profile.
        before: PathBuf,
        /// The after profile.
        after: PathBuf,
        /// Unit of work to normalise by, as recorded in the profiles ("packets", "bytes").
        #[arg(long, default_value = "packets")]
        unit: String,
        /// Units of work in the before run (overrides the recorded amount).
        #[arg(long = "before-work")]
        before_work: Option<u64>,
        /// Units of work in the after run (overrides the recorded amount).
        #[arg(long = "after-work")]
        after_work: Option<u64>,
        /// The figure to compare (default: cycles when both profiles have them, else samples).
        #[arg(long, value_enum)]
        metric: Option<MetricArg>,
    },
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.cmd {
        Cmd::Report {
            file,
            metric,
            top,
            functions,
            folded,
        } => {
            let p = Profile::read_json(&file)?;
            let metric = metric.map(Metric::from).unwrap_or(
                if p.total(None, Metric::Samples) == 0 && p.total(None, Metric::Cycles) > 0 {
                    Metric::Cycles
                } else {
                    Metric::Samples
                },
            );
            print!("{}", render(&p, metric, top));
            if let Some(e) = &p.pc_error {
                println!("\nPC sampling did not run: {e}");
            }
            #[cfg(feature = "pc-sampling")]
            if let Some(pc) = &p.pc {
                if functions > 0 {
                    println!();
                    print!(
                        "{}",
                        xenoprof_report::report::render_functions(pc, functions)
                    );
                }
                if let Some(path) = folded {
                    std::fs::write(&path, pc.folded_text())
                        .map_err(|source| Error::Io { path, source })?;
                }
            }
            #[cfg(not(feature = "pc-sampling"))]
            let _ = (functions, folded);
            Ok(())
        }
        Cmd::Diff {
            before,
            after,
            unit,
            before_work,
            after_work,
            metric,
        } => {
            let (b, a) = (Profile::read_json(&before)?, Profile::read_json(&after)?);
            let metric = metric
                .map(Metric::from)
                .unwrap_or_else(|| xenoprof_report::diff::default_metric(&b, &a));
            let work = Work {
                unit,
                before: before_work,
                after: after_work,
            };
            print!("{}", render_diff(&diff(&b, &a, metric, &work)?));
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenoprof: {e}");
            ExitCode::FAILURE
        }
    }
}
