//! The op-level proptest strategy and its shrinker, in the style of
//! proptest-state-machine: a scenario is a head (configuration, palettes,
//! op family), op slots (setup, then each CPU's) and a schedule, each part
//! with bytes of its own for the one decoder ([`decode_structured`]).
//!
//! It generates exactly what the tuple of byte vectors did (the same draws
//! in the same order), and shrinks in passes: delete whole CPUs, single
//! ops (last first), then pairs of ops that may only matter together (two
//! ops of one CPU, or two that name the same page, pfn or page-cache index:
//! a `fail_next_allocs` and the allocation it fails, a get and its put),
//! until a pass deletes nothing; then simplify each op's bytes, the
//! schedule and the head toward zero (the decoder's simplest choices); and
//! again from the deletions while anything simplified.

use super::MAX_CPUS;
use super::Scenario;
use super::generate::{
    GenOptions, HEAD_BYTES, SLOT_BYTES, Structured, decode_slots, decode_structured,
};
use crate::model::Op;
use crate::model::op::Role;
use proptest::collection::vec;
use proptest::num::sample_uniform_incl;
use proptest::prelude::*;
use proptest::strategy::{NewTree, ValueTree};
use proptest::test_runner::TestRunner;

type Bytes = Box<dyn ValueTree<Value = Vec<u8>>>;

/// The strategy: see the module's doc.
#[derive(Debug, Clone, Copy)]
pub struct OpsStrategy {
    pub opts: GenOptions,
}

/// A slot: its list (`None` the setup, `Some(i)` CPU i) and its index in
/// the list as generated.
type Slot = (Option<usize>, usize);

struct SlotTree {
    bytes: Bytes,
    included: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Delete,
    Slots,
    Schedule,
    Head,
    Done,
}

/// The simplification the current value is the result of.
enum Last {
    Deleted(Vec<Slot>),
    Slot(Slot),
    Schedule,
    Head,
}

pub struct OpsTree {
    opts: GenOptions,
    head: Bytes,
    setup: Vec<SlotTree>,
    cpus: Vec<Vec<SlotTree>>,
    schedule: Bytes,
    phase: Phase,
    /// Deletions left to try in this pass, the next one last.
    candidates: Vec<Vec<Slot>>,
    /// This pass kept a deletion: another pass follows.
    deleted: bool,
    /// The next slot to simplify (in [`OpsTree::live`] order).
    cursor: usize,
    /// A simplification was kept since the deletion pass.
    changed: bool,
    last: Option<Last>,
}

impl Strategy for OpsStrategy {
    type Tree = OpsTree;
    type Value = Scenario;

    /// The draws of `(vec(bytes, HEAD_BYTES), vec(slot, 0..=max_setup),
    /// vec(vec(slot, 0..=max_ops), 1..=cpus), vec(0..cpus, 0..64))`, in
    /// its order.
    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let opts = self.opts;
        let slot = vec(any::<u8>(), SLOT_BYTES).boxed();
        let slots = |runner: &mut TestRunner, hi: usize| -> Result<Vec<SlotTree>, _> {
            let n = sample_uniform_incl(runner, 0, hi);
            (0..n)
                .map(|_| {
                    slot.new_tree(runner).map(|bytes| SlotTree {
                        bytes,
                        included: true,
                    })
                })
                .collect()
        };
        let nr_cpus = opts.max_cpus.clamp(2, MAX_CPUS);
        let head = vec(any::<u8>(), HEAD_BYTES).boxed().new_tree(runner)?;
        let setup = slots(runner, opts.max_setup)?;
        let n = sample_uniform_incl(runner, 1, nr_cpus);
        let cpus = (0..n)
            .map(|_| slots(runner, opts.max_ops.max(1)))
            .collect::<Result<Vec<_>, _>>()?;
        let schedule = vec(0..nr_cpus as u8, 0..64).boxed().new_tree(runner)?;
        let mut tree = OpsTree {
            opts,
            head,
            setup,
            cpus,
            schedule,
            phase: Phase::Delete,
            candidates: Vec::new(),
            deleted: false,
            cursor: 0,
            changed: false,
            last: None,
        };
        tree.candidates = tree.deletions();
        Ok(tree)
    }
}

impl OpsTree {
    fn structured(&self) -> Structured {
        let bytes = |slots: &[SlotTree]| -> Vec<Vec<u8>> {
            slots
                .iter()
                .filter(|s| s.included)
                .map(|s| s.bytes.current())
                .collect()
        };
        Structured {
            head: self.head.current(),
            setup: bytes(&self.setup),
            cpus: self.cpus.iter().map(|c| bytes(c)).collect(),
            schedule: self.schedule.current(),
        }
    }

    fn slot(&mut self, (list, i): Slot) -> &mut SlotTree {
        match list {
            None => &mut self.setup[i],
            Some(c) => &mut self.cpus[c][i],
        }
    }

