//! The page cache against `folio->mapping`/`index` and the file's PTEs.

use super::{Oracle, Violation, fail};
use crate::model::machine::{Content, Machine, Pfn};
use crate::model::mm_types::{Mapping, pg};
use crate::model::pgtable::{PmdVal, PteVal, Uaddr, rmap_candidates};

/// After a step, at each index whose slot or file PTE the step changed
/// (v6.12 mm/filemap.c): a cached folio has `mapping == File { index }`
/// (`__filemap_add_folio` sets both under `xa_lock`); a folio the step
/// took out of the slot has lost it (`page_cache_delete` clears
/// `folio->mapping` under the same `xa_lock`), unless it is a locked
/// folio migration just replaced (v6.12 `__folio_migrate_mapping` stores
/// the new folio and `move_to_new_folio` clears the old one's mapping
/// later, under the folio lock); and a present PTE of the file VMA at that
/// index maps the cached folio (truncation unmaps before it removes,
/// migration leaves migration entries while it replaces).
pub fn page_cache_matches_mappings_and_ptes(m: &Machine) -> Result<(), Violation> {
    let bad = |what: String| fail(Oracle::PageCacheConsistent, what);
    for (i, &(index, old)) in m.mapping.changed.iter().enumerate() {
        if m.mapping.changed[..i]
            .iter()
            .any(|&(j, o)| j == index && o == old)
        {
            continue;
        }
        let cached = m.mapping.slot(index);
        if let Some(f) = cached
            && m.peek(f).mapping != (Mapping::File { index })
        {
            return bad(format!(
                "index {index} holds pfn {f}, whose mapping is {:?}",
                m.peek(f).mapping
            ));
        }
        if let Some(o) = old
            && cached != Some(o)
            && m.peek(o).mapping == (Mapping::File { index })
        {
            let replaced = m.ledger.migrated.iter().any(|x| x.src == o);
            if !(replaced && m.peek(o).test(pg::LOCKED)) {
                return bad(format!(
                    "pfn {o} left index {index} but its mapping still names it"
                ));
            }
        }
        for a in rmap_candidates(&m.cfg, Mapping::File { index }, 0) {
            if let Some(p) = m.pte(a).and_then(PteVal::present_pfn)
                && Some(p) != cached
            {
                return bad(format!(
                    "{a} maps pfn {p}, but index {index} holds {cached:?}"
                ));
            }
        }
    }
    Ok(())
}

/// At the point a caller of `filemap_get_entry` uses the folio it got
/// (v6.12 `finish_fault` maps it), the folio must still be the one at the
/// index it was looked up by: the lookup rechecked the slot after
/// `folio_try_get` (`xas_reload`), and the caller rechecked
/// `folio->mapping` under `folio_lock`, which truncation and migration
/// hold while they replace it.
pub fn lookup_is_current(m: &Machine, index: u32, folio: Pfn, user: &str) -> Result<(), Violation> {
    let cached = m.mapping.slot(index);
    if cached != Some(folio) || m.peek(folio).mapping != (Mapping::File { index }) {
        return fail(
            Oracle::LookupCurrent,
            format!(
                "{user} used pfn {folio} looked up at index {index}, but the index holds \
                 {cached:?} and the folio's mapping is {:?}",
                m.peek(folio).mapping
            ),
        );
    }
    Ok(())
}

/// Does the entry GUP walked for `a` (the PMD entry in PMD table `table`,
/// and under a PMD table its PTE) map `page`? Read without a TLB. A PTE
/// `try_to_migrate_one` cleared under its lock still counts: its mapcount
/// and reference stay until the migration entry or the restore.
pub fn gup_entry_maps(m: &Machine, a: Uaddr, table: Pfn, page: Pfn) -> bool {
    if m.ledger.cleared.iter().any(|e| e.a == a && e.pfn == page) {
        return true;
    }
    let entry = match m.frames[table as usize].content {
        Content::Pmds(ref t) => t[a.pmd_index()],
        _ => return false,
    };
    match entry {
        PmdVal::Leaf(l) => l.pfn + a.pmd_offset() == page,
        PmdVal::Table(t) => {
            matches!(m.frames[t as usize].content, Content::Ptes(_))
                && m.pte_in(t, a).present_pfn() == Some(page)
        }
        PmdVal::None => false,
    }
}

/// When GUP returns a page, its reference is on the page's folio and the
/// entry GUP walked mapped the page at some instant the reference was
/// held: when the reference landed, or now. GUP-fast (v6.12
/// `gup_fast_pte_range`, `gup_fast_pmd_leaf`) makes this so by reloading
/// the PMD and PTE after the grab; the slow path holds the page-table
/// lock. A page unmapped after the grab is an ordinary race (GUP, then
/// munmap); one replaced or unmapped between GUP's load and its grab is
/// not (a migrated, freed or reused page: 2667f50e8b81, 70cbc3cc78a9). The
/// entry is read through the PMD table GUP walked (`pmdp`), not the mm's
/// current PUD, for the same reason.
pub fn gup_page_is_current(
    m: &Machine,
    a: Uaddr,
    table: Pfn,
    page: Pfn,
    folio: Pfn,
    mapped_at_grab: bool,
) -> Result<(), Violation> {
    let head = crate::model::page_flags::peek_head(m, page);
    if head != folio || !(mapped_at_grab || gup_entry_maps(m, a, table, page)) {
        return fail(
            Oracle::LookupCurrent,
            format!(
                "GUP returned pfn {page} (folio pfn {folio}) for {a}, but the entry it walked \
                 (PMD table in frame {table}) did not map it when the reference was taken and \
                 maps {:?} now; pfn {page}'s folio is pfn {head}",
                m.pte(a)
            ),
        );
    }
    Ok(())
}

