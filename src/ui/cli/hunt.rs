//! `mmharness hunt`.

use super::{EXIT_INTERRUPTED, EXIT_MODEL_PANIC, seconds};
use crate::engine::adaptive::{AdaptiveOptions, AdaptiveReport, Arm, ArmReport, adaptive_hunt};
use crate::engine::{Engine, Flow, minimize};
use crate::model::{Arch, Config, HvoMode, Oracle, Subsystem, Variant, VariantSet};
use crate::scenario::generate::OpFamily;
use crate::scenario::{Build, Scenario};
use crate::ui::fuzz::{
    Checked, Settings, Target, check_bytes, parse_span, record_settings, settings_path,
};
use crate::ui::progress::{Progress, catch_ctrl_c, interrupted};
use crate::ui::render;
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct Hunt {
    /// Switch on a bug variant (repeatable). None: the model as built.
    #[arg(long = "variant", value_name = "NAME", value_parser = Variant::from_name)]
    variants: Vec<Variant>,
    /// Pin the engine (repeatable) [default: every engine, budget moved to
    /// the arms that keep finding new coverage].
    #[arg(long = "engine", value_enum)]
    engines: Vec<Engine>,
    /// Seconds for the whole hunt [default: 60].
    #[arg(long, value_name = "SECS", value_parser = seconds, default_value_t = 60.0)]
    time: f64,
    /// Stop each arm after this many generated scenarios (and run one
    /// worker, so that the hunt is deterministic).
    #[arg(long)]
    iterations: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the minimized counterexample (the unminimized one
    /// goes next to it, as FILE.raw.json).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Also write the finding's input bytes to FILE, and the fuzz settings
    /// they decode under to FILE.settings, so that the `scenario` fuzz
    /// target (`cargo fuzz tmin`, `run`), bolero and `mmharness import`
    /// start from the same crash (needs `--engine input`).
    #[arg(long, value_name = "FILE")]
    raw_out: Option<PathBuf>,
    /// Pin the HVO generation [default: keep-1, and keep-2 as arms of its
    /// own for the op arms with HVO ops; keep-1 alone with --variant].
    #[arg(long, value_enum)]
    hvo_mode: Option<HvoMode>,
    /// The architecture [default: the one the variants' bugs are about,
    /// x86 for the fixed model].
    #[arg(long, value_enum)]
    arch: Option<Arch>,
    /// Pin the CPUs per scenario, at most [default: 4 (each scenario draws
    /// 2-4); 2 with --variant].
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=4))]
    cpus: Option<u8>,
    /// Memory in hugetlb-sized blocks (block 0 holds the memmap): N, or
    /// LO-HI drawn per scenario, within 2..=8 [default: 2-3; 2 with
    /// --variant].
    #[arg(long, value_name = "N|LO-HI", value_parser = memory_blocks)]
    memory_blocks: Option<(u8, u8)>,
    /// The hugetlb folio order: N, or LO-HI drawn per scenario, within
    /// 7..=10 [default: 9].
    #[arg(long, value_name = "N|LO-HI", value_parser = hugetlb_order)]
    hugetlb_order: Option<(u8, u8)>,
    /// Interleavings per scenario for random, pct and dfs, at most: each
    /// fresh scenario draws 1/2^k of them (k in 0..=5), a boosted one gets
    /// 16 times them.
    #[arg(long, default_value_t = 32)]
    executions_per_scenario: usize,
    /// Op families: `auto` (every subsystem's arm, adaptively), `any`
    /// (each scenario picks one), `all`, or subsystem names joined by
    /// commas [default: the variants' subsystems, else auto].
    #[arg(long, value_name = "OPS")]
    ops: Option<String>,
    /// PCT depth: priority change points + 1 [default: drawn per scenario
    /// from 4..=5].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
    pct_depth: Option<u8>,
    /// Generate every input afresh instead of mutating the ones that
    /// reached new coverage.
    #[arg(long)]
    unguided: bool,
    /// Parallel workers [default: one per core; 1 with --iterations].
    #[arg(long)]
    jobs: Option<usize>,
    /// Seconds to spend minimizing a finding.
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = seconds)]
    minimize_time: f64,
}

/// `--memory-blocks N|LO-HI`, as the fuzz settings take it.
fn memory_blocks(text: &str) -> Result<(u8, u8), String> {
    parse_span(text, &(2..=8))
}

