//! `mmharness import`: a cargo-fuzz or bolero crash (raw bytes) as a
//! scenario file.

use super::EXIT_MODEL_PANIC;
use crate::exec::run_input;
use crate::model::Variant;
use crate::ui::fuzz::{
    Checked, Settings, TARGET_VAR, Target, VARS, check_bytes, parse_settings_file,
    recorded_settings, sha1_hex,
};
use crate::ui::render;
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// The settings come, per variable, from the flag, else the artifact's
/// `.settings` file (written beside a crash by the fuzz targets and the
/// bolero harness), else the `MMHARNESS_*` environment, else the target's
/// defaults.
#[derive(Args, Debug)]
pub struct Import {
    /// The crash: the raw input bytes (`fuzz/artifacts/TARGET/crash-*`,
    /// `tests/__fuzz__/*/crashes/*`, a `cargo fuzz tmin` result).
    artifact: PathBuf,
    /// The fuzz target that found it: `scenario` or a subsystem's target
    /// (`hvo`, `migration`, ...) [default: as recorded, else scenario].
    #[arg(long, value_name = "T")]
    target: Option<String>,
    /// Where to write the scenario [default: counterexamples/fuzz-SHA1.json].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Bug variants, comma-separated or repeated (MMHARNESS_VARIANTS).
    #[arg(long = "variant", value_name = "NAME", value_delimiter = ',',
          value_parser = Variant::from_name)]
    variants: Vec<Variant>,
    /// Op families: `any`, `all` or subsystems joined by commas (MMHARNESS_OPS).
    #[arg(long, value_name = "OPS")]
    ops: Option<String>,
    /// CPUs per scenario, at most (MMHARNESS_CPUS).
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Memory in hugetlb-sized blocks, N or LO-HI (MMHARNESS_MEMORY_BLOCKS).
    #[arg(long, value_name = "N|LO-HI")]
    memory_blocks: Option<String>,
    /// Hugetlb folio order, N or LO-HI (MMHARNESS_HUGETLB_ORDER).
    #[arg(long, value_name = "N|LO-HI")]
    hugetlb_order: Option<String>,
    /// HVO mode (MMHARNESS_HVO_MODE).
    #[arg(long, value_name = "MODE")]
    hvo_mode: Option<String>,
    /// Architecture: x86, arm64 or arm64-llsc (MMHARNESS_ARCH).
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
    /// Ignore the artifact's `.settings` file.
    #[arg(long)]
    no_recorded: bool,
}

