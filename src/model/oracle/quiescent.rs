//! Invariants at quiescence: once every CPU has finished, every frame has
//! one owner and every reference taken has been put.

use super::{Oracle, Violation, fail};
use crate::model::config::{PUD_PAGES, PUDS, VmaKind};
use crate::model::machine::{Content, Hold, Machine, Owner, Pfn};
use crate::model::mm_types::pg;
use crate::model::page_flags::{peek_head, peek_nr_pages};
use crate::model::pgtable::{PteVal, Uaddr};
use crate::model::rcu::Callback;
use crate::model::rmap::GUP_PIN_COUNTING_BIAS;
use std::collections::BTreeMap;

/// A live folio and the references that should exist on it.
struct LiveFolio {
    head: Pfn,
    nr: u32,
    expected_refs: i32,
    what: &'static str,
    /// User folios: PTE mappings per page, PMD mappings, pins (large).
    user: Option<UserRefs>,
}

#[derive(Default)]
struct UserRefs {
    ptes: Vec<i32>,
    pmds: i32,
    pins: i32,
}

fn live_folios(m: &Machine) -> Vec<LiveFolio> {
    let mut out = Vec::new();
    for &head in &m.hstate.free_folios {
        out.push(LiveFolio {
            head,
            nr: m.cfg.pages_per_huge_page(),
            expected_refs: 0,
            what: "free hugetlb folio",
            user: None,
        });
    }
    for &head in &m.hstate.hpage_freelist {
        out.push(LiveFolio {
            head,
            nr: m.cfg.pages_per_huge_page(),
            expected_refs: 0,
            what: "hugetlb folio queued for free_hpage_workfn",
            user: None,
        });
    }
    // Page cache, user mappings, GUP holds and tasks can share a folio.
    let mut user: BTreeMap<Pfn, LiveFolio> = BTreeMap::new();
    fn entry<'a>(
        user: &'a mut BTreeMap<Pfn, LiveFolio>,
        m: &Machine,
        head: Pfn,
        what: &'static str,
    ) -> &'a mut LiveFolio {
        user.entry(head).or_insert_with(|| {
            let nr = peek_nr_pages(m, head);
            LiveFolio {
                head,
                nr,
                expected_refs: 0,
                what,
                user: Some(UserRefs {
                    ptes: vec![0; nr as usize],
                    ..UserRefs::default()
                }),
            }
        })
    }
    for &head in &m.hstate.active_folios {
        let holders = m
            .cpus
            .iter()
            .flat_map(|c| &c.holds)
            .filter(|h| **h == Hold::HugetlbFolio(head))
            .count();
        entry(&mut user, m, head, "hugetlb folio in use").expected_refs += holders as i32;
    }
    for &head in m.mapping.slots.iter().chain(&m.hugetlbfs.slots).flatten() {
        let f = entry(&mut user, m, head, "page-cache folio");
        f.expected_refs += f.nr as i32;
    }
    m.for_each_mapping(|page, leaf| {
        let head = peek_head(m, page);
        let f = entry(&mut user, m, head, "mapped folio");
        f.expected_refs += 1;
        let u = f.user.as_mut().expect("user folio");
        if leaf {
            u.pmds += 1;
        } else {
            u.ptes[(page - head) as usize] += 1;
        }
    });
    for h in m.cpus.iter().flat_map(|c| &c.holds) {
        match *h {
            Hold::GupRef { folio, .. } => {
                entry(&mut user, m, folio, "folio held by GUP").expected_refs += 1
            }
            Hold::GupPin { folio, .. } => {
                let f = entry(&mut user, m, folio, "folio pinned by GUP");
                if f.nr > 1 {
                    f.expected_refs += 1;
                    f.user.as_mut().expect("user folio").pins += 1;
                } else {
                    f.expected_refs += GUP_PIN_COUNTING_BIAS;
                }
            }
            Hold::HugetlbFolio(_) => {}
        }
    }
    for f in user.values_mut() {
        f.expected_refs += m.peek(f.head).test(pg::PRIVATE) as i32;
    }
    out.extend(user.into_values());
    out
}

/// What claims a frame at quiescence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Claimant {
    Nobody,
    Buddy,
    Vmemmap,
    PageTable,
    Folio,
}

impl Claimant {
    fn of(owner: Owner) -> Claimant {
        match owner {
            Owner::Free => Claimant::Buddy,
            Owner::Memmap { .. } => Claimant::Vmemmap,
            Owner::PageTable => Claimant::PageTable,
            Owner::Allocated => Claimant::Folio,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Claimant::Nobody => "nobody",
            Claimant::Buddy => "buddy",
            Claimant::Vmemmap => "vmemmap",
            Claimant::PageTable => "page table",
            Claimant::Folio => "folio",
        }
    }
}

