//! Page faults, zapping, and user loads and stores (mm/memory.c).
//!
//! A fault, a zap and the GUP slow path hold `mmap_lock` for read;
//! khugepaged holds it for write. Each PTE-lock section is one step. A user
//! access goes through the CPU's user TLB; on a miss the hardware walks the
//! page tables, and a missing or read-only mapping enters the fault path.

use super::KResult;
use super::config::VmaKind;
use super::ctx::Cpu;
use super::filemap::{filemap_add_folio, filemap_get_entry, folio_lock_then, folio_unlock};
use super::machine::{Content, Machine, Pfn};
use super::mm_types::{Mapping, pg};
use super::oracle::{self, Violation};
use super::page_flags::compound_head;
use super::page_ref::{folio_put, folio_put_refs};
use super::pgtable::{PmdVal, PteEntry, PteVal, Uaddr, UserTlbEntry};
use crate::ktrace;

/// `mmap_read_lock(mm)`.
pub fn mmap_read_lock(cpu: &Cpu, mm: u8) -> KResult<()> {
    cpu.step_when(
        "mmap_read_lock",
        |m| m.mms[mm as usize].mmap_lock.can_read(),
        |m| {
            m.mms[mm as usize].mmap_lock.readers += 1;
            Ok(())
        },
    )
}

/// `mmap_read_unlock(mm)`.
pub fn mmap_read_unlock(cpu: &Cpu, mm: u8) -> KResult<()> {
    cpu.step("mmap_read_unlock", |m| {
        m.mms[mm as usize].mmap_lock.readers -= 1;
        Ok(())
    })
}

/// `mmap_read_lock(mm)`, then `then` in the same step (the VMA lookup).
pub fn mmap_read_lock_then<T>(
    cpu: &Cpu,
    mm: u8,
    then: impl FnOnce(&mut Machine) -> Result<T, Violation>,
) -> KResult<T> {
    cpu.step_when(
        "mmap_read_lock",
        |m| m.mms[mm as usize].mmap_lock.can_read(),
        |m| {
            m.mms[mm as usize].mmap_lock.readers += 1;
            then(m)
        },
    )
}

