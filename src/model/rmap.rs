//! Reverse mapping (mm/rmap.c) and the mapcount helpers of
//! include/linux/mm.h.
//!
//! An rmap walk visits every VMA that may map the folio and takes that
//! VMA's PTE lock: `try_to_migrate_one` holds it across its steps (other
//! PTE-lock sections wait, `Machine::pte_lock_free`), `remove_migration_pte`
//! is one step.

use super::KResult;
use super::ctx::Cpu;
use super::ledger::MapEntry;
use super::machine::{Machine, Pfn};
use super::mm_types::{Mapping, pg};
use super::oracle::{self, Violation};
use super::page_flags::folio_nr_pages;
use super::page_ref::{folio_get, folio_ref_sub_and_test};
use super::pgtable::{PmdVal, PteEntry, PteVal, Uaddr};
use super::smp::IpiWait;
use crate::ktrace;

/// `GUP_PIN_COUNTING_BIAS`.
pub const GUP_PIN_COUNTING_BIAS: i32 = 1024;

/// `folio_mapcount`: PTE mappings of every page plus PMD mappings.
pub fn folio_mapcount(m: &mut Machine, folio: Pfn) -> Result<i32, Violation> {
    let nr = folio_nr_pages(m, folio)?;
    let mut n = 0;
    for p in folio..folio + nr {
        n += m.page(p)?.mapcount + 1;
    }
    if nr > 1 {
        n += m.page(folio + 1)?.entire_mapcount + 1;
    }
    Ok(n)
}

/// `folio_maybe_dma_pinned`: `_pincount` for a large folio, else the bias.
pub fn folio_maybe_dma_pinned(m: &mut Machine, folio: Pfn) -> Result<bool, Violation> {
    if folio_nr_pages(m, folio)? > 1 {
        Ok(m.page(folio + 1)?.pincount > 0)
    } else {
        Ok(m.page(folio)?.refcount >= GUP_PIN_COUNTING_BIAS)
    }
}

/// The PTE-lock sections an rmap walk of a folio visits: for each VMA (one
/// PTE table), the addresses that may map page `i` of the folio.
pub type RmapSection = Vec<(Uaddr, u32)>;

pub fn rmap_sections(m: &Machine, mapping: Mapping, nr: u32) -> Vec<RmapSection> {
    let mut out: Vec<RmapSection> = Vec::new();
    for i in 0..nr {
        for a in m.rmap_addresses(mapping, i) {
            match out
                .iter_mut()
                .find(|s| s[0].0.mm == a.mm && s[0].0.pmd_index() == a.pmd_index())
            {
                Some(s) => s.push((a, i)),
                None => out.push(vec![(a, i)]),
            }
        }
    }
    out.sort_by_key(|s| s[0].0);
    out
}

/// Does the rmap walk of an anon folio wait for the anon_vma lock?
fn anon_vma_readable(m: &Machine, mapping: Mapping) -> bool {
    match mapping {
        Mapping::Anon { anon_vma, .. } => m.anon_vma_lock(anon_vma).can_read(),
        _ => true,
    }
}

/// What `try_to_migrate` left behind.
#[derive(Debug, Clone, Default)]
pub struct Unmapped {
    /// Sections that now hold migration entries, for `remove_migration_ptes`.
    pub sections: Vec<RmapSection>,
    /// The folio is still mapped (a pinned anon page refused to unmap).
    pub still_mapped: bool,
    /// A pinned exclusive anon page stopped the walk.
    pub refused: bool,
    /// Was the folio quiet when it stayed mapped? (for the progress oracle)
    pub quiet: bool,
}

/// `try_to_migrate(folio)`: replace every PTE mapping the folio with a
/// migration entry (`try_to_migrate_one`), dropping the mapping's reference.
/// An exclusive anon page that may be pinned refuses
/// (`folio_try_share_anon_rmap_pte`), leaving the folio mapped. The walk
/// stops once the folio is unmapped (`folio_not_mapped`).
///
/// The walk visits the VMAs the folio's mapping reaches as they are when it
/// enters each (a fork may link a new one meanwhile), holding that VMA's
/// PTE lock across [`try_to_migrate_one`]'s steps.
pub fn try_to_migrate(cpu: &Cpu, folio: Pfn, mapping: Mapping, nr: u32) -> KResult<Unmapped> {
    let mut out = Unmapped::default();
    for k in 0.. {
        let Some(visit) = try_to_migrate_one(cpu, folio, mapping, nr, k, &mut out)? else {
            break;
        };
        if visit.touched {
            out.sections.push(visit.section);
        }
        out.still_mapped = visit.mapped;
        if !visit.mapped || out.refused || !visit.more {
            break;
        }
    }
    Ok(out)
}

