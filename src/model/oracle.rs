//! The model's invariants, each a named function.
//!
//! Access oracles run inside the one struct-page access path
//! (`Machine::page`, `Machine::page_mut`) and the refcount primitives; state
//! oracles run after every step ([`check_step`]) and once all CPUs have
//! finished ([`check_quiescent`]).

use super::machine::{Content, Hold, Machine, Owner, Pfn};
use super::mm_types::{StructPage, pg};
use super::page_flags::{peek_head, peek_nr_pages};
use super::pgtable::{PmdVal, PteVal};
use super::rmap::GUP_PIN_COUNTING_BIAS;
use super::vmemmap::Pte;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

macro_rules! oracles {
    ($( $(#[$doc:meta])* $name:ident = $kebab:literal; )*) => {
        /// A named invariant of the model.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Oracle { $( $(#[$doc])* #[serde(rename = $kebab)] $name, )* }

        impl Oracle {
            pub const ALL: &'static [Oracle] = &[ $( Oracle::$name, )* ];
            pub fn name(self) -> &'static str {
                match self { $( Oracle::$name => $kebab, )* }
            }
        }
    };
}

oracles! {
    /// A store to a struct page through a read-only vmemmap mapping: an oops.
    RoVmemmapWrite = "no-write-through-ro-vmemmap";
    /// An access through the vmemmap to a frame the vmemmap no longer owns.
    UseAfterRemap = "no-use-after-remap";
    /// A reference taken on a tail page or a fake head.
    RefOnTailOrFakeHead = "no-ref-on-tail-or-fake-head";
    /// An unconditional increment of a refcount that was 0.
    IncFromZero = "no-inc-from-zero";
    /// A put below zero.
    RefcountUnderflow = "no-refcount-underflow";
    /// A frozen folio's refcount left 0 before its freezer unfroze it.
    FrozenChanged = "frozen-stays-frozen";
    /// At quiescence a frame is owned by nobody, or by two owners.
    FrameAccounting = "every-frame-accounted";
    /// At quiescence a refcount differs from the references that exist.
    ReferenceLeak = "every-reference-put";
    /// A GUP reference or pin is held on a folio whose contents migration
    /// (or khugepaged) already moved elsewhere: whatever is written
    /// through it is lost.
    PinnedWriteLost = "pinned-writes-not-lost";
    /// Migration went ahead (a passed refcount check, a freeze) while the
    /// folio's refcount was not exactly the references migration expects.
    MigrationRefcount = "migration-only-at-expected-refcount";
    /// The new folio lacks the old folio's data or mapping, or a migration
    /// entry outlived its migration.
    MigrationCopy = "migration-carries-data-and-mapping";
    /// Migration gave up with -EAGAIN on a folio nobody else referenced.
    MigrationProgress = "migration-makes-progress";
    /// Every CPU is blocked.
    Deadlock = "no-deadlock";
    /// The execution did not finish within the step bound.
    StepLimit = "terminates";
}

impl fmt::Display for Oracle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Oracle {
    pub fn from_name(name: &str) -> Option<Oracle> {
        Oracle::ALL.iter().copied().find(|o| o.name() == name)
    }
}

/// An oracle that failed, with what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub oracle: Oracle,
    pub detail: String,
}

fn fail(oracle: Oracle, detail: String) -> Result<(), Violation> {
    Err(Violation { oracle, detail })
}

/// No write to a struct page through a read-only vmemmap mapping.
pub fn no_write_through_ro_vmemmap(pfn: Pfn, pte: Pte) -> Result<(), Violation> {
    if pte.writable {
        return Ok(());
    }
    fail(
        Oracle::RoVmemmapWrite,
        format!(
            "write to struct page of pfn {pfn} through the read-only vmemmap mapping of frame {}",
            pte.frame
        ),
    )
}

