//! The THP fuzz target: the same decoder and run as `scenario`, but inputs
//! whose scenario neither forks nor maps a THP are rejected (kept out of
//! the corpus), so the corpus concentrates on copy-on-write of anonymous
//! memory and THPs racing GUP pins, faults, splits, unmapping and
//! write-protection. Settings come from the same `MMHARNESS_*` environment
//! variables (see `fuzz/src/lib.rs`), except that the op family defaults
//! to `thp`.
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};
use mmharness::model::Subsystem;
use mmharness::scenario::generate::{OpFamily, decode_bytes};

/// The THP arm (faults, user accesses, GUP, fault injection, THP, fork
/// and VMA ops) unless `MMHARNESS_OPS` says otherwise.
fn settings() -> &'static mmharness_fuzz::Settings {
    mmharness_fuzz::settings_for(Some(OpFamily::Of(Subsystem::Thp.arm())))
}

// Settings are read, and checked, before fuzzing starts: a bad value exits
// with status 2 instead of being taken for a crash.
fuzz_target!(init: { settings(); }, |data: &[u8]| -> Corpus {
    let settings = settings();
    let scenario = decode_bytes(data, &settings.opts);
    if !mmharness_fuzz::shares_anon_memory(&scenario) {
        return Corpus::Reject;
    }
    mmharness_fuzz::check_decoded(data, scenario, settings);
    Corpus::Keep
});
