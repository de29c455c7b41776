//! Unmapping (mm/mmap.c, mm/vma.c): `vm_munmap` of part of an anonymous
//! VMA and `exit_mmap` of a whole process.
//!
//! The model's VMAs are the configuration's, per process and page
//! ([`VmPage`](super::pgtable::VmPage)): munmap leaves holes; a fork into
//! a slot ends the process there and execs a new one with the
//! configuration's layout. `vm_munmap` and the other anonymous VMA
//! operations act on anonymous VMAs only (hugetlb VMAs have their own, in
//! `vma.rs`); elsewhere they do nothing.

use super::KResult;
use super::config::{MAX_USER_PAGES, PMD_PAGES, PTRS_PER_PMD, PUD_PAGES, PUDS};
use super::ctx::Cpu;
use super::hugetlb::tlb_finish_mmu;
use super::machine::{Machine, Pfn};
pub use super::memory::mmap_write_unlock;
use super::memory::{mmap_write_lock_then, zap_huge_pmd, zap_one_pte};
use super::oracle::Violation;
use super::page_ref::folio_put_refs;
use super::pgtable::{PmdVal, PudVal, Uaddr, VmArea};
use super::vma::{free_hugetlb_pgtables, unmap_hugetlb_vma_final};
use crate::ktrace;

/// `mmap_write_lock(mm)`.
pub fn mmap_write_lock(cpu: &Cpu, mm: u8) -> KResult<()> {
    mmap_write_lock_then(cpu, mm, |_| Ok(()))
}

/// The anonymous pages of `[a, a + len)` that a VMA of `a.mm` covers.
pub fn anon_pages(m: &Machine, a: Uaddr, len: u32) -> Vec<Uaddr> {
    (a.page..(a.page + len).min(MAX_USER_PAGES))
        .map(|p| a.with_page(p))
        .filter(|&x| m.anon_vma_covers(x))
        .collect()
}

/// `pages` (in address order) split by PMD range, as the page-table walk
/// (`walk_pmd_range`) visits them: one PMD's pages a step.
pub fn by_pmd_range(pages: &[Uaddr]) -> Vec<Vec<Uaddr>> {
    let mut ranges: Vec<Vec<Uaddr>> = Vec::new();
    for &x in pages {
        match ranges.last_mut() {
            Some(r) if r[0].pmd_base() == x.pmd_base() => r.push(x),
            _ => ranges.push(vec![x]),
        }
    }
    ranges
}

/// Does `pages` leave part of the PMD range of `x` out?
pub fn partial_pmd(pages: &[Uaddr], x: Uaddr) -> bool {
    (x.pmd_base()..x.pmd_base() + PMD_PAGES).any(|p| !pages.iter().any(|y| y.page == p))
}

/// `zap_page_range_single` of the anonymous pages `pages` of one process,
/// one PMD range a step (`zap_pmd_range`): a PMD leaf the range covers is
/// zapped whole, one it covers in part is split first, then PTEs are
/// cleared; `then` runs on each page in the same step (the VMA change or
/// the ledger's). Puts the mappings' references after the flush.
pub fn zap_pages(cpu: &Cpu, pages: &[Uaddr], then: impl Fn(&mut Machine, Uaddr)) -> KResult<()> {
    let mut put: Vec<Pfn> = Vec::new();
    for here in by_pmd_range(pages) {
        let folios = cpu.step_when(
            "zap_pmd_range",
            |m| m.pte_locks_free(&here),
            |m| {
                let mut folios = Vec::new();
                let x = here[0];
                if matches!(m.pmd(x), PmdVal::Leaf(_)) {
                    if partial_pmd(&here, x) {
                        super::huge_memory::__split_huge_pmd_locked(m, x)?;
                    } else {
                        folios.extend(zap_huge_pmd(m, x)?);
                    }
                }
                for &y in &here {
                    if matches!(m.pmd(y), PmdVal::Table(_)) {
                        folios.extend(zap_one_pte(m, y)?);
                    }
                    then(m, y);
                }
                Ok(folios)
            },
        )?;
        put.extend(folios);
    }
    for folio in put {
        folio_put_refs(cpu, folio, 1)?;
    }
    Ok(())
}

/// `vm_munmap` (`munmap(2)`) of `[a, a + len)` of anonymous memory: zap
/// the pages and remove the VMA there (`do_vmi_munmap`). Empty page tables
/// stay until exit (`free_pgtables` of the gap is not modelled).
pub fn vm_munmap(cpu: &Cpu, a: Uaddr, len: u32) -> KResult<()> {
    mmap_write_lock(cpu, a.mm)?;
    let pages = cpu.step("vma_lookup", |m| Ok(anon_pages(m, a, len)))?;
    zap_pages(cpu, &pages, |m, x| {
        m.ledger.dropped(x);
        m.mms[x.mm as usize].vm[x.page as usize].mapped = false;
        ktrace!(m, "{x}: unmapped");
    })?;
    mmap_write_unlock(cpu, a.mm)
}

