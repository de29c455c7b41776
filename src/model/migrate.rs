//! Page migration (mm/migrate.c), as `move_pages(2)` drives it for one
//! folio in MIGRATE_SYNC mode.
//!
//! The folio is isolated (+1) and locked, its PTEs become migration
//! entries, and only when its refcount equals `folio_expected_refs` is it
//! copied and, with a mapping, frozen under the xarray lock while the
//! mapping moves to the new folio. A speculative reference (GUP-fast, a
//! page-cache lookup, a pfn walker) can make the count briefly too high:
//! `-EAGAIN`, retried up to `NR_MAX_MIGRATE_PAGES_RETRY` times.

use super::KResult;
use super::ctx::Cpu;
use super::filemap::{folio_lock_then, folio_unlock};
use super::ledger::Migrated;
use super::machine::{Machine, Pfn};
use super::mm_types::{Mapping, pg};
use super::oracle::{self, Violation};
use super::page_flags::folio_nr_pages;
use super::page_ref::{
    folio_get, folio_put, folio_ref_add, folio_ref_freeze, folio_ref_sub_and_test,
    folio_ref_unfreeze,
};
use super::pgtable::{PmdVal, PteEntry, PteVal, Uaddr};
use super::rmap::{RmapSection, folio_mapcount, remove_migration_ptes, try_to_migrate};
use super::variant::Variant;
use crate::ktrace;

/// `NR_MAX_MIGRATE_PAGES_RETRY`: passes over a folio that keeps failing
/// with -EAGAIN.
pub const NR_MAX_MIGRATE_PAGES_RETRY: u32 = 10;

/// `folio_expected_ref_count(folio) + 1` (v6.16, 86ebd50224c0): the
/// isolating caller, one per page from the page cache, one for PG_private,
/// one per mapping (none once unmapped). No swap cache in the model. The
/// pre-6.16 `folio_expected_refs(mapping, folio)` gives the same count for
/// every folio the model has (it differs only for movable_ops and KSM).
pub fn folio_expected_refs(m: &mut Machine, folio: Pfn) -> Result<i32, Violation> {
    let p = m.page(folio)?;
    let nr = folio_nr_pages(m, folio)? as i32;
    let mut refs = 1;
    if let Mapping::File { .. } = p.mapping {
        if !m.cfg.has(Variant::MigrateExpectedRefsUndercount) {
            refs += nr;
        }
        refs += p.test(pg::PRIVATE) as i32;
    }
    Ok(refs + folio_mapcount(m, folio)?)
}

/// One folio on its way through `migrate_pages_batch`.
struct Migration {
    src: Pfn,
    order: u8,
    mapping: Mapping,
    pfn_hint: Pfn,
    /// Was the last -EAGAIN on a folio nobody else referenced?
    last_quiet: bool,
}

/// `move_pages(2)` of the page at `a`: `add_folio_for_migration` isolates
/// the folio under `mmap_lock` and the PTE lock, then `migrate_pages`.
/// `pfn_hint` places the new folio.
pub fn migrate_pages(cpu: &Cpu, a: Uaddr, pfn_hint: Pfn) -> KResult<()> {
    let Some((src, order, mapping)) = cpu.step_when(
        "add_folio_for_migration",
        |m| m.mms[a.mm as usize].mmap_lock.can_read() && m.pte_lock_free(a),
        |m| add_folio_for_migration(m, a),
    )?
    else {
        return Ok(());
    };
    migrate_isolated_folio(cpu, src, order, mapping, pfn_hint)
}

/// `migrate_pages` of a folio its caller isolated (`move_pages`,
/// compaction's `isolate_migratepages_block`), holding the isolation
/// reference.
pub fn migrate_isolated_folio(
    cpu: &Cpu,
    src: Pfn,
    order: u8,
    mapping: Mapping,
    pfn_hint: Pfn,
) -> KResult<()> {
    let mut mig = Migration {
        src,
        order,
        mapping,
        pfn_hint,
        last_quiet: false,
    };
    migrate_pages_batch(cpu, &mut mig)
}

