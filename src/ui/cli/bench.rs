//! `mmharness bench`: throughput beside a bare shuttle test, libFuzzer's
//! own speed, and (with `--variants`) the time-to-find scoreboard. Prints
//! each table and writes it to BENCHMARKS.md with the command and the
//! machine.

use super::seconds;
use crate::engine::Engine;
use crate::engine::bench::{FuzzFigures, Score, Throughput, median, scoreboard, throughput};
use crate::model::{Config, Variant};
use crate::ui::progress::{Progress, catch_ctrl_c, interrupted};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct Bench {
    /// Runs per figure (medians are quoted).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 5.0, value_name = "SECS", value_parser = seconds)]
    time: f64,
    /// Print the throughput as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Skip the cargo-fuzz targets even if cargo-fuzz is installed.
    #[arg(long)]
    no_fuzz: bool,
    /// The time-to-find scoreboard instead: every variant and engine.
    #[arg(long)]
    variants: bool,
    /// Scoreboard: only these variants (repeatable).
    #[arg(long = "variant", value_name = "NAME", value_parser = Variant::from_name)]
    only: Vec<Variant>,
    /// Scoreboard: only these engines (repeatable).
    #[arg(long = "engine", value_enum)]
    engines: Vec<Engine>,
    /// Scoreboard: seeds per variant and engine.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Scoreboard: seconds each hunt may take.
    #[arg(long, default_value_t = 60.0, value_name = "SECS", value_parser = seconds)]
    budget: f64,
    /// Scoreboard: hunts run at a time, each on one thread. More than the
    /// machine's cores makes the times slower than a user's would be.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    jobs: u64,
    /// Where the tables go.
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Print only; leave the file alone.
    #[arg(long)]
    no_write: bool,
    /// Scoreboard: also write every hunt to FILE, one tab-separated line
    /// each: variant, engine, seed, found (1 or 0), seconds, executions,
    /// scenarios.
    #[arg(long, value_name = "FILE")]
    hunts: Option<PathBuf>,
}

impl Bench {
    pub fn run(self) -> Result<ExitCode, String> {
        catch_ctrl_c();
        crate::exec::quiet_shuttle_panics();
        if self.variants {
            return self.scoreboard();
        }
        let mut progress = Progress::new("bench");
        let mut t = throughput(
            Config::default(),
            self.runs,
            Duration::from_secs_f64(self.time),
            &mut |m| progress.message(m),
        );
        if !self.no_fuzz {
            t.fuzz = fuzz_figures(self.runs, self.time, &mut |m| progress.message(m));
        }
        progress.finish();
        if self.json {
            println!("{}", json(&t));
        }
        let table = throughput_table(&t);
        if !self.json {
            print!("{table}");
        }
        if !self.no_write {
            let command = format!("mmharness bench --runs {} --time {}", self.runs, self.time);
            write_section(&self.out, "throughput", &command, &table)?;
            eprintln!("written: {}", self.out.display());
        }
        Ok(ExitCode::SUCCESS)
    }

