//! Generate scenarios and run them until an oracle fails or the budget ends.

use super::corpus::{Corpus, Entry};
use super::mutate::{mutate, mutate_schedule};
use crate::exec::{Job, Observe, Outcome, Plan, Verdict, run_jobs};
use crate::scenario::generate::{GenOptions, decode_with_ops_prefix};
use crate::scenario::{Expect, Scenario};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How interleavings are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
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
    /// The input bytes, when the input engine found it: under the hunt's
    /// generator options they decode to `scenario`, as a fuzz target's
    /// input does.
    pub bytes: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct HuntReport {
    pub engine: Engine,
    pub scenarios: u64,
    pub executions: u64,
    /// Model steps over every execution.
    pub steps: u64,
    /// Steps the CPUs took (not the setup's).
    pub cpu_steps: u64,
    /// CPUs over every execution (the mean is this over `executions`).
    pub cpus: u64,
    pub elapsed: Duration,
    pub finding: Option<Finding>,
    /// The model panicked: a harness bug, reported with its scenario.
    pub model_panic: Option<(Scenario, String)>,
    /// Inputs kept for reaching new coverage (guided hunts).
    pub corpus: usize,
    /// Distinct coverage features reached.
    pub features: usize,
    /// The observer stopped the hunt before its budget ran out.
    pub interrupted: bool,
}

/// The job that explores `scenario` under the hunt's engine.
pub fn job(scenario: Arc<Scenario>, opts: &HuntOptions, seed: u64, executions: usize) -> Job {
    let observe = Observe {
        coverage: opts.guided,
        conflicts: opts.guided && opts.engine != Engine::Input,
        ..Observe::default()
    };
    let plan = match opts.engine {
        Engine::Input => Plan::Replay,
        Engine::Random => Plan::Random { seed, executions },
        Engine::Pct => Plan::Pct {
            seed,
            depth: opts.pct_depth.unwrap_or_else(|| {
                let n = PCT_SWARM_DEPTHS.end() - PCT_SWARM_DEPTHS.start() + 1;
                PCT_SWARM_DEPTHS.start() + (seed >> 32) as usize % n
            }),
            executions,
        },
        Engine::Dfs => Plan::Dfs { executions },
    };
    Job::new(scenario, plan, observe)
}

/// Scenarios a batch explores in one shuttle run: many for the input
/// engine, whose job is one execution, few for the shuttle engines, whose
/// jobs have many.
fn batch_size(engine: Engine) -> usize {
    match engine {
        Engine::Input => 32,
        _ => 2,
    }
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

/// One input of a batch, and what became of it.
struct Pending {
    bytes: Vec<u8>,
    ops_prefix: Vec<u8>,
    scenario: Arc<Scenario>,
    /// A rerun with more interleavings, after a first exploration that
    /// reached a rarely explored feature.
    boost: bool,
}

/// The next input: fresh bytes, or a mutation of a kept one.
fn next_input(rng: &mut StdRng, corpus: &mut Corpus, opts: &HuntOptions) -> Vec<u8> {
    if !opts.guided || corpus.is_empty() || rng.gen_ratio(1, 8) {
        let mut fresh = vec![0; rng.gen_range(16..256usize)];
        rng.fill_bytes(&mut fresh);
        return fresh;
    }
    let other = corpus.any(rng);
    let a = corpus.pick(rng);
    let (a, other) = (&corpus[a], &corpus[other].bytes);
    if !rng.gen_bool(0.5) {
        return mutate(rng, &a.bytes, other);
    }
    if opts.engine != Engine::Input {
        // Same scenario, fresh interleavings from a new seed.
        return a.bytes.clone();
    }
    // Same ops, another interleaving: mostly an edit of the decisions the
    // entry's execution took.
    let mut m = a.ops_prefix.clone();
    m.extend(if rng.gen_ratio(3, 4) {
        mutate_schedule(rng, &a.schedule, a.nr_cpus)
    } else {
        let schedule = a.bytes.get(a.ops_prefix.len()..).unwrap_or(&[]);
        mutate(rng, schedule, &[])
    });
    m
}

/// What a hunt's observer wants after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop now (Ctrl-C): the report says so.
    Stop,
}

pub fn hunt(opts: &HuntOptions) -> HuntReport {
    hunt_with(opts, &mut |_| Flow::Continue)
}

/// [`hunt`], showing `observe` the report so far after every batch.
pub fn hunt_with(opts: &HuntOptions, observe: &mut dyn FnMut(&HuntReport) -> Flow) -> HuntReport {
    let start = Instant::now();
    let mut h = Hunter::new(opts.clone());
    while !h.done() && start.elapsed() < opts.time {
        h.batch();
        h.report.elapsed = start.elapsed();
        if observe(&h.report) == Flow::Stop {
            h.report.interrupted = true;
            break;
        }
    }
    h.report.elapsed = start.elapsed();
    h.report
}

