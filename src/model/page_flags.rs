//! Compound-page helpers (include/linux/page-flags.h).

use super::config::HvoMode;
use super::machine::{Machine, Pfn};
use super::mm_types::{CompoundInfo, pg};
use super::oracle::Violation;
use super::vmemmap::page_aligned;

/// `page_fixed_fake_head`: the real head if `pfn`'s struct page is a fake
/// head (a PAGE_SIZE-aligned struct page reading a head's contents through
/// an HVO alias), otherwise `pfn`. Keep-2 never aliases a head, and the
/// shared-tail series removed the function.
pub fn page_fixed_fake_head(m: &mut Machine, pfn: Pfn) -> Result<Pfn, Violation> {
    if m.cfg.hvo_mode == HvoMode::SharedTail || m.hugetlb_optimize_vmemmap_key == 0 {
        return Ok(pfn);
    }
    if page_aligned(pfn) && m.page(pfn)?.test(pg::HEAD) && pfn + 1 < m.nr_pfns() {
        if let CompoundInfo::Tail(head) = m.page(pfn + 1)?.compound_info {
            return Ok(head);
        }
    }
    Ok(pfn)
}

/// `page_is_fake_head`.
pub fn page_is_fake_head(m: &mut Machine, pfn: Pfn) -> Result<bool, Violation> {
    Ok(page_fixed_fake_head(m, pfn)? != pfn)
}

/// `_compound_head`: decode the tail bit, else fix up a fake head.
pub fn compound_head(m: &mut Machine, pfn: Pfn) -> Result<Pfn, Violation> {
    match m.page(pfn)?.compound_info {
        CompoundInfo::Tail(head) => Ok(head),
        CompoundInfo::TailMask(order) => Ok(pfn & !((1u32 << order) - 1)),
        CompoundInfo::None => page_fixed_fake_head(m, pfn),
    }
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
