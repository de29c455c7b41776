//! The scenario fuzz target: bytes → `decode_bytes` → one deterministic run
//! of the scenario's own schedule, over every op family. Any violation or
//! model panic is a crash. Settings come from `MMHARNESS_*` environment
//! variables; see `fuzz/README.md`.
#![no_main]

mmharness_fuzz::scenario_target!(Target::Scenario);
