//! Generate scenarios and run them until an oracle fails or the budget ends.

use super::corpus::{Corpus, Entry};
use super::mutate::{mutate, mutate_schedule};
use crate::exec::{Explored, Job, Observe, Outcome, Plan, Verdict, run_jobs};
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
    /// Interleavings a shuttle scheduler explores per generated scenario,
    /// at most (see [`SWARM_HALVINGS`]).
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

/// A scenario is a boost candidate while one of its features has been
/// reached by fewer executions than this: every feature, not only a new
/// one, gets some depth of exploration. A deep race's stepping stone (a
/// walker that met a folio HVO was remapping) is reached by few scenarios,
/// and each needs hundreds of PCT runs to place three preemptions.
const RARE_BUDGET: u64 = 5_000;

/// Boosts take at most this share of a hunt's executions. In a rich
/// feature space (the THP ops) nearly every scenario reaches some rare
/// feature; boosting them all spent 16 of every 17 executions on boosts,
/// so bugs that need the right ops more than the right schedule starved.
/// Under the cap the rarest candidates go first.
const BOOST_SHARE: (u64, u64) = (1, 2);

/// Boost candidates waiting for the share to allow them; beyond this the
/// least rare is dropped.
const BOOST_QUEUE: usize = 64;

/// A fresh scenario gets `executions_per_scenario / 2^k` interleavings, k
/// drawn from `0..=SWARM_HALVINGS` (1 to 32 of the default 32).
const SWARM_HALVINGS: u32 = 5;

/// The schedule of the execution that first reached the rarest of `rare`.
fn near_miss_schedule(explored: &Explored, rare: &[u64], corpus: &Corpus) -> Option<Vec<u8>> {
    let rarest = rare.iter().copied().min_by_key(|&f| corpus.hits(f))?;
    let i = explored.features.binary_search(&rarest).ok()?;
    let at = *explored.first_execution.get(i)? as usize;
    explored.schedules.get(at).cloned()
}

/// One input of a batch, and what became of it.
struct Pending {
    bytes: Vec<u8>,
    ops_prefix: Vec<u8>,
    scenario: Arc<Scenario>,
    /// A rerun with more interleavings, after a first exploration that
    /// reached a rarely explored feature.
    boost: bool,
}

/// A scenario owed a boost.
struct Candidate {
    pending: Pending,
    /// Its features that were rare when it was explored: the only ones
    /// that can still be its rarest, as hit counts only grow.
    rare: Vec<u64>,
}

