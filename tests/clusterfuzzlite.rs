//! `.clusterfuzzlite/build.sh`, run here as a script (no Docker): it builds
//! every cargo-fuzz target but `trivial` into `$OUT` with its `.options`
//! and seed corpus, and the binaries it leaves there are working libFuzzer
//! targets: clean on their seeds under the fixed model, crashing on a real
//! crash input under its variant. Slow (a `cargo fuzz build -O` of every
//! target): `cargo test --release --test clusterfuzzlite -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The `[[bin]]` names of `fuzz/Cargo.toml`.
fn fuzz_targets() -> Vec<String> {
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("fuzz/Cargo.toml")).unwrap();
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(v) = line.strip_prefix("name = ") {
            names.push(v.trim_matches('"').to_string());
        }
    }
    names
}

/// Run a built target with only `envs` of the fuzz settings set.
fn run(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("RUST_BACKTRACE", "0");
    for var in mmharness::ui::fuzz::VARS {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied());
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[ignore = "slow: builds every fuzz target; run with --ignored"]
fn build_sh_builds_working_fuzz_binaries() {
    let out = std::env::temp_dir().join(format!("mmharness-cflite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new("bash")
        .arg(Path::new(ROOT).join(".clusterfuzzlite/build.sh"))
        .env("OUT", &out)
        .env_remove("SANITIZER")
        .env_remove("SRC")
        .status()
        .unwrap();
    assert!(status.success(), "build.sh failed: {status}");

    let targets: Vec<String> = fuzz_targets()
        .into_iter()
        .filter(|t| t != "trivial")
        .collect();
    for t in [
        "scenario",
        "hvo",
        "migration",
        "pmd_share",
        "decoder",
        "parser",
    ] {
        assert!(targets.iter().any(|n| n == t), "no fuzz target {t}");
    }
    assert!(!out.join("trivial").exists());
    let fixture = Path::new(ROOT).join("tests/fixtures/cargo-fuzz-scenario-hvo-restore-fail-frees");
    for t in &targets {
        let bin = out.join(t);
        let options = std::fs::read_to_string(out.join(format!("{t}.options"))).unwrap();
        assert!(options.starts_with("[libfuzzer]"), "{t}.options: {options}");
        let zip: PathBuf = out.join(format!("{t}_seed_corpus.zip"));
        let head = std::fs::read(&zip).unwrap_or_else(|e| panic!("{}: {e}", zip.display()));
        assert!(head.starts_with(b"PK"), "{} is not a zip", zip.display());
        // A short fuzzing run from nothing: a working libFuzzer binary, and
        // nothing found on the fixed model.
        let fuzzed = run(&bin, &["-runs=300", "-seed=1"], &[]);
        assert!(fuzzed.status.success(), "{t}:\n{}", text(&fuzzed));
        assert!(text(&fuzzed).contains("Done 300 runs"), "{t}");
    }
    // A real crash: the cargo-fuzz fixture under its variant crashes the
    // `scenario` binary, and runs clean on the fixed model.
    let scenario = out.join("scenario");
    let input = fixture.to_str().unwrap();
    let crash = run(
        &scenario,
        &[input],
        &[("MMHARNESS_VARIANTS", "hvo-restore-fail-frees")],
    );
    assert!(!crash.status.success());
    assert!(
        text(&crash).contains("==== mmharness: VIOLATION of no-bad-page-at-free"),
        "{}",
        text(&crash)
    );
    let clean = run(&scenario, &[input], &[]);
    assert!(clean.status.success(), "{}", text(&clean));
    // A bad setting stops a target before it fuzzes, with status 2.
    let bad = run(&scenario, &["-runs=1"], &[("MMHARNESS_CPUS", "9")]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    std::fs::remove_dir_all(&out).unwrap();
}