    fn included(&self, (list, i): Slot) -> bool {
        match list {
            None => self.setup[i].included,
            Some(c) => self.cpus[c][i].included,
        }
    }

    /// The included slots: the setup's, then each CPU's.
    fn live(&self) -> Vec<Slot> {
        let of = |list: Option<usize>, slots: &[SlotTree]| -> Vec<Slot> {
            (0..slots.len())
                .filter(|&i| slots[i].included)
                .map(|i| (list, i))
                .collect()
        };
        let mut live = of(None, &self.setup);
        for (c, slots) in self.cpus.iter().enumerate() {
            live.extend(of(Some(c), slots));
        }
        live
    }

    /// This pass's deletions, in the order they are tried: each whole CPU
    /// (while another has ops), each op last first, the related pairs,
    /// then every other pair.
    fn deletions(&self) -> Vec<Vec<Slot>> {
        let live = self.live();
        let decoded = decode_slots(&self.structured(), &self.opts);
        // The ops of each live slot, in `live` order (`decode_slots` sees
        // only the included slots, in order).
        let mut ops: Vec<&[Op]> = decoded.setup.iter().map(Vec::as_slice).collect();
        for c in &decoded.cpus {
            ops.extend(c.iter().map(Vec::as_slice));
        }
        let mut order: Vec<Vec<Slot>> = Vec::new();
        let busy = self
            .cpus
            .iter()
            .filter(|c| c.iter().any(|s| s.included))
            .count();
        if busy > 1 {
            for c in 0..self.cpus.len() {
                let all: Vec<Slot> = live.iter().copied().filter(|s| s.0 == Some(c)).collect();
                if !all.is_empty() {
                    order.push(all);
                }
            }
        }
        order.extend(live.iter().rev().map(|&s| vec![s]));
        let mut unrelated = Vec::new();
        for a in 0..live.len() {
            for b in a + 1..live.len() {
                let pair = vec![live[a], live[b]];
                if live[a].0 == live[b].0 || share_an_object(ops[a], ops[b]) {
                    order.push(pair);
                } else {
                    unrelated.push(pair);
                }
            }
        }
        order.extend(unrelated);
        order.reverse();
        order
    }
}

