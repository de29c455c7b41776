//! A speculative pfn walker, as compaction's `isolate_migratepages_block`
//! (mm/compaction.c, v6.12) scans: it holds no reference on the pfn it
//! visits, so every check it makes can be stale by the time it takes one.
//! This is the walker of commit bd225530a4c7 ("mm/hugetlb_vmemmap: fix race
//! with speculative PFN walkers"). Each check is its own unlocked load step
//! where the kernel reads a different word of the struct page.

use super::KResult;
use super::ctx::Cpu;
use super::machine::Pfn;
use super::migrate;
use super::mm_types::{Mapping, pg};
use super::oracle;
use super::page_flags::{compound_head, folio_nr_pages, folio_test_clear_lru};
use super::page_ref::{folio_put, get_page_unless_zero};
use super::rmap::folio_mapcount;
use super::smp::under_spinlock;
use crate::ktrace;

/// The walker's loads are inline page-flag helpers of this function.
const F: &str = "isolate_migratepages_block";

/// `compound_order(page)` as compaction calls it on a page it holds no
/// reference on: `PG_head` of `page->flags`, then `page[1]._flags_1`.
fn compound_order_unsafe(cpu: &Cpu, pfn: Pfn) -> KResult<u8> {
    let head = cpu.step(F, |m| Ok(m.page(pfn)?.test(pg::HEAD)))?;
    if !head {
        return Ok(0);
    }
    cpu.step(F, |m| {
        let order = m.page(pfn + 1)?.order;
        ktrace!(m, "compound_order(pfn {pfn}) = {order}");
        Ok(order)
    })
}

/// Visit `pfn` as one iteration of `isolate_migratepages_block` (v6.12,
/// `!cc->alloc_contig`) that ends at `isolate_fail_put`: skip `PageHuge`,
/// `PageBuddy` (reading `buddy_order_unsafe`) and `PageCompound` (reading
/// `compound_order`) pages, then skip unless `PageLRU`, then
/// `folio_get_nontail_page`, recheck `folio_test_lru` and put the
/// reference back, as when a later check refuses the folio.
pub fn pfn_walk(cpu: &Cpu, pfn: Pfn) -> KResult<()> {
    if let Some(folio) = scan_and_get(cpu, pfn)? {
        folio_put(cpu, folio)?;
    }
    Ok(())
}

/// One kcompactd pass over `pfn` (`compact_zone`, v6.12, MIGRATE_SYNC_LIGHT
/// with `ISOLATE_UNEVICTABLE` clear and no `ISOLATE_ASYNC_MIGRATE`):
/// `isolate_migratepages_block` isolates the folio at `pfn`, then
/// `migrate_pages` moves it to a free page `compaction_alloc` takes from
/// the block holding `pfn_hint` (the free scanner's position).
pub fn compact_pfn(cpu: &Cpu, pfn: Pfn, pfn_hint: Pfn) -> KResult<()> {
    let Some(folio) = scan_and_get(cpu, pfn)? else {
        return Ok(());
    };
    // folio_mapping() is NULL for anon: a pinned anon folio cannot
    // migrate, so compaction does not isolate it (an admittedly racy check).
    let pinned = cpu.step(F, |m| {
        let p = m.page(folio)?;
        let anon = !matches!(p.mapping, Mapping::File { .. });
        let mapcount = folio_mapcount(m, folio)?;
        Ok(anon && p.refcount - 1 > mapcount)
    })?;
    if pinned {
        return folio_put(cpu, folio);
    }
    // folio_test_clear_lru, then under the lruvec lock the folio may have
    // become large since the unlocked PageCompound check.
    let isolated = cpu.step("folio_test_clear_lru", |m| {
        let was = folio_test_clear_lru(m, folio)?;
        ktrace!(m, "folio_test_clear_lru(pfn {folio}) = {was}");
        Ok(was)
    })?;
    if !isolated {
        return folio_put(cpu, folio);
    }
    // compact_lock_irqsave(&lruvec->lru_lock): interrupts stay off until
    // unlock_page_lruvec_irqrestore, so an IPI sent meanwhile waits.
    cpu.step("compact_lock_irqsave", |m| {
        m.local_irq_save();
        Ok(())
    })?;
    let small = cpu.step(F, |m| {
        let r = under_spinlock(m, "lru_lock", |m| {
            if folio_nr_pages(m, folio)? > 1 {
                m.page_mut(folio)?.flags |= pg::LRU;
                ktrace!(m, "pfn {folio} became large: folio_set_lru, put");
                return Ok(None);
            }
            oracle::isolated_folio_is_current(m, pfn, folio)?;
            m.ledger.compaction_isolated.push(folio);
            ktrace!(m, "isolated pfn {folio} for migration");
            Ok(Some(m.page(folio)?.mapping))
        })?;
        // unlock_page_lruvec_irqrestore.
        m.local_irq_restore();
        Ok(r)
    })?;
    match small {
        Some(mapping) => migrate::migrate_isolated_folio(cpu, folio, 0, mapping, pfn_hint),
        None => folio_put(cpu, folio),
    }
}

