//! Invariants of copy-on-write with GUP: process isolation and pin
//! coherence at every read, and after every step the mapcounts, references,
//! PageAnonExclusive, anon rmap and pins of the folios the step touched
//! (`Ledger::touched`), measured against the ledger's record of the
//! mappings the page tables hold.

use super::{Oracle, Violation, fail};
use crate::model::ledger::{HoldRec, MapEntry};
use crate::model::machine::{Content, Hold, Machine, Owner, Pfn};
use crate::model::mm_types::{Mapping, pg};
use crate::model::page_flags::{peek_head, peek_nr_pages};
use crate::model::pgtable::{PteVal, Uaddr};
use crate::model::rmap::GUP_PIN_COUNTING_BIAS;

/// The value a frame holds, as a read returns it.
fn read(m: &Machine, pfn: Pfn) -> Option<u64> {
    match m.frames[pfn as usize].content {
        Content::Data(v) => Some(v),
        _ => None,
    }
}

/// The process a value came from, for a message.
fn who(m: &Machine, v: u64) -> String {
    match m.ledger.writer(v) {
        Some(pid) => format!("process #{pid}"),
        None => "nobody".into(),
    }
}

/// A load by process `a.mm` from its anonymous page `a` (frame `pfn`):
/// the value is its own (or inherited before fork), and the last one
/// written for it, by itself or through a pin of its page.
pub fn load_sees_own_data(m: &Machine, a: Uaddr, pfn: Pfn) -> Result<(), Violation> {
    let Some(v) = read(m, pfn) else {
        return Ok(());
    };
    let expected = m.ledger.view(a);
    if v == expected {
        return Ok(());
    }
    let pid = m.ledger.pid_of(a.mm);
    if !m.ledger.in_lineage(v, pid) {
        return fail(
            Oracle::Isolation,
            format!(
                "{a} (process #{pid}) loads {v} from pfn {pfn}, written by {}: neither its own nor inherited at fork; it should see {expected}",
                who(m, v)
            ),
        );
    }
    fail(
        Oracle::PinCoherence,
        format!(
            "{a} loads {v} from pfn {pfn}, but {expected} was written for it since: the write went to a page it no longer maps (a pin's page and the mapped page parted)"
        ),
    )
}

/// A read through GUP hold `id` of page `page`: never another process's
/// data (the pipe of vmsplice(), a device); through a pin, the value the
/// pinning process wrote last while it mapped the page there, or was
/// written through the pin.
pub fn hold_read_sees(m: &Machine, id: u32, page: Pfn) -> Result<(), Violation> {
    let (Some(h), Some(v)) = (m.ledger.hold(id), read(m, page)) else {
        return Ok(());
    };
    if !h.anon {
        return Ok(());
    }
    if !m.ledger.in_lineage(v, h.pid) {
        return fail(
            Oracle::Isolation,
            format!(
                "a {} of pfn {page} taken by process #{} reads {v}, written by {}: neither its own nor inherited at fork",
                if h.pin { "pin" } else { "GUP reference" },
                h.pid,
                who(m, v)
            ),
        );
    }
    let expected = m.ledger.hold_view(h);
    if h.pin && v != expected {
        return fail(
            Oracle::PinCoherence,
            format!(
                "the pin of pfn {page} (process #{}, {}) reads {v}, but should see {expected}: the process's writes went to another page",
                h.pid,
                match h.at {
                    Some(a) => format!("at {a}"),
                    None => "detached".into(),
                }
            ),
        );
    }
    Ok(())
}

/// Does mapping `e` map page `page`? (A PMD leaf maps its whole folio.)
fn maps(m: &Machine, e: &MapEntry, page: Pfn) -> bool {
    if e.leaf {
        (e.pfn..e.pfn + peek_nr_pages(m, e.pfn)).contains(&page)
    } else {
        e.pfn == page
    }
}

/// The page mapping `e` maps at address `a`, if it covers it.
fn page_at(m: &Machine, e: &MapEntry, a: Uaddr) -> Option<Pfn> {
    if e.a.mm != a.mm {
        return None;
    }
    if e.leaf {
        let off = a.page.checked_sub(e.a.page)?;
        (off < peek_nr_pages(m, e.pfn)).then_some(e.pfn + off)
    } else {
        (e.a == a).then_some(e.pfn)
    }
}

