//! Truncation (mm/truncate.c).

use super::KResult;
use super::filemap::{filemap_remove_folio_locked, folio_lock, folio_unlock, with_xa_lock};
use super::page_flags::folio_nr_pages;
use super::page_ref::{folio_get, folio_put, folio_put_refs};
use crate::exec::Cpu;

/// `truncate_inode_pages_range` for one index: find and lock the folio
/// (`find_lock_entries`), remove it from the page cache
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
    folio_lock(cpu, folio)?;
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
