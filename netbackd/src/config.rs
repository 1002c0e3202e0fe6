//! `--config FILE`: the command line's options from a TOML file, the command line winning.
//!
//! Each key is a long option's name without its dashes (`uplink`, `stats-interval`; `_` may
//! stand for `-`), so the file mirrors every flag by construction: its keys are checked against
//! the command line's own definition, and its values become the option's arguments, parsed and
//! checked by the same code as on the command line. A flag is `true` or `false`; a repeatable
//! option takes an array (`uplink = ["tap:sn0", "nic:eth1,switch=lan"]`).
//!
//! ```toml
//! xen = true
//! uplink = ["tap:sn0,addr=10.9.0.1/24"]
//! log = "info"
//! stats-interval = 60
//! default-rate = "1250000,50000"   # 25 MB/s for vifs whose vif line names no rate=
//! metrics = "127.0.0.1:9101"
//! user = "netbackd"
//! ```
//!
//! Precedence: an option given on the command line replaces the file's key entirely (a
//! repeatable one too: `--uplink` on the command line drops the file's `uplink` list); every
//! other key applies; what neither gives has its default.
//!
//! SIGHUP reads the file again ([`Reload`]): the log level, the stats interval and the
//! default rate change live; any other key that changed is reported as needing a restart.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::Args;

/// Keys SIGHUP applies without a restart.
pub const LIVE_KEYS: [&str; 3] = ["log", "stats-interval", "default-rate"];

/// Why the options could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line itself (clap prints it with usage, and exits 2).
    #[error("{0}")]
    Cli(#[from] clap::Error),
    /// The file could not be read.
    #[error("cannot read the config file {}: {source}; check the path (--config FILE)", path.display())]
    Read {
        /// Which.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, or a key or value is wrong.
    #[error("config file {}: {why}", path.display())]
    Bad {
        /// Which.
        path: PathBuf,
        /// What is wrong and what to write instead.
        why: String,
    },
}

/// The options as the command line and the file give them, and what a reload compares with.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The options in force.
    pub args: Args,
    /// The file's keys (normalised to dashes) with their values as arguments, for a reload to
    /// compare with.
    pub file: BTreeMap<String, Vec<String>>,
    /// Options given on the command line (their ids), which the file cannot change.
    pub from_cli: Vec<String>,
}

/// Parses `argv` (the program's name first) and the `--config` file it names, if any.
pub fn load(argv: &[OsString]) -> Result<Loaded, ConfigError> {
    let matches = Args::command().try_get_matches_from(argv)?;
    let cli = Args::from_arg_matches(&matches)?;
    let from_cli = given_on_cli(&matches);
    let Some(path) = cli.config.clone() else {
        return Ok(Loaded {
            args: cli,
            file: BTreeMap::new(),
            from_cli,
        });
    };
    let file = read_file(&path)?;
    // The file's values alone first, so an error in one names the file.
    let mut file_argv: Vec<OsString> = vec!["netbackd".into()];
    file_argv.extend(file.values().flatten().map(OsString::from));
    Args::command()
        .try_get_matches_from(&file_argv)
        .map_err(|e| ConfigError::Bad {
            path: path.clone(),
            why: clap_error_text(&e),
        })?;
    // Then everything together: the file's keys the command line does not give, then the
    // command line as it was (never both for one option, so repeatable ones do not append).
    let mut merged: Vec<OsString> =
        vec![argv.first().cloned().unwrap_or_else(|| "netbackd".into())];
    for (key, values) in &file {
        if !from_cli.iter().any(|id| id == &arg_id(key)) {
            merged.extend(values.iter().map(OsString::from));
        }
    }
    merged.extend(argv.iter().skip(1).cloned());
    let matches = Args::command().try_get_matches_from(&merged)?;
    let args = Args::from_arg_matches(&matches)?;
    Ok(Loaded {
        args,
        file,
        from_cli,
    })
}

/// clap's message without its usage block (which names the command line, not the file).
fn clap_error_text(e: &clap::Error) -> String {
    let text = e.to_string();
    text.lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(|l| l.trim_start_matches("error: "))
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ids of the options the command line gave.
fn given_on_cli(m: &ArgMatches) -> Vec<String> {
    Args::command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| m.value_source(id) == Some(ValueSource::CommandLine))
        .collect()
}

