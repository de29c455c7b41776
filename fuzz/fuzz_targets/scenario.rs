//! The scenario fuzz target: bytes → `decode_bytes` → one deterministic run
//! of the scenario's own schedule. Any violation or model panic is a crash.
//! Settings come from `MMHARNESS_*` environment variables; see
//! `fuzz/src/lib.rs` and `fuzz/README.md`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmharness_fuzz::check(data, mmharness_fuzz::settings());
});