/// `--hugetlb-order N|LO-HI`, as the fuzz settings take it.
fn hugetlb_order(text: &str) -> Result<(u8, u8), String> {
    parse_span(text, &(7..=10))
}

fn comma_list(names: impl Iterator<Item = &'static str>) -> String {
    names.collect::<Vec<_>>().join(",")
}

impl Hunt {
    /// The hunt's arms, from what the flags pin.
    fn options(&self) -> Result<AdaptiveOptions, String> {
        let variants = VariantSet::new(&self.variants);
        let config = Config {
            arch: self.arch.unwrap_or(variants.arch()),
            hvo_mode: self.hvo_mode.unwrap_or_default(),
            variants,
            hugetlb_order: self
                .hugetlb_order
                .map_or(Config::default().hugetlb_order, |o| o.0),
            ..Config::default()
        };
        config.validate()?;
        let mut a = AdaptiveOptions::new(config, Duration::from_secs_f64(self.time), self.seed);
        if let Some(order) = self.hugetlb_order {
            a.hugetlb_order = order;
        }
        // With a variant named, its subsystems' ops, as `--ops` unset always
        // meant; `--ops auto` searches without that hint.
        let targeted = !self.variants.is_empty() && self.ops.as_deref() != Some("auto");
        match self.ops.as_deref() {
            None | Some("auto") if !targeted => {}
            None => a.op_arms = vec![OpFamily::for_variants(&self.variants)],
            Some(text) => a.op_arms = vec![OpFamily::parse(text)?],
        }
        if !self.engines.is_empty() {
            a.engines.clear();
            for &e in &self.engines {
                // Named twice, an engine is still one arm.
                if !a.engines.contains(&e) {
                    a.engines.push(e);
                }
            }
        }
        if self.hvo_mode.is_some() || !self.variants.is_empty() {
            a.hvo_modes = vec![config.hvo_mode];
        }
        if self.arch.is_some() || !self.variants.is_empty() {
            a.archs = vec![config.arch];
        }
        if let Some(c) = self.cpus {
            a.cpus = vec![c as usize];
        } else if targeted {
            a.cpus = vec![2];
        }
        if let Some(blocks) = self.memory_blocks {
            a.memory_blocks = blocks;
        } else if targeted {
            a.memory_blocks = (config.memory_blocks, config.memory_blocks);
        }
        if targeted {
            a.vma_growth = 0;
        }
        if let Some(j) = self.jobs {
            a.jobs = j.max(1);
        } else if self.iterations.is_some() {
            a.jobs = 1;
        }
        Ok(a)
    }

