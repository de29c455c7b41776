//! Shrink a failing scenario while it keeps failing the same oracle:
//! fewer CPUs, fewer ops (one at a time, then pairs that only matter
//! together, such as `fail_next_allocs` and the allocation it fails),
//! smaller field values, and a shorter schedule with fewer context
//! switches. Every candidate is replayed with the input scheduler; one
//! whose old schedule no longer lines up gets a short PCT search for a new
//! one. With the ops fixed, a last pass searches schedules for one that
//! fails at an earlier step. The result never fails later than the input
//! did: if the smallest scenario only fails later, minimization starts
//! again from the input with the input's step as a bound.

use crate::exec::{Plan, run_input, run_shuttle};
use crate::model::Oracle;
use crate::model::op::Role;
use crate::scenario::{Expect, Scenario};
use std::time::{Duration, Instant};

/// Candidates tried per minimization at most.
const MAX_RUNS: usize = 20_000;
/// Interleavings a schedule search may spend on one smaller scenario, per
/// PCT depth in `RESCHEDULE_DEPTHS`.
const RESCHEDULE_EXECUTIONS: usize = 256;
const RESCHEDULE_DEPTHS: [usize; 3] = [3, 2, 4];
/// The last pass's search for an earlier failure: rounds of PCT at each
/// depth (and a random run), `STEP_SEARCH_EXECUTIONS` interleavings each.
const STEP_SEARCH_ROUNDS: u64 = 6;
const STEP_SEARCH_DEPTHS: [usize; 3] = [2, 3, 4];
const STEP_SEARCH_EXECUTIONS: usize = 128;

struct Shrinker {
    target: Oracle,
    runs: usize,
    deadline: Instant,
    /// A candidate must fail by this step (the input's, in the bounded
    /// pass).
    step_limit: u32,
    /// The step at which the current best fails.
    best_step: u32,
}

impl Shrinker {
    fn exhausted(&self) -> bool {
        self.runs >= MAX_RUNS || Instant::now() >= self.deadline
    }

    /// The step at which `c` fails the target oracle, within the step
    /// limit; if it does, record its verdict.
    fn fails(&mut self, c: &mut Scenario) -> Option<u32> {
        if self.exhausted() {
            return None;
        }
        self.runs += 1;
        let o = run_input(c, false);
        match o.violation() {
            Some(d) if d.violation.oracle == self.target && d.step <= self.step_limit => {
                c.expect = Some(Expect::from(d));
                // Keep only the decisions the execution used.
                c.schedule.truncate(o.schedule.len());
                Some(d.step)
            }
            _ => None,
        }
    }

    /// Replace `best` by `cand` if it fails, and, with as many ops, no
    /// later (fewer ops may take more steps; the last pass and the bound
    /// see to that).
    fn try_replace(&mut self, best: &mut Scenario, mut cand: Scenario) -> bool {
        match self.fails(&mut cand) {
            Some(step) if cand.op_count() < best.op_count() || step <= self.best_step => {
                self.best_step = step;
                *best = cand;
                true
            }
            _ => false,
        }
    }

    /// Replace `best` by `cand` if it fails at an earlier step.
    fn try_earlier(&mut self, best: &mut Scenario, mut cand: Scenario) -> bool {
        match self.fails(&mut cand) {
            Some(step) if step < self.best_step => {
                self.best_step = step;
                *best = cand;
                true
            }
            _ => false,
        }
    }

    /// For a candidate with fewer ops, the old schedule lands on other
    /// steps: if replaying it does not fail, look for a schedule that does
    /// with a short PCT search, and keep the one it records.
    fn try_replace_rescheduled(&mut self, best: &mut Scenario, cand: Scenario) -> bool {
        if self.try_replace(best, cand.clone()) {
            return true;
        }
        if self.exhausted() {
            return false;
        }
        let (runs, schedule) = find_schedule(&cand, self.target, self.runs as u64);
        self.runs += runs;
        match schedule {
            Some(schedule) => {
                let mut c = cand;
                c.schedule = schedule;
                self.try_replace(best, c)
            }
            None => false,
        }
    }
}

/// A schedule on which `s` fails `target`, by a short PCT search for races
/// of one, two and three ordered preemptions (seeded by `seed`), and the
/// executions it took.
pub fn find_schedule(s: &Scenario, target: Oracle, seed: u64) -> (usize, Option<Vec<u8>>) {
    if s.cpus.len() < 2 {
        return (0, None);
    }
    let mut runs = 0;
    for depth in RESCHEDULE_DEPTHS {
        let (n, found) = run_shuttle(
            s,
            Plan::Pct {
                seed: seed.wrapping_add(runs as u64),
                depth,
                executions: RESCHEDULE_EXECUTIONS,
            },
        );
        runs += n;
        if let Some(o) = found.filter(|o| o.oracle() == Some(target)) {
            return (runs, Some(o.schedule));
        }
    }
    (runs, None)
}

