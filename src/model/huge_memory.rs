//! Anonymous transparent huge pages (mm/huge_memory.c): the PMD fault, the
//! PMD write fault, splitting a PMD mapping into PTEs, and the mapcount
//! helpers of the write-fault designs.
//!
//! A THP is `PMD_PAGES` pages (the model's small PMD). The mapcount
//! arithmetic is the current kernel's: a PMD mapping counts once in the
//! folio's entire mapcount (`_entire_mapcount`, page[1]), a PTE mapping
//! once in its page's `_mapcount`; splitting a PMD moves the entire
//! mapping to one PTE mapping per page (`__split_huge_pmd_locked`).
//! PageAnonExclusive of a PMD-mapped THP lives on its head page and passes
//! to every subpage at the split.

use super::KResult;
use super::config::{CowDesign, PMD_PAGES};
use super::ctx::Cpu;
use super::khugepaged::HPAGE_PMD_ORDER;
use super::machine::{Machine, Pfn};
use super::memory::{
    FaultKind, handle_mm_fault_kind, mmap_read_lock, mmap_read_unlock, new_anon_mapping,
    one_anon_vma,
};
use super::mm_types::{Mapping, pg};
use super::oracle::Violation;
use super::page_alloc::alloc_pages_then;
use super::page_flags::folio_nr_pages;
use super::page_ref::folio_put;
use super::pgtable::{Level, PmdLeaf, PmdVal, PteEntry, PteVal, Uaddr};
use crate::ktrace;

/// `page_trans_huge_mapcount` of the 2016 fix (seed 002): the largest PTE
/// mapcount of any subpage plus the PMD mappings. (With PageDoubleMap the
/// 2016 kernel counted a PMD mapping in every subpage too and took one off
/// again; over the current counters the value is the same.)
pub fn page_trans_huge_mapcount(m: &mut Machine, folio: Pfn) -> Result<i32, Violation> {
    let nr = folio_nr_pages(m, folio)?;
    let mut max = 0;
    for p in folio..folio + nr {
        max = max.max(m.page(p)?.mapcount + 1);
    }
    let entire = if nr > 1 {
        m.page(folio + 1)?.entire_mapcount + 1
    } else {
        0
    };
    Ok(max + entire)
}

/// `handle_mm_fault` of a write to `a` in a THP-eligible anonymous VMA
/// (`MADV_HUGEPAGE`) whose PMD is none: `create_huge_pmd` →
/// `do_huge_pmd_anonymous_page` maps a new zeroed THP from the free block
/// holding `pfn_hint` with a writable PMD, depositing a PTE table for a
/// later split. If the PMD is populated, or the THP or the table cannot be
/// allocated, the fault falls back to the PTE level (`VM_FAULT_FALLBACK`).
pub fn do_huge_pmd_anonymous_page(cpu: &Cpu, a: Uaddr, pfn_hint: Pfn) -> KResult<()> {
    mmap_read_lock(cpu, a.mm)?;
    let base = a.with_page(a.pmd_base());
    let range: Vec<Uaddr> = (0..PMD_PAGES)
        .map(|i| base.with_page(base.page + i))
        .collect();
    let eligible = cpu.step("do_huge_pmd_anonymous_page", |m| {
        // thp_vma_suitable_order: the whole PMD range in one writable VMA.
        let ok = one_anon_vma(m, &range)
            && range.iter().all(|&x| m.vm_page(x).write)
            && m.pmd_alloc(a)?
            && m.pmd(a) == PmdVal::None;
        if !ok {
            ktrace!(m, "{a}: no THP here (pmd {:?}): fall back", m.pmd(a));
        }
        Ok(ok)
    })?;
    let thp = if eligible {
        alloc_pages_then(
            cpu,
            "vma_alloc_anon_folio_pmd",
            "vma_alloc_folio(GFP_TRANSHUGE)",
            |_| Ok(Some((HPAGE_PMD_ORDER, pfn_hint))),
            |m, folio, _| {
                let Some(table) = m.pagetable_alloc(Level::Pte)? else {
                    return Ok(Err(folio));
                };
                let mapping = new_anon_mapping(m, base);
                let p = m.page_mut(folio)?;
                p.flags |= pg::SWAPBACKED;
                p.mapping = mapping;
                Ok(Ok((folio, table)))
            },
        )?
        .flatten()
    } else {
        None
    };
    let thp = match thp {
        Some(Err(folio)) => {
            // No PTE table to deposit: __do_huge_pmd_anonymous_page's
            // `release:` puts the folio, which frees it.
            folio_put(cpu, folio)?;
            None
        }
        Some(Ok(got)) => Some(got),
        None => None,
    };
    let Some((folio, table)) = thp else {
        handle_mm_fault_kind(cpu, a, pfn_hint, 0, FaultKind::Write)?;
        return mmap_read_unlock(cpu, a.mm);
    };
    let mapped = cpu.step("__do_huge_pmd_anonymous_page", |m| {
        if m.pmd(a) != PmdVal::None {
            ktrace!(m, "{a}: PMD populated meanwhile");
            m.pagetable_free(table)?;
            return Ok(false);
        }
        // folio_add_new_anon_rmap(RMAP_EXCLUSIVE), folio_add_lru_vma.
        let p = m.page_mut(folio)?;
        p.flags |= pg::ANON_EXCLUSIVE | pg::LRU;
        m.page_mut(folio + 1)?.entire_mapcount = 0;
        m.set_pmd(
            a,
            PmdVal::Leaf(PmdLeaf {
                pfn: folio,
                write: true,
            }),
        );
        m.mms[a.mm as usize].deposit(base.page, table);
        ktrace!(m, "{a}: PMD maps THP pfn {folio}");
        Ok(true)
    })?;
    if !mapped {
        folio_put(cpu, folio)?;
    }
    mmap_read_unlock(cpu, a.mm)
}

