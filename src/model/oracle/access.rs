//! Invariants at each struct-page access and each refcount update.

use super::{Oracle, Violation, fail};
use crate::model::machine::{Machine, Owner, Pfn};
use crate::model::mm_types::StructPage;
use crate::model::pgtable::UserTlbEntry;
use crate::model::vmemmap::{Access, Pte};

/// No write to a struct page through a read-only vmemmap mapping.
pub fn no_write_through_ro_vmemmap(a: &Access) -> Result<(), Violation> {
    if !a.write || a.pte.writable {
        return Ok(());
    }
    fail(
        Oracle::RoVmemmapWrite,
        format!(
            "write to struct page of pfn {} through the read-only vmemmap mapping of frame {}",
            a.pfn, a.pte.frame
        ),
    )
}

/// No access through the vmemmap to a frame that the vmemmap no longer owns.
pub fn no_access_to_unowned_vmemmap_frame(a: &Access) -> Result<(), Violation> {
    if matches!(a.owner, Owner::Memmap { .. }) {
        return Ok(());
    }
    let now = match a.owner {
        Owner::Free => "free in the buddy allocator",
        _ => "reallocated",
    };
    fail(
        Oracle::UseAfterRemap,
        format!(
            "struct page of pfn {} reached frame {}, which is {now} (stale vmemmap TLB entry)",
            a.pfn, a.pte.frame
        ),
    )
}

/// A refcount update.
#[derive(Debug, Clone, Copy)]
pub struct RefUpdate {
    pub pfn: Pfn,
    /// The count before.
    pub old: i32,
    pub kind: RefKind,
}

#[derive(Debug, Clone, Copy)]
pub enum RefKind {
    /// A conditional add that succeeded (`page_ref_add_unless`), on the
    /// struct page it read: through an HVO alias or not.
    Speculative { page: StructPage, aliased: bool },
    /// An unconditional add of `nr` (`folio_get`, `folio_ref_add`): the
    /// caller guarantees a reference exists.
    Add { nr: i32 },
    /// A put of `nr`.
    Put { nr: i32 },
}

/// A reference may only be taken on a genuine head or small page: not on a
/// tail, and not on a fake head (a struct page read through an alias).
pub fn ref_target_is_genuine(r: &RefUpdate) -> Result<(), Violation> {
    let RefKind::Speculative { page, aliased } = r.kind else {
        return Ok(());
    };
    if page.tail_bit() {
        return fail(
            Oracle::RefOnTailOrFakeHead,
            format!("reference taken on tail page pfn {}", r.pfn),
        );
    }
    if aliased {
        return fail(
            Oracle::RefOnTailOrFakeHead,
            format!(
                "reference taken on pfn {}, a fake head: its vmemmap page aliases the head's struct pages",
                r.pfn
            ),
        );
    }
    Ok(())
}

/// An unconditional get (`folio_get`, `page_ref_inc`) must not see 0.
pub fn no_increment_from_zero(r: &RefUpdate) -> Result<(), Violation> {
    if !matches!(r.kind, RefKind::Add { .. }) || r.old > 0 {
        return Ok(());
    }
    fail(
        Oracle::IncFromZero,
        format!("unconditional get on pfn {} with refcount {}", r.pfn, r.old),
    )
}

/// A put must not take the refcount below zero.
pub fn no_underflow(r: &RefUpdate) -> Result<(), Violation> {
    let RefKind::Put { nr } = r.kind else {
        return Ok(());
    };
    if r.old >= nr {
        return Ok(());
    }
    fail(
        Oracle::RefcountUnderflow,
        format!("put of {nr} on pfn {} with refcount {}", r.pfn, r.old),
    )
}

/// A locked cmpxchg needs write permission whether or not it succeeds (x86
/// writes the old value back; arm64 CAS checks permission first), which is
/// how a stale expected value faults on a read-only vmemmap page
/// (bd225530a4c7).
pub fn cmpxchg_through_ro_vmemmap(
    pfn: Pfn,
    pte: Pte,
    aliased: bool,
    seen: &StructPage,
    expected: i32,
) -> Violation {
    let what = if seen.tail_bit() {
        "a tail page"
    } else if aliased {
        "a fake head"
    } else {
        "a read-only struct page"
    };
    Violation {
        oracle: Oracle::RoVmemmapWrite,
        detail: format!(
            "cmpxchg on the refcount of pfn {pfn} ({what}, read as {expected} before) through the read-only vmemmap mapping of frame {}",
            pte.frame
        ),
    }
}

/// `page_ref_unfreeze` finds the count it froze at 0.
pub fn unfreeze_from_zero(pfn: Pfn, count: i32) -> Result<(), Violation> {
    if count == 0 {
        return Ok(());
    }
    fail(
        Oracle::FrozenChanged,
        format!("folio_ref_unfreeze(pfn {pfn}) found refcount {count}"),
    )
}

