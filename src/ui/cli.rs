//! `mmharness`: list variants, hunt, replay and minimize counterexamples.

use crate::engine::{Engine, HuntOptions, HuntReport, hunt, minimize};
use crate::exec::{Verdict, run_input};
use crate::model::{Config, HvoMode, Variant, VariantSet};
use crate::scenario::Scenario;
use crate::scenario::generate::{GenOptions, OpFamily};
use crate::ui::render;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "mmharness",
    version,
    about = "Hunt refcount and use-after-remap races in an executable model of Linux mm"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One line per bug variant: its name and what it breaks.
    Variants,
    /// Generate scenarios and run them until an oracle fails.
    Hunt {
        /// Switch on a bug variant (repeatable). None: the fixed model.
        #[arg(long = "variant", value_name = "NAME")]
        variants: Vec<String>,
        /// How interleavings are chosen. Default: every engine in turn.
        #[arg(long, value_enum)]
        engine: Option<Engine>,
        /// Stop after this many generated scenarios (per engine).
        #[arg(long)]
        iterations: Option<u64>,
        /// Seconds per engine [default: 5 with every engine, else 60].
        #[arg(long, value_name = "SECS")]
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
        /// PCT depth: priority change points + 1 [default: drawn per
        /// scenario from 2..=5].
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
        pct_depth: Option<u8>,
        /// Generate every input afresh instead of mutating the ones that
        /// reached new interleaving coverage.
        #[arg(long)]
        unguided: bool,
        /// Seconds to spend minimizing a finding.
        #[arg(long, default_value_t = 30.0, value_name = "SECS")]
        minimize_time: f64,
    },
    /// Replay a scenario file deterministically and print its interleaving.
    Replay {
        file: PathBuf,
        /// Print only the verdict.
        #[arg(long)]
        quiet: bool,
    },
    /// Shrink a failing scenario file and write the result.
    Minimize {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 60.0, value_name = "SECS")]
        time: f64,
    },
}

/// `replay` of a file whose `expect` block does not reproduce.
pub const EXIT_NOT_REPRODUCED: u8 = 3;
/// The model panicked: a harness bug, with the scenario saved.
pub const EXIT_MODEL_PANIC: u8 = 4;

