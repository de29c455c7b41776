//! The migration fuzz target: the same decoder and run as `scenario`, but
//! inputs whose scenario has no CPU running `migrate_pages` are rejected
//! (kept out of the corpus), so the corpus concentrates on migration racing
//! GUP-fast, faults, zaps and the page cache. Settings come from the same
//! `MMHARNESS_*` environment variables (see `fuzz/src/lib.rs`), except that
//! the op family defaults to `migration`.
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};
use mmharness::model::Subsystem;
use mmharness::scenario::generate::{OpFamily, decode_bytes};

/// Migration's arm (page cache, faults, GUP, migration, collapse) unless
/// `MMHARNESS_OPS` says otherwise.
fn settings() -> &'static mmharness_fuzz::Settings {
    mmharness_fuzz::settings_for(Some(OpFamily::Of(Subsystem::Migration.arm())))
}

// Settings are read, and checked, before fuzzing starts: a bad value exits
// with status 2 instead of being taken for a crash.
fuzz_target!(init: { settings(); }, |data: &[u8]| -> Corpus {
    let settings = settings();
    let scenario = decode_bytes(data, &settings.opts);
    if !mmharness_fuzz::cpu_migrates(&scenario) {
        return Corpus::Reject;
    }
    mmharness_fuzz::check_decoded(data, scenario, settings);
    Corpus::Keep
});
