//! Shared by the cargo-fuzz targets: generation options from the
//! environment, one deterministic run per input, and crash reporting.
//!
//! Environment (read once per process):
//!
//! - `MMHARNESS_VARIANTS`: comma-separated bug variants (`mmharness
//!   variants` lists them); unset or empty: the fixed model.
//! - `MMHARNESS_HVO_MODE`: `keep-1` (default), `keep-2` or `shared-tail`.
//! - `MMHARNESS_ARCH`: `x86`, `arm64` or `arm64-llsc` (default: the
//!   architecture the variants are about, x86 for the fixed model).
//! - `MMHARNESS_CPUS`: CPUs per scenario, at most; 2 (default) to 4.
//! - `MMHARNESS_OPS`: the op families scenarios draw from: `any`, `all`, or
//!   subsystem names joined by commas (`hvo`, `migration`, ...), as
//!   `mmharness hunt --ops` takes them. Default: as `mmharness hunt` picks
//!   it (the variants' subsystems; `any` for the fixed model), except that
//!   the `migration` target defaults to `migration` and the `pmd_share`
//!   target to `pmd-share`.
//! - `MMHARNESS_MEMORY_BLOCKS`: physical memory in hugetlb-sized blocks,
//!   2 (default) to 8, or a range `LO-HI` drawn per scenario.
//! - `MMHARNESS_HUGETLB_ORDER`: hugetlb folio order, 7 to 10 (default 9),
//!   or a range `LO-HI`.
//! - `MMHARNESS_CRASH_DIR`: when set, a failing input's scenario is also
//!   written to `$MMHARNESS_CRASH_DIR/<sha1 of the input>.json`; libFuzzer
//!   names the artifact `crash-<sha1 of the input>`, so the two match.
//!
//! The same bytes decode to a different scenario under different
//! `MMHARNESS_*` settings: replay an artifact with the settings it was
//! found with.

use clap::ValueEnum;
use mmharness::exec::{Verdict, run_input};
use mmharness::model::{Arch, Config, HvoMode, Variant, VariantSet};
use mmharness::scenario::generate::{GenOptions, OpFamily, decode_bytes};
use mmharness::scenario::{Expect, MAX_CPUS, Op, Scenario};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the environment asked for.
pub struct Settings {
    pub opts: GenOptions,
    pub crash_dir: Option<PathBuf>,
    /// A human-readable summary of the configuration, for crash reports.
    pub label: String,
}

fn usage_error(msg: String) -> ! {
    eprintln!("mmharness fuzz target: {msg}");
    std::process::exit(2);
}

fn from_env(target_ops: Option<OpFamily>) -> Settings {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let variants: Vec<Variant> = var("MMHARNESS_VARIANTS")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    Variant::from_name(n)
                        .unwrap_or_else(|e| usage_error(format!("MMHARNESS_VARIANTS: {e}")))
                })
                .collect()
        })
        .unwrap_or_default();
    let hvo_mode = match var("MMHARNESS_HVO_MODE") {
        None => HvoMode::Keep1,
        Some(name) => HvoMode::from_str(&name, false).unwrap_or_else(|_| {
            let known: Vec<&str> = HvoMode::ALL.iter().map(|m| m.name()).collect();
            usage_error(format!(
                "MMHARNESS_HVO_MODE: unknown mode `{name}`; known modes: {}",
                known.join(", ")
            ))
        }),
    };
    let arch = match var("MMHARNESS_ARCH") {
        None => VariantSet::new(&variants).arch(),
        Some(name) => Arch::from_str(&name, false).unwrap_or_else(|_| {
            let known: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
            usage_error(format!(
                "MMHARNESS_ARCH: unknown architecture `{name}`; known: {}",
                known.join(", ")
            ))
        }),
    };
    let max_cpus = match var("MMHARNESS_CPUS") {
        None => 2,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (2..=MAX_CPUS).contains(&n) => n,
            _ => usage_error(format!(
                "MMHARNESS_CPUS: `{n}` is not a number of CPUs between 2 and {MAX_CPUS}"
            )),
        },
    };
    let ops = match var("MMHARNESS_OPS") {
        None => target_ops.unwrap_or_else(|| OpFamily::for_variants(&variants)),
        Some(name) => {
            OpFamily::parse(&name).unwrap_or_else(|e| usage_error(format!("MMHARNESS_OPS: {e}")))
        }
    };
    let ops_name = ops.label();
    let range = |name: &str, default: u8, valid: std::ops::RangeInclusive<u8>| -> (u8, u8) {
        let Some(text) = var(name) else {
            return (default, default);
        };
        let parse = |t: &str| t.trim().parse::<u8>().ok().filter(|v| valid.contains(v));
        let parsed = match text.split_once('-') {
            Some((lo, hi)) => parse(lo).zip(parse(hi)).filter(|(lo, hi)| lo <= hi),
            None => parse(&text).map(|v| (v, v)),
        };
        parsed.unwrap_or_else(|| {
            usage_error(format!(
                "{name}: `{text}` is not a value or a range LO-HI within {}..={}",
                valid.start(),
                valid.end()
            ))
        })
    };
    let memory_blocks = range("MMHARNESS_MEMORY_BLOCKS", 2, 2..=8);
    let hugetlb_order = range("MMHARNESS_HUGETLB_ORDER", 9, 7..=10);
    let config = Config {
        arch,
        hvo_mode,
        variants: VariantSet::new(&variants),
        memory_blocks: memory_blocks.0,
        hugetlb_order: hugetlb_order.0,
        ..Config::default()
    };
    let label = format!(
        "{} model, {} HVO on {arch}, up to {max_cpus} CPUs, {ops_name} ops, memory {}-{} blocks, order {}-{}",
        config.variants.label(),
        hvo_mode.name(),
        memory_blocks.0,
        memory_blocks.1,
        hugetlb_order.0,
        hugetlb_order.1
    );
    Settings {
        opts: GenOptions {
            max_cpus,
            ops,
            memory_blocks,
            hugetlb_order,
            ..GenOptions::with_config(config)
        },
        crash_dir: var("MMHARNESS_CRASH_DIR").map(PathBuf::from),
        label,
    }
}

