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
use super::memory::{FaultKind, handle_mm_fault_kind, mmap_read_lock, mmap_read_unlock};
use super::mm_types::{Mapping, pg};
use super::oracle::{self, Violation};
use super::page_flags::{compound_head, folio_test_large};
use super::page_ref::{folio_put_refs, folio_ref_add, page_ref_add_unless_then};
use super::pgtable::{PmdVal, PteVal, Uaddr};
use super::rmap::GUP_PIN_COUNTING_BIAS;
use super::variant::Variant;
use crate::ktrace;
use std::cell::Cell;

/// `FOLL_GET` or `FOLL_PIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foll {
    Get,
    Pin,
}

/// `get_user_pages_fast` / `pin_user_pages_fast` of one page: GUP-fast,
/// falling back to the slow path (`gup_fast_fallback`). On success the
/// CPU holds the reference or pin. `write` is `FOLL_WRITE`; the model's
/// pins are all `FOLL_LONGTERM` as vfio and io_uring take them (for
/// anonymous memory the flag changes nothing else: there is no
/// ZONE_MOVABLE or CMA to migrate out of).
pub fn gup_fast_fallback(cpu: &Cpu, a: Uaddr, foll: Foll, write: bool) -> KResult<()> {
    if gup_fast(cpu, a, foll, write)? {
        return Ok(());
    }
    __get_user_pages(cpu, a, foll, write)
}

/// `pin_user_pages` (`__gup_longterm_locked`): the slow path alone.
pub fn pin_user_pages(cpu: &Cpu, a: Uaddr, write: bool) -> KResult<()> {
    __get_user_pages(cpu, a, Foll::Pin, write)
}

/// `gup_must_unshare`: a read-only pin of an anonymous page that may be
/// shared must not pin it: the fault path first gives the process an
/// exclusive page (FAULT_FLAG_UNSHARE, a7f226604170). For a PMD-mapped THP
/// `page` is the head.
fn gup_must_unshare(
    m: &mut Machine,
    foll: Foll,
    write: bool,
    page: Pfn,
) -> Result<bool, Violation> {
    if foll != Foll::Pin || write {
        return Ok(false);
    }
    let folio = compound_head(m, page)?;
    if !matches!(m.page(folio)?.mapping, Mapping::Anon { .. }) {
        return Ok(false);
    }
    Ok(!m.page(page)?.test(pg::ANON_EXCLUSIVE))
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
    /// `pte_write` / `pmd_write` of what it read.
    write_bit: bool,
    /// The page `gup_must_unshare` asks about (a leaf's head).
    unshare_page: Pfn,
    /// `mm->write_protect_seq` as it read it, for a pin.
    seq: Option<u32>,
}

/// `gup_fast` up to `gup_fast_pud_range` (v6.12): the seqcount for a pin,
/// `local_irq_save`, the PGD/P4D/PUD loads. The PMD table the PUD points
/// at, or `None` for the slow path (interrupts on again).
fn gup_fast_pud_range(
    m: &mut Machine,
    a: Uaddr,
    seqcount: bool,
) -> Result<Option<(Pfn, Option<u32>)>, Violation> {
    let mm = &m.mms[a.mm as usize];
    if mm.exited || mm.in_fork {
        return Ok(None);
    }
    let seq = seqcount.then_some(mm.write_protect_seq);
    if seq.is_some_and(|s| s & 1 == 1) {
        ktrace!(m, "{a}: write_protect_seq is odd (fork): slow path");
        return Ok(None);
    }
    m.local_irq_save();
    let c = m.cpu_index();
    m.cpus[c].gup_fast_mm = Some(a.mm);
    let t = m.walk_started(a);
    if t.is_none() {
        gup_fast_end(m);
    }
    Ok(t.map(|t| (t, seq)))
}

/// `gup_fast_pmd_range` (v6.12): `pmdp_get_lockless` of the entry in the
/// table the PUD pointed at; a leaf goes to `gup_fast_pmd_leaf`, which
/// refuses a read-only leaf for `FOLL_WRITE` (`pmd_access_permitted`).
/// `None`: the slow path (interrupts on again).
fn gup_fast_pmd_range(
    m: &mut Machine,
    a: Uaddr,
    table: Pfn,
    write: bool,
) -> Result<Option<PmdVal>, Violation> {
    let pmd = m.walk_pmd(a, table)?;
    ktrace!(m, "{a}: pmdp_get_lockless = {pmd:?}");
    let ok = match pmd {
        PmdVal::None => false,
        PmdVal::Leaf(l) => gup_fast_access_permitted(m, a, write, l.write),
        PmdVal::Table(_) => true,
    };
    if !ok {
        gup_fast_end(m);
    }
    Ok(ok.then_some(pmd))
}