fn without_cpu(s: &Scenario, cpu: usize) -> Scenario {
    let mut c = s.clone();
    c.cpus.remove(cpu);
    c.schedule = s
        .schedule
        .iter()
        .filter(|&&x| x as usize != cpu)
        .map(|&x| if x as usize > cpu { x - 1 } else { x })
        .collect();
    c
}

/// Each op list as (None = setup, Some(i) = CPU i).
fn op_lists(s: &Scenario) -> Vec<Option<usize>> {
    std::iter::once(None)
        .chain((0..s.cpus.len()).map(Some))
        .collect()
}

fn list_mut(s: &mut Scenario, which: Option<usize>) -> &mut Vec<crate::scenario::Op> {
    match which {
        None => &mut s.setup,
        Some(i) => &mut s.cpus[i],
    }
}

/// Every op as (list, index).
fn op_slots(s: &Scenario) -> Vec<(Option<usize>, usize)> {
    op_lists(s)
        .into_iter()
        .flat_map(|w| {
            let n = match w {
                None => s.setup.len(),
                Some(c) => s.cpus[c].len(),
            };
            (0..n).map(move |i| (w, i))
        })
        .collect()
}

/// `s` without the ops at `slots` (removed from the end, so indexes hold).
fn without_ops(s: &Scenario, slots: &[(Option<usize>, usize)]) -> Scenario {
    let mut c = s.clone();
    let mut sorted = slots.to_vec();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.1));
    for (w, i) in sorted {
        let list = list_mut(&mut c, w);
        if i < list.len() {
            list.remove(i);
        }
    }
    c
}

fn shrink_cpus(sh: &mut Shrinker, best: &mut Scenario) -> bool {
    let mut progress = false;
    let mut cpu = best.cpus.len();
    while cpu > 0 && best.cpus.len() > 1 {
        cpu -= 1;
        if cpu < best.cpus.len() {
            progress |= sh.try_replace_rescheduled(best, without_cpu(best, cpu));
        }
    }
    progress
}

/// Single ops, last first; then, if none could go, pairs.
fn shrink_ops(sh: &mut Shrinker, best: &mut Scenario) -> bool {
    let mut progress = false;
    for slot in op_slots(best).into_iter().rev() {
        if sh.exhausted() {
            return progress;
        }
        if op_slots(best).contains(&slot) {
            progress |= sh.try_replace_rescheduled(best, without_ops(best, &[slot]));
        }
    }
    if progress {
        return true;
    }
    let slots = op_slots(best);
    for a in 0..slots.len() {
        for b in a + 1..slots.len() {
            if sh.exhausted() {
                return false;
            }
            if sh.try_replace_rescheduled(best, without_ops(best, &[slots[a], slots[b]])) {
                return true;
            }
        }
    }
    false
}

/// Lower each field: to a smaller value another op already uses for the
/// same role (fewer distinct numbers), or to its role's least value (not
/// for pfns: a hint that is not free means "any page", a different
/// allocation).
fn lower_numbers(sh: &mut Shrinker, best: &mut Scenario) -> bool {
    let mut progress = false;
    for (w, i) in op_slots(best) {
        let op = list_mut(best, w)[i].clone();
        let kind = op.kind();
        for (f, &role) in kind.roles().iter().enumerate() {
            let value = op.values()[f];
            let least = *role.range(&best.config).0.start();
            let mut candidates: Vec<u32> = best
                .ops()
                .filter(|(_, o)| o.kind() != kind || **o != op)
                .flat_map(|(_, o)| {
                    o.kind()
                        .roles()
                        .iter()
                        .zip(o.values())
                        .filter(|(r, _)| **r == role)
                        .map(|(_, v)| v)
                        .collect::<Vec<_>>()
                })
                .filter(|&v| v < value)
                .collect();
            if role != Role::Pfn {
                candidates.push(least);
            }
            candidates.sort_unstable();
            candidates.dedup();
            for v in candidates.into_iter().filter(|&v| v < value) {
                if sh.exhausted() {
                    return progress;
                }
                let cur = list_mut(best, w)[i].clone();
                let mut values = cur.values();
                if values[f] <= v {
                    break;
                }
                values[f] = v;
                let mut c = best.clone();
                list_mut(&mut c, w)[i] = kind.with(&values);
                if sh.try_replace_rescheduled(best, c) {
                    progress = true;
                    break;
                }
            }
        }
    }
    progress
}

