//! Hand-written regression scenarios from the seed threads, built from
//! ops as the threads tell them.

use mmharness::exec::{Outcome, Plan, Verdict, run_input, run_shuttle};
use mmharness::model::op::{Index, MmArg, PageArg, PfnArg};
use mmharness::model::{Config, Oracle, Variant, VariantSet};
use mmharness::scenario::{Op, Scenario};

fn config(blocks: u8, variants: &[Variant]) -> Config {
    Config {
        memory_blocks: blocks,
        variants: VariantSet::new(variants),
        ..Config::default()
    }
}

/// Seed 000 (Matthew Wilcox, Feb 2024): a page-cache lookup holds a struct
/// page pointer under RCU while the folio is truncated, its memory becomes
/// a hugetlb folio, HVO remaps it and the folio is handed out.
fn seed000(variants: &[Variant]) -> Scenario {
    let mut s = Scenario::new(
        config(3, variants),
        vec![
            Op::FilemapAddFolio {
                index: Index(0),
                pfn_hint: PfnArg(1024),
            },
            Op::FilemapAddFolio {
                index: Index(1),
                pfn_hint: PfnArg(1088),
            },
        ],
        vec![
            vec![Op::FilemapGetFolio { index: Index(1) }],
            vec![
                Op::TruncateInodeFolio { index: Index(0) },
                Op::TruncateInodeFolio { index: Index(1) },
                Op::AllocPoolHugeFolio {
                    pfn_hint: PfnArg(1024),
                },
                Op::AllocHugetlbFolio {
                    pfn_hint: PfnArg(1024),
                },
            ],
        ],
    );
    s.schedule = vec![0, 0, 0, 1];
    s.validate().unwrap();
    s
}

#[test]
fn seed000_fixed_model_waits_for_the_reader() {
    let o = run_input(&seed000(&[]), true);
    assert_eq!(o.verdict, Verdict::Clean, "{:?}", o.verdict);
    // The grace period really waited: HVO's synchronize_rcu saw the reader.
    assert!(
        o.trace
            .iter()
            .any(|e| e.text.contains("waiting for 1 reader")),
        "synchronize_rcu did not wait for the page-cache reader"
    );
}

#[test]
fn seed000_without_synchronize_rcu_takes_a_reference_on_a_fake_head() {
    let o = run_input(&seed000(&[Variant::HvoNoRcuSync]), false);
    let d = o.violation().expect("the race must fire");
    assert_eq!(d.violation.oracle, Oracle::RoVmemmapWrite);
    assert_eq!(d.func, "atomic_add_unless");
    assert_eq!(d.cpu, Some(0));
    assert!(
        d.violation.detail.contains("pfn 1088"),
        "{}",
        d.violation.detail
    );
}

/// The pre-2025 load order needs three ordered preemptions; exhaustive DFS
/// over the corpus scenario's interleavings finds it, and finds nothing once
/// the fix is in.
#[test]
fn fake_head_before_count_found_by_exhaustive_dfs_and_fixed_is_clean() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/corpus/ref-fake-head-before-count.json"
    );
    let mut s = Scenario::load(std::path::Path::new(path)).unwrap();
    s.schedule.clear();
    let dfs = Plan::Dfs {
        executions: 200_000,
    };
    let (n, found) = run_shuttle(&s, dfs);
    let o = found.unwrap_or_else(|| panic!("DFS explored {n} interleavings without a violation"));
    assert_eq!(o.oracle(), Some(Oracle::RoVmemmapWrite));
    // The recorded schedule replays to the same violation.
    s.schedule = o.schedule.clone();
    assert_eq!(run_input(&s, false).oracle(), Some(Oracle::RoVmemmapWrite));

    s.config.variants = VariantSet::default();
    s.schedule.clear();
    let (n, found) = run_shuttle(&s, dfs);
    assert!(
        found.is_none(),
        "fixed model failed after {n} interleavings: {:?}",
        found.map(|o| o.verdict)
    );
    assert!(n > 1000, "DFS ran only {n} interleavings");
}

