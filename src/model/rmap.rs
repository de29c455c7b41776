//! Reverse mapping (mm/rmap.c) and the mapcount helpers of
//! include/linux/mm.h.
//!
//! An rmap walk visits every VMA that may map the folio and takes that
//! VMA's PTE lock; each PTE-lock section is one step.

use super::KResult;
use super::ctx::Cpu;
use super::machine::{Machine, Pfn};
use super::mm_types::{Mapping, pg};
use super::oracle::{self, Violation};
use super::page_flags::folio_nr_pages;
use super::page_ref::{folio_get, folio_ref_sub_and_test};
use super::pgtable::{PteEntry, PteVal, Uaddr};
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
/// The walk visits the VMAs the folio's mapping reaches as they are at each
/// step (a fork may link a new one meanwhile), one PTE-lock section a step.
pub fn try_to_migrate(cpu: &Cpu, folio: Pfn, mapping: Mapping, nr: u32) -> KResult<Unmapped> {
    let mut out = Unmapped::default();
    for k in 0.. {
        let visited = cpu.step_when(
            "try_to_migrate_one",
            |m| anon_vma_readable(m, mapping),
            |m| {
                let sections = rmap_sections(m, mapping, nr);
                let Some(section) = sections.get(k).cloned() else {
                    return Ok(None);
                };
                let (mapped, touched) = try_to_migrate_one(m, folio, &section, &mut out)?;
                Ok(Some((section, mapped, touched, k + 1 < sections.len())))
            },
        )?;
        let Some((section, mapped, touched, more)) = visited else {
            break;
        };
        if touched {
            out.sections.push(section);
        }
        out.still_mapped = mapped;
        if !mapped || out.refused || !more {
            break;
        }
    }
    Ok(out)
}

/// One VMA under its PTE lock. Returns (folio still mapped, migration
/// entries set here).
fn try_to_migrate_one(
    m: &mut Machine,
    folio: Pfn,
    section: &RmapSection,
    out: &mut Unmapped,
) -> Result<(bool, bool), Violation> {
    let mut touched = false;
    for &(a, i) in section {
        let page = folio + i;
        let Some(PteVal::Present(e)) = m.pte(a) else {
            continue;
        };
        if e.pfn != page {
            continue;
        }
        let exclusive = m.page(page)?.test(pg::ANON_EXCLUSIVE);
        if exclusive && folio_maybe_dma_pinned(m, folio)? {
            // folio_try_share_anon_rmap_pte() -EBUSY: set_pte_at(pteval).
            ktrace!(
                m,
                "{a}: pfn {page} is exclusive and maybe pinned: cannot share it, PTE restored"
            );
            out.refused = true;
            out.quiet = oracle::folio_is_quiet(m, folio);
            return Ok((true, touched));
        }
        m.page_mut(page)?.flags &= !pg::ANON_EXCLUSIVE;
        // ptep_clear_flush, then the migration entry.
        m.set_pte(
            a,
            PteVal::Migration {
                pfn: page,
                exclusive,
                write: e.write,
            },
        );
        m.flush_tlb_range(a.mm, a.page..a.page + 1);
        m.page_mut(page)?.mapcount -= 1;
        ktrace!(m, "{a}: PTE -> migration entry for pfn {page}");
        folio_ref_sub_and_test(m, folio, 1)?;
        touched = true;
    }
    let mapped = folio_mapcount(m, folio)? > 0;
    if mapped {
        out.quiet = oracle::folio_is_quiet(m, folio);
    }
    Ok((mapped, touched))
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
            |m| anon_vma_readable(m, mapping),
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
