//! The PMD-sharing fuzz target: the same decoder and run as `scenario`,
//! with the op family defaulting to `pmd-share` (so scenarios run on the
//! PMD-sharing layout), and inputs rejected (kept out of the corpus) unless
//! a CPU unshares or frees PMD tables (munmap, MADV_DONTNEED, a VMA split,
//! truncation, hole punch, exit) while they may be shared and walked.
//! Settings come from the same `MMHARNESS_*` environment variables (see
//! `fuzz/src/lib.rs`).
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};
use mmharness::model::{Subsystem, SubsystemSet};
use mmharness::scenario::generate::{OpFamily, decode_bytes};

/// The PMD-sharing arm unless `MMHARNESS_OPS` says otherwise.
fn settings() -> &'static mmharness_fuzz::Settings {
    mmharness_fuzz::settings_for(Some(OpFamily::Of(
        SubsystemSet::of(&[Subsystem::PmdShare]).arms(),
    )))
}

// Settings are read, and checked, before fuzzing starts: a bad value exits
// with status 2 instead of being taken for a crash.
fuzz_target!(init: { settings(); }, |data: &[u8]| -> Corpus {
    let settings = settings();
    let scenario = decode_bytes(data, &settings.opts);
    if !mmharness_fuzz::cpu_unshares(&scenario) {
        return Corpus::Reject;
    }
    mmharness_fuzz::check_decoded(data, scenario, settings);
    Corpus::Keep
});