/// No access through the vmemmap to a frame that the vmemmap no longer owns.
pub fn no_access_to_unowned_vmemmap_frame(
    pfn: Pfn,
    frame: Pfn,
    owner: Owner,
) -> Result<(), Violation> {
    if matches!(owner, Owner::Memmap { .. }) {
        return Ok(());
    }
    let now = match owner {
        Owner::Free => "free in the buddy allocator",
        _ => "reallocated",
    };
    fail(
        Oracle::UseAfterRemap,
        format!(
            "struct page of pfn {pfn} reached frame {frame}, which is {now} (stale vmemmap TLB entry)"
        ),
    )
}

/// A reference may only be taken on a genuine head or small page: not on a
/// tail, and not on a fake head (a struct page read through an alias).
pub fn ref_target_is_genuine(pfn: Pfn, page: &StructPage, aliased: bool) -> Result<(), Violation> {
    if page.tail_bit() {
        return fail(
            Oracle::RefOnTailOrFakeHead,
            format!("reference taken on tail page pfn {pfn}"),
        );
    }
    if aliased {
        return fail(
            Oracle::RefOnTailOrFakeHead,
            format!(
                "reference taken on pfn {pfn}, a fake head: its vmemmap page aliases the head's struct pages"
            ),
        );
    }
    Ok(())
}

/// An unconditional get (`folio_get`, `page_ref_inc`) must not see 0.
pub fn no_increment_from_zero(pfn: Pfn, old: i32) -> Result<(), Violation> {
    if old > 0 {
        return Ok(());
    }
    fail(
        Oracle::IncFromZero,
        format!("unconditional get on pfn {pfn} with refcount {old}"),
    )
}

/// A put must not take the refcount below zero.
pub fn no_underflow(pfn: Pfn, old: i32, nr: i32) -> Result<(), Violation> {
    if old >= nr {
        return Ok(());
    }
    fail(
        Oracle::RefcountUnderflow,
        format!("put of {nr} on pfn {pfn} with refcount {old}"),
    )
}

/// A frozen folio stays at refcount 0 until its freezer unfreezes it.
pub fn frozen_stays_frozen(m: &Machine) -> Result<(), Violation> {
    for f in &m.frozen {
        let count = m.peek(f.folio).refcount;
        if count != 0 {
            return fail(
                Oracle::FrozenChanged,
                format!(
                    "folio pfn {} frozen by CPU {} has refcount {count}",
                    f.folio, f.cpu
                ),
            );
        }
    }
    Ok(())
}

/// Every user mapping in the current page tables: (page, by a PMD leaf).
fn user_mappings(m: &Machine) -> Vec<(Pfn, bool)> {
    let mut out = Vec::new();
    for mm in &m.pt.mms {
        for pmd in mm.pmds {
            match pmd {
                PmdVal::Table(t) => {
                    for pte in m.pt.tables[t as usize].ptes {
                        if let PteVal::Present { pfn } = pte {
                            out.push((pfn, false));
                        }
                    }
                }
                PmdVal::Leaf(f) => out.push((f, true)),
                PmdVal::None => {}
            }
        }
    }
    out
}

/// The references a folio under migration should have, from the model's
/// facts rather than the kernel's formula: the isolation, the page cache
/// (one per page), PG_private, and each current mapping.
pub fn migration_expected_refs(m: &Machine, folio: Pfn) -> i32 {
    let nr = peek_nr_pages(m, folio);
    let cached = m
        .mapping
        .slots
        .iter()
        .filter(|s| **s == Some(folio))
        .count() as i32;
    let mapped = user_mappings(m)
        .iter()
        .filter(|(p, _)| peek_head(m, *p) == folio)
        .count() as i32;
    1 + cached * nr as i32 + m.peek(folio).test(pg::PRIVATE) as i32 + mapped
}

/// No one but migration references the folio right now.
pub fn folio_is_quiet(m: &Machine, folio: Pfn) -> bool {
    m.peek(folio).refcount == migration_expected_refs(m, folio)
}

