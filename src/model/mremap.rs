//! `mremap(2)` of anonymous memory with `MREMAP_MAYMOVE | MREMAP_FIXED`
//! (mm/mremap.c).
//!
//! The destination is unmapped first (`do_munmap`), then the page tables
//! move (`move_page_tables`): a whole, aligned PMD leaf as it is
//! (`move_huge_pmd`), anything else PTE by PTE (`move_ptes`), after
//! splitting a THP the range covers in part. Pages keep their mapcounts
//! and PageAnonExclusive; the new VMA keeps the old offsets (`vm_pgoff`),
//! so rmap finds the folios at their new address. GUP holders' pages move
//! with the mapping (seed 002: "the pinned page behind should move with
//! the mapping").

use super::KResult;
use super::config::{MAX_USER_PAGES, PMD_PAGES, VmaKind};
use super::ctx::Cpu;
use super::machine::Machine;
use super::mmap::{anon_pages, mmap_write_lock, mmap_write_unlock, zap_pages};
use super::pgtable::{PmdVal, PteVal, Uaddr, VmPage};
use crate::ktrace;

/// `mremap(a, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, new)`: the range
/// must be mapped anonymous memory, the destination inside an anonymous
/// VMA of the layout, the two apart; else -EINVAL and nothing happens.
pub fn mremap(cpu: &Cpu, a: Uaddr, len: u32, new: u32) -> KResult<()> {
    mmap_write_lock(cpu, a.mm)?;
    let plan = cpu.step("mremap_to", |m| Ok(check(m, a, len, new)))?;
    if let Some((src, dst)) = plan {
        move_range(cpu, &src, &dst)?;
    }
    mmap_write_unlock(cpu, a.mm)
}

fn check(m: &mut Machine, a: Uaddr, len: u32, new: u32) -> Option<(Vec<Uaddr>, Vec<Uaddr>)> {
    let src: Vec<Uaddr> = (a.page..a.page + len).map(|p| a.with_page(p)).collect();
    let dst: Vec<Uaddr> = (new..new + len).map(|p| a.with_page(p)).collect();
    let in_anon_layout = |x: &Uaddr| {
        x.page < MAX_USER_PAGES
            && m.cfg
                .vmas
                .find(x.page)
                .is_some_and(|v| v.kind == VmaKind::AnonPrivate)
    };
    let apart = new + len <= a.page || a.page + len <= new;
    if !(apart && src.iter().all(|&x| m.anon_vma_covers(x)) && dst.iter().all(in_anon_layout)) {
        crate::ktrace!(m, "{a}: mremap of {len} page(s) to {new}: -EINVAL");
        return None;
    }
    Some((src, dst))
}

