//! Reclaim of a clean page-cache folio (mm/vmscan.c).

use super::KResult;
use super::ctx::Cpu;
use super::filemap::{
    filemap_get_entry, filemap_remove_folio_locked, folio_trylock, folio_unlock, with_xa_lock,
};
use super::mm_types::pg;
use super::page_flags::{folio_nr_pages, folio_test_clear_lru};
use super::page_ref::{folio_put, folio_ref_freeze, free_frozen_folio};

/// `shrink_folio_list` for the folio at `index`: isolate it from the LRU
/// (`folio_isolate_lru` holds a reference), lock it, then `__remove_mapping`
/// freezes the refcount at `1 + nr` (isolation plus page cache) under
/// `xa_lock`; any other reference makes it back off and put it back.
pub fn shrink_folio(cpu: &Cpu, index: u32) -> KResult<()> {
    let Some(folio) = filemap_get_entry(cpu, index)? else {
        return Ok(());
    };
    let isolated = cpu.step("folio_isolate_lru", |m| folio_test_clear_lru(m, folio))?;
    if !isolated {
        return folio_put(cpu, folio);
    }
    let putback = |cpu: &Cpu| -> KResult<()> {
        cpu.step("folio_putback_lru", |m| {
            m.page_mut(folio)?.flags |= pg::LRU;
            Ok(())
        })?;
        folio_put(cpu, folio)
    };
    if !folio_trylock(cpu, folio)? {
        return putback(cpu);
    }
    let removed = with_xa_lock(cpu, "__remove_mapping", |m| {
        let nr = folio_nr_pages(m, folio)? as i32;
        if m.mapping.slot(index) != Some(folio) || !folio_ref_freeze(m, folio, 1 + nr)? {
            return Ok(false);
        }
        filemap_remove_folio_locked(m, index, folio)
    })?;
    folio_unlock(cpu, folio)?;
    if !removed {
        return putback(cpu);
    }
    free_frozen_folio(cpu, folio, |_| Ok(()))
}
