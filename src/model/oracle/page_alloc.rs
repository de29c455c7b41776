//! The page allocator's own checks, and the sleeping rules.

use super::{Oracle, Violation, fail};
use crate::model::machine::{Machine, Pfn};
use crate::model::mm_types::{CompoundInfo, Mapping, pg};

/// The flags `free_page_is_bad` refuses at free (`PAGE_FLAGS_CHECK_AT_FREE`
/// of the ones the model has: PG_locked, PG_lru, PG_private).
const FLAGS_CHECK_AT_FREE: u32 = pg::LOCKED | pg::LRU | pg::PRIVATE;

/// `free_pages_prepare`'s checks (v6.12 mm/page_alloc.c) of the pages of
/// `pages`, part of the order-`order` block at `pfn`: each page's
/// `page_bad_reason` (mapcount, file mapping, PAGE_FLAGS_CHECK_AT_FREE;
/// not the refcount, which the model's callers drop around the call)
/// and each tail's `free_tail_page_prepare` (PageTail, `compound_head`
/// consistent, the first tail's pincount). The free path calls it on each
/// step's pages before that step clears them (the tails a vmemmap page at
/// a time, then the head); it reads through the page table (the oracles'
/// view). Whether the block is compound is the head's PG_head, which the
/// free clears last.
pub fn no_bad_page_at_free(
    m: &Machine,
    pfn: Pfn,
    order: u8,
    pages: std::ops::Range<Pfn>,
) -> Result<(), Violation> {
    let head = m.peek(pfn);
    let compound = order > 0 && head.test(pg::HEAD);
    let bad = |p: Pfn, reason: &str| {
        fail(
            Oracle::BadPage,
            format!(
                "BUG: Bad page state: pfn {p} freed at order {order} (head pfn {pfn}): {reason}"
            ),
        )
    };
    for p in pages {
        let page = m.peek(p);
        if p == pfn || !compound {
            // An anon mapping (PAGE_MAPPING_ANON) is cleared by
            // free_pages_prepare itself; a file mapping must be gone.
            if matches!(
                page.mapping,
                Mapping::File { .. } | Mapping::Hugetlbfs { .. }
            ) {
                return bad(p, "non-NULL mapping");
            }
        } else {
            if !matches!(page.compound_info, CompoundInfo::Tail(h) if h == pfn)
                && !matches!(page.compound_info, CompoundInfo::TailMask(_))
            {
                return bad(p, "compound_head not consistent");
            }
            if p == pfn + 1 && page.pincount != 0 {
                return bad(p, "nonzero pincount");
            }
        }
        if page.mapcount != -1 {
            return bad(p, "nonzero mapcount");
        }
        if page.flags & FLAGS_CHECK_AT_FREE != 0 {
            return bad(p, "PAGE_FLAGS_CHECK_AT_FREE flag(s) set");
        }
    }
    Ok(())
}

