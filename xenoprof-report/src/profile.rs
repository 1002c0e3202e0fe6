//! A profile: the figures one session gathered, as JSON on disk.
//!
//! Per domain, one [`Row`] per (context, class) with samples (from the sampler), cycles and calls
//! (from exact mode). Passive domains carry one row per context with no class. The same figures
//! feed the text table ([`crate::report`]) and the diff ([`mod@crate::diff`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use xenoprof::hooks::{Context, DomId};

use crate::error::Error;
#[cfg(feature = "pc-sampling")]
use crate::pc::PcProfile;

/// The JSON format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// How profile JSON spells a [`Context`]: its lower-case name. The hooks crate has no serde, so
/// fields of type `Context` use this with `#[serde(with = "ContextDef")]`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Context", rename = "Context", rename_all = "lowercase")]
pub(crate) enum ContextDef {
    Xen,
    Kernel,
    User,
}

/// A domain's part in a profiling session, as in Xenoprof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sets the session up; profiled like an active domain (dom0 in the seed).
    Initiator,
    /// Profiled with class-level detail.
    Active,
    /// Profiled with only the xen / kernel / user split.
    Passive,
    /// Ignored: its samples and cycles are discarded.
    Unmonitored,
}

impl Role {
    /// Whether the role gets class-level detail.
    pub fn has_class_detail(self) -> bool {
        matches!(self, Role::Initiator | Role::Active)
    }

    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Role::Initiator => "initiator",
            Role::Active => "active",
            Role::Passive => "passive",
            Role::Unmonitored => "unmonitored",
        }
    }
}

/// Figures for one (context, class) of one domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// xen, kernel or user.
    #[serde(with = "ContextDef")]
    pub context: Context,
    /// The class name; `None` for a passive domain (no class detail).
    pub class: Option<String>,
    /// Sampler hits.
    pub samples: u64,
    /// Exact-mode TSC cycles.
    pub cycles: u64,
    /// Exact-mode scope entries.
    pub calls: u64,
}

/// One domain's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainProfile {
    /// The domain.
    pub domid: DomId,
    /// Its role in the session.
    pub role: Role,
    /// vCPUs (threads) seen.
    pub vcpus: u32,
    /// Non-zero rows, in (context, class) order.
    pub rows: Vec<Row>,
}

impl DomainProfile {
    /// Sum of `metric` over the rows of `ctx` (all contexts when `None`).
    pub fn total(&self, ctx: Option<Context>, metric: crate::Metric) -> u64 {
        self.rows
            .iter()
            .filter(|r| ctx.is_none_or(|c| r.context == c))
            .map(|r| metric.of(r))
            .sum()
    }
}

/// Everything one session gathered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Free text naming the run ("baseline", "grant copy").
    pub label: String,
    /// Configured sampler rate (0: ticked by hand).
    pub sample_hz: u32,
    /// Sampler ticks while running.
    pub ticks: u64,
    /// Samples that fell on unmonitored domains and were discarded, by domain.
    pub discarded_samples: BTreeMap<DomId, u64>,
    /// TSC ticks per second on the recording machine (0 when unknown).
    pub tsc_hz: u64,
    /// Wall-clock time the session ran, in nanoseconds.
    pub wall_ns: u64,
    /// Units of work done during the run, by unit name ("packets", "bytes").
    pub work: BTreeMap<String, u64>,
    /// Monitored domains, by domid.
    pub domains: Vec<DomainProfile>,
    /// Symbolized PC samples, when PC sampling ran.
    #[cfg(feature = "pc-sampling")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pc: Option<PcProfile>,
    /// Why PC sampling did not run, when it was asked for and refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pc_error: Option<String>,
}

impl Profile {
    /// An empty profile.
    pub fn new(label: impl Into<String>) -> Profile {
        Profile {
            version: FORMAT_VERSION,
            label: label.into(),
            sample_hz: 0,
            ticks: 0,
            discarded_samples: BTreeMap::new(),
            tsc_hz: 0,
            wall_ns: 0,
            work: BTreeMap::new(),
            domains: Vec::new(),
            #[cfg(feature = "pc-sampling")]
            pc: None,
            pc_error: None,
        }
    }

    /// Records `amount` units of work of kind `unit` (e.g. `("packets", 1_000_000)`).
    pub fn set_work(&mut self, unit: impl Into<String>, amount: u64) {
        self.work.insert(unit.into(), amount);
    }

    /// The domain `domid`, if monitored.
    pub fn domain(&self, domid: DomId) -> Option<&DomainProfile> {
        self.domains.iter().find(|d| d.domid == domid)
    }

    /// Sum of `metric` over every monitored domain in `ctx` (all contexts when `None`).
    pub fn total(&self, ctx: Option<Context>, metric: crate::Metric) -> u64 {
        self.domains.iter().map(|d| d.total(ctx, metric)).sum()
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // A Profile holds only strings, integers, enums and maps with string keys: serializing
        // it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses JSON written by [`Profile::to_json`].
    pub fn from_json(text: &str) -> Result<Profile, Error> {
        let p: Profile = serde_json::from_str(text).map_err(|source| Error::Json {
            path: Default::default(),
            source,
        })?;
        if p.version != FORMAT_VERSION {
            return Err(Error::Version {
                found: p.version,
                expected: FORMAT_VERSION,
            });
        }
        Ok(p)
    }

    /// Writes the profile as JSON to `path`.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json() + "\n").map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a profile written by [`Profile::write_json`].
    pub fn read_json(path: impl AsRef<Path>) -> Result<Profile, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Profile::from_json(&text).map_err(|e| match e {
            Error::Json { source, .. } => Error::Json {
                path: path.to_owned(),
                source,
            },
            e => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_their_lowercase_names_in_json() {
        for ctx in Context::ALL {
            let row = Row {
                context: ctx,
                class: None,
                samples: 1,
                cycles: 2,
                calls: 3,
            };
            let json = serde_json::to_string(&row).expect("serialize");
            assert!(
                json.contains(&format!("\"context\":\"{}\"", ctx.name())),
                "{json}"
            );
            assert_eq!(serde_json::from_str::<Row>(&json).expect("parse"), row);
        }
        let bad = r#"{"context":"Kernel","class":null,"samples":0,"cycles":0,"calls":0}"#;
        let e = serde_json::from_str::<Row>(bad).expect_err("capitalised context");
        assert!(
            e.to_string()
                .contains("unknown variant `Kernel`, expected one of `xen`, `kernel`, `user`"),
            "{e}"
        );
    }
}