/// A key's option id (clap's ids are the field names: `stats-interval` is `stats_interval`,
/// `uplink` is `uplinks`).
fn arg_id(key: &str) -> String {
    Args::command()
        .get_arguments()
        .find(|a| a.get_long() == Some(key))
        .map_or_else(|| key.replace('-', "_"), |a| a.get_id().to_string())
}

/// Reads the file into its keys' arguments (`--key=value`, repeated for arrays).
pub fn read_file(path: &Path) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_text(&text).map_err(|why| ConfigError::Bad {
        path: path.to_path_buf(),
        why,
    })
}

/// Parses a config file's text into its keys' arguments.
pub fn parse_text(text: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let cmd = Args::command();
    let known = || {
        let mut k: Vec<&str> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !matches!(*l, "config" | "help" | "version"))
            .collect();
        k.sort_unstable();
        k.join(", ")
    };
    let mut out = BTreeMap::new();
    for (raw_key, value) in table {
        let key = raw_key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !a.is_hide_set())
            .filter(|_| !matches!(key.as_str(), "config" | "help" | "version"))
            .ok_or_else(|| format!("unknown key {raw_key:?}; the keys are: {}", known()))?;
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        let scalar = |v: &toml::Value| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                _ => Err(format!(
                    "{raw_key}: write a string or a number (as --{key} takes on the command line)"
                )),
            }
        };
        let values = match (&value, flag, repeatable) {
            (toml::Value::Boolean(true), true, _) => vec![format!("--{key}")],
            (toml::Value::Boolean(false), true, _) => vec![],
            (_, true, _) => return Err(format!("{raw_key}: write true or false")),
            (toml::Value::Array(items), false, true) => items
                .iter()
                .map(|v| scalar(v).map(|s| format!("--{key}={s}")))
                .collect::<Result<_, _>>()?,
            (toml::Value::Array(_), false, false) => {
                return Err(format!("{raw_key}: takes one value, not a list"));
            }
            (v, false, _) => vec![format!("--{key}={}", scalar(v)?)],
        };
        if out.insert(key.clone(), values).is_some() {
            return Err(format!(
                "{key} is given twice (once with '_' and once with '-')"
            ));
        }
    }
    Ok(out)
}

/// What a SIGHUP found in the file, against what was in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reload {
    /// Live keys whose value changed (applied).
    pub applied: Vec<String>,
    /// Other keys whose value changed (in force only after a restart).
    pub need_restart: Vec<String>,
    /// Keys that changed but that the command line gives (the command line wins).
    pub overridden: Vec<String>,
}

/// Compares the file as it was with the file as it is now.
pub fn diff(old: &Loaded, new_file: &BTreeMap<String, Vec<String>>) -> Reload {
    let mut r = Reload::default();
    let keys: std::collections::BTreeSet<&String> =
        old.file.keys().chain(new_file.keys()).collect();
    for key in keys {
        if old.file.get(key) == new_file.get(key) {
            continue;
        }
        let k = key.clone();
        if old.from_cli.contains(&arg_id(key)) {
            r.overridden.push(k);
        } else if LIVE_KEYS.contains(&key.as_str()) {
            r.applied.push(k);
        } else {
            r.need_restart.push(k);
        }
    }
    r
}

