//! Shared by the cargo-fuzz targets. The settings, the decoding and the
//! check of one input are the main crate's (`mmharness::ui::fuzz`, which
//! the bolero harness and `mmharness import` use too); this adds what is
//! libFuzzer's own: the panic hook, the model's coverage as extra counters,
//! and turning a failure into a crash.
//!
//! A target that runs scenarios is a few lines:
//!
//! ```ignore
//! #![no_main]
//! mmharness_fuzz::scenario_target!(Target::Of(Subsystem::Hvo));
//! ```
//!
//! (`Target` and `Subsystem` are in scope inside the macro.) Settings come
//! from the `MMHARNESS_*` environment; see `mmharness::ui::fuzz` and
//! `fuzz/README.md`.

use mmharness::exec::Observe;
use mmharness::ui::fuzz::{Checked, artifact_path, check_bytes_observed, record_settings, report};
pub use mmharness::ui::fuzz::{Settings, Target};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// A fuzz target over `$target`'s scenarios, named after its file.
#[macro_export]
macro_rules! scenario_target {
    ($target:expr) => {
        fn settings() -> &'static $crate::Settings {
            #[allow(unused_imports)]
            use mmharness::model::Subsystem;
            #[allow(unused_imports)]
            use $crate::Target;
            $crate::settings_for($target)
        }

        // Settings are read, and checked, before fuzzing starts: a bad value
        // exits with status 2 instead of being taken for a crash.
        libfuzzer_sys::fuzz_target!(init: { settings(); }, |data: &[u8]| -> libfuzzer_sys::Corpus {
            if $crate::check(data, settings()) {
                libfuzzer_sys::Corpus::Keep
            } else {
                libfuzzer_sys::Corpus::Reject
            }
        });
    };
}

/// Set while the model runs under shuttle.
static IN_RUN: AtomicBool = AtomicBool::new(false);

/// libfuzzer-sys installs a panic hook that aborts the process. Panics
/// inside a run (shuttle's deadlock and step-bound failures, a panicking
/// model) are caught by the harness and turned into verdicts, so while a run
/// is in progress the hook only prints; the verdict is then reported and
/// turned into a crash by [`check`].
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_RUN.load(Ordering::Relaxed) {
            eprintln!("mmharness fuzz target: panic inside the run (becomes the verdict): {info}");
        } else {
            previous(info);
        }
    }));
}

/// The settings, read from the environment on first use. The first call
/// decides; a bad value exits with status 2.
pub fn settings_for(target: Target) -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let s = Settings::from_env(target).unwrap_or_else(|e| {
            eprintln!("mmharness fuzz target {}: {e}", target.name());
            std::process::exit(2);
        });
        install_panic_hook();
        s
    })
}

/// The model's coverage (`mmharness::model::kcov`: interleaving 2-grams,
/// struct-page mapping states, decisions) as libFuzzer's extra counters,
/// one per feature hash: libFuzzer clears them before each run and reads
/// them as it reads the compiler's edge counters. They show what edges
/// cannot (which kernel function ran after which on another CPU, a fake
/// head read through an alias), and they are the whole signal of a build
/// without the compiler's instrumentation (see `fuzz/README.md`).
#[used]
#[unsafe(link_section = "__libfuzzer_extra_counters")]
static KCOV_COUNTERS: [AtomicU8; KCOV_COUNTERS_LEN] =
    [const { AtomicU8::new(0) }; KCOV_COUNTERS_LEN];

/// Enough slots that a long run's features seldom share one, few enough
/// that libFuzzer's scan of them after each run stays cheap.
const KCOV_COUNTERS_LEN: usize = 1 << 15;

fn count_features(features: &[u64]) {
    for f in features {
        // The hashes' high bits are their best mixed.
        let slot = &KCOV_COUNTERS[(f >> 49) as usize % KCOV_COUNTERS_LEN];
        slot.store(
            slot.load(Ordering::Relaxed).saturating_add(1),
            Ordering::Relaxed,
        );
    }
}

/// Check one input; false if the target rejects it. On anything but a
/// clean run: print the scenario, record the settings beside the artifact
/// libFuzzer is about to write (`crash-<sha1>.settings`, read by `mmharness
/// import`), and panic, which libFuzzer turns into a crash.
pub fn check(data: &[u8], settings: &Settings) -> bool {
    IN_RUN.store(true, Ordering::Relaxed);
    let observe = Observe {
        coverage: true,
        ..Observe::default()
    };
    let (checked, features) = check_bytes_observed(data, settings, "found by cargo-fuzz", observe);
    IN_RUN.store(false, Ordering::Relaxed);
    count_features(&features);
    let failure = match checked {
        Checked::Rejected => return false,
        Checked::Clean(_) => return true,
        Checked::Failed(f) => f,
    };
    report(data, &failure, settings);
    if let Some(artifact) = artifact_path(std::env::args(), data) {
        match record_settings(&artifact, settings) {
            Ok(path) => eprintln!("==== settings recorded in {}", path.display()),
            Err(e) => eprintln!("==== cannot record the settings: {e}"),
        }
    }
    panic!("mmharness: {}", failure.headline);
}
