//! Truncation (mm/truncate.c).

use super::KResult;
use super::ctx::Cpu;
use super::filemap::{
    filemap_remove_folio_locked, find_get_entry, folio_trylock, folio_unlock, with_xa_lock,
};
use super::machine::Pfn;
use super::mm_types::{Mapping, pg};
use super::page_flags::folio_nr_pages;
use super::page_ref::{folio_put, folio_put_refs, folio_ref_sub_and_test};
use super::pgtable::{PteVal, rmap_candidates};
use super::rmap::folio_mapcount;
use crate::ktrace;

/// `truncate_inode_pages_range` for one index: find and lock the folio
/// (`find_lock_entries`), unmap it and drop its buffers
/// (`truncate_cleanup_folio`), remove it from the page cache
/// (`truncate_inode_folio`), drop the page cache's references
/// (`filemap_free_folio`), then the lookup's reference: usually the last.
pub fn truncate_inode_folio(cpu: &Cpu, index: u32) -> KResult<()> {
    let Some(folio) = find_lock_entries(cpu, index)? else {
        return Ok(());
    };
    let (mapped, private) = cpu.step("truncate_cleanup_folio", |m| {
        let p = m.page(folio)?;
        Ok((folio_mapcount(m, folio)? > 0, p.test(pg::PRIVATE)))
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

/// `find_lock_entries` (mm/filemap.c, v6.12) for one index: the speculative
/// `find_get_entry` under RCU, then `folio_trylock`; a locked folio is
/// skipped (`goto put`), as is one no longer in this mapping after the lock.
/// Returns the folio locked, with the lookup's reference.
fn find_lock_entries(cpu: &Cpu, index: u32) -> KResult<Option<Pfn>> {
    const F: &str = "find_lock_entries";
    let mut found = find_get_entry(cpu, F, index)?;
    if let Some(folio) = found {
        if !folio_trylock(cpu, folio)? {
            found = None;
        } else if cpu.step(F, |m| Ok(m.page(folio)?.mapping != Mapping::File { index }))? {
            // goto unlock: truncated or migrated since the lookup.
            folio_unlock(cpu, folio)?;
            found = None;
        }
        if found.is_none() {
            folio_put(cpu, folio)?;
        }
    }
    cpu.step(F, |m| {
        m.rcu_read_unlock();
        ktrace!(m, "rcu_read_unlock; locked {found:?}");
        Ok(())
    })?;
    Ok(found)
}

/// `unmap_mapping_folio`: zap every PTE mapping the folio, one process at a
/// time under its PTE lock; our lookup reference keeps it alive.
fn unmap_mapping_folio(cpu: &Cpu, folio: Pfn, index: u32) -> KResult<()> {
    for a in rmap_candidates(cpu.cfg(), Mapping::File { index }, 0) {
        cpu.step_when(
            "zap_pte_range",
            |m| m.pte_lock_free(a),
            |m| {
                if m.pte(a).and_then(PteVal::present_pfn) == Some(folio) {
                    m.set_pte(a, PteVal::None);
                    m.page_mut(folio)?.mapcount -= 1;
                    // tlb_finish_mmu: flush before the mapping's reference goes.
                    m.flush_tlb_range(a.mm, a.page..a.page + 1);
                    folio_ref_sub_and_test(m, folio, 1)?;
                    ktrace!(m, "{a}: PTE for pfn {folio} cleared");
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::filemap::folio_lock;
    use crate::model::filemap::tests::cached_folio;

    #[test]
    fn truncate_inode_folio_removes_an_unlocked_folio() {
        let (mut k, folio) = cached_folio();
        k.trace_on();

        k.on(1, |cpu| truncate_inode_folio(cpu, 0)).unwrap();

        let trace = k.take_trace();
        assert!(
            trace.iter().any(|l| l.contains("xas_reload(index 0)")),
            "{trace:?}"
        );
        assert_eq!(k.m.mapping.slot(0), None);
        assert!(!k.m.rcu.in_read_section(1), "find_lock_entries left RCU");
        assert!(!k.m.peek(folio).test(pg::LOCKED));
        k.quiesce().unwrap();
    }

    #[test]
    fn truncate_inode_folio_skips_a_folio_another_cpu_has_locked() {
        let (mut k, folio) = cached_folio();
        k.on(0, |cpu| folio_lock(cpu, folio)).unwrap();
        let refs = k.m.peek(folio).refcount;

        // folio_trylock fails: find_lock_entries puts it and goes on,
        // where a folio_lock would sleep inside rcu_read_lock.
        k.on(1, |cpu| truncate_inode_folio(cpu, 0)).unwrap();

        assert_eq!(k.m.mapping.slot(0), Some(folio), "still cached");
        assert_eq!(k.m.peek(folio).refcount, refs, "the lookup's ref put");
        assert!(!k.m.rcu.in_read_section(1));
    }

    #[test]
    fn find_lock_entries_takes_no_reference_on_a_frozen_folio() {
        let (mut k, folio) = cached_folio();
        // A freezer (folio_ref_freeze) holds the count at 0: folio_try_get
        // fails and the lookup retries until the slot or count changes.
        k.m.peek_mut(folio).refcount = 0;

        let err = k.on(1, |cpu| find_lock_entries(cpu, 0)).unwrap_err();

        assert!(err.detail.contains("find_lock_entries"), "{}", err.detail);
        assert_eq!(k.m.peek(folio).refcount, 0, "no unconditional folio_get");
    }
}