/// `gup_fast_pte_range` (v6.12) up to `try_grab_folio_fast`:
/// `ptep_get_lockless` in the PTE table the PMD pointed at, then
/// `pte_access_permitted` and `pte_page`. The PTE, its page and write bit,
/// or `None`: the slow path (interrupts on again).
fn gup_fast_pte_range(
    m: &mut Machine,
    a: Uaddr,
    ptes: Pfn,
    write: bool,
) -> Result<Option<(PteVal, Pfn, bool)>, Violation> {
    let pte = m.walk_pte(ptes, a)?;
    ktrace!(m, "{a}: ptep_get_lockless = {pte:?}");
    let got = match pte {
        PteVal::Present(e) if gup_fast_access_permitted(m, a, write, e.write) => {
            Some((pte, e.pfn, e.write))
        }
        _ => None,
    };
    if got.is_none() {
        gup_fast_end(m);
    }
    Ok(got)
}

/// `pte_access_permitted` / `pmd_access_permitted`: `FOLL_WRITE` needs
/// the write bit.
fn gup_fast_access_permitted(m: &mut Machine, a: Uaddr, write: bool, write_bit: bool) -> bool {
    if write && !write_bit {
        ktrace!(m, "{a}: FOLL_WRITE on a read-only entry: slow path");
        return false;
    }
    true
}

/// `gup_fast` → `gup_fast_pud_range` → `gup_fast_pmd_range` →
/// `gup_fast_pte_range` (or `gup_fast_pmd_leaf`) for one page, between
/// `local_irq_save` and `local_irq_restore`: with interrupts off it is in
/// an RCU read section (which holds `tlb_remove_table` off) and takes no
/// IPI (which holds `tlb_remove_table_sync_one` off). The PUD, the PMD
/// entry, the PTE and `page_folio` are separate loads (v6.12). Returns
/// whether it got the page.
///
/// A pin first reads `mm->write_protect_seq` (odd: fork is write-protecting
/// the page tables, so leave it to the slow path, which waits for fork's
/// mmap_lock) and at the end backs off if it changed (57efa1fe5957).
fn gup_fast(cpu: &Cpu, a: Uaddr, foll: Foll, write: bool) -> KResult<bool> {
    let cfg = *cpu.cfg();
    let seqcount = foll == Foll::Pin && !cfg.has(Variant::GupFastNoWriteProtectSeq);
    let start = cpu.step("gup_fast_pud_range", |m| gup_fast_pud_range(m, a, seqcount))?;
    let Some((table, seq)) = start else {
        return Ok(false);
    };
    let pmd = cpu.step("gup_fast_pmd_range", |m| {
        gup_fast_pmd_range(m, a, table, write)
    })?;
    let Some(pmd) = pmd else {
        return Ok(false);
    };
    let (pte, page, write_bit, unshare_page) = match pmd {
        PmdVal::Table(ptes) => {
            let got = cpu.step("gup_fast_pte_range", |m| {
                gup_fast_pte_range(m, a, ptes, write)
            })?;
            let Some((pte, page, write_bit)) = got else {
                return Ok(false);
            };
            (Some(pte), page, write_bit, page)
        }
        PmdVal::Leaf(l) => (None, l.pfn + a.pmd_offset(), l.write, l.pfn),
        PmdVal::None => unreachable!("gup_fast_pmd_range took the slow path"),
    };
    let seen = Seen {
        table,
        pmd,
        pte,
        page,
        write_bit,
        unshare_page,
        seq,
    };
    let Some((folio, mapped_at_grab)) = try_grab_folio_fast(cpu, a, table, page, foll)? else {
        cpu.step("local_irq_restore", |m| {
            gup_fast_end(m);
            Ok(())
        })?;
        return Ok(false);
    };
    let func = match seen.pmd {
        PmdVal::Leaf(_) => "gup_fast_pmd_leaf",
        _ => "gup_fast_pte_range",
    };
    let kept = cpu.step(func, |m| {
        gup_fast_recheck(m, a, seen, folio, mapped_at_grab, foll, write)
    })?;
    if !kept {
        gup_put_folio(cpu, folio, foll)?;
    }
    Ok(kept)
}

