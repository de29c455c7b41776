//! The model's invariants, each a named function.
//!
//! Access oracles run inside the one struct-page access path
//! (`Machine::page`, `Machine::page_mut`) and the refcount primitives; state
//! oracles run after every step ([`check_step`]) and once all CPUs have
//! finished ([`check_quiescent`]).

use super::machine::{Content, Machine, Owner, Pfn};
use super::mm_types::{StructPage, pg};
use super::vmemmap::Pte;
use serde::{Deserialize, Serialize};
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

/// Invariants checked after every step.
pub fn check_step(m: &Machine) -> Result<(), Violation> {
    frozen_stays_frozen(m)
}

/// A live folio and the references that should exist on it.
struct LiveFolio {
    head: Pfn,
    nr: u32,
    expected_refs: i32,
    what: &'static str,
}

fn folio_nr_pages(m: &Machine, head: Pfn) -> u32 {
    let p = m.peek(head);
    if p.test(pg::HEAD) {
        1 << m.peek(head + 1).order
    } else {
        1
    }
}

fn live_folios(m: &Machine) -> Vec<LiveFolio> {
    let mut out = Vec::new();
    for &head in m.mapping.slots.iter().flatten() {
        let nr = folio_nr_pages(m, head);
        out.push(LiveFolio {
            head,
            nr,
            expected_refs: nr as i32,
            what: "page-cache folio",
        });
    }
    for &head in &m.hstate.free_folios {
        out.push(LiveFolio {
            head,
            nr: m.cfg.pages_per_huge_page(),
            expected_refs: 0,
            what: "free hugetlb folio",
        });
    }
    for &head in &m.hstate.active_folios {
        let holders = m
            .cpus
            .iter()
            .flat_map(|c| &c.holds)
            .filter(|h| **h == super::machine::Hold::HugetlbFolio(head))
            .count();
        out.push(LiveFolio {
            head,
            nr: m.cfg.pages_per_huge_page(),
            expected_refs: holders as i32,
            what: "hugetlb folio in use",
        });
    }
    out
}

/// At quiescence every frame has exactly one owner: a free buddy block, the
/// vmemmap, or a live folio.
pub fn every_frame_accounted(m: &Machine) -> Result<(), Violation> {
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
    for f in live_folios(m) {
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
pub fn every_reference_put(m: &Machine) -> Result<(), Violation> {
    for f in live_folios(m) {
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

/// Invariants checked once every CPU has finished.
pub fn check_quiescent(m: &Machine) -> Result<(), Violation> {
    every_frame_accounted(m)?;
    every_reference_put(m)
}