/// The buddy allocator's own consistency (v6.12 mm/page_alloc.c: a free
/// block's head has PageBuddy and `buddy_order` (`set_buddy_order`), no
/// other page of it does, and `__free_one_page` never lists overlapping
/// blocks), for the blocks the step put on or took off a free list only:
/// each page of such a range is checked against the free blocks overlapping
/// it, so the work is the size of what the step changed.
pub fn buddy_lists_match_pages(m: &Machine) -> Result<(), Violation> {
    // One split or merge lists and unlists several nested blocks: check
    // each page of their union once.
    let mut ranges: Vec<(Pfn, Pfn)> = m
        .buddy
        .changed
        .iter()
        .map(|&(start, order)| (start, start + (1 << order)))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(Pfn, Pfn)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let bad = |what: String| fail(Oracle::BuddyConsistent, what);
    for (start, end) in merged {
        let listed = m.buddy.free_blocks_in(start..end);
        for (i, &(b, o)) in listed.iter().enumerate() {
            if let Some(&(c, p)) = listed[i + 1..]
                .iter()
                .find(|&&(c, p)| c < b + (1 << o) && b < c + (1 << p))
            {
                return bad(format!(
                    "free blocks pfn {b} order {o} and pfn {c} order {p} overlap"
                ));
            }
        }
        let (lo, hi) = listed.iter().fold((start, end), |(l, h), &(b, o)| {
            (l.min(b), h.max(b + (1 << o)))
        });
        for pfn in lo..hi {
            let page = m.peek(pfn);
            let head_of = listed.iter().find(|&&(b, _)| b == pfn);
            match head_of {
                Some(&(_, o)) if !page.test(pg::BUDDY) || page.private != o as u32 => {
                    return bad(format!(
                        "pfn {pfn} heads a free block of order {o}, but PageBuddy {} buddy_order {}",
                        page.test(pg::BUDDY),
                        page.private
                    ));
                }
                None if page.test(pg::BUDDY) => {
                    return bad(format!(
                        "pfn {pfn} has PageBuddy (order {}) but heads no free block",
                        page.private
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// `might_sleep()` (`__might_sleep`, kernel/sched/core.c): a sleeping call
/// (`synchronize_rcu`, a sleeping allocation or lock) inside an RCU read
/// section, with interrupts disabled, or under a spinlock (a page-table lock
/// held across steps).
pub fn might_sleep(m: &Machine, what: &str) -> Result<(), Violation> {
    let c = m.cpu_index();
    let cpu = m.this_cpu;
    let atomic = if m.irqs_disabled(c) {
        "with interrupts disabled".to_string()
    } else if m.rcu.in_read_section(c) {
        "inside an RCU read section".to_string()
    } else if m.pt_locks.iter().any(|&(_, holder)| holder as usize == c) {
        "under a page-table spinlock".to_string()
    } else if let Some(lock) = m.cpus[c].spinlock {
        format!("under {lock}")
    } else {
        return Ok(());
    };
    fail(
        Oracle::MightSleep,
        format!("BUG: sleeping function called from invalid context: {what} on {cpu} {atomic}"),
    )
}

/// HVO optimizes and restores only a frozen folio
/// (`VM_WARN_ON_ONCE_FOLIO(folio_ref_count(folio), folio)` in
/// `__hugetlb_vmemmap_optimize_folio` and `__hugetlb_vmemmap_restore_folio`).
pub fn hvo_folio_frozen(m: &Machine, folio: Pfn, what: &str) -> Result<(), Violation> {
    let count = m.peek(folio).refcount;
    if count == 0 {
        return Ok(());
    }
    fail(
        Oracle::HvoNotFrozen,
        format!("{what}(pfn {folio}) on a folio with refcount {count}, not frozen"),
    )
}

/// `folio_unlock` (mm/filemap.c) is `VM_BUG_ON_FOLIO(!folio_test_locked(folio))`
/// and, as a sleeping lock, PG_locked belongs to the task that took it:
/// the CPU that clears it must be the one that set it.
pub fn folio_unlock_by_locker(m: &Machine, folio: Pfn, what: &str) -> Result<(), Violation> {
    match m.ledger.folio_locks.iter().find(|&&(f, _)| f == folio) {
        Some(&(_, owner)) if owner == m.this_cpu => Ok(()),
        Some(&(_, owner)) => fail(
            Oracle::FolioLockOwner,
            format!(
                "{what}: pfn {folio} unlocked by {}, but {owner} locked it",
                m.this_cpu
            ),
        ),
        None => fail(
            Oracle::FolioLockOwner,
            format!("VM_BUG_ON_FOLIO(!folio_test_locked): {what} of unlocked pfn {folio}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::model::filemap::filemap_add_folio;
    use crate::model::hugetlb::{
        alloc_pool_huge_folio, hugetlb_fault_mutex_lock_then, hugetlb_vma_lock_read,
        hugetlb_vma_lock_write,
    };
    use crate::model::hugetlbfs::{i_mmap_lock_read_then, i_mmap_lock_write};
    use crate::model::memory::{mmap_read_lock, mmap_write_lock_then};
    use crate::model::mm_types::pg;
    use crate::model::oracle::{Oracle, Violation, after_step};
    use crate::model::testing::Kernel;

    /// CPU 1 in an RCU read section.
    fn in_rcu_read_section() -> Kernel {
        let mut k = Kernel::boot();
        k.step(1, |m| {
            m.rcu_read_lock();
            Ok(())
        })
        .unwrap();
        k
    }

    /// CPU 1 with interrupts disabled (GUP-fast's section).
    fn irqs_off() -> Kernel {
        let mut k = Kernel::boot();
        k.step(1, |m| {
            m.local_irq_save();
            Ok(())
        })
        .unwrap();
        k
    }

    fn sleeps_in_atomic(r: Result<(), Violation>, what: &str) {
        let err = r.unwrap_err();
        assert_eq!(err.oracle, Oracle::MightSleep, "{}", err.detail);
        assert!(err.detail.contains(what), "{}", err.detail);
    }

    #[test]
    fn mmap_lock_inside_an_rcu_read_section_sleeps_in_atomic_context() {
        let mut k = in_rcu_read_section();
        sleeps_in_atomic(k.on(1, |cpu| mmap_read_lock(cpu, 0)), "mmap_read_lock");
        let mut k = in_rcu_read_section();
        sleeps_in_atomic(
            k.on(1, |cpu| mmap_write_lock_then(cpu, 0, |_| Ok(()))),
            "mmap_write_lock",
        );
    }

    #[test]
    fn i_mmap_rwsem_with_interrupts_off_sleeps_in_atomic_context() {
        let mut k = irqs_off();
        sleeps_in_atomic(
            k.on(1, |cpu| i_mmap_lock_read_then(cpu, "test", |_| Ok(()))),
            "i_mmap_lock_read",
        );
        let mut k = irqs_off();
        sleeps_in_atomic(k.on(1, i_mmap_lock_write), "i_mmap_lock_write");
    }

    #[test]
    fn hugetlb_vma_lock_and_fault_mutex_inside_rcu_sleep_in_atomic_context() {
        let mut k = in_rcu_read_section();
        sleeps_in_atomic(
            k.on(1, |cpu| hugetlb_vma_lock_read(cpu, 0, 0)),
            "hugetlb_vma_lock_read",
        );
        let mut k = in_rcu_read_section();
        sleeps_in_atomic(
            k.on(1, |cpu| hugetlb_vma_lock_write(cpu, 0, 0)),
            "hugetlb_vma_lock_write",
        );
        let mut k = in_rcu_read_section();
        sleeps_in_atomic(
            k.on(1, |cpu| {
                hugetlb_fault_mutex_lock_then(cpu, "test", 0, |_| Ok(()))
            }),
            "hugetlb_fault_mutex_lock",
        );
    }

    #[test]
    fn sleeping_allocations_in_atomic_context_are_caught() {
        let mut k = in_rcu_read_section();
        sleeps_in_atomic(
            k.on(1, |cpu| filemap_add_folio(cpu, 0, 0)),
            "filemap_alloc_folio",
        );
        let mut k = irqs_off();
        sleeps_in_atomic(
            k.on(1, |cpu| alloc_pool_huge_folio(cpu, 0)),
            "alloc_buddy_hugetlb_folio",
        );
        let mut k = irqs_off();
        sleeps_in_atomic(
            k.step(1, |m| {
                m.pagetable_alloc(crate::model::pgtable::Level::Pte)
                    .map(|_| ())
            }),
            "pagetable_alloc",
        );
    }

    #[test]
    fn alloc_and_free_keep_the_buddy_lists_and_pagebuddy_in_step() {
        // Kernel::step runs the per-step invariants after each step.
        let mut k = Kernel::boot();
        let pfn = k
            .step(0, |m| {
                let pfn = m.alloc_pages(0, 600)?;
                assert!(!m.buddy.changed.is_empty(), "the split is recorded");
                Ok(pfn)
            })
            .unwrap()
            .unwrap();
        assert!(k.m.buddy.changed.is_empty(), "cleared after the step");
        k.step(0, |m| {
            m.page_mut(pfn)?.refcount = 0;
            m.free_pages(pfn, 0)
        })
        .unwrap();
        after_step(&mut k.m).unwrap();
    }

    #[test]
    fn pagebuddy_on_an_allocated_page_is_caught() {
        let mut k = Kernel::boot();
        let err = k
            .step(0, |m| {
                let pfn = m.alloc_pages(0, 600)?.unwrap();
                // A set_buddy_order on the page handed out instead of the half.
                m.peek_mut(pfn).flags |= pg::BUDDY;
                Ok(())
            })
            .unwrap_err();

        assert_eq!(err.oracle, Oracle::BuddyConsistent);
        assert!(err.detail.contains("heads no free block"), "{}", err.detail);
    }

    #[test]
    fn a_free_block_with_the_wrong_buddy_order_is_caught() {
        let mut k = Kernel::boot();
        let pfn = k.step(0, |m| m.alloc_pages(0, 600)).unwrap().unwrap();
        let err = k
            .step(0, |m| {
                m.page_mut(pfn)?.refcount = 0;
                m.free_pages(pfn, 0)?;
                let &(head, _) = m.buddy.changed.last().unwrap();
                m.peek_mut(head).private += 1;
                Ok(())
            })
            .unwrap_err();

        assert_eq!(err.oracle, Oracle::BuddyConsistent);
        assert!(err.detail.contains("heads a free block"), "{}", err.detail);
    }

    #[test]
    fn the_same_calls_outside_atomic_context_do_not_trip() {
        let mut k = Kernel::boot();
        k.on(1, |cpu| mmap_read_lock(cpu, 0)).unwrap();
        k.on(1, i_mmap_lock_write).unwrap();
        k.on(1, |cpu| filemap_add_folio(cpu, 0, 0)).unwrap();
        k.on(1, |cpu| alloc_pool_huge_folio(cpu, 0)).unwrap();
    }
}