/// The schedule: chop the tail, then drop single choices, then make a
/// choice repeat its predecessor (one context switch fewer).
fn shrink_schedule(sh: &mut Shrinker, best: &mut Scenario) -> bool {
    let mut progress = false;
    let mut chunk = best.schedule.len().div_ceil(2);
    while chunk > 0 && !sh.exhausted() {
        let mut c = best.clone();
        let keep = c.schedule.len().saturating_sub(chunk);
        c.schedule.truncate(keep);
        if c.schedule.len() < best.schedule.len() && sh.try_replace(best, c) {
            progress = true;
        } else {
            chunk /= 2;
        }
    }
    let mut i = best.schedule.len();
    while i > 0 {
        i -= 1;
        if i >= best.schedule.len() {
            continue;
        }
        let mut c = best.clone();
        c.schedule.remove(i);
        progress |= sh.try_replace(best, c);
    }
    for i in 1..best.schedule.len() {
        if i < best.schedule.len() && best.schedule[i] != best.schedule[i - 1] {
            let mut c = best.clone();
            c.schedule[i] = c.schedule[i - 1];
            progress |= sh.try_replace(best, c);
        }
    }
    progress
}

/// With the ops fixed, an earlier failure: interleavings shuttle's PCT
/// (at a few depths) and random schedulers find, and single-decision
/// edits of the failing schedule (a decision dropped, or given to another
/// CPU, which may then run on), each kept when the oracle fires at an
/// earlier step.
fn shorten_steps(sh: &mut Shrinker, best: &mut Scenario) {
    let nr_cpus = best.cpus.len();
    if nr_cpus < 2 || sh.exhausted() {
        return;
    }
    // Every decision the failing run took, so that each can be edited.
    sh.runs += 1;
    best.schedule = run_input(best, false).schedule;
    for round in 0..STEP_SEARCH_ROUNDS {
        let plans = STEP_SEARCH_DEPTHS
            .iter()
            .map(|&depth| Plan::Pct {
                seed: round * 16 + depth as u64,
                depth,
                executions: STEP_SEARCH_EXECUTIONS,
            })
            .chain([Plan::Random {
                seed: round,
                executions: STEP_SEARCH_EXECUTIONS,
            }]);
        for plan in plans {
            if sh.exhausted() {
                return;
            }
            let (n, found) = run_shuttle(best, plan);
            sh.runs += n;
            if let Some(o) = found.filter(|o| {
                o.violation()
                    .is_some_and(|d| d.violation.oracle == sh.target && d.step < sh.best_step)
            }) {
                let mut c = best.clone();
                c.schedule = o.schedule;
                sh.try_earlier(best, c);
            }
        }
    }
    let mut progress = true;
    while progress && !sh.exhausted() {
        progress = false;
        let mut i = 0;
        while i < best.schedule.len() && !sh.exhausted() {
            let mut c = best.clone();
            c.schedule.remove(i);
            if sh.try_earlier(best, c) {
                progress = true;
                continue;
            }
            // Decision i to another CPU, then the rest as before; or that
            // CPU running on from there (the schedule cut after it).
            for cpu in 0..nr_cpus as u8 {
                for cut in [false, true] {
                    if i < best.schedule.len() && best.schedule[i] != cpu {
                        let mut c = best.clone();
                        c.schedule[i] = cpu;
                        if cut {
                            c.schedule.truncate(i + 1);
                        }
                        progress |= sh.try_earlier(best, c);
                    }
                }
            }
            i += 1;
        }
    }
}

/// Structure first; numbers only once no CPU or op can go.
fn one_pass(sh: &mut Shrinker, best: &mut Scenario) -> bool {
    let mut progress = shrink_cpus(sh, best);
    progress |= shrink_ops(sh, best);
    if !progress {
        progress |= lower_numbers(sh, best);
    }
    progress |= shrink_schedule(sh, best);
    progress
}

/// Shrink from `s` until the deadline, a pass makes no progress, or the
/// runs run out; then the last pass. `None` if `s` does not fail.
fn shrink_from(sh: &mut Shrinker, s: &Scenario) -> Option<Scenario> {
    let mut best = s.clone();
    sh.best_step = sh.fails(&mut best)?;
    while one_pass(sh, &mut best) && !sh.exhausted() {}
    shorten_steps(sh, &mut best);
    // The fewest decisions that fail as early.
    shrink_schedule(sh, &mut best);
    Some(best)
}

