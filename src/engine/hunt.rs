//! Generate scenarios and run them until an oracle fails or the budget ends.

use super::corpus::{Corpus, Entry};
use super::mutate::{mutate, mutate_schedule};
use crate::exec::{
    Explored, Outcome, ShuttleEngine, Verdict, explore_shuttle, run_input, run_input_covered,
};
use crate::scenario::generate::{GenOptions, decode_with_ops_prefix};
use crate::scenario::{Expect, Scenario};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::time::{Duration, Instant};

/// How interleavings are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// shuttle's random scheduler.
    Random,
    /// shuttle's PCT scheduler.
    Pct,
    /// shuttle's bounded DFS.
    Dfs,
    /// The schedule decoded from the input bytes, like cargo-fuzz.
    Input,
}

impl Engine {
    pub const ALL: [Engine; 4] = [Engine::Random, Engine::Pct, Engine::Dfs, Engine::Input];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Random => "random",
            Engine::Pct => "pct",
            Engine::Dfs => "dfs",
            Engine::Input => "input",
        }
    }

    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }
}

#[derive(Debug, Clone)]
pub struct HuntOptions {
    pub engine: Engine,
    pub generate: GenOptions,
    /// Stop after this many scenarios.
    pub iterations: Option<u64>,
    pub time: Duration,
    pub seed: u64,
    /// Interleavings a shuttle scheduler explores per generated scenario.
    pub executions_per_scenario: usize,
    /// PCT depth; `None` draws one per scenario from [`PCT_SWARM_DEPTHS`].
    pub pct_depth: Option<usize>,
    /// Keep inputs that reach new interleaving coverage and mutate them,
    /// instead of generating every input afresh.
    pub guided: bool,
}

impl HuntOptions {
    pub fn new(engine: Engine, generate: GenOptions) -> Self {
        HuntOptions {
            engine,
            generate,
            iterations: None,
            time: Duration::from_secs(10),
            seed: 0,
            executions_per_scenario: 32,
            pct_depth: None,
            guided: true,
        }
    }
}

/// A failing scenario, with the schedule that fails it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub scenario: Scenario,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct HuntReport {
    pub engine: Engine,
    pub scenarios: u64,
    pub executions: u64,
    pub elapsed: Duration,
    pub finding: Option<Finding>,
    /// The model panicked: a harness bug, reported with its scenario.
    pub model_panic: Option<(Scenario, String)>,
    /// Inputs kept for reaching new coverage (guided hunts).
    pub corpus: usize,
    /// Distinct coverage features reached.
    pub features: usize,
}

/// Run one scenario under an engine.
pub fn explore(scenario: &Scenario, opts: &HuntOptions, seed: u64) -> Explored {
    let shuttle = match opts.engine {
        Engine::Input => {
            let mut o = if opts.guided {
                run_input_covered(scenario)
            } else {
                run_input(scenario, false)
            };
            // A failure keeps its schedule (the finding replays it).
            let failed = o.verdict != Verdict::Clean;
            return Explored {
                executions: 1,
                features: std::mem::take(&mut o.features),
                schedule: if failed {
                    o.schedule.clone()
                } else {
                    std::mem::take(&mut o.schedule)
                },
                failure: failed.then_some(o),
            };
        }
        Engine::Random => ShuttleEngine::Random,
        Engine::Pct => ShuttleEngine::Pct {
            depth: opts.pct_depth.unwrap_or_else(|| {
                let n = PCT_SWARM_DEPTHS.end() - PCT_SWARM_DEPTHS.start() + 1;
                PCT_SWARM_DEPTHS.start() + (seed >> 32) as usize % n
            }),
        },
        Engine::Dfs => ShuttleEngine::Dfs,
    };
    explore_shuttle(
        scenario,
        shuttle,
        seed,
        opts.executions_per_scenario,
        opts.guided,
    )
}

/// PCT depths a hunt draws from, one per scenario, as swarm testing draws
/// configurations. `ref-fake-head-before-count` needs three ordered
/// preemptions: on its scenario depth 3 never finds it in 40,000 runs,
/// depth 4 about 1 run in 800, depth 5 about 1 in 1,500; every other
/// variant is found within seconds at depth 5.
pub const PCT_SWARM_DEPTHS: std::ops::RangeInclusive<usize> = 4..=5;

