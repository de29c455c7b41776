//! Page faults and unmapping of user memory (mm/memory.c).
//!
//! A fault, a zap and the GUP slow path hold `mmap_lock` for read;
//! khugepaged holds it for write. Each PTE-lock section is one step.

use super::KResult;
use super::filemap::{filemap_add_folio, filemap_get_entry, folio_lock_then, folio_unlock};
use super::machine::{Machine, Pfn};
use super::mm_types::{Mapping, pg};
use super::oracle::Violation;
use super::page_flags::compound_head;
use super::page_ref::{folio_put, folio_put_refs};
use super::pgtable::{ANON_BASE, PmdVal, PteVal, Uaddr};
use crate::exec::Cpu;
use crate::ktrace;

/// `mmap_read_lock(mm)`.
pub fn mmap_read_lock(cpu: &Cpu, mm: u8) -> KResult<()> {
    cpu.step_when(
        "mmap_read_lock",
        |m| m.pt.mms[mm as usize].mmap_lock.can_read(),
        |m| {
            m.pt.mms[mm as usize].mmap_lock.readers += 1;
            Ok(())
        },
    )
}

/// `mmap_read_unlock(mm)`.
pub fn mmap_read_unlock(cpu: &Cpu, mm: u8) -> KResult<()> {
    cpu.step("mmap_read_unlock", |m| {
        m.pt.mms[mm as usize].mmap_lock.readers -= 1;
        Ok(())
    })
}

/// How many times a fault retries after waiting out a migration entry or
/// losing a race (`VM_FAULT_RETRY` / `VM_FAULT_NOPAGE`); the kernel retries
/// while the task runs, the model a bounded number of times.
const FAULT_RETRIES: u32 = 3;

/// `handle_mm_fault` for a read fault at `a`: populate a none PTE, or wait
/// out a migration entry (`do_swap_page` → `migration_entry_wait`) and
/// retry. `order` > 0 asks for an mTHP on an anonymous fault.
pub fn handle_mm_fault(cpu: &Cpu, a: Uaddr, pfn_hint: Pfn, order: u8) -> KResult<()> {
    mmap_read_lock(cpu, a.mm)?;
    handle_mm_fault_locked(cpu, a, pfn_hint, order)?;
    mmap_read_unlock(cpu, a.mm)
}