/// Exit status: 0 clean, 1 violation found, 2 usage or input error, 3 a
/// replayed file's `expect` not reproduced, 4 the model panicked.
pub fn main() -> ExitCode {
    crate::exec::quiet_shuttle_panics();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("mmharness: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Variants => {
            let width = Variant::ALL
                .iter()
                .map(|v| v.name().len())
                .max()
                .unwrap_or(0);
            for v in Variant::ALL {
                println!("{:width$}  {}", v.name(), v.breaks());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Hunt {
            variants,
            engine,
            iterations,
            time,
            seed,
            out,
            hvo_mode,
            cpus,
            executions_per_scenario,
            pct_depth,
            ops,
            unguided,
            minimize_time,
        } => {
            let variants = variants
                .iter()
                .map(|n| Variant::from_name(n))
                .collect::<Result<Vec<_>, _>>()?;
            let config = Config {
                hvo_mode,
                variants: VariantSet::new(&variants),
                ..Config::default()
            };
            let engines: Vec<Engine> = match engine {
                Some(e) => vec![e],
                None => Engine::ALL.to_vec(),
            };
            let secs = time.unwrap_or(if engine.is_some() { 60.0 } else { 5.0 });
            if !secs.is_finite() || secs <= 0.0 {
                return Err(format!(
                    "--time {secs} must be a positive number of seconds"
                ));
            }
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
                let ops = ops.unwrap_or_else(|| OpFamily::for_variants(&variants));
                let mut opts = HuntOptions::new(
                    engine,
                    GenOptions {
                        max_cpus: cpus as usize,
                        ops,
                        ..GenOptions::with_config(config)
                    },
                );
                opts.iterations = iterations;
                opts.time = Duration::from_secs_f64(secs);
                opts.seed = seed;
                opts.executions_per_scenario = executions_per_scenario;
                opts.guided = !unguided;
                opts.pct_depth = pct_depth.map(usize::from);
                let report = hunt(&opts);
                print_summary(&report);
                if let Some((scenario, msg)) = &report.model_panic {
                    let path = save(scenario, out.as_deref(), &label, engine, seed, "panic")?;
                    eprintln!(
                        "mmharness: the model panicked (a harness bug): {msg}\n  scenario saved to {}",
                        path.display()
                    );
                    return Ok(ExitCode::from(EXIT_MODEL_PANIC));
                }
                if let Some(f) = report.finding {
                    found = true;
                    let raw = save(&f.scenario, None, &label, engine, seed, "raw")?;
                    let target = f.outcome.oracle().expect("a finding has an oracle");
                    let min = minimize(&f.scenario, target, Duration::from_secs_f64(minimize_time));
                    let path = save(&min, out.as_deref(), &label, engine, seed, "")?;
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
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Replay { file, quiet } => replay(&file, quiet),
        Command::Minimize { file, out, time } => {
            let s = Scenario::load(&file).map_err(|e| e.to_string())?;
            let o = run_input(&s, false);
            let Some(target) = o.oracle() else {
                println!("{}: replays clean; nothing to minimize", file.display());
                return Ok(ExitCode::SUCCESS);
            };
            let min = minimize(&s, target, Duration::from_secs_f64(time));
            let dest = out.unwrap_or_else(|| file.with_extension("min.json"));
            let path = min
                .save_new(&dest)
                .map_err(|e| format!("{}: {e}", dest.display()))?;
            println!("{} -> {}", render::size(&s), render::size(&min));
            println!(
                "written: {}\nreplay:  mmharness replay {}",
                path.display(),
                path.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn print_summary(r: &HuntReport) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{:>6}: {:>8} scenarios {:>9} executions in {:>6.1}s ({:>7.0} exec/s), {} features, corpus {}: {}",
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
        }
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

fn replay(file: &Path, quiet: bool) -> Result<ExitCode, String> {
    let s = Scenario::load(file).map_err(|e| e.to_string())?;
    let o = run_input(&s, true);
    if !quiet {
        let variants: Vec<&str> = s.config.variants.iter().map(|v| v.name()).collect();
        println!(
            "{}: {} HVO, order-{} folios, variants [{}]; {}",
            file.display(),
            s.config.hvo_mode.name(),
            s.config.hugetlb_order,
            variants.join(", "),
            render::size(&s)
        );
        if let Some(n) = &s.note {
            println!("note: {n}");
        }
        println!();
        print!("{}", render::interleaving_table(&o.trace, s.cpus.len()));
        println!();
    }
    if o.schedule.len() < s.schedule.len() {
        println!(
            "note: the execution made {} scheduling decisions; the last {} of the file's {} schedule choices were not used",
            o.schedule.len(),
            s.schedule.len() - o.schedule.len(),
            s.schedule.len()
        );
    }
    println!("{}", render::verdict(&o));
    if let Verdict::ModelPanic(_) = o.verdict {
        return Ok(ExitCode::from(EXIT_MODEL_PANIC));
    }
    if let Some(e) = &s.expect {
        match o.violation() {
            Some(d) if e.matches(d) => {
                println!("reproduces the expected {} in {}()", e.oracle, e.func)
            }
            _ => {
                println!(
                    "DOES NOT REPRODUCE: the file expects {} in {}(){}",
                    e.oracle,
                    e.func,
                    if o.schedule.len() > s.schedule.len() {
                        format!(
                            "; the schedule ran out after {} choices and {} decisions followed the default (the running CPU continues): is the schedule truncated?",
                            s.schedule.len(),
                            o.schedule.len() - s.schedule.len()
                        )
                    } else {
                        String::new()
                    }
                );
                return Ok(ExitCode::from(EXIT_NOT_REPRODUCED));
            }
        }
    }
    Ok(match o.verdict {
        Verdict::Clean => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}
