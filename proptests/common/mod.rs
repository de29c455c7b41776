//! Helpers shared by the property suites.

use mmharness::exec::{Verdict, run_input};
use mmharness::model::{Config, Variant, VariantSet};
use mmharness::scenario::Scenario;
use mmharness::ui::render;
use proptest::test_runner::TestCaseError;

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