/// `handle_mm_fault` with `mmap_lock` already held.
pub fn handle_mm_fault_locked(cpu: &Cpu, a: Uaddr, pfn_hint: Pfn, order: u8) -> KResult<()> {
    for _ in 0..FAULT_RETRIES {
        let pte = cpu.step("handle_pte_fault", |m| {
            let pte = m.pte(a);
            ktrace!(m, "{a}: pmd {:?}, pte {pte:?}", m.pmd(a));
            Ok(pte)
        })?;
        match pte {
            Some(PteVal::None) if a.is_anon() => return do_anonymous_page(cpu, a, pfn_hint, order),
            Some(PteVal::None) => {
                if do_read_fault(cpu, a, pfn_hint)? {
                    return Ok(());
                }
            }
            Some(PteVal::Migration { pfn, .. }) => migration_entry_wait(cpu, a, pfn)?,
            // Mapped already, or a PMD leaf.
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// `migration_entry_wait`: sleep until migration replaced the entry (it
/// unlocks the folio only after `remove_migration_ptes`).
pub fn migration_entry_wait(cpu: &Cpu, a: Uaddr, pfn: Pfn) -> KResult<()> {
    let entry =
        |m: &Machine| matches!(m.pte(a), Some(PteVal::Migration { pfn: p, .. }) if p == pfn);
    cpu.step_when(
        "migration_entry_wait",
        |m| !entry(m),
        |m| {
            ktrace!(m, "{a}: migration entry for pfn {pfn} is gone");
            Ok(())
        },
    )
}

/// `do_anonymous_page`: allocate a zeroed folio (`alloc_anon_folio`: an
/// mTHP of `order` if its whole range is still none) and map it under the
/// PTE lock; a racing fault that got there first wins.
fn do_anonymous_page(cpu: &Cpu, a: Uaddr, pfn_hint: Pfn, order: u8) -> KResult<()> {
    let range = |order: u8| -> Vec<Uaddr> {
        let base = if order > 0 { a.pmd_base() } else { a.page };
        (base..base + (1 << order))
            .map(|page| Uaddr { mm: a.mm, page })
            .collect()
    };
    let all_none = |m: &Machine, r: &[Uaddr]| r.iter().all(|&x| m.pte(x) == Some(PteVal::None));
    let Some((folio, pages)) = cpu.step("alloc_anon_folio", |m| {
        let order = if order > 0 && all_none(m, &range(1)) {
            1
        } else {
            0
        };
        let Some(folio) = m.alloc_pages(order, pfn_hint)? else {
            return Ok(None);
        };
        let pages = range(order);
        let p = m.page_mut(folio)?;
        p.flags |= pg::SWAPBACKED;
        p.mapping = Mapping::Anon {
            anon_vma: a.mm,
            index: pages[0].page,
        };
        Ok(Some((folio, pages)))
    })?
    else {
        return Ok(());
    };
    let mapped = cpu.step("set_pte_range", |m| {
        if !all_none(m, &pages) {
            ktrace!(m, "{a}: PTE populated meanwhile");
            return Ok(false);
        }
        // folio_add_new_anon_rmap(RMAP_EXCLUSIVE), folio_add_lru_vma, and
        // one reference per PTE.
        for (i, &x) in pages.iter().enumerate() {
            let page = folio + i as u32;
            let p = m.page_mut(page)?;
            p.mapcount = 0;
            p.flags |= pg::ANON_EXCLUSIVE;
            m.set_pte(x, PteVal::Present { pfn: page });
        }
        let head = m.page_mut(folio)?;
        head.flags |= pg::LRU;
        head.refcount += pages.len() as i32 - 1;
        ktrace!(
            m,
            "{a}: mapped anon folio pfn {folio} at pages {}..{}",
            pages[0].page,
            pages[0].page + pages.len() as u32
        );
        Ok(true)
    })?;
    if !mapped {
        folio_put(cpu, folio)?;
    }
    Ok(())
}

/// `do_read_fault` on the file mapping: `filemap_fault` finds (or reads
/// in) the page-cache folio and locks it, `finish_fault` maps it under the
/// PTE lock, keeping the lookup's reference for the mapping. Returns false
/// to retry the fault.
fn do_read_fault(cpu: &Cpu, a: Uaddr, pfn_hint: Pfn) -> KResult<bool> {
    let index = a.page;
    let folio = match filemap_get_entry(cpu, index)? {
        Some(f) => f,
        None => {
            // page_cache_ra_order(): read the folio in, then look again.
            filemap_add_folio(cpu, index, pfn_hint)?;
            match filemap_get_entry(cpu, index)? {
                Some(f) => f,
                None => return Ok(true),
            }
        }
    };
    // lock_folio_maybe_drop_mmap(), then "did it get truncated?"
    let ours = folio_lock_then(cpu, "filemap_fault", folio, |m| {
        let ours = m.page(folio)?.mapping == Mapping::File { index };
        if !ours {
            ktrace!(m, "pfn {folio} was truncated: retry");
            m.page_mut(folio)?.flags &= !pg::LOCKED;
        }
        Ok(ours)
    })?;
    if !ours {
        folio_put(cpu, folio)?;
        return Ok(false);
    }
    let mapped = cpu.step("finish_fault", |m| {
        if m.pte(a) != Some(PteVal::None) {
            ktrace!(m, "{a}: PTE populated meanwhile");
            return Ok(false);
        }
        m.set_pte(a, PteVal::Present { pfn: folio });
        m.page_mut(folio)?.mapcount += 1;
        ktrace!(m, "{a}: mapped page-cache pfn {folio}");
        Ok(true)
    })?;
    folio_unlock(cpu, folio)?;
    if !mapped {
        folio_put(cpu, folio)?;
    }
    Ok(true)
}

/// `zap_pte_range` (MADV_DONTNEED of one page): clear the PTE under the
/// PTE lock and drop the mapping's reference after the TLB flush
/// (`tlb_finish_mmu`). A migration entry is simply cleared. A PMD leaf is
/// zapped whole (`zap_huge_pmd`); its deposited table goes back in the PMD.
pub fn zap_pte_range(cpu: &Cpu, a: Uaddr) -> KResult<()> {
    let folio = cpu.step_when(
        "zap_pte_range",
        |m| m.pt.mms[a.mm as usize].mmap_lock.can_read(),
        |m| zap_locked(m, a),
    )?;
    if let Some(folio) = folio {
        folio_put_refs(cpu, folio, 1)?;
    }
    Ok(())
}

fn zap_locked(m: &mut Machine, a: Uaddr) -> Result<Option<Pfn>, Violation> {
    match m.pmd(a) {
        PmdVal::Leaf(folio) => {
            let t = m.pt.alloc_table();
            m.set_pmd(a, PmdVal::Table(t));
            m.page_mut(folio + 1)?.entire_mapcount -= 1;
            ktrace!(m, "{a}: zap_huge_pmd: PMD mapping of pfn {folio} cleared");
            Ok(Some(folio))
        }
        PmdVal::None => Ok(None),
        PmdVal::Table(_) => match m.pte(a) {
            Some(PteVal::Present { pfn }) => {
                m.set_pte(a, PteVal::None);
                m.page_mut(pfn)?.mapcount -= 1;
                let folio = compound_head(m, pfn)?;
                ktrace!(m, "{a}: PTE for pfn {pfn} cleared");
                Ok(Some(folio))
            }
            Some(PteVal::Migration { pfn, .. }) => {
                m.set_pte(a, PteVal::None);
                ktrace!(m, "{a}: migration entry for pfn {pfn} cleared");
                Ok(None)
            }
            _ => Ok(None),
        },
    }
}

/// The anonymous range of a process, for khugepaged.
pub fn anon_range(mm: u8) -> Uaddr {
    Uaddr {
        mm,
        page: ANON_BASE,
    }
}
