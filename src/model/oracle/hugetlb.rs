//! The hugetlb pool's counters against its lists.

use super::{Oracle, Violation, fail};
use crate::model::machine::Machine;

/// Under `hugetlb_lock` the counters and the lists move together (v6.12
/// mm/hugetlb.c: `enqueue_hugetlb_folio` with `free_huge_pages++`,
/// `remove_hugetlb_folio` with `nr_huge_pages--`), so once a step released
/// it: `nr_huge_pages` = free + active folios (the model's
/// `free_huge_pages` is the free list's length), `surplus_huge_pages <=
/// nr_huge_pages`, and no folio is listed twice. Checked only after steps
/// that took the lock: the pool is a handful of folios.
pub fn hugetlb_counters_match(m: &Machine) -> Result<(), Violation> {
    if !m.ledger.hugetlb_changed {
        return Ok(());
    }
    let h = &m.hstate;
    let listed = (h.free_folios.len() + h.active_folios.len()) as u32;
    if h.nr_huge_pages != listed || h.surplus_huge_pages > h.nr_huge_pages {
        return fail(
            Oracle::HugetlbCounters,
            format!(
                "nr_huge_pages {} surplus_huge_pages {}, but {} free and {} active folios",
                h.nr_huge_pages,
                h.surplus_huge_pages,
                h.free_folios.len(),
                h.active_folios.len()
            ),
        );
    }
    let all = h.free_folios.iter().chain(&h.active_folios);
    for (i, f) in all.clone().enumerate() {
        if all.clone().skip(i + 1).any(|g| g == f) {
            return fail(
                Oracle::HugetlbCounters,
                format!("pfn {f} is on the hugetlb lists twice"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::model::hugetlb::{alloc_hugetlb_folio, alloc_pool_huge_folio};
    use crate::model::oracle::{Oracle, after_step};
    use crate::model::testing::Kernel;

    #[test]
    fn the_pool_paths_keep_the_counters_consistent() {
        let mut k = Kernel::boot();
        k.on(0, |cpu| alloc_pool_huge_folio(cpu, 0)).unwrap();
        // Pool empty or not, a surplus or pool folio is handed out.
        k.on(0, |cpu| alloc_hugetlb_folio(cpu, 0)).unwrap();
        k.on(0, |cpu| alloc_hugetlb_folio(cpu, 0)).unwrap();
        k.quiesce().unwrap();
    }

    #[test]
    fn a_counter_that_misses_a_list_move_is_caught() {
        let mut k = Kernel::boot();
        k.on(0, |cpu| alloc_pool_huge_folio(cpu, 0)).unwrap();
        // remove_hugetlb_folio without nr_huge_pages--.
        k.m.hstate.free_folios.pop().unwrap();
        k.m.ledger.hugetlb_changed = true;

        let err = after_step(&mut k.m).unwrap_err();

        assert_eq!(err.oracle, Oracle::HugetlbCounters);
        assert!(err.detail.contains("0 free and 0 active"), "{}", err.detail);
    }

    #[test]
    fn a_folio_on_both_lists_is_caught() {
        let mut k = Kernel::boot();
        k.on(0, |cpu| alloc_pool_huge_folio(cpu, 0)).unwrap();
        let f = k.m.hstate.free_folios[0];
        k.m.hstate.free_folios.push(f);
        k.m.hstate.nr_huge_pages += 1;
        k.m.ledger.hugetlb_changed = true;

        let err = after_step(&mut k.m).unwrap_err();

        assert_eq!(err.oracle, Oracle::HugetlbCounters);
        assert!(err.detail.contains("twice"), "{}", err.detail);
    }

    #[test]
    fn the_counters_are_not_checked_after_steps_outside_hugetlb_lock() {
        let mut k = Kernel::boot();
        k.m.hstate.nr_huge_pages += 1;
        after_step(&mut k.m).unwrap();
    }
}
