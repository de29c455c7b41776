//! The scenario fuzz target: bytes → `decode_bytes` → one deterministic run
//! of the scenario's own schedule. Any violation or model panic is a crash.
//! Settings come from `MMHARNESS_*` environment variables; see
//! `fuzz/src/lib.rs` and `fuzz/README.md`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Settings are read, and checked, before fuzzing starts: a bad value exits
// with status 2 instead of being taken for a crash.
fuzz_target!(init: { mmharness_fuzz::settings(); }, |data: &[u8]| {
    mmharness_fuzz::check(data, mmharness_fuzz::settings());
});
