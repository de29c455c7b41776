//! Scenarios: a configuration, a setup, each CPU's ops, and the schedule.
//! Versioned, human-readable JSON.

pub mod generate;
pub mod ops_strategy;

pub use crate::model::Op;

use crate::model::ctx::Detected;
use crate::model::{Config, Oracle};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT: &str = "mmharness-scenario";
pub const VERSION: u32 = 1;
/// The model runs at most this many CPUs.
pub const MAX_CPUS: usize = 4;
/// Bounds that keep a single execution short.
pub const MAX_OPS_PER_CPU: usize = 16;
pub const MAX_SCHEDULE: usize = 4096;

/// The build a counterexample came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// The crate version.
    pub version: String,
    /// The git commit, or "unknown".
    pub commit: String,
    /// The tree differed from the commit.
    pub dirty: bool,
    /// A hash of the model's source files.
    pub model_hash: String,
}

impl Build {
    /// This binary's build.
    pub fn current() -> Build {
        Build {
            version: env!("CARGO_PKG_VERSION").into(),
            commit: env!("MMHARNESS_GIT_COMMIT").into(),
            dirty: env!("MMHARNESS_GIT_DIRTY") == "true",
            model_hash: env!("MMHARNESS_MODEL_HASH").into(),
        }
    }

    /// A clean commit: the model is what that commit says.
    pub fn pristine(&self) -> bool {
        !self.dirty && self.commit != "unknown"
    }

    /// "commit X", "commit X, modified", or "no git commit".
    pub fn describe(&self) -> String {
        match (self.commit.as_str(), self.dirty) {
            ("unknown", _) => "no git commit".into(),
            (c, false) => format!("commit {c}"),
            (c, true) => format!("commit {c}, modified"),
        }
    }

    /// Does a scenario from `other` run the same model as this build?
    pub fn same_model(&self, other: &Build) -> bool {
        self.model_hash == other.model_hash
    }
}

/// The verdict a saved counterexample is expected to replay to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub oracle: Oracle,
    /// The kernel function in which it fired.
    pub func: String,
}

impl From<&Detected> for Expect {
    fn from(d: &Detected) -> Expect {
        Expect {
            oracle: d.violation.oracle,
            func: d.func.to_string(),
        }
    }
}

impl Expect {
    /// Does a detected violation reproduce this expectation?
    pub fn matches(&self, d: &Detected) -> bool {
        d.violation.oracle == self.oracle && d.func == self.func
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub format: String,
    pub version: u32,
    pub config: Config,
    /// Ops run one after another before the CPUs start.
    #[serde(default)]
    pub setup: Vec<Op>,
    /// Each CPU's ops, in program order.
    pub cpus: Vec<Vec<Op>>,
    /// At each point where two or more CPUs can run, the CPU to run next
    /// (the next runnable one if it cannot). When the list runs out, the
    /// running CPU continues while it can.
    #[serde(default)]
    pub schedule: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The build that found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
}

/// Why a scenario file could not be used.
#[derive(Debug)]
pub enum ScenarioError {
    Io(String, std::io::Error),
    Parse(String, serde_json::Error),
    Invalid(String, String),
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScenarioError::Io(p, e) => write!(f, "{p}: cannot read: {e}"),
            ScenarioError::Parse(p, e) => {
                let what = match e.classify() {
                    serde_json::error::Category::Eof => "truncated file",
                    serde_json::error::Category::Syntax => "malformed JSON",
                    _ => "not a valid scenario",
                };
                write!(
                    f,
                    "{p}: {what} at line {} column {}: {e}",
                    e.line(),
                    e.column()
                )
            }
            ScenarioError::Invalid(p, why) => write!(f, "{p}: invalid scenario: {why}"),
        }
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    pub fn new(config: Config, setup: Vec<Op>, cpus: Vec<Vec<Op>>) -> Scenario {
        Scenario {
            format: FORMAT.into(),
            version: VERSION,
            config,
            setup,
            cpus,
            schedule: Vec::new(),
            expect: None,
            note: None,
            build: None,
        }
    }

    /// Check everything a hand-edited file could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format is `{}`, expected `{FORMAT}`", self.format));
        }
        if self.version != VERSION {
            return Err(format!(
                "version {} is not supported (this build reads version {VERSION})",
                self.version
            ));
        }
        self.config.validate()?;
        if self.cpus.is_empty() || self.cpus.len() > MAX_CPUS {
            return Err(format!(
                "{} CPUs; between 1 and {MAX_CPUS} are supported",
                self.cpus.len()
            ));
        }
        for (i, ops) in self.cpus.iter().enumerate() {
            if ops.len() > MAX_OPS_PER_CPU {
                return Err(format!(
                    "CPU {i} has {} ops; at most {MAX_OPS_PER_CPU}",
                    ops.len()
                ));
            }
        }
        if self.setup.len() > MAX_OPS_PER_CPU * MAX_CPUS {
            return Err(format!(
                "setup has {} ops; at most {}",
                self.setup.len(),
                MAX_OPS_PER_CPU * MAX_CPUS
            ));
        }
        if self.schedule.len() > MAX_SCHEDULE {
            return Err(format!(
                "schedule has {} choices; at most {MAX_SCHEDULE}",
                self.schedule.len()
            ));
        }
        if let Some((i, &c)) = self
            .schedule
            .iter()
            .enumerate()
            .find(|&(_, &c)| c as usize >= self.cpus.len())
        {
            return Err(format!(
                "schedule[{i}] names CPU {c}, but the scenario has {} CPUs",
                self.cpus.len()
            ));
        }
        for (where_, op) in self.ops() {
            op.check(&self.config)
                .map_err(|why| format!("{where_} ({}): {why}", op.name()))?;
        }
        Ok(())
    }

    /// Every op with where it sits: `setup[i]` or `cpus[c][i]`.
    pub fn ops(&self) -> impl Iterator<Item = (String, &Op)> {
        let setup = self
            .setup
            .iter()
            .enumerate()
            .map(|(i, op)| (format!("setup[{i}]"), op));
        let cpus = self.cpus.iter().enumerate().flat_map(|(c, ops)| {
            ops.iter()
                .enumerate()
                .map(move |(i, op)| (format!("cpus[{c}][{i}]"), op))
        });
        setup.chain(cpus)
    }

    pub fn from_json(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario =
            serde_json::from_str(text).map_err(|e| ScenarioError::Parse(origin.into(), e))?;
        s.validate()
            .map_err(|why| ScenarioError::Invalid(origin.into(), why))?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ScenarioError::Io(origin.clone(), e))?;
        Scenario::from_json(&text, &origin)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("scenario serialises");
        s.push('\n');
        s
    }

    /// Write without clobbering: `path` if free, else `path` with a counter.
    /// Returns the path written.
    pub fn save_new(&self, path: &Path) -> std::io::Result<std::path::PathBuf> {
        use std::io::Write;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("counterexample");
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        for n in 0.. {
            let candidate = if n == 0 {
                path.to_path_buf()
            } else {
                dir.join(format!("{stem}-{n}.json"))
            };
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&candidate)
            {
                Ok(mut f) => {
                    f.write_all(self.to_json().as_bytes())?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    /// Total ops across setup and CPUs.
    pub fn op_count(&self) -> usize {
        self.setup.len() + self.cpus.iter().map(Vec::len).sum::<usize>()
    }
}
