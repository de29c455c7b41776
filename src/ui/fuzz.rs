//! What every fuzz front end shares: the targets, the `MMHARNESS_*`
//! settings they read, and one input's check. The cargo-fuzz targets
//! (`fuzz/`), the bolero harness (`tests/bolero.rs`) and `mmharness import`
//! all go through here, so one input's bytes mean the same scenario in each.
//!
//! Settings (each `MMHARNESS_*` variable; `mmharness import` also takes
//! them as flags, and reads them from a crash's `.settings` file):
//!
//! - `MMHARNESS_VARIANTS`: comma-separated bug variants (`mmharness
//!   variants` lists them); unset or empty: the fixed model.
//! - `MMHARNESS_HVO_MODE`: `keep-1` (default), `keep-2` or `shared-tail`.
//! - `MMHARNESS_CPUS`: CPUs per scenario, at most; 2 (default) to 4.
//! - `MMHARNESS_OPS`: the op families scenarios draw from: `any`, `all`, or
//!   subsystem names joined by commas, as `mmharness hunt --ops` takes
//!   them. Default: the target's (a subsystem's target: its arm), else as
//!   `mmharness hunt` picks it (the variants' arms; `any` for the fixed
//!   model).
//! - `MMHARNESS_MEMORY_BLOCKS`: physical memory in hugetlb-sized blocks,
//!   2 (default) to 8, or a range `LO-HI` drawn per scenario.
//! - `MMHARNESS_HUGETLB_ORDER`: hugetlb folio order, 7 to 10 (default 9),
//!   or a range `LO-HI`.
//! - `MMHARNESS_CRASH_DIR`: when set, a failing input's scenario is also
//!   written to `$MMHARNESS_CRASH_DIR/<sha1 of the input>.json`.
//!
//! The same bytes decode to a different scenario under other settings,
//! so a crash records the settings it was found with next to it (see
//! [`record_settings`]).

pub mod harness;

use crate::exec::{Observe, Outcome, Verdict, replay};
use crate::model::{Arch, Config, HvoMode, Subsystem, Variant, VariantSet};
use crate::scenario::generate::{GenOptions, OpFamily, decode_bytes};
use crate::scenario::{Build, Expect, MAX_CPUS, Scenario};
use clap::ValueEnum;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The settings variables, in the order a `.settings` file lists them.
pub const VARS: [&str; 7] = [
    "MMHARNESS_VARIANTS",
    "MMHARNESS_HVO_MODE",
    "MMHARNESS_ARCH",
    "MMHARNESS_CPUS",
    "MMHARNESS_OPS",
    "MMHARNESS_MEMORY_BLOCKS",
    "MMHARNESS_HUGETLB_ORDER",
];
/// Names the target in a `.settings` file.
pub const TARGET_VAR: &str = "MMHARNESS_TARGET";
pub const CRASH_DIR_VAR: &str = "MMHARNESS_CRASH_DIR";

/// A fuzz target that runs scenarios: the one over everything, or one per
/// subsystem, named after it (`fuzz/fuzz_targets/<name>.rs`, with `-` in a
/// subsystem's name written `_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every scenario the decoder produces.
    Scenario,
    /// Scenarios from the subsystem's arm in which a CPU runs one of its
    /// ops; the others are rejected (kept out of the corpus).
    Of(Subsystem),
}

/// cargo-fuzz targets that do not run scenarios: crashes of theirs are
/// harness bugs, replayed with `cargo fuzz run TARGET FILE`.
pub const NON_SCENARIO_TARGETS: [&str; 3] = ["decoder", "parser", "trivial"];