/// The end of `gup_fast_pte_range` / `gup_fast_pmd_leaf` (v6.12) with
/// `folio` grabbed: reload the PMD (and PTE) and compare, the unshare
/// check, `read_seqcount_retry`, then `local_irq_restore`. Whether the
/// CPU keeps the folio; if not, the caller puts it.
fn gup_fast_recheck(
    m: &mut Machine,
    a: Uaddr,
    seen: Seen,
    folio: Pfn,
    mapped_at_grab: bool,
    foll: Foll,
    write: bool,
) -> Result<bool, Violation> {
    let cfg = m.cfg;
    // The recheck reloads through `pmdp`, the pointer into the table
    // the PUD pointed at, not through the PUD again.
    let pmd_ok = cfg.has(Variant::GupFastNoPmdRecheck) || m.walk_pmd(a, seen.table)? == seen.pmd;
    let pte_ok = cfg.has(Variant::GupFastNoRecheck)
        || match (seen.pmd, seen.pte) {
            (PmdVal::Table(t), Some(pte)) => m.walk_pte(t, a)? == pte,
            _ => true,
        };
    gup_fast_end(m);
    if !(pmd_ok && pte_ok) {
        ktrace!(
            m,
            "{a}: recheck: pmd {:?}, pte {:?} changed: drop pfn {folio}",
            m.pmd(a),
            m.pte(a),
        );
        return Ok(false);
    }
    if !seen.write_bit && gup_must_unshare(m, foll, write, seen.unshare_page)? {
        ktrace!(
            m,
            "{a}: R/O pin of a maybe-shared anon page: slow path unshares"
        );
        return Ok(false);
    }
    // read_seqcount_retry(&mm->write_protect_seq, seq)
    if seen
        .seq
        .is_some_and(|s| s != m.mms[a.mm as usize].write_protect_seq)
    {
        ktrace!(m, "{a}: write_protect_seq changed (fork): unpin, slow path");
        return Ok(false);
    }
    ktrace!(m, "{a}: recheck passed: keep pfn {folio}");
    let got = Got {
        table: seen.table,
        folio,
        page: seen.page,
        mapped_at_grab,
    };
    hold(m, a, got, foll, write)?;
    Ok(true)
}

/// GUP-fast is done with the page tables: `local_irq_restore`.
fn gup_fast_end(m: &mut Machine) {
    let c = m.cpu_index();
    m.cpus[c].gup_fast_mm = None;
    m.local_irq_restore();
}

/// What GUP returns for an address: the page, its folio, the PMD table it
/// walked, and whether that entry mapped the page when the reference was
/// taken (always, for the slow path under the page-table lock).
struct Got {
    table: Pfn,
    folio: Pfn,
    page: Pfn,
    mapped_at_grab: bool,
}

/// The CPU's task keeps what GUP got at `a`; the ledger follows it.
fn hold(m: &mut Machine, a: Uaddr, got: Got, foll: Foll, write: bool) -> Result<(), Violation> {
    let Got { folio, page, .. } = got;
    oracle::gup_page_is_current(m, a, got.table, page, folio, got.mapped_at_grab)?;
    let anon = m.anon_vma_covers(a);
    m.cover_page(
        "gup hold",
        page,
        (foll == Foll::Pin) as u64 | (write as u64) << 1 | (anon as u64) << 2,
    );
    // As the page tables record it (a PTE in a table khugepaged detached
    // still maps its page; a migration entry for the page keeps its place
    // until migration ends, the same page again or the new one).
    let migrating = matches!(m.pte(a), Some(PteVal::Migration { pfn, .. }) if pfn == page)
        || m.ledger.cleared.iter().any(|e| e.a == a && e.pfn == page);
    let mapped = migrating
        || m.ledger.maps.iter().any(|e| {
            e.a.mm == a.mm
                && if e.leaf {
                    e.a.page == a.pmd_base() && e.pfn + a.pmd_offset() == page
                } else {
                    e.a == a && e.pfn == page
                }
        });
    let id = m
        .ledger
        .hold_taken(a, page, foll == Foll::Pin, write, anon, mapped);
    m.ledger.touch(folio);
    let c = m.cpu_index();
    m.cpus[c].holds.push(match foll {
        Foll::Get => Hold::GupRef { folio, page, id },
        Foll::Pin => Hold::GupPin {
            folio,
            page,
            write,
            id,
        },
    });
    Ok(())
}

