//! Hand-written regression scenarios from the seed threads.

use mmharness::exec::{ShuttleEngine, Verdict, run_input, run_shuttle};
use mmharness::model::{Oracle, VariantSet};
use mmharness::scenario::Scenario;

/// Seed 000 (Matthew Wilcox, Feb 2024): a page-cache lookup holds a struct
/// page pointer under RCU while the folio is truncated, its memory becomes
/// a hugetlb folio, HVO remaps it and the folio is handed out.
fn seed000(variants: &str) -> Scenario {
    let text = format!(
        r#"{{
      "format": "mmharness-scenario", "version": 1,
      "config": {{"hvo_mode": "keep-1", "hugetlb_order": 9, "memory_blocks": 3, "variants": [{variants}]}},
      "setup": [
        {{"op": "filemap_add_folio", "index": 0, "pfn_hint": 1024}},
        {{"op": "filemap_add_folio", "index": 1, "pfn_hint": 1088}}
      ],
      "cpus": [
        [{{"op": "filemap_get_folio", "index": 1}}],
        [{{"op": "truncate_inode_folio", "index": 0}},
         {{"op": "truncate_inode_folio", "index": 1}},
         {{"op": "alloc_pool_huge_folio", "pfn_hint": 1024}},
         {{"op": "alloc_hugetlb_folio", "pfn_hint": 1024}}]
      ],
      "schedule": [0, 0, 0, 1]
    }}"#
    );
    Scenario::from_json(&text, "seed000").unwrap()
}

#[test]
fn seed000_fixed_model_waits_for_the_reader() {
    let o = run_input(&seed000(""), true);
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
    let o = run_input(&seed000("\"hvo-no-rcu-sync\""), false);
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
    let (n, found) = run_shuttle(&s, ShuttleEngine::Dfs, 0, 200_000);
    let o = found.unwrap_or_else(|| panic!("DFS explored {n} interleavings without a violation"));
    assert_eq!(o.oracle(), Some(Oracle::RoVmemmapWrite));
    // The recorded schedule replays to the same violation.
    s.schedule = o.schedule.clone();
    assert_eq!(run_input(&s, false).oracle(), Some(Oracle::RoVmemmapWrite));

    s.config.variants = VariantSet::default();
    s.schedule.clear();
    let (n, found) = run_shuttle(&s, ShuttleEngine::Dfs, 0, 200_000);
    assert!(
        found.is_none(),
        "fixed model failed after {n} interleavings: {:?}",
        found.map(|o| o.verdict)
    );
    assert!(n > 1000, "DFS ran only {n} interleavings");
}
