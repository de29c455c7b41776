//! bolero over the one decoder, with the cargo-fuzz targets' settings and
//! check (`mmharness::ui::fuzz`): raw input bytes → `decode_bytes` under the
//! `MMHARNESS_*` settings → one run of the scenario's own schedule, which
//! must be clean. With no `MMHARNESS_*` set that is the fixed model.
//!
//! The harness takes bolero's input as raw bytes (`check!()` with no type,
//! not `with_type::<Vec<u8>>()`, whose generator would read a length
//! first): a libFuzzer input is the same bytes under `cargo fuzz` and
//! `cargo bolero test`, so crash files replay under either. The cross-replay
//! tests below show both directions.
//!
//! - `cargo test --release --test bolero`: replays
//!   `tests/__fuzz__/scenario/{crashes,corpus}` and runs random inputs for a
//!   second; a failure's raw input goes to `target/tmp/bolero-crashes/`.
//! - `cargo bolero test --sanitizer NONE --test bolero scenario` (stable;
//!   see README): libFuzzer, crashes in `tests/__fuzz__/scenario/crashes/`,
//!   each with its `.settings` beside it.

use bolero::bolero_engine::test_context::{EngineKind, RunPhase, current_context};
use mmharness::ui::fuzz::{
    Checked, Settings, Target, artifact_path, check_bytes, record_settings, report, sha1_hex,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        Settings::from_env(Target::Scenario).unwrap_or_else(|e| panic!("bad settings: {e}"))
    })
}

/// One input, as the cargo-fuzz `scenario` target checks it.
fn harness(bytes: &[u8]) {
    let settings = settings();
    let Checked::Failed(failure) = check_bytes(bytes, settings, "found by bolero") else {
        return;
    };
    let context = current_context();
    let engine = context.as_ref().map(|c| c.engine.clone());
    let phase = context.map(|c| c.run_phase);
    let final_run = phase.as_ref().is_none_or(|p| *p == RunPhase::Failure);
    if engine == Some(EngineKind::LibFuzzer) {
        // libFuzzer writes this input as the artifact, and the settings go
        // beside it; bolero then shrinks it, which needs no report.
        if phase != Some(RunPhase::Normal) {
            panic!("mmharness: {}", failure.headline);
        }
        report(bytes, &failure, settings);
        let args = std::env::var("BOLERO_LIBFUZZER_ARGS").unwrap_or_default();
        // The test binary's name first, as in a command line.
        let argv = std::iter::once(String::new()).chain(args.split_whitespace().map(String::from));
        if let Some(artifact) = artifact_path(argv, bytes)
            && let Ok(path) = record_settings(&artifact, settings)
        {
            eprintln!("==== settings recorded in {}", path.display());
        }
    } else if final_run {
        // bolero's own engine has shrunk the input; keep it as a file.
        report(bytes, &failure, settings);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bolero-crashes");
        let file = dir.join(format!("crash-{}", sha1_hex(bytes)));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&file, bytes))
            .and_then(|()| record_settings(&file, settings));
        if written.is_ok() {
            eprintln!(
                "==== raw input written to {} (mmharness import, or cargo fuzz run scenario FILE)",
                file.display()
            );
        }
    }
    panic!("mmharness: {}", failure.headline);
}

#[test]
fn scenario() {
    bolero::check!().for_each(harness);
}

/// Only the files in its crashes and corpus folders; run by the
/// cross-replay tests, which put a file there.
#[test]
#[ignore = "run by cargo_fuzz_crash_replays_under_bolero"]
fn replay() {
    bolero::check!()
        .with_iterations(0)
        .with_shrink_time(std::time::Duration::ZERO)
        .for_each(harness);
}

/// Found by `cargo fuzz run scenario --sanitizer none` with
/// `MMHARNESS_VARIANTS=hvo-restore-fail-frees` (fixtures/README.md).
const CARGO_FUZZ_CRASH: &str = "tests/fixtures/cargo-fuzz-scenario-hvo-restore-fail-frees";
/// Found by `cargo bolero test --sanitizer NONE --test bolero scenario`
/// with `MMHARNESS_VARIANTS=hvo-no-rcu-sync`.
const BOLERO_CRASH: &str = "tests/fixtures/bolero-scenario-hvo-no-rcu-sync";

/// The repository: this file is also built by `fuzz/bolero/`.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("tests/bolero.rs").is_file())
        .expect("the repository root")
        .to_path_buf()
}

fn fixture(path: &str) -> PathBuf {
    root().join(path)
}

/// Run the `replay` harness of this test binary, under `variants`, on
/// `file` put in its crashes folder: bolero's own replay of a crash file.
fn bolero_replay(file: &Path, variants: &str) -> (bool, String) {
    let crashes = root().join("tests/__fuzz__/replay/crashes");
    std::fs::create_dir_all(&crashes).unwrap();
    let copy = crashes.join(file.file_name().unwrap());
    std::fs::copy(file, &copy).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["replay", "--exact", "--ignored", "--nocapture"])
        .env("RUST_BACKTRACE", "0");
    for var in mmharness::ui::fuzz::VARS {
        cmd.env_remove(var);
    }
    cmd.env("MMHARNESS_VARIANTS", variants);
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_file(&copy);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The bolero harness's replay of a crash file: it reads the file's bytes
/// as they are, so cargo-fuzz's artifact fails here as it did there, and
/// passes on the fixed model (the bytes' meaning depends on the settings,
/// not on the engine).
#[test]
fn cargo_fuzz_crash_replays_under_bolero() {
    let file = fixture(CARGO_FUZZ_CRASH);
    let (ok, out) = bolero_replay(&file, "hvo-restore-fail-frees");
    assert!(!ok, "bolero did not fail on the cargo-fuzz crash:\n{out}");
    assert!(
        out.contains("==== mmharness: VIOLATION of no-bad-page-at-free"),
        "{out}"
    );
    let (ok, out) = bolero_replay(&file, "");
    assert!(ok, "the fixed model failed:\n{out}");
    assert!(out.contains("1 passed"), "{out}");
}

/// bolero's crash, checked as the cargo-fuzz targets check an input (the
/// same function, which `mmharness import` also runs; CI also feeds the
/// file to the built `scenario` binary, scripts/fuzz-smoke.sh). The
/// input's bytes go through unchanged: the scenario is the one bolero
/// reported.
#[test]
fn bolero_crash_replays_under_cargo_fuzz() {
    let bytes = std::fs::read(fixture(BOLERO_CRASH)).unwrap();
    let variant = |v: &str| {
        let var = move |name: &str| (name == "MMHARNESS_VARIANTS").then(|| v.to_string());
        Settings::from_vars(Target::Scenario, var).unwrap()
    };
    match check_bytes(&bytes, &variant("hvo-no-rcu-sync"), "test") {
        Checked::Failed(f) => {
            assert!(f.violation, "{}", f.headline);
            assert!(
                f.headline
                    .contains("no-write-through-ro-vmemmap in atomic_add_unless()"),
                "{}",
                f.headline
            );
        }
        other => panic!("the bolero crash does not fail: {other:?}"),
    }
    assert!(matches!(
        check_bytes(&bytes, &variant(""), "test"),
        Checked::Clean(_)
    ));
}