/// The settings of the `scenario` target.
pub fn settings() -> &'static Settings {
    settings_for(None)
}

/// Does a CPU (not the setup) migrate a page? The migration target keeps
/// only such scenarios in its corpus.
pub fn cpu_migrates(scenario: &Scenario) -> bool {
    scenario
        .cpus
        .iter()
        .flatten()
        .any(|op| matches!(op, Op::MigratePages { .. }))
}

/// Does a CPU (not the setup) unshare or free PMD tables? The pmd_share
/// target keeps only such scenarios in its corpus.
pub fn cpu_unshares(scenario: &Scenario) -> bool {
    scenario.cpus.iter().flatten().any(|op| {
        matches!(
            op,
            Op::Munmap { .. }
                | Op::MadviseDontneed { .. }
                | Op::MadviseDontfork { .. }
                | Op::HugetlbfsPunchHole { .. }
                | Op::HugetlbVmtruncate { .. }
                | Op::ExitMmap { .. }
        )
    })
}

/// Set while the model runs under shuttle.
static IN_RUN: AtomicBool = AtomicBool::new(false);

/// libfuzzer-sys installs a panic hook that aborts the process. Panics
/// inside a run (shuttle's deadlock and step-bound failures, a panicking
/// model) are caught by the harness and turned into verdicts, so while a run
/// is in progress the hook only prints; the verdict is then reported and
/// turned into a crash by [`check`].
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_RUN.load(Ordering::Relaxed) {
            eprintln!("mmharness fuzz target: panic inside the run (becomes the verdict): {info}");
        } else {
            previous(info);
        }
    }));
}

/// The settings, read from the environment on first use; `target_ops` is
/// the target's default op family (`None`: as `mmharness hunt` picks it).
/// The first call decides.
pub fn settings_for(target_ops: Option<OpFamily>) -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let s = from_env(target_ops);
        install_panic_hook();
        s
    })
}

/// Decode `data`, run the scenario's own schedule, and panic (a libFuzzer
/// crash) on anything but a clean verdict, after printing the scenario.
pub fn check(data: &[u8], settings: &Settings) {
    check_decoded(data, decode_bytes(data, &settings.opts), settings);
}

/// [`check`] for a scenario already decoded from `data`.
pub fn check_decoded(data: &[u8], mut scenario: Scenario, settings: &Settings) {
    IN_RUN.store(true, Ordering::Relaxed);
    let outcome = run_input(&scenario, false);
    IN_RUN.store(false, Ordering::Relaxed);
    let headline = match &outcome.verdict {
        Verdict::Clean => return,
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
    // The decisions actually taken, so the file replays without relying on
    // the default continuation after the decoded schedule runs out.
    scenario.schedule = outcome.schedule.clone();
    let hash = sha1_smol::Sha1::from(data).digest().to_string();
    scenario.note = Some(format!(
        "found by cargo-fuzz ({}); libFuzzer input sha1 {hash}",
        settings.label
    ));
    let json = scenario.to_json();
    eprintln!("\n==== mmharness: {headline}");
    eprintln!("==== configuration: {}", settings.label);
    eprintln!("==== scenario (save as FILE.json, then `mmharness replay FILE.json`):");
    eprint!("{json}");
    eprintln!("==== end of scenario");
    if let Some(dir) = &settings.crash_dir {
        let path = dir.join(format!("{hash}.json"));
        match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &json)) {
            Ok(()) => eprintln!("==== scenario written to {}", path.display()),
            Err(e) => eprintln!("==== cannot write {}: {e}", path.display()),
        }
    }
    panic!("mmharness: {headline}");
}
