//! `madvise(2)` (mm/madvise.c): `MADV_DONTNEED` and `MADV_DONTFORK` /
//! `MADV_DOFORK` of anonymous memory, and of hugetlb VMAs.

use super::KResult;
use super::config::PMD_PAGES;
use super::ctx::Cpu;
use super::hugetlb::{__unmap_hugepage_range, hugetlb_vma_lock_write, tlb_finish_mmu};
use super::hugetlbfs::i_mmap_lock_write;
use super::memory::{
    mmap_read_lock, mmap_read_lock_then, mmap_read_unlock, mmap_write_lock_then, mmap_write_unlock,
};
use super::mmap::{anon_pages, by_pmd_range, mmap_write_lock, partial_pmd, zap_pages};
use super::pgtable::{PmdVal, Uaddr};
use super::vma::split_range;
use crate::ktrace;

/// `madvise(MADV_DONTNEED)` of the huge page at `a` (`mmap_lock` for read):
/// `zap_page_range_single` between `hugetlb_zap_begin` (the VMA lock and
/// `i_mmap_rwsem` for write) and `hugetlb_zap_end`. A shared PMD table is
/// unshared, for its whole PUD range.
pub fn madvise_dontneed(cpu: &Cpu, a: Uaddr) -> KResult<()> {
    let start = a.pmd_base();
    let vma = mmap_read_lock_then(cpu, a.mm, |m| Ok(m.mms[a.mm as usize].hugetlb_vma(start)))?;
    if let Some(vma) = vma {
        hugetlb_vma_lock_write(cpu, a.mm, vma.id)?;
        i_mmap_lock_write(cpu)?;
        let put = __unmap_hugepage_range(cpu, a.mm, start..start + PMD_PAGES, None)?;
        tlb_finish_mmu(cpu, put)?;
        cpu.step("hugetlb_zap_end", |m| {
            super::hugetlb::hugetlb_vma_unlock_write_locked(m, a.mm, vma.id);
            m.hugetlbfs.i_mmap_rwsem.writer = None;
            Ok(())
        })?;
    }
    mmap_read_unlock(cpu, a.mm)
}

/// `madvise(MADV_DONTFORK)` of the huge page at `a` (`mmap_lock` for
/// write): a VMA flag change, so the VMA is split around the range
/// (`vma_modify_flags` → `split_vma`). Only the split matters here: the
/// pieces no longer cover a whole PUD range, so none of them can share.
pub fn madvise_dontfork(cpu: &Cpu, a: Uaddr) -> KResult<()> {
    let start = a.pmd_base();
    let vma = mmap_write_lock_then(cpu, a.mm, |m| Ok(m.mms[a.mm as usize].hugetlb_vma(start)))?;
    if let Some(vma) = vma {
        split_range(cpu, a.mm, vma, start, start + PMD_PAGES)?;
    }
    mmap_write_unlock(cpu, a.mm)
}

/// `MADV_DONTNEED` of `[a, a + len)` of anonymous memory
/// (`madvise_dontneed_free` → `madvise_dontneed_single_vma`, under
/// `mmap_lock` for read): zap the range; the next access faults in a zeroed
/// page.
pub fn madvise_dontneed_free(cpu: &Cpu, a: Uaddr, len: u32) -> KResult<()> {
    mmap_read_lock(cpu, a.mm)?;
    let pages = cpu.step("madvise_walk_vmas", |m| Ok(anon_pages(m, a, len)))?;
    zap_pages(cpu, &pages, |m, x| m.ledger.dropped(x))?;
    mmap_read_unlock(cpu, a.mm)
}

/// `MADV_DONTFORK` (or with `dofork`, `MADV_DOFORK`) of `[a, a + len)` of
/// anonymous memory (`madvise_update_vma`): set (clear) `VM_DONTCOPY`. The
/// VMA split at a boundary inside a PMD range splits a THP mapped there
/// (`vma_adjust_trans_huge`).
pub fn madvise_update_vma(cpu: &Cpu, a: Uaddr, len: u32, dofork: bool) -> KResult<()> {
    mmap_write_lock(cpu, a.mm)?;
    let pages = cpu.step("madvise_walk_vmas", |m| Ok(anon_pages(m, a, len)))?;
    for here in by_pmd_range(&pages) {
        cpu.step("madvise_update_vma", |m| {
            let x = here[0];
            let changes = here.iter().any(|y| m.vm_page(*y).dontcopy == dofork);
            if changes && partial_pmd(&here, x) && matches!(m.pmd(x), PmdVal::Leaf(_)) {
                super::huge_memory::__split_huge_pmd_locked(m, x)?;
            }
            for &y in &here {
                m.mms[y.mm as usize].vm[y.page as usize].dontcopy = !dofork;
                ktrace!(
                    m,
                    "{y}: {}",
                    if dofork {
                        "MADV_DOFORK"
                    } else {
                        "MADV_DONTFORK"
                    }
                );
            }
            Ok(())
        })?;
    }
    mmap_write_unlock(cpu, a.mm)
}
