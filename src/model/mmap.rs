//! Process exit (mm/mmap.c: `exit_mmap`).

use super::KResult;
use super::config::{PTRS_PER_PMD, VmaKind};
use super::ctx::Cpu;
use super::hugetlb::tlb_finish_mmu;
use super::memory::{mmap_write_unlock, zap_locked};
use super::pgtable::{PmdVal, PudVal, Uaddr};
use super::vma::{free_hugetlb_pgtables, unmap_hugetlb_vma_final};
use crate::ktrace;

/// `exit_mmap` of process `mm`, the last user gone: unmap every VMA
/// (`unmap_vmas`, which unshares the shared PMD tables and frees the
/// hugetlb VMA locks), free the page tables (`free_pgtables`, through
/// `tlb_remove_table`), then flush and free the pages (`tlb_finish_mmu`).
/// The kernel unmaps under `mmap_lock` for read and frees the page tables
/// under it for write; with no task left in the process nothing of its own
/// can run in between, so the model holds it for write throughout, and
/// first waits for the process's GUP-fast walks, the one path of its tasks
/// that takes no lock (exit_mmap runs only once `mm_users` is 0).
pub fn exit_mmap(cpu: &Cpu, mm: u8) -> KResult<()> {
    let me = cpu.index() as u8;
    let vmas = cpu.step_when(
        "exit_mmap",
        |m| {
            m.mms[mm as usize].mmap_lock.can_write()
                && m.cpus.iter().all(|c| c.gup_fast_mm != Some(mm))
        },
        |m| {
            let x = &mut m.mms[mm as usize];
            x.mmap_lock.writer = Some(me);
            if x.exited {
                return Ok(None);
            }
            x.exited = true;
            ktrace!(m, "mm{mm} exits");
            Ok(Some(m.mms[mm as usize].hugetlb_vmas.clone()))
        },
    )?;
    let Some(vmas) = vmas else {
        return mmap_write_unlock(cpu, mm);
    };
    let mut put = Vec::new();
    for &vma in &vmas {
        put.extend(unmap_hugetlb_vma_final(cpu, mm, vma)?);
    }
    for v in cpu.cfg().vmas.slots() {
        if v.kind == VmaKind::HugetlbShared {
            continue;
        }
        for page in v.start..v.end() {
            let a = Uaddr { mm, page };
            put.extend(cpu.step("zap_pte_range", |m| zap_locked(m, a))?);
        }
    }
    for vma in vmas {
        free_hugetlb_pgtables(cpu, mm, vma)?;
    }
    cpu.step("free_pgtables", |m| {
        for i in 0..m.mms[mm as usize].pud.len() {
            let PudVal::Table(t) = m.mms[mm as usize].pud[i] else {
                continue;
            };
            let base = Uaddr {
                mm,
                page: i as u32 * super::config::PUD_PAGES,
            };
            for j in 0..PTRS_PER_PMD {
                let a = base.with_page(base.page + j * super::config::PMD_PAGES);
                if let PmdVal::Table(pt) = m.pmd_in(t, a) {
                    m.set_pmd_in(t, a, PmdVal::None);
                    m.tlb_remove_table(pt);
                }
            }
            m.set_pud(base, PudVal::None);
            m.tlb_remove_table(t);
        }
        for (_, t) in std::mem::take(&mut m.mms[mm as usize].deposited) {
            m.tlb_remove_table(t);
        }
        Ok(())
    })?;
    cpu.step("tlb_finish_mmu", |m| {
        m.flush_tlb_mm(mm);
        Ok(())
    })?;
    tlb_finish_mmu(cpu, put)?;
    mmap_write_unlock(cpu, mm)
}
