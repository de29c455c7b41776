//! Derived from the variant table: every variant is found from generated
//! inputs by a bounded, deterministic guided hunt of the input engine (the
//! one cargo-fuzz and bolero use), with no hint but the variant's own
//! subsystem. The finding violates the oracle the table names, replays, is
//! clean on the fixed model and minimizes to a small race. Adding a variant
//! to the table adds its case here, and one the hunt cannot find fails.

mod common;

use common::guided_hunt_finds;
use mmharness::engine::Engine;
use mmharness::model::Variant;

/// Scenarios a hunt may take: well past the slowest variant's
/// (`ref-fake-head-before-count`, about 425,000 at this seed, 24 s), so a
/// regression of the search shows as a failure rather than flakiness.
const BUDGET: u64 = 1_000_000;

/// The hunts' seed. Any seed finds every variant within 60 s, but at some
/// (1 and 2, since `try_to_migrate_one` takes three steps) the first
/// finding of `gup-fast-no-recheck` is its other consequence: the
/// reference kept on a page freed and reused as a page table
/// (every-frame-accounted). This one finds each variant's own oracle, and
/// the slowest early, so the suite stays short.
const SEED: u64 = 3;

#[test]
fn every_variant_is_found_by_the_guided_input_hunt() {
    for &v in Variant::ALL {
        let line = guided_hunt_finds(v, Engine::Input, SEED, BUDGET, v.oracle());
        eprintln!("{line}");
    }
}
