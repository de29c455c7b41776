//! Every saved counterexample in `corpus/` replays to the verdict it expects,
//! deterministically, and (bar the shared-tail design finding) is clean on
//! the fixed model. Every variant has its file, derived from
//! `Variant::ALL`: adding a variant without one fails here.
//!
//! The directory is iterated, so files other engineers add later (new
//! findings) are checked without touching this test.

use mmharness::exec::{Outcome, Plan, Verdict, run_input, run_shuttle};
use mmharness::model::{HvoMode, Variant, VariantSet};
use mmharness::scenario::Scenario;
use mmharness::ui::render;
use std::path::{Path, PathBuf};

/// Corpus files that are not named after a variant: findings in a design
/// itself.
const DESIGN_FINDINGS: &[&str] = &["shared-tail-cmpxchg-ro-tail"];

/// PCT interleavings of the fixed model explored per corpus scenario, on
/// top of the saved schedule, to show the fix holds for more than one
/// schedule. (PCT finds every variant's corpus race within a few hundred
/// executions where it is reachable from the same ops; uniform random
/// scheduling almost never preempts at the right step.)
const FIXED_EXPLORATIONS: usize = 2000;
const PCT: Plan = Plan::Pct {
    seed: 1,
    depth: 3,
    executions: FIXED_EXPLORATIONS,
};

/// `corpus/`, or the directory in `MMHARNESS_CORPUS_DIR` (to check a copy,
/// e.g. a mutated one, without touching the tree).
fn corpus_dir() -> PathBuf {
    std::env::var_os("MMHARNESS_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"))
}