/// `__split_huge_pmd_locked` of the anonymous THP mapped by the PMD leaf
/// at `a`, with the PMD lock held (the caller's step): `pmdp_invalidate`
/// (flushing the range), withdraw the deposited table, fill it with one
/// PTE per subpage with the PMD's permissions, and move the entire mapping
/// to the subpages (`folio_add_anon_rmap_ptes`, `folio_remove_rmap_pmd`,
/// `folio_ref_add(folio, HPAGE_PMD_NR - 1)`); PageAnonExclusive of the
/// head passes to every subpage. Returns whether it split.
pub fn __split_huge_pmd_locked(m: &mut Machine, a: Uaddr) -> Result<bool, Violation> {
    let PmdVal::Leaf(leaf) = m.pmd(a) else {
        return Ok(false);
    };
    let base = a.with_page(a.pmd_base());
    let head = leaf.pfn;
    if !matches!(m.page(head)?.mapping, Mapping::Anon { .. }) {
        // A hugetlb PMD is never split.
        return Ok(false);
    }
    let table = match m.mms[a.mm as usize].withdraw(base.page) {
        Some(t) => t,
        None => match m.pagetable_alloc(Level::Pte)? {
            Some(t) => t,
            None => return Ok(false),
        },
    };
    let exclusive = m.page(head)?.test(pg::ANON_EXCLUSIVE);
    m.cover_page("__split_huge_pmd_locked", head, leaf.write as u64);
    m.set_pmd(a, PmdVal::None);
    m.flush_tlb_range(a.mm, base.page..base.page + PMD_PAGES);
    for i in 0..PMD_PAGES {
        let x = base.with_page(base.page + i);
        let e = PteEntry {
            pfn: head + i,
            write: leaf.write,
            dirty: leaf.write,
            cow: !leaf.write,
        };
        m.set_pte_in(table, x, PteVal::Present(e));
        let p = m.page_mut(head + i)?;
        p.mapcount += 1;
        if exclusive {
            p.flags |= pg::ANON_EXCLUSIVE;
        }
    }
    m.page_mut(head + 1)?.entire_mapcount -= 1;
    super::page_ref::folio_ref_add(m, head, PMD_PAGES as i32 - 1)?;
    m.set_pmd(a, PmdVal::Table(table));
    m.ledger.thp_pte_mapped = true;
    ktrace!(
        m,
        "{a}: PMD of THP pfn {head} split into PTEs (table {table})"
    );
    Ok(true)
}

/// `split_huge_pmd(vma, pmd, address)` as a caller holding `mmap_lock`
/// does it: one PMD-lock section.
pub fn split_huge_pmd(cpu: &Cpu, a: Uaddr) -> KResult<()> {
    cpu.step("__split_huge_pmd", |m| {
        __split_huge_pmd_locked(m, a)?;
        Ok(())
    })
}

