//! The default hunt: one budget spread over *arms* (an engine, a
//! subsystem's arm of op kinds, a CPU count), moved towards the arms that
//! keep finding new coverage, never starving one, on every core.
//!
//! Each arm is a [`Hunter`] with its own corpus. Workers (one per core)
//! take turns on arms in slices of a fixed number of executions; an arm's
//! reward is the new features its last slices found per execution (an
//! exponential moving average), and the next arm is drawn in proportion to
//! its reward plus a floor that keeps every arm in play. Memory size and
//! folio order vary per scenario within each arm (the decoder draws them).
//! With one worker the hunt is deterministic for a given seed.

use super::hunt::{Engine, Finding, Flow, HuntOptions, HuntReport, Hunter};
use crate::exec::guard;
use crate::model::config::PMD_PAGES;
use crate::model::subsystem::distinct_arms;
use crate::model::{Arch, Config, HvoMode, Subsystem, SubsystemSet};
use crate::scenario::Scenario;
use crate::scenario::generate::{GenOptions, OpFamily};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One arm: how its scenarios are generated and explored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm {
    pub engine: Engine,
    /// Where its scenarios' ops come from.
    pub ops: OpFamily,
    /// CPUs per scenario, at most (each scenario draws 2 up to this).
    pub cpus: usize,
    /// The HVO generation its machines run.
    pub hvo: HvoMode,
    /// The architecture its machines run.
    pub arch: Arch,
}

impl Arm {
    pub fn label(&self) -> String {
        format!(
            "{} / {} / {} CPUs / {} / {}",
            self.engine.name(),
            match self.ops {
                OpFamily::Any => "any".to_string(),
                OpFamily::Of(set) => set.arm_name(),
            },
            self.cpus,
            self.hvo.name(),
            self.arch
        )
    }
}

#[derive(Debug, Clone)]
pub struct AdaptiveOptions {
    pub config: Config,
    pub engines: Vec<Engine>,
    /// Op arms; every subsystem's arm and every op kind by default.
    pub op_arms: Vec<OpFamily>,
    pub cpus: Vec<usize>,
    /// HVO generations the op arms that drive HVO (the HVO subsystem's
    /// ops) each run as an arm of their own; other op arms run the
    /// configuration's.
    pub hvo_modes: Vec<HvoMode>,
    /// Architectures those op arms also run, each with the configuration's
    /// HVO generation, as arms of their own: break-before-make and LSE or
    /// LL/SC atomics on arm64, `lock cmpxchg` on x86.
    pub archs: Vec<Arch>,
    pub memory_blocks: (u8, u8),
    pub hugetlb_order: (u8, u8),
    /// Pages each VMA may grow by per scenario ([`GenOptions::vma_growth`]).
    pub vma_growth: u8,
    pub time: Duration,
    pub seed: u64,
    /// Parallel workers.
    pub jobs: usize,
    /// Executions per slice of an arm.
    pub slice: u64,
    /// Each arm stops after this many scenarios.
    pub iterations: Option<u64>,
    pub guided: bool,
    pub pct_depth: Option<usize>,
    pub executions_per_scenario: usize,
}

impl AdaptiveOptions {
    /// Every engine, every subsystem's arm and all ops together (those
    /// with the HVO subsystem's ops once per clean HVO generation, keep-1
    /// and keep-2), scenarios of 2-4 CPUs, two or three memory blocks (so
    /// that two hugetlb folios can be alive at once) and VMAs grown by up
    /// to a PMD each, one worker per core.
    pub fn new(config: Config, time: Duration, seed: u64) -> AdaptiveOptions {
        let mut op_arms: Vec<OpFamily> = distinct_arms().into_iter().map(OpFamily::Of).collect();
        op_arms.push(OpFamily::Of(SubsystemSet::all()));
        AdaptiveOptions {
            config,
            engines: Engine::ALL.to_vec(),
            op_arms,
            cpus: vec![4],
            // Not shared-tail: its design has a race of its own (the
            // `shared-tail-cmpxchg-ro-tail` corpus finding), which would
            // be all a default hunt finds; `--hvo-mode shared-tail` hunts it.
            hvo_modes: vec![HvoMode::Keep1, HvoMode::Keep2],
            archs: Arch::ALL.to_vec(),
            memory_blocks: (2, 3),
            hugetlb_order: (config.hugetlb_order, config.hugetlb_order),
            // A PMD more per VMA: VMAs that start past a PMD of their
            // neighbour's, and PMD sharing over two PUD ranges.
            vma_growth: PMD_PAGES as u8,
            time,
            seed,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            slice: 2048,
            iterations: None,
            guided: true,
            pct_depth: None,
            executions_per_scenario: 32,
        }
    }

    /// Every combination; fewer than workers are repeated (each copy with
    /// its own seed and corpus, as libFuzzer's jobs), so that every core
    /// hunts.
    pub fn arms(&self) -> Vec<Arm> {
        let mut arms = Vec::new();
        for &engine in &self.engines {
            for &ops in &self.op_arms {
                for &cpus in &self.cpus {
                    for (hvo, arch) in self.machines_of(ops) {
                        arms.push(Arm {
                            engine,
                            ops,
                            cpus,
                            hvo,
                            arch,
                        });
                    }
                }
            }
        }
        let distinct = arms.len();
        for i in distinct..self.jobs.max(1) {
            arms.push(arms[i % distinct]);
        }
        arms
    }

