//! Property tests for THP copy-on-write with fork and GUP pins, through
//! proptest.
//!
//! - The v5.19+ design shows no violation on generated scenarios that fork
//!   or map a THP while other ops fault, pin, read and write through pins,
//!   split, unmap, remap and write-protect.
//! - Each THP variant the generator reaches in CI time is found by proptest
//!   from a fixed seed; its shrunk input replays to the variant's oracle
//!   and is clean on the fixed model. The fork / GUP-fast race
//!   (`gup-fast-no-write-protect-seq`) needs its preemption placed: the
//!   guided PCT hunt finds it instead.
//!
//! Everything goes through `scenario_strategy` (byte vectors through the
//! one decoder) and `run_input`, the deterministic replay; the seed is
//! fixed, so CI is deterministic for a given model and generator.

mod common;

use common::{
    Budget, MINIMIZED_MAX_OPS, assert_shrunk_case, config_with, failing_case, guided_hunt_finds,
    quiet, replays_clean, without_variants,
};
use mmharness::engine::{Engine, minimize};
use mmharness::exec::{Verdict, run_input};
use mmharness::model::{Config, Oracle, Subsystem, Variant};
use mmharness::scenario::generate::{GenOptions, OpFamily, scenario_strategy};
use mmharness::scenario::{Op, Scenario};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The fixed seed every runner here starts from.
const SEED: u8 = 5;

/// Executed cases for the fixed-model properties.
const FIXED_CASES: u32 = 30_000;

/// `thp_scenarios` keeps about one input in two.
const BUDGET: Budget = Budget {
    rejects_per_case: 20,
    max_shrink_iters: 100_000,
};

fn runner(cases: u32) -> TestRunner {
    BUDGET.runner(SEED, cases)
}

/// The THP arm: faults, user accesses, GUP, fault injection and the THP,
/// fork and VMA ops.
fn thp_ops(config: Config) -> GenOptions {
    GenOptions {
        ops: OpFamily::Of(Subsystem::Thp.arm()),
        ..GenOptions::with_config(config)
    }
}

/// Does the op make memory two processes or a THP share?
fn shares(op: &Op) -> bool {
    matches!(
        op,
        Op::DupMmap { .. } | Op::DoHugePmdAnonymousPage { .. } | Op::HandleMmFault { .. }
    )
}

/// `scenario_strategy` for `opts`, keeping the scenarios that fork or map
/// a THP (or mTHP) and have at least three other ops: the rest cannot
/// share a page between processes or subpages. Filtered-out inputs are
/// only decoded, and shrinking stays inside the filter.
fn thp_scenarios(opts: GenOptions) -> impl Strategy<Value = Scenario> {
    scenario_strategy(opts).prop_filter("fork or THP", |s: &Scenario| {
        let ops: Vec<&Op> = s.setup.iter().chain(s.cpus.iter().flatten()).collect();
        ops.iter().any(|op| shares(op)) && ops.len() >= 4
    })
}

proptest! {
    #![proptest_config(BUDGET.config(FIXED_CASES))]

    /// Two CPUs: the default configuration (v5.19+).
    #[test]
    fn fixed_thp_has_no_violation(s in thp_scenarios(thp_ops(Config::default()))) {
        quiet();
        replays_clean(&s)?;
    }
}

proptest! {
    #![proptest_config(BUDGET.config(FIXED_CASES / 3))]

    /// Three CPUs and three processes: a grandchild, a second fork or a
    /// third party pinning the page join the race.
    #[test]
    fn fixed_thp_three_cpus_has_no_violation(s in thp_scenarios(GenOptions {
        max_cpus: 3,
        max_ops: 6,
        ..thp_ops(Config { mms: 3, ..Config::default() })
    })) {
        quiet();
        replays_clean(&s)?;
    }
}

/// Run "no violation" on generated THP scenarios of `variant`, expect
/// proptest to find a counterexample within `cases`, and check the shrunk
/// input: it replays to `oracle`, is clean on the fixed model, and
/// minimizes to a small case.
fn proptest_finds(variant: Variant, cases: u32, oracle: Oracle) {
    quiet();
    let start = Instant::now();
    let strategy = thp_scenarios(thp_ops(config_with(&[variant])));
    let (ran, first_hit) = (AtomicU32::new(0), AtomicU32::new(0));
    let result = runner(cases).run(&strategy, |s| {
        let n = ran.fetch_add(1, Ordering::Relaxed) + 1;
        let r = replays_clean(&s);
        if r.is_err() {
            let _ = first_hit.compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed);
        }
        r
    });
    let (_, shrunk, context) = failing_case(variant, cases, start, result, "");
    assert_shrunk_case(&shrunk, oracle, &context);
    let min = minimize(&shrunk, oracle, Duration::from_secs(10));
    assert_eq!(run_input(&min, false).oracle(), Some(oracle), "{context}");
    assert!(
        min.op_count() <= MINIMIZED_MAX_OPS,
        "{context}: minimized to {} ops:\n{}",
        min.op_count(),
        min.to_json()
    );
    assert_eq!(
        run_input(&without_variants(&min), false).verdict,
        Verdict::Clean,
        "{context}: the fixed model fails on the minimized case"
    );
    eprintln!(
        "{variant}: first hit at case {}, found and shrunk in {:.1}s, minimized to {} ops",
        first_hit.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        min.op_count()
    );
}

// Budgets: measured first hit (executed cases) over seeds [1; 32],
// [3; 32], [5; 32], [7; 32] and [9; 32]: thp-cow-breaks-pin 21-3,800,
// thp-reuse-subpage-mapcount 397-16,627, gup-after-fork-read-pin
// 374-4,684, fork-shares-pinned-page 2-13. Each budget is at least three
// times the worst; with SEED the hits come at 21, 397, 1,712 and 13 (the
// model runs ~5,000 of these cases a second).

#[test]
fn proptest_finds_thp_cow_breaks_pin() {
    proptest_finds(Variant::ThpCowBreaksPin, 20_000, Oracle::PinCoherence);
}

#[test]
fn proptest_finds_thp_reuse_subpage_mapcount() {
    proptest_finds(Variant::ThpReuseSubpageMapcount, 60_000, Oracle::AnonRmap);
}

#[test]
fn proptest_finds_gup_after_fork_read_pin() {
    proptest_finds(Variant::GupAfterForkReadPin, 20_000, Oracle::Isolation);
}

#[test]
fn proptest_finds_fork_shares_pinned_page() {
    proptest_finds(Variant::ForkSharesPinnedPage, 1_000, Oracle::PinCoherence);
}

// The fork / GUP-fast race needs GUP-fast preempted between its PTE read
// and fork's write-protection of that PTE: unguided cases with decoded
// schedules reach it about once in 100,000. The guided PCT hunt finds it
// from generated inputs.
#[test]
fn guided_pct_hunt_finds_gup_fast_no_write_protect_seq() {
    guided_hunt_finds(
        Variant::GupFastNoWriteProtectSeq,
        Engine::Pct,
        0,
        5_000,
        Oracle::PinCoherence,
    );
}
