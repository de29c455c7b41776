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
use super::mmap::{anon_pages, by_pmd_range, mmap_write_lock, mmap_write_unlock, partial_pmd};
use super::pgtable::{PmdLeaf, PmdVal, PteEntry, PteVal, Uaddr};
use crate::ktrace;

/// `mprotect(a, len, PROT_READ | (write ? PROT_WRITE : 0))` of the
/// anonymous pages of the range, one PMD range a step.
pub fn mprotect(cpu: &Cpu, a: Uaddr, len: u32, write: bool) -> KResult<()> {
    mmap_write_lock(cpu, a.mm)?;
    let pages = cpu.step("mprotect_fixup", |m| Ok(anon_pages(m, a, len)))?;
    for here in by_pmd_range(&pages) {
        cpu.step_when(
            "change_protection",
            |m| m.pte_locks_free(&here),
            |m| {
                let x = here[0];
                if let PmdVal::Leaf(l) = m.pmd(x) {
                    if partial_pmd(&here, x) {
                        super::huge_memory::__split_huge_pmd_locked(m, x)?;
                    } else if !write && l.write {
                        // change_huge_pmd.
                        m.set_pmd(x, PmdVal::Leaf(PmdLeaf { write: false, ..l }));
                        m.flush_tlb_range(
                            x.mm,
                            x.pmd_base()..x.pmd_base() + super::config::PMD_PAGES,
                        );
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
            },
        )?;
    }
    mmap_write_unlock(cpu, a.mm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::huge_memory::do_huge_pmd_anonymous_page;
    use crate::model::memory::user_access;
    use crate::model::testing::Kernel;

    const ANON: u8 = 2;

    #[test]
    fn mprotect_of_half_a_thp_splits_it_and_write_protects_that_half() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| do_huge_pmd_anonymous_page(cpu, a, 600))
            .unwrap();

        k.on(0, |cpu| {
            mprotect(cpu, a.with_page(ANON as u32 + 1), 1, false)
        })
        .unwrap();

        let write = |page| match k.m.pte(a.with_page(page)) {
            Some(PteVal::Present(e)) => e.write,
            pte => panic!("{pte:?}"),
        };
        assert!(write(ANON as u32) && !write(ANON as u32 + 1));
        assert!(!k.m.vm_page(a.with_page(ANON as u32 + 1)).write);
        k.quiesce().unwrap();
    }

    #[test]
    fn a_store_to_a_read_only_range_does_nothing_and_back_to_writable_it_faults() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        k.on(0, |cpu| mprotect(cpu, a, 1, false)).unwrap();
        let before = k.m.ledger.write_seq;

        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        assert_eq!(k.m.ledger.write_seq, before, "SIGSEGV: no store");

        k.on(0, |cpu| mprotect(cpu, a, 1, true)).unwrap();
        assert!(matches!(k.m.pte(a), Some(PteVal::Present(e)) if !e.write));
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        assert!(
            matches!(k.m.pte(a), Some(PteVal::Present(e)) if e.write),
            "reused"
        );
        k.quiesce().unwrap();
    }
}
