//! `mmharness minimize`.

use super::seconds;
use crate::engine::minimize;
use crate::exec::run_input;
use crate::scenario::Scenario;
use crate::ui::render;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct Minimize {
    file: PathBuf,
    /// Where to write the result [default: FILE with extension .min.json].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 60.0, value_name = "SECS", value_parser = seconds)]
    time: f64,
}

impl Minimize {
    pub fn run(self) -> Result<ExitCode, String> {
        let s = Scenario::load(&self.file).map_err(|e| e.to_string())?;
        let o = run_input(&s, false);
        let Some(target) = o.oracle() else {
            println!(
                "{}: replays clean; nothing to minimize",
                self.file.display()
            );
            return Ok(ExitCode::SUCCESS);
        };
        let min = minimize(&s, target, Duration::from_secs_f64(self.time));
        let dest = self
            .out
            .unwrap_or_else(|| self.file.with_extension("min.json"));
        let path = min
            .save_new(&dest)
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        println!("{} -> {}", render::size(&s), render::size(&min));
        println!(
            "written: {}\nreplay:  mmharness replay {}",
            path.display(),
            path.display()
        );
        Ok(ExitCode::from(1))
    }
}
