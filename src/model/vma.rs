//! VMA splitting and unmapping (mm/vma.c), for hugetlb VMAs: the paths
//! that change a process's VMAs, all under `mmap_lock` held for write.

use super::KResult;
use super::config::{PMD_PAGES, PUD_PAGES, VmaKind};
use super::ctx::Cpu;
use super::hugetlb::{
    __unmap_hugepage_range, hugetlb_split, hugetlb_vma_lock_write, pud_range, tlb_finish_mmu,
};
use super::hugetlbfs::{i_mmap_lock_write, i_mmap_lock_write_then, i_mmap_unlock_write};
use super::machine::Machine;
use super::memory::{mmap_write_lock_then, mmap_write_unlock};
use super::pgtable::{PudVal, Uaddr, VmArea};
use super::variant::Variant;
use crate::ktrace;

/// `__split_vma(vmi, vma, addr, new_below = 0)`: the VMA becomes
/// `vma.start..addr` and a new VMA `addr..vma.end` with its own hugetlb VMA
/// lock (`hugetlb_vm_op_open`). Under the file rmap lock (`vma_prepare`)
/// the PMD tables that would straddle the split are unshared first
/// (`hugetlb_split`, 081056dc00a2: no fault or rmap walk can share them
/// again before the split is done). With `pmd-share-split-vma`, as before
/// b30c14cd6102, nothing is unshared. Returns the new VMA.
pub fn __split_vma(cpu: &Cpu, mm: u8, vma: VmArea, addr: u32) -> KResult<VmArea> {
    i_mmap_lock_write(cpu)?;
    if !cpu.cfg().has(Variant::PmdShareSplitVma) {
        hugetlb_split(cpu, mm, vma, addr)?;
    }
    let new = cpu.step("__split_vma", |m| {
        let x = &mut m.mms[mm as usize];
        let v = x
            .vma_by_id_mut(vma.id)
            .expect("the caller holds mmap_lock for write");
        let (end, pgoff) = (v.end, v.pgoff + addr - v.start);
        v.end = addr;
        let new = x.new_vma(addr, end, pgoff);
        ktrace!(
            m,
            "mm{mm}: VMA {}..{end} split at {addr} (new VMA {} with its own lock)",
            vma.start,
            new.id
        );
        Ok(new)
    })?;
    i_mmap_unlock_write(cpu)?;
    Ok(new)
}

/// Split `vma` so that `start..end` is one VMA of its own (what
/// `vma_modify` and munmap do first); returns that VMA.
pub fn split_range(cpu: &Cpu, mm: u8, mut vma: VmArea, start: u32, end: u32) -> KResult<VmArea> {
    if start > vma.start {
        vma = __split_vma(cpu, mm, vma, start)?;
    }
    if end < vma.end {
        __split_vma(cpu, mm, vma, end)?;
        vma.end = end;
    }
    Ok(vma)
}

/// `unmap_vmas` → `unmap_single_vma` of a hugetlb VMA that is going away
/// (`ZAP_FLAG_UNMAP`): between `__hugetlb_zap_begin` (VMA lock and
/// `i_mmap_rwsem` for write) and `__hugetlb_zap_end`, which frees the VMA
/// lock so that the VMA can no longer share while its page tables are
/// torn down. Returns the folios to put at `tlb_finish_mmu`.
pub fn unmap_hugetlb_vma_final(cpu: &Cpu, mm: u8, vma: VmArea) -> KResult<Vec<super::Pfn>> {
    hugetlb_vma_lock_write(cpu, mm, vma.id)?;
    i_mmap_lock_write(cpu)?;
    let put = __unmap_hugepage_range(cpu, mm, vma.start..vma.end, None)?;
    cpu.step("__hugetlb_zap_end", |m| {
        if let Some(v) = m.mms[mm as usize].vma_by_id_mut(vma.id) {
            v.lock = None;
        }
        m.hugetlbfs.i_mmap_rwsem.writer = None;
        Ok(())
    })?;
    Ok(put)
}

/// Does any VMA of process `mm` but the hugetlb VMA `except` overlap
/// `pages`?
fn mm_maps(m: &Machine, mm: u8, pages: &std::ops::Range<u32>, except: u32) -> bool {
    let x = &m.mms[mm as usize];
    let overlaps = |s: u32, e: u32| s < pages.end && pages.start < e;
    x.hugetlb_vmas
        .iter()
        .any(|v| v.id != except && overlaps(v.start, v.end))
        || (!x.exited
            && m.cfg
                .vmas
                .slots()
                .any(|v| v.kind != VmaKind::HugetlbShared && overlaps(v.start, v.end())))
}

/// `free_pgtables` for a hugetlb VMA: `unlink_file_vma` takes it out of
/// `i_mmap` (under `i_mmap_rwsem` for write), then `hugetlb_free_pgd_range`
/// frees the PMD table of every PUD range no other VMA of the process
/// uses, through `tlb_remove_table` (after a grace period, for GUP-fast).
/// Unmapping unshared every shared table, so what is left is private.
pub fn free_hugetlb_pgtables(cpu: &Cpu, mm: u8, vma: VmArea) -> KResult<()> {
    i_mmap_lock_write_then(cpu, "unlink_file_vma", |m| {
        let x = &mut m.mms[mm as usize];
        x.hugetlb_vmas.retain(|v| v.id != vma.id);
        for v in &mut x.vm[vma.start as usize..vma.end as usize] {
            v.mapped = false;
        }
        m.hugetlbfs.i_mmap_rwsem.writer = None;
        Ok(())
    })?;
    cpu.step("hugetlb_free_pgd_range", |m| {
        let mut pud = pud_range(vma.start).start;
        while pud < vma.end {
            let range = pud..pud + PUD_PAGES;
            let a = Uaddr { mm, page: pud };
            if !mm_maps(m, mm, &range, vma.id)
                && let Some(t) = m.pmd_table(a)
            {
                m.set_pud(a, PudVal::None);
                m.tlb_remove_table(t);
                ktrace!(m, "{a}: PMD table in frame {t} freed");
            }
            pud += PUD_PAGES;
        }
        Ok(())
    })
}

/// `munmap` of the huge page at `a` in a hugetlb VMA (`do_vmi_munmap`):
/// split it off its VMA (`vms_gather_munmap_vmas`, which unshares across
/// a split that is not PUD-aligned), unmap it, free its page tables, then
/// flush and free the pages (`tlb_finish_mmu`).
pub fn munmap(cpu: &Cpu, a: Uaddr) -> KResult<()> {
    let start = a.pmd_base();
    let end = start + PMD_PAGES;
    let vma = mmap_write_lock_then(cpu, a.mm, |m| Ok(m.mms[a.mm as usize].hugetlb_vma(start)))?;
    if let Some(vma) = vma {
        let vma = split_range(cpu, a.mm, vma, start, end)?;
        let put = unmap_hugetlb_vma_final(cpu, a.mm, vma)?;
        free_hugetlb_pgtables(cpu, a.mm, vma)?;
        cpu.step("tlb_finish_mmu", |m| {
            m.flush_tlb_range(a.mm, start..end);
            Ok(())
        })?;
        tlb_finish_mmu(cpu, put)?;
    }
    mmap_write_unlock(cpu, a.mm)
}