impl Import {
    /// The flags, by the variable each stands for.
    fn flags(&self) -> BTreeMap<&'static str, String> {
        let variants: Vec<&str> = self.variants.iter().map(|v| v.name()).collect();
        let pairs = [
            (
                "MMHARNESS_VARIANTS",
                (!variants.is_empty()).then(|| variants.join(",")),
            ),
            ("MMHARNESS_HVO_MODE", self.hvo_mode.clone()),
            ("MMHARNESS_ARCH", self.arch.clone()),
            ("MMHARNESS_CPUS", self.cpus.clone()),
            ("MMHARNESS_OPS", self.ops.clone()),
            ("MMHARNESS_MEMORY_BLOCKS", self.memory_blocks.clone()),
            ("MMHARNESS_HUGETLB_ORDER", self.hugetlb_order.clone()),
        ];
        pairs
            .into_iter()
            .filter_map(|(name, v)| v.map(|v| (name, v)))
            .collect()
    }

    pub fn run(self) -> Result<ExitCode, String> {
        let shown = self.artifact.display().to_string();
        let data =
            std::fs::read(&self.artifact).map_err(|e| format!("{shown}: cannot read: {e}"))?;
        let recorded_path = recorded_settings(&self.artifact).filter(|_| !self.no_recorded);
        let recorded = match &recorded_path {
            None => None,
            Some(recorded_path) => {
                let origin = recorded_path.display().to_string();
                let text = std::fs::read_to_string(recorded_path)
                    .map_err(|e| format!("{origin}: cannot read: {e}"))?;
                Some(parse_settings_file(&text, &origin)?)
            }
        };
        let recorded_var = |name: &str| recorded.as_ref().and_then(|r| r.get(name).cloned());
        let target_name = self
            .target
            .clone()
            .or_else(|| recorded_var(TARGET_VAR))
            .unwrap_or_else(|| "scenario".into());
        let target = Target::parse(&target_name).map_err(|e| format!("--target: {e}"))?;
        let flags = self.flags();
        let settings = Settings::from_vars(target, |name| {
            flags
                .get(name)
                .cloned()
                .or_else(|| recorded_var(name))
                .or_else(|| std::env::var(name).ok())
        })
        .map_err(|e| {
            // Name the flag for a value given as one.
            let var = VARS.iter().find(|v| e.starts_with(**v));
            match var {
                Some(v) if flags.contains_key(v) => {
                    format!("--{}{}", flag_name(v), e.strip_prefix(v).unwrap_or(&e))
                }
                _ => e,
            }
        })?;
        let sha1 = sha1_hex(&data);
        if let (Some(r), Some(recorded_path)) = (&recorded, &recorded_path) {
            println!(
                "settings recorded in {}: {}",
                recorded_path.display(),
                if r.is_empty() {
                    "none".to_string()
                } else {
                    r.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            );
        }
        println!("{shown}: {} bytes, sha1 {sha1}", data.len());
        println!("decoded with: {}", settings.label);
        let (scenario, exit) = match check_bytes(
            &data,
            &settings,
            &format!("imported from {shown} by `mmharness import`"),
        ) {
            Checked::Failed(f) => {
                let exit = if f.violation {
                    ExitCode::from(1)
                } else {
                    ExitCode::from(EXIT_MODEL_PANIC)
                };
                println!("{}", f.headline);
                // The file must replay to it with the schedule recorded.
                let again = run_input(&f.scenario, false);
                match (&f.scenario.expect, again.violation()) {
                    (Some(e), Some(d)) if e.matches(d) => {}
                    (None, _) => {}
                    _ => eprintln!(
                        "warning: the scenario does not replay to the same verdict ({}); is the model nondeterministic?",
                        render::verdict(&again)
                    ),
                }
                (f.scenario, exit)
            }
            Checked::Clean(s) => {
                eprintln!(
                    "warning: {shown} runs clean under these settings; a crash replays only with the target and settings it was found with (give --target and the settings flags, or MMHARNESS_* as in that run)"
                );
                let mut s = *s;
                s.note = Some(format!(
                    "imported from {shown} by `mmharness import` ({}); input sha1 {sha1}; runs clean",
                    settings.label
                ));
                (s, ExitCode::SUCCESS)
            }
            Checked::Rejected => {
                return Err(format!(
                    "{shown}: the `{}` target rejects this input (no CPU runs a {} op), so it cannot be a crash of that target: give the --target that found it",
                    target.name(),
                    match target {
                        Target::Of(s) => s.name(),
                        Target::Scenario => unreachable!("the scenario target keeps every input"),
                    }
                ));
            }
        };
        let dest = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("counterexamples").join(format!("fuzz-{sha1}.json")));
        let path = scenario
            .save_new(&dest)
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        println!("scenario: {}", render::size(&scenario));
        println!("written:  {}", path.display());
        println!("replay:   mmharness replay {}", path.display());
        println!("minimize: mmharness minimize {}", path.display());
        Ok(exit)
    }
}

/// `MMHARNESS_MEMORY_BLOCKS` -> `memory-blocks`; `MMHARNESS_VARIANTS` ->
/// `variant`.
fn flag_name(var: &str) -> String {
    match var {
        "MMHARNESS_VARIANTS" => "variant".into(),
        v => v
            .trim_start_matches("MMHARNESS_")
            .to_lowercase()
            .replace('_', "-"),
    }
}