impl Target {
    pub fn parse(name: &str) -> Result<Target, String> {
        let name = name.trim();
        if name == "scenario" {
            return Ok(Target::Scenario);
        }
        if let Some(s) = Subsystem::ALL
            .iter()
            .find(|s| s.name() == name.replace('_', "-"))
        {
            return Ok(Target::Of(*s));
        }
        if NON_SCENARIO_TARGETS.contains(&name) {
            return Err(format!(
                "target `{name}` does not run scenarios: a crash of it is a harness bug; reproduce it with `cargo fuzz run {name} FILE`"
            ));
        }
        let subsystems: Vec<String> = Subsystem::ALL
            .iter()
            .map(|s| s.name().replace('-', "_"))
            .collect();
        Err(format!(
            "unknown target `{name}`: use `scenario` or a subsystem's target ({})",
            subsystems.join(", ")
        ))
    }

    /// The target's name, as its file in `fuzz/fuzz_targets/` has it.
    pub fn name(self) -> String {
        match self {
            Target::Scenario => "scenario".into(),
            Target::Of(s) => s.name().replace('-', "_"),
        }
    }

    /// The op family when `MMHARNESS_OPS` is unset: the subsystem's arm.
    pub fn default_ops(self) -> Option<OpFamily> {
        match self {
            Target::Scenario => None,
            Target::Of(s) => Some(OpFamily::Of(s.arm())),
        }
    }

    /// Does the target keep this scenario? A subsystem's target keeps only
    /// those in which a CPU (not the setup) runs one of its ops, so that its
    /// corpus concentrates on them.
    pub fn keeps(self, scenario: &Scenario) -> bool {
        match self {
            Target::Scenario => true,
            Target::Of(s) => scenario
                .cpus
                .iter()
                .flatten()
                .any(|op| op.kind().subsystem() == s),
        }
    }
}

/// What the settings ask for.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    pub opts: GenOptions,
    pub crash_dir: Option<PathBuf>,
    /// A human-readable summary of the configuration, for crash reports.
    pub label: String,
    /// The variables as given (trimmed; unset ones left out), to record
    /// next to a crash.
    pub given: BTreeMap<&'static str, String>,
}

impl Settings {
    /// From the process environment.
    pub fn from_env(target: Target) -> Result<Settings, String> {
        Settings::from_vars(target, |name| std::env::var(name).ok())
    }

