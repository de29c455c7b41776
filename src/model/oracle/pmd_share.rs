//! PMD sharing: a walker reads only its own process's page tables, and a
//! shared PMD table's `pt_share_count` is one less than the processes whose
//! PUD points at it. Per step, only the tables the step touched are looked
//! at.

use super::{Oracle, Quiescence, Violation, fail};
use crate::model::config::PUD_PAGES;
use crate::model::machine::{Content, Machine, Owner, Pfn};
use crate::model::pgtable::{Level, PudVal, Uaddr};

/// A walker of process `a.mm` loaded from `table`, which is no longer a
/// PMD table of that process (`Machine::pmd_table_of`).
pub fn walked_pmd_table_not_of_mm(m: &Machine, a: Uaddr, table: Pfn) -> Violation {
    let f = &m.frames[table as usize];
    let now = match (f.owner, &f.content) {
        (Owner::PageTable, Content::Pmds(_)) => {
            let users: Vec<String> = m
                .mms
                .iter()
                .enumerate()
                .filter(|(_, x)| x.pud.contains(&crate::model::pgtable::PudVal::Table(table)))
                .map(|(i, _)| format!("mm{i}"))
                .collect();
            if users.is_empty() {
                "a PMD table no process points at".to_string()
            } else {
                format!(
                    "the PMD table of {} only: unshared from mm{}",
                    users.join(", "),
                    a.mm
                )
            }
        }
        (Owner::PageTable, _) => "a PTE table now".to_string(),
        (Owner::Free, _) => "free in the buddy allocator".to_string(),
        _ => "reallocated".to_string(),
    };
    Violation {
        oracle: Oracle::PmdTableNotOfMm,
        detail: format!(
            "{a}: a page-table walker loaded from the PMD table it read from mm{}'s PUD (frame {table}), which is {now}",
            a.mm
        ),
    }
}

/// An unshare of `a`'s PMD table (with `i_mmap_rwsem` held for write,
/// which holds off rmap walkers) must also hold off every walker of its
/// own process, which holds `mmap_lock` and its VMA's hugetlb VMA lock for
/// read (seed 001): so the unsharer holds `mmap_lock` for write, or the
/// VMA lock for write of every VMA of the process mapping through that PUD
/// range. GUP-fast, which holds neither, is held off by the IPI.
pub fn unshare_holds_off_walkers(m: &Machine, a: Uaddr) -> Result<(), Violation> {
    let me = m.cpu_index() as u8;
    let mm = &m.mms[a.mm as usize];
    if mm.mmap_lock.writer == Some(me) {
        return Ok(());
    }
    let pud = crate::model::hugetlb::pud_range(a.page);
    let open = mm.hugetlb_vmas.iter().find(|v| {
        v.start < pud.end && pud.start < v.end && v.lock.is_none_or(|l| l.writer != Some(me))
    });
    let Some(v) = open else {
        return Ok(());
    };
    fail(
        Oracle::PmdUnshareExcludesWalkers,
        format!(
            "{a}: the PMD table of pages {}..{} is unshared without the VMA lock of VMA {}..{} (VMA {}), which maps through it too: its walkers are not held off",
            pud.start, pud.end, v.start, v.end, v.id
        ),
    )
}

/// The share count `table` should have: one less than its users, the PUD
/// entries pointing at it plus the unshares under way.
fn expected_share_count(m: &Machine, table: Pfn) -> i32 {
    let unsharing = m.ledger.unsharing.iter().filter(|u| u.1 == table).count() as u32;
    (m.pmd_table_users(table) + unsharing).saturating_sub(1) as i32
}

fn share_count_matches(m: &Machine, table: Pfn) -> Result<(), Violation> {
    let f = &m.frames[table as usize];
    if f.owner != Owner::PageTable || !matches!(f.content, Content::Pmds(_)) {
        // Freed: checked when it was.
        return Ok(());
    }
    let count = m.peek(table).pt_share_count;
    let expected = expected_share_count(m, table);
    if count == expected {
        return Ok(());
    }
    fail(
        Oracle::PmdShareCount,
        format!(
            "PMD table in frame {table} has pt_share_count {count}, but {} process(es) point at it and {} unshare(s) are under way",
            m.pmd_table_users(table),
            m.ledger.unsharing.iter().filter(|u| u.1 == table).count()
        ),
    )
}

