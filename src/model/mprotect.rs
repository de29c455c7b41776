//! `mprotect(2)` of anonymous memory (mm/mprotect.c).
//!
//! `mprotect_fixup` changes the VMA's `VM_WRITE`; `change_protection`
//! write-protects the entries of a range made read-only (a PMD leaf the
//! range covers whole with `change_huge_pmd`, one it covers in part split
//! first). Making a range writable again leaves the entries read-only, so
//! the next write takes a write fault: the model runs with soft-dirty
//! tracking on, as cow.c's tests do (`clear_softdirty()`), which disables
//! the v6.0 shortcut of mapping exclusive anonymous pages writable
//! (64fe24a3e05e, `can_change_pte_writable`).

use super::KResult;
use super::ctx::Cpu;
use super::mmap::{anon_pages, mmap_write_lock, mmap_write_unlock, partial_pmd};
use super::pgtable::{PmdLeaf, PmdVal, PteEntry, PteVal, Uaddr};
use crate::ktrace;

/// `mprotect(a, len, PROT_READ | (write ? PROT_WRITE : 0))` of the
/// anonymous pages of the range, one PMD range a step.
pub fn mprotect(cpu: &Cpu, a: Uaddr, len: u32, write: bool) -> KResult<()> {
    mmap_write_lock(cpu, a.mm)?;
    let pages = cpu.step("mprotect_fixup", |m| Ok(anon_pages(m, a, len)))?;
    let mut bases: Vec<u32> = pages.iter().map(|x| x.pmd_base()).collect();
    bases.dedup();
    for base in bases {
        let here: Vec<Uaddr> = pages
            .iter()
            .copied()
            .filter(|x| x.pmd_base() == base)
            .collect();
        cpu.step("change_protection", |m| {
            let x = here[0];
            if let PmdVal::Leaf(l) = m.pmd(x) {
                if partial_pmd(&here, x) {
                    super::huge_memory::__split_huge_pmd_locked(m, x)?;
                } else if !write && l.write {
                    // change_huge_pmd.
                    m.set_pmd(x, PmdVal::Leaf(PmdLeaf { write: false, ..l }));
                    m.flush_tlb_range(x.mm, base..base + super::config::PMD_PAGES);
                }
            }
            for &y in &here {
                m.mms[y.mm as usize].vm[y.page as usize].write = write;
                if let (false, Some(PteVal::Present(e))) = (write, m.pte(y))
                    && e.write
                {
                    m.set_pte(y, PteVal::Present(PteEntry { write: false, ..e }));
                    m.flush_tlb_range(y.mm, y.page..y.page + 1);
                }
                ktrace!(
                    m,
                    "{y}: {}",
                    if write {
                        "PROT_READ|PROT_WRITE"
                    } else {
                        "PROT_READ"
                    }
                );
            }
            Ok(())
        })?;
    }
    mmap_write_unlock(cpu, a.mm)
}
