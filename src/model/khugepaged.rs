//! khugepaged's collapse of a process's anonymous range into a PMD-mapped
//! folio (mm/khugepaged.c).
//!
//! Collapse detaches the PTE table from the PMD (`pmdp_collapse_flush`),
//! checks that no page has an extra reference, copies the pages into the
//! new folio and maps it with the PMD. The PTEs stay intact in the detached
//! table until the copy is done, so GUP-fast that read them before the
//! flush sees an unchanged PTE: only the PMD recheck (70cbc3cc78a9) tells
//! it to back off. The model has no IPIs, so nothing else holds collapse
//! off while GUP-fast runs.

use super::KResult;
use super::config::{PMD_PAGES, PTRS_PER_PTE, VmaKind};
use super::ledger::Migrated;
use super::machine::{Content, Machine, Pfn};
use super::mm_types::pg;
use super::oracle::Violation;
use super::page_flags::{compound_head, folio_nr_pages};
use super::page_ref::{folio_put, folio_ref_sub_and_test};
use super::pgtable::{PmdLeaf, PmdVal, PteEntry, PteVal, Uaddr};

/// `HPAGE_PMD_ORDER`: a PMD leaf maps a folio of `PMD_PAGES` pages.
pub const HPAGE_PMD_ORDER: u8 = PMD_PAGES.trailing_zeros() as u8;
use super::ctx::Cpu;
use crate::ktrace;

/// `collapse_huge_page` of process `mm`'s anonymous PMD range; the new
/// folio comes from the free block holding `pfn_hint`.
pub fn collapse_huge_page(cpu: &Cpu, mm: u8, pfn_hint: Pfn) -> KResult<()> {
    let Some(vma) = cpu.cfg().vmas.first_of(VmaKind::AnonPrivate) else {
        return Ok(());
    };
    if vma.pages < PMD_PAGES {
        return Ok(());
    }
    let a = Uaddr {
        mm,
        page: vma.start,
    };
    let me = cpu.index() as u8;
    let Some(new) = super::page_alloc::folio_alloc(
        cpu,
        "alloc_charge_folio",
        HPAGE_PMD_ORDER,
        pfn_hint,
        "alloc_charge_folio(GFP_TRANSHUGE)",
    )?
    else {
        return Ok(());
    };
    // mmap_write_lock, hugepage_vma_revalidate, check_pmd_still_valid,
    // anon_vma_lock_write, pmdp_collapse_flush: nothing another CPU does
    // between them changes what they see (GUP-fast takes no lock).
    let table = cpu.step_when(
        "pmdp_collapse_flush",
        |m| {
            m.mms[mm as usize].mmap_lock.can_write()
                && m.anon_vma_lock(m.mms[mm as usize].anon_vma).can_write()
                && m.pte_lock_free(a)
        },
        |m| {
            let range: Vec<Uaddr> = (0..PMD_PAGES).map(|i| a.with_page(a.page + i)).collect();
            let PmdVal::Table(t) = m.pmd(a) else {
                ktrace!(m, "{a}: pmd {:?}: nothing to collapse", m.pmd(a));
                return Ok(None);
            };
            if !super::memory::one_anon_vma(m, &range) {
                // hugepage_vma_revalidate: the range is no longer one VMA.
                ktrace!(m, "{a}: the PMD range spans VMAs: SCAN_VMA_CHECK");
                return Ok(None);
            }
            super::oracle::might_sleep(m, "mmap_write_lock")?;
            m.mms[mm as usize].mmap_lock.writer = Some(me);
            let av = m.mms[mm as usize].anon_vma;
            m.anon_vma_lock_mut(av).writer = Some(me);
            m.set_pmd(a, PmdVal::None);
            m.flush_tlb_range(mm, a.pmd_base()..a.pmd_base() + PMD_PAGES);
            ktrace!(m, "{a}: PMD cleared (PTE table in frame {t} detached)");
            Ok(Some(t))
        },
    )?;
    let Some(table) = table else {
        return folio_put(cpu, new);
    };
    let isolated = cpu.step("__collapse_huge_page_isolate", |m| {
        let r = collapse_huge_page_isolate(m, a, table)?;
        let av = m.mms[mm as usize].anon_vma;
        m.anon_vma_lock_mut(av).writer = None;
        if r.is_none() {
            // pmd_populate(): put the table back; mmap_write_unlock.
            m.set_pmd(a, PmdVal::Table(table));
            m.mms[mm as usize].mmap_lock.writer = None;
        }
        Ok(r)
    })?;
    let Some(old) = isolated else {
        return folio_put(cpu, new);
    };
    for i in 0..PTRS_PER_PTE {
        cpu.step("__collapse_huge_page_copy", |m| {
            let data = match old.iter().find(|&&(j, _)| j == i) {
                Some(&(_, page)) => m.frames[page as usize].content.clone(),
                None => Content::Data(0),
            };
            ktrace!(m, "copy page {i} into pfn {}: {data:?}", new + i);
            m.frames[(new + i) as usize].content = data;
            Ok(())
        })?;
    }
    cpu.step("__collapse_huge_page_copy_succeeded", |m| {
        for &(i, page) in &old {
            let x = Uaddr {
                mm,
                page: a.page + i,
            };
            m.set_pte_in(table, x, PteVal::None);
            let p = m.page_mut(page)?;
            p.mapcount -= 1;
            p.flags &= !pg::ANON_EXCLUSIVE;
            m.folio_clear_locked(page, "release_pte_folio")?;
            // free_folio_and_swap_cache(): the mapping's reference.
            folio_ref_sub_and_test(m, page, 1)?;
            let cpu = m.cpu_index() as u8;
            m.ledger.migrated.push(Migrated {
                src: page,
                dst: new + i,
                cpu,
            });
        }
        ktrace!(m, "old PTEs cleared");
        Ok(())
    })?;
    cpu.step("set_pmd_at", |m| {
        let mapping = super::memory::new_anon_mapping(m, a);
        let p = m.page_mut(new)?;
        p.mapping = mapping;
        p.flags |= pg::SWAPBACKED | pg::ANON_EXCLUSIVE | pg::LRU;
        m.page_mut(new + 1)?.entire_mapcount = 0;
        m.set_pmd(
            a,
            PmdVal::Leaf(PmdLeaf {
                pfn: new,
                write: true,
            }),
        );
        // pgtable_trans_huge_deposit: the detached table waits for a split.
        m.mms[mm as usize].deposit(a.pmd_base(), table);
        m.mms[mm as usize].mmap_lock.writer = None;
        ktrace!(m, "{a}: PMD maps pfn {new}");
        Ok(())
    })?;
    // release_pte_folio() → folio_putback_lru(): the isolation reference,
    // the last unless someone pinned the page meanwhile.
    for (_, page) in old {
        cpu.step("release_pte_folio", |m| {
            m.page_mut(page)?.flags |= pg::LRU;
            Ok(())
        })?;
        folio_put(cpu, page)?;
    }
    Ok(())
}