/// A hunt that runs a batch at a time, so that a caller can share its
/// budget among hunts (the adaptive default).
pub struct Hunter {
    pub opts: HuntOptions,
    rng: StdRng,
    corpus: Corpus,
    boosts: Vec<Pending>,
    pub report: HuntReport,
}

impl Hunter {
    pub fn new(opts: HuntOptions) -> Hunter {
        Hunter {
            rng: StdRng::seed_from_u64(opts.seed),
            corpus: Corpus::default(),
            boosts: Vec::new(),
            report: HuntReport {
                engine: opts.engine,
                scenarios: 0,
                executions: 0,
                steps: 0,
                cpu_steps: 0,
                cpus: 0,
                elapsed: Duration::ZERO,
                finding: None,
                model_panic: None,
                corpus: 0,
                features: 0,
                interrupted: false,
            },
            opts,
        }
    }

    /// Found something, or ran its scenarios.
    pub fn done(&self) -> bool {
        self.report.finding.is_some()
            || self.report.model_panic.is_some()
            || self
                .opts
                .iterations
                .is_some_and(|n| self.report.scenarios >= n)
    }

    /// One batch: the boosts owed, then fresh or mutated inputs. Returns
    /// the features it reached that no execution of this hunt had.
    pub fn batch(&mut self) -> usize {
        let opts = &self.opts;
        let report = &mut self.report;
        let mut batch = std::mem::take(&mut self.boosts);
        let room = opts
            .iterations
            .map_or(usize::MAX, |n| (n - report.scenarios) as usize);
        while batch.len() < batch_size(opts.engine).min(room) {
            let bytes = next_input(&mut self.rng, &mut self.corpus, opts);
            let (scenario, ops_prefix) = decode_with_ops_prefix(&bytes, &opts.generate);
            batch.push(Pending {
                bytes,
                ops_prefix,
                scenario: Arc::new(scenario),
                boost: false,
            });
        }
        let jobs = batch
            .iter()
            .map(|p| {
                let executions = opts.executions_per_scenario * if p.boost { ENERGY } else { 1 };
                job(p.scenario.clone(), opts, self.rng.next_u64(), executions)
            })
            .collect();
        let mut new = 0;
        for (p, explored) in batch.into_iter().zip(run_jobs(jobs)) {
            report.scenarios += !p.boost as u64;
            report.executions += explored.executions as u64;
            report.steps += explored.steps;
            report.cpu_steps += explored.cpu_steps;
            report.cpus += (p.scenario.cpus.len() * explored.executions) as u64;
            let seen = self
                .corpus
                .observe(&explored.features, explored.executions as u64);
            new += seen.new;
            if let Some(outcome) = explored.failure {
                let bytes = (opts.engine == Engine::Input).then(|| p.bytes.clone());
                report_failure(report, &p.scenario, outcome, bytes);
                break;
            }
            // Energy: a scenario that reaches a feature few executions have
            // explored yet (a new one above all) gets a longer exploration,
            // as AFL gives productive seeds more runs.
            if !p.boost && opts.engine != Engine::Input && seen.least_explored < RARE_BUDGET {
                self.boosts.push(Pending {
                    bytes: p.bytes.clone(),
                    ops_prefix: p.ops_prefix.clone(),
                    scenario: p.scenario.clone(),
                    boost: true,
                });
            }
            if seen.new > 0 {
                self.corpus.add(Entry {
                    schedule: explored.replayed.map(|o| o.schedule).unwrap_or_default(),
                    nr_cpus: p.scenario.cpus.len() as u8,
                    bytes: p.bytes,
                    ops_prefix: p.ops_prefix,
                    features: explored.features,
                });
            }
        }
        report.corpus = self.corpus.len();
        report.features = self.corpus.features();
        new
    }
}

/// A failing outcome of `scenario`: a finding, or a model panic.
fn report_failure(
    report: &mut HuntReport,
    scenario: &Scenario,
    outcome: Outcome,
    bytes: Option<Vec<u8>>,
) {
    let mut scenario = scenario.clone();
    scenario.schedule = outcome.schedule.clone();
    match &outcome.verdict {
        Verdict::Violation(d) => {
            scenario.expect = Some(Expect::from(d));
            report.finding = Some(Finding {
                scenario,
                outcome,
                bytes,
            });
        }
        Verdict::ModelPanic(msg) => {
            report.model_panic = Some((scenario, msg.clone()));
        }
        Verdict::Clean => unreachable!("a failure is not clean"),
    }
}