/// The `split_huge_pmd` op: the split a partial mprotect, munmap or
/// madvise of a PMD range makes, under `mmap_lock`.
pub fn split_huge_pmd_op(cpu: &Cpu, a: Uaddr) -> KResult<()> {
    mmap_read_lock(cpu, a.mm)?;
    split_huge_pmd(cpu, a)?;
    mmap_read_unlock(cpu, a.mm)
}

/// What a PMD write fault did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugeWp {
    /// Reused (made writable, or for an unshare marked exclusive).
    Done,
    /// The PMD changed meanwhile.
    Retry,
    /// Split the PMD: fault again at the PTE level (`VM_FAULT_FALLBACK`).
    Fallback,
}

/// `do_huge_pmd_wp_page`: a write (or unshare) fault on a read-only PMD
/// mapping of an anonymous THP. Reuse per the running design: v5.19 reuses
/// an exclusive head, or a THP whose refcount is 1 (moving it to the
/// faulting process's anon_vma); v4.5 only at `page_mapcount == 1 &&
/// page_count == 1`; the 2016 fix at `page_trans_huge_mapcount == 1`.
/// Otherwise split and fall back to the PTE level (since 3917c80280c9,
/// v5.8; the model's older designs do the same rather than copy the whole
/// THP as they did).
pub fn do_huge_pmd_wp_page(cpu: &Cpu, a: Uaddr, orig: PmdLeaf, unshare: bool) -> KResult<HugeWp> {
    let reused = cpu.step("do_huge_pmd_wp_page", |m| {
        if m.pmd(a) != PmdVal::Leaf(orig) {
            ktrace!(m, "{a}: PMD changed meanwhile: retry");
            return Ok(None);
        }
        let head = orig.pfn;
        let p = m.page(head)?;
        let exclusive = p.test(pg::ANON_EXCLUSIVE);
        let reuse = match m.cfg.cow() {
            CowDesign::V5_19 => exclusive || (p.refcount == 1 && !p.test(pg::LOCKED)),
            CowDesign::V4_5 => {
                let page_mapcount = p.mapcount + 1 + m.page(head + 1)?.entire_mapcount + 1;
                page_mapcount == 1 && p.refcount == 1
            }
            CowDesign::Fix2016 => page_trans_huge_mapcount(m, head)? == 1,
        };
        m.cover_page(
            "do_huge_pmd_wp_page",
            head,
            reuse as u64 | (unshare as u64) << 1,
        );
        ktrace!(
            m,
            "{a}: THP pfn {head} (refcount {}, exclusive {exclusive}): {}",
            p.refcount,
            if reuse {
                "reuse"
            } else {
                "split and fall back"
            }
        );
        if !reuse {
            return Ok(Some(false));
        }
        if !exclusive && m.cfg.cow() == CowDesign::V5_19 {
            // folio_move_anon_rmap.
            let own = m.mms[a.mm as usize].anon_vma;
            if let Mapping::Anon { anon_vma, .. } = &mut m.page_mut(head)?.mapping {
                *anon_vma = own;
            }
        }
        m.page_mut(head)?.flags |= pg::ANON_EXCLUSIVE;
        m.ledger.touch(head);
        if unshare {
            m.ledger.unshared = true;
        } else {
            m.set_pmd(
                a,
                PmdVal::Leaf(PmdLeaf {
                    write: true,
                    ..orig
                }),
            );
        }
        Ok(Some(true))
    })?;
    match reused {
        None => Ok(HugeWp::Retry),
        Some(true) => Ok(HugeWp::Done),
        Some(false) => {
            split_huge_pmd(cpu, a)?;
            Ok(HugeWp::Fallback)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Variant;
    use crate::model::fork::dup_mmap;
    use crate::model::memory::user_access;
    use crate::model::mmap::vm_munmap as munmap;
    use crate::model::oracle::Oracle;
    use crate::model::testing::Kernel;

    /// The default layout's anonymous VMA, pages 2-3: one PMD range.
    ///
    /// ```text
    /// page   0     1     2     3
    ///        | file shared | anon: THP |
    /// ```
    const THP: u8 = 2;

    fn thp_at_600(k: &mut Kernel) -> Uaddr {
        let a = Uaddr::new(0, THP);
        k.on(0, |cpu| do_huge_pmd_anonymous_page(cpu, a, 600))
            .unwrap();
        a
    }

    #[test]
    fn a_thp_fault_maps_a_writable_pmd_and_deposits_a_table() {
        let mut k = Kernel::boot();
        let a = thp_at_600(&mut k);

        let PmdVal::Leaf(l) = k.m.pmd(a) else {
            panic!("a PMD leaf, got {:?}", k.m.pmd(a));
        };
        assert!(l.write);
        assert_eq!(k.m.peek(l.pfn + 1).entire_mapcount, 0, "one PMD mapping");
        assert_eq!(k.m.peek(l.pfn).refcount, 1);
        assert!(k.m.peek(l.pfn).test(pg::ANON_EXCLUSIVE));
        assert_eq!(k.m.mms[0].deposited.len(), 1);
        k.quiesce().unwrap();
    }

    #[test]
    fn split_moves_the_entire_mapcount_to_the_subpages() {
        let mut k = Kernel::boot();
        let a = thp_at_600(&mut k);
        let PmdVal::Leaf(l) = k.m.pmd(a) else {
            unreachable!()
        };

        k.on(0, |cpu| split_huge_pmd_op(cpu, a)).unwrap();

        assert!(matches!(k.m.pmd(a), PmdVal::Table(_)));
        assert_eq!(k.m.peek(l.pfn + 1).entire_mapcount, -1);
        for i in 0..PMD_PAGES {
            let p = k.m.peek(l.pfn + i);
            assert_eq!(p.mapcount, 0, "subpage {i} mapped once");
            assert!(p.test(pg::ANON_EXCLUSIVE), "subpage {i} exclusive");
        }
        assert_eq!(k.m.peek(l.pfn).refcount, PMD_PAGES as i32);
        assert!(k.m.mms[0].deposited.is_empty());
        k.quiesce().unwrap();
    }

    /// Seed 002, Kirill: "after split_huge_pmd() we have pte-mapped THP,
    /// fork() comes and now the pages is shared between two processes.
    /// Child process munmap()s one half of the THP page, parent munmap()s
    /// the other half. [...] Fault in the child would trigger do_wp_page()
    /// and reuse_swap_page() returns true, which would lead to
    /// page_move_anon_rmap() tranferring the whole compound page to
    /// child's anon_vma."
    fn kirill(k: &mut Kernel) -> Result<(), crate::model::Violation> {
        let a = thp_at_600(k);
        k.on(0, |cpu| split_huge_pmd_op(cpu, a))?;
        k.on(0, |cpu| dup_mmap(cpu, 0, 1))?;
        k.on(0, |cpu| munmap(cpu, Uaddr::new(1, THP + 1), 1))?;
        k.on(0, |cpu| munmap(cpu, Uaddr::new(0, THP), 1))?;
        k.on(1, |cpu| user_access(cpu, Uaddr::new(1, THP), true))
    }

    #[test]
    fn kirills_counterexample_moves_the_parents_half_out_of_its_rmap() {
        for mut k in [
            Kernel::builder()
                .variant(Variant::ThpReuseSubpageMapcount)
                .boot(),
            Kernel::builder()
                .config(|c| c.cow = CowDesign::Fix2016)
                .boot(),
        ] {
            let err = kirill(&mut k).unwrap_err();

            assert_eq!(err.oracle, Oracle::AnonRmap, "{}", err.detail);
            assert!(err.detail.contains("mm0:3"), "{}", err.detail);
        }
    }

    #[test]
    fn kirills_counterexample_is_harmless_under_v4_5() {
        let mut k = Kernel::builder().config(|c| c.cow = CowDesign::V4_5).boot();
        kirill(&mut k).unwrap();
        k.quiesce().unwrap();
    }

    #[test]
    fn v5_19_copies_the_childs_half_instead() {
        let mut k = Kernel::boot();

        kirill(&mut k).unwrap();

        let child = Uaddr::new(1, THP);
        let Some(PteVal::Present(e)) = k.m.pte(child) else {
            panic!("the child maps a page");
        };
        assert!(e.write);
        assert_eq!(
            k.m.peek(e.pfn).compound_info,
            crate::model::mm_types::CompoundInfo::None
        );
        k.quiesce().unwrap();
    }
}
