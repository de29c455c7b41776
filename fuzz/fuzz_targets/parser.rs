//! Fuzzes the scenario parser: any text given to `Scenario::from_json`
//! parses or is refused with an error, never a panic, and what parses
//! validates and round-trips. Seed it with `corpus/` (see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = mmharness::ui::fuzz::harness::parser(data) {
        panic!("parser: {e}");
    }
});
