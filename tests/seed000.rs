use mmharness::exec::run_input;
use mmharness::scenario::Scenario;

fn scenario(variants: &str, schedule: &str) -> Scenario {
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
         {{"op": "alloc_hugetlb_folio"}}]
      ],
      "schedule": [{schedule}]
    }}"#
    );
    Scenario::from_json(&text, "test").unwrap()
}

#[test]
fn seed000_trace() {
    for v in ["", "\"hvo-no-rcu-sync\""] {
        let o = run_input(&scenario(v, "0,0,0,1"), true);
        for e in &o.trace {
            println!("{:>4} {:?} {:<28} {}", e.step, e.cpu, e.func, e.text);
        }
        println!(
            "variant [{v}] verdict {:?} schedule {:?}",
            o.verdict, o.schedule
        );
    }
}

#[test]
fn fake_head_before_count_exists() {
    use mmharness::exec::{ShuttleEngine, run_shuttle};
    let s = Scenario::load(std::path::Path::new("/tmp/sc/fhbc.json")).unwrap();
    let (n, found) = run_shuttle(&s, ShuttleEngine::Dfs, 0, 200_000);
    println!(
        "dfs executions {n} found {:?}",
        found.as_ref().map(|o| (&o.verdict, &o.schedule))
    );
    let mut fixed = s.clone();
    fixed.config.variants = Default::default();
    let (n, found) = run_shuttle(&fixed, ShuttleEngine::Dfs, 0, 200_000);
    println!(
        "fixed: dfs executions {n} found {:?}",
        found.as_ref().map(|o| (&o.verdict, &o.schedule))
    );
}
