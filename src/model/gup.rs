//! get_user_pages (mm/gup.c): the lockless fast path, the slow path under
//! the PTE lock, and what a caller does with the pages it got.
//!
//! GUP-fast reads the page tables with no lock, takes a reference (or pin)
//! speculatively, then re-reads the PMD and PTE and backs off if either
//! changed: in between, another CPU can see the folio's refcount one too
//! high (seed 003).

use super::KResult;
use super::config::VmaKind;
use super::ctx::Cpu;
use super::hugetlb::{hugetlb_vma_lock_read, hugetlb_vma_unlock_read, hugetlb_walk};
use super::machine::{Content, Hold, Machine, Pfn};
use super::memory::{handle_mm_fault_locked, mmap_read_lock, mmap_read_unlock};
use super::oracle::Violation;
use super::page_flags::{compound_head, folio_nr_pages};
use super::page_ref::{folio_put_refs, folio_ref_add, folio_try_get};
use super::pgtable::{PmdVal, PteVal, Uaddr};
use super::rmap::GUP_PIN_COUNTING_BIAS;
use super::variant::Variant;
use crate::ktrace;

/// `FOLL_GET` or `FOLL_PIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foll {
    Get,
    Pin,
}

/// `get_user_pages_fast` / `pin_user_pages_fast` of one page: GUP-fast,
/// falling back to the slow path (`gup_fast_fallback`). On success the
/// CPU holds the reference or pin.
pub fn gup_fast_fallback(cpu: &Cpu, a: Uaddr, foll: Foll) -> KResult<()> {
    if gup_fast(cpu, a, foll)? {
        return Ok(());
    }
    __get_user_pages(cpu, a, foll)
}

/// What GUP-fast read before taking its reference.
#[derive(Clone, Copy)]
struct Seen {
    /// The PMD table the PUD pointed at (`pmdp` points into it).
    table: Pfn,
    pmd: PmdVal,
    /// The PTE, unless the PMD is a leaf (`gup_fast_pmd_leaf`).
    pte: Option<PteVal>,
    page: Pfn,
    folio: Pfn,
}

/// The lockless walk below the PUD: the PMD entry in the table the PUD
/// pointed at (`pmdp_get_lockless`), then the PTE, then `page_folio`.
fn gup_fast_walk(m: &mut Machine, a: Uaddr, table: Pfn) -> Result<Option<Seen>, Violation> {
    let pmd = m.walk_pmd(a, table)?;
    let (pte, page) = match pmd {
        PmdVal::None => return Ok(None),
        PmdVal::Leaf(l) => (None, l.pfn + a.pmd_offset()),
        PmdVal::Table(t) => match m.walk_pte(t, a)? {
            pte @ PteVal::Present(e) => (Some(pte), e.pfn),
            pte => {
                ktrace!(m, "{a}: ptep_get_lockless = {pte:?}: slow path");
                return Ok(None);
            }
        },
    };
    // try_get_folio(): folio = page_folio(page).
    let folio = compound_head(m, page)?;
    ktrace!(
        m,
        "{a}: pmd {pmd:?}, ptep_get_lockless = {pte:?}; page_folio = pfn {folio}"
    );
    Ok(Some(Seen {
        table,
        pmd,
        pte,
        page,
        folio,
    }))
}

/// `gup_fast` → `gup_fast_pud_range` → `gup_fast_pmd_range` →
/// `gup_fast_pte_range` (or `gup_fast_pmd_leaf`) for one page, between
/// `local_irq_save` and `local_irq_restore`: with interrupts off it is in
/// an RCU read section (which holds `tlb_remove_table` off) and takes no
/// IPI (which holds `tlb_remove_table_sync_one` off). The PUD and the PMD
/// entry are separate loads. Returns whether it got the page.
fn gup_fast(cpu: &Cpu, a: Uaddr, foll: Foll) -> KResult<bool> {
    let table = cpu.step("gup_fast_pud_range", |m| {
        if m.mms[a.mm as usize].exited {
            return Ok(None);
        }
        m.local_irq_save();
        let c = m.cpu_index();
        m.cpus[c].gup_fast_mm = Some(a.mm);
        let t = m.walk_started(a);
        if t.is_none() {
            gup_fast_end(m);
        }
        Ok(t)
    })?;
    let Some(table) = table else {
        return Ok(false);
    };
    let seen = cpu.step("gup_fast_pmd_range", |m| {
        let seen = gup_fast_walk(m, a, table)?;
        if seen.is_none() {
            gup_fast_end(m);
        }
        Ok(seen)
    })?;
    let Some(seen) = seen else {
        return Ok(false);
    };
    if !try_grab_folio_fast(cpu, seen, foll)? {
        cpu.step("local_irq_restore", |m| {
            gup_fast_end(m);
            Ok(())
        })?;
        return Ok(false);
    }
    let cfg = *cpu.cfg();
    let func = match seen.pmd {
        PmdVal::Leaf(_) => "gup_fast_pmd_leaf",
        _ => "gup_fast_pte_range",
    };
    let kept = cpu.step(func, |m| {
        // The recheck reloads through `pmdp`, the pointer into the table
        // the PUD pointed at, not through the PUD again.
        let pmd_ok =
            cfg.has(Variant::GupFastNoPmdRecheck) || m.walk_pmd(a, seen.table)? == seen.pmd;
        let pte_ok = cfg.has(Variant::GupFastNoRecheck)
            || match (seen.pmd, seen.pte) {
                (PmdVal::Table(t), Some(pte)) => m.walk_pte(t, a)? == pte,
                _ => true,
            };
        gup_fast_end(m);
        if !(pmd_ok && pte_ok) {
            ktrace!(
                m,
                "{a}: recheck: pmd {:?}, pte {:?} changed: drop pfn {}",
                m.pmd(a),
                m.pte(a),
                seen.folio
            );
            return Ok(false);
        }
        ktrace!(m, "{a}: recheck passed: keep pfn {}", seen.folio);
        hold(m, seen.folio, seen.page, foll);
        Ok(true)
    })?;
    if !kept {
        gup_put_folio(cpu, seen.folio, foll)?;
    }
    Ok(kept)
}