/// `folio_walk_start` + `folio_isolate_lru` (which takes a reference).
fn add_folio_for_migration(
    m: &mut Machine,
    a: Uaddr,
) -> Result<Option<(Pfn, u8, Mapping)>, Violation> {
    let Some(PteVal::Present(PteEntry { pfn, .. })) = m.pte(a) else {
        // Nothing mapped, a migration entry, or a PMD leaf (THP migration
        // is not modelled).
        if let PmdVal::Leaf(f) = m.pmd(a) {
            ktrace!(m, "{a}: PMD-mapped pfn {}: not migrated", f.pfn);
        }
        return Ok(None);
    };
    let folio = super::page_flags::compound_head(m, pfn)?;
    if !super::page_flags::folio_test_clear_lru(m, folio)? {
        ktrace!(m, "{a}: pfn {folio} is not on the LRU: -EBUSY");
        return Ok(None);
    }
    folio_get(m, folio)?;
    let order = super::page_flags::folio_order(m, folio)?;
    ktrace!(m, "{a}: isolated pfn {folio}");
    Ok(Some((folio, order, m.page(folio)?.mapping)))
}

/// The result of one attempt.
enum Attempt<T> {
    Done(T),
    /// -EAGAIN: retry in the next pass.
    Again,
    /// Any other error: give up on the folio.
    Fail,
}

/// `migrate_pages_batch` for one folio: unmap passes, then move passes,
/// each up to `NR_MAX_MIGRATE_PAGES_RETRY`; on failure the folio goes
/// back with its PTEs restored.
fn migrate_pages_batch(cpu: &Cpu, mig: &mut Migration) -> KResult<()> {
    let mut unmapped = None;
    for _pass in 0..NR_MAX_MIGRATE_PAGES_RETRY {
        let Some(attempt) = migrate_folio_unmap(cpu, mig)? else {
            // migrate_folio_done(): the isolation reference was the last.
            return folio_put(cpu, mig.src);
        };
        match attempt {
            Attempt::Done(u) => {
                unmapped = Some(u);
                break;
            }
            Attempt::Again => continue,
            Attempt::Fail => return folio_putback_lru(cpu, mig, false),
        }
    }
    let Some((dst, sections)) = unmapped else {
        return folio_putback_lru(cpu, mig, true);
    };
    for _pass in 0..NR_MAX_MIGRATE_PAGES_RETRY {
        match migrate_folio_move(cpu, mig, dst, &sections)? {
            Attempt::Done(()) => return Ok(()),
            Attempt::Again => continue,
            Attempt::Fail => break,
        }
    }
    // The cleanup at the end of migrate_pages_batch.
    migrate_folio_undo_src(cpu, mig, &sections)?;
    migrate_folio_undo_dst(cpu, dst)?;
    folio_putback_lru(cpu, mig, true)
}

/// What a successful unmap hands to the move: the new folio, and the PTE
/// sections holding migration entries.
type Unmapped = (Pfn, Vec<RmapSection>);

/// `migrate_folio_unmap`: `None` if the folio was freed from under us;
/// else allocate the new folio (`alloc_migration_target`, returned locked), lock the old one (MIGRATE_SYNC sleeps), and replace
/// its PTEs with migration entries. A folio that stays mapped is put back
/// together and retried.
fn migrate_folio_unmap(cpu: &Cpu, mig: &mut Migration) -> KResult<Option<Attempt<Unmapped>>> {
    let (order, hint, src) = (mig.order, mig.pfn_hint, mig.src);
    let Some(dst) = super::page_alloc::alloc_pages_then(
        cpu,
        "alloc_migration_target",
        "alloc_migration_target(GFP_USER)",
        |m| {
            // The folio was freed from under us: only the isolation
            // reference is left (the check that opens migrate_folio_unmap).
            if m.page(src)?.refcount == 1 {
                ktrace!(m, "pfn {src}: refcount 1, freed from under us");
                oracle::migration_skips_only_freed(m, src)?;
                return Ok(None);
            }
            Ok(Some((order, hint)))
        },
        |m, d, _| {
            m.folio_set_locked(d)?;
            Ok(d)
        },
    )?
    else {
        return Ok(None);
    };
    let Some(dst) = dst else {
        return Ok(Some(Attempt::Fail));
    };
    let src = mig.src;
    // Locked, the folio's mapping is stable: truncation may have cleared
    // it since isolation (`folio_mapping` is read again under the lock).
    let (mapped, mapping) = folio_lock_then(cpu, "folio_lock", src, |m| {
        let mapped = folio_mapcount(m, src)? > 0;
        ktrace!(
            m,
            "pfn {src} locked, {}mapped",
            if mapped { "" } else { "not " }
        );
        Ok((mapped, m.page(src)?.mapping))
    })?;
    mig.mapping = mapping;
    if !mapped {
        return Ok(Some(Attempt::Done((dst, Vec::new()))));
    }
    let u = try_to_migrate(cpu, src, mig.mapping, 1 << order)?;
    if !u.still_mapped {
        return Ok(Some(Attempt::Done((dst, u.sections))));
    }
    mig.last_quiet = u.quiet;
    remove_migration_ptes(cpu, src, src, &u.sections, mig.mapping)?;
    folio_unlock(cpu, src)?;
    migrate_folio_undo_dst(cpu, dst)?;
    Ok(Some(Attempt::Again))
}