/// When compaction isolates the folio it took a reference on (v6.12
/// `isolate_migratepages_block`, under the lruvec lock), that folio is
/// still the folio of the pfn it scanned: `folio_get_nontail_page`'s
/// reference keeps the page from being freed and reused as a tail, so the
/// page is its own folio, allocated, with a nonzero refcount.
pub fn isolated_folio_is_current(m: &Machine, pfn: Pfn, folio: Pfn) -> Result<(), Violation> {
    let head = crate::model::page_flags::peek_head(m, pfn);
    let allocated = m.frames[folio as usize].owner == crate::model::machine::Owner::Allocated;
    if head != folio || !allocated || m.peek(folio).refcount <= 0 {
        return fail(
            Oracle::LookupCurrent,
            format!(
                "compaction isolated pfn {folio} for pfn {pfn}, but pfn {pfn}'s folio is \
                 pfn {head}, the frame is {}allocated and the refcount is {}",
                if allocated { "" } else { "not " },
                m.peek(folio).refcount
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::lookup_is_current;
    use crate::model::filemap::{filemap_add_folio, filemap_get_entry};
    use crate::model::machine::Pfn;
    use crate::model::memory::handle_mm_fault;
    use crate::model::mm_types::Mapping;
    use crate::model::oracle::{Oracle, after_step};
    use crate::model::pgtable::Uaddr;
    use crate::model::testing::Kernel;
    use crate::model::truncate::truncate_inode_folio;

    /// Process 0 faulted in file index 0 (the file VMA starts at page 0):
    /// the kernel and the page-cache folio it maps.
    pub(crate) fn mapped_file_page() -> (Kernel, Pfn) {
        let mut k = Kernel::boot();
        k.on(0, |cpu| handle_mm_fault(cpu, Uaddr::new(0, 0), 600, 0))
            .unwrap();
        let folio = k.m.mapping.slot(0).expect("the fault read index 0 in");
        (k, folio)
    }

    #[test]
    fn fault_then_truncate_keeps_cache_mapping_and_ptes_in_agreement() {
        let (mut k, _) = mapped_file_page();
        k.on(1, |cpu| truncate_inode_folio(cpu, 0)).unwrap();
        k.on(1, |cpu| handle_mm_fault(cpu, Uaddr::new(1, 0), 610, 0))
            .unwrap();
        assert!(k.m.mapping.slot(0).is_some());
        k.quiesce().unwrap();
    }

    #[test]
    fn a_cached_folio_whose_mapping_names_another_index_is_caught() {
        let (mut k, folio) = mapped_file_page();
        k.m.peek_mut(folio).mapping = Mapping::File { index: 1 };
        k.m.mapping.changed.push((0, None));

        let err = after_step(&mut k.m).unwrap_err();

        assert_eq!(err.oracle, Oracle::PageCacheConsistent);
        assert!(err.detail.contains("whose mapping is"), "{}", err.detail);
    }

    #[test]
    fn a_folio_removed_from_the_cache_that_keeps_its_mapping_is_caught() {
        let mut k = Kernel::boot();
        k.on(0, |cpu| filemap_add_folio(cpu, 0, 600)).unwrap();
        // page_cache_delete's xas_store(NULL) without folio->mapping = NULL.
        k.m.mapping.set_slot(0, None);

        let err = after_step(&mut k.m).unwrap_err();

        assert_eq!(err.oracle, Oracle::PageCacheConsistent);
        assert!(err.detail.contains("left index 0"), "{}", err.detail);
    }

    #[test]
    fn a_pte_left_mapping_a_removed_folio_is_caught() {
        let (mut k, folio) = mapped_file_page();
        // __filemap_remove_folio without unmap_mapping_folio first.
        k.m.mapping.set_slot(0, None);
        k.m.peek_mut(folio).mapping = Mapping::None;

        let err = after_step(&mut k.m).unwrap_err();

        assert_eq!(err.oracle, Oracle::PageCacheConsistent);
        assert!(err.detail.contains("index 0 holds None"), "{}", err.detail);
    }

    #[test]
    fn the_check_reads_only_the_indices_a_step_changed() {
        let (mut k, folio) = mapped_file_page();
        k.m.peek_mut(folio).mapping = Mapping::None;
        after_step(&mut k.m).unwrap();
    }

    #[test]
    fn a_lookup_used_at_its_index_is_current() {
        let mut k = Kernel::boot();
        k.on(0, |cpu| filemap_add_folio(cpu, 0, 600)).unwrap();
        let folio = k.on(0, |cpu| filemap_get_entry(cpu, 0)).unwrap().unwrap();

        k.step(0, |m| lookup_is_current(m, 0, folio, "finish_fault"))
            .unwrap();
    }

    #[test]
    fn a_lookup_used_after_truncation_without_the_mapping_recheck_is_caught() {
        let mut k = Kernel::boot();
        k.on(0, |cpu| filemap_add_folio(cpu, 0, 600)).unwrap();
        let folio = k.on(0, |cpu| filemap_get_entry(cpu, 0)).unwrap().unwrap();
        k.on(1, |cpu| truncate_inode_folio(cpu, 0)).unwrap();

        // finish_fault without filemap_fault's folio_lock + mapping check.
        let err = k
            .step(0, |m| lookup_is_current(m, 0, folio, "finish_fault"))
            .unwrap_err();

        assert_eq!(err.oracle, Oracle::LookupCurrent);
        assert!(err.detail.contains("index holds None"), "{}", err.detail);
    }
}