/// `try_grab_folio_fast` (v6.12): `try_get_folio` (`folio =
/// page_folio(page)`, its own load of `compound_head`; `folio_ref_try_add`;
/// then check the page still belongs to the folio), then for `FOLL_PIN` the
/// rest of the pin: `GUP_PIN_COUNTING_BIAS - 1` more references on a small
/// folio, one `_pincount` on a large one. The folio, or `None` with nothing
/// held. Where the kernel retries a page that left its folio, the model
/// backs off to the slow path.
fn try_grab_folio_fast(cpu: &Cpu, a: Uaddr, table: Pfn, page: Pfn, foll: Foll) -> KResult<Grab> {
    let folio = cpu.step("try_get_folio", |m| {
        let folio = compound_head(m, page)?;
        ktrace!(m, "page_folio(pfn {page}) = pfn {folio}");
        Ok(folio)
    })?;
    let mapped_at_grab = Cell::new(false);
    let record = |m: &Machine| mapped_at_grab.set(oracle::gup_entry_maps(m, a, table, page));
    if !page_ref_add_unless_then(cpu, folio, 1, 0, &record)? {
        return Ok(None);
    }
    let ok = cpu.step("try_grab_folio_fast", |m| {
        if compound_head(m, page)? != folio {
            ktrace!(m, "pfn {page} left folio pfn {folio}");
            return Ok(false);
        }
        if foll == Foll::Pin {
            if folio_test_large(m, folio)? {
                m.page_mut(folio + 1)?.pincount += 1;
            } else {
                folio_ref_add(m, folio, GUP_PIN_COUNTING_BIAS - 1)?;
            }
        }
        Ok(true)
    })?;
    if !ok {
        folio_put_refs(cpu, folio, 1)?;
    }
    Ok(ok.then_some((folio, mapped_at_grab.get())))
}

/// The folio `try_grab_folio_fast` grabbed, and whether the entry GUP-fast
/// walked still mapped the page when the reference landed.
type Grab = Option<(Pfn, bool)>;

