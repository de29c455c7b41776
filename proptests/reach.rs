//! The "sometimes" properties: generated inputs get to every state a bug of
//! the registry's subsystems needs (a reader meets a fake head, two HVO'd
//! folios are alive at once, a folio migrates, a page table is freed),
//! within a bounded budget of plain generated scenarios of the default
//! hunt's generator (2-4 CPUs, 2-3 memory blocks), without guidance. A
//! generator change that loses a whole class of races fails here instead of
//! silently finding nothing.

mod common;

use common::quiet;
use mmharness::engine::adaptive::AdaptiveOptions;
use mmharness::exec::{Job, Observe, run_jobs};
use mmharness::model::Config;
use mmharness::model::oracle::REACHABLE;
use mmharness::scenario::generate::{GenOptions, OpFamily, decode_bytes};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::sync::Arc;
use std::time::Duration;

/// Generated scenarios each property may take to be reached.
const BUDGET: usize = 400_000;
/// Scenarios run per batch.
const BATCH: usize = 512;

/// The number of generated scenarios, in the arm of its subsystem, until
/// property `i` is reached; `None` within the budget.
fn scenarios_to_reach(i: usize, rng: &mut StdRng) -> Option<usize> {
    let r = &REACHABLE[i];
    let defaults = AdaptiveOptions::new(Config::default(), Duration::ZERO, 0);
    let opts = GenOptions {
        ops: OpFamily::Of(r.subsystem.arm()),
        max_cpus: *defaults.cpus.iter().max().unwrap(),
        memory_blocks: defaults.memory_blocks,
        hugetlb_order: defaults.hugetlb_order,
        vma_growth: defaults.vma_growth,
        ..GenOptions::default()
    };
    let observe = Observe {
        reach: true,
        ..Observe::default()
    };
    let mut tried = 0;
    while tried < BUDGET {
        let jobs = (0..BATCH)
            .map(|_| {
                let mut bytes = vec![0; rng.gen_range(16..256usize)];
                rng.fill_bytes(&mut bytes);
                Job::replay(Arc::new(decode_bytes(&bytes, &opts)), observe)
            })
            .collect();
        let results = run_jobs(jobs);
        if let Some(k) = results.iter().position(|e| e.reached & (1 << i) != 0) {
            return Some(tried + k + 1);
        }
        tried += BATCH;
    }
    None
}

#[test]
fn generated_inputs_reach_every_sometimes_property() {
    quiet();
    let mut rng = StdRng::seed_from_u64(7);
    let mut missed = Vec::new();
    for (i, r) in REACHABLE.iter().enumerate() {
        match scenarios_to_reach(i, &mut rng) {
            Some(n) => eprintln!("{}: reached after {n} generated scenarios", r.name),
            None => missed.push(r.name),
        }
    }
    assert!(
        missed.is_empty(),
        "not reached within {BUDGET} generated scenarios each: {missed:?}"
    );
}