/// How many times the usual interleavings a boosted scenario gets.
const ENERGY: usize = 16;

/// A scenario is boosted while one of its features has been reached by
/// fewer executions than this: every feature, not only a new one, gets
/// some depth of exploration. A deep race's stepping stone (a walker that
/// met a folio HVO was remapping) is reached by few scenarios, and each
/// needs hundreds of PCT runs to place three preemptions.
const RARE_BUDGET: u64 = 5_000;

pub fn hunt(opts: &HuntOptions) -> HuntReport {
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut report = HuntReport {
        engine: opts.engine,
        scenarios: 0,
        executions: 0,
        elapsed: Duration::ZERO,
        finding: None,
        model_panic: None,
        corpus: 0,
        features: 0,
    };
    let mut corpus = Corpus::default();
    while opts.iterations.is_none_or(|n| report.scenarios < n) && start.elapsed() < opts.time {
        let bytes = if !opts.guided || corpus.is_empty() || rng.gen_ratio(1, 8) {
            let mut fresh = vec![0; rng.gen_range(16..256usize)];
            rng.fill_bytes(&mut fresh);
            fresh
        } else {
            let other = corpus.any(&mut rng);
            let a = corpus.pick(&mut rng);
            let (a, other) = (&corpus[a], &corpus[other].bytes);
            if rng.gen_bool(0.5) {
                if opts.engine == Engine::Input {
                    // Same ops, another interleaving: mostly an edit of the
                    // decisions the entry's execution took.
                    let mut m = a.ops_prefix.clone();
                    m.extend(if rng.gen_ratio(3, 4) {
                        mutate_schedule(&mut rng, &a.schedule, a.nr_cpus)
                    } else {
                        let schedule = a.bytes.get(a.ops_prefix.len()..).unwrap_or(&[]);
                        mutate(&mut rng, schedule, &[])
                    });
                    m
                } else {
                    // Same scenario, fresh interleavings from a new seed.
                    a.bytes.clone()
                }
            } else {
                mutate(&mut rng, &a.bytes, other)
            }
        };
        let (mut scenario, ops_prefix) = decode_with_ops_prefix(&bytes, &opts.generate);
        report.scenarios += 1;
        let explored = explore(&scenario, opts, rng.next_u64());
        report.executions += explored.executions as u64;
        let seen = corpus.observe(&explored.features, explored.executions as u64);
        let mut failure = explored.failure;
        let mut features = explored.features;
        // Energy: a scenario that reaches a feature few executions have
        // explored yet (a new one above all) gets a longer exploration, as
        // AFL gives productive seeds more runs.
        if failure.is_none() && opts.engine != Engine::Input && seen.least_explored < RARE_BUDGET {
            let boost = HuntOptions {
                executions_per_scenario: opts.executions_per_scenario * ENERGY,
                ..opts.clone()
            };
            let e = explore(&scenario, &boost, rng.next_u64());
            report.executions += e.executions as u64;
            corpus.observe(&e.features, e.executions as u64);
            features.extend(e.features);
            failure = e.failure;
        }
        if seen.new > 0 {
            features.sort_unstable();
            features.dedup();
            corpus.add(Entry {
                bytes,
                ops_prefix,
                schedule: explored.schedule,
                nr_cpus: scenario.cpus.len() as u8,
                features,
            });
        }
        let Some(outcome) = failure else {
            continue;
        };
        match &outcome.verdict {
            Verdict::Violation(d) => {
                scenario.schedule = outcome.schedule.clone();
                scenario.expect = Some(Expect::from(d));
                report.finding = Some(Finding { scenario, outcome });
            }
            Verdict::ModelPanic(msg) => {
                scenario.schedule = outcome.schedule.clone();
                report.model_panic = Some((scenario, msg.clone()));
            }
            Verdict::Clean => unreachable!(),
        }
        break;
    }
    report.elapsed = start.elapsed();
    report.corpus = corpus.len();
    report.features = corpus.features();
    report
}
