//! Seed 000 per architecture, from generated inputs (bounded, deterministic
//! guided hunts of the input engine over the HVO arm).
//!
//! Findings, as these tests assert them:
//! - With the v6.10 grace period removed (`hvo-no-rcu-sync`) the
//!   speculative reader's write through the read-only vmemmap alias is
//!   found on every architecture. On x86 (`lock cmpxchg`) and arm64 with
//!   LSE (`CAS`) the compare need not succeed: a reader whose stale count
//!   meets a tail page's 0 faults all the same. With LL/SC a failed compare
//!   stores nothing, so arm64-llsc is not immune but narrower: the reader
//!   faults only where its compare succeeds, on a fake head whose folio
//!   was unfrozen to the count it read (Matthew Wilcox's "7 of the 512
//!   pages" in seed 000, where the try-get succeeds).
//! - On arm64 HVO must replace live vmemmap PTEs by break-before-make.
//!   Without a remedy (`hvo-bbm-no-pause`) a speculative struct-page reader
//!   (a pfn walker) faults in the window between `pte_clear` and
//!   `set_pte_at`, on arm64 and arm64-llsc alike; x86 replaces PTEs in
//!   place and has no window, so the same hunt finds nothing there.
//! - The fixed model is clean on each architecture; on arm64 it pauses the
//!   other CPUs around the vmemmap walk, as Yu Zhao's "arm64: pause remote
//!   CPUs to update vmemmap" (approach D of "mm/hugetlb_vmemmap: HVO on
//!   arm64", linux-mm, 2024) does.

mod common;

use common::{quiet, without_variants};
use mmharness::engine::{Engine, HuntOptions, hunt};
use mmharness::exec::{Verdict, run_input};
use mmharness::model::{Arch, Config, Oracle, Subsystem, SubsystemSet, Variant, VariantSet};
use mmharness::scenario::generate::{GenOptions, OpFamily};
use mmharness::ui::render;
use std::time::Duration;

/// Scenarios a hunt that must find its bug may take (measured at seed 1:
/// hvo-no-rcu-sync 10,906 on x86, 279 on arm64, 309 on arm64-llsc;
/// hvo-bbm-no-pause 1,686 on either arm64).
const BUDGET: u64 = 200_000;

/// Scenarios of a hunt that must find nothing.
const CLEAN_BUDGET: u64 = 3_000;

fn hunt_on(arch: Arch, variants: &[Variant], iterations: u64) -> mmharness::engine::HuntReport {
    quiet();
    let config = Config {
        arch,
        variants: VariantSet::new(variants),
        ..Config::default()
    };
    let generate = GenOptions {
        ops: OpFamily::Of(SubsystemSet::of(&[Subsystem::Hvo]).arms()),
        ..GenOptions::with_config(config)
    };
    let mut opts = HuntOptions::new(Engine::Input, generate);
    opts.iterations = Some(iterations);
    opts.time = Duration::from_secs(600);
    opts.seed = 1;
    hunt(&opts)
}

/// The hunt finds `oracle`; the finding replays on `arch` and is clean on
/// the fixed model there. Returns the violation's detail.
fn found(arch: Arch, variant: Variant, oracle: Oracle) -> String {
    let report = hunt_on(arch, &[variant], BUDGET);
    let finding = report.finding.unwrap_or_else(|| {
        panic!(
            "{variant} on {arch}: nothing found in {} scenarios",
            report.scenarios
        )
    });
    let s = &finding.scenario;
    assert_eq!(s.config.arch, arch);
    let o = run_input(s, false);
    assert_eq!(
        o.oracle(),
        Some(oracle),
        "{variant} on {arch}: {}",
        render::verdict(&o)
    );
    let fixed = run_input(&without_variants(s), false);
    assert_eq!(
        fixed.verdict,
        Verdict::Clean,
        "{variant} on {arch}, fixed: {}",
        render::verdict(&fixed)
    );
    eprintln!(
        "{variant} on {arch}: found in {} scenarios",
        report.scenarios
    );
    o.violation().expect("a violation").violation.detail.clone()
}

#[test]
fn hvo_without_synchronize_rcu_faults_the_reader_on_every_architecture() {
    for arch in Arch::ALL {
        let detail = found(arch, Variant::HvoNoRcuSync, Oracle::RoVmemmapWrite);
        if arch == Arch::Arm64Llsc {
            // Only a compare that succeeds stores: on a fake head.
            assert!(detail.contains("a fake head"), "{arch}: {detail}");
        }
    }
}

#[test]
fn arm64_break_before_make_without_a_remedy_faults_a_reader_in_the_window() {
    for arch in [Arch::Arm64, Arch::Arm64Llsc] {
        found(arch, Variant::HvoBbmNoPause, Oracle::VmemmapFault);
    }
    // x86 replaces the PTE in place: no window, nothing to find.
    let report = hunt_on(Arch::X86, &[Variant::HvoBbmNoPause], CLEAN_BUDGET);
    assert!(
        report.finding.is_none(),
        "x86 has no break-before-make window"
    );
}

#[test]
fn the_fixed_model_is_clean_on_every_architecture() {
    for arch in Arch::ALL {
        let report = hunt_on(arch, &[], CLEAN_BUDGET);
        if let Some(f) = report.finding {
            panic!(
                "fixed model on {arch}: {}",
                render::verdict(&run_input(&f.scenario, false))
            );
        }
        assert!(report.model_panic.is_none(), "{arch}: model panic");
    }
}