/// `mmap_write_lock(mm)`, then `then` in the same step.
pub fn mmap_write_lock_then<T>(
    cpu: &Cpu,
    mm: u8,
    then: impl FnOnce(&mut Machine) -> Result<T, Violation>,
) -> KResult<T> {
    let me = cpu.index() as u8;
    cpu.step_when(
        "mmap_write_lock",
        |m| m.mms[mm as usize].mmap_lock.can_write(),
        |m| {
            m.mms[mm as usize].mmap_lock.writer = Some(me);
            then(m)
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

/// How many times a fault retries after waiting out a migration entry or
/// losing a race (`VM_FAULT_RETRY` / `VM_FAULT_NOPAGE`); the kernel retries
/// while the task runs, the model a bounded number of times.
const FAULT_RETRIES: u32 = 3;

/// `handle_mm_fault` for a read fault at `a`: populate a none PTE, or wait
/// out a migration entry (`do_swap_page` → `migration_entry_wait`) and
/// retry. `order` > 0 asks for an mTHP on an anonymous fault.
pub fn handle_mm_fault(cpu: &Cpu, a: Uaddr, pfn_hint: Pfn, order: u8) -> KResult<()> {
    mmap_read_lock(cpu, a.mm)?;
    handle_mm_fault_locked(cpu, a, pfn_hint, order, false)?;
    mmap_read_unlock(cpu, a.mm)
}

/// `handle_mm_fault` with `mmap_lock` already held; `write` is
/// `FAULT_FLAG_WRITE`.
pub fn handle_mm_fault_locked(
    cpu: &Cpu,
    a: Uaddr,
    pfn_hint: Pfn,
    order: u8,
    write: bool,
) -> KResult<()> {
    let Some(vma) = cpu.cfg().vmas.find(a.page) else {
        return Ok(());
    };
    if vma.kind == VmaKind::HugetlbShared {
        return super::hugetlb::hugetlb_fault(cpu, a, vma, write);
    }
    for _ in 0..FAULT_RETRIES {
        // __handle_mm_fault: pud_alloc, pmd_alloc and (for a PTE fault)
        // pte_alloc before handle_pte_fault looks at the entry.
        let pte = cpu.step("handle_pte_fault", |m| {
            if m.mms[a.mm as usize].exited {
                ktrace!(m, "{a}: the process exited: no VMA");
                return Ok(None);
            }
            if !m.pte_alloc(a)? {
                ktrace!(m, "{a}: no page table: VM_FAULT_OOM or a PMD leaf");
                return Ok(None);
            }
            let pte = m.pte(a);
            ktrace!(m, "{a}: pmd {:?}, pte {pte:?}", m.pmd(a));
            Ok(pte)
        })?;
        let Some(pte) = pte else {
            return Ok(());
        };
        match (pte, vma.kind) {
            (PteVal::None, VmaKind::AnonPrivate) => {
                return do_anonymous_page(cpu, a, pfn_hint, order);
            }
            (PteVal::None, VmaKind::FileShared) => {
                if do_read_fault(cpu, a, pfn_hint, write)? {
                    return Ok(());
                }
            }
            (PteVal::Migration { pfn, .. }, _) => migration_entry_wait(cpu, a, pfn)?,
            (PteVal::Present(e), _) if write && !e.write => {
                if do_wp_page(cpu, a, e, vma.kind, pfn_hint)? {
                    return Ok(());
                }
            }
            // Mapped already.
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

/// The pages of `a`'s anonymous VMA an order-`order` folio at `a` covers.
fn anon_range(a: Uaddr, order: u8) -> Vec<Uaddr> {
    let base = if order > 0 { a.pmd_base() } else { a.page };
    (base..base + (1 << order))
        .map(|page| a.with_page(page))
        .collect()
}

/// `do_anonymous_page`: allocate a zeroed folio (`alloc_anon_folio`: an
/// mTHP of `order` if its whole range is still none) and map it writable
/// under the PTE lock; a racing fault that got there first wins.
fn do_anonymous_page(cpu: &Cpu, a: Uaddr, pfn_hint: Pfn, order: u8) -> KResult<()> {
    let all_none = |m: &Machine, r: &[Uaddr]| r.iter().all(|&x| m.pte(x) == Some(PteVal::None));
    let Some((folio, pages)) = cpu.step("alloc_anon_folio", |m| {
        let order = if order > 0 && all_none(m, &anon_range(a, 1)) {
            1
        } else {
            0
        };
        let Some(folio) = m.alloc_pages(order, pfn_hint)? else {
            return Ok(None);
        };
        let pages = anon_range(a, order);
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
            m.set_pte(x, PteVal::Present(PteEntry::new(page, true)));
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

/// `do_read_fault` / `do_shared_fault` on the file mapping: `filemap_fault`
/// finds (or reads in) the page-cache folio and locks it, `finish_fault`
/// maps it under the PTE lock (writable only for a write fault: a shared
/// mapping tracks dirtying), keeping the lookup's reference for the
/// mapping. Returns false to retry the fault.
fn do_read_fault(cpu: &Cpu, a: Uaddr, pfn_hint: Pfn, write: bool) -> KResult<bool> {
    let Some(index) = file_index(cpu, a) else {
        return Ok(true);
    };
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
        m.set_pte(a, PteVal::Present(PteEntry::new(folio, write)));
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

/// The file index a page of the file VMA maps (`linear_page_index`).
fn file_index(cpu: &Cpu, a: Uaddr) -> Option<u32> {
    let vma = cpu.cfg().vmas.find(a.page)?;
    (vma.kind == VmaKind::FileShared).then(|| a.page - vma.start)
}

/// `do_wp_page`: a write to a present, read-only PTE. A shared mapping is
/// made writable (`wp_page_shared`); a private anonymous page is reused
/// when it is exclusive (`wp_can_reuse_anon_folio`), else copied
/// (`wp_page_copy`). Returns false to retry the fault.
fn do_wp_page(cpu: &Cpu, a: Uaddr, orig: PteEntry, kind: VmaKind, pfn_hint: Pfn) -> KResult<bool> {
    let reuse = cpu.step("do_wp_page", |m| {
        if m.pte(a) != Some(PteVal::Present(orig)) {
            ktrace!(m, "{a}: PTE changed meanwhile: retry");
            return Ok(None);
        }
        let exclusive = m.page(orig.pfn)?.test(pg::ANON_EXCLUSIVE);
        if kind == VmaKind::FileShared || exclusive {
            // wp_page_reuse: make it writable and dirty in place.
            m.set_pte(
                a,
                PteVal::Present(PteEntry {
                    write: true,
                    dirty: true,
                    cow: false,
                    ..orig
                }),
            );
            ktrace!(m, "{a}: write fault reuses pfn {}", orig.pfn);
            return Ok(Some(true));
        }
        Ok(Some(false))
    })?;
    match reuse {
        None => Ok(false),
        Some(true) => Ok(true),
        Some(false) => wp_page_copy(cpu, a, orig, pfn_hint),
    }
}

/// `wp_page_copy`: copy the page into a new exclusive anonymous folio and
/// map that instead, flushing the old translation, then drop the old
/// mapping's reference.
fn wp_page_copy(cpu: &Cpu, a: Uaddr, orig: PteEntry, pfn_hint: Pfn) -> KResult<bool> {
    let Some(new) = cpu.step("wp_page_copy", |m| {
        let Some(new) = m.alloc_pages(0, pfn_hint)? else {
            return Ok(None);
        };
        let data = m.frames[orig.pfn as usize].content.clone();
        m.frames[new as usize].content = data;
        let p = m.page_mut(new)?;
        p.flags |= pg::SWAPBACKED;
        p.mapping = Mapping::Anon {
            anon_vma: a.mm,
            index: a.page,
        };
        Ok(Some(new))
    })?
    else {
        return Ok(true);
    };
    let old = cpu.step("wp_page_copy", |m| {
        if m.pte(a) != Some(PteVal::Present(orig)) {
            ktrace!(m, "{a}: PTE changed meanwhile");
            return Ok(None);
        }
        let p = m.page_mut(new)?;
        p.mapcount = 0;
        p.flags |= pg::ANON_EXCLUSIVE | pg::LRU;
        // ptep_clear_flush, then set_pte_at.
        m.flush_tlb_range(a.mm, a.page..a.page + 1);
        m.set_pte(a, PteVal::Present(PteEntry::new(new, true)));
        m.page_mut(orig.pfn)?.mapcount -= 1;
        ktrace!(m, "{a}: pfn {} copied to pfn {new}", orig.pfn);
        Ok(Some(compound_head(m, orig.pfn)?))
    })?;
    match old {
        Some(folio) => folio_put(cpu, folio)?,
        None => folio_put(cpu, new)?,
    }
    Ok(old.is_some())
}

/// `zap_pte_range` (MADV_DONTNEED of one page): clear the PTE under the
/// PTE lock and drop the mapping's reference after the TLB flush
/// (`tlb_finish_mmu`). A migration entry is simply cleared. A PMD leaf is
/// zapped whole (`zap_huge_pmd`), and its deposited PTE table freed.
pub fn zap_pte_range(cpu: &Cpu, a: Uaddr) -> KResult<()> {
    let folio = cpu.step_when(
        "zap_pte_range",
        |m| m.mms[a.mm as usize].mmap_lock.can_read(),
        |m| zap_locked(m, a),
    )?;
    if let Some(folio) = folio {
        folio_put_refs(cpu, folio, 1)?;
    }
    Ok(())
}

/// `zap_pte_range` of one page under the page-table lock: the folio whose
/// mapping reference goes after the flush.
pub fn zap_locked(m: &mut Machine, a: Uaddr) -> Result<Option<Pfn>, Violation> {
    if m.vma(a.page)
        .is_some_and(|v| v.kind == VmaKind::HugetlbShared)
    {
        // madvise_dontneed_free_valid_vma: a hugetlb range must be huge-page
        // aligned; one base page is -EINVAL.
        ktrace!(
            m,
            "{a}: MADV_DONTNEED of one page of a hugetlb VMA: -EINVAL"
        );
        return Ok(None);
    }
    match m.pmd(a) {
        PmdVal::Leaf(leaf) => {
            m.set_pmd(a, PmdVal::None);
            m.flush_tlb_range(a.mm, a.pmd_base()..a.pmd_base() + super::config::PMD_PAGES);
            m.page_mut(leaf.pfn + 1)?.entire_mapcount -= 1;
            if let Some(t) = m.mms[a.mm as usize].withdraw(a.pmd_base()) {
                // zap_deposited_table: GUP-fast may still walk it.
                m.tlb_remove_table(t);
            }
            ktrace!(
                m,
                "{a}: zap_huge_pmd: PMD mapping of pfn {} cleared",
                leaf.pfn
            );
            Ok(Some(leaf.pfn))
        }
        PmdVal::None => Ok(None),
        PmdVal::Table(_) => match m.pte(a) {
            Some(PteVal::Present(e)) => {
                m.set_pte(a, PteVal::None);
                m.page_mut(e.pfn)?.mapcount -= 1;
                m.flush_tlb_range(a.mm, a.page..a.page + 1);
                let folio = compound_head(m, e.pfn)?;
                ktrace!(m, "{a}: PTE for pfn {} cleared", e.pfn);
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

/// What a user access found on its way to memory.
enum Translation {
    /// The access went through.
    Done,
    /// No usable mapping: fault (`write` for a write fault).
    Fault,
}

/// A user load or store at `a`, as the CPU performs it: the TLB, the
/// hardware page-table walk on a miss, the access itself, and the fault
/// path when the mapping is missing or read-only.
pub fn user_access(cpu: &Cpu, a: Uaddr, write: bool) -> KResult<()> {
    let func = if write { "user_store" } else { "user_load" };
    for _ in 0..FAULT_RETRIES {
        let t = cpu.step(func, |m| access_through_tlb(m, a, write))?;
        match t {
            Translation::Done => return Ok(()),
            Translation::Fault => {
                mmap_read_lock(cpu, a.mm)?;
                handle_mm_fault_locked(cpu, a, 0, 0, write)?;
                mmap_read_unlock(cpu, a.mm)?;
            }
        }
    }
    Ok(())
}

/// One access: a TLB hit, or a walk that fills the TLB, then the load or
/// store.
fn access_through_tlb(m: &mut Machine, a: Uaddr, write: bool) -> Result<Translation, Violation> {
    let c = m.cpu_index();
    let entry = match m.cpus[c].user_tlb.lookup(a.mm, a.page) {
        Some(e) if !write || e.write => e,
        _ => {
            // The hardware walker: PUD, PMD, PTE.
            let Some(pmd_table) = m.pmd_table(a) else {
                return Ok(Translation::Fault);
            };
            let (pfn, pte_write, table) = match m.pmd_in(pmd_table, a) {
                PmdVal::Leaf(l) => (l.pfn + a.pmd_offset(), l.write, pmd_table),
                PmdVal::Table(t) => match m.pte_in(t, a) {
                    PteVal::Present(e) => (e.pfn, e.write, t),
                    _ => return Ok(Translation::Fault),
                },
                PmdVal::None => return Ok(Translation::Fault),
            };
            if write && !pte_write {
                return Ok(Translation::Fault);
            }
            let e = UserTlbEntry {
                mm: a.mm,
                page: a.page,
                pfn,
                write: pte_write,
                generation: m.frames[pfn as usize].generation,
                table,
                table_generation: m.frames[table as usize].generation,
            };
            m.cpus[c].user_tlb.fill(e);
            e
        }
    };
    oracle::user_tlb_table_current(m, &entry)?;
    oracle::user_tlb_entry_current(m, &entry)?;
    if write {
        let v = m.ledger.next_value();
        m.frames[entry.pfn as usize].content = Content::Data(v);
        ktrace!(m, "{a}: store {v} to pfn {}", entry.pfn);
    } else {
        ktrace!(
            m,
            "{a}: load {:?} from pfn {}",
            m.frames[entry.pfn as usize].content,
            entry.pfn
        );
    }
    Ok(Translation::Done)
}