/// Do two slots' ops name the same page, pfn or page-cache index?
fn share_an_object(a: &[Op], b: &[Op]) -> bool {
    let objects = |ops: &[Op]| -> Vec<(Role, u32)> {
        ops.iter()
            .flat_map(|op| {
                op.kind()
                    .roles()
                    .iter()
                    .copied()
                    .zip(op.values())
                    .filter(|(r, _)| matches!(r, Role::Index | Role::Pfn | Role::Page))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let b = objects(b);
    objects(a).iter().any(|x| b.contains(x))
}

impl ValueTree for OpsTree {
    type Value = Scenario;

    fn current(&self) -> Scenario {
        decode_structured(&self.structured(), &self.opts)
    }

    fn simplify(&mut self) -> bool {
        // Called again: the last simplification still fails, and is kept.
        match self.last.take() {
            Some(Last::Deleted(_)) => self.deleted = true,
            Some(_) => self.changed = true,
            None => {}
        }
        loop {
            match self.phase {
                Phase::Delete => {
                    while let Some(c) = self.candidates.pop() {
                        if c.iter().all(|&s| self.included(s)) {
                            for &s in &c {
                                self.slot(s).included = false;
                            }
                            self.last = Some(Last::Deleted(c));
                            return true;
                        }
                    }
                    if std::mem::take(&mut self.deleted) {
                        self.candidates = self.deletions();
                    } else {
                        self.phase = Phase::Slots;
                        self.cursor = 0;
                        self.changed = false;
                    }
                }
                Phase::Slots => {
                    let live = self.live();
                    while let Some(&s) = live.get(self.cursor) {
                        if self.slot(s).bytes.simplify() {
                            self.last = Some(Last::Slot(s));
                            return true;
                        }
                        self.cursor += 1;
                    }
                    self.phase = Phase::Schedule;
                }
                Phase::Schedule => {
                    if self.schedule.simplify() {
                        self.last = Some(Last::Schedule);
                        return true;
                    }
                    self.phase = Phase::Head;
                }
                Phase::Head => {
                    if self.head.simplify() {
                        self.last = Some(Last::Head);
                        return true;
                    }
                    if std::mem::take(&mut self.changed) {
                        // Simpler ops may now go.
                        self.phase = Phase::Delete;
                        self.candidates = self.deletions();
                    } else {
                        self.phase = Phase::Done;
                    }
                }
                Phase::Done => return false,
            }
        }
    }

    /// The last simplification passed: undo it (or let the part that made
    /// it back off) and try the next one. `false` only when nothing is
    /// left, with the last failing value restored.
    fn complicate(&mut self) -> bool {
        let backed_off = match self.last.take() {
            None => return false,
            Some(Last::Deleted(c)) => {
                for s in c {
                    self.slot(s).included = true;
                }
                return self.simplify();
            }
            Some(Last::Slot(s)) => self.slot(s).bytes.complicate().then_some(Last::Slot(s)),
            Some(Last::Schedule) => self.schedule.complicate().then_some(Last::Schedule),
            Some(Last::Head) => self.head.complicate().then_some(Last::Head),
        };
        match backed_off {
            Some(last) => {
                self.last = Some(last);
                true
            }
            None => self.simplify(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OpKind, Subsystem};
    use crate::scenario::generate::OpFamily;
    use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng};

    fn runner(seed: u8) -> TestRunner {
        TestRunner::new_with_rng(
            RunnerConfig::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
        )
    }

    /// The tuple of byte vectors the strategy replaced.
    fn tuple_strategy(opts: GenOptions) -> impl Strategy<Value = Scenario> {
        let slot = || vec(any::<u8>(), SLOT_BYTES);
        let cpus = opts.max_cpus.clamp(2, MAX_CPUS);
        (
            vec(any::<u8>(), HEAD_BYTES),
            vec(slot(), 0..=opts.max_setup),
            vec(vec(slot(), 0..=opts.max_ops.max(1)), 1..=cpus),
            vec(0..cpus as u8, 0..64),
        )
            .prop_map(move |(head, setup, cpus, schedule)| {
                decode_structured(
                    &Structured {
                        head,
                        setup,
                        cpus,
                        schedule,
                    },
                    &opts,
                )
            })
    }

    /// Same seed, same cases: what a fixed-seed suite found before, it
    /// still finds.
    #[test]
    fn generates_what_the_tuple_of_byte_vectors_generated() {
        for opts in [
            GenOptions::default(),
            GenOptions {
                max_cpus: 3,
                ..GenOptions::default()
            },
        ] {
            let (mut a, mut b) = (runner(3), runner(3));
            for _ in 0..200 {
                let old = tuple_strategy(opts).new_tree(&mut a).unwrap().current();
                let new = OpsStrategy { opts }.new_tree(&mut b).unwrap().current();
                assert_eq!(old, new);
            }
        }
    }

    /// Drive a tree as proptest's runner does, with `fails` as the
    /// property's failure; returns the final value.
    fn shrink(tree: &mut OpsTree, fails: impl Fn(&Scenario) -> bool) -> Scenario {
        assert!(fails(&tree.current()));
        let mut last_failing = tree.current();
        let mut more = tree.simplify();
        for _ in 0..100_000 {
            if !more {
                break;
            }
            let v = tree.current();
            if fails(&v) {
                last_failing = v;
                more = tree.simplify();
            } else {
                more = tree.complicate();
            }
        }
        assert!(!more, "the shrinker ends");
        assert_eq!(tree.current(), last_failing, "it ends on a failing value");
        last_failing
    }

    /// A failure needs ops `a` and `b`, and two others `c` and `d` only
    /// together (either alone makes it pass, as a get without its put):
    /// one deletion at a time stops at four ops, pairs reach two.
    #[test]
    fn shrinking_deletes_pairs_that_only_matter_together() {
        let opts = GenOptions {
            // One op per slot: this arm has no idioms.
            ops: OpFamily::Of(Subsystem::PmdShare.arm()),
            ..GenOptions::default()
        };
        let strategy = OpsStrategy { opts };
        let mut r = runner(9);
        let mut cases = 0;
        for _ in 0..5000 {
            let mut tree = strategy.new_tree(&mut r).unwrap();
            let s = tree.current();
            let kinds: Vec<OpKind> = s.ops().map(|(_, o)| o.kind()).collect();
            let once: Vec<OpKind> = kinds
                .iter()
                .copied()
                .filter(|k| kinds.iter().filter(|x| *x == k).count() == 1)
                .collect();
            // `a` on CPU 0, `b` on CPU 1 (so that neither goes with its
            // CPU, and CPU ops remain), `c` and `d` anywhere else.
            let on = |cpu: usize| {
                s.cpus
                    .get(cpu)
                    .and_then(|ops| ops.iter().map(Op::kind).find(|k| once.contains(k)))
            };
            let (Some(a), Some(b)) = (on(0), on(1)) else {
                continue;
            };
            let rest: Vec<OpKind> = once
                .iter()
                .copied()
                .filter(|k| ![a, b].contains(k))
                .collect();
            if s.op_count() < 6 || rest.len() < 2 {
                continue;
            }
            let (c, d) = (rest[0], rest[1]);
            let has = |s: &Scenario, k: OpKind| s.ops().any(|(_, o)| o.kind() == k);
            let fails = |s: &Scenario| has(s, a) && has(s, b) && has(s, c) == has(s, d);
            let min = shrink(&mut tree, fails);
            assert_eq!(min.op_count(), 2, "{}", min.to_json());
            assert!(has(&min, a) && has(&min, b));
            cases += 1;
            if cases == 20 {
                break;
            }
        }
        assert_eq!(cases, 20, "too few cases with four op kinds");
    }
}
