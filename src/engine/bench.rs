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
    /// How the target was built and run, as the table says it.
    pub build: String,
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

/// Every variant, every engine, seeds `0..seeds`, each hunt at most `time`,
/// run `jobs` hunts at a time. Each hunt is single-threaded, so with no
/// more jobs than cores every hunt has a core to itself. `stop` is asked
/// before each hunt starts; hunts already running finish. The scores come
/// back in variant, engine, seed order whatever order the hunts ended in.
pub fn scoreboard(
    variants: &[Variant],
    engines: &[Engine],
    seeds: u64,
    time: Duration,
    jobs: usize,
    stop: &(dyn Fn() -> bool + Sync),
    progress: &mut dyn FnMut(&str),
) -> Vec<Score> {
    let tasks: Vec<(Variant, Engine, u64)> = variants
        .iter()
        .flat_map(|&v| {
            engines
                .iter()
                .flat_map(move |&e| (0..seeds).map(move |s| (v, e, s)))
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    // What a worker tells the caller's thread, which owns `progress`.
    enum Report {
        Started(String),
        Done(usize, Hunt),
    }
    let (tx, rx) = std::sync::mpsc::channel::<Report>();
    let mut done: Vec<Option<Hunt>> = vec![None; tasks.len()];
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, tasks.len().max(1)) {
            let tx = tx.clone();
            let (tasks, next) = (&tasks, &next);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(variant, engine, seed)) = tasks.get(i) else {
                        break;
                    };
                    if stop() {
                        break;
                    }
                    let started = format!("{variant}, {} engine, seed {seed}", engine.name());
                    let _ = tx.send(Report::Started(started));
                    let _ = tx.send(Report::Done(i, hunt_variant(variant, engine, seed, time)));
                }
            });
        }
        drop(tx);
        for msg in rx {
            match msg {
                Report::Started(started) => progress(&started),
                Report::Done(i, hunt) => done[i] = Some(hunt),
            }
        }
    });
    let mut out: Vec<Score> = Vec::new();
    for (&(variant, engine, _), hunt) in tasks.iter().zip(done) {
        let Some(hunt) = hunt else { continue };
        match out.last_mut() {
            Some(s) if s.variant == variant && s.engine == engine => s.hunts.push(hunt),
            _ => out.push(Score {
                variant,
                engine,
                hunts: vec![hunt],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hunts in parallel come back as the sequential scoreboard has them:
    /// in variant, engine, seed order, each the same seed's hunt.
    #[test]
    fn parallel_scoreboard_keeps_order_and_hunts() {
        let variants = [
            Variant::PmdShareSplitVma,
            Variant::MigrateExpectedRefsUndercount,
        ];
        let run = |jobs| {
            scoreboard(
                &variants,
                &[Engine::Input],
                3,
                Duration::from_secs(30),
                jobs,
                &|| false,
                &mut |_| {},
            )
        };
        // (variant, engine, seed, found, executions) of every hunt.
        let shape = |scores: &[Score]| -> Vec<String> {
            scores
                .iter()
                .flat_map(|s| {
                    s.hunts.iter().map(move |h| {
                        format!(
                            "{} {:?} {} {} {}",
                            s.variant, s.engine, h.seed, h.found, h.executions
                        )
                    })
                })
                .collect()
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(shape(&one), shape(&two));
        assert_eq!(one.len(), 2);
        assert!(one.iter().all(|s| s.found() == 3), "{:?}", shape(&one));
    }

    #[test]
    fn a_stopped_scoreboard_runs_no_hunt() {
        let scores = scoreboard(
            &[Variant::PmdShareSplitVma],
            &[Engine::Input],
            2,
            Duration::from_secs(30),
            2,
            &|| true,
            &mut |_| {},
        );
        assert!(scores.is_empty());
    }
}