    /// From `var(NAME)` for each `MMHARNESS_*` name; empty is unset.
    pub fn from_vars(
        target: Target,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, String> {
        let mut given = BTreeMap::new();
        for name in VARS.iter().chain([&CRASH_DIR_VAR]) {
            if let Some(v) = var(name).map(|v| v.trim().to_string())
                && !v.is_empty()
            {
                given.insert(*name, v);
            }
        }
        let get = |name: &str| given.get(name).map(String::as_str);
        let variants: Vec<Variant> = match get("MMHARNESS_VARIANTS") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| Variant::from_name(n).map_err(|e| format!("MMHARNESS_VARIANTS: {e}")))
                .collect::<Result<_, _>>()?,
        };
        let hvo_mode = match get("MMHARNESS_HVO_MODE") {
            None => HvoMode::Keep1,
            Some(name) => HvoMode::from_str(name, false).map_err(|_| {
                let known: Vec<&str> = HvoMode::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "MMHARNESS_HVO_MODE: unknown mode `{name}`; known modes: {}",
                    known.join(", ")
                )
            })?,
        };
        let arch = match get("MMHARNESS_ARCH") {
            None => VariantSet::new(&variants).arch(),
            Some(name) => Arch::from_str(name, false).map_err(|_| {
                let known: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                format!(
                    "MMHARNESS_ARCH: unknown architecture `{name}`; known: {}",
                    known.join(", ")
                )
            })?,
        };
        let max_cpus = match get("MMHARNESS_CPUS") {
            None => 2,
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| (2..=MAX_CPUS).contains(n))
                .ok_or_else(|| {
                    format!(
                        "MMHARNESS_CPUS: `{n}` is not a number of CPUs between 2 and {MAX_CPUS}"
                    )
                })?,
        };
        let ops = match get("MMHARNESS_OPS") {
            None => target
                .default_ops()
                .unwrap_or_else(|| OpFamily::for_variants(&variants)),
            Some(name) => OpFamily::parse(name).map_err(|e| format!("MMHARNESS_OPS: {e}"))?,
        };
        let range = |name: &str, default: u8, valid: std::ops::RangeInclusive<u8>| {
            let Some(text) = get(name) else {
                return Ok((default, default));
            };
            parse_span(text, &valid).map_err(|e| format!("{name}: {e}"))
        };
        let memory_blocks = range("MMHARNESS_MEMORY_BLOCKS", 2, 2..=8)?;
        let hugetlb_order = range("MMHARNESS_HUGETLB_ORDER", 9, 7..=10)?;
        let config = Config {
            arch,
            hvo_mode,
            variants: VariantSet::new(&variants),
            memory_blocks: memory_blocks.0,
            hugetlb_order: hugetlb_order.0,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| format!("MMHARNESS_VARIANTS and the other settings: {e}"))?;
        let label = format!(
            "target {}, {} model, {} HVO on {arch}, up to {max_cpus} CPUs, {} ops, memory {}-{} blocks, order {}-{}",
            target.name(),
            config.variants.label(),
            hvo_mode.name(),
            ops.label(),
            memory_blocks.0,
            memory_blocks.1,
            hugetlb_order.0,
            hugetlb_order.1
        );
        let crash_dir = given.remove(CRASH_DIR_VAR).map(PathBuf::from);
        Ok(Settings {
            target,
            opts: GenOptions {
                max_cpus,
                ops,
                memory_blocks,
                hugetlb_order,
                ..GenOptions::with_config(config)
            },
            crash_dir,
            label,
            given,
        })
    }

    /// The settings as a `.settings` file: `NAME=value` lines, the target
    /// first. `env $(cat FILE) cargo fuzz run ...` runs with them.
    pub fn to_text(&self) -> String {
        let mut text = format!("{TARGET_VAR}={}\n", self.target.name());
        for (name, value) in &self.given {
            text.push_str(&format!("{name}={value}\n"));
        }
        text
    }
}

/// A `.settings` file's variables: `NAME=value` lines; blank lines and `#`
/// comments are skipped.
pub fn parse_settings_file(text: &str, origin: &str) -> Result<BTreeMap<String, String>, String> {
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .filter(|(name, _)| *name == TARGET_VAR || VARS.contains(name))
            .ok_or_else(|| {
                format!(
                    "{origin}:{}: expected NAME=value with NAME one of {TARGET_VAR}, {}",
                    i + 1,
                    VARS.join(", ")
                )
            })?;
        vars.insert(name.to_string(), value.trim().to_string());
    }
    Ok(vars)
}

/// The file next to a crash artifact recording its settings.
pub fn settings_path(artifact: &Path) -> PathBuf {
    let mut name = artifact.as_os_str().to_owned();
    name.push(".settings");
    PathBuf::from(name)
}

/// The SHA-1 of an input, as libFuzzer names its artifacts (`crash-<sha1>`).
pub fn sha1_hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

/// Where libFuzzer is about to write the artifact of a crash on `data`,
/// from its command line `args` (the target's, or bolero's
/// `BOLERO_LIBFUZZER_ARGS`): `-exact_artifact_path=`, else
/// `<-artifact_prefix=>crash-<sha1>`. None when libFuzzer writes none of
/// ours: while it minimizes (`-minimize_crash`, as `cargo fuzz tmin` runs
/// it, whose result is `minimized-from-<sha1>`, read with the original's
/// settings) or runs given files (`cargo fuzz run T FILE`), so that no
/// stray `.settings` file lands among the artifacts.
pub fn artifact_path<I: IntoIterator<Item = String>>(args: I, data: &[u8]) -> Option<PathBuf> {
    let mut prefix = String::new();
    let mut exact = None;
    for a in args.into_iter().skip(1) {
        if let Some(p) = a.strip_prefix("-artifact_prefix=") {
            prefix = p.to_string();
        } else if let Some(p) = a.strip_prefix("-exact_artifact_path=") {
            exact = Some(PathBuf::from(p));
        } else if a.starts_with("-minimize_crash")
            || (!a.starts_with('-') && Path::new(&a).is_file())
        {
            return None;
        }
    }
    Some(exact.unwrap_or_else(|| PathBuf::from(format!("{prefix}crash-{}", sha1_hex(data)))))
}

