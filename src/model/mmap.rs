//! Unmapping (mm/mmap.c, mm/vma.c): `munmap` of part of a VMA and
//! `exit_mmap` of a whole process.
//!
//! The model's VMAs are the configuration's, per process and page
//! ([`VmPage`](super::pgtable::VmPage)): munmap leaves holes, exit restores
//! the layout for the process exec makes next in the slot. munmap and the
//! other VMA operations act on anonymous VMAs only; elsewhere they do
//! nothing.

use super::KResult;
use super::config::{MAX_USER_PAGES, PMD_PAGES, PTRS_PER_PMD, PUD_PAGES, PUDS};
use super::ctx::Cpu;
use super::machine::{Machine, Pfn};
use super::memory::{zap_huge_pmd, zap_one_pte};
use super::oracle::Violation;
use super::page_ref::folio_put_refs;
use super::pgtable::{PmdVal, PudVal, Uaddr};
use crate::ktrace;

/// `mmap_write_lock(mm)`.
pub fn mmap_write_lock(cpu: &Cpu, mm: u8) -> KResult<()> {
    let me = cpu.index() as u8;
    cpu.step_when(
        "mmap_write_lock",
        |m| m.mms[mm as usize].mmap_lock.can_write(),
        |m| {
            m.mms[mm as usize].mmap_lock.writer = Some(me);
            Ok(())
        },
    )
}

/// `mmap_write_unlock(mm)`.
pub fn mmap_write_unlock(cpu: &Cpu, mm: u8) -> KResult<()> {
    cpu.step("mmap_write_unlock", |m| {
        m.mms[mm as usize].mmap_lock.writer = None;
        Ok(())
    })
}

/// The anonymous pages of `[a, a + len)` that a VMA of `a.mm` covers.
pub fn anon_pages(m: &Machine, a: Uaddr, len: u32) -> Vec<Uaddr> {
    (a.page..(a.page + len).min(MAX_USER_PAGES))
        .map(|p| a.with_page(p))
        .filter(|&x| m.anon_vma_covers(x))
        .collect()
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
    let mut bases: Vec<u32> = pages.iter().map(|x| x.pmd_base()).collect();
    bases.dedup();
    let mut put: Vec<Pfn> = Vec::new();
    for base in bases {
        let here: Vec<Uaddr> = pages
            .iter()
            .copied()
            .filter(|x| x.pmd_base() == base)
            .collect();
        let folios = cpu.step("zap_pmd_range", |m| {
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
        })?;
        put.extend(folios);
    }
    for folio in put {
        folio_put_refs(cpu, folio, 1)?;
    }
    Ok(())
}

/// `munmap(2)` of `[a, a + len)`: zap the pages and remove the VMA there
/// (`do_vmi_munmap`). Empty page tables stay until exit (`free_pgtables`
/// of the gap is not modelled).
pub fn munmap(cpu: &Cpu, a: Uaddr, len: u32) -> KResult<()> {
    super::mmap::mmap_write_lock(cpu, a.mm)?;
    let pages = cpu.step("vma_lookup", |m| Ok(anon_pages(m, a, len)))?;
    zap_pages(cpu, &pages, |m, x| {
        m.ledger.dropped(x);
        m.mms[x.mm as usize].vm[x.page as usize].mapped = false;
        ktrace!(m, "{x}: unmapped");
    })?;
    mmap_write_unlock(cpu, a.mm)
}

/// `exit_mmap` of the process in slot `mm`, whose mmap_lock this CPU holds
/// for write: `unmap_vmas` (every mapping, PMD range by PMD range), then
/// `free_pgtables` (through `tlb_remove_table`: GUP-fast may still walk
/// them). The process's GUP holders keep what they hold, detached.
pub fn exit_mmap_locked(cpu: &Cpu, mm: u8) -> KResult<()> {
    let ranges = cpu.step("unmap_vmas", |m| Ok(populated_pmds(m, mm)))?;
    let mut put: Vec<Pfn> = Vec::new();
    for base in ranges {
        let folios = cpu.step("unmap_page_range", |m| {
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
        })?;
        put.extend(folios);
    }
    for folio in put {
        folio_put_refs(cpu, folio, 1)?;
    }
    cpu.step("free_pgtables", |m| free_pgtables(m, mm))
}

/// The first page of every PMD range of `mm` that maps something.
fn populated_pmds(m: &Machine, mm: u8) -> Vec<u32> {
    let mut out = Vec::new();
    for pud in 0..PUDS {
        for i in 0..PTRS_PER_PMD {
            let base = pud * PUD_PAGES + i * PMD_PAGES;
            if m.pmd(Uaddr { mm, page: base }) != PmdVal::None {
                out.push(base);
            }
        }
    }
    out
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

/// The `exit_mmap` op: the process in slot `mm` exits; exec puts a new one
/// there, with the configuration's VMAs and nothing mapped.
pub fn exit_mmap(cpu: &Cpu, mm: u8) -> KResult<()> {
    mmap_write_lock(cpu, mm)?;
    exit_mmap_locked(cpu, mm)?;
    cpu.step("mm_init", |m| {
        exec_new_process(m, mm);
        Ok(())
    })?;
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
