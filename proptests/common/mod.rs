//! Helpers shared by the property suites.
//!
//! (Each suite uses a part of them.)
#![allow(dead_code)]

use mmharness::engine::{Engine, HuntOptions, hunt, minimize};
use mmharness::exec::{Outcome, Verdict, quiet_shuttle_panics, run_input};
use mmharness::model::{Config, Oracle, Variant, VariantSet};
use mmharness::scenario::Scenario;
use mmharness::scenario::generate::{GenOptions, OpFamily};
use mmharness::ui::render;
use proptest::test_runner::{Reason, TestCaseError, TestError};
use std::sync::Once;
use std::time::Duration;
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
    let variants = VariantSet::new(variants);
    Config {
        arch: variants.arch(),
        variants,
        ..Config::default()
    }
}

/// A guided hunt of `variant` finds `oracle` from generated inputs within
/// `iterations` scenarios; the finding replays, is clean on the fixed
/// model, and minimizes to a small race. Returns the hunt's report line.
pub fn guided_hunt_finds(
    variant: Variant,
    engine: Engine,
    seed: u64,
    iterations: u64,
    oracle: Oracle,
) -> String {
    quiet();
    let generate = GenOptions {
        ops: OpFamily::for_variants(&[variant]),
        ..GenOptions::with_config(config_with(&[variant]))
    };
    let mut opts = HuntOptions::new(engine, generate);
    opts.iterations = Some(iterations);
    opts.time = Duration::from_secs(600);
    opts.seed = seed;
    let report = hunt(&opts);
    let finding = report.finding.unwrap_or_else(|| {
        panic!(
            "{variant}: the {} hunt found no violation in {} scenarios ({:.1}s)",
            engine.name(),
            report.scenarios,
            report.elapsed.as_secs_f64()
        )
    });
    let s = &finding.scenario;
    let o = run_input(s, false);
    assert_eq!(
        o.oracle(),
        Some(oracle),
        "{variant}: {}",
        render::verdict(&o)
    );
    let fixed = run_input(&without_variants(s), false);
    assert_eq!(
        fixed.verdict,
        Verdict::Clean,
        "{variant}: {}",
        render::verdict(&fixed)
    );
    // Twice: removing ops can open removals the first pass tried too early
    // (HVO's walk, one step per PTE, makes its findings long).
    let min = minimize(s, oracle, Duration::from_secs(10));
    let min = minimize(&min, oracle, Duration::from_secs(10));
    assert_eq!(run_input(&min, false).oracle(), Some(oracle));
    assert!(
        min.op_count() <= MINIMIZED_MAX_OPS,
        "{variant}: minimized to {} ops:\n{}",
        min.op_count(),
        min.to_json()
    );
    format!(
        "{variant}: {} hunt found it in {} scenarios ({:.1}s), minimized to {} ops",
        engine.name(),
        report.scenarios,
        report.elapsed.as_secs_f64(),
        min.op_count()
    )
}

/// A counterexample minimized by `engine::minimize` has at most this many
/// ops (measured: 3-8 over 24 findings; the corpus files have 3-6).
pub const MINIMIZED_MAX_OPS: usize = 8;

/// Where proptest failures are kept as scenario files: `corpus/proptest/`
/// (seeds break when a strategy changes; a scenario file does not).
pub fn persisted_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/proptest")
}

/// Keep a proptest failure of property `name` as a scenario file, named
/// after its content so that the same failure is kept once. Returns its
/// path.
pub fn persist_failure(name: &str, s: &Scenario) -> std::path::PathBuf {
    let text = s.to_json();
    let hash = text.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    });
    let dir = persisted_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{name}-{:016x}.json", hash));
    let _ = std::fs::write(&path, text);
    path
}

/// The persisted failures of property `name`.
pub fn persisted(name: &str) -> Vec<(std::path::PathBuf, Scenario)> {
    let Ok(dir) = std::fs::read_dir(persisted_dir()) else {
        return Vec::new();
    };
    let mut files: Vec<_> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}-")) && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            (p, s)
        })
        .collect()
}

/// "The model as built is clean" over `strategy`, as proptest runs it, with
/// every earlier failure replayed first (each must be clean now) and any new
/// one kept as a scenario file.
pub fn fixed_model_is_clean(
    name: &str,
    mut runner: proptest::test_runner::TestRunner,
    strategy: impl proptest::strategy::Strategy<Value = Scenario>,
) {
    quiet();
    for (path, s) in persisted(name) {
        let o = run_input(&s, false);
        assert_eq!(
            o.verdict,
            Verdict::Clean,
            "{}: an earlier proptest failure still fails: {}",
            path.display(),
            render::verdict(&o)
        );
    }
    if let Err(e) = runner.run(&strategy, |s| replays_clean(&s)) {
        match e {
            TestError::Fail(reason, s) => {
                let path = persist_failure(name, &s);
                panic!(
                    "{name}: {reason}; the shrunk case is kept in {}:\n{}",
                    path.display(),
                    s.to_json()
                );
            }
            TestError::Abort(why) => panic!("{name}: proptest aborted: {why}"),
        }
    }
}

/// A suite's proptest budget: rejects allowed per case (its strategy's
/// filter keeps about one input in that many, with room) and shrink steps.
pub struct Budget {
    pub rejects_per_case: u32,
    pub max_shrink_iters: u32,
}

impl Budget {
    /// `cases` executed cases, no failure persistence (failures are kept
    /// as scenario files instead).
    pub fn config(&self, cases: u32) -> proptest::test_runner::Config {
        proptest::test_runner::Config {
            cases,
            failure_persistence: None,
            max_local_rejects: cases.saturating_mul(self.rejects_per_case),
            max_global_rejects: cases.saturating_mul(self.rejects_per_case),
            max_shrink_iters: self.max_shrink_iters,
            ..proptest::test_runner::Config::default()
        }
    }

    /// A runner over `config(cases)` from the fixed seed `[seed; 32]`.
    pub fn runner(&self, seed: u8, cases: u32) -> proptest::test_runner::TestRunner {
        proptest::test_runner::TestRunner::new_with_rng(
            self.config(cases),
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &[seed; 32],
            ),
        )
    }
}
