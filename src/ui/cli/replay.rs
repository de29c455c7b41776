//! `mmharness replay`.

use super::{EXIT_MODEL_PANIC, EXIT_NOT_REPRODUCED};
use crate::exec::{Verdict, run_input};
use crate::scenario::{Build, Scenario};
use crate::ui::render;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct Replay {
    file: PathBuf,
    /// Print only the verdict.
    #[arg(long)]
    quiet: bool,
}

impl Replay {
    pub fn run(self) -> Result<ExitCode, String> {
        replay(&self.file, self.quiet)
    }
}

fn replay(file: &Path, quiet: bool) -> Result<ExitCode, String> {
    let s = Scenario::load(file).map_err(|e| e.to_string())?;
    if let Some(found) = &s.build {
        let this = Build::current();
        if !this.same_model(found) {
            println!(
                "warning: {} was found by another build ({}, model source {}); this build ({}) has model source {}, so it may replay differently",
                file.display(),
                found.describe(),
                found.model_hash,
                this.describe(),
                this.model_hash
            );
        }
    }
    let o = run_input(&s, true);
    if !quiet {
        let variants: Vec<&str> = s.config.variants.iter().map(|v| v.name()).collect();
        println!(
            "{}: {} HVO on {}, order-{} folios, variants [{}]; {}",
            file.display(),
            s.config.hvo_mode.name(),
            s.config.arch,
            s.config.hugetlb_order,
            variants.join(", "),
            render::size(&s)
        );
        if let Some(n) = &s.note {
            println!("note: {n}");
        }
        println!();
        print!("{}", render::interleaving_table(&o.trace, s.cpus.len()));
        println!();
    }
    if o.schedule.len() < s.schedule.len() {
        println!(
            "note: the execution made {} scheduling decisions; the last {} of the file's {} schedule choices were not used",
            o.schedule.len(),
            s.schedule.len() - o.schedule.len(),
            s.schedule.len()
        );
    }
    println!("{}", render::verdict(&o));
    if let Verdict::ModelPanic(_) = o.verdict {
        return Ok(ExitCode::from(EXIT_MODEL_PANIC));
    }
    if let Some(e) = &s.expect {
        match o.violation() {
            Some(d) if e.matches(d) => {
                println!("reproduces the expected {} in {}()", e.oracle, e.func)
            }
            _ => {
                println!(
                    "DOES NOT REPRODUCE: the file expects {} in {}(){}",
                    e.oracle,
                    e.func,
                    if o.schedule.len() > s.schedule.len() {
                        format!(
                            "; the schedule ran out after {} choices and {} decisions followed the default (the running CPU continues): is the schedule truncated?",
                            s.schedule.len(),
                            o.schedule.len() - s.schedule.len()
                        )
                    } else {
                        String::new()
                    }
                );
                return Ok(ExitCode::from(EXIT_NOT_REPRODUCED));
            }
        }
    }
    Ok(match o.verdict {
        Verdict::Clean => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}