/// Reads the file again, keeping the command line: the options that would now be in force,
/// and what changed. The caller applies the live ones.
pub fn reload(old: &Loaded, argv: &[OsString]) -> Result<(Loaded, Reload), ConfigError> {
    let new = load(argv)?;
    let what = diff(old, &new.file);
    Ok((new, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(tag: &str, text: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("netbackd-cfg-{tag}-{}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn argv(extra: &[&str]) -> Vec<OsString> {
        std::iter::once("netbackd")
            .chain(extra.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn the_file_applies_where_the_command_line_is_silent_and_flags_win() {
        let p = write(
            "prec",
            r#"
            uplink = ["tap:sn0,addr=10.9.0.1/24", "nic:eth1,switch=lan"]
            log = "debug"
            stats_interval = 5
            guests = 3
            close-on-exit = true
            default-rate = "125000,50000"
            metrics = 9101
            "#,
        );
        let path = p.to_str().unwrap();
        let l = load(&argv(&["--config", path])).unwrap();
        assert_eq!(l.args.uplinks.len(), 2);
        assert_eq!(l.args.log, log::LevelFilter::Debug);
        assert_eq!(l.args.stats_interval, 5.0);
        assert_eq!(l.args.guests, 3);
        assert!(l.args.close_on_exit);
        assert_eq!(l.args.default_rate.as_deref(), Some("125000,50000"));
        assert_eq!(
            l.args.metrics,
            Some("127.0.0.1:9101".parse().unwrap()),
            "a bare port listens on loopback"
        );

        // The command line wins, a repeatable option replacing the whole list.
        let l = load(&argv(&[
            "--config",
            path,
            "--log",
            "warn",
            "--uplink",
            "tap:other",
            "--guests",
            "2",
        ]))
        .unwrap();
        assert_eq!(l.args.log, log::LevelFilter::Warn);
        assert_eq!(l.args.guests, 2);
        assert_eq!(l.args.uplinks.len(), 1, "{:?}", l.args.uplinks);
        assert_eq!(l.args.uplinks[0].port_name(), "tap:other");
        // Untouched keys still come from the file.
        assert_eq!(l.args.stats_interval, 5.0);
        assert!(l.args.close_on_exit);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn defaults_hold_where_neither_gives_a_value() {
        let p = write("defaults", "log = \"error\"\n");
        let l = load(&argv(&["--config", p.to_str().unwrap()])).unwrap();
        assert_eq!(l.args.log, log::LevelFilter::Error);
        assert_eq!(l.args.guests, 1);
        assert_eq!(l.args.run_dir, PathBuf::from("/run/netbackd"));
        assert!(l.args.metrics.is_none() && !l.args.no_seccomp);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn every_option_of_the_command_line_is_a_key() {
        for a in Args::command().get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if matches!(long, "config" | "help" | "version") || a.is_hide_set() {
                continue;
            }
            let value = match a.get_action() {
                ArgAction::SetTrue => "true".to_string(),
                ArgAction::Append => "[\"x\"]".into(),
                _ => "\"x\"".into(),
            };
            let parsed = parse_text(&format!("{long} = {value}"));
            assert!(parsed.is_ok(), "--{long} has no key: {parsed:?}");
        }
    }

    #[test]
    fn mistakes_in_the_file_say_what_to_write() {
        let e = parse_text("uplinks = [\"tap:sn0\"]").unwrap_err();
        assert!(
            e.contains("unknown key \"uplinks\"") && e.contains("uplink"),
            "{e}"
        );
        let e = parse_text("xen = \"yes\"").unwrap_err();
        assert!(e.contains("true or false"), "{e}");
        let e = parse_text("log = [\"info\"]").unwrap_err();
        assert!(e.contains("one value"), "{e}");
        let e = parse_text("config = \"/etc/other.toml\"").unwrap_err();
        assert!(e.contains("unknown key"), "{e}");
        assert!(parse_text("log = ").is_err(), "not TOML");

        let p = write("badvalue", "guests = 0\nmtu = 10\n");
        let e = load(&argv(&["--config", p.to_str().unwrap()]));
        // mtu=10 is a valid number for clap; validate() refuses it later. A value clap refuses
        // names the file.
        assert!(e.is_ok());
        std::fs::write(&p, "vif-mode = \"bridge\"\n").unwrap();
        let e = load(&argv(&["--config", p.to_str().unwrap()])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(p.to_str().unwrap()) && msg.contains("bridge"),
            "{msg}"
        );
        let e = load(&argv(&["--config", "/nonexistent/netbackd.toml"])).unwrap_err();
        assert!(e.to_string().contains("cannot read the config file"), "{e}");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_reload_tells_live_keys_from_restart_keys_and_the_command_line_wins() {
        let p = write(
            "reload",
            "log = \"info\"\nstats-interval = 1\nguests = 2\nmtu = 1500\n",
        );
        let path = p.to_str().unwrap().to_string();
        let av = argv(&["--config", &path, "--mtu", "9000"]);
        let old = load(&av).unwrap();
        std::fs::write(
            &p,
            "log = \"debug\"\nstats-interval = 1\nguests = 3\nmtu = 1400\ndefault-rate = \"1000,1000\"\n",
        )
        .unwrap();
        let (new, what) = reload(&old, &av).unwrap();
        assert_eq!(what.applied, ["default-rate", "log"]);
        assert_eq!(what.need_restart, ["guests"]);
        assert_eq!(what.overridden, ["mtu"]);
        assert_eq!(new.args.log, log::LevelFilter::Debug);
        assert_eq!(new.args.mtu, 9000);
        std::fs::remove_file(p).unwrap();
    }
}
