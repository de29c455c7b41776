//! fork's copy of an address space (kernel/fork.c `dup_mmap`, mm/memory.c
//! `copy_page_range`, mm/huge_memory.c `copy_huge_pmd`).
//!
//! Processes are the configuration's slots. A fork of the process in slot
//! `mm` into slot `child` first ends the process in `child` (it exits:
//! `exit_mmap`), then builds the child there; forking into its own slot
//! does nothing. Fork holds both mmap_locks for write throughout, and no
//! thread of the child runs until it is done (`Mm::in_fork`). Only
//! anonymous private VMAs are copied (`vma_needs_copy`: shared file and
//! hugetlb mappings fault in again), page by page, leaving out
//! `MADV_DONTFORK` ranges.
//!
//! An anonymous page is shared copy-on-write (`folio_try_dup_anon_rmap`
//! clears PageAnonExclusive; both sides are write-protected) unless it is
//! exclusive and may be DMA-pinned: then the child gets a copy and the
//! parent keeps the pinned page writable (70e806e4e645), and a pinned THP
//! mapped by a PMD is split to be copied page by page. The maybe-pinned
//! check and the write-protection are separate stores under the page-table
//! lock, which GUP-fast does not take: `write_protect_seq` is what keeps a
//! concurrent GUP-fast pin out of that window (57efa1fe5957).

use super::KResult;
use super::config::{MAX_USER_PAGES, PMD_PAGES, VmaKind};
use super::ctx::Cpu;
use super::ledger::Forking;
use super::machine::{Machine, Pfn};
use super::memory::new_anon_mapping;
use super::mm_types::pg;
use super::mmap::{ExitPlan, exit_mmap_locked};
use super::oracle::Violation;
use super::page_flags::compound_head;
use super::page_ref::{folio_get, folio_ref_add};
use super::pgtable::{Level, PmdLeaf, PmdVal, PteEntry, PteVal, Uaddr};
use super::rmap::folio_maybe_dma_pinned;
use super::variant::Variant;
use crate::ktrace;

/// `fork(2)` of the process in slot `mm` into slot `child`.
pub fn dup_mmap(cpu: &Cpu, mm: u8, child: u8) -> KResult<()> {
    if mm == child {
        return Ok(());
    }
    let me = cpu.index() as u8;
    let plan = cpu.step_when(
        "dup_mmap",
        |m| {
            m.mms[mm as usize].mmap_lock.can_write()
                && m.mms[child as usize].mmap_lock.can_write()
                && m.cpus.iter().all(|c| c.gup_fast_mm != Some(child))
        },
        |m| {
            super::oracle::might_sleep(m, "mmap_write_lock_killable")?;
            m.mms[mm as usize].mmap_lock.writer = Some(me);
            m.mms[child as usize].mmap_lock.writer = Some(me);
            m.mms[child as usize].in_fork = true;
            ktrace!(m, "fork of mm{mm} into slot {child}: mm{child} exits first");
            Ok(ExitPlan::of(m, child))
        },
    )?;
    exit_mmap_locked(cpu, child, plan)?;
    let linked = cpu.step("anon_vma_fork", |m| anon_vma_fork(m, mm, child))?;
    let copied = linked && copy_page_range(cpu, mm, child)?;
    cpu.step("dup_mmap", |m| {
        m.flush_tlb_mm(mm);
        m.mms[mm as usize].mmap_lock.writer = None;
        if copied {
            m.ledger.fork_done(mm, child);
            m.mms[child as usize].in_fork = false;
            ktrace!(m, "fork of mm{mm} into mm{child} done");
        } else {
            m.ledger.forking.retain(|f| f.child != child);
            ktrace!(m, "fork of mm{mm} failed: -ENOMEM");
        }
        Ok(())
    })?;
    if !copied {
        // copy_process's error path: mmput() of the half-built child.
        let plan = cpu.step("mmput", |m| Ok(ExitPlan::of(m, child)))?;
        exit_mmap_locked(cpu, child, plan)?;
        cpu.step("mmput", |m| {
            super::mmap::exec_new_process(m, child);
            m.mms[child as usize].in_fork = false;
            Ok(())
        })?;
    }
    super::mmap::mmap_write_unlock(cpu, child)
}

