//! `mmharness`: one struct per subcommand, as cargo-fuzz has them.

mod bench;
mod hunt;
mod minimize;
mod replay;

use crate::model::Variant;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "mmharness",
    version,
    about = "Hunt refcount and use-after-remap races in an executable model of Linux mm"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One line per bug variant: its name, subsystem, oracle and what it
    /// breaks.
    Variants,
    /// Generate scenarios and run them until an oracle fails.
    Hunt(hunt::Hunt),
    /// Replay a scenario file deterministically and print its interleaving.
    Replay(replay::Replay),
    /// Shrink a failing scenario file and write the result.
    Minimize(minimize::Minimize),
    /// Measure executions per second against a bare shuttle test, or (with
    /// --variants) every engine's time to find every variant.
    Bench(bench::Bench),
}

/// `replay` of a file whose `expect` block does not reproduce.
pub const EXIT_NOT_REPRODUCED: u8 = 3;
/// The model panicked: a harness bug, with the scenario saved.
pub const EXIT_MODEL_PANIC: u8 = 4;
/// Stopped by Ctrl-C before anything was found.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Exit status: 0 clean, 1 violation found, 2 usage or input error, 3 a
/// replayed file's `expect` not reproduced, 4 the model panicked, 130
/// interrupted.
pub fn main() -> ExitCode {
    crate::exec::quiet_shuttle_panics();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Variants => Ok(variants()),
        Command::Hunt(c) => c.run(),
        Command::Replay(c) => c.run(),
        Command::Minimize(c) => c.run(),
        Command::Bench(c) => c.run(),
    };
    result.unwrap_or_else(|msg| {
        eprintln!("mmharness: {msg}");
        ExitCode::from(2)
    })
}

fn variants() -> ExitCode {
    let width = Variant::ALL
        .iter()
        .map(|v| v.name().len())
        .max()
        .unwrap_or(0);
    for v in Variant::ALL {
        println!(
            "{:width$}  [{}, {}] {}",
            v.name(),
            v.subsystem(),
            v.oracle(),
            v.breaks()
        );
    }
    ExitCode::SUCCESS
}

/// A `--time` value: a positive, finite number of seconds.
fn seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{secs} must be a positive number of seconds"));
    }
    Ok(secs)
}