    /// The machines (HVO generation, architecture) op arm `ops` runs: the
    /// configuration's, then, when it has the HVO subsystem's ops, the rest
    /// of `hvo_modes` and of `archs`, one changed at a time.
    fn machines_of(&self, ops: OpFamily) -> Vec<(HvoMode, Arch)> {
        let drives_hvo = match ops {
            OpFamily::Any => true,
            OpFamily::Of(set) => set.has(Subsystem::Hvo),
        };
        let (hvo, arch) = (self.config.hvo_mode, self.config.arch);
        let mut machines = vec![(hvo, arch)];
        if drives_hvo {
            machines.extend(
                self.hvo_modes
                    .iter()
                    .filter(|&&m| m != hvo)
                    .map(|&m| (m, arch)),
            );
            machines.extend(self.archs.iter().filter(|&&a| a != arch).map(|&a| (hvo, a)));
        }
        machines
    }

    fn hunter(&self, i: usize, arm: Arm) -> Hunter {
        let config = Config {
            hvo_mode: arm.hvo,
            arch: arm.arch,
            ..self.config
        };
        let mut generate = GenOptions {
            max_cpus: arm.cpus,
            ops: arm.ops,
            ..GenOptions::with_config(config)
        };
        generate.memory_blocks = self.memory_blocks;
        generate.hugetlb_order = self.hugetlb_order;
        generate.vma_growth = self.vma_growth;
        let mut opts = HuntOptions::new(arm.engine, generate);
        // Arm 0 hunts with the seed itself, as a single-arm hunt always did.
        opts.seed = self.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        opts.time = Duration::MAX;
        opts.iterations = self.iterations;
        opts.guided = self.guided;
        opts.pct_depth = self.pct_depth;
        opts.executions_per_scenario = self.executions_per_scenario;
        Hunter::new(opts)
    }
}

/// One arm's share of the hunt.
#[derive(Debug, Clone)]
pub struct ArmReport {
    pub arm: Arm,
    pub report: HuntReport,
    pub slices: u64,
    /// Worker time its slices took.
    pub time: Duration,
}

#[derive(Debug, Clone)]
pub struct AdaptiveReport {
    pub arms: Vec<ArmReport>,
    /// The first violation, and the arm that found it.
    pub finding: Option<(Arm, Finding)>,
    pub model_panic: Option<(Arm, Scenario, String)>,
    pub elapsed: Duration,
    pub interrupted: bool,
}

impl AdaptiveReport {
    pub fn executions(&self) -> u64 {
        self.arms.iter().map(|a| a.report.executions).sum()
    }

    pub fn scenarios(&self) -> u64 {
        self.arms.iter().map(|a| a.report.scenarios).sum()
    }

    pub fn features(&self) -> usize {
        self.arms.iter().map(|a| a.report.features).sum()
    }
}

/// What the pick rule reads of an arm, kept apart from its [`Hunter`] so
/// that picking never waits for a slice another worker is running.
struct ArmStats {
    arm: Arm,
    slices: u64,
    /// Worker time its slices took.
    time: Duration,
    /// New features per execution, smoothed.
    reward: f64,
    busy: bool,
    /// Its hunter is done (found something, or ran its scenarios).
    done: bool,
    /// Its hunter's report after its last slice.
    report: HuntReport,
}

/// What the workers share: the pick rule's state, and whether to stop.
struct Shared {
    rng: StdRng,
    stats: Vec<ArmStats>,
    stop: bool,
    interrupted: bool,
}

/// Each arm's share of its op family: the machines (HVO generations,
/// architectures) an op family runs on split that family's budget, so that
/// configuring more of them does not crowd out the other subsystems.
fn family_shares(arms: &[Arm]) -> Vec<f64> {
    arms.iter()
        .map(|a| {
            let machines = arms
                .iter()
                .filter(|b| b.engine == a.engine && b.ops == a.ops && b.cpus == a.cpus)
                .count();
            1.0 / machines as f64
        })
        .collect()
}

/// The pick rule: in proportion to reward, plus a floor (a share of the
/// best reward, and a constant while nothing has rewards) so that every
/// arm keeps being tried; each weighted by its share of its op family.
fn pick(arms: &[ArmStats], shares: &[f64], rng: &mut StdRng) -> Option<usize> {
    let rewards: Vec<Option<f64>> = arms
        .iter()
        .map(|a| {
            (!a.busy && !a.done).then_some(if a.slices == 0 {
                f64::INFINITY
            } else {
                a.reward
            })
        })
        .collect();
    // Every arm once first, in order.
    if let Some(i) = rewards.iter().position(|r| *r == Some(f64::INFINITY)) {
        return Some(i);
    }
    let best = rewards.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
    let floor = best / (2.0 * arms.len() as f64) + 1e-6;
    let weights: Vec<f64> = rewards
        .iter()
        .zip(shares)
        .map(|(r, share)| r.map_or(0.0, |r| (r + floor) * share))
        .collect();
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = rng.gen_range(0.0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return Some(i);
        }
        x -= w;
    }
    weights.iter().rposition(|w| *w > 0.0)
}

