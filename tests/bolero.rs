//! bolero over the one decoder: bytes → `decode_bytes` → one deterministic
//! run of the scenario's own schedule, which must be clean on the fixed
//! model.
//!
//! Under plain `cargo test` bolero replays its corpus (none is kept here)
//! and then runs random inputs for about a second. `cargo bolero test
//! fixed_model_is_clean` (with cargo-bolero installed) fuzzes it with
//! libFuzzer instead, using `[profile.fuzz]` from Cargo.toml.

use mmharness::exec::{Verdict, run_input};
use mmharness::scenario::generate::{GenOptions, decode_bytes};

#[test]
fn fixed_model_is_clean() {
    let opts = GenOptions::default();
    bolero::check!()
        .with_type::<Vec<u8>>()
        .for_each(|bytes: &Vec<u8>| {
            let mut scenario = decode_bytes(bytes, &opts);
            let outcome = run_input(&scenario, false);
            if outcome.verdict != Verdict::Clean {
                scenario.schedule = outcome.schedule.clone();
                panic!(
                    "the fixed model is not clean: {:?}\n{}",
                    outcome.verdict,
                    scenario.to_json()
                );
            }
        });
}