/// A touched folio's mappings, as the ledger recorded the page-table
/// stores, with those whose PTE migration cleared under the PTE lock it
/// still holds (`Ledger::cleared`: their mapcount and reference stay until
/// the migration entry replaces them): `None` for a hugetlb folio (its own
/// accounting) or one that is free and unmapped.
fn touched(m: &Machine, f: Pfn) -> Result<Option<Vec<MapEntry>>, Violation> {
    if m.peek(f).test(pg::HUGETLB) {
        return Ok(None);
    }
    let entries: Vec<MapEntry> = m
        .ledger
        .maps
        .iter()
        .chain(&m.ledger.cleared)
        .copied()
        .filter(|e| peek_head(m, e.pfn) == f)
        .collect();
    if m.frames[f as usize].owner != Owner::Allocated {
        if let Some(e) = entries.first() {
            return Err(Violation {
                oracle: Oracle::MapcountConsistent,
                detail: format!("{} still maps pfn {}, which was freed", e.a, e.pfn),
            });
        }
        return Ok(None);
    }
    Ok(Some(entries))
}

/// After each step, for every folio the step touched: every mapping holds
/// a reference, the mapcounts (per page and entire) count the page-table
/// entries, and a PageAnonExclusive page is mapped by one process.
pub fn mapcounts_match_mappings(m: &Machine) -> Result<(), Violation> {
    for &f in &m.ledger.touched {
        let Some(entries) = touched(m, f)? else {
            continue;
        };
        mapcounts(m, f, &entries)?;
    }
    Ok(())
}

fn mapcounts(m: &Machine, f: Pfn, entries: &[MapEntry]) -> Result<(), Violation> {
    let p = m.peek(f);
    let nr = peek_nr_pages(m, f);
    let held: i32 = m
        .cpus
        .iter()
        .flat_map(|c| &c.holds)
        .map(|h| match *h {
            Hold::GupRef { folio, .. } if folio == f => 1,
            Hold::GupPin { folio, .. } if folio == f && nr > 1 => 1,
            Hold::GupPin { folio, .. } if folio == f => GUP_PIN_COUNTING_BIAS,
            _ => 0,
        })
        .sum();
    if p.refcount < entries.len() as i32 + held {
        return fail(
            Oracle::MapcountConsistent,
            format!(
                "pfn {f} has refcount {}, but {} mapping(s) and {held} GUP reference(s) hold it",
                p.refcount,
                entries.len()
            ),
        );
    }
    if !matches!(p.mapping, Mapping::Anon { .. }) {
        return Ok(());
    }
    for page in f..f + nr {
        let ptes = entries.iter().filter(|e| !e.leaf && e.pfn == page).count() as i32;
        let c = m.peek(page).mapcount + 1;
        if c != ptes {
            return fail(
                Oracle::MapcountConsistent,
                format!("pfn {page} has mapcount {c}, but {ptes} PTE(s) map it"),
            );
        }
        if m.peek(page).test(pg::ANON_EXCLUSIVE) {
            let mut mms: Vec<u8> = entries
                .iter()
                .filter(|e| maps(m, e, page))
                .map(|e| e.a.mm)
                .collect();
            mms.sort_unstable();
            mms.dedup();
            if mms.len() > 1 {
                return fail(
                    Oracle::MapcountConsistent,
                    format!("pfn {page} is PageAnonExclusive but mapped by mm{mms:?}"),
                );
            }
        }
    }
    if nr > 1 {
        let leaves = entries.iter().filter(|e| e.leaf).count() as i32;
        let c = m.peek(f + 1).entire_mapcount + 1;
        if c != leaves {
            return fail(
                Oracle::MapcountConsistent,
                format!("THP pfn {f} has entire mapcount {c}, but {leaves} PMD(s) map it"),
            );
        }
    }
    Ok(())
}

