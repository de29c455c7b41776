//! The test `scripts/mutants.sh` has cargo-mutants run on each mutant of
//! the model's kernel paths: the default hunt on the model as built, for a
//! fixed budget, must stay clean; a violation (or a model panic) kills the
//! mutant. Ignored in the normal suite.
//!
//! Both hunts run on each mutant and append their verdicts to
//! `$MMHARNESS_MUTANT_LOG`: the default hunt before the adaptive one
//! (every engine for a quarter of the budget, each scenario drawing one op
//! family, 2 CPUs, 2 memory blocks: the old `mmharness hunt`), and the
//! adaptive default (`mmharness hunt --time BUDGET`). The test fails, and
//! cargo-mutants counts the mutant caught, when the adaptive hunt finds it.
//! `MMHARNESS_MUTANT_BEFORE=0` skips the old default's hunt.

use mmharness::engine::adaptive::{AdaptiveOptions, adaptive_hunt};
use mmharness::engine::{Engine, Flow, HuntOptions, hunt};
use mmharness::exec::quiet_shuttle_panics;
use mmharness::model::Config;
use mmharness::scenario::generate::GenOptions;
use std::io::Write;
use std::time::Duration;

fn budget() -> Duration {
    let secs = std::env::var("MMHARNESS_MUTANT_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(20.0);
    Duration::from_secs_f64(secs)
}

/// The old default: every engine in turn for a quarter of the budget.
fn before(budget: Duration) -> Option<String> {
    for engine in Engine::ALL {
        let mut opts = HuntOptions::new(engine, GenOptions::default());
        opts.time = budget / 4;
        let r = hunt(&opts);
        if let Some(f) = r.finding {
            return Some(format!(
                "{} by {}",
                f.outcome.oracle().unwrap(),
                engine.name()
            ));
        }
        if let Some((_, msg)) = r.model_panic {
            return Some(format!(
                "model panic by {}: {}",
                engine.name(),
                msg.lines().next().unwrap_or("")
            ));
        }
    }
    None
}

/// The adaptive default.
fn after(budget: Duration) -> Option<String> {
    let opts = AdaptiveOptions::new(Config::default(), budget, 0);
    let r = adaptive_hunt(&opts, &mut |_| Flow::Continue);
    if let Some((arm, f)) = r.finding {
        return Some(format!(
            "{} by {}",
            f.outcome.oracle().unwrap(),
            arm.label()
        ));
    }
    r.model_panic.map(|(arm, _, msg)| {
        format!(
            "model panic by {}: {}",
            arm.label(),
            msg.lines().next().unwrap_or("")
        )
    })
}

/// Where this tree's model differs from the unmutated one at `orig`: the
/// file, line and mutated text.
fn mutation(orig: &std::path::Path) -> String {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Ok(dir) = std::fs::read_dir(here.join("src/model")) else {
        return "?".into();
    };
    let mut files: Vec<_> = dir.flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files {
        let Ok(name) = f.strip_prefix(here) else {
            continue;
        };
        let (Ok(a), Ok(b)) = (
            std::fs::read_to_string(&f),
            std::fs::read_to_string(orig.join(name)),
        ) else {
            continue;
        };
        if a != b {
            let line = a
                .lines()
                .zip(b.lines())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            let text = a.lines().nth(line).unwrap_or("").trim();
            return format!("{}:{}: {text}", name.display(), line + 1);
        }
    }
    "unmutated".into()
}

#[test]
#[ignore = "run by scripts/mutants.sh"]
fn default_hunt_finds_nothing() {
    quiet_shuttle_panics();
    let budget = budget();
    let b = match std::env::var("MMHARNESS_MUTANT_BEFORE").as_deref() {
        Ok("0") => "skipped".to_string(),
        _ => before(budget).unwrap_or_else(|| "clean".into()),
    };
    let a = after(budget);
    if let Ok(path) = std::env::var("MMHARNESS_MUTANT_LOG") {
        let mutant = std::env::var("MMHARNESS_MUTANT_ORIG")
            .map(|orig| mutation(std::path::Path::new(&orig)))
            .unwrap_or_default();
        let line = format!(
            "{}\tbefore={}\tafter={}\n",
            mutant,
            b,
            a.as_deref().unwrap_or("clean")
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
    assert!(a.is_none(), "the default hunt found: {}", a.unwrap());
}