/// Migration only proceeds (a passed refcount check, a freeze, the store
/// of a non-atomic freeze) when the count it saw is exactly the expected
/// references: anything more is someone's reference it would wipe or
/// ignore.
pub fn migration_refcount_exact(
    m: &Machine,
    folio: Pfn,
    seen: i32,
    what: &str,
) -> Result<(), Violation> {
    let expected = migration_expected_refs(m, folio);
    if seen == expected {
        return Ok(());
    }
    fail(
        Oracle::MigrationRefcount,
        format!(
            "migration of pfn {folio} went ahead at {what} with refcount {seen}, but only {expected} reference(s) are migration's: {} reference(s) would be lost",
            seen - expected
        ),
    )
}

/// At the commit the new folio holds the old folio's data, page for page,
/// and its mapping.
pub fn migration_carries_data(m: &Machine, src: Pfn, dst: Pfn) -> Result<(), Violation> {
    for i in 0..peek_nr_pages(m, src) {
        let (a, b) = (
            &m.frames[(src + i) as usize].content,
            &m.frames[(dst + i) as usize].content,
        );
        if a != b {
            return fail(
                Oracle::MigrationCopy,
                format!(
                    "migration of pfn {} to pfn {}: the old page holds {a:?}, the new one {b:?} (written after the copy)",
                    src + i,
                    dst + i
                ),
            );
        }
    }
    let (a, b) = (m.peek(src).mapping, m.peek(dst).mapping);
    if a != b {
        return fail(
            Oracle::MigrationCopy,
            format!("migration of pfn {src} to pfn {dst}: mapping {a:?} became {b:?}"),
        );
    }
    Ok(())
}

/// Migration may give up after its retries only if someone else held a
/// reference at the last -EAGAIN.
pub fn migration_makes_progress(folio: Pfn, passes: u32, quiet: bool) -> Result<(), Violation> {
    if !quiet {
        return Ok(());
    }
    fail(
        Oracle::MigrationProgress,
        format!(
            "migration of pfn {folio} gave up after {passes} passes of -EAGAIN, though at the last one nobody else referenced it"
        ),
    )
}