    fn scoreboard(&self) -> Result<ExitCode, String> {
        let variants = if self.only.is_empty() {
            Variant::ALL.to_vec()
        } else {
            self.only.clone()
        };
        let engines = if self.engines.is_empty() {
            Engine::ALL.to_vec()
        } else {
            self.engines.clone()
        };
        let mut progress = Progress::new("scoreboard");
        let scores = scoreboard(
            &variants,
            &engines,
            self.seeds,
            Duration::from_secs_f64(self.budget),
            self.jobs as usize,
            &interrupted,
            &mut |m| progress.message(m),
        );
        progress.finish();
        if let Some(path) = &self.hunts {
            std::fs::write(path, hunts_tsv(&scores))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let table = scoreboard_table(&scores, self.budget, self.seeds);
        print!("{table}");
        if !self.no_write && !interrupted() {
            // The command that reproduces the table, with the filters given.
            let mut command = String::from("mmharness bench --variants");
            for v in &self.only {
                let _ = write!(command, " --variant {v}");
            }
            for e in &self.engines {
                let _ = write!(command, " --engine {}", e.name());
            }
            let _ = write!(command, " --seeds {} --budget {}", self.seeds, self.budget);
            if self.jobs > 1 {
                let _ = write!(command, " --jobs {}", self.jobs);
            }
            write_section(&self.out, "scoreboard", &command, &table)?;
            eprintln!("written: {}", self.out.display());
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Every hunt of the scoreboard, one tab-separated line each.
fn hunts_tsv(scores: &[Score]) -> String {
    let mut out = String::new();
    for s in scores {
        for h in &s.hunts {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{:.1}\t{}\t{}",
                s.variant,
                s.engine.name(),
                h.seed,
                h.found as u8,
                h.secs,
                h.executions,
                h.scenarios
            );
        }
    }
    out
}

/// The machine, as the tables record it.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {rustc}")
}

fn json(t: &Throughput) -> String {
    let input = t.engine(Engine::Input).expect("the input engine ran");
    let mut v = serde_json::to_value(t).expect("figures serialise");
    let o = v.as_object_mut().expect("an object");
    o.insert("input_exec_per_s".into(), input.exec_per_s.into());
    o.insert("mean_steps".into(), input.mean_steps.into());
    o.insert("mean_cpu_steps".into(), input.mean_cpu_steps.into());
    o.insert("mean_cpus".into(), input.mean_cpus.into());
    o.insert(
        "ratio_input_to_toy".into(),
        (input.exec_per_s / t.toy_exec_per_s).into(),
    );
    v.to_string()
}

fn throughput_table(t: &Throughput) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Fixed model, default configuration; medians of {} runs x {} s each, in one process, alternating.\n",
        t.runs, t.secs
    );
    let _ = writeln!(s, "| what | exec/s | steps/s | vs bare shuttle |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for e in &t.engines {
        let _ = writeln!(
            s,
            "| {} engine (mean {:.2} CPUs, {:.1} steps, {:.1} of them CPU steps) | {:.0} | {:.0} | {:.2} |",
            e.engine.name(),
            e.mean_cpus,
            e.mean_steps,
            e.mean_cpu_steps,
            e.exec_per_s,
            e.steps_per_s,
            e.exec_per_s / t.toy_exec_per_s
        );
    }
    let _ = writeln!(
        s,
        "| bare shuttle: {} threads x {} locked updates, one Runner, random scheduler | {:.0} | {:.0} | 1.00 |",
        t.toy_threads,
        t.toy_steps,
        t.toy_exec_per_s,
        t.toy_exec_per_s * (t.toy_threads * t.toy_steps) as f64
    );
    for f in &t.fuzz {
        let _ = writeln!(
            s,
            "| cargo-fuzz `{}` target ({}) | {:.0} | | {:.2} |",
            f.target,
            f.build,
            f.exec_per_s,
            f.exec_per_s / t.toy_exec_per_s
        );
    }
    if !t.fuzz.is_empty() {
        let _ = writeln!(
            s,
            "\ncargo-fuzz rows: libFuzzer's `average_exec_per_sec`, medians of {} runs x {} s each, each its own process from an empty corpus in {}, run after the rows above.",
            t.runs,
            t.secs.ceil(),
            fuzz_corpus_base().display()
        );
    }
    s
}

fn scoreboard_table(scores: &[Score], budget: f64, seeds: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Every variant with its own subsystems' ops (`mmharness hunt --variant V --engine E --seed S --time {budget}`), seeds 0..{seeds}. Medians count a miss as more than the budget.\n"
    );
    let _ = writeln!(
        s,
        "| variant | engine | found | median time | median executions |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    for sc in scores {
        let time = sc
            .median_secs(budget)
            .map_or(format!("> {budget} s"), |t| format!("{t:.1} s"));
        let execs = sc
            .median_executions()
            .map_or("-".to_string(), |e| format!("{e:.0}"));
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {time} | {execs} |",
            sc.variant,
            sc.engine.name(),
            sc.found(),
            sc.hunts.len()
        );
    }
    s
}

/// Replace (or add) one section of the benchmarks file, keeping the others.
fn write_section(path: &Path, name: &str, command: &str, table: &str) -> Result<(), String> {
    let (start, end) = (format!("<!-- {name} -->"), format!("<!-- /{name} -->"));
    let body = format!(
        "{start}\nCommand: `{command}` on {} (commit {}).\n\n{table}{end}",
        machine(),
        commit()
    );
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{body}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n{body}\n", old.trim_end()),
    };
    std::fs::write(path, new).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn commit() -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let hash = out(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        out(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{hash}, modified")
    } else {
        hash
    }
}

