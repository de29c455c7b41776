//! `mmharness hunt`.

use super::{EXIT_INTERRUPTED, EXIT_MODEL_PANIC, seconds};
use crate::engine::{Engine, Flow, HuntOptions, HuntReport, hunt_with, minimize};
use crate::model::{Config, HvoMode, Variant, VariantSet};
use crate::scenario::Scenario;
use crate::scenario::generate::{GenOptions, OpFamily};
use crate::ui::progress::{Progress, catch_ctrl_c, interrupted};
use crate::ui::render;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct Hunt {
    /// Switch on a bug variant (repeatable). None: the fixed model.
    #[arg(long = "variant", value_name = "NAME", value_parser = Variant::from_name)]
    variants: Vec<Variant>,
    /// How interleavings are chosen. Default: every engine in turn.
    #[arg(long, value_enum)]
    engine: Option<Engine>,
    /// Stop after this many generated scenarios (per engine).
    #[arg(long)]
    iterations: Option<u64>,
    /// Seconds per engine [default: 5 with every engine, else 60].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    time: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the minimized counterexample.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "keep-1")]
    hvo_mode: HvoMode,
    /// CPUs per generated scenario, at most.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=4))]
    cpus: u8,
    /// Interleavings per scenario for random, pct and dfs.
    #[arg(long, default_value_t = 32)]
    executions_per_scenario: usize,
    /// Op families to generate: `any` (each scenario picks one), `all`, or
    /// subsystem names joined by commas [default: the variants'
    /// subsystems, else any].
    #[arg(long, value_parser = OpFamily::parse)]
    ops: Option<OpFamily>,
    /// PCT depth: priority change points + 1 [default: drawn per scenario
    /// from 4..=5].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
    pct_depth: Option<u8>,
    /// Generate every input afresh instead of mutating the ones that
    /// reached new interleaving coverage.
    #[arg(long)]
    unguided: bool,
    /// Seconds to spend minimizing a finding.
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = seconds)]
    minimize_time: f64,
}

impl Hunt {
    pub fn run(self) -> Result<ExitCode, String> {
        catch_ctrl_c();
        let config = Config {
            hvo_mode: self.hvo_mode,
            variants: VariantSet::new(&self.variants),
            ..Config::default()
        };
        let engines: Vec<Engine> = match self.engine {
            Some(e) => vec![e],
            None => Engine::ALL.to_vec(),
        };
        let secs = self
            .time
            .unwrap_or(if self.engine.is_some() { 60.0 } else { 5.0 });
        let label = config.variants.label();
        println!(
            "hunting the {} model ({} HVO) with {}",
            label,
            config.hvo_mode.name(),
            engines
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut found = false;
        for engine in engines {
            if interrupted() {
                break;
            }
            let ops = self
                .ops
                .unwrap_or_else(|| OpFamily::for_variants(&self.variants));
            let mut opts = HuntOptions::new(
                engine,
                GenOptions {
                    max_cpus: self.cpus as usize,
                    ops,
                    ..GenOptions::with_config(config)
                },
            );
            opts.iterations = self.iterations;
            opts.time = Duration::from_secs_f64(secs);
            opts.seed = self.seed;
            opts.executions_per_scenario = self.executions_per_scenario;
            opts.guided = !self.unguided;
            opts.pct_depth = self.pct_depth.map(usize::from);
            let mut progress = Progress::new(engine.name());
            let report = hunt_with(&opts, &mut |r| {
                progress.hunt(r);
                if interrupted() {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            });
            progress.finish();
            print_summary(&report);
            if let Some((scenario, msg)) = &report.model_panic {
                let path = save(
                    scenario,
                    self.out.as_deref(),
                    &label,
                    engine,
                    self.seed,
                    "panic",
                )?;
                eprintln!(
                    "mmharness: the model panicked (a harness bug): {msg}\n  scenario saved to {}",
                    path.display()
                );
                return Ok(ExitCode::from(EXIT_MODEL_PANIC));
            }
            if let Some(f) = report.finding {
                found = true;
                let raw = save(&f.scenario, None, &label, engine, self.seed, "raw")?;
                let target = f.outcome.oracle().expect("a finding has an oracle");
                let min = minimize(
                    &f.scenario,
                    target,
                    Duration::from_secs_f64(self.minimize_time),
                );
                let path = save(&min, self.out.as_deref(), &label, engine, self.seed, "")?;
                println!("  {}", render::verdict(&f.outcome));
                println!("  found:     {}", render::size(&f.scenario));
                println!("  minimized: {}", render::size(&min));
                println!(
                    "  written:   {} (unminimized: {})",
                    path.display(),
                    raw.display()
                );
                println!("  replay:    mmharness replay {}", path.display());
            }
        }
        Ok(if found {
            ExitCode::from(1)
        } else if interrupted() {
            println!("interrupted: nothing found so far");
            ExitCode::from(EXIT_INTERRUPTED)
        } else {
            ExitCode::SUCCESS
        })
    }
}

fn print_summary(r: &HuntReport) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{:>6}: {:>8} scenarios {:>9} executions in {:>6.1}s ({:>7.0} exec/s), {} features, corpus {}: {}{}",
        r.engine.name(),
        r.scenarios,
        r.executions,
        secs,
        r.executions as f64 / secs,
        r.features,
        r.corpus,
        if r.finding.is_some() {
            "VIOLATION"
        } else {
            "clean"
        },
        if r.interrupted { " (interrupted)" } else { "" }
    );
}

fn save(
    s: &Scenario,
    out: Option<&Path>,
    label: &str,
    engine: Engine,
    seed: u64,
    suffix: &str,
) -> Result<PathBuf, String> {
    let mut s = s.clone();
    s.note.get_or_insert_with(|| {
        format!(
            "found by `mmharness hunt` ({} engine, seed {seed})",
            engine.name()
        )
    });
    let default = PathBuf::from("counterexamples").join(format!(
        "{label}-{}-seed{seed}{}{suffix}.json",
        engine.name(),
        if suffix.is_empty() { "" } else { "." }
    ));
    let path = match out {
        Some(p) if suffix.is_empty() => p.to_path_buf(),
        _ => default,
    };
    s.save_new(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
