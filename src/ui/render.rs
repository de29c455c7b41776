//! CPU-by-CPU interleaving tables, like the ones in the mail threads.

use crate::exec::{Outcome, Verdict};
use crate::model::ctx::TraceEvent;
use crate::scenario::Scenario;
use std::fmt::Write;

const COL: usize = 46;

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// One block of the table: consecutive events of one CPU in one function.
struct Block<'a> {
    step: u32,
    cpu: Option<u8>,
    func: &'static str,
    lines: Vec<&'a str>,
}

fn blocks(trace: &[TraceEvent]) -> Vec<Block<'_>> {
    let mut out: Vec<Block> = Vec::new();
    for e in trace {
        match out.last_mut() {
            Some(b) if b.cpu == e.cpu && b.func == e.func => b.lines.push(&e.text),
            _ => out.push(Block {
                step: e.step,
                cpu: e.cpu,
                func: e.func,
                lines: vec![&e.text],
            }),
        }
    }
    out
}

/// Render the trace: setup as a list, then one column per CPU.
pub fn interleaving_table(trace: &[TraceEvent], nr_cpus: usize) -> String {
    let mut out = String::new();
    let all = blocks(trace);
    let (setup, race): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|b| b.cpu.is_none() && b.func != "quiescence" && b.func != "shuttle");
    if !setup.is_empty() {
        out.push_str("setup:\n");
        for b in &setup {
            let _ = writeln!(out, "  {}: {}", b.func, b.lines.join("; "));
        }
        out.push('\n');
    }
    let _ = write!(out, "{:>5}  ", "step");
    for c in 0..nr_cpus {
        let _ = write!(out, "{:<COL$}  ", format!("CPU {c}"));
    }
    out.push('\n');
    let _ = write!(out, "{:>5}  ", "-----");
    for _ in 0..nr_cpus {
        let _ = write!(out, "{:<COL$}  ", "-".repeat(COL));
    }
    out.push('\n');
    for b in race {
        let Some(cpu) = b.cpu else {
            let _ = writeln!(out, "{:>5}  [{}] {}", b.step, b.func, b.lines.join("; "));
            continue;
        };
        let mut rows = vec![format!("{}()", b.func)];
        for l in &b.lines {
            rows.extend(wrap(l, COL - 2).into_iter().map(|w| format!("  {w}")));
        }
        for (i, r) in rows.iter().enumerate() {
            let step = if i == 0 {
                b.step.to_string()
            } else {
                String::new()
            };
            let pad = (COL + 2) * cpu as usize;
            let _ = writeln!(out, "{step:>5}  {:pad$}{}", "", r.trim_end());
        }
    }
    out
}

/// A one-paragraph verdict.
pub fn verdict(outcome: &Outcome) -> String {
    match &outcome.verdict {
        Verdict::Clean => format!("clean: no oracle failed ({} steps)", outcome.steps),
        Verdict::Violation(d) => format!(
            "VIOLATION {} at step {} on {} in {}(): {}",
            d.violation.oracle,
            d.step,
            d.cpu.map_or("no CPU".to_string(), |c| format!("CPU {c}")),
            d.func,
            d.violation.detail
        ),
        Verdict::ModelPanic(m) => format!("MODEL PANIC (a harness bug): {m}"),
    }
}

/// A short description of a scenario's size.
pub fn size(s: &Scenario) -> String {
    format!(
        "{} CPUs, {} ops ({} in setup), {} schedule choices",
        s.cpus.len(),
        s.op_count(),
        s.setup.len(),
        s.schedule.len()
    )
}