/// How the fuzz targets are built, as the README's commands build them:
/// comparison tracing costs the scenario target more than half its
/// executions (the quiescence oracles' frame loops are all compares) and
/// buys nothing for a decoder that draws choices from ranges.
pub const FUZZ_BUILD_FLAGS: [&str; 3] = ["--sanitizer", "none", "--no-trace-compares"];

/// A build of the cargo-fuzz targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FuzzBuild {
    /// cargo-fuzz's edge instrumentation, with the README's flags; the
    /// scenario targets add the model's coverage as extra counters.
    Edges,
    /// `scripts/fuzz-kcov.sh`: the model's coverage only.
    KcovOnly,
}

impl FuzzBuild {
    /// What the table says of `target` in this build.
    fn label(self, target: &str) -> String {
        match self {
            FuzzBuild::Edges if target == "trivial" => {
                format!("libFuzzer, {}", FUZZ_BUILD_FLAGS.join(" "))
            }
            FuzzBuild::Edges => format!(
                "libFuzzer, {}: edges and the model's coverage",
                FUZZ_BUILD_FLAGS.join(" ")
            ),
            FuzzBuild::KcovOnly => {
                "libFuzzer, scripts/fuzz-kcov.sh: the model's coverage only".into()
            }
        }
    }

    /// `cargo fuzz SUB TARGET` in this build.
    fn command(self, sub: &str, target: &str) -> Command {
        match self {
            FuzzBuild::Edges => {
                let mut c = Command::new("cargo");
                c.args(["fuzz", sub, target]).args(FUZZ_BUILD_FLAGS);
                c
            }
            FuzzBuild::KcovOnly => {
                let mut c = Command::new("bash");
                c.args(["scripts/fuzz-kcov.sh", sub, target]);
                c
            }
        }
    }
}

/// libFuzzer's speed on the `scenario` target in each build, and on a
/// target that does nothing, when cargo-fuzz is installed and `fuzz/` is
/// here: the median of `runs` runs of `secs` each, from an empty corpus.
fn fuzz_figures(runs: usize, secs: f64, progress: &mut dyn FnMut(&str)) -> Vec<FuzzFigures> {
    let has_fuzz = Path::new("fuzz/Cargo.toml").exists()
        && Command::new("cargo")
            .args(["fuzz", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        return Vec::new();
    }
    let rows = [
        ("scenario", FuzzBuild::Edges),
        ("scenario", FuzzBuild::KcovOnly),
        ("trivial", FuzzBuild::Edges),
    ];
    let mut out = Vec::new();
    for (target, build) in rows {
        progress(&format!(
            "building the cargo-fuzz target {target} ({build:?})"
        ));
        let built = build
            .command("build", target)
            .output()
            .is_ok_and(|o| o.status.success());
        if !built {
            eprintln!(
                "mmharness bench: `cargo fuzz build {target}` ({build:?}) failed; skipping it"
            );
            continue;
        }
        let mut rates = Vec::with_capacity(runs);
        for run in 0..runs {
            progress(&format!(
                "cargo fuzz run {target} ({build:?}), run {} of {runs}",
                run + 1
            ));
            rates.extend(fuzz_rate(build, target, secs));
        }
        if !rates.is_empty() {
            out.push(FuzzFigures {
                target: target.into(),
                build: build.label(target),
                exec_per_s: median(rates),
            });
        }
    }
    out
}

/// Where the benchmark's libFuzzer runs keep their corpus: a tmpfs when
/// there is one. libFuzzer writes every input that reaches a new feature
/// there, thousands in a run's first seconds, and on this machine's ext4
/// `/tmp` creating those files cost about a quarter of the `scenario`
/// target's executions.
fn fuzz_corpus_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// libFuzzer's average executions per second over one run of `secs` from
/// an empty corpus.
fn fuzz_rate(build: FuzzBuild, target: &str, secs: f64) -> Option<f64> {
    let dir = fuzz_corpus_base().join(format!("mmharness-bench-{target}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let run = build
        .command("run", target)
        .arg(&dir)
        .args([
            "--",
            &format!("-max_total_time={}", secs.ceil() as u64),
            "-print_final_stats=1",
        ])
        .env_remove("MMHARNESS_VARIANTS")
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let stats = String::from_utf8_lossy(&run.ok()?.stderr).into_owned();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("stat::average_exec_per_sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
}
