//! A target that does nothing with its input: libFuzzer's own speed on
//! this machine, the yardstick `mmharness bench` puts the real targets
//! beside.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    std::hint::black_box(data);
});