/// `anon_vma_fork` and the VMA copy: the child's own anon_vma under the
/// parent's root, linked to every anon_vma the parent is; its VMAs are the
/// parent's, less the `MADV_DONTFORK` ones. False on -ENOMEM.
fn anon_vma_fork(m: &mut Machine, mm: u8, child: u8) -> Result<bool, Violation> {
    let parent = &m.mms[mm as usize];
    let (avc, vm) = (parent.avc, parent.vm);
    let hugetlb: Vec<_> = parent
        .hugetlb_vmas
        .iter()
        .filter(|v| v.lock.is_some())
        .map(|v| (v.start, v.end, v.pgoff))
        .collect();
    let root = m.anon_vmas[parent.anon_vma as usize].root;
    let Some(id) = m.anon_vma_alloc(Some(root)) else {
        return Ok(false);
    };
    let c = &mut m.mms[child as usize];
    c.anon_vma = id;
    c.avc = avc | 1 << id;
    c.vm = vm;
    c.exited = false;
    // The child's hugetlb VMAs, each with a new VMA lock
    // (`hugetlb_vm_op_open`); their pages fault in again.
    c.hugetlb_vmas.clear();
    for (start, end, pgoff) in hugetlb {
        c.new_vma(start, end, pgoff);
    }
    for v in c.vm.iter_mut().filter(|v| v.dontcopy) {
        v.mapped = false;
        v.dontcopy = false;
    }
    m.ledger.new_process(child, Some(mm));
    m.ledger.forking.push(Forking {
        parent: mm,
        child,
        shared: 0,
    });
    Ok(true)
}

/// `copy_page_range` of every anonymous private VMA, inside
/// `raw_write_seqcount_begin/end(&src_mm->write_protect_seq)`. False on
/// -ENOMEM.
fn copy_page_range(cpu: &Cpu, mm: u8, child: u8) -> KResult<bool> {
    cpu.step("copy_page_range", |m| {
        m.mms[mm as usize].write_protect_seq += 1;
        Ok(())
    })?;
    let mut ok = true;
    let cfg = *cpu.cfg();
    let mut bases: Vec<u32> = (0..MAX_USER_PAGES)
        .filter(|&p| {
            cfg.vmas
                .find(p)
                .is_some_and(|v| v.kind == VmaKind::AnonPrivate)
        })
        .map(|p| p & !(PMD_PAGES - 1))
        .collect();
    bases.dedup();
    for base in bases {
        if !copy_pmd_range(cpu, mm, child, base)? {
            ok = false;
            break;
        }
    }
    cpu.step("copy_page_range", |m| {
        m.mms[mm as usize].write_protect_seq += 1;
        Ok(())
    })?;
    Ok(ok)
}

/// The pages of the PMD range at `base` that fork copies.
fn copied_pages(m: &Machine, mm: u8, base: u32) -> Vec<u32> {
    (base..base + PMD_PAGES)
        .filter(|&p| {
            let a = Uaddr { mm, page: p };
            m.anon_vma_covers(a) && !m.vm_page(a).dontcopy
        })
        .collect()
}

/// What the first look at a PMD range decided.
enum Pmd {
    Nothing,
    /// Share the THP: its head is no longer exclusive.
    ShareHuge(PmdLeaf, Pfn),
    /// Copy PTE by PTE (the PMD maps a table, or a pinned THP was split).
    Ptes(Vec<u32>),
    Enomem,
}

