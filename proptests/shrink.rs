//! proptest's own shrinking at the op level: with `scenario_ops_strategy`
//! (ops as slots of their own for the one decoder), a failing case comes
//! out of proptest as small as `engine::minimize` makes the same finding,
//! or at most one op larger.
//! Derived from the variant table; prints the table the README quotes.
//!
//! Each variant's proptest runs on its own subsystems' ops, from a fixed
//! seed, until it fails or `CASES` pass; the first failing case is kept
//! and minimized too, for the comparison. A variant unguided proptest does
//! not reach within the budget is listed as such (and must be found by the
//! guided hunt instead: `variants.rs`).

mod common;

use common::{config_with, quiet, replays_clean};
use mmharness::engine::{find_schedule, minimize};
use mmharness::exec::run_input;
use mmharness::model::Oracle;
use mmharness::model::Variant;
use mmharness::scenario::Scenario;
use mmharness::scenario::generate::{GenOptions, OpFamily, scenario_ops_strategy};
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};
use std::cell::RefCell;
use std::time::Duration;

/// Cases per variant at most.
const CASES: u32 = 100_000;

/// A variant's row: found, proptest's shrunk ops, minimize's ops.
struct Row {
    variant: Variant,
    first: usize,
    shrunk: usize,
    minimized: usize,
    /// The two scenarios, for the message of a row that does not hold.
    cases: String,
}

fn shrink_one(variant: Variant) -> Option<Row> {
    let opts = GenOptions {
        ops: OpFamily::for_variants(&[variant]),
        ..GenOptions::with_config(config_with(&[variant]))
    };
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 50_000,
        ..ProptestConfig::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    // Once a case has failed, proptest only shrinks it, and a smaller
    // candidate's old schedule may land on other steps: the property then
    // also looks for a schedule that fails the same oracle (the search
    // `minimize` makes), and remembers it for the shrunk case.
    let first: RefCell<Option<(Scenario, Oracle)>> = RefCell::new(None);
    let found: RefCell<Vec<(Scenario, Vec<u8>)>> = RefCell::new(Vec::new());
    let result = runner.run(&scenario_ops_strategy(opts), |s| {
        let r = replays_clean(&s);
        let target = first.borrow().as_ref().map(|(_, o)| *o);
        match (r.is_err(), target) {
            (true, None) => {
                let o = run_input(&s, false).oracle().expect("a failure");
                *first.borrow_mut() = Some((s.clone(), o));
                r
            }
            (false, Some(target)) => match find_schedule(&s, target, 0).1 {
                Some(schedule) => {
                    found.borrow_mut().push((s.clone(), schedule));
                    Err(TestCaseError::fail(format!("{target} on another schedule")))
                }
                None => r,
            },
            _ => r,
        }
    });
    let mut shrunk = match result {
        Err(TestError::Fail(_, s)) => s,
        Err(TestError::Abort(why)) => panic!("{variant}: proptest aborted: {why}"),
        Ok(()) => return None,
    };
    let (first, oracle) = first.into_inner().expect("a failure was seen first");
    if let Some((_, schedule)) = found.borrow().iter().rev().find(|(s, _)| *s == shrunk) {
        shrunk.schedule = schedule.clone();
    }
    assert_eq!(
        run_input(&shrunk, false).oracle(),
        Some(oracle),
        "{variant}: the shrunk case fails another oracle:\n{}",
        shrunk.to_json()
    );
    let minimized = minimize(&first, oracle, Duration::from_secs(20));
    Some(Row {
        variant,
        first: first.op_count(),
        shrunk: shrunk.op_count(),
        minimized: minimized.op_count(),
        cases: format!(
            "{variant}: proptest shrunk to\n{}\nminimize reached\n{}",
            shrunk.to_json(),
            minimized.to_json()
        ),
    })
}

#[test]
fn proptest_shrinks_by_whole_ops_as_far_as_minimize() {
    quiet();
    let mut rows = Vec::new();
    let mut missed = Vec::new();
    for &v in Variant::ALL {
        match shrink_one(v) {
            Some(r) => rows.push(r),
            None => missed.push(v),
        }
    }
    eprintln!("| variant | first failing case | proptest shrunk | mmharness minimize |");
    eprintln!("|---|---:|---:|---:|");
    for r in &rows {
        eprintln!(
            "| {} | {} ops | {} ops | {} ops |",
            r.variant, r.first, r.shrunk, r.minimized
        );
    }
    for v in &missed {
        eprintln!("| {v} | not reached in {CASES} unguided cases | | |");
    }
    // proptest's shrink is a local search over op deletions with the
    // schedule carried along; minimize also re-searches schedules between
    // deletions, so it may end one op lower (hvo-no-rcu-sync since the
    // lookup of truncate_inode_folio became find_lock_entries': 5 vs 4).
    // More than one op apart means proptest's shrinking regressed.
    let worse: Vec<&Row> = rows.iter().filter(|r| r.shrunk > r.minimized + 1).collect();
    assert!(
        worse.is_empty(),
        "proptest shrank to more ops than minimize for: {:?}\n{}",
        worse.iter().map(|r| r.variant).collect::<Vec<_>>(),
        worse
            .iter()
            .map(|r| r.cases.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        rows.len() >= Variant::ALL.len() / 2,
        "proptest found only {} of {} variants",
        rows.len(),
        Variant::ALL.len()
    );
}
