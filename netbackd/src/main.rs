//! The `netbackd` program: see `netbackd --help`.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::process::ExitCode;

use netbackd::Error;
use netbackd::cli::Command;
use netbackd::config::{self, ConfigError};
use netbackd::daemon::{Signals, Startup};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let loaded = match config::load(&argv) {
        Ok(l) => l,
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("netbackd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Ctl(ctl)) = &loaded.args.command {
        return match netbackd::ctl::run(ctl) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("netbackd ctl: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let log = netbackd::logging::init(loaded.args.log, loaded.args.log_format);
    let startup = Startup { loaded, argv, log };
    let result = run(startup);
    netbackd::daemon::remove_ctl_socket();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("netbackd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(startup: Startup) -> Result<(), Error> {
    startup.args().validate().map_err(Error::Args)?;
    let signals = Signals::install()?;
    if startup.args().xen {
        return netbackd::xen::run(startup, signals);
    }
    netbackd::embedded::run(startup, signals)
}