/// `copy_pmd_range` for one PMD range. False on -ENOMEM.
fn copy_pmd_range(cpu: &Cpu, mm: u8, child: u8, base: u32) -> KResult<bool> {
    let (pa, ca) = (
        Uaddr { mm, page: base },
        Uaddr {
            mm: child,
            page: base,
        },
    );
    let variant = cpu.cfg().has(Variant::ForkSharesPinnedPage);
    let plan = cpu.step("copy_pmd_range", |m| {
        let pages = copied_pages(m, mm, base);
        if pages.is_empty() {
            return Ok(Pmd::Nothing);
        }
        match m.pmd(pa) {
            PmdVal::None => Ok(Pmd::Nothing),
            PmdVal::Leaf(l) if pages.len() == PMD_PAGES as usize => {
                // copy_huge_pmd: the child's PMD table and deposit first.
                if !m.pmd_alloc(ca)? {
                    return Ok(Pmd::Enomem);
                }
                let Some(table) = m.pagetable_alloc(Level::Pte)? else {
                    return Ok(Pmd::Enomem);
                };
                let head = l.pfn;
                m.cover_page("copy_huge_pmd", head, 0);
                if m.page(head)?.test(pg::ANON_EXCLUSIVE)
                    && folio_maybe_dma_pinned(m, head)?
                    && !variant
                {
                    // Maybe pinned: split and copy it PTE by PTE.
                    m.pagetable_free(table)?;
                    super::huge_memory::__split_huge_pmd_locked(m, pa)?;
                    ktrace!(m, "{pa}: THP pfn {head} may be pinned: split to copy");
                    return Ok(Pmd::Ptes(pages));
                }
                m.page_mut(head)?.flags &= !pg::ANON_EXCLUSIVE;
                m.ledger.touch(head);
                Ok(Pmd::ShareHuge(l, table))
            }
            PmdVal::Leaf(_) => {
                // Part of the range is MADV_DONTFORK (madvise split it
                // already, unless the THP came back since).
                super::huge_memory::__split_huge_pmd_locked(m, pa)?;
                Ok(Pmd::Ptes(pages))
            }
            PmdVal::Table(_) => Ok(Pmd::Ptes(pages)),
        }
    })?;
    match plan {
        Pmd::Nothing => Ok(true),
        Pmd::Enomem => Ok(false),
        Pmd::ShareHuge(l, table) => {
            cpu.step("copy_huge_pmd", |m| {
                // pmdp_set_wrprotect(src), then set_pmd_at(dst).
                let ro = PmdLeaf { write: false, ..l };
                m.set_pmd(pa, PmdVal::Leaf(ro));
                m.set_pmd(ca, PmdVal::Leaf(ro));
                m.mms[child as usize].deposit(base, table);
                m.page_mut(l.pfn + 1)?.entire_mapcount += 1;
                folio_get(m, l.pfn)?;
                for i in 0..PMD_PAGES {
                    m.ledger.fork_copied(mm, child, base + i, true);
                }
                m.ledger.fork_shared_anon = true;
                ktrace!(m, "{pa}: THP pfn {} shared with mm{child}", l.pfn);
                Ok(())
            })?;
            Ok(true)
        }
        Pmd::Ptes(pages) => {
            for page in pages {
                if !copy_pte(cpu, mm, child, page, variant)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}

/// What `copy_present_pte` decided for a present PTE.
enum Pte {
    Done,
    Share(PteEntry, Pfn),
    Enomem,
}

/// One PTE of `copy_pte_range`. False on -ENOMEM.
fn copy_pte(cpu: &Cpu, mm: u8, child: u8, page: u32, variant: bool) -> KResult<bool> {
    let (pa, ca) = (Uaddr { mm, page }, Uaddr { mm: child, page });
    let r = cpu.step_when(
        "copy_present_pte",
        |m| m.pte_locks_free(&[pa, ca]),
        |m| {
            let pte = match m.pte(pa) {
                Some(pte) => pte,
                None => PteVal::None,
            };
            if pte != PteVal::None && !m.pte_alloc(ca)? {
                return Ok(Pte::Enomem);
            }
            match pte {
                PteVal::None => {
                    m.ledger.fork_copied(mm, child, page, false);
                    Ok(Pte::Done)
                }
                PteVal::Migration { pfn, .. } => {
                    // copy_nonpresent_pte: COW makes both readable and shared.
                    let e = PteVal::Migration {
                        pfn,
                        exclusive: false,
                        write: false,
                    };
                    m.set_pte(pa, e);
                    m.set_pte(ca, e);
                    m.ledger.fork_copied(mm, child, page, true);
                    Ok(Pte::Done)
                }
                PteVal::Present(e) => {
                    m.cover_page("copy_present_pte", e.pfn, 0);
                    let folio = compound_head(m, e.pfn)?;
                    if m.page(e.pfn)?.test(pg::ANON_EXCLUSIVE)
                        && folio_maybe_dma_pinned(m, folio)?
                        && !variant
                    {
                        return copy_present_page(m, pa, ca, e);
                    }
                    // folio_try_dup_anon_rmap_pte.
                    m.page_mut(e.pfn)?.flags &= !pg::ANON_EXCLUSIVE;
                    m.ledger.touch(folio);
                    Ok(Pte::Share(e, folio))
                }
            }
        },
    )?;
    match r {
        Pte::Done => Ok(true),
        Pte::Enomem => Ok(false),
        Pte::Share(e, folio) => {
            cpu.step_when(
                "copy_present_pte",
                |m| m.pte_locks_free(&[pa, ca]),
                |m| {
                    // ptep_set_wrprotect(src), then set_pte_at(dst).
                    let ro = PteEntry {
                        write: false,
                        cow: true,
                        ..e
                    };
                    m.set_pte(pa, PteVal::Present(ro));
                    m.set_pte(ca, PteVal::Present(ro));
                    m.page_mut(e.pfn)?.mapcount += 1;
                    folio_ref_add(m, folio, 1)?;
                    m.ledger.fork_copied(mm, child, page, true);
                    m.ledger.fork_shared_anon = true;
                    ktrace!(m, "{pa}: pfn {} shared with mm{child}", e.pfn);
                    Ok(())
                },
            )?;
            Ok(true)
        }
    }
}

/// `copy_present_page`: the child gets a copy of an exclusive page that
/// may be pinned; the parent keeps the page, writable.
fn copy_present_page(m: &mut Machine, pa: Uaddr, ca: Uaddr, e: PteEntry) -> Result<Pte, Violation> {
    let Some(new) = m.alloc_pages_may_sleep(0, 0, "folio_prealloc(GFP_HIGHUSER_MOVABLE)")? else {
        return Ok(Pte::Enomem);
    };
    let data = m.frames[e.pfn as usize].content.clone();
    m.frames[new as usize].content = data;
    let mapping = new_anon_mapping(m, ca);
    let p = m.page_mut(new)?;
    p.mapping = mapping;
    p.mapcount = 0;
    p.flags |= pg::SWAPBACKED | pg::ANON_EXCLUSIVE | pg::LRU;
    m.set_pte(ca, PteVal::Present(PteEntry::new(new, true)));
    m.ledger.fork_copied(pa.mm, ca.mm, pa.page, false);
    ktrace!(
        m,
        "{pa}: pfn {} may be pinned: mm{} gets a copy, pfn {new}",
        e.pfn,
        ca.mm
    );
    Ok(Pte::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gup::{Foll, gup_fast_fallback};
    use crate::model::huge_memory::do_huge_pmd_anonymous_page;
    use crate::model::memory::user_access;
    use crate::model::oracle::Oracle;
    use crate::model::testing::Kernel;

    /// The default layout: the anonymous VMA at pages 2-3, one PMD range.
    ///
    /// ```text
    /// page   0     1     2     3
    ///        | file shared | anon  |
    /// ```
    const ANON: u8 = 2;

    fn present(k: &Kernel, mm: u8, page: u8) -> PteEntry {
        match k.m.pte(Uaddr::new(mm, page)) {
            Some(PteVal::Present(e)) => e,
            pte => panic!("mm{mm}:{page} maps {pte:?}"),
        }
    }

    #[test]
    fn fork_shares_an_anon_page_read_only_in_both_processes() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();

        k.on(0, |cpu| dup_mmap(cpu, 0, 1)).unwrap();

        let (p, c) = (present(&k, 0, ANON), present(&k, 1, ANON));
        assert_eq!(p.pfn, c.pfn);
        assert!(!p.write && !c.write, "both write-protected");
        let page = k.m.peek(p.pfn);
        assert!(!page.test(pg::ANON_EXCLUSIVE));
        assert_eq!((page.mapcount + 1, page.refcount), (2, 2));
        assert_eq!(k.m.mms[1].avc, k.m.mms[0].avc | 1 << k.m.mms[1].anon_vma);
        k.quiesce().unwrap();
    }

    #[test]
    fn fork_copies_a_maybe_pinned_page_for_the_child() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| gup_fast_fallback(cpu, a, Foll::Pin, true))
            .unwrap();

        k.on(0, |cpu| dup_mmap(cpu, 0, 1)).unwrap();

        let (p, c) = (present(&k, 0, ANON), present(&k, 1, ANON));
        assert_ne!(p.pfn, c.pfn, "the child has a copy");
        assert!(p.write && c.write, "neither is write-protected");
        assert!(k.m.peek(p.pfn).test(pg::ANON_EXCLUSIVE));
        assert!(k.m.peek(c.pfn).test(pg::ANON_EXCLUSIVE));
        k.quiesce().unwrap();
    }

    #[test]
    fn fork_splits_a_pinned_thp_and_copies_each_page() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| do_huge_pmd_anonymous_page(cpu, a, 600))
            .unwrap();
        k.on(0, |cpu| gup_fast_fallback(cpu, a, Foll::Pin, false))
            .unwrap();

        k.on(0, |cpu| dup_mmap(cpu, 0, 1)).unwrap();

        assert!(matches!(k.m.pmd(a), PmdVal::Table(_)), "split");
        for page in [ANON, ANON + 1] {
            assert_ne!(present(&k, 0, page).pfn, present(&k, 1, page).pfn);
        }
        k.quiesce().unwrap();
    }

    #[test]
    fn fork_into_a_slot_ends_the_process_there() {
        let mut k = Kernel::boot();
        k.on(0, |cpu| user_access(cpu, Uaddr::new(1, ANON), true))
            .unwrap();
        let old = present(&k, 1, ANON).pfn;

        k.on(0, |cpu| dup_mmap(cpu, 0, 1)).unwrap();

        assert_eq!(k.m.pte(Uaddr::new(1, ANON)), None, "no page tables left");
        assert_eq!(
            k.m.frames[old as usize].owner,
            crate::model::machine::Owner::Free
        );
        assert_ne!(k.m.ledger.pid_of(1), 1, "a new process");
        k.quiesce().unwrap();
    }

    #[test]
    fn fork_shares_pinned_page_gives_the_child_the_pinned_page() {
        let mut k = Kernel::builder()
            .variant(Variant::ForkSharesPinnedPage)
            .boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| gup_fast_fallback(cpu, a, Foll::Pin, true))
            .unwrap();

        let err = k.on(0, |cpu| dup_mmap(cpu, 0, 1)).unwrap_err();

        assert_eq!(err.oracle, Oracle::PinCoherence, "{}", err.detail);
    }
}
