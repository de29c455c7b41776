//! Helpers shared by the property suites.

use mmharness::exec::{Outcome, Verdict, quiet_shuttle_panics, run_input};
use mmharness::model::{Config, Oracle, Variant, VariantSet};
use mmharness::scenario::Scenario;
use mmharness::ui::render;
use proptest::test_runner::{Reason, TestCaseError, TestError};
use std::sync::Once;
use std::time::Instant;

/// Silence the panics of executions shuttle fails (once per process).
pub fn quiet() {
    static ONCE: Once = Once::new();
    ONCE.call_once(quiet_shuttle_panics);
}

/// The same scenario on the fixed model.
pub fn without_variants(s: &Scenario) -> Scenario {
    let mut fixed = s.clone();
    fixed.config.variants = VariantSet::default();
    fixed.expect = None;
    fixed
}

/// The failing case of a proptest run that must fail, and the context its
/// assertions print; panics if it passed (`no_hit` is appended to that
/// message) or aborted.
pub fn failing_case(
    variant: Variant,
    cases: u32,
    start: Instant,
    result: Result<(), TestError<Scenario>>,
    no_hit: &str,
) -> (Reason, Scenario, String) {
    let (reason, shrunk) = match result {
        Err(TestError::Fail(reason, s)) => (reason, s),
        Err(TestError::Abort(why)) => panic!("{variant}: proptest aborted: {why}"),
        Ok(()) => panic!(
            "{variant}: proptest found no violation in {cases} cases ({:.1}s){no_hit}",
            start.elapsed().as_secs_f64()
        ),
    };
    let context = format!(
        "{variant}: proptest failed with `{reason}`; shrunk case:\n{}",
        shrunk.to_json()
    );
    (reason, shrunk, context)
}

/// The shrunk case replays to `oracle`, with the same verdict twice, and is
/// clean on the fixed model. Returns the two replays.
pub fn assert_shrunk_case(shrunk: &Scenario, oracle: Oracle, context: &str) -> (Outcome, Outcome) {
    let o = run_input(shrunk, false);
    assert_eq!(o.oracle(), Some(oracle), "{context}{}", render::verdict(&o));
    let again = run_input(shrunk, false);
    assert_eq!(
        again.verdict, o.verdict,
        "{context}: replay is not deterministic"
    );
    let fixed = run_input(&without_variants(shrunk), false);
    assert_eq!(
        fixed.verdict,
        Verdict::Clean,
        "{context}: the fixed model fails too: {}",
        render::verdict(&fixed)
    );
    (o, again)
}

/// The property the suites run: replaying the scenario is clean.
pub fn replays_clean(s: &Scenario) -> Result<(), TestCaseError> {
    let o = run_input(s, false);
    match &o.verdict {
        Verdict::Clean => Ok(()),
        Verdict::Violation(d) => Err(TestCaseError::fail(format!(
            "{}: {}",
            d.violation.oracle.name(),
            render::verdict(&o)
        ))),
        Verdict::ModelPanic(m) => Err(TestCaseError::fail(format!("model panic: {m}"))),
    }
}

/// The default configuration with `variants` switched on.
pub fn config_with(variants: &[Variant]) -> Config {
    Config {
        variants: VariantSet::new(variants),
        ..Config::default()
    }
}