/// `exit_mmap` of the process in slot `mm`, whose mmap_lock this CPU holds
/// for write: `unmap_vmas` (the hugetlb VMAs, unsharing their shared PMD
/// tables and freeing their VMA locks; every other mapping, PMD range by
/// PMD range), then `free_pgtables` (through `tlb_remove_table`: GUP-fast
/// may still walk them) and `tlb_finish_mmu`. The process's GUP holders
/// keep what they hold, detached.
/// `plan` is what to unmap, as the step that took the lock found it.
pub fn exit_mmap_locked(cpu: &Cpu, mm: u8, plan: ExitPlan) -> KResult<()> {
    let ExitPlan { vmas, ranges } = plan;
    let mut put: Vec<Pfn> = Vec::new();
    for &vma in &vmas {
        put.extend(unmap_hugetlb_vma_final(cpu, mm, vma)?);
    }
    let mut folios_put: Vec<Pfn> = Vec::new();
    for base in ranges {
        let first = Uaddr { mm, page: base };
        let folios = cpu.step_when(
            "unmap_page_range",
            |m| m.pte_lock_free(first),
            |m| {
                let a = Uaddr { mm, page: base };
                let mut folios = Vec::new();
                match m.pmd(a) {
                    PmdVal::Leaf(_) => folios.extend(zap_huge_pmd(m, a)?),
                    PmdVal::Table(_) => {
                        for i in 0..PMD_PAGES {
                            folios.extend(zap_one_pte(m, a.with_page(base + i))?);
                        }
                    }
                    PmdVal::None => {}
                }
                for i in 0..PMD_PAGES {
                    m.ledger.dropped(a.with_page(base + i));
                }
                Ok(folios)
            },
        )?;
        folios_put.extend(folios);
    }
    for vma in vmas {
        free_hugetlb_pgtables(cpu, mm, vma)?;
    }
    cpu.step_when(
        "free_pgtables",
        |m| m.mm_pte_locks_free(mm),
        |m| {
            free_pgtables(m, mm)?;
            // An exited process has no VMAs any more (fork's child gets new
            // ones next).
            if m.mms[mm as usize].exited {
                for v in m.mms[mm as usize].vm.iter_mut() {
                    v.mapped = false;
                }
            }
            Ok(())
        },
    )?;
    tlb_finish_mmu(cpu, put)?;
    for folio in folios_put {
        folio_put_refs(cpu, folio, 1)?;
    }
    Ok(())
}

/// What `exit_mmap` unmaps: the hugetlb VMAs, and the first page of every
/// other PMD range of the process that maps something. Nothing maps more
/// while the exiting CPU holds `mmap_lock` for write.
pub struct ExitPlan {
    vmas: Vec<VmArea>,
    ranges: Vec<u32>,
}

impl ExitPlan {
    pub fn of(m: &Machine, mm: u8) -> ExitPlan {
        let vmas = m.mms[mm as usize].hugetlb_vmas.clone();
        let mut ranges = Vec::new();
        for pud in 0..PUDS {
            for i in 0..PTRS_PER_PMD {
                let base = pud * PUD_PAGES + i * PMD_PAGES;
                if !vmas.iter().any(|v| v.contains(base))
                    && m.pmd(Uaddr { mm, page: base }) != PmdVal::None
                {
                    ranges.push(base);
                }
            }
        }
        ExitPlan { vmas, ranges }
    }
}

fn free_pgtables(m: &mut Machine, mm: u8) -> Result<(), Violation> {
    for pud in 0..PUDS {
        let a = Uaddr {
            mm,
            page: pud * PUD_PAGES,
        };
        let Some(t) = m.pmd_table(a) else { continue };
        for i in 0..PTRS_PER_PMD {
            let x = a.with_page(a.page + i * PMD_PAGES);
            if let PmdVal::Table(pt) = m.pmd(x) {
                m.set_pmd(x, PmdVal::None);
                m.tlb_remove_table(pt);
            }
        }
        m.mms[mm as usize].pud[pud as usize] = PudVal::None;
        m.tlb_remove_table(t);
    }
    while let Some(&(base, _)) = m.mms[mm as usize].deposited.first() {
        let t = m.mms[mm as usize]
            .withdraw(base)
            .expect("the deposit just seen");
        m.tlb_remove_table(t);
    }
    m.flush_tlb_mm(mm);
    for page in 0..MAX_USER_PAGES {
        m.ledger.dropped(Uaddr { mm, page });
    }
    ktrace!(m, "mm{mm}: page tables freed");
    Ok(())
}

/// `exit_mmap` of process `mm`, the last user gone: the process has no
/// VMAs any more. The kernel unmaps under `mmap_lock` for read and frees
/// the page tables under it for write; with no task left in the process
/// nothing of its own can run in between, so the model holds it for write
/// throughout, and first waits for the process's GUP-fast walks, the one
/// path of its tasks that takes no lock (exit_mmap runs only once
/// `mm_users` is 0).
pub fn exit_mmap(cpu: &Cpu, mm: u8) -> KResult<()> {
    let me = cpu.index() as u8;
    let plan = cpu.step_when(
        "exit_mmap",
        |m| {
            m.mms[mm as usize].mmap_lock.can_write()
                && m.cpus.iter().all(|c| c.gup_fast_mm != Some(mm))
        },
        |m| {
            super::oracle::might_sleep(m, "mmap_write_lock")?;
            let x = &mut m.mms[mm as usize];
            x.mmap_lock.writer = Some(me);
            if x.exited {
                return Ok(None);
            }
            x.exited = true;
            ktrace!(m, "mm{mm} exits");
            Ok(Some(ExitPlan::of(m, mm)))
        },
    )?;
    if let Some(plan) = plan {
        exit_mmap_locked(cpu, mm, plan)?;
    }
    mmap_write_unlock(cpu, mm)
}

/// A new process in slot `mm` (`mm_init`): the configuration's VMAs, a new
/// anon_vma, a new identity for the oracles.
pub fn exec_new_process(m: &mut Machine, mm: u8) {
    let cfg = m.cfg;
    m.mms[mm as usize].reset_vmas(&cfg);
    if let Some(id) = m.anon_vma_alloc(None) {
        m.mms[mm as usize].anon_vma = id;
        m.mms[mm as usize].avc = 1 << id;
    }
    m.ledger.new_process(mm, None);
}
