//! The `mmharness` command line: exit codes (0 clean, 1 violation, 2 usage
//! or input error), messages that name the problem, no panics, and saved
//! counterexamples that replay and are never overwritten.

use mmharness::model::Variant;
use mmharness::scenario::Scenario;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_mmharness");

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mmharness-cli-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn assert_exit(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{}", self.show());
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "the binary panicked: {}",
            self.show()
        );
        self
    }

    fn assert_stderr_has(&self, what: &str) -> &Self {
        assert!(
            self.stderr.contains(what),
            "stderr lacks {what:?}: {}",
            self.show()
        );
        self
    }

    fn assert_stdout_has(&self, what: &str) -> &Self {
        assert!(
            self.stdout.contains(what),
            "stdout lacks {what:?}: {}",
            self.show()
        );
        self
    }
}

fn mmharness_in(dir: Option<&Path>, args: &[&str]) -> Run {
    mmharness_env(dir, args, &[])
}

/// With the fuzz settings cleared from the environment, then `envs` set.
fn mmharness_env(dir: Option<&Path>, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_BACKTRACE", "0");
    for var in mmharness::ui::fuzz::VARS {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run mmharness");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn mmharness(args: &[&str]) -> Run {
    mmharness_in(None, args)
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(format!("{name}.json"))
}

fn corpus_text(name: &str) -> String {
    std::fs::read_to_string(corpus(name)).expect("corpus file")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A valid scenario in JSON, to corrupt in the bad-input tests.
fn valid_json() -> String {
    corpus_text("hvo-restore-fail-frees")
}

/// A valid scenario with user addresses: a fault on page 3 of mm0, then
/// GUP-fast of it racing its migration.
fn gup_json() -> String {
    use mmharness::model::op::{MmArg, Order, PageArg, PfnArg};
    use mmharness::model::{Config, Op, VariantSet};
    let (mm, addr) = (MmArg(0), PageArg(3));
    let config = Config {
        variants: VariantSet::new(&[Variant::GupFastNoRecheck]),
        ..Config::default()
    };
    Scenario::new(
        config,
        vec![Op::HandleMmFault {
            mm,
            addr,
            pfn_hint: PfnArg(896),
            order: Order(0),
        }],
        vec![
            vec![Op::GetUserPagesFast { mm, addr }],
            vec![Op::MigratePages {
                mm,
                addr,
                pfn_hint: PfnArg(663),
            }],
        ],
    )
    .to_json()
}

/// `valid_json()` with the first `from` replaced by `to`.
fn edited(from: &str, to: &str) -> String {
    let text = valid_json();
    assert!(text.contains(from), "the fixture lacks {from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn variants_lists_every_variant() {
    let r = mmharness(&["variants"]);
    r.assert_exit(0);
    let listed: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let known: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
    assert_eq!(listed, known, "{}", r.show());
    for v in Variant::ALL {
        let line = r
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(v.name()))
            .unwrap();
        assert!(
            line.contains(v.breaks()),
            "{v}: description missing: {line}"
        );
    }
}

#[test]
fn replay_of_a_corpus_file_reports_the_violation() {
    let file = corpus("hvo-no-rcu-sync");
    let expect = Scenario::load(&file).unwrap().expect.unwrap();
    let r = mmharness(&["replay", s(&file)]);
    r.assert_exit(1)
        .assert_stdout_has(&format!("VIOLATION {}", expect.oracle))
        .assert_stdout_has(&format!(
            "reproduces the expected {} in {}()",
            expect.oracle, expect.func
        ));
    // The interleaving table has one column per CPU.
    let header = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("step"))
        .unwrap_or_else(|| panic!("no table header: {}", r.show()));
    assert!(header.contains("CPU 0"), "{header}");
    assert!(header.contains("CPU 1"), "{header}");
    assert!(!header.contains("CPU 2"), "two CPUs only: {header}");
    assert!(
        header.find("CPU 0") < header.find("CPU 1"),
        "columns out of order: {header}"
    );
    // --quiet prints the verdict, not the table.
    let q = mmharness(&["replay", "--quiet", s(&file)]);
    q.assert_exit(1)
        .assert_stdout_has(&format!("VIOLATION {}", expect.oracle));
    assert!(
        !q.stdout.lines().any(|l| l.trim_start().starts_with("step")),
        "--quiet printed the table: {}",
        q.show()
    );
}

#[test]
fn replay_of_a_clean_scenario_exits_0() {
    let dir = TempDir::new("clean");
    // The same race with the variant switched off, and nothing expected.
    let mut fixed = Scenario::load(&corpus("hvo-restore-fail-frees")).unwrap();
    fixed.config.variants = Default::default();
    fixed.expect = None;
    let file = dir.write("fixed.json", &fixed.to_json());
    let r = mmharness(&["replay", s(&file)]);
    r.assert_exit(0).assert_stdout_has("clean");
    assert!(!r.stdout.contains("VIOLATION"), "{}", r.show());
}

#[test]
fn replay_that_does_not_reproduce_its_expect_exits_3() {
    let dir = TempDir::new("regressed");
    // The variant switched off, but the file still `expect`s its violation:
    // a regression a script or CI must notice.
    let fixed = edited(r#""hvo-restore-fail-frees""#, "");
    let file = dir.write("fixed.json", &fixed);
    let r = mmharness(&["replay", s(&file)]);
    r.assert_exit(3)
        .assert_stdout_has("clean")
        .assert_stdout_has("DOES NOT REPRODUCE");
    // A different violation than the one expected does not reproduce it
    // either.
    let other = edited(
        r#""oracle": "no-bad-page-at-free""#,
        r#""oracle": "no-use-after-remap""#,
    );
    let file = dir.write("other.json", &other);
    mmharness(&["replay", s(&file)])
        .assert_exit(3)
        .assert_stdout_has("DOES NOT REPRODUCE");
}

#[test]
fn bad_input_exits_2_naming_the_problem() {
    let dir = TempDir::new("bad");
    let valid = valid_json();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "malformed.json",
            valid.replacen(',', ";", 1),
            "malformed JSON",
        ),
        (
            "truncated.json",
            valid[..valid.len() / 2].to_string(),
            "truncated file",
        ),
        (
            "unknown-variant.json",
            edited("hvo-restore-fail-frees", "hvo-frobnicate"),
            "unknown variant `hvo-frobnicate`",
        ),
        (
            "unknown-op.json",
            edited(r#""op": "shrink_huge_pool""#, r#""op": "frobnicate_folio""#),
            "frobnicate_folio",
        ),
        (
            "version.json",
            edited(r#""version": 1"#, r#""version": 7"#),
            "version 7 is not supported",
        ),
        (
            "format.json",
            edited(
                r#""format": "mmharness-scenario""#,
                r#""format": "kcov-trace""#,
            ),
            "format is `kcov-trace`",
        ),
        (
            "schedule.json",
            edited("\"schedule\": [\n    1\n  ]", r#""schedule": [0, 1, 5]"#),
            "schedule[2] names CPU 5",
        ),
        (
            "pfn.json",
            edited(r#""pfn_hint": 832"#, r#""pfn_hint": 4000000000"#),
            "setup[0] (alloc_pool_huge_folio): field `pfn_hint` is 4000000000, out of range 0..=1023",
        ),
        (
            "count.json",
            edited(r#""count": 1"#, r#""count": 0"#),
            "cpus[1][0] (fail_next_allocs): field `count` is 0, out of range 1..=16",
        ),
        (
            "index.json",
            gup_json().replacen(r#""addr": 3"#, r#""addr": 200"#, 1),
            "setup[0] (handle_mm_fault): field `addr` is 200, out of range 0..=3",
        ),
        (
            "mm.json",
            gup_json().replacen(r#""mm": 0"#, r#""mm": 7"#, 2).replacen(
                r#""mm": 7"#,
                r#""mm": 0"#,
                1,
            ),
            "cpus[0][0] (get_user_pages_fast): field `mm` is 7, out of range 0..=1",
        ),
        (
            "page-cache-index.json",
            corpus_text("hvo-no-rcu-sync").replacen(r#""index": 0"#, r#""index": 250"#, 1),
            "setup[0] (filemap_add_folio): field `index` is 250, out of range 0..=7",
        ),
        (
            "order.json",
            gup_json().replacen(r#""order": 0"#, r#""order": 3"#, 1),
            "field `order` is 3, out of range 0..=1",
        ),
        ("empty.json", String::new(), "truncated file"),
        ("array.json", "[1, 2, 3]".into(), "not a valid scenario"),
    ];
    for (name, text, message) in cases {
        let file = dir.write(name, &text);
        let r = mmharness(&["replay", s(&file)]);
        r.assert_exit(2).assert_stderr_has(message);
        // The message names the file it is about.
        r.assert_stderr_has(name);
        // `minimize` reads files the same way.
        mmharness(&["minimize", s(&file)])
            .assert_exit(2)
            .assert_stderr_has(message);
    }
    let missing = dir.path("does-not-exist.json");
    mmharness(&["replay", s(&missing)])
        .assert_exit(2)
        .assert_stderr_has("does-not-exist.json")
        .assert_stderr_has("cannot read");
}

#[test]
fn hunt_with_an_unknown_variant_exits_2() {
    let dir = TempDir::new("unknown-variant");
    let r = mmharness_in(
        Some(&dir.0),
        &["hunt", "--variant", "does-not-exist", "--engine", "input"],
    );
    r.assert_exit(2)
        .assert_stderr_has("unknown variant `does-not-exist`")
        .assert_stderr_has("hvo-no-rcu-sync");
    assert!(!dir.path("counterexamples").exists());
}

#[test]
fn hunt_on_the_fixed_model_exits_0() {
    let dir = TempDir::new("fixed");
    let r = mmharness_in(
        Some(&dir.0),
        &[
            "hunt",
            "--engine",
            "input",
            "--ops",
            "hvo",
            "--hvo-mode",
            "keep-1",
            "--arch",
            "x86",
            "--iterations",
            "200",
        ],
    );
    r.assert_exit(0).assert_stdout_has("clean");
    assert!(
        r.stdout.starts_with("hunting") && r.stdout.contains("\n200 scenarios"),
        "--iterations 200 not honoured: {}",
        r.show()
    );
    assert!(!r.stdout.contains("VIOLATION"), "{}", r.show());
    assert!(
        !dir.path("counterexamples").exists(),
        "a clean hunt wrote counterexamples"
    );
}

#[test]
fn hunt_runs_hvo_on_every_architecture_unless_one_is_pinned() {
    let args = [
        "hunt",
        "--engine",
        "input",
        "--ops",
        "hvo",
        "--iterations",
        "20",
    ];
    let every = mmharness(&args);
    every
        .assert_exit(0)
        .assert_stdout_has("x86,arm64,arm64-llsc), memory");
    assert!(every.stdout.contains("4 arm(s)"), "{}", every.show());
    let pinned = mmharness(&[&args[..], &["--arch", "arm64"]].concat());
    pinned.assert_exit(0).assert_stdout_has(", arm64), memory");
    assert!(
        pinned.stdout.contains("2 arm(s)") && !pinned.stdout.contains("x86"),
        "{}",
        pinned.show()
    );
}

#[test]
fn hunt_takes_memory_and_order_as_values_or_ranges() {
    let args = ["hunt", "--engine", "input", "--ops", "hvo", "--arch", "x86"];
    let ranged = mmharness(
        &[
            &args[..],
            &[
                "--memory-blocks",
                "3-4",
                "--hugetlb-order",
                "8-9",
                "--iterations",
                "20",
            ],
        ]
        .concat(),
    );
    ranged
        .assert_exit(0)
        .assert_stdout_has("memory 3-4 blocks, hugetlb order 8-9,");
    let pinned = mmharness(&[&args[..], &["--memory-blocks", "3", "--iterations", "20"]].concat());
    pinned
        .assert_exit(0)
        .assert_stdout_has("memory 3-3 blocks, hugetlb order 9-9,");
    for (flag, value) in [
        ("--memory-blocks", "4-3"),
        ("--memory-blocks", "9"),
        ("--hugetlb-order", "6-8"),
        ("--hugetlb-order", "x"),
    ] {
        mmharness(&[&args[..], &[flag, value, "--iterations", "1"]].concat())
            .assert_exit(2)
            .assert_stderr_has(&format!(
                "invalid value '{value}' for '{flag} <N|LO-HI>': `{value}` is not a value or a range LO-HI"
            ));
    }
}

/// `--engine` is repeatable: the arms are those engines' only.
#[test]
fn hunt_pins_a_set_of_engines() {
    let args = [
        "hunt",
        "--ops",
        "hvo",
        "--hvo-mode",
        "keep-1",
        "--arch",
        "x86",
        "--iterations",
        "4",
    ];
    mmharness(&[&args[..], &["--engine", "pct", "--engine", "input"]].concat())
        .assert_exit(0)
        .assert_stdout_has("2 arm(s) (2 engine(s) x 1 op arm(s)")
        .assert_stdout_has("  pct / hvo arm")
        .assert_stdout_has("  input / hvo arm");
    mmharness(&[&args[..], &["--engine", "pct", "--engine", "pct"]].concat())
        .assert_exit(0)
        .assert_stdout_has("1 arm(s) (1 engine(s) x 1 op arm(s)");
    mmharness(&[&args[..], &["--engine", "pct", "--engine", "mcts"]].concat())
        .assert_exit(2)
        .assert_stderr_has("invalid value 'mcts' for '--engine <ENGINES>'");
}

#[test]
fn hunt_finds_saves_and_never_overwrites() {
    let dir = TempDir::new("hunt");
    let out = dir.path("x.json");
    let args = [
        "hunt",
        "--variant",
        "hvo-restore-fail-frees",
        "--engine",
        "input",
        "--time",
        "20",
        "--out",
        s(&out),
    ];
    let r = mmharness_in(Some(&dir.0), &args);
    r.assert_exit(1)
        .assert_stdout_has("VIOLATION")
        .assert_stdout_has(s(&out));
    assert!(out.exists(), "--out not written: {}", r.show());
    let first = Scenario::load(&out).expect("the saved file loads");
    assert!(first.expect.is_some(), "saved without `expect`");
    let build = first.build.as_ref().expect("saved without its build");
    assert_eq!(build.commit, env!("MMHARNESS_GIT_COMMIT"));
    assert_eq!(build.model_hash, env!("MMHARNESS_MODEL_HASH"));
    assert!(first.config.variants.has(Variant::HvoRestoreFailFrees));
    mmharness(&["replay", s(&out)])
        .assert_exit(1)
        .assert_stdout_has("reproduces the expected");
    // The unminimized finding goes next to it.
    let raws = || {
        std::fs::read_dir(&dir.0)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with("x.raw") && name.ends_with(".json")
            })
            .count()
    };
    assert_eq!(raws(), 1, "{}", r.show());
    assert!(!dir.path("counterexamples").exists());

    // Mark the saved file, hunt again with the same --out: the mark stays
    // and the new finding goes next to it.
    let mut marked = first.clone();
    marked.note = Some("sentinel: must not be overwritten".into());
    std::fs::write(&out, marked.to_json()).unwrap();
    let r2 = mmharness_in(Some(&dir.0), &args);
    r2.assert_exit(1);
    let kept = Scenario::load(&out).unwrap();
    assert_eq!(kept, marked, "the first counterexample was overwritten");
    let second = dir.path("x-1.json");
    assert!(second.exists(), "second finding not saved: {}", r2.show());
    r2.assert_stdout_has(s(&second));
    mmharness(&["replay", s(&second)]).assert_exit(1);
    assert_eq!(raws(), 2, "the raw finding was overwritten");
}

/// `hunt --raw-out`: the input engine's finding as raw bytes and the
/// `scenario` target's settings, which `import` (the fuzz targets' check)
/// decodes to the same ops and the same violation; on arm64 for a variant
/// of that architecture.
#[test]
fn hunt_raw_out_writes_input_bytes_that_import_reproduces() {
    let dir = TempDir::new("raw-out");
    let (out, raw) = (dir.path("x.json"), dir.path("x.bin"));
    let r = mmharness_in(
        Some(&dir.0),
        &[
            "hunt",
            "--variant",
            "hvo-bbm-no-pause",
            "--engine",
            "input",
            "--time",
            "20",
            "--minimize-time",
            "1",
            "--out",
            s(&out),
            "--raw-out",
            s(&raw),
        ],
    );
    r.assert_exit(1).assert_stdout_has("raw input:");
    let settings = std::fs::read_to_string(dir.path("x.bin.settings")).expect("settings written");
    for line in [
        "MMHARNESS_TARGET=scenario",
        "MMHARNESS_VARIANTS=hvo-bbm-no-pause",
        "MMHARNESS_ARCH=arm64",
    ] {
        assert!(settings.lines().any(|l| l == line), "{line}: {settings}");
    }
    let imported = dir.path("y.json");
    mmharness_in(Some(&dir.0), &["import", s(&raw), "--out", s(&imported)])
        .assert_exit(1)
        .assert_stdout_has("VIOLATION of no-fault-on-vmemmap-access");
    let found = Scenario::load(&dir.path("x.raw.json")).expect("the unminimized finding");
    let imported = Scenario::load(&imported).expect("the imported file loads");
    assert_eq!(
        (&imported.setup, &imported.cpus, &imported.config),
        (&found.setup, &found.cpus, &found.config)
    );
    // Only the input engine's findings are input bytes.
    mmharness(&[
        "hunt",
        "--variant",
        "hvo-bbm-no-pause",
        "--raw-out",
        s(&dir.path("z.bin")),
    ])
    .assert_exit(2)
    .assert_stderr_has("--raw-out needs --engine input");
    assert!(!dir.path("z.bin").exists());
}

#[test]
fn minimize_writes_a_replayable_file() {
    let dir = TempDir::new("minimize");
    let src = dir.write("in.json", &corpus_text("hvo-no-rcu-sync"));
    let out = dir.path("min.json");
    let r = mmharness(&["minimize", s(&src), "--out", s(&out), "--time", "10"]);
    r.assert_exit(1).assert_stdout_has(s(&out));
    let min = Scenario::load(&out).unwrap();
    let orig = Scenario::load(&src).unwrap();
    assert!(min.op_count() <= orig.op_count());
    assert_eq!(
        min.expect.as_ref().map(|e| e.oracle),
        orig.expect.as_ref().map(|e| e.oracle)
    );
    mmharness(&["replay", s(&out)])
        .assert_exit(1)
        .assert_stdout_has("reproduces the expected");
}

#[test]
fn usage_errors_exit_2() {
    mmharness(&["frobnicate"]).assert_exit(2);
    mmharness(&["replay"]).assert_exit(2);
    let dir = TempDir::new("usage");
    mmharness_in(Some(&dir.0), &["hunt", "--engine", "input", "--time", "0"])
        .assert_exit(2)
        .assert_stderr_has("--time");
}

/// Ctrl-C stops a hunt cleanly: the summary so far, and exit status 130.
#[test]
fn ctrl_c_stops_a_hunt_with_its_summary() {
    let dir = TempDir::new("ctrl-c");
    let child = Command::new(BIN)
        .args(["hunt", "--engine", "input", "--time", "60"])
        .current_dir(&dir.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mmharness");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("(interrupted)"), "{stdout}");
    assert!(stdout.contains(" scenarios "), "{stdout}");
}

/// A crash fixture (raw fuzzer input) copied into `dir`, with its recorded
/// `.settings` if `with_settings`.
fn crash_fixture(dir: &TempDir, name: &str, with_settings: bool) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dest = dir.path(name);
    std::fs::copy(&src, &dest).expect("copy fixture");
    if with_settings {
        let settings = mmharness::ui::fuzz::settings_path(&src);
        std::fs::copy(&settings, mmharness::ui::fuzz::settings_path(&dest)).expect("copy settings");
    }
    dest
}

fn sha1_of(path: &Path) -> String {
    mmharness::ui::fuzz::sha1_hex(&std::fs::read(path).unwrap())
}

#[test]
fn import_turns_a_cargo_fuzz_crash_into_a_scenario_file() {
    let dir = TempDir::new("import");
    let crash = crash_fixture(&dir, "cargo-fuzz-scenario-hvo-restore-fail-frees", true);
    let r = mmharness_in(Some(&dir.0), &["import", s(&crash)]);
    r.assert_exit(1)
        .assert_stdout_has("MMHARNESS_VARIANTS=hvo-restore-fail-frees")
        .assert_stdout_has("VIOLATION of no-bad-page-at-free");
    let out = dir
        .path("counterexamples")
        .join(format!("fuzz-{}.json", sha1_of(&crash)));
    r.assert_stdout_has(&format!(
        "written:  counterexamples/fuzz-{}",
        sha1_of(&crash)
    ));
    let sc = Scenario::load(&out).expect("the imported file loads");
    assert!(sc.config.variants.has(Variant::HvoRestoreFailFrees));
    let expect = sc.expect.as_ref().expect("expect set from the violation");
    assert_eq!(expect.oracle.to_string(), "no-bad-page-at-free");
    let build = sc.build.as_ref().expect("the build recorded");
    assert_eq!(build.model_hash, env!("MMHARNESS_MODEL_HASH"));
    let note = sc.note.as_deref().unwrap_or_default();
    assert!(
        note.contains("imported from") && note.contains(&sha1_of(&crash)),
        "{note}"
    );
    // The schedule actually taken: the file replays to the violation.
    mmharness(&["replay", s(&out)])
        .assert_exit(1)
        .assert_stdout_has("reproduces the expected no-bad-page-at-free");
    // Imported again: written next to it, never over it.
    let again = mmharness_in(Some(&dir.0), &["import", s(&crash)]);
    again.assert_exit(1);
    let second = dir
        .path("counterexamples")
        .join(format!("fuzz-{}-1.json", sha1_of(&crash)));
    assert_eq!(Scenario::load(&second).unwrap().cpus, sc.cpus);
    assert_eq!(Scenario::load(&out).unwrap(), sc);
}

#[test]
fn import_takes_settings_from_flags_and_environment() {
    let dir = TempDir::new("import-settings");
    // Without its .settings file the crash decodes under the fixed model:
    // written anyway, with a warning, exit 0.
    let crash = crash_fixture(&dir, "cargo-fuzz-scenario-hvo-restore-fail-frees", false);
    let clean = dir.path("clean.json");
    mmharness(&["import", s(&crash), "--out", s(&clean)])
        .assert_exit(0)
        .assert_stderr_has("runs clean under these settings");
    let sc = Scenario::load(&clean).unwrap();
    assert!(sc.expect.is_none() && sc.config.variants.is_empty());
    // The same bytes with the variant given as a flag, or in the
    // environment, reproduce the crash: the same ops as recorded.
    let flag = dir.path("flag.json");
    mmharness(&[
        "import",
        s(&crash),
        "--variant",
        "hvo-restore-fail-frees",
        "--out",
        s(&flag),
    ])
    .assert_exit(1);
    let env = dir.path("env.json");
    mmharness_env(
        None,
        &["import", s(&crash), "--out", s(&env)],
        &[("MMHARNESS_VARIANTS", "hvo-restore-fail-frees")],
    )
    .assert_exit(1);
    let (flag, env) = (
        Scenario::load(&flag).unwrap(),
        Scenario::load(&env).unwrap(),
    );
    assert_eq!((&flag.setup, &flag.cpus), (&env.setup, &env.cpus));
    // The variant's own op family decodes the same ops on the fixed model
    // (without it, the bytes pick their family, as the fixed model's
    // target does).
    let family = dir.path("family.json");
    mmharness(&["import", s(&crash), "--ops", "hvo", "--out", s(&family)]).assert_exit(0);
    let family = Scenario::load(&family).unwrap();
    assert_eq!((&flag.setup, &flag.cpus), (&family.setup, &family.cpus));
    // A flag overrides the recorded settings.
    let recorded = crash_fixture(&dir, "bolero-scenario-hvo-no-rcu-sync", true);
    mmharness(&["import", s(&recorded), "--out", s(&dir.path("b.json"))])
        .assert_exit(1)
        .assert_stdout_has("VIOLATION of no-write-through-ro-vmemmap in atomic_add_unless()");
    let keep2 = dir.path("keep2.json");
    let r = mmharness(&[
        "import",
        s(&recorded),
        "--hvo-mode",
        "keep-2",
        "--out",
        s(&keep2),
    ]);
    r.assert_stdout_has("hvo-no-rcu-sync model, keep-2 HVO");
    assert_eq!(
        Scenario::load(&keep2).unwrap().config.hvo_mode.name(),
        "keep-2"
    );
    // --no-recorded ignores the file: the fixed model, clean.
    mmharness(&[
        "import",
        s(&recorded),
        "--no-recorded",
        "--out",
        s(&dir.path("n.json")),
    ])
    .assert_exit(0)
    .assert_stdout_has("fixed model");
}

/// Zero bytes decode to the simplest ops of the target's arm: an HVO op
/// first for `hvo` (kept), a page-cache op for `migration`, whose target
/// rejects a scenario in which no CPU migrates.
#[test]
fn import_decodes_with_the_targets_defaults() {
    let dir = TempDir::new("import-target");
    let zeros = dir.path("zeros");
    std::fs::write(&zeros, [0u8; 48]).unwrap();
    let hvo = dir.path("hvo.json");
    mmharness(&["import", s(&zeros), "--target", "hvo", "--out", s(&hvo)])
        .assert_exit(0)
        .assert_stdout_has("target hvo")
        .assert_stdout_has("page-cache,hvo,inject ops");
    let sc = Scenario::load(&hvo).unwrap();
    assert!(
        sc.cpus.iter().flatten().any(|op| op.name() == "pfn_walk"),
        "{sc:?}"
    );
    mmharness(&["import", s(&zeros), "--target", "migration"])
        .assert_exit(2)
        .assert_stderr_has("the `migration` target rejects this input");
    // `--ops` widens the migration target's family; the bytes still decode
    // to no migration.
    mmharness(&["import", s(&zeros), "--target", "migration", "--ops", "all"])
        .assert_exit(2)
        .assert_stderr_has("rejects");
    assert!(!dir.path("counterexamples").exists());
}

#[test]
fn import_of_bad_input_exits_2_naming_the_problem() {
    let dir = TempDir::new("import-bad");
    let crash = crash_fixture(&dir, "cargo-fuzz-scenario-hvo-restore-fail-frees", false);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--target", "parser"],
            "target `parser` does not run scenarios",
        ),
        (vec!["--target", "frob"], "unknown target `frob`"),
        (
            vec!["--cpus", "9"],
            "--cpus: `9` is not a number of CPUs between 2 and 4",
        ),
        (
            vec!["--memory-blocks", "5-3"],
            "--memory-blocks: `5-3` is not a value or a range",
        ),
        (vec!["--hugetlb-order", "12"], "--hugetlb-order: `12`"),
        (
            vec!["--hvo-mode", "keep-3"],
            "--hvo-mode: unknown mode `keep-3`",
        ),
        (vec!["--ops", "frob"], "--ops: unknown op family `frob`"),
        (vec!["--variant", "frob"], "unknown variant `frob`"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["import", s(&crash)];
        args.extend(flags);
        mmharness_in(Some(&dir.0), &args)
            .assert_exit(2)
            .assert_stderr_has(message);
    }
    mmharness_env(
        Some(&dir.0),
        &["import", s(&crash)],
        &[("MMHARNESS_HVO_MODE", "keep-3")],
    )
    .assert_exit(2)
    .assert_stderr_has("MMHARNESS_HVO_MODE: unknown mode `keep-3`");
    std::fs::write(
        mmharness::ui::fuzz::settings_path(&crash),
        "MMHARNESS_FROB=1\n",
    )
    .unwrap();
    mmharness_in(Some(&dir.0), &["import", s(&crash)])
        .assert_exit(2)
        .assert_stderr_has(".settings:1: expected NAME=value");
    mmharness_in(Some(&dir.0), &["import", s(&dir.path("missing"))])
        .assert_exit(2)
        .assert_stderr_has("missing: cannot read");
    assert!(!dir.path("counterexamples").exists());
}

#[test]
fn bench_scoreboard_writes_every_hunt() {
    let dir = TempDir::new("bench-hunts");
    let tsv = dir.path("hunts.tsv");
    let r = mmharness(&[
        "bench",
        "--variants",
        "--variant",
        "fork-shares-pinned-page",
        "--engine",
        "input",
        "--seeds",
        "2",
        "--budget",
        "30",
        "--no-write",
        "--hunts",
        s(&tsv),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("| fork-shares-pinned-page | input | 2/2 |"),
        "{}",
        r.stdout
    );
    let text = std::fs::read_to_string(&tsv).expect("the hunts file");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (seed, l) in lines.iter().enumerate() {
        assert_eq!(
            l[..4],
            ["fork-shares-pinned-page", "input", &seed.to_string(), "1"],
            "{text}"
        );
        assert!(l[5].parse::<u64>().unwrap() > 0, "{text}");
    }
}
