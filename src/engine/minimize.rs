//! Shrink a failing scenario while it keeps failing the same oracle:
//! fewer CPUs, fewer ops, a shorter schedule with fewer context switches.
//! Every candidate is replayed with the input scheduler.

use crate::exec::{Plan, run_input, run_shuttle};
use crate::model::Oracle;
use crate::scenario::{Expect, Scenario};
use std::time::{Duration, Instant};

/// Candidates tried per minimization at most.
const MAX_RUNS: usize = 20_000;
/// Interleavings a schedule search may spend on one smaller scenario, per
/// PCT depth in `RESCHEDULE_DEPTHS`.
const RESCHEDULE_EXECUTIONS: usize = 256;
const RESCHEDULE_DEPTHS: [usize; 3] = [3, 2, 4];

struct Shrinker {
    target: Oracle,
    runs: usize,
    deadline: Instant,
}

impl Shrinker {
    fn exhausted(&self) -> bool {
        self.runs >= MAX_RUNS || Instant::now() >= self.deadline
    }

    /// Does `c` still fail the target oracle? If so, record its verdict.
    fn fails(&mut self, c: &mut Scenario) -> bool {
        if self.exhausted() {
            return false;
        }
        self.runs += 1;
        let o = run_input(c, false);
        match o.violation() {
            Some(d) if d.violation.oracle == self.target => {
                c.expect = Some(Expect::from(d));
                // Keep only the decisions the execution used.
                c.schedule.truncate(o.schedule.len());
                true
            }
            _ => false,
        }
    }

    fn try_replace(&mut self, best: &mut Scenario, mut cand: Scenario) -> bool {
        if self.fails(&mut cand) {
            *best = cand;
            true
        } else {
            false
        }
    }

    /// For a candidate with fewer ops, the old schedule lands on other
    /// steps: if replaying it does not fail, look for a schedule that does
    /// with a short PCT search, and keep the one it records.
    fn try_replace_rescheduled(&mut self, best: &mut Scenario, cand: Scenario) -> bool {
        if self.try_replace(best, cand.clone()) {
            return true;
        }
        if cand.cpus.len() < 2 || self.exhausted() {
            return false;
        }
        // Races of one, two and three ordered preemptions.
        for depth in RESCHEDULE_DEPTHS {
            if self.exhausted() {
                return false;
            }
            let seed = self.runs as u64;
            let (n, found) = run_shuttle(
                &cand,
                Plan::Pct {
                    seed,
                    depth,
                    executions: RESCHEDULE_EXECUTIONS,
                },
            );
            self.runs += n;
            if let Some(o) = found.filter(|o| o.oracle() == Some(self.target)) {
                let mut c = cand;
                c.schedule = o.schedule;
                return self.try_replace(best, c);
            }
        }
        false
    }
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

fn one_pass(sh: &mut Shrinker, best: &mut Scenario) -> bool {
    let mut progress = false;
    // Whole CPUs.
    let mut cpu = best.cpus.len();
    while cpu > 0 && best.cpus.len() > 1 {
        cpu -= 1;
        if cpu < best.cpus.len() {
            progress |= sh.try_replace_rescheduled(best, without_cpu(best, cpu));
        }
    }
    // Single ops, last first; then move setup ops... never: setup is
    // sequential, so an op there is a fact, not part of the race.
    for which in op_lists(best) {
        let mut i = list_mut(best, which).len();
        while i > 0 {
            i -= 1;
            let mut c = best.clone();
            let list = list_mut(&mut c, which);
            if i >= list.len() {
                continue;
            }
            list.remove(i);
            progress |= sh.try_replace_rescheduled(best, c);
        }
    }
    // The schedule: chop the tail, then drop single choices, then make a
    // choice repeat its predecessor (one context switch fewer).
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

/// Minimize `s`, which must fail `target` when replayed. Returns the
/// smallest failing scenario found within `time`.
pub fn minimize(s: &Scenario, target: Oracle, time: Duration) -> Scenario {
    let mut sh = Shrinker {
        target,
        runs: 0,
        deadline: Instant::now() + time,
    };
    let mut best = s.clone();
    if !sh.fails(&mut best) {
        return s.clone();
    }
    while one_pass(&mut sh, &mut best) && !sh.exhausted() {}
    best
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
            Some(Oracle::RoVmemmapWrite),
            "{:?}",
            before.verdict
        );

        let min = minimize(&s, Oracle::RoVmemmapWrite, Duration::from_secs(60));

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
        assert_eq!(expect.oracle, Oracle::RoVmemmapWrite);
        // The minimized scenario replays to the same violation.
        let after = run_input(&min, false);
        let d = after.violation().expect("still fails");
        assert!(expect.matches(d), "{d:?}");
        assert!(min.op_count() < s.op_count());
    }

    #[test]
    fn minimize_returns_a_scenario_that_does_not_fail_unchanged() {
        let mut s = restore_fail_frees_with_noise();
        s.config.variants = VariantSet::default();
        assert_eq!(run_input(&s, false).oracle(), None);

        let min = minimize(&s, Oracle::RoVmemmapWrite, Duration::from_secs(10));

        assert_eq!(min, s);
    }
}
