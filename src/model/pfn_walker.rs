//! A speculative pfn walker, as compaction's `isolate_migratepages_block`
//! (mm/compaction.c, v6.12) scans: it holds no reference on the pfn it
//! visits, so every check it makes can be stale by the time it takes one.
//! This is the walker of commit bd225530a4c7 ("mm/hugetlb_vmemmap: fix race
//! with speculative PFN walkers"). Each check is its own unlocked load step
//! where the kernel reads a different word of the struct page.

use super::KResult;
use super::ctx::Cpu;
use super::machine::Pfn;
use super::mm_types::pg;
use super::page_flags::compound_head;
use super::page_ref::{folio_put, get_page_unless_zero};
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
/// `!cc->alloc_contig`): skip `PageHuge`, `PageBuddy` (reading
/// `buddy_order_unsafe`) and `PageCompound` (reading `compound_order`)
/// pages, then skip unless `PageLRU`, then `folio_get_nontail_page`,
/// recheck `folio_test_lru` and put the reference back.
pub fn pfn_walk(cpu: &Cpu, pfn: Pfn) -> KResult<()> {
    // PageHuge: folio_test_hugetlb(page_folio(page)), two words.
    let head = cpu.step(F, |m| compound_head(m, pfn))?;
    let huge = cpu.step(F, |m| Ok(m.page(head)?.test(pg::HUGETLB)))?;
    if huge {
        compound_order_unsafe(cpu, pfn)?;
        return Ok(());
    }
    // PageBuddy reads this page's page_type; the order is page->private.
    if cpu.step(F, |m| Ok(m.page(pfn)?.test(pg::BUDDY)))? {
        cpu.step(F, |m| {
            let order = m.page(pfn)?.private;
            ktrace!(m, "buddy_order_unsafe(pfn {pfn}) = {order}");
            Ok(order)
        })?;
        return Ok(());
    }
    // PageCompound: PG_head in page->flags, else bit 0 of compound_head.
    let compound = cpu.step(F, |m| Ok(m.page(pfn)?.test(pg::HEAD)))?
        || cpu.step(F, |m| Ok(m.page(pfn)?.tail_bit()))?;
    if compound {
        compound_order_unsafe(cpu, pfn)?;
        return Ok(());
    }
    // PageLRU is PF_HEAD: compound_head(page), then the head's flags.
    let head = cpu.step(F, |m| compound_head(m, pfn))?;
    let lru = cpu.step(F, |m| {
        let lru = m.page(head)?.test(pg::LRU);
        ktrace!(m, "page = pfn_to_page({pfn}); PageLRU = {lru}");
        Ok(lru)
    })?;
    if !lru || !get_page_unless_zero(cpu, pfn)? {
        return Ok(());
    }
    // folio_get_nontail_page returns (struct folio *)page: a page whose
    // refcount was nonzero is not a tail, so the folio is the page itself.
    let folio = pfn;
    let lru = cpu.step(F, |m| {
        let lru = m.page(folio)?.test(pg::LRU);
        ktrace!(m, "folio = pfn {folio}; folio_test_lru = {lru}");
        Ok(lru)
    })?;
    let _ = lru; // isolate_fail_put and a failed isolation both put it.
    folio_put(cpu, folio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::memory::handle_mm_fault;
    use crate::model::pgtable::Uaddr;
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
}