fn move_range(cpu: &Cpu, src: &[Uaddr], dst: &[Uaddr]) -> KResult<()> {
    // do_munmap of the destination.
    let old = cpu.step("do_munmap", |m| Ok(anon_pages(m, dst[0], dst.len() as u32)))?;
    zap_pages(cpu, &old, |m, x| m.ledger.dropped(x))?;
    let whole = src.len() == PMD_PAGES as usize
        && src[0].page.is_multiple_of(PMD_PAGES)
        && dst[0].page.is_multiple_of(PMD_PAGES);
    let (s0, d0) = (src[0], dst[0]);
    let moved_huge = cpu.step("move_page_tables", |m| {
        let PmdVal::Leaf(leaf) = m.pmd(s0) else {
            return alloc_ptes(m, dst);
        };
        if !(whole && m.pmd_alloc(d0)? && m.pmd(d0) == PmdVal::None) {
            super::huge_memory::__split_huge_pmd_locked(m, s0)?;
            return alloc_ptes(m, dst);
        }
        // move_huge_pmd.
        m.set_pmd(s0, PmdVal::None);
        m.flush_tlb_range(s0.mm, s0.page..s0.page + PMD_PAGES);
        m.set_pmd(d0, PmdVal::Leaf(leaf));
        if let Some(t) = m.mms[s0.mm as usize].withdraw(s0.page) {
            m.mms[d0.mm as usize].deposit(d0.page, t);
        }
        for (&s, &d) in src.iter().zip(dst) {
            move_vma_page(m, s, d);
        }
        ktrace!(m, "{s0}: THP pfn {} moved to {d0}", leaf.pfn);
        Ok(Some(true))
    })?;
    match moved_huge {
        Some(true) => return Ok(()),
        Some(false) => {}
        None => return Ok(()),
    }
    for (&s, &d) in src.iter().zip(dst) {
        cpu.step_when(
            "move_ptes",
            |m| m.pte_locks_free(&[s, d]),
            |m| {
                if let Some(pte) = m.pte(s)
                    && pte != PteVal::None
                {
                    m.set_pte(s, PteVal::None);
                    m.flush_tlb_range(s.mm, s.page..s.page + 1);
                    m.set_pte(d, pte);
                    ktrace!(m, "{s}: PTE {pte:?} moved to {d}");
                }
                move_vma_page(m, s, d);
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// Give every destination page a PTE table: `Some(false)` to move PTEs,
/// `None` on -ENOMEM (the destination stays unmapped).
fn alloc_ptes(m: &mut Machine, dst: &[Uaddr]) -> Result<Option<bool>, super::oracle::Violation> {
    for &d in dst {
        if matches!(m.pmd(d), PmdVal::Leaf(_)) || !m.pte_alloc(d)? {
            return Ok(None);
        }
    }
    Ok(Some(false))
}

/// The VMA and the oracles' view of page `s` move to `d`.
fn move_vma_page(m: &mut Machine, s: Uaddr, d: Uaddr) {
    let vm = m.vm_page(s);
    m.mms[d.mm as usize].vm[d.page as usize] = vm;
    m.mms[s.mm as usize].vm[s.page as usize] = VmPage {
        mapped: false,
        ..vm
    };
    m.ledger.moved(s, d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{VmaSpec, Vmas};
    use crate::model::gup::{Foll, gup_fast_fallback};
    use crate::model::huge_memory::do_huge_pmd_anonymous_page;
    use crate::model::machine::Hold;
    use crate::model::memory::user_access;
    use crate::model::mm_types::Mapping;
    use crate::model::testing::Kernel;

    /// Two anonymous VMAs: a THP at pages 0-1, room at 2-3.
    ///
    /// ```text
    /// page   0     1     2     3
    ///        | THP       | anon      |
    /// ```
    fn two_anon_vmas() -> Kernel {
        let anon = |pages| VmaSpec {
            kind: VmaKind::AnonPrivate,
            pages,
        };
        Kernel::builder()
            .config(|c| c.vmas = Vmas::new(&[anon(2), anon(2)]).unwrap())
            .boot()
    }

    #[test]
    fn mremap_of_half_a_thp_splits_it_and_moves_the_pin_along() {
        let mut k = two_anon_vmas();
        let a = Uaddr::new(0, 0);
        k.on(0, |cpu| do_huge_pmd_anonymous_page(cpu, a, 600))
            .unwrap();
        k.on(0, |cpu| user_access(cpu, a.with_page(1), true))
            .unwrap();
        k.on(0, |cpu| {
            gup_fast_fallback(cpu, a.with_page(1), Foll::Pin, true)
        })
        .unwrap();
        let Some(&Hold::GupPin { page, id, .. }) = k.m.cpus[0].holds.last() else {
            panic!("a pin")
        };

        k.on(0, |cpu| mremap(cpu, a.with_page(1), 1, 2)).unwrap();

        let moved = a.with_page(2);
        assert_eq!(k.m.pte(moved).and_then(PteVal::present_pfn), Some(page));
        assert!(
            !k.m.vm_page(a.with_page(1)).mapped,
            "the old range is a hole"
        );
        assert_eq!(k.m.vm_page(moved).pgoff, 1, "the VMA keeps its offset");
        let Mapping::Anon { anon_vma, index } = k.m.peek(page - 1).mapping else {
            panic!("an anonymous folio")
        };
        assert!(
            k.m.rmap_addresses(Mapping::Anon { anon_vma, index }, 1)
                .contains(&moved)
        );
        assert_eq!(k.m.ledger.hold(id).and_then(|h| h.at), Some(moved));
        k.quiesce().unwrap();
    }

    #[test]
    fn mremap_of_a_whole_aligned_thp_moves_its_pmd() {
        let mut k = two_anon_vmas();
        let a = Uaddr::new(0, 0);
        k.on(0, |cpu| do_huge_pmd_anonymous_page(cpu, a, 600))
            .unwrap();

        k.on(0, |cpu| mremap(cpu, a, 2, 2)).unwrap();

        assert_eq!(k.m.pmd(a), PmdVal::None);
        assert!(matches!(k.m.pmd(a.with_page(2)), PmdVal::Leaf(_)));
        assert_eq!(k.m.mms[0].deposited, [(2, k.m.mms[0].deposited[0].1)]);
        k.quiesce().unwrap();
    }
}