/// What a worker's slice of an arm found.
struct Slice {
    executions: u64,
    new: usize,
}

fn run_slice(h: &mut Hunter, executions: u64) -> Slice {
    let before = h.report.executions;
    let mut new = 0;
    while !h.done() && h.report.executions - before < executions {
        new += h.batch();
    }
    Slice {
        executions: h.report.executions - before,
        new,
    }
}

/// Run the adaptive hunt; `observe` sees every arm's report after each
/// slice, and may stop the hunt.
pub fn adaptive_hunt(
    opts: &AdaptiveOptions,
    observe: &mut (dyn FnMut(&[ArmReport]) -> Flow + Send),
) -> AdaptiveReport {
    let start = Instant::now();
    let arm_list = opts.arms();
    let shares = family_shares(&arm_list);
    let hunters: Vec<Mutex<Hunter>> = arm_list
        .iter()
        .enumerate()
        .map(|(i, &arm)| Mutex::new(opts.hunter(i, arm)))
        .collect();
    let stats = hunters
        .iter()
        .zip(&arm_list)
        .map(|(h, &arm)| ArmStats {
            arm,
            slices: 0,
            time: Duration::ZERO,
            reward: 0.0,
            busy: false,
            done: false,
            report: guard(h).report.clone(),
        })
        .collect();
    let shared = Mutex::new(Shared {
        rng: StdRng::seed_from_u64(opts.seed),
        stats,
        stop: false,
        interrupted: false,
    });
    let observe = Mutex::new(observe);
    let snapshot = |stats: &[ArmStats]| -> Vec<ArmReport> {
        stats
            .iter()
            .map(|a| {
                let mut report = a.report.clone();
                report.elapsed = start.elapsed();
                ArmReport {
                    arm: a.arm,
                    report,
                    slices: a.slices,
                    time: a.time,
                }
            })
            .collect()
    };
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1) {
            scope.spawn(|| {
                crate::exec::quiet_shuttle_panics();
                loop {
                    let i = {
                        let mut s = guard(&shared);
                        if s.stop || start.elapsed() >= opts.time {
                            return;
                        }
                        let s = &mut *s;
                        let Some(i) = pick(&s.stats, &shares, &mut s.rng) else {
                            return;
                        };
                        s.stats[i].busy = true;
                        i
                    };
                    // Only this worker runs arm i until it is not busy.
                    let (slice, took, report, done) = {
                        let mut h = guard(&hunters[i]);
                        let began = Instant::now();
                        let slice = run_slice(&mut h, opts.slice);
                        (slice, began.elapsed(), h.report.clone(), h.done())
                    };
                    let rate = slice.new as f64 / slice.executions.max(1) as f64;
                    let reports = {
                        let mut s = guard(&shared);
                        let a = &mut s.stats[i];
                        a.reward = if a.slices == 0 {
                            rate
                        } else {
                            0.7 * a.reward + 0.3 * rate
                        };
                        a.slices += 1;
                        a.time += took;
                        a.busy = false;
                        a.done = done;
                        let found = report.finding.is_some() || report.model_panic.is_some();
                        a.report = report;
                        if found {
                            s.stop = true;
                        }
                        snapshot(&s.stats)
                    };
                    if (guard(&observe))(&reports) == Flow::Stop {
                        let mut s = guard(&shared);
                        s.stop = true;
                        s.interrupted = true;
                    }
                }
            });
        }
    });
    let s = guard(&shared);
    let reports = snapshot(&s.stats);
    let finding = reports
        .iter()
        .find_map(|a| a.report.finding.clone().map(|f| (a.arm, f)));
    let model_panic = reports
        .iter()
        .find_map(|a| a.report.model_panic.clone().map(|(s, m)| (a.arm, s, m)));
    AdaptiveReport {
        arms: reports,
        finding,
        model_panic,
        elapsed: start.elapsed(),
        interrupted: s.interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machines(a: &AdaptiveOptions, ops: &[Subsystem]) -> Vec<(HvoMode, Arch)> {
        a.machines_of(OpFamily::Of(SubsystemSet::of(ops)))
    }

    #[test]
    fn hvo_arms_run_each_generation_and_architecture_one_change_at_a_time() {
        let a = AdaptiveOptions::new(Config::default(), Duration::from_secs(1), 0);

        assert_eq!(
            machines(&a, &[Subsystem::Hvo]),
            [
                (HvoMode::Keep1, Arch::X86),
                (HvoMode::Keep2, Arch::X86),
                (HvoMode::Keep1, Arch::Arm64),
                (HvoMode::Keep1, Arch::Arm64Llsc),
            ]
        );
        assert_eq!(
            machines(&a, &[Subsystem::PmdShare]),
            [(HvoMode::Keep1, Arch::X86)]
        );
    }
}