/// What the quiescence oracles share, computed once: the live folios, and
/// who claims each frame how many times.
pub struct Quiescence<'a> {
    pub m: &'a Machine,
    live: Vec<LiveFolio>,
    claims: Vec<u8>,
    claimant: Vec<Claimant>,
}

impl<'a> Quiescence<'a> {
    pub fn new(m: &'a Machine) -> Quiescence<'a> {
        let live = live_folios(m);
        let n = m.nr_pfns() as usize;
        let mut claims = vec![0u8; n];
        let mut claimant = vec![Claimant::Nobody; n];
        let mut claim = |pfns: std::ops::Range<usize>, who: Claimant| {
            claims[pfns.clone()].iter_mut().for_each(|c| *c += 1);
            claimant[pfns].fill(who);
        };
        for (pfn, order) in m.buddy.free_blocks() {
            claim(pfn as usize..(pfn + (1 << order)) as usize, Claimant::Buddy);
        }
        let mut memmap: Vec<Pfn> = m.vmemmap.ptes.iter().map(|p| p.frame).collect();
        memmap.extend(m.hstate.vmemmap_tail);
        memmap.sort_unstable();
        memmap.dedup();
        for f in memmap {
            claim(f as usize..f as usize + 1, Claimant::Vmemmap);
        }
        for (t, _) in m.page_table_frames() {
            claim(t as usize..t as usize + 1, Claimant::PageTable);
        }
        for cb in m.rcu.pending() {
            match cb {
                Callback::FreeTable(t) => claim(t as usize..t as usize + 1, Claimant::PageTable),
            }
        }
        for f in &live {
            claim(f.head as usize..(f.head + f.nr) as usize, Claimant::Folio);
        }
        Quiescence {
            m,
            live,
            claims,
            claimant,
        }
    }

    /// Who claims `pfn`, in words.
    fn claimed_by(&self, pfn: usize) -> &'static str {
        match self.claimant[pfn] {
            Claimant::Folio => self
                .live
                .iter()
                .rev()
                .find(|f| (f.head..f.head + f.nr).contains(&(pfn as u32)))
                .map_or("folio", |f| f.what),
            c => c.name(),
        }
    }

    fn frame_unaccounted(&self, pfn: usize) -> Violation {
        let owner = Claimant::of(self.m.frames[pfn].owner);
        Violation {
            oracle: Oracle::FrameAccounting,
            detail: format!(
                "frame {pfn} is owned as {} but claimed {} time(s) (last by {})",
                owner.name(),
                self.claims[pfn],
                self.claimed_by(pfn)
            ),
        }
    }
}

/// At quiescence every frame has exactly one owner: a free buddy block, the
/// vmemmap, a page table, or a live folio, and a freed frame is poisoned.
pub fn every_frame_accounted(q: &Quiescence) -> Result<(), Violation> {
    let m = q.m;
    if let Some(pfn) = q.claims.iter().position(|&c| c != 1) {
        return Err(q.frame_unaccounted(pfn));
    }
    if let Some(pfn) =
        (0..q.claims.len()).find(|&p| q.claimant[p] != Claimant::of(m.frames[p].owner))
    {
        return Err(q.frame_unaccounted(pfn));
    }
    // Only a frame written since boot can have been freed without poison.
    for &pfn in m.frames.touched() {
        let frame = &m.frames[pfn as usize];
        if matches!(frame.owner, Owner::Free) && !matches!(frame.content, Content::Poison) {
            return fail(
                Oracle::FrameAccounting,
                format!("free frame {pfn} is not poisoned"),
            );
        }
    }
    Ok(())
}