/// The unlocked part of an `isolate_migratepages_block` iteration, up to
/// the reference and the `folio_test_lru` recheck: the folio it holds a
/// reference on, or `None` with nothing held.
fn scan_and_get(cpu: &Cpu, pfn: Pfn) -> KResult<Option<Pfn>> {
    // PageHuge: folio_test_hugetlb(page_folio(page)), two words.
    let head = cpu.step(F, |m| compound_head(m, pfn))?;
    let huge = cpu.step(F, |m| Ok(m.page(head)?.test(pg::HUGETLB)))?;
    if huge {
        compound_order_unsafe(cpu, pfn)?;
        return Ok(None);
    }
    // PageBuddy reads this page's page_type; the order is page->private.
    if cpu.step(F, |m| Ok(m.page(pfn)?.test(pg::BUDDY)))? {
        cpu.step(F, |m| {
            let order = m.page(pfn)?.private;
            ktrace!(m, "buddy_order_unsafe(pfn {pfn}) = {order}");
            Ok(order)
        })?;
        return Ok(None);
    }
    // PageCompound: PG_head in page->flags, else bit 0 of compound_head.
    let compound = cpu.step(F, |m| Ok(m.page(pfn)?.test(pg::HEAD)))?
        || cpu.step(F, |m| Ok(m.page(pfn)?.tail_bit()))?;
    if compound {
        compound_order_unsafe(cpu, pfn)?;
        return Ok(None);
    }
    // PageLRU is PF_HEAD: compound_head(page), then the head's flags.
    let head = cpu.step(F, |m| compound_head(m, pfn))?;
    let lru = cpu.step(F, |m| {
        let lru = m.page(head)?.test(pg::LRU);
        ktrace!(m, "page = pfn_to_page({pfn}); PageLRU = {lru}");
        Ok(lru)
    })?;
    if !lru || !get_page_unless_zero(cpu, pfn)? {
        return Ok(None);
    }
    // folio_get_nontail_page returns (struct folio *)page: a page whose
    // refcount was nonzero is not a tail, so the folio is the page itself.
    let folio = pfn;
    let lru = cpu.step(F, |m| {
        let lru = m.page(folio)?.test(pg::LRU);
        ktrace!(m, "folio = pfn {folio}; folio_test_lru = {lru}");
        Ok(lru)
    })?;
    if !lru {
        folio_put(cpu, folio)?;
        return Ok(None);
    }
    Ok(Some(folio))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::memory::handle_mm_fault;
    use crate::model::pgtable::{PteVal, Uaddr};
    use crate::model::testing::Kernel;

    fn walk(k: &mut Kernel, pfn: Pfn) -> Vec<String> {
        k.trace_on();
        k.on(1, |cpu| pfn_walk(cpu, pfn)).unwrap();
        k.take_trace()
    }

    fn traced(trace: &[String], line: &str) -> bool {
        trace.iter().any(|l| l.contains(line))
    }

    #[test]
    fn pfn_walk_takes_and_puts_the_ref_on_the_page_itself() {
        let mut k = Kernel::boot();
        assert_eq!(k.step(0, |m| m.alloc_pages(0, 600)).unwrap(), Some(600));
        k.m.peek_mut(600).flags |= pg::LRU;

        let trace = walk(&mut k, 600);

        assert!(traced(&trace, "PageLRU = true"), "{trace:?}");
        assert!(
            traced(&trace, "folio = pfn 600; folio_test_lru = true"),
            "{trace:?}"
        );
        assert_eq!(k.m.peek(600).refcount, 1, "the walker put its reference");
    }

    #[test]
    fn pfn_walk_skips_a_buddy_page_by_its_order() {
        let mut k = Kernel::boot();
        let (pfn, order) = k.free_blocks()[0];

        let trace = walk(&mut k, pfn);

        assert!(
            traced(&trace, &format!("buddy_order_unsafe(pfn {pfn}) = {order}")),
            "{trace:?}"
        );
        assert!(!traced(&trace, "PageLRU"), "{trace:?}");
        assert_eq!(k.m.peek(pfn).refcount, 0);
    }

    #[test]
    fn pfn_walk_skips_a_compound_page_before_page_lru() {
        let mut k = Kernel::boot();
        // An order-1 anonymous mTHP at 600.
        k.on(0, |cpu| handle_mm_fault(cpu, Uaddr::new(0, 2), 600, 1))
            .unwrap();
        k.m.peek_mut(600).flags |= pg::LRU;
        let refs = k.m.peek(600).refcount;

        let head = walk(&mut k, 600);
        let tail = walk(&mut k, 601);

        assert!(traced(&head, "compound_order(pfn 600) = 1"), "{head:?}");
        // A tail's own flags have no PG_head: compound_order is 0.
        assert!(!traced(&tail, "compound_order"), "{tail:?}");
        assert!(!traced(&head, "PageLRU") && !traced(&tail, "PageLRU"));
        assert_eq!(k.m.peek(600).refcount, refs, "no reference taken");
    }

    #[test]
    fn pfn_walk_skips_a_hugetlb_folio_by_page_huge() {
        let mut k = Kernel::boot();
        let folio = k.pool_huge_folio(512);

        let trace = walk(&mut k, folio);

        assert!(
            traced(&trace, &format!("compound_order(pfn {folio}) = 9")),
            "{trace:?}"
        );
        assert!(!traced(&trace, "buddy_order_unsafe"), "{trace:?}");
        assert_eq!(k.m.peek(folio).refcount, 0, "the pool folio stays frozen");
    }

    /// Process 0 read file index 0 in at pfn 600 (the file VMA starts at
    /// user page 0): the page cache and the PTE hold it.
    fn cached_and_mapped() -> Kernel {
        let mut k = Kernel::boot();
        k.on(0, |cpu| handle_mm_fault(cpu, Uaddr::new(0, 0), 600, 0))
            .unwrap();
        assert_eq!(k.m.mapping.slot(0), Some(600));
        k
    }

    #[test]
    fn compact_pfn_migrates_a_mapped_page_cache_folio_to_the_free_scanners_block() {
        let mut k = cached_and_mapped();

        k.on(1, |cpu| compact_pfn(cpu, 600, 900)).unwrap();

        let new = k.m.mapping.slot(0).expect("index 0 stays cached");
        assert_ne!(new, 600, "the folio moved");
        assert_eq!(
            k.m.pte(Uaddr::new(0, 0)).and_then(PteVal::present_pfn),
            Some(new)
        );
        assert_eq!(k.m.ledger.compaction_isolated, vec![600]);
        k.quiesce().unwrap();
    }

    #[test]
    fn compact_pfn_leaves_a_pinned_anon_page_alone() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, 2);
        k.on(0, |cpu| handle_mm_fault(cpu, a, 600, 0)).unwrap();
        let pfn = k.m.pte(a).and_then(PteVal::present_pfn).unwrap();
        k.on(0, |cpu| crate::model::gup::pin_user_pages(cpu, a, true))
            .unwrap();

        k.on(1, |cpu| compact_pfn(cpu, pfn, 900)).unwrap();

        assert!(k.m.ledger.compaction_isolated.is_empty());
        assert_eq!(k.m.pte(a).and_then(PteVal::present_pfn), Some(pfn));
        assert!(k.m.peek(pfn).test(pg::LRU), "still on the LRU");
    }

    #[test]
    fn compaction_that_isolates_a_tail_of_another_folio_trips_lookup_current() {
        let mut k = Kernel::boot();
        k.on(0, |cpu| handle_mm_fault(cpu, Uaddr::new(0, 2), 600, 1))
            .unwrap();

        let err = crate::model::oracle::isolated_folio_is_current(&k.m, 601, 601).unwrap_err();

        assert_eq!(err.oracle, crate::model::oracle::Oracle::LookupCurrent);
        assert!(crate::model::oracle::isolated_folio_is_current(&k.m, 600, 600).is_ok());
    }
}