/// `migrate_folio_move`: `move_to_new_folio` (the mapping's
/// `migrate_folio`: `filemap_migrate_folio`, `buffer_migrate_folio` or,
/// for anon, `migrate_folio`; all `__migrate_folio` here), then on success
/// `remove_migration_ptes` onto the new folio and drop both folios.
fn migrate_folio_move(
    cpu: &Cpu,
    mig: &mut Migration,
    dst: Pfn,
    sections: &[RmapSection],
) -> KResult<Attempt<()>> {
    match __migrate_folio(cpu, mig, dst)? {
        Attempt::Done(()) => {}
        Attempt::Again => return Ok(Attempt::Again),
        Attempt::Fail => return Ok(Attempt::Fail),
    }
    let src = mig.src;
    remove_migration_ptes(cpu, src, dst, sections, mig.mapping)?;
    folio_unlock(cpu, dst)?;
    folio_put(cpu, dst)?;
    folio_unlock(cpu, src)?;
    // migrate_folio_done(): the isolation reference, normally the last.
    folio_put(cpu, src)?;
    Ok(Attempt::Done(()))
}

/// `__migrate_folio`: check the refcount early, copy the data, then
/// `__folio_migrate_mapping` commits; PG_private moves with the mapping.
fn __migrate_folio(cpu: &Cpu, mig: &mut Migration, dst: Pfn) -> KResult<Attempt<()>> {
    let src = mig.src;
    let expected = cpu.step("__migrate_folio", |m| {
        let expected = folio_expected_refs(m, src)?;
        let count = m.page(src)?.refcount;
        if count != expected {
            ktrace!(
                m,
                "pfn {src}: refcount {count} != expected {expected}: -EAGAIN"
            );
            return Ok(Err(oracle::folio_is_quiet(m, src)));
        }
        oracle::migration_refcount_exact(m, src, count, "folio_ref_count")?;
        ktrace!(m, "pfn {src}: refcount {count} == expected {expected}");
        Ok(Ok(expected))
    })?;
    let expected = match expected {
        Ok(e) => e,
        Err(quiet) => {
            mig.last_quiet = quiet;
            return Ok(Attempt::Again);
        }
    };
    cpu.step("folio_mc_copy", |m| {
        let nr = folio_nr_pages(m, src)?;
        for i in 0..nr {
            let data = m.frames[(src + i) as usize].content.clone();
            m.frames[(dst + i) as usize].content = data;
        }
        ktrace!(m, "copied pfn {src} to pfn {dst}");
        Ok(())
    })?;
    __folio_migrate_mapping(cpu, mig, dst, expected)
}

/// `folio_ref_freeze(src, expected)` on the way to commit: the cmpxchg, or
/// with `migrate-nonatomic-freeze` a check here and a plain store of 0 in
/// the next step. Returns whether the folio is frozen.
fn freeze(cpu: &Cpu, mig: &mut Migration, expected: i32, xa_lock: bool) -> KResult<bool> {
    let src = mig.src;
    let nonatomic = cpu.cfg().has(Variant::MigrateNonatomicFreeze);
    let ready = move |m: &Machine| !xa_lock || m.mapping.xa_lock.is_none();
    let me = cpu.index() as u8;
    let frozen = cpu.step_when("__folio_migrate_mapping", ready, |m| {
        if xa_lock {
            m.mapping.xa_lock = Some(me);
        }
        let count = m.page(src)?.refcount;
        let ok = if nonatomic {
            ktrace!(m, "pfn {src}: refcount {count}, expected {expected}");
            count == expected
        } else {
            if count == expected {
                oracle::migration_refcount_exact(m, src, count, "folio_ref_freeze")?;
            }
            folio_ref_freeze(m, src, expected)?
        };
        if !ok {
            mig.last_quiet = oracle::folio_is_quiet(m, src);
            if xa_lock {
                m.mapping.xa_lock = None;
            }
        }
        Ok(ok)
    })?;
    if frozen && nonatomic {
        cpu.step("folio_ref_freeze", |m| {
            let count = m.page(src)?.refcount;
            oracle::migration_refcount_exact(m, src, count, "the plain store of 0")?;
            m.page_mut(src)?.refcount = 0;
            m.ledger.freeze(src, me);
            ktrace!(m, "pfn {src}: refcount {count} -> 0 (plain store)");
            Ok(())
        })?;
    }
    Ok(frozen)
}