/// The `.settings` file recorded for `artifact`: beside it, or, for
/// `cargo fuzz tmin`'s `minimized-from-<sha1>`, the one of the input it was
/// minimized from (the file in the same folder with that SHA-1: the crash,
/// or the previous round's `minimized-from-*`).
pub fn recorded_settings(artifact: &Path) -> Option<PathBuf> {
    let mut artifact = artifact.to_path_buf();
    // tmin's rounds, each minimized from the one before.
    for _ in 0..256 {
        let beside = settings_path(&artifact);
        if beside.is_file() {
            return Some(beside);
        }
        let name = artifact.file_name()?.to_str()?;
        let origin = name.strip_prefix("minimized-from-")?;
        let dir = artifact.parent().filter(|d| !d.as_os_str().is_empty());
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.unwrap_or(Path::new(".")))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "settings"))
            .collect();
        files.sort();
        artifact = files
            .into_iter()
            .find(|p| std::fs::read(p).is_ok_and(|d| sha1_hex(&d) == origin))?;
    }
    None
}

/// Write `ARTIFACT.settings` beside the artifact libFuzzer is about to
/// write, so that `mmharness import` decodes the artifact as it was found.
/// Returns the path written.
pub fn record_settings(artifact: &Path, settings: &Settings) -> std::io::Result<PathBuf> {
    let path = settings_path(artifact);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, settings.to_text())?;
    Ok(path)
}

/// A failing input: what failed, and the scenario as a replayable file.
#[derive(Debug, Clone)]
pub struct Failure {
    /// One line: the violation or the model panic.
    pub headline: String,
    /// A violation (not a model panic).
    pub violation: bool,
    /// With the schedule actually taken, `expect`, `note` and `build` set.
    pub scenario: Scenario,
}

/// A setting's value `N` or range `LO-HI` (drawn per scenario), each
/// within `valid`, as `(lo, hi)`.
pub fn parse_span(text: &str, valid: &std::ops::RangeInclusive<u8>) -> Result<(u8, u8), String> {
    let parse = |t: &str| t.trim().parse::<u8>().ok().filter(|v| valid.contains(v));
    match text.split_once('-') {
        Some((lo, hi)) => parse(lo).zip(parse(hi)).filter(|(lo, hi)| lo <= hi),
        None => parse(text).map(|v| (v, v)),
    }
    .ok_or_else(|| {
        format!(
            "`{text}` is not a value or a range LO-HI within {}..={}",
            valid.start(),
            valid.end()
        )
    })
}

/// What one input did.
#[derive(Debug, Clone)]
pub enum Checked {
    /// The target does not keep it (see [`Target::keeps`]).
    Rejected,
    /// Ran clean; the scenario with the schedule actually taken.
    Clean(Box<Scenario>),
    Failed(Box<Failure>),
}

/// Decode `data` under `settings`, keep it or not as the target does, and
/// run the scenario's own schedule once. `found_by` starts the note of a
/// failing scenario ("found by cargo-fuzz").
pub fn check_bytes(data: &[u8], settings: &Settings, found_by: &str) -> Checked {
    check_bytes_observed(data, settings, found_by, Observe::default()).0
}

/// [`check_bytes`], also returning the run's coverage features when
/// `observe` asks for them (`model::kcov`), as a fuzzer's feedback.
pub fn check_bytes_observed(
    data: &[u8],
    settings: &Settings,
    found_by: &str,
    observe: Observe,
) -> (Checked, Vec<u64>) {
    let scenario = decode_bytes(data, &settings.opts);
    if !settings.target.keeps(&scenario) {
        return (Checked::Rejected, Vec::new());
    }
    let mut outcome = replay(&scenario, observe);
    let features = std::mem::take(&mut outcome.features);
    (
        checked(scenario, outcome, data, settings, found_by),
        features,
    )
}