/// GUP-fast is done with the page tables: `local_irq_restore`.
fn gup_fast_end(m: &mut Machine) {
    let c = m.cpu_index();
    m.cpus[c].gup_fast_mm = None;
    m.local_irq_restore();
}

fn hold(m: &mut Machine, folio: Pfn, page: Pfn, foll: Foll) {
    let c = m.cpu_index();
    m.cpus[c].holds.push(match foll {
        Foll::Get => Hold::GupRef { folio, page },
        Foll::Pin => Hold::GupPin { folio, page },
    });
}

/// `try_grab_folio_fast`: `try_get_folio` (`folio_ref_try_add`, then check
/// the page still belongs to the folio), then for `FOLL_PIN` the rest of
/// the pin: `GUP_PIN_COUNTING_BIAS - 1` more references on a small folio,
/// one `_pincount` on a large one.
fn try_grab_folio_fast(cpu: &Cpu, seen: Seen, foll: Foll) -> KResult<bool> {
    if !folio_try_get(cpu, seen.folio)? {
        return Ok(false);
    }
    let ok = cpu.step("try_grab_folio_fast", |m| {
        if compound_head(m, seen.page)? != seen.folio {
            ktrace!(m, "pfn {} left folio pfn {}", seen.page, seen.folio);
            return Ok(false);
        }
        if foll == Foll::Pin {
            if folio_nr_pages(m, seen.folio)? > 1 {
                m.page_mut(seen.folio + 1)?.pincount += 1;
            } else {
                folio_ref_add(m, seen.folio, GUP_PIN_COUNTING_BIAS - 1)?;
            }
        }
        Ok(true)
    })?;
    if !ok {
        folio_put_refs(cpu, seen.folio, 1)?;
    }
    Ok(ok)
}

/// `gup_put_folio`: undo a reference or pin.
fn gup_put_folio(cpu: &Cpu, folio: Pfn, foll: Foll) -> KResult<()> {
    let refs = match foll {
        Foll::Get => 1,
        Foll::Pin => cpu.step("gup_put_folio", |m| {
            if folio_nr_pages(m, folio)? > 1 {
                m.page_mut(folio + 1)?.pincount -= 1;
                Ok(1)
            } else {
                Ok(GUP_PIN_COUNTING_BIAS)
            }
        })?,
    };
    folio_put_refs(cpu, folio, refs)
}

/// `try_grab_folio`: the slow path's grab, under the PTE lock, where the
/// folio cannot go away.
fn try_grab_folio(m: &mut Machine, folio: Pfn, foll: Foll) -> Result<(), Violation> {
    match foll {
        Foll::Get => folio_ref_add(m, folio, 1),
        Foll::Pin if folio_nr_pages(m, folio)? > 1 => {
            folio_ref_add(m, folio, 1)?;
            m.page_mut(folio + 1)?.pincount += 1;
            Ok(())
        }
        Foll::Pin => folio_ref_add(m, folio, GUP_PIN_COUNTING_BIAS),
    }
}

/// Slow-path attempts: each waits out a migration entry or faults the
/// page in first.
const GUP_SLOW_TRIES: u32 = 3;

