//! Mutations for the guided hunt: libFuzzer-style edits of the input's
//! bytes, and edits of its schedule as decisions.

use crate::scenario::generate::encode_schedule;
use rand::Rng;
use rand::rngs::StdRng;

/// Longest input the guided search builds.
const MAX_INPUT: usize = 512;

/// A libFuzzer-style byte mutation of `base`, sometimes spliced with
/// `other`. Any bytes decode to a valid scenario.
pub fn mutate(rng: &mut StdRng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    if b.is_empty() {
        b.push(0);
    }
    for _ in 0..rng.gen_range(1..=4) {
        let pos = rng.gen_range(0..b.len());
        match rng.gen_range(0..7) {
            0 => b[pos] ^= 1 << rng.gen_range(0..8),
            1 => b[pos] = rng.r#gen(),
            2 => b[pos] = [0, 1, 2, 0x3f, 0x7f, 0x80, 0xff][rng.gen_range(0..7)],
            3 => {
                let n = rng.gen_range(1..=8);
                let ins: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
                b.splice(pos..pos, ins);
            }
            4 => {
                let end = (pos + rng.gen_range(1..=8)).min(b.len());
                if end - pos < b.len() {
                    b.drain(pos..end);
                }
            }
            5 => {
                let end = (pos + rng.gen_range(1..=16)).min(b.len());
                let chunk = b[pos..end].to_vec();
                let at = rng.gen_range(0..=b.len());
                b.splice(at..at, chunk);
            }
            _ => {
                if !other.is_empty() {
                    let from = rng.gen_range(0..other.len());
                    b.truncate(pos);
                    b.extend_from_slice(&other[from..]);
                }
            }
        }
        if b.is_empty() {
            b.push(0);
        }
    }
    b.truncate(MAX_INPUT);
    b
}

/// Edit a schedule (the CPU chosen at each decision, as an execution
/// recorded it) and encode it as schedule bytes. The edits are the ones a
/// race needs: move a context switch earlier or later, preempt a CPU for a
/// while, drop a preemption, keep a prefix and continue it with new random
/// runs, or stop choosing (the running CPU then continues).
/// A distance of 1 to 32 decisions, log-uniform: a race's next step may be
/// one decision away or a whole kernel path later.
fn distance(rng: &mut StdRng) -> usize {
    let top = 1usize << rng.gen_range(0..=5);
    rng.gen_range(top / 2 + 1..=top)
}

pub fn mutate_schedule(rng: &mut StdRng, schedule: &[u8], nr_cpus: u8) -> Vec<u8> {
    let mut d = schedule.to_vec();
    for _ in 0..rng.gen_range(1..=2) {
        let switches: Vec<usize> = (1..d.len()).filter(|&i| d[i] != d[i - 1]).collect();
        match rng.gen_range(0..6) {
            // Move a switch: the run before it grows or shrinks.
            0 | 1 if !switches.is_empty() => {
                let i = switches[rng.gen_range(0..switches.len())];
                let by = distance(rng);
                if rng.gen_bool(0.5) {
                    let (cpu, end) = (d[i - 1], (i + by).min(d.len()));
                    d[i..end].fill(cpu);
                } else {
                    let (cpu, start) = (d[i], i.saturating_sub(by));
                    d[start..i].fill(cpu);
                }
            }
            // Preempt: another CPU runs for a few decisions.
            2 => {
                let at = rng.gen_range(0..=d.len());
                let cpu = rng.gen_range(0..nr_cpus);
                let n = distance(rng);
                d.splice(at..at, std::iter::repeat_n(cpu, n));
            }
            // Drop a preemption: a run takes its predecessor's CPU.
            3 if !switches.is_empty() => {
                let i = switches[rng.gen_range(0..switches.len())];
                let cpu = d[i - 1];
                let end = d[i..]
                    .iter()
                    .position(|&c| c != d[i])
                    .map_or(d.len(), |n| i + n);
                d[i..end].fill(cpu);
            }
            // Keep the decisions up to a cut, then new runs of random
            // CPUs: the near miss's start, another continuation.
            4 => {
                let len = d.len();
                d.truncate(rng.gen_range(0..=len));
                while d.len() < len {
                    let cpu = rng.gen_range(0..nr_cpus);
                    let n = distance(rng);
                    d.extend(std::iter::repeat_n(cpu, n));
                }
            }
            _ => d.truncate(rng.gen_range(0..=d.len())),
        }
    }
    encode_schedule(&d)
}
