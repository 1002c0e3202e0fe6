//! The `netbackd` program: see `netbackd --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use netbackd::Error;
use netbackd::cli::Args;
use netbackd::daemon::Signals;

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::new()
        .filter_level(args.log)
        .format_timestamp_millis()
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netbackd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Error> {
    args.validate().map_err(Error::Args)?;
    let signals = Signals::install()?;
    if args.xen {
        return netbackd::xen::run(args, signals);
    }
    netbackd::embedded::run(args, signals)
}
