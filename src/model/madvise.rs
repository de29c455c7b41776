//! `madvise` on hugetlb VMAs (mm/madvise.c).

use super::KResult;
use super::config::PMD_PAGES;
use super::ctx::Cpu;
use super::hugetlb::{__unmap_hugepage_range, hugetlb_vma_lock_write, tlb_finish_mmu};
use super::hugetlbfs::i_mmap_lock_write;
use super::memory::{
    mmap_read_lock_then, mmap_read_unlock, mmap_write_lock_then, mmap_write_unlock,
};
use super::pgtable::Uaddr;
use super::vma::split_range;

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
