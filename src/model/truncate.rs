//! Truncation (mm/truncate.c).

use super::KResult;
use super::ctx::Cpu;
use super::filemap::{filemap_remove_folio_locked, folio_lock_then, folio_unlock, with_xa_lock};
use super::machine::Pfn;
use super::mm_types::{Mapping, pg};
use super::page_flags::folio_nr_pages;
use super::page_ref::{folio_get, folio_put, folio_put_refs, folio_ref_sub_and_test};
use super::pgtable::{PteVal, rmap_candidates};
use super::rmap::folio_mapcount;
use crate::ktrace;

/// `truncate_inode_pages_range` for one index: find and lock the folio
/// (`find_lock_entries`), unmap it and drop its buffers
/// (`truncate_cleanup_folio`), remove it from the page cache
/// (`truncate_inode_folio`), drop the page cache's references
/// (`filemap_free_folio`), then the lookup's reference: usually the last.
pub fn truncate_inode_folio(cpu: &Cpu, index: u32) -> KResult<()> {
    let Some(folio) = with_xa_lock(cpu, "find_lock_entries", |m| {
        let f = m.mapping.slot(index);
        if let Some(f) = f {
            folio_get(m, f)?;
        }
        Ok(f)
    })?
    else {
        return Ok(());
    };
    let (mapped, private) = folio_lock_then(cpu, "folio_lock", folio, |m| {
        let p = m.page(folio)?;
        let ours = p.mapping == Mapping::File { index };
        Ok((
            ours && folio_mapcount(m, folio)? > 0,
            ours && p.test(pg::PRIVATE),
        ))
    })?;
    if mapped {
        unmap_mapping_folio(cpu, folio, index)?;
    }
    if private {
        // folio_invalidate() → block_invalidate_folio(): the buffers go.
        cpu.step("folio_invalidate", |m| {
            m.page_mut(folio)?.flags &= !pg::PRIVATE;
            folio_ref_sub_and_test(m, folio, 1)?;
            ktrace!(m, "pfn {folio}: buffers dropped");
            Ok(())
        })?;
    }
    let (removed, nr) = with_xa_lock(cpu, "__filemap_remove_folio", |m| {
        let nr = folio_nr_pages(m, folio)?;
        Ok((filemap_remove_folio_locked(m, index, folio)?, nr))
    })?;
    if removed {
        folio_put_refs(cpu, folio, nr as i32)?;
    }
    folio_unlock(cpu, folio)?;
    folio_put(cpu, folio)
}

/// `unmap_mapping_folio`: zap every PTE mapping the folio, one process at a
/// time under its PTE lock; our lookup reference keeps it alive.
fn unmap_mapping_folio(cpu: &Cpu, folio: Pfn, index: u32) -> KResult<()> {
    for a in rmap_candidates(cpu.cfg(), Mapping::File { index }, 0) {
        cpu.step("zap_pte_range", |m| {
            if m.pte(a).and_then(PteVal::present_pfn) == Some(folio) {
                m.set_pte(a, PteVal::None);
                m.page_mut(folio)?.mapcount -= 1;
                // tlb_finish_mmu: flush before the mapping's reference goes.
                m.flush_tlb_range(a.mm, a.page..a.page + 1);
                folio_ref_sub_and_test(m, folio, 1)?;
                ktrace!(m, "{a}: PTE for pfn {folio} cleared");
            }
            Ok(())
        })?;
    }
    Ok(())
}