/// `__collapse_huge_page_isolate` under the PTE lock of the detached
/// table: every present page must be a small exclusive anon folio that
/// can be locked and isolated, with no reference beyond its mapping
/// (`is_refcount_suitable`). None PTEs are fine (`max_ptes_none`), but one
/// page at least must be present. Returns the isolated pages, locked.
fn collapse_huge_page_isolate(
    m: &mut Machine,
    a: Uaddr,
    table: u32,
) -> Result<Option<Vec<(u32, Pfn)>>, Violation> {
    let mut got: Vec<(u32, Pfn)> = Vec::new();
    let mut ok = true;
    for i in 0..PTRS_PER_PTE {
        match m.pte_in(table, a.with_page(a.page + i)) {
            PteVal::None => continue,
            PteVal::Migration { .. } => {
                ktrace!(m, "page {i}: migration entry: SCAN_PTE_NON_PRESENT");
                ok = false;
            }
            PteVal::Present(PteEntry { pfn, .. }) => {
                let folio = compound_head(m, pfn)?;
                let p = m.page(folio)?;
                let mapcount = p.mapcount + 1;
                if folio_nr_pages(m, folio)? > 1 {
                    ktrace!(m, "pfn {pfn}: large folio: not collapsed");
                    ok = false;
                } else if p.test(pg::LOCKED) {
                    ktrace!(m, "pfn {pfn}: locked: SCAN_PAGE_LOCK");
                    ok = false;
                } else if p.refcount != mapcount {
                    ktrace!(
                        m,
                        "pfn {pfn}: refcount {} != mapcount {mapcount}: SCAN_PAGE_COUNT",
                        p.refcount
                    );
                    ok = false;
                } else if !p.test(pg::LRU) {
                    ktrace!(m, "pfn {pfn}: not on the LRU: SCAN_DEL_PAGE_LRU");
                    ok = false;
                } else {
                    let q = m.page_mut(pfn)?;
                    q.flags &= !pg::LRU;
                    q.refcount += 1;
                    m.folio_set_locked(pfn)?;
                    got.push((i, pfn));
                }
            }
        }
        if !ok {
            break;
        }
    }
    if ok && !got.is_empty() {
        ktrace!(m, "{a}: isolated {got:?}");
        return Ok(Some(got));
    }
    // release_pte_pages(): unlock and put back what was isolated.
    for &(_, pfn) in &got {
        let q = m.page_mut(pfn)?;
        q.flags |= pg::LRU;
        q.refcount -= 1;
        m.folio_clear_locked(pfn, "release_pte_pages")?;
    }
    Ok(None)
}