/// A user access through a TLB entry reaches the frame the entry cached:
/// still allocated, and not reused since (its generation unchanged).
pub fn user_tlb_entry_current(m: &Machine, e: &UserTlbEntry) -> Result<(), Violation> {
    let f = &m.frames[e.pfn as usize];
    if f.owner == Owner::Allocated && f.generation == e.generation {
        return Ok(());
    }
    let now = match f.owner {
        Owner::Free => "free in the buddy allocator".to_string(),
        Owner::PageTable => "a page table now".to_string(),
        Owner::Memmap { .. } => "vmemmap now".to_string(),
        Owner::Allocated => format!(
            "reallocated (generation {} -> {})",
            e.generation, f.generation
        ),
    };
    fail(
        Oracle::UserUseAfterFree,
        format!(
            "mm{}:{} reached pfn {} through a stale TLB entry, but the frame is {now}",
            e.mm, e.page, e.pfn
        ),
    )
}

/// A user access through a TLB entry was translated through a page table
/// that is still that table: not freed, and not reused since (its
/// generation unchanged). The paging-structure caches keep what the walk
/// read from it, so once the table is freed and reused a stale entry
/// translates through whatever it holds now (CVE-2021-4002).
pub fn user_tlb_table_current(m: &Machine, e: &UserTlbEntry) -> Result<(), Violation> {
    let f = &m.frames[e.table as usize];
    if f.owner == Owner::PageTable && f.generation == e.table_generation {
        return Ok(());
    }
    let now = match f.owner {
        Owner::Free => "free in the buddy allocator".to_string(),
        Owner::PageTable => format!(
            "a page table again (generation {} -> {})",
            e.table_generation, f.generation
        ),
        Owner::Memmap { .. } => "vmemmap now".to_string(),
        Owner::Allocated => format!(
            "reallocated (generation {} -> {})",
            e.table_generation, f.generation
        ),
    };
    fail(
        Oracle::UserUseAfterFree,
        format!(
            "mm{}:{} reached pfn {} through a stale TLB entry translated through the page table in frame {}, which is {now}",
            e.mm, e.page, e.pfn, e.table
        ),
    )
}

/// When frames are freed (to the buddy allocator, or a hugetlb folio to
/// the pool, where the next user takes it), no CPU's TLB may still hold a
/// translation to them, or one derived from a page table among them: the
/// flush comes first (`tlb_finish_mmu` flushes, then frees; unsharing
/// flushes before `i_mmap_rwsem` lets the table go, a4a118f2eead).
/// Otherwise the next access through the entry reaches freed memory. The
/// kernel's vmemmap translations count too: HVO frees the old vmemmap
/// frames only after `flush_tlb_kernel_range` (v6.10
/// `vmemmap_remap_free`), so this fails at the free, not only at a later
/// access through the stale entry.
pub fn no_tlb_entry_outlives_free(
    m: &Machine,
    frames: std::ops::Range<Pfn>,
    to: &str,
) -> Result<(), Violation> {
    for (c, cpu) in m.cpus.iter().enumerate() {
        if let Some((vpage, pte)) = cpu.tlb.iter().enumerate().find_map(|(v, e)| {
            e.filter(|pte| frames.contains(&pte.frame))
                .map(|pte| (v, pte))
        }) {
            return fail(
                Oracle::TlbFlushBeforeFree,
                format!(
                    "frames {}..{} go back to {to}, but CPU {c}'s TLB still maps vmemmap page {vpage} to frame {}",
                    frames.start, frames.end, pte.frame
                ),
            );
        }
        let stale = cpu
            .user_tlb
            .entries()
            .iter()
            .find(|e| frames.contains(&e.pfn) || frames.contains(&e.table));
        let Some(e) = stale else { continue };
        let through = if frames.contains(&e.pfn) {
            format!("pfn {}", e.pfn)
        } else {
            format!("pfn {} through the page table in frame {}", e.pfn, e.table)
        };
        return fail(
            Oracle::TlbFlushBeforeFree,
            format!(
                "frames {}..{} go back to {to}, but CPU {c}'s TLB still translates mm{}:{} to {through}",
                frames.start, frames.end, e.mm, e.page
            ),
        );
    }
    Ok(())
}

/// A lockless page-table walker read a frame that is no longer a page table.
pub fn walked_freed_table(table: Pfn, a: crate::model::pgtable::Uaddr, owner: Owner) -> Violation {
    Violation {
        oracle: Oracle::PageTableUseAfterFree,
        detail: format!(
            "{a}: a lockless walker read the PTE table it found in frame {table}, but the frame is {owner:?} now"
        ),
    }
}
