//! Fuzzes the decoder itself: for any bytes and any generation options
//! (drawn from the input's first bytes), `decode_bytes` and
//! `decode_with_ops_prefix` never panic, agree, and give a scenario that
//! validates and survives its own JSON. See `mmharness::ui::fuzz::harness`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = mmharness::ui::fuzz::harness::decoder(data) {
        panic!("decoder: {e}");
    }
});