/// Minimize `s`, which must fail `target` when replayed. Returns the
/// smallest failing scenario found within `time`: fewest ops, then the
/// earliest failure, and never one failing later than `s` does (see the
/// module's doc).
pub fn minimize(s: &Scenario, target: Oracle, time: Duration) -> Scenario {
    let start = Instant::now();
    let mut sh = Shrinker {
        target,
        runs: 0,
        // Two thirds of the time, the rest kept for the bounded pass.
        deadline: start + time * 2 / 3,
        step_limit: u32::MAX,
        best_step: u32::MAX,
    };
    let Some(first) = shrink_from(&mut sh, s) else {
        return s.clone();
    };
    let input_step = run_input(s, false).violation().map_or(u32::MAX, |d| d.step);
    if sh.best_step <= input_step {
        return first;
    }
    let mut bounded = Shrinker {
        target,
        runs: 0,
        deadline: start + time,
        step_limit: input_step,
        best_step: u32::MAX,
    };
    shrink_from(&mut bounded, s).unwrap_or_else(|| s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::op::{Count, Index, PfnArg};
    use crate::model::{Config, Op, Variant, VariantSet};

    /// `hvo-restore-fail-frees`: shrinking the pool while the vmemmap
    /// restore cannot allocate frees the folio through its read-only
    /// struct pages. Around the three ops that matter (on CPU 1),
    /// page-cache traffic and a pfn walk that have nothing to do with it,
    /// one CPU of them (CPU 0).
    fn restore_fail_frees_with_noise() -> Scenario {
        let config = Config {
            variants: VariantSet::new(&[Variant::HvoRestoreFailFrees]),
            ..Config::default()
        };
        let setup = vec![
            Op::FilemapAddFolio {
                index: Index(2),
                pfn_hint: PfnArg(300),
            },
            Op::AllocPoolHugeFolio {
                pfn_hint: PfnArg(512),
            },
        ];
        let cpu0 = vec![
            Op::FilemapGetFolio { index: Index(2) },
            Op::PfnWalk { pfn: PfnArg(40) },
        ];
        let cpu1 = vec![
            Op::FilemapAddFolio {
                index: Index(0),
                pfn_hint: PfnArg(100),
            },
            Op::FilemapGetFolio { index: Index(2) },
            Op::FailNextAllocs { count: Count(1) },
            Op::ShrinkHugePool {},
            Op::TruncateInodeFolio { index: Index(0) },
        ];
        Scenario::new(config, setup, vec![cpu0, cpu1])
    }

    #[test]
    fn minimize_drops_the_ops_and_cpus_the_violation_does_not_need() {
        let s = restore_fail_frees_with_noise();
        s.validate().unwrap();
        let before = run_input(&s, false);
        assert_eq!(
            before.oracle(),
            Some(Oracle::BadPage),
            "{:?}",
            before.verdict
        );

        let min = minimize(&s, Oracle::BadPage, Duration::from_secs(60));

        assert_eq!(
            min.setup,
            [Op::AllocPoolHugeFolio {
                pfn_hint: PfnArg(512)
            }]
        );
        assert_eq!(
            min.cpus,
            [vec![
                Op::FailNextAllocs { count: Count(1) },
                Op::ShrinkHugePool {}
            ]]
        );
        assert!(min.schedule.is_empty(), "one CPU makes no decisions");
        let expect = min.expect.as_ref().expect("minimize records the verdict");
        assert_eq!(expect.oracle, Oracle::BadPage);
        // The minimized scenario replays to the same violation.
        let after = run_input(&min, false);
        let d = after.violation().expect("still fails");
        assert!(expect.matches(d), "{d:?}");
        assert!(min.op_count() < s.op_count());
    }

    /// With the ops fixed, the last pass finds a schedule on which the
    /// violation comes earlier: the empty schedule runs CPU 0's noise
    /// first, CPU 1 can fail without waiting for it.
    #[test]
    fn the_last_pass_finds_an_earlier_failure_with_the_same_ops() {
        let s = restore_fail_frees_with_noise();
        let before = run_input(&s, false).violation().expect("fails").step;
        let mut sh = Shrinker {
            target: Oracle::BadPage,
            runs: 0,
            deadline: Instant::now() + Duration::from_secs(60),
            step_limit: u32::MAX,
            best_step: before,
        };
        let mut best = s.clone();
        shorten_steps(&mut sh, &mut best);
        let after = run_input(&best, false);
        let d = after.violation().expect("still fails");
        assert_eq!(d.violation.oracle, Oracle::BadPage);
        assert_eq!((&best.setup, &best.cpus), (&s.setup, &s.cpus));
        assert!(d.step < before, "step {} not before {before}", d.step);
        assert_eq!(d.step, sh.best_step);
        // minimize as a whole never fails later than its input.
        let min = minimize(&s, Oracle::BadPage, Duration::from_secs(20));
        let m = run_input(&min, false);
        assert!(m.violation().expect("fails").step <= before);
    }

    #[test]
    fn minimize_returns_a_scenario_that_does_not_fail_unchanged() {
        let mut s = restore_fail_frees_with_noise();
        s.config.variants = VariantSet::default();
        assert_eq!(run_input(&s, false).oracle(), None);

        let min = minimize(&s, Oracle::BadPage, Duration::from_secs(10));

        assert_eq!(min, s);
    }
}