/// `gup_put_folio`: undo a reference or pin.
fn gup_put_folio(cpu: &Cpu, folio: Pfn, foll: Foll) -> KResult<()> {
    let refs = match foll {
        Foll::Get => 1,
        Foll::Pin => cpu.step("gup_put_folio", |m| {
            if folio_test_large(m, folio)? {
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
        Foll::Pin if folio_test_large(m, folio)? => {
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

/// What `follow_page_mask` found.
enum Follow {
    Got,
    /// No VMA, or `FOLL_WRITE` on a read-only one (`check_vma_flags`).
    Efault,
    /// Fault it in first (`faultin_page`) with this kind.
    Fault(FaultKind),
}

/// `__get_user_pages` for one page under `mmap_lock`: `follow_page_pte`
/// (or `follow_huge_pmd`) grabs the folio under the page-table lock; a none
/// PTE, a migration entry, `FOLL_WRITE` on a read-only entry or a
/// read-only pin of a maybe-shared anon page (-EMLINK: unshare) goes
/// through `faultin_page`, and then it retries.
fn __get_user_pages(cpu: &Cpu, a: Uaddr, foll: Foll, write: bool) -> KResult<()> {
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
            handle_mm_fault_kind(cpu, a, 0, 0, FaultKind::Read)?;
            continue;
        }
        let got = cpu.step_when(
            "follow_page_pte",
            |m| m.pte_lock_free(a),
            |m| {
                let vm = m.vm_page(a);
                if !vm.mapped || (write && !vm.write) {
                    ktrace!(m, "{a}: no VMA, or FOLL_WRITE on a read-only one: -EFAULT");
                    return Ok(Follow::Efault);
                }
                let kind = if write {
                    FaultKind::Write
                } else {
                    FaultKind::Read
                };
                let (page, write_bit, unshare_page) = match m.pmd(a) {
                    PmdVal::Leaf(l) => (l.pfn + a.pmd_offset(), l.write, l.pfn),
                    PmdVal::Table(t) => match m.pte_in(t, a) {
                        PteVal::Present(e) => (e.pfn, e.write, e.pfn),
                        pte => {
                            ktrace!(m, "{a}: {pte:?}: faultin_page");
                            return Ok(Follow::Fault(kind));
                        }
                    },
                    PmdVal::None => return Ok(Follow::Fault(kind)),
                };
                if write && !write_bit {
                    ktrace!(m, "{a}: FOLL_WRITE on a read-only entry: faultin_page");
                    return Ok(Follow::Fault(FaultKind::Write));
                }
                if !write_bit && gup_must_unshare(m, foll, write, unshare_page)? {
                    ktrace!(
                        m,
                        "{a}: R/O pin of a maybe-shared anon page: -EMLINK, unshare"
                    );
                    return Ok(Follow::Fault(FaultKind::Unshare));
                }
                let folio = compound_head(m, page)?;
                try_grab_folio(m, folio, foll)?;
                let got = Got {
                    table: m.pmd_table(a).expect("follow_page_pte found a PMD entry"),
                    folio,
                    page,
                    mapped_at_grab: true,
                };
                hold(m, a, got, foll, write)?;
                ktrace!(m, "{a}: grabbed pfn {folio} ({foll:?})");
                Ok(Follow::Got)
            },
        )?;
        match got {
            Follow::Got | Follow::Efault => break,
            Follow::Fault(kind) => handle_mm_fault_kind(cpu, a, 0, 0, kind)?,
        }
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
                let got = Got {
                    table,
                    folio,
                    page,
                    mapped_at_grab: true,
                };
                hold(m, a, got, foll, false)?;
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

/// The CPU's most recent `FOLL_PIN | FOLL_WRITE` pin.
fn last_write_pin(m: &Machine) -> Option<Hold> {
    let c = m.cpu_index();
    m.cpus[c]
        .holds
        .iter()
        .rev()
        .find(|h| matches!(h, Hold::GupPin { write: true, .. }))
        .copied()
}

/// `memcpy_to_page` through the CPU's most recent writable pin: a device
/// or the kernel writes user memory it pinned for writing (RDMA, vfio,
/// io_uring fixed buffers). Each write stores a fresh value, written by the
/// process that pinned.
pub fn memcpy_to_page(cpu: &Cpu) -> KResult<()> {
    cpu.step("memcpy_to_page", |m| {
        let Some(h @ Hold::GupPin { page, id, .. }) = last_write_pin(m) else {
            return Ok(());
        };
        let Some(rec) = m.ledger.hold(id).copied() else {
            return Ok(());
        };
        let v = m.ledger.write_value(rec.pid);
        m.ledger.pin_writes += 1;
        if m.ledger.forks > 0 {
            m.ledger.pin_write_after_fork = true;
        }
        match rec.at {
            Some(a) => m.ledger.set_view(a, v),
            // Every detached hold of the page sees it.
            None => m
                .ledger
                .holds
                .iter_mut()
                .filter(|r| r.at.is_none() && r.page == page)
                .for_each(|r| r.frozen = v),
        }
        m.frames[page as usize].content = Content::Data(v);
        ktrace!(m, "write {v} to pfn {page} through {h:?}");
        Ok(())
    })
}

/// `memcpy_from_page` through the CPU's most recent GUP reference or pin:
/// the pipe reading what vmsplice() took (`FOLL_GET`), or a device reading
/// through its pin. What it reads is checked against what the holder
/// should see.
pub fn memcpy_from_page(cpu: &Cpu) -> KResult<()> {
    cpu.step("memcpy_from_page", |m| {
        let Some((_, h)) = last_gup_hold(m) else {
            return Ok(());
        };
        let (Hold::GupRef { page, id, .. } | Hold::GupPin { page, id, .. }) = h else {
            return Ok(());
        };
        ktrace!(
            m,
            "read {:?} from pfn {page} through {h:?}",
            m.frames[page as usize].content
        );
        if let Some(r) = m.ledger.hold(id).copied() {
            let bits = r.pin as u64 | (r.at.is_some() as u64) << 1 | (r.anon as u64) << 2;
            m.cover_page("memcpy_from_page", page, bits);
        }
        oracle::hold_read_sees(m, id, page)
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
        if let Hold::GupRef { id, folio, .. } | Hold::GupPin { id, folio, .. } = h {
            m.ledger.hold_dropped(id);
            m.ledger.touch(folio);
        }
        Ok(Some(h))
    })?;
    match held {
        Some(Hold::GupPin { folio, .. }) => gup_put_folio(cpu, folio, Foll::Pin),
        Some(Hold::GupRef { folio, .. }) => gup_put_folio(cpu, folio, Foll::Get),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::Arch;
    use crate::model::fork::dup_mmap;
    use crate::model::memory::{user_access, zap_pte_range};
    use crate::model::rmap::{
        Cleared, Unmapped, Walk, folio_try_share_anon_rmap_pte, remove_migration_ptes,
        set_migration_entry, try_to_migrate_one_start,
    };
    use crate::model::testing::Kernel;

    const ANON: u8 = 2;

    fn pinned(k: &Kernel) -> (Pfn, bool) {
        match k.m.cpus[0].holds.last() {
            Some(&Hold::GupPin { page, write, .. }) => (page, write),
            h => panic!("no pin: {h:?}"),
        }
    }

    #[test]
    fn a_read_only_pin_of_a_shared_page_unshares_it_first() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        k.on(0, |cpu| dup_mmap(cpu, 0, 1)).unwrap();
        let shared = k.m.pte(a).and_then(PteVal::present_pfn).unwrap();

        k.on(0, |cpu| pin_user_pages(cpu, a, false)).unwrap();

        let (page, write) = pinned(&k);
        assert!(!write);
        assert_ne!(page, shared, "the parent got its own copy");
        let Some(PteVal::Present(e)) = k.m.pte(a) else {
            unreachable!()
        };
        assert_eq!((e.pfn, e.write), (page, false), "mapped read-only");
        assert!(k.m.peek(page).test(pg::ANON_EXCLUSIVE));
        assert!(k.m.ledger.unshared);
        k.quiesce().unwrap();
    }

    #[test]
    fn foll_write_on_a_read_only_pte_takes_a_write_fault_first() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        k.on(0, |cpu| dup_mmap(cpu, 0, 1)).unwrap();

        k.on(0, |cpu| gup_fast_fallback(cpu, a, Foll::Pin, true))
            .unwrap();

        let (page, _) = pinned(&k);
        let Some(PteVal::Present(e)) = k.m.pte(a) else {
            unreachable!()
        };
        assert_eq!((e.pfn, e.write), (page, true));
        k.quiesce().unwrap();
    }

    #[test]
    fn gup_fast_leaves_a_pin_to_the_slow_path_while_fork_write_protects() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        k.m.mms[0].write_protect_seq = 1;
        k.trace_on();

        k.on(1, |cpu| gup_fast(cpu, a, Foll::Pin, true)).unwrap();

        assert!(
            k.take_trace()
                .iter()
                .any(|l| l.contains("write_protect_seq is odd"))
        );
        assert!(k.m.cpus[1].holds.is_empty());
    }

    /// CPU 1's GUP-fast of `a` (`FOLL_GET`) up to its PTE load, interrupts
    /// off: what it read.
    fn gup_fast_to_pte_load(k: &mut Kernel, a: Uaddr) -> Seen {
        gup_fast_to_pte_load_for(k, a, Foll::Get, false)
    }

    /// The same for `foll` and `FOLL_WRITE` = `write`.
    fn gup_fast_to_pte_load_for(k: &mut Kernel, a: Uaddr, foll: Foll, write: bool) -> Seen {
        let (table, seq) = k
            .step(1, |m| gup_fast_pud_range(m, a, foll == Foll::Pin))
            .unwrap()
            .unwrap();
        let pmd = k
            .step(1, |m| gup_fast_pmd_range(m, a, table, write))
            .unwrap()
            .unwrap();
        let PmdVal::Table(ptes) = pmd else {
            panic!("the fault left a PTE table");
        };
        let (pte, page, write_bit) = k
            .step(1, |m| gup_fast_pte_range(m, a, ptes, write))
            .unwrap()
            .unwrap();
        Seen {
            table,
            pmd,
            pte: Some(pte),
            page,
            write_bit,
            unshare_page: page,
            seq,
        }
    }

    /// CPU 1's `try_grab_folio_fast` of `page`, as GUP-fast walked to it.
    fn grab(k: &mut Kernel, a: Uaddr, seen: &Seen, page: Pfn, foll: Foll) -> Grab {
        k.on(1, |cpu| try_grab_folio_fast(cpu, a, seen.table, page, foll))
            .unwrap()
    }

    /// CPU 1's recheck of what it grabbed: whether it keeps it.
    fn recheck(
        k: &mut Kernel,
        a: Uaddr,
        seen: Seen,
        (folio, mapped_at_grab): (Pfn, bool),
        foll: Foll,
        write: bool,
    ) -> bool {
        k.step(1, |m| {
            gup_fast_recheck(m, a, seen, folio, mapped_at_grab, foll, write)
        })
        .unwrap()
    }

    /// CPU 0's `try_to_migrate_one` of the anon page at `a` up to its
    /// `ptep_clear_flush` (step 1, the PTE lock held).
    fn migration_clears_the_pte(k: &mut Kernel, a: Uaddr) -> (Pfn, Walk, Cleared, Unmapped) {
        let folio = k.m.pte(a).and_then(PteVal::present_pfn).unwrap();
        let mapping = k.m.peek(folio).mapping;
        // folio_isolate_lru's reference.
        k.step(0, |m| crate::model::page_ref::folio_get(m, folio))
            .unwrap();
        let mut out = Unmapped::default();
        let (walk, c) = k
            .step(0, |m| {
                try_to_migrate_one_start(m, folio, mapping, 1, 0, &mut out)
            })
            .unwrap()
            .expect("the walk finds the VMA");
        let c = c.expect("its PTE maps the folio");
        assert!(c.exclusive);
        assert_eq!(k.m.pte(a), Some(PteVal::None));
        (folio, walk, c, out)
    }

    /// Why `gup-fast-no-recheck` is an arm64 bug: on x86 the flush IPI
    /// of `ptep_clear_flush` waits for the GUP-fast that read the PTE
    /// before the clear (interrupts off), so its pin, kept even without
    /// the recheck, is there when migration checks (A2): -EBUSY.
    #[test]
    fn on_x86_the_flush_ipi_waits_out_gup_fast_and_migration_sees_its_pin() {
        let mut k = Kernel::builder()
            .variant(Variant::GupFastNoRecheck)
            .config(|c| c.arch = Arch::X86)
            .boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        let seen = gup_fast_to_pte_load_for(&mut k, a, Foll::Pin, true);
        let (folio, walk, c, mut out) = migration_clears_the_pte(&mut k, a);
        assert_eq!(c.wait, [(1, k.m.cpus[1].irq_sections)]);
        assert!(!k.m.ipis_delivered(&c.wait), "CPU 1 has interrupts off");

        // CPU 1 pins, keeps it (no recheck) and enables interrupts.
        let got = grab(&mut k, a, &seen, seen.page, Foll::Pin);
        let (got, mapped_at_grab) = got.expect("the folio takes the pin");
        assert!(mapped_at_grab, "a PTE migration cleared still maps it");
        let kept = recheck(&mut k, a, seen, (got, mapped_at_grab), Foll::Pin, true);
        assert!(kept);
        assert!(k.m.ipis_delivered(&c.wait), "CPU 1 took the IPI");

        let shared = k
            .step(0, |m| {
                folio_try_share_anon_rmap_pte(m, folio, &walk, &c, &mut out)
            })
            .unwrap();

        assert!(!shared && out.refused && out.still_mapped);
        assert_eq!(k.m.pte(a), seen.pte, "set_pte_at(pteval) restored it");
        assert!(k.m.peek(folio).test(pg::ANON_EXCLUSIVE));
        assert!(k.m.pte_lock_free(a));
        k.on(1, unpin_user_page).unwrap();
        k.on(0, |cpu| crate::model::page_ref::folio_put(cpu, folio))
            .unwrap();
        k.quiesce().unwrap();
    }

    /// On arm64 nothing waits: a GUP-fast that read the PTE before the
    /// clear pins (B3) in the window before migration's check (A2); its
    /// recheck (B4) finds the PTE cleared and drops the pin, and migration
    /// then shares the page and stores the migration entry.
    #[test]
    fn on_arm64_a_pin_between_the_clear_and_the_check_is_dropped_by_the_recheck() {
        let mut k = Kernel::builder().config(|c| c.arch = Arch::Arm64).boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        let seen = gup_fast_to_pte_load_for(&mut k, a, Foll::Pin, true);
        let (folio, walk, c, mut out) = migration_clears_the_pte(&mut k, a);
        assert!(c.wait.is_empty(), "arm64's TLBI waits for no CPU");

        let got = grab(&mut k, a, &seen, seen.page, Foll::Pin);
        let (got, mapped_at_grab) = got.expect("the folio takes the pin");
        assert!(mapped_at_grab, "a PTE migration cleared still maps it");
        let kept = recheck(&mut k, a, seen, (got, mapped_at_grab), Foll::Pin, true);
        assert!(!kept, "the recheck sees the cleared PTE");
        k.on(1, |cpu| gup_put_folio(cpu, got, Foll::Pin)).unwrap();

        let shared = k
            .step(0, |m| {
                folio_try_share_anon_rmap_pte(m, folio, &walk, &c, &mut out)
            })
            .unwrap();
        assert!(shared);
        assert!(!k.m.peek(folio).test(pg::ANON_EXCLUSIVE));
        let done = k
            .step(0, |m| set_migration_entry(m, folio, &walk, &c, &mut out))
            .unwrap();

        assert_eq!(done, Err(false), "the folio is unmapped");
        assert!(matches!(
            k.m.pte(a),
            Some(PteVal::Migration { pfn, exclusive: true, write: true }) if pfn == folio
        ));
        assert!(k.m.cpus[1].holds.is_empty());
        assert!(k.m.pte_lock_free(a));
        let mapping = k.m.peek(folio).mapping;
        k.on(0, |cpu| {
            remove_migration_ptes(
                cpu,
                folio,
                folio,
                std::slice::from_ref(&walk.section),
                mapping,
            )?;
            crate::model::page_ref::folio_put(cpu, folio)
        })
        .unwrap();
        k.quiesce().unwrap();
    }

    #[test]
    fn a_page_freed_between_the_pte_load_and_page_folio_fails_the_try_get() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        let seen = gup_fast_to_pte_load(&mut k, a);
        let page = seen.page;

        k.on(0, |cpu| zap_pte_range(cpu, a)).unwrap();
        assert_eq!(k.m.peek(page).refcount, 0, "zap freed the page");

        let got = grab(&mut k, a, &seen, page, Foll::Get);

        assert_eq!(got, None);
        assert_eq!(k.m.peek(page).refcount, 0);
        k.step(1, |m| {
            gup_fast_end(m);
            Ok(())
        })
        .unwrap();
        k.quiesce().unwrap();
    }

    #[test]
    fn a_page_reused_between_the_pte_load_and_page_folio_is_dropped_by_the_recheck() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        let seen = gup_fast_to_pte_load(&mut k, a);

        // CPU 0 unmaps the page; a fault elsewhere reuses the frame.
        let b = Uaddr::new(0, ANON + 1);
        k.on(0, |cpu| zap_pte_range(cpu, a)).unwrap();
        k.on(0, |cpu| user_access(cpu, b, true)).unwrap();
        assert_eq!(k.m.pte(b).and_then(PteVal::present_pfn), Some(seen.page));
        let got = grab(&mut k, a, &seen, seen.page, Foll::Get);
        let (folio, mapped_at_grab) = got.expect("the reused page's folio takes the reference");
        assert!(!mapped_at_grab, "a now maps nothing");
        let refs = k.m.peek(folio).refcount;

        let kept = recheck(&mut k, a, seen, (folio, mapped_at_grab), Foll::Get, false);

        assert!(!kept, "the PTE changed since the load");
        assert!(k.m.cpus[1].holds.is_empty());
        k.on(1, |cpu| gup_put_folio(cpu, folio, Foll::Get)).unwrap();
        assert_eq!(k.m.peek(folio).refcount, refs - 1);
        k.quiesce().unwrap();
    }

    #[test]
    fn gup_returning_a_page_unmapped_before_its_grab_trips_lookup_current() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        let seen = gup_fast_to_pte_load(&mut k, a);
        let (page, table) = (seen.page, seen.table);
        k.m.peek_mut(page).refcount += 1; // someone else keeps the page alive
        k.on(0, |cpu| zap_pte_range(cpu, a)).unwrap();

        let err = oracle::gup_page_is_current(&k.m, a, table, page, page, false).unwrap_err();

        assert_eq!(err.oracle, oracle::Oracle::LookupCurrent);
        // Unmapped after the reference landed: GUP, then munmap.
        assert!(oracle::gup_page_is_current(&k.m, a, table, page, page, true).is_ok());
    }

    #[test]
    fn gup_fast_keeps_a_page_that_is_still_mapped_at_the_recheck() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        let seen = gup_fast_to_pte_load(&mut k, a);
        let got = grab(&mut k, a, &seen, seen.page, Foll::Get);
        let (folio, mapped_at_grab) = got.expect("a mapped page takes the reference");
        assert!(mapped_at_grab);

        let kept = recheck(&mut k, a, seen, (folio, mapped_at_grab), Foll::Get, false);

        assert!(kept);
        assert_eq!(k.m.cpus[1].holds.len(), 1);
    }
}