/// What `try_to_migrate_one` did in one VMA.
struct Visit {
    section: RmapSection,
    /// The folio is still mapped.
    mapped: bool,
    /// Migration entries were set here.
    touched: bool,
    /// The walk has more VMAs.
    more: bool,
}

/// `try_to_migrate_one` in one VMA, between its steps.
#[derive(Debug, Clone)]
pub(super) struct Walk {
    pub section: RmapSection,
    /// The PTE table whose lock the walk holds.
    pub table: Option<Pfn>,
    /// The walk has more VMAs.
    pub more: bool,
}

/// A PTE `ptep_clear_flush` cleared, under the PTE lock.
#[derive(Debug, Clone)]
pub(super) struct Cleared {
    pub a: Uaddr,
    pub page: Pfn,
    /// Its place in the section.
    j: usize,
    pteval: PteEntry,
    /// `anon_exclusive`, read before the clear.
    pub exclusive: bool,
    /// The flush IPI's wait (x86).
    pub wait: IpiWait,
}

/// The PTE table a section's PTEs live in.
fn section_table(m: &Machine, section: &RmapSection) -> Option<Pfn> {
    match m.pmd(section[0].0) {
        PmdVal::Table(t) => Some(t),
        _ => None,
    }
}

/// `page_vma_mapped_walk`'s next PTE of the section, from `from` on,
/// that maps its page of the folio.
fn next_mapped(m: &Machine, folio: Pfn, section: &RmapSection, from: usize) -> Option<usize> {
    (from..section.len()).find(|&j| {
        let (a, i) = section[j];
        matches!(m.pte(a), Some(PteVal::Present(e)) if e.pfn == folio + i)
    })
}

/// `try_to_migrate_one` (mm/rmap.c, v6.12) in the `k`-th VMA of the walk,
/// in its order, for each PTE mapping the folio there, under the PTE lock
/// held from the first step to the last:
/// 1. `anon_exclusive = PageAnonExclusive(subpage)`, then
///    `ptep_clear_flush` (A1 of `__folio_try_share_anon_rmap`); on x86 the
///    flush's IPI then waits out a GUP-fast of the mm with interrupts off
///    (a step of its own);
/// 2. for an exclusive page, `folio_try_share_anon_rmap_pte`: the
///    maybe-pinned check (A2) and `ClearPageAnonExclusive` (A3), or on
///    -EBUSY `set_pte_at(pteval)` and the walk stops;
/// 3. `set_pte_at(swp_pte)`, `folio_remove_rmap_pte`, `folio_put`.
///
/// Clearing the PTE first is what 088b8aa537c2 ("mm: fix PageAnonExclusive
/// clearing racing with concurrent RCU GUP-fast", v6.0) documents: a
/// GUP-fast that pins (B3) after the check (A2) sees the PTE changed at its
/// recheck (B4) and backs off. `None` once the walk has no `k`-th VMA.
fn try_to_migrate_one(
    cpu: &Cpu,
    folio: Pfn,
    mapping: Mapping,
    nr: u32,
    k: usize,
    out: &mut Unmapped,
) -> KResult<Option<Visit>> {
    let ready = |m: &Machine| {
        anon_vma_readable(m, mapping)
            && (m.pt_locks.is_empty()
                || rmap_sections(m, mapping, nr)
                    .get(k)
                    .is_none_or(|s| m.pte_lock_free(s[0].0)))
    };
    let start = cpu.step_when("try_to_migrate_one", ready, |m| {
        try_to_migrate_one_start(m, folio, mapping, nr, k, out)
    })?;
    let Some((walk, mut cleared)) = start else {
        return Ok(None);
    };
    let mut touched = false;
    let mut mapped = cleared.is_some() || out.still_mapped;
    while let Some(c) = cleared.take() {
        if !c.wait.is_empty() {
            cpu.step_when(
                "flush_tlb_mm_range",
                |m| m.ipis_delivered(&c.wait),
                |m| {
                    ktrace!(m, "{}: every CPU took the TLB-flush IPI", c.a);
                    Ok(())
                },
            )?;
        }
        if c.exclusive {
            let shared = cpu.step("__folio_try_share_anon_rmap", |m| {
                folio_try_share_anon_rmap_pte(m, folio, &walk, &c, out)
            })?;
            if !shared {
                return Ok(Some(Visit {
                    section: walk.section,
                    mapped: true,
                    touched,
                    more: walk.more,
                }));
            }
        }
        let next = cpu.step("try_to_migrate_one", |m| {
            set_migration_entry(m, folio, &walk, &c, out)
        })?;
        touched = true;
        match next {
            // The walk's next PTE in this table, still under the lock.
            Ok(j) => {
                cleared = Some(cpu.step("try_to_migrate_one", |m| {
                    clear_one(m, folio, &walk.section, j)
                })?);
            }
            Err(still_mapped) => mapped = still_mapped,
        }
    }
    Ok(Some(Visit {
        section: walk.section,
        mapped,
        touched,
        more: walk.more,
    }))
}