    pub fn run(self) -> Result<ExitCode, String> {
        let mut a = self.options()?;
        // On the arms' engines, so that `--engine input` named twice counts
        // as the input engine alone.
        if self.raw_out.is_some() && a.engines != [Engine::Input] {
            return Err(
                "--raw-out needs --engine input: only the input engine's findings are input bytes"
                    .into(),
            );
        }
        catch_ctrl_c();
        a.iterations = self.iterations;
        a.guided = !self.unguided;
        a.pct_depth = self.pct_depth.map(usize::from);
        a.executions_per_scenario = self.executions_per_scenario;
        let build = Build::current();
        let label = model_label(&a.config, &build);
        println!(
            "hunting {label} for {:.0} s: {} arm(s) ({} engine(s) x {} op arm(s) x {} CPU count(s), HVO {}, {}), memory {}-{} blocks, hugetlb order {}-{}, {} worker(s)",
            self.time,
            a.arms().len(),
            a.engines.len(),
            a.op_arms.len(),
            a.cpus.len(),
            comma_list(a.hvo_modes.iter().map(|m| m.name())),
            comma_list(a.archs.iter().map(|a| a.name())),
            a.memory_blocks.0,
            a.memory_blocks.1,
            a.hugetlb_order.0,
            a.hugetlb_order.1,
            a.jobs
        );
        let mut progress = Progress::new("hunt");
        let report = adaptive_hunt(&a, &mut |arms| {
            progress.arms(arms);
            if interrupted() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        progress.finish();
        print_summary(&report);
        let stem = file_stem(&a.config, &build, self.seed);
        if let Some((arm, scenario, msg)) = &report.model_panic {
            let mut s = scenario.clone();
            s.build = Some(build.clone());
            let path = save(&s, self.out.as_deref(), &stem, arm, self.seed, "panic")?;
            eprintln!(
                "mmharness: the model panicked (a harness bug): {msg}\n  scenario saved to {}",
                path.display()
            );
            return Ok(ExitCode::from(EXIT_MODEL_PANIC));
        }
        if let Some((arm, f)) = report.finding {
            let mut found = f.scenario.clone();
            found.build = Some(build.clone());
            let raw = save(&found, self.out.as_deref(), &stem, &arm, self.seed, "raw")?;
            let target = f.outcome.oracle().expect("a finding has an oracle");
            if let Some(path) = &self.raw_out {
                let bytes = f
                    .bytes
                    .as_deref()
                    .expect("the input engine's finding has bytes");
                write_raw(path, bytes, &a, &arm, target)?;
                println!(
                    "  raw input: {} (settings: {})",
                    path.display(),
                    settings_path(path).display()
                );
            }
            let mut min = minimize(&found, target, Duration::from_secs_f64(self.minimize_time));
            min.build = Some(build);
            let path = save(&min, self.out.as_deref(), &stem, &arm, self.seed, "")?;
            println!("  {}", render::verdict(&f.outcome));
            println!(
                "  found by:  {} after {:.1}s",
                arm.label(),
                report.elapsed.as_secs_f64()
            );
            println!("  found:     {}", render::size(&found));
            println!("  minimized: {}", render::size(&min));
            println!(
                "  written:   {} (unminimized: {})",
                path.display(),
                raw.display()
            );
            println!("  replay:    mmharness replay {}", path.display());
            return Ok(ExitCode::from(1));
        }
        Ok(if report.interrupted {
            println!("interrupted: nothing found so far");
            ExitCode::from(EXIT_INTERRUPTED)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// "the fixed model", "the hvo-no-rcu-sync model", or, for a tree that
/// differs from a clean commit, "the model as built".
fn model_label(config: &Config, build: &Build) -> String {
    let variants = config.variants.label();
    let hvo = format!("{} HVO on {}", config.hvo_mode.name(), config.arch);
    match (build.pristine(), config.variants.is_empty()) {
        (true, true) => format!("the fixed model ({hvo}, commit {})", build.commit),
        (true, false) => format!("the {variants} model ({hvo})"),
        (false, true) => format!(
            "the model as built ({hvo}; {}, model source {})",
            build.describe(),
            build.model_hash
        ),
        (false, false) => format!(
            "the model as built with {variants} ({hvo}; {})",
            build.describe()
        ),
    }
}

/// The default file name: variants, or the build for the model as built.
fn file_stem(config: &Config, build: &Build, seed: u64) -> String {
    let base = if !config.variants.is_empty() {
        config.variants.label()
    } else if build.pristine() {
        "fixed".to_string()
    } else {
        format!("built-{}", build.model_hash)
    };
    format!("{base}-seed{seed}")
}

fn print_summary(r: &AdaptiveReport) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{} scenarios, {} executions in {secs:.1}s ({:.0} exec/s): {}{}",
        r.scenarios(),
        r.executions(),
        r.executions() as f64 / secs,
        if r.finding.is_some() {
            "VIOLATION"
        } else {
            "clean"
        },
        if r.interrupted { " (interrupted)" } else { "" }
    );
    let ran: Vec<&ArmReport> = r.arms.iter().filter(|a| a.slices > 0).collect();
    let width = ran.iter().map(|a| a.arm.label().len()).max().unwrap_or(0);
    println!(
        "  {:<width$} {:>7} {:>7} {:>10} {:>11} {:>9}",
        "arm", "slices", "time", "scenarios", "executions", "features"
    );
    for a in ran {
        println!(
            "  {:<width$} {:>7} {:>6.1}s {:>10} {:>11} {:>9}",
            a.arm.label(),
            a.slices,
            a.time.as_secs_f64(),
            a.report.scenarios,
            a.report.executions,
            a.report.features
        );
    }
    // Per subsystem: the executions and features of the arms drawing from it.
    for s in Subsystem::ALL {
        let arms: Vec<&ArmReport> = r
            .arms
            .iter()
            .filter(|a| match a.arm.ops {
                OpFamily::Any => true,
                OpFamily::Of(set) => set.has(*s),
            })
            .collect();
        if arms.is_empty() {
            continue;
        }
        println!(
            "  subsystem {:<12} {:>2} arm(s) {:>11} executions {:>9} features",
            s.name(),
            arms.len(),
            arms.iter().map(|a| a.report.executions).sum::<u64>(),
            arms.iter().map(|a| a.report.features).sum::<usize>()
        );
    }
}

/// Write a finding's input bytes to `path` and, beside them, the fuzz
/// settings of the `scenario` target under which they decode to the
/// finding (`a`'s configuration, `arm`'s op family and CPUs). Checks that
/// they fail `target` there.
fn write_raw(
    path: &Path,
    bytes: &[u8],
    a: &AdaptiveOptions,
    arm: &Arm,
    target: Oracle,
) -> Result<(), String> {
    let c = &a.config;
    let range = |(lo, hi): (u8, u8)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    };
    let ops = arm.ops.setting().ok_or_else(|| {
        format!(
            "--raw-out: the op family {} has no MMHARNESS_OPS setting",
            arm.ops.label()
        )
    })?;
    let names: Vec<&str> = c.variants.iter().map(|v| v.name()).collect();
    let vars: BTreeMap<&str, String> = [
        ("MMHARNESS_VARIANTS", names.join(",")),
        ("MMHARNESS_HVO_MODE", c.hvo_mode.name().to_string()),
        ("MMHARNESS_ARCH", c.arch.name().to_string()),
        ("MMHARNESS_CPUS", arm.cpus.to_string()),
        ("MMHARNESS_OPS", ops),
        ("MMHARNESS_MEMORY_BLOCKS", range(a.memory_blocks)),
        ("MMHARNESS_HUGETLB_ORDER", range(a.hugetlb_order)),
    ]
    .into_iter()
    .collect();
    let settings = Settings::from_vars(Target::Scenario, |n| vars.get(n).cloned())?;
    match check_bytes(bytes, &settings, "mmharness hunt") {
        Checked::Failed(f)
            if f.scenario
                .expect
                .as_ref()
                .is_some_and(|e| e.oracle == target) => {}
        _ => {
            return Err(format!(
                "--raw-out: the finding's bytes do not fail {target} under the fuzz settings ({})",
                settings.label
            ));
        }
    }
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    record_settings(path, &settings)
        .map_err(|e| format!("cannot write {}: {e}", settings_path(path).display()))?;
    Ok(())
}

fn save(
    s: &Scenario,
    out: Option<&Path>,
    stem: &str,
    arm: &Arm,
    seed: u64,
    suffix: &str,
) -> Result<PathBuf, String> {
    let mut s = s.clone();
    s.note.get_or_insert_with(|| {
        format!(
            "found by `mmharness hunt` (arm {}, seed {seed})",
            arm.label()
        )
    });
    let path = match out {
        Some(p) if suffix.is_empty() => p.to_path_buf(),
        Some(p) => p.with_extension(format!("{suffix}.json")),
        None => PathBuf::from("counterexamples").join(if suffix.is_empty() {
            format!("{stem}.json")
        } else {
            format!("{stem}.{suffix}.json")
        }),
    };
    s.save_new(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(commit: &str, dirty: bool) -> Build {
        Build {
            version: "0.1.0".into(),
            commit: commit.into(),
            dirty,
            model_hash: "abc123".into(),
        }
    }

    /// A patched tree never calls itself the fixed model, and its files
    /// are named after the model source, not "fixed".
    #[test]
    fn a_modified_tree_hunts_the_model_as_built() {
        let fixed = Config::default();
        let clean = build("1234abcd", false);
        let modified = build("1234abcd", true);
        assert!(model_label(&fixed, &clean).starts_with("the fixed model"));
        let label = model_label(&fixed, &modified);
        assert!(label.starts_with("the model as built"), "{label}");
        assert!(label.contains("commit 1234abcd, modified"), "{label}");
        assert!(model_label(&fixed, &build("unknown", false)).starts_with("the model as built"));
        assert_eq!(file_stem(&fixed, &clean, 3), "fixed-seed3");
        assert_eq!(file_stem(&fixed, &modified, 3), "built-abc123-seed3");
        let variant = Config {
            variants: VariantSet::new(&[Variant::HvoNoRcuSync]),
            ..Config::default()
        };
        assert_eq!(file_stem(&variant, &modified, 0), "hvo-no-rcu-sync-seed0");
        assert!(model_label(&variant, &modified).contains("as built with hvo-no-rcu-sync"));
    }
}
