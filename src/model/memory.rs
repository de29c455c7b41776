//! Page faults, zapping, and user loads and stores (mm/memory.c).
//!
//! A fault, a zap and the GUP slow path hold `mmap_lock` for read;
//! khugepaged holds it for write. Each PTE-lock section is one step, which
//! waits while `try_to_migrate_one` holds the lock across its steps
//! (`Machine::pte_lock_free`). A user
//! access goes through the CPU's user TLB; on a miss the hardware walks the
//! page tables, and a missing or read-only mapping enters the fault path.

use super::KResult;
use super::config::{CowDesign, VmaKind};
use super::ctx::Cpu;
use super::filemap::{filemap_add_folio, filemap_get_entry, folio_lock_then, folio_unlock};
use super::huge_memory::{self, HugeWp};
use super::machine::{Content, Machine, Pfn};
use super::mm_types::{Mapping, pg};
use super::oracle::{self, Violation};
use super::page_alloc::alloc_pages_then;
use super::page_flags::{compound_head, folio_nr_pages};
use super::page_ref::{folio_put, folio_put_refs};
use super::pgtable::{PmdLeaf, PmdVal, PteEntry, PteVal, Uaddr, UserTlbEntry};
use super::variant::Variant;
use crate::ktrace;

/// `mmap_read_lock(mm)`.
pub fn mmap_read_lock(cpu: &Cpu, mm: u8) -> KResult<()> {
    cpu.step_when(
        "mmap_read_lock",
        |m| m.mms[mm as usize].mmap_lock.can_read(),
        |m| {
            super::oracle::might_sleep(m, "mmap_read_lock")?;
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
            super::oracle::might_sleep(m, "mmap_read_lock")?;
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
            super::oracle::might_sleep(m, "mmap_write_lock")?;
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
    let kind = if write {
        FaultKind::Write
    } else {
        FaultKind::Read
    };
    handle_mm_fault_kind(cpu, a, pfn_hint, order, kind)
}

/// What a fault asks for: `FAULT_FLAG_WRITE`, `FAULT_FLAG_UNSHARE` (GUP's
/// read-only pin of an anonymous page that may be shared wants an
/// exclusive one, a7f226604170), or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Read,
    Write,
    Unshare,
}

/// What `__handle_mm_fault` found before handling the fault.
enum Found {
    /// No VMA (munmap'd) or a write to a read-only one: SIGSEGV.
    Segv,
    /// A page table could not be allocated.
    Oom,
    /// An anonymous THP mapped by a PMD.
    HugePmd(PmdLeaf),
    Pte(PteVal),
}

/// `handle_mm_fault` of `kind` with `mmap_lock` already held.
pub fn handle_mm_fault_kind(
    cpu: &Cpu,
    a: Uaddr,
    pfn_hint: Pfn,
    order: u8,
    kind: FaultKind,
) -> KResult<()> {
    let Some(vma) = cpu.cfg().vmas.find(a.page) else {
        return Ok(());
    };
    if vma.kind == VmaKind::HugetlbShared {
        return super::hugetlb::hugetlb_fault(cpu, a, vma, kind == FaultKind::Write);
    }
    let anon = vma.kind == VmaKind::AnonPrivate;
    for _ in 0..FAULT_RETRIES {
        // lock_vma_under_rcu / find_vma, then __handle_mm_fault: pud_alloc,
        // pmd_alloc, a PMD leaf to wp_huge_pmd, and (for a PTE fault)
        // pte_alloc before handle_pte_fault looks at the entry.
        let found = cpu.step("handle_pte_fault", |m| {
            let vm = m.vm_page(a);
            if m.mms[a.mm as usize].exited || !vm.mapped || (kind == FaultKind::Write && !vm.write)
            {
                ktrace!(m, "{a}: no VMA, or not writable: SIGSEGV");
                return Ok(Found::Segv);
            }
            if let (true, PmdVal::Leaf(l)) = (anon, m.pmd(a)) {
                return Ok(Found::HugePmd(l));
            }
            if !m.pte_alloc(a)? {
                ktrace!(m, "{a}: no page table: VM_FAULT_OOM");
                return Ok(Found::Oom);
            }
            let pte = m.pte(a).expect("pte_alloc made a PTE table");
            ktrace!(m, "{a}: pmd {:?}, pte {pte:?}", m.pmd(a));
            Ok(Found::Pte(pte))
        })?;
        let wants_wp = |write_bit: bool| !write_bit && kind != FaultKind::Read;
        match (found, vma.kind) {
            (Found::Segv | Found::Oom, _) => return Ok(()),
            (Found::HugePmd(l), _) => {
                if !wants_wp(l.write) {
                    return Ok(());
                }
                match huge_memory::do_huge_pmd_wp_page(cpu, a, l, kind == FaultKind::Unshare)? {
                    HugeWp::Done => return Ok(()),
                    // Retry, at the PTE level after a fallback split.
                    HugeWp::Retry | HugeWp::Fallback => {}
                }
            }
            (Found::Pte(PteVal::None), VmaKind::AnonPrivate) => {
                return do_anonymous_page(cpu, a, pfn_hint, order);
            }
            (Found::Pte(PteVal::None), VmaKind::FileShared) => {
                if do_read_fault(cpu, a, pfn_hint, kind == FaultKind::Write)? {
                    return Ok(());
                }
            }
            (Found::Pte(PteVal::Migration { pfn, .. }), _) => migration_entry_wait(cpu, a, pfn)?,
            (Found::Pte(PteVal::Present(e)), _)
                if wants_wp(e.write) && (kind == FaultKind::Write || anon) =>
            {
                if do_wp_page(cpu, a, e, vma.kind, pfn_hint, kind == FaultKind::Unshare)? {
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
        |m| !entry(m) && m.pte_lock_free(a),
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

/// Do the pages `r` lie in one anonymous VMA of their process, with
/// consecutive offsets (`thp_vma_suitable_order`: a large folio never
/// straddles VMAs)?
pub fn one_anon_vma(m: &Machine, r: &[Uaddr]) -> bool {
    r.iter().all(|&x| m.anon_vma_covers(x))
        && r.windows(2)
            .all(|w| m.vm_page(w[1]).pgoff == m.vm_page(w[0]).pgoff + 1)
}

/// The anonymous mapping a new folio at `a` gets (`__folio_set_anon`): the
/// process's own anon_vma, at the VMA's offset for `a`.
pub fn new_anon_mapping(m: &Machine, a: Uaddr) -> Mapping {
    Mapping::Anon {
        anon_vma: m.mms[a.mm as usize].anon_vma,
        index: m.vm_page(a).pgoff as u32,
    }
}

/// `do_anonymous_page`: allocate a zeroed folio (`alloc_anon_folio`: an
/// mTHP of `order` if its whole range is still none) and map it writable
/// under the PTE lock; a racing fault that got there first wins.
fn do_anonymous_page(cpu: &Cpu, a: Uaddr, pfn_hint: Pfn, order: u8) -> KResult<()> {
    let all_none = |m: &Machine, r: &[Uaddr]| r.iter().all(|&x| m.pte(x) == Some(PteVal::None));
    let alloc = |m: &mut Machine| {
        let range = anon_range(a, 1);
        let order = if order > 0 && one_anon_vma(m, &range) && all_none(m, &range) {
            1
        } else {
            0
        };
        Ok(Some((order, pfn_hint)))
    };
    let Some((folio, pages)) = alloc_pages_then(
        cpu,
        "alloc_anon_folio",
        "alloc_anon_folio",
        alloc,
        |m, folio, order| {
            let pages = anon_range(a, order);
            let mapping = new_anon_mapping(m, pages[0]);
            let p = m.page_mut(folio)?;
            p.flags |= pg::SWAPBACKED;
            p.mapping = mapping;
            Ok((folio, pages))
        },
    )?
    .flatten() else {
        return Ok(());
    };
    let mapped = cpu.step_when(
        "set_pte_range",
        |m| m.pte_locks_free(&pages),
        |m| {
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
        },
    )?;
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
            m.folio_clear_locked(folio, "folio_unlock")?;
        }
        Ok(ours)
    })?;
    if !ours {
        folio_put(cpu, folio)?;
        return Ok(false);
    }
    let mapped = cpu.step_when(
        "finish_fault",
        |m| m.pte_lock_free(a),
        |m| {
            if m.pte(a) != Some(PteVal::None) {
                ktrace!(m, "{a}: PTE populated meanwhile");
                return Ok(false);
            }
            crate::model::oracle::lookup_is_current(m, index, folio, "finish_fault")?;
            m.set_pte(a, PteVal::Present(PteEntry::new(folio, write)));
            m.page_mut(folio)?.mapcount += 1;
            ktrace!(m, "{a}: mapped page-cache pfn {folio}");
            Ok(true)
        },
    )?;
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

/// `do_wp_page`: a write (or, with `unshare`, GUP's unshare request) to a
/// present, read-only PTE. A shared mapping is made writable
/// (`wp_page_shared`); a private anonymous page is reused when it is
/// exclusive or the design's rule says nobody else can see it
/// ([`can_reuse_anon`]), else copied (`wp_page_copy`). Reuse marks the page
/// PageAnonExclusive; an unshare leaves the PTE read-only. Returns false
/// to retry the fault.
fn do_wp_page(
    cpu: &Cpu,
    a: Uaddr,
    orig: PteEntry,
    kind: VmaKind,
    pfn_hint: Pfn,
    unshare: bool,
) -> KResult<bool> {
    let reuse = cpu.step_when(
        "do_wp_page",
        |m| m.pte_lock_free(a),
        |m| {
            if m.pte(a) != Some(PteVal::Present(orig)) {
                ktrace!(m, "{a}: PTE changed meanwhile: retry");
                return Ok(None);
            }
            let reuse = kind == VmaKind::FileShared || can_reuse_anon(m, a, orig.pfn, unshare)?;
            if !reuse {
                // folio_get: the copy holds the old folio while the PTE lock
                // is dropped.
                let folio = compound_head(m, orig.pfn)?;
                super::page_ref::folio_get(m, folio)?;
                return Ok(Some(Some(folio)));
            }
            if kind == VmaKind::AnonPrivate {
                m.page_mut(orig.pfn)?.flags |= pg::ANON_EXCLUSIVE;
                let head = compound_head(m, orig.pfn)?;
                m.ledger.touch(head);
            }
            if unshare {
                m.ledger.unshared = true;
                ktrace!(m, "{a}: unshare: pfn {} is exclusive now", orig.pfn);
                return Ok(Some(None));
            }
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
            Ok(Some(None))
        },
    )?;
    match reuse {
        None => Ok(false),
        Some(None) => Ok(true),
        Some(Some(folio)) => wp_page_copy(cpu, a, orig, folio, pfn_hint, unshare),
    }
}

/// May a write (or unshare) fault on anonymous page `page` mapped at `a`
/// take the page over? An exclusive page, always (v5.19+); otherwise the
/// running design's rule: for a small folio `wp_can_reuse_anon_folio` (the
/// refcount is the only reference, the folio lock is free), or with
/// `gup-after-fork-read-pin` for a write fault the pre-v5.9
/// `reuse_swap_page` (the mapcount is 1; GUP's unshare, which came later,
/// keeps the refcount rule); for a THP subpage v5.19 copies, v4.5 copies
/// (`PageTransCompound`), and the 2016 fix reuses at
/// `page_trans_huge_mapcount == 1`; `thp-reuse-subpage-mapcount` makes
/// v5.19 reuse at `page_trans_huge_mapcount == 1` too, when the folio has
/// no reference beyond its mappings (as v6.15's
/// `__wp_can_reuse_large_anon_folio` requires before it asks whether
/// another process maps the folio). A reuse of a page that is not known
/// exclusive moves the folio to the faulting process's anon_vma
/// (`folio_move_anon_rmap`, `page_move_anon_rmap`).
fn can_reuse_anon(m: &mut Machine, a: Uaddr, page: Pfn, unshare: bool) -> Result<bool, Violation> {
    let folio = compound_head(m, page)?;
    let large = folio_nr_pages(m, folio)? > 1;
    let design = m.cfg.cow();
    let exclusive = m.page(page)?.test(pg::ANON_EXCLUSIVE);
    m.cover_page("can_reuse_anon", page, unshare as u64);
    if large && design == CowDesign::V4_5 {
        ktrace!(
            m,
            "{a}: pfn {page} is a THP subpage: reuse_swap_page() says no"
        );
        return Ok(false);
    }
    if exclusive && !(large && design == CowDesign::Fix2016) {
        return Ok(true);
    }
    let f = m.page(folio)?;
    let reuse = match (large, design) {
        (false, _) if m.cfg.has(Variant::GupAfterForkReadPin) && !unshare => {
            m.page(page)?.mapcount + 1 == 1
        }
        (false, _) => f.refcount == 1 && !f.test(pg::LOCKED),
        (true, CowDesign::Fix2016) => huge_memory::page_trans_huge_mapcount(m, folio)? == 1,
        (true, _) if m.cfg.has(Variant::ThpReuseSubpageMapcount) => {
            f.refcount == super::rmap::folio_mapcount(m, folio)?
                && huge_memory::page_trans_huge_mapcount(m, folio)? == 1
        }
        (true, _) => false,
    };
    let mapcount = m.page(page)?.mapcount + 1;
    ktrace!(
        m,
        "{a}: pfn {page} (folio {folio}, refcount {}, mapcount {mapcount}): {}",
        f.refcount,
        if reuse { "reuse" } else { "copy" }
    );
    m.cover_page("can_reuse_anon: reuse", page, reuse as u64);
    if reuse {
        let own = m.mms[a.mm as usize].anon_vma;
        if let Mapping::Anon { anon_vma, .. } = &mut m.page_mut(folio)?.mapping {
            *anon_vma = own;
        }
        m.ledger.touch(folio);
    }
    Ok(reuse)
}

/// `wp_page_copy`: copy the page into a new exclusive anonymous folio and
/// map that instead (read-only for an unshare), flushing the old
/// translation, then drop the old mapping's reference and the one
/// `do_wp_page` took on `old_folio`.
fn wp_page_copy(
    cpu: &Cpu,
    a: Uaddr,
    orig: PteEntry,
    old_folio: Pfn,
    pfn_hint: Pfn,
    unshare: bool,
) -> KResult<bool> {
    let Some(new) = cpu.step("wp_page_copy", |m| {
        let Some(new) = m.alloc_pages_may_sleep(0, pfn_hint, "wp_page_copy")? else {
            return Ok(None);
        };
        let data = m.frames[orig.pfn as usize].content.clone();
        m.frames[new as usize].content = data;
        let mapping = new_anon_mapping(m, a);
        let p = m.page_mut(new)?;
        p.flags |= pg::SWAPBACKED;
        p.mapping = mapping;
        Ok(Some(new))
    })?
    else {
        folio_put(cpu, old_folio)?;
        return Ok(true);
    };
    let copied = cpu.step_when(
        "wp_page_copy",
        |m| m.pte_lock_free(a),
        |m| {
            if m.pte(a) != Some(PteVal::Present(orig)) {
                ktrace!(m, "{a}: PTE changed meanwhile");
                return Ok(false);
            }
            let p = m.page_mut(new)?;
            p.mapcount = 0;
            p.flags |= pg::ANON_EXCLUSIVE | pg::LRU;
            // ptep_clear_flush, then set_pte_at.
            m.flush_tlb_range(a.mm, a.page..a.page + 1);
            let e = PteEntry {
                cow: unshare,
                ..PteEntry::new(new, !unshare)
            };
            m.set_pte(a, PteVal::Present(e));
            m.page_mut(orig.pfn)?.mapcount -= 1;
            if unshare {
                m.ledger.unshared = true;
            }
            ktrace!(m, "{a}: pfn {} copied to pfn {new}", orig.pfn);
            Ok(true)
        },
    )?;
    // The old mapping's reference (or the unused new folio), then
    // do_wp_page's.
    folio_put(cpu, if copied { old_folio } else { new })?;
    folio_put(cpu, old_folio)?;
    Ok(copied)
}

/// `zap_pte_range` (MADV_DONTNEED of one page): clear the PTE under the
/// PTE lock and drop the mapping's reference after the TLB flush
/// (`tlb_finish_mmu`). A migration entry is simply cleared. A hugetlb PMD
/// leaf is zapped whole; a THP's PMD is split first (`zap_pmd_range`: the
/// range is less than the PMD), then its PTE zapped (one step: the model's
/// split holds no lock across).
pub fn zap_pte_range(cpu: &Cpu, a: Uaddr) -> KResult<()> {
    let ready = |m: &Machine| m.mms[a.mm as usize].mmap_lock.can_read() && m.pte_lock_free(a);
    let folio = cpu.step_when("zap_pte_range", ready, |m| {
        if matches!(m.pmd(a), PmdVal::Leaf(_)) && m.anon_vma_covers(a) {
            huge_memory::__split_huge_pmd_locked(m, a)?;
        }
        let folio = zap_locked(m, a)?;
        if m.anon_vma_covers(a) {
            m.ledger.dropped(a);
        }
        Ok(folio)
    })?;
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
        PmdVal::Leaf(_) => zap_huge_pmd(m, a),
        PmdVal::None => Ok(None),
        PmdVal::Table(_) => zap_one_pte(m, a),
    }
}

/// `zap_huge_pmd`: clear the PMD leaf at `a` (flushing the range), drop its
/// entire mapcount and free its deposited PTE table; returns the folio
/// whose reference the caller puts.
pub fn zap_huge_pmd(m: &mut Machine, a: Uaddr) -> Result<Option<Pfn>, Violation> {
    let PmdVal::Leaf(leaf) = m.pmd(a) else {
        return Ok(None);
    };
    m.cover_page("zap_huge_pmd", leaf.pfn, 0);
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

/// One PTE of `zap_pte_range`: clear it (flushing the page) and drop its
/// mapcount; returns the folio whose reference the caller puts.
pub fn zap_one_pte(m: &mut Machine, a: Uaddr) -> Result<Option<Pfn>, Violation> {
    match m.pte(a) {
        Some(PteVal::Present(e)) => {
            m.cover_page("zap_one_pte", e.pfn, 0);
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
/// store. A process fork is still building has no thread to run yet: its
/// accesses wait in the fault path for fork to finish.
fn access_through_tlb(m: &mut Machine, a: Uaddr, write: bool) -> Result<Translation, Violation> {
    let c = m.cpu_index();
    if m.mms[a.mm as usize].in_fork {
        return Ok(Translation::Fault);
    }
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
    let anon = m.anon_vma_covers(a);
    if anon {
        m.cover_page("user_access", entry.pfn, write as u64);
    }
    if write {
        let v = m.ledger.write_value(m.ledger.pid_of(a.mm));
        m.frames[entry.pfn as usize].content = Content::Data(v);
        ktrace!(m, "{a}: store {v} to pfn {}", entry.pfn);
        if anon {
            m.ledger.set_view(a, v);
        }
    } else {
        let content = &m.frames[entry.pfn as usize].content;
        ktrace!(m, "{a}: load {content:?} from pfn {}", entry.pfn);
        if anon {
            oracle::load_sees_own_data(m, a, entry.pfn)?;
        }
    }
    Ok(Translation::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fork::dup_mmap;
    use crate::model::gup::{Foll, gup_fast_fallback, memcpy_from_page};
    use crate::model::oracle::Oracle;
    use crate::model::testing::Kernel;

    const ANON: u8 = 2;

    /// cow.c's "vmsplice() before fork(), unmap in parent after fork()":
    /// the parent's read-only GUP reference must not see the child's write.
    fn vmsplice_before_fork(k: &mut Kernel) -> Result<(), Violation> {
        let (p, c) = (Uaddr::new(0, ANON), Uaddr::new(1, ANON));
        k.on(0, |cpu| gup_fast_fallback(cpu, p, Foll::Get, false))?;
        k.on(0, |cpu| dup_mmap(cpu, 0, 1))?;
        k.on(0, |cpu| zap_pte_range(cpu, p))?;
        k.on(1, |cpu| user_access(cpu, c, true))?;
        k.on(0, memcpy_from_page)
    }

    #[test]
    fn a_write_fault_copies_a_page_a_gup_reference_holds() {
        let mut k = Kernel::boot();
        vmsplice_before_fork(&mut k).unwrap();
        k.quiesce().unwrap();
    }

    #[test]
    fn gup_after_fork_read_pin_reuses_it_by_its_mapcount() {
        let mut k = Kernel::builder()
            .variant(Variant::GupAfterForkReadPin)
            .boot();

        let err = vmsplice_before_fork(&mut k).unwrap_err();

        assert_eq!(err.oracle, Oracle::Isolation, "{}", err.detail);
    }
}
