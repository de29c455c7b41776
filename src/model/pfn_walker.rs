//! A speculative pfn walker, as compaction's `isolate_migratepages_block`
//! (mm/compaction.c) scans: it holds no reference on the pfn it visits, so
//! every check it makes can be stale by the time it takes one. This is the
//! walker of commit bd225530a4c7 ("mm/hugetlb_vmemmap: fix race with
//! speculative PFN walkers").

use super::KResult;
use super::ctx::Cpu;
use super::machine::Pfn;
use super::mm_types::pg;
use super::page_flags::compound_head;
use super::page_ref::{folio_put, get_page_unless_zero};
use crate::ktrace;

/// Visit `pfn`: skip it unless `PageLRU`, then `folio_get_nontail_page`
/// (`get_page_unless_zero`, then `page_folio`), recheck `folio_test_lru`,
/// and put the folio back.
pub fn pfn_walk(cpu: &Cpu, pfn: Pfn) -> KResult<()> {
    let lru = cpu.step("isolate_migratepages_block", |m| {
        // PageLRU is PF_HEAD: it reads the flags of compound_head(page).
        let head = compound_head(m, pfn)?;
        let lru = m.page(head)?.test(pg::LRU);
        ktrace!(m, "page = pfn_to_page({pfn}); PageLRU = {lru}");
        Ok(lru)
    })?;
    if !lru || !get_page_unless_zero(cpu, pfn)? {
        return Ok(());
    }
    let folio = cpu.step("folio_get_nontail_page", |m| {
        let folio = compound_head(m, pfn)?;
        let lru = m.page(folio)?.test(pg::LRU);
        ktrace!(
            m,
            "page_folio(pfn {pfn}) = pfn {folio}; folio_test_lru = {lru}"
        );
        Ok(folio)
    })?;
    folio_put(cpu, folio)
}
