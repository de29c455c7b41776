//! `madvise(2)` of anonymous memory (mm/madvise.c): `MADV_DONTNEED` and
//! `MADV_DONTFORK` / `MADV_DOFORK`.

use super::KResult;
use super::ctx::Cpu;
use super::memory::{mmap_read_lock, mmap_read_unlock};
use super::mmap::{anon_pages, mmap_write_lock, mmap_write_unlock, partial_pmd, zap_pages};
use super::pgtable::{PmdVal, Uaddr};
use crate::ktrace;

/// `MADV_DONTNEED` of `[a, a + len)` (`madvise_dontneed_single_vma`, under
/// `mmap_lock` for read): zap the range; the next access faults in a zeroed
/// page.
pub fn madvise_dontneed(cpu: &Cpu, a: Uaddr, len: u32) -> KResult<()> {
    mmap_read_lock(cpu, a.mm)?;
    let pages = cpu.step("madvise_walk_vmas", |m| Ok(anon_pages(m, a, len)))?;
    zap_pages(cpu, &pages, |m, x| m.ledger.dropped(x))?;
    mmap_read_unlock(cpu, a.mm)
}

/// `MADV_DONTFORK` (or with `dofork`, `MADV_DOFORK`) of `[a, a + len)`:
/// set (clear) `VM_DONTCOPY`. The VMA split at a boundary inside a PMD
/// range splits a THP mapped there (`vma_adjust_trans_huge`).
pub fn madvise_dontfork(cpu: &Cpu, a: Uaddr, len: u32, dofork: bool) -> KResult<()> {
    mmap_write_lock(cpu, a.mm)?;
    let pages = cpu.step("madvise_walk_vmas", |m| Ok(anon_pages(m, a, len)))?;
    let mut bases: Vec<u32> = pages.iter().map(|x| x.pmd_base()).collect();
    bases.dedup();
    for base in bases {
        let here: Vec<Uaddr> = pages
            .iter()
            .copied()
            .filter(|x| x.pmd_base() == base)
            .collect();
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