/// Step 1: `page_vma_mapped_walk` enters the `k`-th VMA (`None`: there is
/// none) and takes its PTE lock; the first PTE mapping the folio there is
/// cleared ([`clear_one`]). With none, the lock is dropped again and
/// `out.still_mapped` says whether the folio is still mapped.
pub(super) fn try_to_migrate_one_start(
    m: &mut Machine,
    folio: Pfn,
    mapping: Mapping,
    nr: u32,
    k: usize,
    out: &mut Unmapped,
) -> Result<Option<(Walk, Option<Cleared>)>, Violation> {
    let sections = rmap_sections(m, mapping, nr);
    let Some(section) = sections.get(k).cloned() else {
        return Ok(None);
    };
    let walk = Walk {
        more: k + 1 < sections.len(),
        table: section_table(m, &section),
        section,
    };
    if let Some(t) = walk.table {
        m.ptl_lock(t);
    }
    let cleared = match next_mapped(m, folio, &walk.section, 0) {
        Some(j) => Some(clear_one(m, folio, &walk.section, j)?),
        None => {
            out.still_mapped = walk_done(m, folio, walk.table, out)?;
            None
        }
    };
    Ok(Some((walk, cleared)))
}

/// Step 2: `folio_try_share_anon_rmap_pte` → `__folio_try_share_anon_rmap`
/// (include/linux/rmap.h, v6.12) with the PTE cleared (A1): `smp_mb()`
/// (paired with `try_grab_folio_fast`'s), then (A2) a maybe-pinned folio
/// is -EBUSY, else (A3) `ClearPageAnonExclusive` (and
/// `smp_mb__after_atomic()`, for `gup_must_unshare`). On -EBUSY
/// `try_to_migrate_one` restores the PTE (`set_pte_at(pteval)`), drops the
/// lock and stops the walk. Whether it shared the page.
pub(super) fn folio_try_share_anon_rmap_pte(
    m: &mut Machine,
    folio: Pfn,
    walk: &Walk,
    c: &Cleared,
    out: &mut Unmapped,
) -> Result<bool, Violation> {
    let (a, page) = (c.a, c.page);
    if folio_maybe_dma_pinned(m, folio)? {
        m.set_pte(a, PteVal::Present(c.pteval));
        m.ledger.cleared.retain(|e| e.a != a);
        ktrace!(
            m,
            "{a}: pfn {page} is exclusive and maybe pinned: cannot share it, PTE restored"
        );
        out.refused = true;
        out.still_mapped = true;
        out.quiet = oracle::folio_is_quiet(m, folio);
        if let Some(t) = walk.table {
            m.ptl_unlock(t);
        }
        return Ok(false);
    }
    m.page_mut(page)?.flags &= !pg::ANON_EXCLUSIVE;
    m.ledger.touch(folio);
    ktrace!(
        m,
        "{a}: pfn {page} is not pinned: PageAnonExclusive cleared"
    );
    Ok(true)
}

/// Step 3: `set_pte_at(swp_pte)`, `folio_remove_rmap_pte`, `folio_put`.
/// `Ok(j)`: the walk goes on to PTE `j` of this table; `Err(mapped)`: the
/// walk is done here (lock dropped), and whether the folio is still mapped.
pub(super) fn set_migration_entry(
    m: &mut Machine,
    folio: Pfn,
    walk: &Walk,
    c: &Cleared,
    out: &mut Unmapped,
) -> Result<Result<usize, bool>, Violation> {
    let (a, page) = (c.a, c.page);
    m.set_pte(
        a,
        PteVal::Migration {
            pfn: page,
            exclusive: c.exclusive,
            write: c.pteval.write,
        },
    );
    m.ledger.cleared.retain(|e| e.a != a);
    m.page_mut(page)?.mapcount -= 1;
    ktrace!(m, "{a}: PTE -> migration entry for pfn {page}");
    folio_ref_sub_and_test(m, folio, 1)?;
    match next_mapped(m, folio, &walk.section, c.j + 1) {
        Some(j) => Ok(Ok(j)),
        None => Ok(Err(walk_done(m, folio, walk.table, out)?)),
    }
}

