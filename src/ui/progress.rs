//! Progress of long runs, and Ctrl-C.
//!
//! On a terminal, a spinner line that updates in place (indicatif);
//! otherwise a plain line every few seconds, so that CI logs and pipes
//! show a long hunt is alive. Ctrl-C sets a flag that hunts and benches
//! check after every batch: they stop, print what they have and keep every
//! counterexample already found. A second Ctrl-C exits at once.

use crate::engine::HuntReport;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Install the Ctrl-C handler (once).
pub fn catch_ctrl_c() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\nmmharness: interrupted: stopping after this batch (Ctrl-C again to quit now)"
            );
        });
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Seconds between plain progress lines.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    last_plain: Instant,
}

impl Progress {
    pub fn new(label: &str) -> Progress {
        let bar = std::io::stdout().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("a valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Progress {
            bar,
            label: label.to_string(),
            last_plain: Instant::now(),
        }
    }

    /// Show a message: in place on a terminal, else at most every few
    /// seconds.
    pub fn message(&mut self, msg: &str) {
        match &self.bar {
            Some(b) => b.set_message(format!("{}: {msg}", self.label)),
            None => {
                if self.last_plain.elapsed() >= PLAIN_EVERY {
                    self.last_plain = Instant::now();
                    println!("  ... {}: {msg}", self.label);
                }
            }
        }
    }

    /// A hunt's state so far.
    pub fn hunt(&mut self, r: &HuntReport) {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        self.message(&format!(
            "{} scenarios, {} executions, {:.0} exec/s, {:.0}s, {} features, {} finding(s)",
            r.scenarios,
            r.executions,
            r.executions as f64 / secs,
            secs,
            r.features,
            r.finding.is_some() as u8
        ));
    }

    /// An adaptive hunt's arms so far.
    pub fn arms(&mut self, arms: &[crate::engine::adaptive::ArmReport]) {
        let secs = arms
            .iter()
            .map(|a| a.report.elapsed)
            .max()
            .unwrap_or_default();
        let secs = secs.as_secs_f64().max(1e-9);
        let execs: u64 = arms.iter().map(|a| a.report.executions).sum();
        let scenarios: u64 = arms.iter().map(|a| a.report.scenarios).sum();
        let features: usize = arms.iter().map(|a| a.report.features).sum();
        let found = arms.iter().filter(|a| a.report.finding.is_some()).count();
        let tried = arms.iter().filter(|a| a.slices > 0).count();
        self.message(&format!(
            "{scenarios} scenarios, {execs} executions, {:.0} exec/s, {secs:.0}s, {tried}/{} arms tried, {features} features, {found} finding(s)",
            execs as f64 / secs,
            arms.len()
        ));
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
