//! Log lines on stderr through `tracing`: text (a timestamp, the level, where the line comes
//! from, the message, then its `key=value` fields) or JSON (one object per line, the fields as
//! members), at a level SIGHUP can change. The drivers (netback, netfront, hostnet) log through
//! the `log` facade; `tracing-log` brings their lines in, each with its target
//! (`netback::xenbus`, and `netback::guest` for what a guest caused, rate limited per vif).

use std::io::IsTerminal;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, fmt, reload};

use crate::cli::LogFormat;

/// Changes the level of a running program's log.
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: reload::Handle<LevelFilter, Registry>,
}

fn to_tracing(level: log::LevelFilter) -> LevelFilter {
    match level {
        log::LevelFilter::Off => LevelFilter::OFF,
        log::LevelFilter::Error => LevelFilter::ERROR,
        log::LevelFilter::Warn => LevelFilter::WARN,
        log::LevelFilter::Info => LevelFilter::INFO,
        log::LevelFilter::Debug => LevelFilter::DEBUG,
        log::LevelFilter::Trace => LevelFilter::TRACE,
    }
}

/// Starts logging to stderr at `level` in `format`.
pub fn init(level: log::LevelFilter, format: LogFormat) -> LogControl {
    let (filter, handle) = reload::Layer::new(to_tracing(level));
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter);
    let done = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi)
                    .with_target(true),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr)
                    .with_target(true),
            )
            .try_init(),
    };
    if let Err(e) = done {
        eprintln!("netbackd: cannot start logging: {e}");
    }
    // The `log` facade's own gate, so the drivers' disabled lines cost a comparison.
    log::set_max_level(level);
    LogControl { handle }
}

impl LogControl {
    /// Logs at `level` from now on.
    pub fn set_level(&self, level: log::LevelFilter) -> Result<(), String> {
        self.handle
            .modify(|f| *f = to_tracing(level))
            .map_err(|e| e.to_string())?;
        log::set_max_level(level);
        Ok(())
    }
}
