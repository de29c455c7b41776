//! Measurements: each engine's executions and steps per second on the fixed
//! model beside a bare shuttle test of the same shape run in the same
//! process, and the time each engine takes to find each variant.

use super::hunt::{Engine, Flow, HuntOptions, HuntReport, hunt_with};
use crate::exec::toy::bare_shuttle_exec_per_s;
use crate::model::{Config, Variant, VariantSet};
use crate::scenario::generate::{GenOptions, OpFamily};
use serde::Serialize;
use std::time::Duration;

/// The median of some figures (the mean of the middle two for an even
/// count); 0 for none.
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// One engine's throughput on the fixed model: medians over the runs.
#[derive(Debug, Clone, Serialize)]
pub struct EngineFigures {
    pub engine: Engine,
    pub exec_per_s: f64,
    /// Model steps per second, setup included.
    pub steps_per_s: f64,
    /// Steps per execution, setup included.
    pub mean_steps: f64,
    /// Steps per execution the CPUs took: each a scheduling point.
    pub mean_cpu_steps: f64,
    pub mean_cpus: f64,
}

/// libFuzzer's executions per second on a cargo-fuzz target.
#[derive(Debug, Clone, Serialize)]
pub struct FuzzFigures {
    pub target: String,
    pub exec_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub engines: Vec<EngineFigures>,
    /// The bare shuttle test's shape: threads, and locked updates per
    /// thread (the input engine's mean CPUs and CPU steps per CPU).
    pub toy_threads: usize,
    pub toy_steps: usize,
    pub toy_exec_per_s: f64,
    /// Runs per figure, and seconds per run.
    pub runs: usize,
    pub secs: f64,
    pub fuzz: Vec<FuzzFigures>,
}

impl Throughput {
    pub fn engine(&self, e: Engine) -> Option<&EngineFigures> {
        self.engines.iter().find(|f| f.engine == e)
    }
}

fn engine_run(engine: Engine, config: Config, seed: u64, time: Duration) -> HuntReport {
    let mut opts = HuntOptions::new(engine, GenOptions::with_config(config));
    opts.time = time;
    opts.seed = seed;
    hunt_with(&opts, &mut |_| Flow::Continue)
}

/// Each engine `runs` times for `time` on the fixed model, then the bare
/// shuttle test shaped like the input engine's executions, alternating
/// runs so that drift in the machine's speed hits both alike.
pub fn throughput(
    config: Config,
    runs: usize,
    time: Duration,
    progress: &mut dyn FnMut(&str),
) -> Throughput {
    let mut per_engine: Vec<(Engine, Vec<HuntReport>)> =
        Engine::ALL.iter().map(|&e| (e, Vec::new())).collect();
    let mut toy = Vec::new();
    let (mut toy_threads, mut toy_steps) = (2, 20);
    for run in 0..runs {
        for (e, reports) in per_engine.iter_mut() {
            progress(&format!("run {}/{runs}: {} engine", run + 1, e.name()));
            reports.push(engine_run(*e, config, run as u64, time));
        }
        // The toy's shape comes from the input engine's first run.
        if run == 0 {
            let r = &per_engine[3].1[0];
            let execs = r.executions.max(1) as f64;
            let cpus = r.cpus as f64 / execs;
            toy_threads = cpus.round().max(1.0) as usize;
            toy_steps = (r.cpu_steps as f64 / execs / cpus).round().max(1.0) as usize;
        }
        progress(&format!(
            "run {}/{runs}: bare shuttle, {toy_threads} threads x {toy_steps} steps",
            run + 1
        ));
        toy.push(bare_shuttle_exec_per_s(toy_threads, toy_steps, time));
    }
    let engines = per_engine
        .into_iter()
        .map(|(engine, reports)| {
            let per = |f: &dyn Fn(&HuntReport) -> f64| median(reports.iter().map(f).collect());
            let secs = |r: &HuntReport| r.elapsed.as_secs_f64().max(1e-9);
            let execs = |r: &HuntReport| r.executions.max(1) as f64;
            EngineFigures {
                engine,
                exec_per_s: per(&|r| r.executions as f64 / secs(r)),
                steps_per_s: per(&|r| r.steps as f64 / secs(r)),
                mean_steps: per(&|r| r.steps as f64 / execs(r)),
                mean_cpu_steps: per(&|r| r.cpu_steps as f64 / execs(r)),
                mean_cpus: per(&|r| r.cpus as f64 / execs(r)),
            }
        })
        .collect();
    Throughput {
        engines,
        toy_threads,
        toy_steps,
        toy_exec_per_s: median(toy),
        runs,
        secs: time.as_secs_f64(),
        fuzz: Vec::new(),
    }
}

/// One hunt of the scoreboard.
#[derive(Debug, Clone, Serialize)]
pub struct Hunt {
    pub seed: u64,
    pub found: bool,
    pub secs: f64,
    pub executions: u64,
    pub scenarios: u64,
}

/// Every seed's hunt of one variant by one engine.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    pub variant: Variant,
    pub engine: Engine,
    pub hunts: Vec<Hunt>,
}

impl Score {
    pub fn found(&self) -> usize {
        self.hunts.iter().filter(|h| h.found).count()
    }

    /// The median time to find, counting a miss as its budget; `None` when
    /// half the hunts or more missed (the median is a miss).
    pub fn median_secs(&self, budget: f64) -> Option<f64> {
        let m = median(
            self.hunts
                .iter()
                .map(|h| if h.found { h.secs } else { f64::INFINITY })
                .collect(),
        );
        (m.is_finite() && m <= budget).then_some(m)
    }

    pub fn median_executions(&self) -> Option<f64> {
        let m = median(
            self.hunts
                .iter()
                .map(|h| {
                    if h.found {
                        h.executions as f64
                    } else {
                        f64::INFINITY
                    }
                })
                .collect(),
        );
        m.is_finite().then_some(m)
    }
}

/// The hunt the scoreboard runs: the variant on, its subsystems' ops, as
/// `mmharness hunt --variant V --engine E --seed S --time T` does.
pub fn hunt_variant(variant: Variant, engine: Engine, seed: u64, time: Duration) -> Hunt {
    let config = Config {
        arch: variant.arch(),
        variants: VariantSet::new(&[variant]),
        ..Config::default()
    };
    let mut opts = HuntOptions::new(
        engine,
        GenOptions {
            ops: OpFamily::for_variants(&[variant]),
            ..GenOptions::with_config(config)
        },
    );
    opts.time = time;
    opts.seed = seed;
    let r = hunt_with(&opts, &mut |_| Flow::Continue);
    Hunt {
        seed,
        found: r.finding.is_some(),
        secs: r.elapsed.as_secs_f64(),
        executions: r.executions,
        scenarios: r.scenarios,
    }
}

/// Every variant, every engine, seeds `0..seeds`, each hunt at most `time`.
pub fn scoreboard(
    variants: &[Variant],
    engines: &[Engine],
    seeds: u64,
    time: Duration,
    progress: &mut dyn FnMut(&str),
) -> Vec<Score> {
    let mut out = Vec::new();
    for &variant in variants {
        for &engine in engines {
            let mut hunts = Vec::new();
            for seed in 0..seeds {
                progress(&format!("{variant}, {} engine, seed {seed}", engine.name()));
                hunts.push(hunt_variant(variant, engine, seed, time));
            }
            out.push(Score {
                variant,
                engine,
                hunts,
            });
        }
    }
    out
}