/// Step 1 for PTE `j` of the section: read `anon_exclusive`, then
/// `ptep_clear_flush`.
fn clear_one(
    m: &mut Machine,
    folio: Pfn,
    section: &RmapSection,
    j: usize,
) -> Result<Cleared, Violation> {
    let (a, i) = section[j];
    let page = folio + i;
    let Some(PteVal::Present(pteval)) = m.pte(a) else {
        unreachable!("next_mapped found a present PTE at {a}");
    };
    let exclusive = m.page(page)?.test(pg::ANON_EXCLUSIVE);
    let (_, wait) = m.ptep_clear_flush(a);
    m.ledger.cleared.push(MapEntry {
        a,
        pfn: page,
        leaf: false,
        write: pteval.write,
    });
    m.ledger.touch(folio);
    ktrace!(m, "{a}: ptep_clear_flush: PTE for pfn {page} cleared");
    if !wait.is_empty() {
        ktrace!(
            m,
            "{a}: the flush IPI waits for {} CPU(s) with interrupts off",
            wait.len()
        );
    }
    Ok(Cleared {
        a,
        page,
        j,
        pteval,
        exclusive,
        wait,
    })
}

/// The walk is done in this VMA: unlock the PTE table; is the folio still
/// mapped? (With the folio's quiet state then, for the progress oracle.)
fn walk_done(
    m: &mut Machine,
    folio: Pfn,
    table: Option<Pfn>,
    out: &mut Unmapped,
) -> Result<bool, Violation> {
    if let Some(t) = table {
        m.ptl_unlock(t);
    }
    let mapped = folio_mapcount(m, folio)? > 0;
    if mapped {
        out.quiet = oracle::folio_is_quiet(m, folio);
    }
    Ok(mapped)
}