fn checked(
    mut scenario: Scenario,
    outcome: Outcome,
    data: &[u8],
    settings: &Settings,
    found_by: &str,
) -> Checked {
    // The decisions actually taken, so that the file replays without
    // relying on the default continuation after the decoded schedule.
    scenario.schedule = outcome.schedule.clone();
    scenario.build = Some(Build::current());
    let headline = match &outcome.verdict {
        Verdict::Clean => return Checked::Clean(Box::new(scenario)),
        Verdict::Violation(d) => {
            scenario.expect = Some(Expect::from(d));
            format!(
                "VIOLATION of {} in {}() (step {}, {}): {}",
                d.violation.oracle,
                d.func,
                d.step,
                match d.cpu {
                    Some(c) => format!("CPU {c}"),
                    None => "no CPU".to_string(),
                },
                d.violation.detail
            )
        }
        Verdict::ModelPanic(msg) => format!("MODEL PANIC (a harness bug): {msg}"),
    };
    scenario.note = Some(format!(
        "{found_by} ({}); input sha1 {}",
        settings.label,
        sha1_hex(data)
    ));
    Checked::Failed(Box::new(Failure {
        headline,
        violation: outcome.violation().is_some(),
        scenario,
    }))
}

/// Report a failure on stderr, as the fuzz harnesses do before they crash:
/// the headline, the settings and the scenario JSON, and the JSON written
/// to `$MMHARNESS_CRASH_DIR/<sha1>.json` when that is set.
pub fn report(data: &[u8], failure: &Failure, settings: &Settings) {
    let json = failure.scenario.to_json();
    eprintln!("\n==== mmharness: {}", failure.headline);
    eprintln!("==== configuration: {}", settings.label);
    eprintln!("==== scenario (save as FILE.json, then `mmharness replay FILE.json`):");
    eprint!("{json}");
    eprintln!("==== end of scenario");
    if let Some(dir) = &settings.crash_dir {
        let path = dir.join(format!("{}.json", sha1_hex(data)));
        match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &json)) {
            Ok(()) => eprintln!("==== scenario written to {}", path.display()),
            Err(e) => eprintln!("==== cannot write {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn targets_parse_by_file_name_and_default_to_their_arm() {
        assert_eq!(Target::parse("scenario"), Ok(Target::Scenario));
        for s in Subsystem::ALL {
            let t = Target::parse(&s.name().replace('-', "_")).unwrap();
            assert_eq!(t, Target::Of(*s));
            assert_eq!(Target::parse(&t.name()), Ok(t));
            assert_eq!(t.default_ops(), Some(OpFamily::Of(s.arm())));
        }
        assert!(Target::parse("parser").unwrap_err().contains("harness bug"));
        assert!(
            Target::parse("frob")
                .unwrap_err()
                .contains("unknown target")
        );
    }

    #[test]
    fn settings_read_every_variable_and_reject_bad_values() {
        let s = Settings::from_vars(
            Target::Of(Subsystem::Migration),
            vars(&[
                ("MMHARNESS_VARIANTS", " hvo-no-rcu-sync , "),
                ("MMHARNESS_HVO_MODE", "keep-2"),
                ("MMHARNESS_CPUS", "3"),
                ("MMHARNESS_MEMORY_BLOCKS", "2-4"),
                ("MMHARNESS_HUGETLB_ORDER", "8"),
            ]),
        )
        .unwrap();
        assert!(s.opts.config.variants.has(Variant::HvoNoRcuSync));
        assert_eq!(s.opts.config.hvo_mode, HvoMode::Keep2);
        assert_eq!(s.opts.max_cpus, 3);
        // The target's arm, not the variant's, while MMHARNESS_OPS is unset.
        assert_eq!(s.opts.ops, OpFamily::Of(Subsystem::Migration.arm()));
        assert_eq!(
            (s.opts.memory_blocks, s.opts.hugetlb_order),
            ((2, 4), (8, 8))
        );
        // Recorded and read back, it gives the same options.
        let file = parse_settings_file(&s.to_text(), "x").unwrap();
        assert_eq!(file[TARGET_VAR], "migration");
        let again = Settings::from_vars(Target::parse(&file[TARGET_VAR]).unwrap(), |n| {
            file.get(n).cloned()
        })
        .unwrap();
        assert_eq!(again.opts, s.opts);
        for (name, value, message) in [
            ("MMHARNESS_VARIANTS", "frob", "unknown variant `frob`"),
            ("MMHARNESS_HVO_MODE", "keep-3", "unknown mode `keep-3`"),
            ("MMHARNESS_CPUS", "9", "between 2 and 4"),
            ("MMHARNESS_OPS", "frob", "unknown op family `frob`"),
            ("MMHARNESS_MEMORY_BLOCKS", "5-3", "range LO-HI within 2..=8"),
            ("MMHARNESS_HUGETLB_ORDER", "11", "within 7..=10"),
        ] {
            let e = Settings::from_vars(Target::Scenario, vars(&[(name, value)])).unwrap_err();
            assert!(e.starts_with(name) && e.contains(message), "{e}");
        }
        assert!(parse_settings_file("MMHARNESS_FROB=1", "f").is_err());
    }

    #[test]
    fn artifacts_are_where_libfuzzer_writes_them() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let data = b"x";
        let sha = sha1_hex(data);
        let run = args(&[
            "t",
            "-artifact_prefix=a/",
            "-runs=1",
            "-artifact_prefix=b/",
            "corpus",
        ]);
        assert_eq!(
            artifact_path(run, data),
            Some(PathBuf::from(format!("b/crash-{sha}")))
        );
        assert_eq!(
            artifact_path(args(&["t"]), data),
            Some(PathBuf::from(format!("crash-{sha}")))
        );
        let exact = args(&["t", "-artifact_prefix=a/", "-exact_artifact_path=e/x"]);
        assert_eq!(artifact_path(exact, data), Some(PathBuf::from("e/x")));
        // Minimizing, or running a file: no artifact of ours.
        let tmin = args(&["t", "-minimize_crash=1", "-runs=9", "c"]);
        assert_eq!(artifact_path(tmin, data), None);
        let file = args(&["t", "Cargo.toml"]);
        assert_eq!(artifact_path(file, data), None);
        assert_eq!(
            settings_path(Path::new("d/crash-ab")),
            PathBuf::from("d/crash-ab.settings")
        );
    }

    #[test]
    fn a_minimized_artifact_has_its_originals_settings() {
        let dir = std::env::temp_dir().join(format!("mmharness-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // crash -> minimized-from-<sha1 of crash> -> minimized-from-<sha1
        // of that>, as tmin's rounds name them.
        let crash = dir.join("crash-ab");
        std::fs::write(&crash, b"crash").unwrap();
        std::fs::write(settings_path(&crash), "MMHARNESS_TARGET=scenario\n").unwrap();
        let first = dir.join(format!("minimized-from-{}", sha1_hex(b"crash")));
        std::fs::write(&first, b"crs").unwrap();
        let second = dir.join(format!("minimized-from-{}", sha1_hex(b"crs")));
        std::fs::write(&second, b"c").unwrap();
        assert_eq!(recorded_settings(&crash), Some(settings_path(&crash)));
        assert_eq!(recorded_settings(&first), Some(settings_path(&crash)));
        assert_eq!(recorded_settings(&second), Some(settings_path(&crash)));
        assert_eq!(recorded_settings(&dir.join("minimized-from-cd")), None);
        assert_eq!(recorded_settings(&dir.join("other")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