fn corpus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus/ exists")
        .map(|e| e.expect("readable corpus entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn load_all() -> Vec<(PathBuf, Scenario)> {
    corpus_files()
        .into_iter()
        .map(|p| {
            let s = Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            (p, s)
        })
        .collect()
}

fn stem(p: &Path) -> &str {
    p.file_stem().and_then(|s| s.to_str()).expect("utf-8 name")
}

/// A finding in the shared-tail design itself: no bug variant is switched
/// on, so there is no "fixed" model to compare against.
fn is_shared_tail_design_finding(s: &Scenario) -> bool {
    s.config.hvo_mode == HvoMode::SharedTail && s.config.variants.is_empty()
}

fn describe(o: &Outcome) -> String {
    render::verdict(o)
}

#[test]
fn corpus_has_one_file_per_variant() {
    let files = corpus_files();
    let stems: Vec<&str> = files.iter().map(|p| stem(p)).collect();
    for v in Variant::ALL {
        assert!(
            stems.contains(&v.name()),
            "corpus/{v}.json is missing (have {stems:?}): every variant needs its minimized finding"
        );
        let s = Scenario::load(&corpus_dir().join(format!("{v}.json"))).unwrap();
        assert_eq!(
            s.expect.as_ref().map(|e| e.oracle),
            Some(v.oracle()),
            "corpus/{v}.json does not expect the oracle the variant table names"
        );
    }
    for name in &stems {
        assert!(
            Variant::from_name(name).is_ok() || DESIGN_FINDINGS.contains(name),
            "corpus/{name}.json is neither a variant's finding nor a listed design finding"
        );
    }
}

#[test]
fn corpus_files_are_well_formed() {
    for (path, s) in load_all() {
        let p = path.display();
        assert!(
            s.expect.is_some(),
            "{p}: a corpus file needs an `expect` block"
        );
        assert!(
            s.note.as_deref().is_some_and(|n| !n.trim().is_empty()),
            "{p}: a corpus file needs a `note` describing the race"
        );
        // A file named after a variant reproduces exactly that variant.
        if let Ok(v) = Variant::from_name(stem(&path)) {
            assert_eq!(
                s.config.variants,
                VariantSet::new(&[v]),
                "{p}: named after variant {v} but enables {:?}",
                s.config.variants.iter().collect::<Vec<_>>()
            );
        }
        // The JSON form round-trips.
        let again = Scenario::from_json(&s.to_json(), "round-trip").unwrap();
        assert_eq!(again, s, "{p}: does not round-trip through to_json");
    }
    for (path, s) in load_all() {
        assert!(
            s.op_count() <= 8,
            "{}: {} ops; corpus files are minimized",
            path.display(),
            s.op_count()
        );
    }
}

#[test]
fn corpus_reproduces_expected_verdict() {
    let all = load_all();
    assert!(!all.is_empty(), "corpus/ holds no scenarios");
    for (path, s) in all {
        let p = path.display();
        let expect = s
            .expect
            .clone()
            .expect("checked in corpus_files_are_well_formed");
        for tracing in [false, true] {
            let o = run_input(&s, tracing);
            let d = o.violation().unwrap_or_else(|| {
                panic!(
                    "{p} (tracing {tracing}): expected {} in {}(), got {}",
                    expect.oracle,
                    expect.func,
                    describe(&o)
                )
            });
            assert_eq!(
                (d.violation.oracle, d.func),
                (expect.oracle, expect.func.as_str()),
                "{p} (tracing {tracing}): {}",
                describe(&o)
            );
        }
    }
}

#[test]
fn corpus_is_clean_on_the_fixed_model() {
    for (path, s) in load_all() {
        let p = path.display();
        if is_shared_tail_design_finding(&s) {
            // Nothing to clear: the race is in the shared-tail design (it
            // drops synchronize_rcu() and page_count_writable()). The same
            // ops on the current keep-1 design, which keeps both, are the
            // reference that must be clean.
            let mut keep1 = s.clone();
            keep1.config.hvo_mode = HvoMode::Keep1;
            keep1.expect = None;
            assert_eq!(
                run_input(&keep1, false).verdict,
                Verdict::Clean,
                "{p}: the keep-1 design is not clean for this scenario"
            );
            let (n, found) = run_shuttle(&keep1, PCT);
            assert!(
                found.is_none(),
                "{p}: keep-1 fails after {n} PCT interleavings: {}",
                describe(found.as_ref().unwrap())
            );
            // And the finding is not an artefact of the saved schedule:
            // other interleavings of the shared-tail design hit it too.
            let (n, found) = run_shuttle(&s, PCT);
            let found = found.unwrap_or_else(|| {
                panic!("{p}: PCT explored {n} interleavings of shared-tail without a violation")
            });
            assert_eq!(found.oracle(), s.expect.as_ref().map(|e| e.oracle), "{p}");
            continue;
        }
        assert!(
            !s.config.variants.is_empty(),
            "{p}: a corpus finding without a bug variant must be a shared-tail design finding"
        );
        let mut fixed = s.clone();
        fixed.config.variants = VariantSet::default();
        fixed.expect = None;
        let o = run_input(&fixed, false);
        assert_eq!(
            o.verdict,
            Verdict::Clean,
            "{p}: with variants cleared the fixed model still fails: {}",
            describe(&o)
        );
        let (n, found) = run_shuttle(&fixed, PCT);
        assert!(
            found.is_none(),
            "{p}: the fixed model fails after {n} PCT interleavings: {}",
            describe(found.as_ref().unwrap())
        );
    }
}

#[test]
fn corpus_replay_is_deterministic() {
    for (path, s) in load_all() {
        let p = path.display();
        let a = run_input(&s, true);
        let b = run_input(&s, true);
        assert!(!a.trace.is_empty(), "{p}: tracing produced no trace");
        let table_a = render::interleaving_table(&a.trace, s.cpus.len());
        let table_b = render::interleaving_table(&b.trace, s.cpus.len());
        assert_eq!(table_a, table_b, "{p}: two replays render different tables");
        assert_eq!(a.trace, b.trace, "{p}: two replays trace differently");
        assert_eq!(a.verdict, b.verdict, "{p}");
        assert_eq!(a.schedule, b.schedule, "{p}");
        assert_eq!(a.steps, b.steps, "{p}");
        // Tracing observes; it must not change the execution.
        let quiet = run_input(&s, false);
        assert_eq!(quiet.verdict, a.verdict, "{p}: tracing changes the verdict");
        assert_eq!(
            quiet.schedule, a.schedule,
            "{p}: tracing changes the schedule"
        );
    }
}

/// The trace a corpus file replays to, as `mmharness replay` prints it.
fn rendered(s: &Scenario) -> String {
    let o = run_input(s, true);
    format!(
        "{}\n{}\n",
        render::interleaving_table(&o.trace, s.cpus.len()),
        render::verdict(&o)
    )
}

/// Every corpus file replays to the trace recorded next to it, byte for
/// byte: a change to the executor or the engines must not move a single
/// step. A deliberate change to the model re-records them with
/// `MMHARNESS_BLESS=1 cargo test --release --test corpus`.
#[test]
fn corpus_replays_to_its_recorded_trace() {
    let bless = std::env::var_os("MMHARNESS_BLESS").is_some();
    let dir = corpus_dir().join("traces");
    let mut stale = Vec::new();
    for (path, s) in load_all() {
        let golden = dir.join(format!("{}.txt", stem(&path)));
        let now = rendered(&s);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&golden, &now).unwrap();
            continue;
        }
        let recorded = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!(
                "{} has no recorded trace: MMHARNESS_BLESS=1 cargo test --release --test corpus",
                path.display()
            )
        });
        if recorded != now {
            stale.push(stem(&path).to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "these corpus files replay to another trace than the one recorded in corpus/traces/: {stale:?}"
    );
}

/// Scenarios on which the fixed model itself once failed (a harness bug the
/// hunt found, not a kernel one): each replays clean, and stays clean over
/// PCT interleavings of the same ops.
#[test]
fn model_regressions_stay_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/regressions exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "tests/regressions holds no scenarios");
    for path in files {
        let p = path.display();
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.expect.is_none(), "{p}: a regression expects a clean run");
        assert!(s.config.variants.is_empty(), "{p}: runs the fixed model");
        assert!(
            s.note.as_deref().is_some_and(|n| !n.trim().is_empty()),
            "{p}: a regression needs a `note` naming the model bug"
        );
        let o = run_input(&s, false);
        assert_eq!(o.verdict, Verdict::Clean, "{p}: {}", describe(&o));
        let (n, found) = run_shuttle(&s, PCT);
        assert!(
            found.is_none(),
            "{p}: fails after {n} PCT interleavings: {}",
            describe(found.as_ref().unwrap())
        );
    }
}