/// Seed 003 (Matthew Wilcox to Baolin Wang, August 2021): CPU 0's GUP-fast
/// reads the PTE, CPU 1 unmaps the folio to a migration entry and checks
/// its refcount, then CPU 0 takes its speculative reference. The cmpxchg
/// freeze fails on it (and CPU 0 backs off); a check followed by a plain
/// store wipes it. On arm64: on x86 `ptep_clear_flush`'s IPI waits for
/// CPU 0's GUP-fast (interrupts off) to finish before the unmap goes on
/// (the mail's `migrate_vma_collect_pmd` uses `ptep_get_and_clear`, no
/// flush).
fn seed003(variants: &[Variant]) -> Scenario {
    let addr = (MmArg(0), PageArg(0));
    let mut cfg = config(2, variants);
    cfg.arch = mmharness::model::Arch::Arm64;
    let mut s = Scenario::new(
        cfg,
        vec![Op::HandleMmFault {
            mm: addr.0,
            addr: addr.1,
            pfn_hint: PfnArg(600),
            order: mmharness::model::op::Order(0),
        }],
        vec![
            vec![Op::GetUserPagesFast {
                mm: addr.0,
                addr: addr.1,
            }],
            vec![Op::MigratePages {
                mm: addr.0,
                addr: addr.1,
                pfn_hint: PfnArg(700),
            }],
        ],
    );
    s.schedule = vec![0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1];
    s.validate().unwrap();
    s
}

/// The CPUs' (traced) steps, one entry per step.
fn race(o: &Outcome) -> Vec<(Option<u8>, &'static str)> {
    let mut steps: Vec<_> = o
        .trace
        .iter()
        .filter(|e| e.cpu.is_some())
        .map(|e| (e.step, e.cpu, e.func))
        .collect();
    steps.dedup_by_key(|s| s.0);
    steps.into_iter().map(|(_, c, f)| (c, f)).collect()
}

/// Steps the CPUs ran, up to and including the failing one: the failing
/// step less the setup's steps.
fn race_len(s: &Scenario, failed_at: u32) -> u32 {
    let mut setup_only = s.clone();
    setup_only.cpus.iter_mut().for_each(Vec::clear);
    failed_at - run_input(&setup_only, false).steps
}

#[test]
fn seed003_fixed_freeze_refuses_the_speculative_reference() {
    let o = run_input(&seed003(&[]), true);
    assert_eq!(o.verdict, Verdict::Clean, "{:?}", o.verdict);
    let texts: Vec<&str> = o.trace.iter().map(|e| e.text.as_str()).collect();
    // The freeze won the race: GUP-fast found the count frozen, took the
    // slow path, waited out the migration entry and got the new folio.
    assert!(texts.contains(&"folio_ref_freeze(pfn 600, 2): frozen at 0"));
    assert!(texts.contains(&"atomic_add_unless(pfn 600): refcount is 0, refused"));
    assert!(texts.contains(&"pfn 600 migrated to pfn 700"));
    assert!(texts.contains(&"mm0:0: grabbed pfn 700 (Get)"));
}

#[test]
fn seed003_nonatomic_freeze_wipes_the_gup_fast_reference() {
    let s = seed003(&[Variant::MigrateNonatomicFreeze]);
    let o = run_input(&s, true);
    let d = o.violation().expect("the plain store loses a reference");
    assert_eq!(d.violation.oracle, Oracle::MigrationRefcount);
    assert_eq!(d.func, "folio_ref_freeze");
    assert_eq!(d.cpu, Some(1));
    // CPU 0: the PUD, PMD, PTE and page_folio loads and the three steps
    // of folio_try_get; CPU 1: isolate, allocate, lock, unmap (the PTE
    // clear, then the migration entry: a page-cache page is not
    // PageAnonExclusive), check, copy, check, store. The seed's CPU 0 /
    // CPU 1 sequence has 11 + 5 = 16 lines.
    assert_eq!(race_len(&s, d.step), 16);
    let r = race(&o);
    assert_eq!(r.iter().filter(|s| s.0 == Some(1)).count(), 9, "{r:?}");
    assert_eq!(r[0], (Some(0), "gup_fast_pud_range"));
    assert_eq!(r.last(), Some(&(Some(1), "folio_ref_freeze")));
}

/// Two collapses wait for the mmap write lock a fault holds for read: no
/// deadlock, however their wake-ups interleave with a third CPU (the
/// executor's deadlock detector once counted a woken waiter twice here).
#[test]
fn collapses_waiting_for_a_fault_are_no_deadlock() {
    let collapse = Op::CollapseHugePage {
        mm: MmArg(0),
        pfn_hint: PfnArg(512),
    };
    let mut s = Scenario::new(
        config(2, &[]),
        vec![],
        vec![
            vec![collapse.clone()],
            vec![Op::HandleMmFault {
                mm: MmArg(0),
                addr: PageArg(2),
                pfn_hint: PfnArg(512),
                order: mmharness::model::op::Order(0),
            }],
            vec![collapse],
        ],
    );
    s.schedule = vec![1, 1, 2, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2];
    assert_eq!(run_input(&s, false).verdict, Verdict::Clean);
    let (n, found) = run_shuttle(
        &s,
        Plan::Random {
            seed: 3,
            executions: 2000,
        },
    );
    assert!(
        found.is_none(),
        "after {n} executions: {:?}",
        found.map(|o| o.verdict)
    );
}
