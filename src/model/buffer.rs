//! Buffer heads (fs/buffer.c): what `PG_private` stands for in the model.

use super::KResult;
use super::ctx::Cpu;
use super::filemap::{filemap_get_entry, folio_lock, folio_unlock};
use super::mm_types::{Mapping, pg};
use super::page_ref::{folio_get, folio_put};
use crate::ktrace;

/// `create_empty_buffers` (as `block_read_full_folio` calls it) on the
/// page-cache folio at `index`: under the folio lock, `folio_attach_private`
/// sets PG_private and takes a reference.
pub fn create_empty_buffers(cpu: &Cpu, index: u32) -> KResult<()> {
    let Some(folio) = filemap_get_entry(cpu, index)? else {
        return Ok(());
    };
    folio_lock(cpu, folio)?;
    cpu.step("folio_attach_private", |m| {
        let p = m.page(folio)?;
        if p.mapping == (Mapping::File { index }) && !p.test(pg::PRIVATE) {
            m.page_mut(folio)?.flags |= pg::PRIVATE;
            folio_get(m, folio)?;
            ktrace!(m, "pfn {folio}: buffer heads attached");
        }
        Ok(())
    })?;
    folio_unlock(cpu, folio)?;
    folio_put(cpu, folio)
}
