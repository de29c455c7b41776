//! Compound-page helpers (include/linux/page-flags.h).

use super::machine::{Machine, Pfn};
use super::mm_types::{CompoundInfo, pg};
use super::oracle::Violation;
use super::vmemmap::page_aligned;

/// `page_fixed_fake_head`: the real head if `pfn`'s struct page is a fake
/// head (a PAGE_SIZE-aligned struct page reading a head's contents through
/// an HVO alias), otherwise `pfn`. Keep-2 never aliases a head, and the
/// shared-tail series removed the function.
pub fn page_fixed_fake_head(m: &mut Machine, pfn: Pfn) -> Result<Pfn, Violation> {
    if !m.cfg.hvo_mode.guards_readers() || m.hugetlb_optimize_vmemmap_key == 0 {
        return Ok(pfn);
    }
    if page_aligned(pfn)
        && m.page(pfn)?.test(pg::HEAD)
        && pfn + 1 < m.nr_pfns()
        && let CompoundInfo::Tail(head) = m.page(pfn + 1)?.compound_info
    {
        return Ok(head);
    }
    Ok(pfn)
}

/// `_compound_head`: decode the tail bit, else fix up a fake head.
pub fn compound_head(m: &mut Machine, pfn: Pfn) -> Result<Pfn, Violation> {
    match m.page(pfn)?.compound_info {
        CompoundInfo::Tail(head) => Ok(head),
        CompoundInfo::TailMask(order) => Ok(pfn & !((1u32 << order) - 1)),
        CompoundInfo::None => page_fixed_fake_head(m, pfn),
    }
}

/// `folio_test_clear_lru` (include/linux/page-flags.h, v6.12): clear
/// PG_lru, returning whether it was set. Whoever clears it isolates the
/// folio; a second isolator finds it clear and backs off.
pub fn folio_test_clear_lru(m: &mut Machine, folio: Pfn) -> Result<bool, Violation> {
    let p = m.page_mut(folio)?;
    let was = p.test(pg::LRU);
    p.flags &= !pg::LRU;
    Ok(was)
}

/// `folio_test_large` (include/linux/page-flags.h, v6.12): PG_head, which
/// `prep_compound_page` sets before any tail store, so a folio still being
/// prepared (its order in page[1] not stored yet) is already large.
pub fn folio_test_large(m: &mut Machine, folio: Pfn) -> Result<bool, Violation> {
    Ok(m.page(folio)?.test(pg::HEAD))
}

/// `folio_nr_pages` of a head page.
pub fn folio_nr_pages(m: &mut Machine, head: Pfn) -> Result<u32, Violation> {
    if m.page(head)?.test(pg::HEAD) {
        Ok(1 << m.page(head + 1)?.order)
    } else {
        Ok(1)
    }
}

/// `folio_order` of a head page.
pub fn folio_order(m: &mut Machine, head: Pfn) -> Result<u8, Violation> {
    Ok(folio_nr_pages(m, head)?.trailing_zeros() as u8)
}

/// The head of `pfn`'s folio as the page table reads it, without a TLB or
/// any oracle: the oracles' `compound_head`.
pub fn peek_head(m: &Machine, pfn: Pfn) -> Pfn {
    match m.peek(pfn).compound_info {
        CompoundInfo::Tail(head) => head,
        CompoundInfo::TailMask(order) => pfn & !((1u32 << order) - 1),
        CompoundInfo::None => pfn,
    }
}

/// `folio_nr_pages` without a TLB or any oracle.
pub fn peek_nr_pages(m: &Machine, head: Pfn) -> u32 {
    if m.peek(head).test(pg::HEAD) {
        1 << m.peek(head + 1).order
    } else {
        1
    }
}
