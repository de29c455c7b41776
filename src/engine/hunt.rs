//! Generate scenarios and run them until an oracle fails or the budget ends.

use crate::exec::{Outcome, ShuttleEngine, Verdict, explore_shuttle, run_input, run_input_covered};
use crate::scenario::generate::{GenOptions, decode_with_schedule_offset};
use crate::scenario::{Expect, Scenario};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::HashSet;
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
    pub pct_depth: usize,
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
            pct_depth: 3,
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

/// What running one scenario under an engine produced.
pub struct Explored {
    pub executions: u64,
    /// The first non-clean outcome.
    pub failure: Option<Outcome>,
    pub features: Vec<u64>,
}

/// Run one scenario under an engine.
pub fn explore(scenario: &Scenario, opts: &HuntOptions, seed: u64) -> Explored {
    let shuttle = match opts.engine {
        Engine::Input => {
            let o = if opts.guided {
                run_input_covered(scenario)
            } else {
                run_input(scenario, false)
            };
            let features = o.features.clone();
            return Explored {
                executions: 1,
                failure: (o.verdict != Verdict::Clean).then_some(o),
                features,
            };
        }
        Engine::Random => ShuttleEngine::Random,
        Engine::Pct => ShuttleEngine::Pct {
            depth: opts.pct_depth,
        },
        Engine::Dfs => ShuttleEngine::Dfs,
    };
    let e = explore_shuttle(
        scenario,
        shuttle,
        seed,
        opts.executions_per_scenario,
        opts.guided,
    );
    Explored {
        executions: e.executions as u64,
        failure: e.failure,
        features: e.features,
    }
}

/// How many times the usual interleavings a new corpus entry gets.
const ENERGY: usize = 16;

/// Longest input the guided search builds.
const MAX_INPUT: usize = 512;

/// A libFuzzer-style byte mutation of `base`, sometimes spliced with
/// `other`. Any bytes decode to a valid scenario.
fn mutate(rng: &mut StdRng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    if b.is_empty() {
        b.push(0);
    }
    for _ in 0..rng.gen_range(1..=4) {
        let pos = rng.gen_range(0..b.len());
        match rng.gen_range(0..7) {
            0 => b[pos] ^= 1 << rng.gen_range(0..8),
            1 => b[pos] = rng.r#gen(),
            2 => b[pos] = [0, 1, 2, 0x3f, 0x7f, 0x80, 0xff][rng.gen_range(0..7)],
            3 => {
                let n = rng.gen_range(1..=8);
                let ins: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
                b.splice(pos..pos, ins);
            }
            4 => {
                let end = (pos + rng.gen_range(1..=8)).min(b.len());
                if end - pos < b.len() {
                    b.drain(pos..end);
                }
            }
            5 => {
                let end = (pos + rng.gen_range(1..=16)).min(b.len());
                let chunk = b[pos..end].to_vec();
                let at = rng.gen_range(0..=b.len());
                b.splice(at..at, chunk);
            }
            _ => {
                if !other.is_empty() {
                    let from = rng.gen_range(0..other.len());
                    b.truncate(pos);
                    b.extend_from_slice(&other[from..]);
                }
            }
        }
        if b.is_empty() {
            b.push(0);
        }
    }
    b.truncate(MAX_INPUT);
    b
}

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
    // Inputs that reached new coverage, with where their schedule begins.
    let mut corpus: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut seen: HashSet<u64> = HashSet::new();
    while opts.iterations.is_none_or(|n| report.scenarios < n) && start.elapsed() < opts.time {
        let bytes = if !opts.guided || corpus.is_empty() || rng.gen_ratio(1, 8) {
            let mut fresh = vec![0; rng.gen_range(16..256usize)];
            rng.fill_bytes(&mut fresh);
            fresh
        } else {
            let (a, a_sched) = &corpus[rng.gen_range(0..corpus.len())];
            let (b, _) = &corpus[rng.gen_range(0..corpus.len())];
            if opts.engine == Engine::Input && rng.gen_bool(0.5) {
                // Same ops, another interleaving.
                let mut m = a[..*a_sched].to_vec();
                m.extend(mutate(&mut rng, &a[*a_sched..], &b[..0]));
                m
            } else {
                mutate(&mut rng, a, b)
            }
        };
        let (mut scenario, sched_offset) = decode_with_schedule_offset(&bytes, &opts.generate);
        report.scenarios += 1;
        let explored = explore(&scenario, opts, rng.next_u64());
        report.executions += explored.executions;
        let new = explored
            .features
            .iter()
            .filter(|f| seen.insert(**f))
            .count();
        let mut failure = explored.failure;
        if new > 0 {
            corpus.push((bytes, sched_offset));
            // Energy: a scenario that reached new interleavings gets a
            // longer exploration, as AFL gives productive seeds more runs.
            if failure.is_none() && opts.engine != Engine::Input {
                let boost = HuntOptions {
                    executions_per_scenario: opts.executions_per_scenario * ENERGY,
                    ..opts.clone()
                };
                let e = explore(&scenario, &boost, rng.next_u64());
                report.executions += e.executions;
                seen.extend(e.features);
                failure = e.failure;
            }
        }
        let Some(outcome) = failure else {
            continue;
        };
        match &outcome.verdict {
            Verdict::Violation(d) => {
                scenario.schedule = outcome.schedule.clone();
                scenario.expect = Some(Expect {
                    oracle: d.violation.oracle,
                    func: d.func.to_string(),
                });
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
    report.features = seen.len();
    report
}