/// `__folio_migrate_mapping`: the point of no return. With a mapping:
/// under the xarray lock freeze at `expected`, point the page cache at
/// the new folio (which gains the cache's references) and unfreeze the
/// old one at `expected - nr`. Anon: a large folio is frozen and unfrozen
/// (to take it off the deferred split queue), then the new folio takes
/// over `mapping` and `index`; a small one is not rechecked.
fn __folio_migrate_mapping(
    cpu: &Cpu,
    mig: &mut Migration,
    dst: Pfn,
    expected: i32,
) -> KResult<Attempt<()>> {
    let src = mig.src;
    let file = matches!(mig.mapping, Mapping::File { .. });
    let large = mig.order > 0;
    if (file || large) && !freeze(cpu, mig, expected, file)? {
        return Ok(Attempt::Again);
    }
    cpu.step("__folio_migrate_mapping", |m| {
        let p = m.page(src)?;
        let nr = folio_nr_pages(m, src)? as i32;
        if large && !file {
            folio_ref_unfreeze(m, src, expected)?;
        }
        let d = m.page_mut(dst)?;
        d.mapping = p.mapping;
        d.flags |= p.flags & pg::SWAPBACKED;
        if let Mapping::File { index } = p.mapping {
            folio_ref_add(m, dst, nr)?;
            m.mapping.set_slot(index, Some(dst));
            ktrace!(m, "xas_store(index {index}) = pfn {dst}");
            folio_ref_unfreeze(m, src, expected - nr)?;
            m.mapping.xa_lock = None;
        }
        oracle::migration_carries_data(m, src, dst)?;
        let cpu = m.cpu_index() as u8;
        m.ledger.migrated.push(Migrated { src, dst, cpu });
        // folio_attach_private(dst, folio_detach_private(src)).
        if p.test(pg::PRIVATE) {
            m.page_mut(src)?.flags &= !pg::PRIVATE;
            folio_ref_sub_and_test(m, src, 1)?;
            m.page_mut(dst)?.flags |= pg::PRIVATE;
            folio_get(m, dst)?;
        }
        // move_to_new_folio (v6.12): `if (!folio_mapping_flags(src))
        // src->mapping = NULL` (an anon mapping is left for free time).
        if matches!(p.mapping, Mapping::File { .. }) {
            m.page_mut(src)?.mapping = Mapping::None;
        }
        // folio_add_lru(dst).
        m.page_mut(dst)?.flags |= pg::LRU;
        ktrace!(m, "pfn {src} migrated to pfn {dst}");
        Ok(())
    })?;
    Ok(Attempt::Done(()))
}

/// `migrate_folio_undo_src`: restore the PTEs to the old folio and unlock
/// it.
fn migrate_folio_undo_src(cpu: &Cpu, mig: &Migration, sections: &[RmapSection]) -> KResult<()> {
    remove_migration_ptes(cpu, mig.src, mig.src, sections, mig.mapping)?;
    folio_unlock(cpu, mig.src)
}

/// `migrate_folio_undo_dst`: unlock and free the unused new folio.
fn migrate_folio_undo_dst(cpu: &Cpu, dst: Pfn) -> KResult<()> {
    folio_unlock(cpu, dst)?;
    folio_put(cpu, dst)
}

/// `putback_movable_pages` → `folio_putback_lru`: the folio that did not
/// migrate goes back on the LRU and loses the isolation reference. After
/// -EAGAIN on every pass (`retried`), the progress oracle asks whether the
/// last one was on a quiet folio.
fn folio_putback_lru(cpu: &Cpu, mig: &Migration, retried: bool) -> KResult<()> {
    let src = mig.src;
    cpu.step("folio_putback_lru", |m| {
        if retried {
            oracle::migration_makes_progress(src, NR_MAX_MIGRATE_PAGES_RETRY, mig.last_quiet)?;
        }
        m.page_mut(src)?.flags |= pg::LRU;
        Ok(())
    })?;
    folio_put(cpu, src)
}