/// After each step, for every anonymous folio the step touched: an rmap
/// walk from its anon_vma reaches each of its mappings (the process is
/// linked to the anon_vma, and its VMA maps the folio's offset there).
pub fn anon_rmap_reaches_mappings(m: &Machine) -> Result<(), Violation> {
    for &f in &m.ledger.touched {
        let Some(entries) = touched(m, f)? else {
            continue;
        };
        let Mapping::Anon { anon_vma, index } = m.peek(f).mapping else {
            continue;
        };
        for e in &entries {
            let linked = m.mms[e.a.mm as usize].avc & (1 << anon_vma) != 0;
            let offset = if e.leaf { 0 } else { e.pfn - f };
            let reached = m.anon_vma_covers(e.a) && m.vm_page(e.a).pgoff as u32 == index + offset;
            if !(linked && reached) {
                return fail(
                    Oracle::AnonRmap,
                    format!(
                        "{} maps pfn {} of folio {f}, but an rmap walk from anon_vma {anon_vma} (index {index}) cannot reach it: {}",
                        e.a,
                        e.pfn,
                        if linked {
                            "its VMA maps another offset there"
                        } else {
                            "the process is not linked to that anon_vma"
                        }
                    ),
                );
            }
        }
    }
    Ok(())
}

/// After each step, for every GUP reference or pin of an anonymous folio
/// the step touched: no other process maps the page writable, or what it
/// writes there the holder reads (a write fault that reused a page another
/// process's vmsplice() holds: CVE-2020-29374).
pub fn holds_stay_private(m: &Machine) -> Result<(), Violation> {
    for &f in &m.ledger.touched {
        let Some(entries) = touched(m, f)? else {
            continue;
        };
        for h in m
            .ledger
            .holds
            .iter()
            .filter(|h| h.anon && peek_head(m, h.page) == f)
        {
            if let Some(e) = entries
                .iter()
                .find(|e| e.write && maps(m, e, h.page) && m.ledger.pid_of(e.a.mm) != h.pid)
            {
                return fail(
                    Oracle::Isolation,
                    format!(
                        "{} (process #{}) maps pfn {} writable, which a {} of process #{} holds: that process reads what this one writes",
                        e.a,
                        m.ledger.pid_of(e.a.mm),
                        h.page,
                        if h.pin { "pin" } else { "GUP reference" },
                        h.pid
                    ),
                );
            }
        }
    }
    Ok(())
}

/// After each step, for every pin of an anonymous folio the step touched:
/// the pinned page is the one its process maps where it pinned it (until
/// the process unmaps, remaps or drops that range), and no other process
/// maps it.
pub fn pins_coherent(m: &Machine) -> Result<(), Violation> {
    for &f in &m.ledger.touched {
        let Some(entries) = touched(m, f)? else {
            continue;
        };
        if !matches!(m.peek(f).mapping, Mapping::Anon { .. }) {
            continue;
        }
        for h in m
            .ledger
            .holds
            .iter()
            .filter(|h| h.pin && h.anon && peek_head(m, h.page) == f)
        {
            pin_coherent(m, h, &entries)?;
        }
    }
    Ok(())
}

fn pin_coherent(m: &Machine, h: &HoldRec, entries: &[MapEntry]) -> Result<(), Violation> {
    if let Some(a) = h.at {
        let mapped = entries.iter().find_map(|e| page_at(m, e, a)).or_else(|| {
            m.ledger
                .maps
                .iter()
                .find_map(|e| page_at(m, e, a).filter(|_| !entries.contains(e)))
        });
        let migrating = matches!(m.pte(a), Some(PteVal::Migration { pfn, .. }) if pfn == h.page);
        match mapped {
            Some(q) if q == h.page => {}
            None if migrating => {}
            q => {
                return fail(
                    Oracle::PinCoherence,
                    format!(
                        "process #{} pinned pfn {} at {a}, but {a} now maps {}",
                        h.pid,
                        h.page,
                        q.map_or("nothing".into(), |q| format!("pfn {q}"))
                    ),
                );
            }
        }
    }
    if let Some(e) = entries
        .iter()
        .find(|e| maps(m, e, h.page) && Some(e.a.mm) != h.at.map(|a| a.mm))
    {
        return fail(
            Oracle::PinCoherence,
            format!(
                "pfn {} pinned by process #{} is mapped at {} too: what the device writes through the pin is visible there, and the next write fault parts them",
                h.page, h.pid, e.a
            ),
        );
    }
    Ok(())
}