impl Candidate {
    /// Executions that reached its rarest feature so far.
    fn rarity(&self, corpus: &Corpus) -> u64 {
        self.rare
            .iter()
            .map(|&f| corpus.hits(f))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// Boost candidates, the rarest first.
#[derive(Default)]
struct Boosts {
    queue: Vec<Candidate>,
}

impl Boosts {
    fn push(&mut self, c: Candidate, corpus: &Corpus) {
        self.queue.push(c);
        if self.queue.len() > BOOST_QUEUE {
            let i = self.rank(corpus).1;
            self.queue.remove(i);
        }
    }

    /// The rarest candidate that is still rare, oldest first among equals;
    /// drops the ones whose features other executions have since explored.
    fn pop(&mut self, corpus: &Corpus) -> Option<Pending> {
        self.queue.retain(|c| c.rarity(corpus) < RARE_BUDGET);
        if self.queue.is_empty() {
            return None;
        }
        let i = self.rank(corpus).0;
        Some(self.queue.remove(i).pending)
    }

    /// The indices of the rarest and the least rare candidates (the first
    /// of equals for the rarest, the last for the least rare).
    fn rank(&self, corpus: &Corpus) -> (usize, usize) {
        let (mut lo, mut hi) = ((u64::MAX, 0), (0, 0));
        for (i, c) in self.queue.iter().enumerate() {
            let r = c.rarity(corpus);
            if r < lo.0 {
                lo = (r, i);
            }
            if r >= hi.0 {
                hi = (r, i);
            }
        }
        (lo.1, hi.1)
    }
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
    boosts: Boosts,
    /// Executions boosts took.
    boosted: u64,
    pub report: HuntReport,
}

impl Hunter {
    pub fn new(opts: HuntOptions) -> Hunter {
        Hunter {
            rng: StdRng::seed_from_u64(opts.seed),
            corpus: Corpus::default(),
            boosts: Boosts::default(),
            boosted: 0,
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

    /// One batch: the rarest boosts owed while boosts are within their
    /// share, then fresh or mutated inputs. Returns the features it reached
    /// that no execution of this hunt had.
    pub fn batch(&mut self) -> usize {
        let opts = &self.opts;
        let report = &mut self.report;
        let room = opts
            .iterations
            .map_or(usize::MAX, |n| (n - report.scenarios) as usize);
        let size = batch_size(opts.engine).min(room);
        let mut batch = Vec::with_capacity(size);
        let mut boosted = self.boosted;
        while batch.len() < size
            && boosted * BOOST_SHARE.1 <= report.executions * BOOST_SHARE.0
            && let Some(p) = self.boosts.pop(&self.corpus)
        {
            // Counted ahead, so that one batch does not overshoot.
            boosted += (opts.executions_per_scenario * ENERGY) as u64;
            batch.push(p);
        }
        while batch.len() < size {
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
                let executions = if opts.engine == Engine::Input {
                    1
                } else if p.boost {
                    opts.executions_per_scenario * ENERGY
                } else {
                    // Swarm: 1/2^k of the interleavings, k drawn per
                    // scenario, so that bugs in the ops more than in the
                    // schedule see many op sequences, and some scenarios
                    // still get the full exploration.
                    (opts.executions_per_scenario >> self.rng.gen_range(0..=SWARM_HALVINGS)).max(1)
                };
                let j = job(p.scenario.clone(), opts, self.rng.next_u64(), executions);
                if p.boost { j.from_schedule() } else { j }
            })
            .collect();
        let mut new = 0;
        for (p, explored) in batch.into_iter().zip(run_jobs(jobs)) {
            report.scenarios += !p.boost as u64;
            report.executions += explored.executions as u64;
            if p.boost {
                self.boosted += explored.executions as u64;
            }
            report.steps += explored.steps;
            report.cpu_steps += explored.cpu_steps;
            report.cpus += (p.scenario.cpus.len() * explored.executions) as u64;
            let seen = self
                .corpus
                .observe(&explored.features, explored.executions as u64);
            new += seen;
            if let Some(outcome) = explored.failure {
                let bytes = (opts.engine == Engine::Input).then(|| p.bytes.clone());
                report_failure(report, &p.scenario, outcome, bytes);
                break;
            }
            // Energy: a scenario that reaches a feature few executions have
            // explored yet (a new one above all) may get a longer
            // exploration, as AFL gives productive seeds more runs; a boost
            // that found new features may get another.
            let rare: Vec<u64> = explored
                .features
                .iter()
                .copied()
                .filter(|&f| self.corpus.hits(f) < RARE_BUDGET)
                .collect();
            if opts.engine != Engine::Input && !rare.is_empty() && (!p.boost || seen > 0) {
                // The boost explores from cuts of the execution that first
                // reached the rarest of them: the preemptions a deep race
                // still needs are then placed after that point only.
                let scenario = match near_miss_schedule(&explored, &rare, &self.corpus) {
                    Some(schedule) => Arc::new(Scenario {
                        schedule,
                        ..(*p.scenario).clone()
                    }),
                    None => p.scenario.clone(),
                };
                let pending = Pending {
                    bytes: p.bytes.clone(),
                    ops_prefix: p.ops_prefix.clone(),
                    scenario,
                    boost: true,
                };
                self.boosts.push(Candidate { pending, rare }, &self.corpus);
            }
            if seen > 0 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;

    fn candidate(rare: &[u64], tag: u8) -> Candidate {
        let bytes = vec![tag; 32];
        let (scenario, ops_prefix) =
            decode_with_ops_prefix(&bytes, &GenOptions::with_config(Config::default()));
        Candidate {
            pending: Pending {
                bytes,
                ops_prefix,
                scenario: Arc::new(scenario),
                boost: true,
            },
            rare: rare.to_vec(),
        }
    }

    #[test]
    fn boosts_go_rarest_first_and_drop_what_others_explored() {
        let mut corpus = Corpus::default();
        corpus.observe(&[1], 10);
        corpus.observe(&[2], 100);
        corpus.observe(&[3], 1_000);
        let mut boosts = Boosts::default();
        for (rare, tag) in [(&[3][..], 3), (&[1], 1), (&[2, 3], 2)] {
            boosts.push(candidate(rare, tag), &corpus);
        }
        assert_eq!(boosts.pop(&corpus).unwrap().bytes[0], 1);
        // Feature 2 is explored enough now: its candidate is dropped; the
        // one reaching 3 stays.
        corpus.observe(&[2], RARE_BUDGET);
        corpus.observe(&[3], RARE_BUDGET);
        boosts.push(candidate(&[1], 4), &corpus);
        assert_eq!(boosts.pop(&corpus).unwrap().bytes[0], 4);
        assert!(boosts.pop(&corpus).is_none());
    }

    #[test]
    fn a_full_boost_queue_drops_its_least_rare() {
        let mut corpus = Corpus::default();
        let mut boosts = Boosts::default();
        for f in 0..=BOOST_QUEUE as u64 {
            corpus.observe(&[f], 1 + f);
            boosts.push(candidate(&[f], f as u8), &corpus);
        }
        let mut popped = Vec::new();
        while let Some(p) = boosts.pop(&corpus) {
            popped.push(p.bytes[0] as usize);
        }
        assert_eq!(popped, (0..BOOST_QUEUE).collect::<Vec<_>>());
    }

    #[test]
    fn boosts_stay_within_their_share_and_fresh_scenarios_draw_fewer_interleavings() {
        let mut opts = HuntOptions::new(Engine::Pct, GenOptions::with_config(Config::default()));
        opts.iterations = Some(400);
        opts.time = Duration::from_secs(600);
        let mut h = Hunter::new(opts);
        while !h.done() {
            h.batch();
        }
        assert!(h.report.finding.is_none(), "the fixed model is clean");
        let (total, boosted) = (h.report.executions, h.boosted);
        let one_boost = (32 * ENERGY) as u64;
        assert!(boosted > 0, "rare features were boosted");
        assert!(
            boosted * BOOST_SHARE.1 <= total * BOOST_SHARE.0 + one_boost,
            "{boosted} of {total} executions were boosts"
        );
        let fresh = (total - boosted) as f64 / h.report.scenarios as f64;
        assert!(
            (2.0..24.0).contains(&fresh),
            "a fresh scenario ran {fresh} interleavings on average"
        );
    }
}
