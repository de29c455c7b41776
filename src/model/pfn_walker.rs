//! A speculative pfn walker, as in `isolate_migratepages_block`
//! (mm/compaction.c) or `__get_hwpoison_page` (mm/memory-failure.c): it
//! holds no reference on the pfn it visits.

use super::KResult;
use super::machine::Pfn;
use super::page_flags::compound_head;
use super::page_ref::{get_page_unless_zero, put_page};
use crate::exec::Cpu;
use crate::ktrace;

/// Visit `pfn`: `get_page_unless_zero(page)`, then `compound_head(page)`
/// to find the folio, then `put_page(page)`.
pub fn pfn_walk(cpu: &Cpu, pfn: Pfn) -> KResult<()> {
    let pfn = cpu.step("pfn_to_page", |m| {
        let pfn = pfn % m.nr_pfns();
        ktrace!(m, "page = pfn_to_page({pfn})");
        Ok(pfn)
    })?;
    if !get_page_unless_zero(cpu, pfn)? {
        return Ok(());
    }
    cpu.step("compound_head", |m| {
        let head = compound_head(m, pfn)?;
        ktrace!(m, "compound_head(pfn {pfn}) = pfn {head}");
        Ok(())
    })?;
    put_page(cpu, pfn)
}