/// `remove_migration_ptes(src, dst)`: turn the migration entries for `src`
/// back into present PTEs, mapping the same page of `dst` (`dst == src`
/// when migration failed); each takes a reference (`remove_migration_pte`).
///
/// A fork may have copied some of the entries into a child meanwhile
/// (`copy_nonpresent_pte`); the walk finds those too, after the sections
/// migration set.
pub fn remove_migration_ptes(
    cpu: &Cpu,
    src: Pfn,
    dst: Pfn,
    sections: &[RmapSection],
    mapping: Mapping,
) -> KResult<()> {
    let mut queue: std::collections::VecDeque<RmapSection> = sections.iter().cloned().collect();
    let mut done: Vec<RmapSection> = Vec::new();
    while let Some(section) = queue.pop_front() {
        let last = queue.is_empty();
        let more = cpu.step_when(
            "remove_migration_pte",
            |m| anon_vma_readable(m, mapping) && m.pte_lock_free(section[0].0),
            |m| {
                for &(a, i) in &section {
                    let Some(PteVal::Migration {
                        pfn,
                        exclusive,
                        write,
                    }) = m.pte(a)
                    else {
                        continue;
                    };
                    if pfn != src + i {
                        continue;
                    }
                    let page = dst + i;
                    folio_get(m, dst)?;
                    let p = m.page_mut(page)?;
                    p.mapcount += 1;
                    if exclusive {
                        p.flags |= pg::ANON_EXCLUSIVE;
                    }
                    m.set_pte(a, PteVal::Present(PteEntry::new(page, write)));
                    ktrace!(m, "{a}: migration entry -> PTE for pfn {page}");
                }
                if !last {
                    return Ok(Vec::new());
                }
                let nr = super::page_flags::peek_nr_pages(m, src);
                let holds_entry = |s: &RmapSection| {
                    s.iter().any(|&(a, i)| {
                        matches!(m.pte(a), Some(PteVal::Migration { pfn, .. }) if pfn == src + i)
                    })
                };
                Ok(rmap_sections(m, mapping, nr)
                    .into_iter()
                    .filter(|s| *s != section && !done.contains(s) && holds_entry(s))
                    .collect())
            },
        )?;
        done.push(section);
        queue.extend(more);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fork::dup_mmap;
    use crate::model::memory::{user_access, zap_pte_range};
    use crate::model::oracle::Oracle;
    use crate::model::page_ref::folio_put;
    use crate::model::testing::Kernel;

    const ANON: u8 = 2;

    /// Does `r` fail because the step `func` waits for something nobody
    /// releases (here: the PTE lock CPU 0 holds)?
    fn waits_in<T: std::fmt::Debug>(r: Result<T, Violation>, func: &str) -> bool {
        matches!(&r, Err(v) if v.oracle == Oracle::Deadlock
            && v.detail.contains(&format!("blocks in {func}()")))
    }

    /// A kernel path that takes `a`'s PTE lock.
    type Taker = fn(&Cpu, Uaddr) -> KResult<()>;

    /// An anon page at `a`, isolated, and CPU 0's `try_to_migrate_one` of
    /// it after step 1 (the PTE cleared, the PTE lock held).
    fn migration_after_the_clear() -> (Kernel, Pfn, Walk, Cleared, Unmapped) {
        let mut k = Kernel::builder().cpus(3).boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| user_access(cpu, a, true)).unwrap();
        let folio = k.m.pte(a).and_then(PteVal::present_pfn).unwrap();
        let mapping = k.m.peek(folio).mapping;
        // folio_isolate_lru's reference.
        k.step(0, |m| folio_get(m, folio)).unwrap();
        let mut out = Unmapped::default();
        let (walk, c) = k
            .step(0, |m| {
                try_to_migrate_one_start(m, folio, mapping, 1, 0, &mut out)
            })
            .unwrap()
            .unwrap();
        assert_eq!(k.m.pte(a), Some(PteVal::None));
        (k, folio, walk, c.unwrap(), out)
    }

    #[test]
    fn pte_lock_takers_wait_while_try_to_migrate_one_holds_the_lock() {
        let a = Uaddr::new(0, ANON);
        let takers: [(&str, Taker); 5] = [
            ("zap_pte_range", zap_pte_range),
            // A store faults on the cleared PTE; the fault waits to map.
            ("set_pte_range", |cpu, a| user_access(cpu, a, true)),
            ("follow_page_pte", |cpu, a| {
                crate::model::gup::pin_user_pages(cpu, a, true)
            }),
            ("copy_present_pte", |cpu, a| dup_mmap(cpu, a.mm, 1)),
            ("change_protection", |cpu, a| {
                crate::model::mprotect::mprotect(cpu, a, 1, false)
            }),
        ];
        for (func, taker) in takers {
            let (mut k, ..) = migration_after_the_clear();
            assert!(waits_in(k.on(1, |cpu| taker(cpu, a)), func), "{func}");
            assert_eq!(k.m.pte(a), Some(PteVal::None), "{func} stored");
        }

        // Across all three steps, until the migration entry is stored.
        let (mut k, folio, walk, c, mut out) = migration_after_the_clear();
        assert!(
            k.step(0, |m| folio_try_share_anon_rmap_pte(
                m, folio, &walk, &c, &mut out
            ))
            .unwrap()
        );
        assert!(waits_in(
            k.on(1, |cpu| zap_pte_range(cpu, a)),
            "zap_pte_range"
        ));
        let done = k
            .step(0, |m| set_migration_entry(m, folio, &walk, &c, &mut out))
            .unwrap();
        assert_eq!(done, Err(false), "unmapped, the lock dropped");
        assert!(k.m.pte_lock_free(a));
        k.on(1, |cpu| zap_pte_range(cpu, a)).unwrap();
        assert_eq!(k.m.pte(a), Some(PteVal::None), "the zap cleared the entry");
        k.on(0, |cpu| folio_put(cpu, folio)).unwrap();
    }

    /// The walk over a folio the section maps twice (an mTHP): one clear,
    /// share and store per PTE, under one lock.
    #[test]
    fn try_to_migrate_unmaps_every_pte_of_the_section_under_one_lock() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| crate::model::memory::handle_mm_fault(cpu, a, 0, 1))
            .unwrap();
        let folio = k.m.pte(a).and_then(PteVal::present_pfn).unwrap();
        let nr = folio_nr_pages(&mut k.m, folio).unwrap();
        assert_eq!(nr, 2, "an order-1 anon folio");
        let mapping = k.m.peek(folio).mapping;
        k.step(0, |m| folio_get(m, folio)).unwrap();
        k.trace_on();

        let u = k
            .on(0, |cpu| try_to_migrate(cpu, folio, mapping, nr))
            .unwrap();

        assert!(!u.still_mapped && !u.refused);
        let t = k.take_trace();
        let cleared = t.iter().filter(|l| l.contains("ptep_clear_flush")).count();
        let entries = t
            .iter()
            .filter(|l| l.contains("-> migration entry"))
            .count();
        assert_eq!((cleared, entries), (2, 2), "{t:#?}");
        assert!(k.m.pt_locks.is_empty());
        k.on(0, |cpu| {
            remove_migration_ptes(cpu, folio, folio, &u.sections, mapping)?;
            folio_put(cpu, folio)
        })
        .unwrap();
        k.quiesce().unwrap();
    }
}