/// `__get_user_pages` for one page under `mmap_lock`: `follow_page_pte`
/// (or `follow_huge_pmd`) grabs the folio under the page-table lock; a none
/// PTE or a migration entry goes through `faultin_page`, which waits out
/// the migration, and then it retries.
fn __get_user_pages(cpu: &Cpu, a: Uaddr, foll: Foll) -> KResult<()> {
    mmap_read_lock(cpu, a.mm)?;
    let hugetlb = cpu
        .cfg()
        .vmas
        .find(a.page)
        .is_some_and(|v| v.kind == VmaKind::HugetlbShared);
    for _ in 0..GUP_SLOW_TRIES {
        if hugetlb {
            if follow_hugetlb_page(cpu, a, foll)? {
                break;
            }
            handle_mm_fault_locked(cpu, a, 0, 0, false)?;
            continue;
        }
        let got = cpu.step("follow_page_pte", |m| {
            let page = match m.pmd(a) {
                PmdVal::Leaf(l) => l.pfn + a.pmd_offset(),
                PmdVal::Table(t) => match m.pte_in(t, a) {
                    PteVal::Present(e) => e.pfn,
                    pte => {
                        ktrace!(m, "{a}: {pte:?}: faultin_page");
                        return Ok(false);
                    }
                },
                PmdVal::None => return Ok(false),
            };
            let folio = compound_head(m, page)?;
            try_grab_folio(m, folio, foll)?;
            hold(m, folio, page, foll);
            ktrace!(m, "{a}: grabbed pfn {folio} ({foll:?})");
            Ok(true)
        })?;
        if got {
            break;
        }
        handle_mm_fault_locked(cpu, a, 0, 0, false)?;
    }
    mmap_read_unlock(cpu, a.mm)
}

/// `follow_page_mask` on a hugetlb VMA, under `mmap_lock` for read: since
/// v6.10 (9cb28da54643) the generic walk, between `vma_pgtable_walk_begin`
/// and `_end`, which take the hugetlb VMA lock for read; the PUD
/// (`follow_pud_mask`), the PMD entry (`follow_pmd_mask`), then under the
/// page-table lock the entry again and the grab (`follow_huge_pmd`). With
/// `pmd-walk-without-vma-lock`, as `follow_hugetlb_page` before v6.2
/// (eefc7fa53608), no VMA lock. Returns whether it got the page.
fn follow_hugetlb_page(cpu: &Cpu, a: Uaddr, foll: Foll) -> KResult<bool> {
    let locked = !cpu.cfg().has(Variant::PmdWalkWithoutVmaLock);
    let Some(vma) = cpu.step("follow_page_mask", |m| {
        Ok(m.mms[a.mm as usize].hugetlb_vma(a.page))
    })?
    else {
        return Ok(false);
    };
    if locked {
        hugetlb_vma_lock_read(cpu, a.mm, vma.id)?;
    }
    let mut got = false;
    if let Some(table) = hugetlb_walk(cpu, a, "follow_pud_mask")?
        && let PmdVal::Leaf(_) = cpu.step("follow_pmd_mask", |m| m.walk_pmd(a, table))?
    {
        got = cpu.step_when(
            "follow_huge_pmd",
            |m| m.ptl_free(table),
            |m| {
                let PmdVal::Leaf(l) = m.walk_pmd(a, table)? else {
                    return Ok(false);
                };
                let page = l.pfn + a.pmd_offset();
                let folio = compound_head(m, page)?;
                try_grab_folio(m, folio, foll)?;
                hold(m, folio, page, foll);
                ktrace!(m, "{a}: grabbed hugetlb pfn {folio} ({foll:?})");
                Ok(true)
            },
        )?;
    }
    if locked {
        hugetlb_vma_unlock_read(cpu, a.mm, vma.id)?;
    }
    Ok(got)
}

/// The CPU's most recent GUP reference or pin.
fn last_gup_hold(m: &Machine) -> Option<(usize, Hold)> {
    let c = m.cpu_index();
    m.cpus[c]
        .holds
        .iter()
        .rposition(|h| h.gup_folio().is_some())
        .map(|i| (i, m.cpus[c].holds[i]))
}

/// `memcpy_to_page` through the CPU's most recent GUP reference or pin:
/// a device or the kernel writes user memory it holds (O_DIRECT, RDMA).
/// Each write stores a fresh value.
pub fn memcpy_to_page(cpu: &Cpu) -> KResult<()> {
    cpu.step("memcpy_to_page", |m| {
        let Some((_, h)) = last_gup_hold(m) else {
            return Ok(());
        };
        let (Hold::GupRef { page, .. } | Hold::GupPin { page, .. }) = h else {
            return Ok(());
        };
        let v = m.ledger.next_value();
        m.ledger.pin_writes += 1;
        m.frames[page as usize].content = Content::Data(v);
        ktrace!(m, "write {v} to pfn {page} through {h:?}");
        Ok(())
    })
}

/// `unpin_user_page` (or `put_page` for a `FOLL_GET` reference) of the
/// CPU's most recent GUP hold.
pub fn unpin_user_page(cpu: &Cpu) -> KResult<()> {
    let held = cpu.step("unpin_user_page", |m| {
        let Some((i, h)) = last_gup_hold(m) else {
            return Ok(None);
        };
        let c = m.cpu_index();
        m.cpus[c].holds.remove(i);
        Ok(Some(h))
    })?;
    match held {
        Some(Hold::GupPin { folio, .. }) => gup_put_folio(cpu, folio, Foll::Pin),
        Some(Hold::GupRef { folio, .. }) => gup_put_folio(cpu, folio, Foll::Get),
        _ => Ok(()),
    }
}