/// No CPU holds a GUP reference or pin on a folio that migration replaced.
pub fn pinned_writes_not_lost(m: &Machine) -> Result<(), Violation> {
    if m.migrated.is_empty() {
        return Ok(());
    }
    for (c, cpu) in m.cpus.iter().enumerate() {
        for h in &cpu.holds {
            let Some(folio) = h.gup_folio() else { continue };
            if let Some(x) = m.migrated.iter().find(|x| x.src == folio) {
                return fail(
                    Oracle::PinnedWriteLost,
                    format!(
                        "CPU {c} holds {h:?}, but CPU {} migrated pfn {} to pfn {}: writes through it are lost",
                        x.cpu, x.src, x.dst
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Invariants checked after every step.
pub fn check_step(m: &Machine) -> Result<(), Violation> {
    frozen_stays_frozen(m)?;
    pinned_writes_not_lost(m)
}

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

fn folio_nr_pages(m: &Machine, head: Pfn) -> u32 {
    peek_nr_pages(m, head)
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
    for &head in &m.hstate.active_folios {
        let holders = m
            .cpus
            .iter()
            .flat_map(|c| &c.holds)
            .filter(|h| **h == Hold::HugetlbFolio(head))
            .count();
        out.push(LiveFolio {
            head,
            nr: m.cfg.pages_per_huge_page(),
            expected_refs: holders as i32,
            what: "hugetlb folio in use",
            user: None,
        });
    }
    // Page cache, user mappings and GUP holds can share a folio.
    let mut user: BTreeMap<Pfn, LiveFolio> = BTreeMap::new();
    fn entry<'a>(
        user: &'a mut BTreeMap<Pfn, LiveFolio>,
        m: &Machine,
        head: Pfn,
        what: &'static str,
    ) -> &'a mut LiveFolio {
        user.entry(head).or_insert_with(|| {
            let nr = folio_nr_pages(m, head);
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
    for &head in m.mapping.slots.iter().flatten() {
        let f = entry(&mut user, m, head, "page-cache folio");
        f.expected_refs += f.nr as i32;
    }
    for (page, leaf) in user_mappings(m) {
        let head = peek_head(m, page);
        let f = entry(&mut user, m, head, "mapped folio");
        f.expected_refs += 1;
        let u = f.user.as_mut().expect("user folio");
        if leaf {
            u.pmds += 1;
        } else {
            u.ptes[(page - head) as usize] += 1;
        }
    }
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

/// At quiescence every frame has exactly one owner: a free buddy block, the
/// vmemmap, or a live folio.
fn every_frame_accounted(m: &Machine, live: &[LiveFolio]) -> Result<(), Violation> {
    let n = m.nr_pfns() as usize;
    let mut claims = vec![0u8; n];
    let mut claimant: Vec<&'static str> = vec![""; n];
    let mut claim = |pfn: usize, who: &'static str| {
        claims[pfn] += 1;
        claimant[pfn] = who;
    };
    for (pfn, order) in m.buddy.free_blocks() {
        for p in pfn..pfn + (1 << order) {
            claim(p as usize, "buddy");
        }
    }
    let mut memmap: Vec<Pfn> = m.vmemmap.ptes.iter().map(|p| p.frame).collect();
    memmap.extend(m.hstate.vmemmap_tail);
    memmap.sort_unstable();
    memmap.dedup();
    for f in memmap {
        claim(f as usize, "vmemmap");
    }
    for f in live {
        for p in f.head..f.head + f.nr {
            claim(p as usize, f.what);
        }
    }
    for (pfn, frame) in m.frames.iter().enumerate() {
        let expected = match frame.owner {
            Owner::Free => "buddy",
            Owner::Memmap { .. } => "vmemmap",
            Owner::Allocated => "folio",
        };
        let ok = claims[pfn] == 1
            && (claimant[pfn] == expected
                || (expected == "folio" && !matches!(claimant[pfn], "buddy" | "vmemmap")));
        if !ok {
            return fail(
                Oracle::FrameAccounting,
                format!(
                    "frame {pfn} is owned as {expected} but claimed {} time(s) (last by {})",
                    claims[pfn],
                    if claimant[pfn].is_empty() {
                        "nobody"
                    } else {
                        claimant[pfn]
                    }
                ),
            );
        }
        if matches!(frame.owner, Owner::Free) && frame.content != Content::Poison {
            return fail(
                Oracle::FrameAccounting,
                format!("free frame {pfn} is not poisoned"),
            );
        }
    }
    Ok(())
}

/// At quiescence every reference taken was put: each live folio's refcount
/// equals the references its owners hold, and tails hold none.
fn every_reference_put(m: &Machine, live: &[LiveFolio]) -> Result<(), Violation> {
    for f in live {
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
    // Pool folios stay frozen by design (v6.10+); anything else frozen at
    // quiescence was never unfrozen or freed.
    if let Some(f) = m
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
pub fn no_migration_entry_left(m: &Machine) -> Result<(), Violation> {
    for (mm, x) in m.pt.mms.iter().enumerate() {
        for (i, pmd) in x.pmds.iter().enumerate() {
            let PmdVal::Table(t) = *pmd else { continue };
            for (j, pte) in m.pt.tables[t as usize].ptes.iter().enumerate() {
                if let PteVal::Migration { pfn, .. } = pte {
                    return fail(
                        Oracle::MigrationCopy,
                        format!(
                            "mm{mm}:{} still holds a migration entry for pfn {pfn}",
                            i * m.pt.tables[t as usize].ptes.len() + j
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Invariants checked once every CPU has finished.
pub fn check_quiescent(m: &Machine) -> Result<(), Violation> {
    no_migration_entry_left(m)?;
    let live = live_folios(m);
    every_frame_accounted(m, &live)?;
    every_reference_put(m, &live)
}