/// At quiescence every reference taken was put: each live folio's refcount
/// equals the references its owners hold, tails hold none, and each page
/// table holds the one reference `pagetable_alloc` gave it.
pub fn every_reference_put(q: &Quiescence) -> Result<(), Violation> {
    let m = q.m;
    for f in &q.live {
        let count = m.peek(f.head).refcount;
        if count != f.expected_refs {
            return fail(
                Oracle::ReferenceLeak,
                format!(
                    "{} pfn {} has refcount {count}, but its owners hold {}",
                    f.what, f.head, f.expected_refs
                ),
            );
        }
        if let Some(u) = &f.user {
            user_folio_counts(m, f, u)?;
        }
        for tail in (f.head + 1..f.head + f.nr).filter(|&t| !m.peek_aliased(t)) {
            let c = m.peek(tail).refcount;
            if c != 0 {
                return fail(
                    Oracle::ReferenceLeak,
                    format!("tail page pfn {tail} has refcount {c}"),
                );
            }
        }
    }
    for (t, level) in m.page_table_frames() {
        let p = m.peek(t);
        if p.refcount != 1 || !p.test(pg::TABLE) {
            return fail(
                Oracle::ReferenceLeak,
                format!(
                    "{level:?} table frame {t} has refcount {} and PG_table {}",
                    p.refcount,
                    p.test(pg::TABLE)
                ),
            );
        }
    }
    // Pool folios stay frozen by design (v6.10+); anything else frozen at
    // quiescence was never unfrozen or freed.
    if let Some(f) = m
        .ledger
        .frozen
        .iter()
        .find(|f| !m.hstate.free_folios.contains(&f.folio))
    {
        return fail(
            Oracle::ReferenceLeak,
            format!("folio pfn {} is still frozen by CPU {}", f.folio, f.cpu),
        );
    }
    Ok(())
}

/// A user folio's mapcounts and pincount match its mappings and pins, and
/// no one left it locked.
fn user_folio_counts(m: &Machine, f: &LiveFolio, u: &UserRefs) -> Result<(), Violation> {
    for (i, &n) in u.ptes.iter().enumerate() {
        let page = f.head + i as u32;
        let c = m.peek(page).mapcount + 1;
        if c != n {
            return fail(
                Oracle::ReferenceLeak,
                format!("pfn {page} has mapcount {c}, but {n} PTE(s) map it"),
            );
        }
    }
    if f.nr > 1 {
        let second = m.peek(f.head + 1);
        if second.entire_mapcount + 1 != u.pmds || second.pincount != u.pins {
            return fail(
                Oracle::ReferenceLeak,
                format!(
                    "large folio pfn {} has entire mapcount {} and pincount {}, but {} PMD(s) map it and {} pin(s) are held",
                    f.head,
                    second.entire_mapcount + 1,
                    second.pincount,
                    u.pmds,
                    u.pins
                ),
            );
        }
    }
    if m.peek(f.head).test(pg::LOCKED) {
        return fail(
            Oracle::ReferenceLeak,
            format!("{} pfn {} is still locked", f.what, f.head),
        );
    }
    Ok(())
}

/// At quiescence no migration entry is left: every migration restored the
/// PTEs, to the new folio or the old one.
pub fn no_migration_entry_left(q: &Quiescence) -> Result<(), Violation> {
    let m = q.m;
    for (t, _) in m.page_table_frames() {
        let Content::Ptes(ptes) = &m.frames[t as usize].content else {
            continue;
        };
        for pte in ptes {
            if let PteVal::Migration { pfn, .. } = pte {
                return fail(
                    Oracle::MigrationCopy,
                    format!("a page table (frame {t}) still holds a migration entry for pfn {pfn}"),
                );
            }
        }
    }
    Ok(())
}

/// At quiescence every PMD table a process holds lies under one of its
/// VMAs: munmap and exit free the tables of the PUD ranges they empty
/// (`free_pgtables`, `hugetlb_free_pgd_range`). The layout's anonymous and
/// file VMAs last until exit; hugetlb VMAs come and go. Written apart from
/// `vma::mm_maps`, the kernel path's own test, so that a bug there cannot
/// blind the oracle.
pub fn page_tables_within_vmas(q: &Quiescence) -> Result<(), Violation> {
    let m = q.m;
    for (mm, x) in m.mms.iter().enumerate() {
        for pud in 0..PUDS {
            let range = pud * PUD_PAGES..(pud + 1) * PUD_PAGES;
            let a = Uaddr {
                mm: mm as u8,
                page: range.start,
            };
            let Some(t) = m.pmd_table(a) else {
                continue;
            };
            let overlaps = |start: u32, end: u32| start < range.end && range.start < end;
            let hugetlb = x.hugetlb_vmas.iter().any(|v| overlaps(v.start, v.end));
            let layout = !x.exited
                && m.cfg
                    .vmas
                    .slots()
                    .any(|v| v.kind != VmaKind::HugetlbShared && overlaps(v.start, v.end()));
            if !hugetlb && !layout {
                return fail(
                    Oracle::PageTableLeak,
                    format!(
                        "mm{mm} still holds the PMD table in frame {t} for pages {}..{}, which none of its VMAs overlaps{}",
                        range.start,
                        range.end,
                        if x.exited { " (it exited)" } else { "" }
                    ),
                );
            }
        }
    }
    Ok(())
}