/// After every step: the share count of every PMD table the step touched.
pub fn share_counts_match(m: &Machine) -> Result<(), Violation> {
    m.ledger
        .pmd_tables_touched
        .iter()
        .try_for_each(|&t| share_count_matches(m, t))
}

/// The hugetlbfs page that process `mm` maps at the start of PUD range
/// `pud` (`vma->vm_pgoff` + the offset in its VMA, signed: the VMA may
/// start inside the range), through the first of its hugetlb VMAs there.
fn file_offset_at_pud(m: &Machine, mm: usize, pud: u32) -> Option<i64> {
    let base = pud * PUD_PAGES;
    m.mms[mm]
        .hugetlb_vmas
        .iter()
        .find(|v| v.start < base + PUD_PAGES && base < v.end)
        .map(|v| v.pgoff as i64 + base as i64 - v.start as i64)
}

/// After every step: every process pointing at a PMD table the step
/// touched maps the same file pages through it (`page_table_shareable`
/// shares only a table whose PUD range maps the same file offset), else
/// one process's pages are another range's folios, which rmap and
/// truncation look for elsewhere.
pub fn shared_tables_map_one_offset(m: &Machine) -> Result<(), Violation> {
    for &t in &m.ledger.pmd_tables_touched {
        let mut first: Option<(usize, u32, i64)> = None;
        for (mm, x) in m.mms.iter().enumerate() {
            for pud in 0..x.pud.len() as u32 {
                if x.pud[pud as usize] != PudVal::Table(t) {
                    continue;
                }
                let Some(off) = file_offset_at_pud(m, mm, pud) else {
                    continue;
                };
                match first {
                    None => first = Some((mm, pud, off)),
                    Some((m0, p0, o0)) if o0 != off => {
                        return fail(
                            Oracle::PmdShareSameOffset,
                            format!(
                                "PMD table in frame {t} is shared by mm{m0} at pages {}.. (file page {o0}) and mm{mm} at pages {}.. (file page {off}): they map different hugetlbfs pages through it",
                                p0 * PUD_PAGES,
                                pud * PUD_PAGES
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(())
}

/// `pagetable_free` of a PMD table: no process points at it, none is
/// still unsharing it, and its share count is back to 0.
pub fn pmd_table_free_unshared(m: &Machine, table: Pfn) -> Result<(), Violation> {
    let users = m.pmd_table_users(table);
    let unsharing = m.ledger.unsharing.iter().any(|u| u.1 == table);
    let count = m.peek(table).pt_share_count;
    if users == 0 && !unsharing && count == 0 {
        return Ok(());
    }
    fail(
        Oracle::PmdShareCount,
        format!(
            "PMD table in frame {table} freed with pt_share_count {count} while {users} process(es) point at it{}",
            if unsharing {
                " and an unshare is under way"
            } else {
                ""
            }
        ),
    )
}

/// At quiescence: no unshare is left half done, no page-table lock held,
/// and every PMD table's share count matches.
pub fn share_counts_at_quiescence(q: &Quiescence) -> Result<(), Violation> {
    let m = q.m;
    if let Some(&(mm, t)) = m.ledger.unsharing.first() {
        return fail(
            Oracle::PmdShareCount,
            format!("mm{mm}'s unshare of the PMD table in frame {t} never dropped its share"),
        );
    }
    if let Some(&(t, cpu)) = m.pt_locks.first() {
        return fail(
            Oracle::PmdShareCount,
            format!("CPU {cpu} still holds the page-table lock of frame {t}"),
        );
    }
    for (t, level) in m.page_table_frames() {
        if level == Level::Pmd {
            share_count_matches(m, t)?;
        }
    }
    Ok(())
}
