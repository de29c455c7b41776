//! Generate scenarios and run them until an oracle fails or the budget ends.

use crate::exec::{Outcome, ShuttleEngine, Verdict, run_input, run_shuttle};
use crate::scenario::generate::{GenOptions, decode_bytes};
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
    pub pct_depth: usize,
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
}

/// Run one scenario under an engine: (executions, first non-clean outcome).
pub fn explore(scenario: &Scenario, opts: &HuntOptions, seed: u64) -> (u64, Option<Outcome>) {
    let shuttle = match opts.engine {
        Engine::Input => {
            let o = run_input(scenario, false);
            return (1, (o.verdict != Verdict::Clean).then_some(o));
        }
        Engine::Random => ShuttleEngine::Random,
        Engine::Pct => ShuttleEngine::Pct {
            depth: opts.pct_depth,
        },
        Engine::Dfs => ShuttleEngine::Dfs,
    };
    let (n, o) = run_shuttle(scenario, shuttle, seed, opts.executions_per_scenario);
    (n as u64, o)
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
    };
    let mut bytes = Vec::new();
    while opts.iterations.is_none_or(|n| report.scenarios < n) && start.elapsed() < opts.time {
        bytes.resize(rng.gen_range(16..256usize), 0);
        rng.fill_bytes(&mut bytes);
        let mut scenario = decode_bytes(&bytes, &opts.generate);
        report.scenarios += 1;
        let (n, outcome) = explore(&scenario, opts, rng.next_u64());
        report.executions += n;
        let Some(outcome) = outcome else { continue };
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
    report
}
