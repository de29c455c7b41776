//! The buddy allocator (mm/page_alloc.c).
//!
//! Which free page an allocation gets depends, in the kernel, on per-CPU
//! lists, zones and history the model does not carry; the scenario chooses
//! it instead (a pfn hint), so generated inputs explore placements.

use super::config::HvoMode;
use super::machine::{Content, Machine, Owner, Pfn};
use super::mm_types::{CompoundInfo, Mapping, pg};
use super::oracle::Violation;
use crate::ktrace;

#[derive(Debug)]
pub struct Buddy {
    max_order: u8,
    /// `zone->free_area[order]`, most recently freed last.
    free_area: Vec<Vec<Pfn>>,
    /// Blocks (first pfn, order) put on or taken off a free list by the
    /// running step, for the per-step buddy check; cleared after it.
    pub changed: Vec<(Pfn, u8)>,
}

crate::clone_by_field!(Buddy {
    max_order,
    free_area,
    changed
});

impl Buddy {
    pub fn new(max_order: u8) -> Self {
        Buddy {
            max_order,
            free_area: vec![Vec::new(); max_order as usize + 1],
            changed: Vec::new(),
        }
    }

    /// `memblock_free_all`: free `[start, end)` in maximal aligned blocks.
    pub fn boot_free_range(&mut self, start: Pfn, end: Pfn) {
        let mut pfn = start;
        while pfn < end {
            let mut order = self.max_order;
            while order > 0 && (!pfn.is_multiple_of(1 << order) || pfn + (1 << order) > end) {
                order -= 1;
            }
            self.free_area[order as usize].push(pfn);
            pfn += 1 << order;
        }
    }

    /// The free blocks that overlap `[pfn, pfn + 2^order)`, as (first pfn,
    /// order).
    pub fn free_blocks_overlapping(&self, pfn: Pfn, order: u8) -> Vec<(Pfn, u8)> {
        self.free_blocks_in(pfn..pfn + (1 << order))
    }

    /// The free blocks overlapping the pfns `range`.
    pub fn free_blocks_in(&self, range: std::ops::Range<Pfn>) -> Vec<(Pfn, u8)> {
        let (pfn, end) = (range.start, range.end);
        let mut v = Vec::new();
        for (o, list) in self.free_area.iter().enumerate() {
            let hits = list.iter().filter(|&&b| b < end && pfn < b + (1 << o));
            v.extend(hits.map(|&b| (b, o as u8)));
        }
        v
    }

    /// Every free block as (first pfn, order).
    pub fn free_blocks(&self) -> Vec<(Pfn, u8)> {
        let mut v = Vec::new();
        for (order, list) in self.free_area.iter().enumerate() {
            v.extend(list.iter().map(|&p| (p, order as u8)));
        }
        v
    }

    /// Remove a free block of exactly `order`: the one containing `hint` if
    /// that page is free (splitting around it), else the most recently freed
    /// block of the smallest sufficient order. Also returns the halves
    /// handed back to the free lists, as (pfn, order).
    fn take(&mut self, order: u8, hint: Pfn) -> Option<(Pfn, Vec<(Pfn, u8)>)> {
        let target = hint & !((1 << order) - 1);
        let containing = (order..=self.max_order).find_map(|o| {
            let list = &self.free_area[o as usize];
            list.iter()
                .position(|&b| b <= target && target < b + (1 << o))
                .map(|pos| (o, pos))
        });
        let (mut o, pos) = containing.or_else(|| {
            (order..=self.max_order)
                .find(|&o| !self.free_area[o as usize].is_empty())
                .map(|o| (o, self.free_area[o as usize].len() - 1))
        })?;
        let mut block = self.free_area[o as usize].remove(pos);
        self.changed.push((block, o));
        let target = if block <= target && target < block + (1 << o) {
            target
        } else {
            block
        };
        // expand(): hand back the halves that do not hold the target.
        let mut halves = Vec::new();
        while o > order {
            o -= 1;
            let upper = block + (1 << o);
            let half = if target >= upper {
                std::mem::replace(&mut block, upper)
            } else {
                upper
            };
            self.free_area[o as usize].push(half);
            halves.push((half, o));
        }
        Some((block, halves))
    }
}

impl Machine {
    /// `__alloc_pages` with a gfp that allows direct reclaim (GFP_KERNEL,
    /// GFP_USER, GFP_HIGHUSER_MOVABLE, GFP_TRANSHUGE): `prepare_alloc_pages`'
    /// `might_alloc` is `might_sleep_if(gfpflags_allow_blocking(gfp))`.
    /// `caller` names the allocation site in the report.
    pub fn alloc_pages_may_sleep(
        &mut self,
        order: u8,
        hint: Pfn,
        caller: &str,
    ) -> Result<Option<Pfn>, Violation> {
        super::oracle::might_sleep(self, caller)?;
        self.alloc_pages(order, hint)
    }

    /// `__alloc_pages(gfp, order)`: returns the first pfn, or `None` when the
    /// allocation fails (no block, or injected failure).
    pub fn alloc_pages(&mut self, order: u8, hint: Pfn) -> Result<Option<Pfn>, Violation> {
        if self.fail_next_allocs > 0 {
            self.fail_next_allocs -= 1;
            ktrace!(self, "alloc_pages(order {order}) fails (injected)");
            return Ok(None);
        }
        let Some((pfn, halves)) = self.buddy.take(order, hint) else {
            ktrace!(self, "alloc_pages(order {order}) fails: no free block");
            return Ok(None);
        };
        // set_buddy_order on the halves handed back; post_alloc_hook below
        // clears PageBuddy on the block taken.
        for (b, o) in halves {
            let p = self.page_mut(b)?;
            p.flags |= pg::BUDDY;
            p.private = o as u32;
        }
        for f in pfn..pfn + (1 << order) {
            let frame = &mut self.frames[f as usize];
            frame.owner = Owner::Allocated;
            frame.content = Content::Data(0);
            frame.generation += 1;
        }
        // post_alloc_hook: set_page_refcounted
        let head = self.page_mut(pfn)?;
        head.refcount = 1;
        head.private = 0;
        head.flags &= !pg::BUDDY;
        if order > 0 {
            self.prep_compound_page(pfn, order)?;
        }
        ktrace!(self, "alloc_pages(order {order}) = pfn {pfn}");
        Ok(Some(pfn))
    }

    /// `prep_compound_page`: PG_head on the head, `compound_head` in every
    /// tail, the order in page[1].
    pub fn prep_compound_page(&mut self, head: Pfn, order: u8) -> Result<(), Violation> {
        self.page_mut(head)?.flags |= pg::HEAD;
        let info = if self.cfg.hvo_mode == HvoMode::SharedTail {
            CompoundInfo::TailMask(order)
        } else {
            CompoundInfo::Tail(head)
        };
        self.pages_mut(head + 1..head + (1 << order), |_, p| p.compound_info = info)?;
        let second = self.page_mut(head + 1)?;
        second.order = order;
        second.pincount = 0;
        second.entire_mapcount = -1;
        Ok(())
    }

    /// `__free_pages(page, order)` after the last put: `free_pages_prepare`
    /// scrubs the struct pages, `__free_one_page` merges buddies.
    pub fn free_pages(&mut self, pfn: Pfn, order: u8) -> Result<(), Violation> {
        super::oracle::no_tlb_entry_outlives_free(
            self,
            pfn..pfn + (1 << order),
            "the buddy allocator",
        )?;
        super::oracle::no_bad_page_at_free(self, pfn, order)?;
        // free_tail_page_prepare for each tail, and each tail's flags
        // cleared (`&= ~PAGE_FLAGS_CHECK_AT_PREP`), then the head
        // (__free_pages_prepare, v6.12).
        self.pages_mut(pfn + 1..pfn + (1 << order), |_, p| {
            p.compound_info = CompoundInfo::None;
            p.mapping = Mapping::None;
            p.order = 0;
            p.pincount = 0;
            p.flags = 0;
            p.mapcount = -1;
        })?;
        let head = self.page_mut(pfn)?;
        head.flags = 0;
        head.mapping = Mapping::None;
        head.mapcount = -1;
        for f in pfn..pfn + (1 << order) {
            let frame = &mut self.frames[f as usize];
            frame.owner = Owner::Free;
            frame.content = Content::Poison;
        }
        // __free_one_page: merge with free buddies of the same order.
        let (mut pfn, mut order) = (pfn, order);
        while order < self.buddy.max_order {
            let buddy = pfn ^ (1 << order);
            let list = &mut self.buddy.free_area[order as usize];
            let Some(pos) = list.iter().position(|&b| b == buddy) else {
                break;
            };
            list.remove(pos);
            self.buddy.changed.push((buddy, order));
            self.page_mut(buddy)?.flags &= !pg::BUDDY;
            pfn = pfn.min(buddy);
            order += 1;
        }
        self.buddy.free_area[order as usize].push(pfn);
        self.buddy.changed.push((pfn, order));
        let p = self.page_mut(pfn)?;
        p.flags |= pg::BUDDY;
        p.private = order as u32;
        ktrace!(
            self,
            "free_pages: pfn {pfn} back to the buddy at order {order}"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::Kernel;

    /// Two blocks of 512 frames: block 0 holds the 16 memmap frames, the
    /// rest of memory is free in maximal aligned blocks.
    ///
    /// ```text
    /// 0      16  32    64     128      256        512                 1024
    /// |memmap|o4 | o5  |  o6  |   o7   |    o8    |        o9         |
    /// ```
    const BOOT_FREE: [(Pfn, u8); 6] = [(16, 4), (32, 5), (64, 6), (128, 7), (256, 8), (512, 9)];

    #[test]
    fn boot_frees_everything_but_the_memmap_in_maximal_aligned_blocks() {
        let k = Kernel::boot();
        assert_eq!(k.free_blocks(), BOOT_FREE);
        for (pfn, order) in BOOT_FREE {
            let p = k.m.peek(pfn);
            assert!(p.test(pg::BUDDY), "pfn {pfn} heads a free block");
            assert_eq!(p.private, order as u32);
        }
        assert!(k.m.peek(0).test(pg::RESERVED), "the memmap is reserved");
        assert_eq!(k.m.frames[16].owner, Owner::Free);
    }

    #[test]
    fn alloc_pages_splits_the_block_holding_the_hint() {
        let mut k = Kernel::boot();

        let pfn = k.step(0, |m| m.alloc_pages(0, 600)).unwrap();

        // expand() halves the order-9 block at 512 nine times, keeping the
        // half that holds 600 and handing the other back each time:
        //
        // 512       576  592  600 601 602  604  608      640      768        1024
        // |    o6   | o4 | o3 | * | 0 | o1 | o2 |   o5   |   o7   |    o8    |
        //                       ^ the page handed out
        assert_eq!(pfn, Some(600));
        assert_eq!(
            k.free_blocks(),
            [
                (16, 4),
                (32, 5),
                (64, 6),
                (128, 7),
                (256, 8),
                (512, 6),
                (576, 4),
                (592, 3),
                (601, 0),
                (602, 1),
                (604, 2),
                (608, 5),
                (640, 7),
                (768, 8),
            ]
        );
        for (head, order) in [
            (512, 6),
            (576, 4),
            (592, 3),
            (601, 0),
            (602, 1),
            (604, 2),
            (608, 5),
            (640, 7),
            (768, 8),
        ] {
            let p = k.m.peek(head);
            assert!(p.test(pg::BUDDY), "half at pfn {head} is PageBuddy");
            assert_eq!(p.private, order as u32, "half at pfn {head} has its order");
        }
        // post_alloc_hook: the page handed out is no longer a buddy and
        // holds the caller's reference.
        let p = k.m.peek(600);
        assert!(!p.test(pg::BUDDY));
        assert_eq!((p.refcount, p.private), (1, 0));
        assert_eq!(k.m.frames[600].owner, Owner::Allocated);
        assert_eq!(k.m.frames[600].generation, 1);
    }

    #[test]
    fn free_pages_merges_the_buddies_back_into_the_original_block() {
        let mut k = Kernel::boot();
        let pfn = k.step(0, |m| m.alloc_pages(0, 600)).unwrap().unwrap();

        k.step(0, |m| m.free_pages(pfn, 0)).unwrap();

        // 600+601, +602, +604, +592, +576, +608, +512, +640, +768: order 9.
        assert_eq!(k.free_blocks(), BOOT_FREE);
        let head = k.m.peek(512);
        assert!(head.test(pg::BUDDY));
        assert_eq!(head.private, 9);
        for merged in [576, 592, 600, 601, 602, 604, 608, 640, 768] {
            assert!(!k.m.peek(merged).test(pg::BUDDY), "pfn {merged} was merged");
        }
        assert_eq!(k.m.frames[600].owner, Owner::Free);
        assert_eq!(k.m.frames[600].content, Content::Poison);
    }

    #[test]
    fn free_pages_of_a_compound_page_scrubs_its_tails() {
        let mut k = Kernel::boot();
        let folio = k.step(0, |m| m.alloc_pages(2, 600)).unwrap().unwrap();
        assert_eq!(folio, 600);
        assert!(k.m.peek(600).test(pg::HEAD));
        assert_eq!(k.m.peek(601).order, 2);
        assert_eq!(k.m.peek(603).compound_info, CompoundInfo::Tail(600));

        k.step(0, |m| m.free_pages(folio, 2)).unwrap();

        assert_eq!(k.free_blocks(), BOOT_FREE);
        assert!(!k.m.peek(600).test(pg::HEAD));
        assert_eq!(k.m.peek(601).order, 0);
        assert_eq!(k.m.peek(603).compound_info, CompoundInfo::None);
    }

    #[test]
    fn alloc_pages_without_a_free_hint_takes_the_smallest_sufficient_block() {
        let mut k = Kernel::boot();
        k.step(0, |m| m.alloc_pages(0, 600)).unwrap();

        // 600 is taken: the hint misses, and each order is served from its
        // own list before a larger block is split.
        assert_eq!(k.step(0, |m| m.alloc_pages(0, 600)).unwrap(), Some(601));
        assert_eq!(k.step(0, |m| m.alloc_pages(1, 600)).unwrap(), Some(602));
        assert_eq!(k.step(0, |m| m.alloc_pages(2, 600)).unwrap(), Some(604));
        // No order-0 block is left: split the smallest one there is, the
        // order-3 block at 592, from its start.
        assert_eq!(k.step(0, |m| m.alloc_pages(0, 600)).unwrap(), Some(592));
        assert!(k.free_blocks().contains(&(593, 0)));
        assert!(k.free_blocks().contains(&(594, 1)));
        assert!(k.free_blocks().contains(&(596, 2)));
    }

    #[test]
    fn alloc_pages_without_a_free_hint_reuses_the_most_recently_freed_page() {
        let mut k = Kernel::boot();
        for hint in [600, 601, 602, 603] {
            assert_eq!(k.step(0, |m| m.alloc_pages(0, hint)).unwrap(), Some(hint));
        }
        // Free 602, then 600: neither buddy (603, 601) is free, so both
        // stay order-0 blocks, 600 the most recently freed.
        k.step(0, |m| m.free_pages(602, 0)).unwrap();
        k.step(0, |m| m.free_pages(600, 0)).unwrap();

        assert_eq!(k.step(0, |m| m.alloc_pages(0, 601)).unwrap(), Some(600));
        assert_eq!(k.step(0, |m| m.alloc_pages(0, 601)).unwrap(), Some(602));
    }

    #[test]
    fn fail_next_allocs_makes_the_next_allocation_fail() {
        let mut k = Kernel::boot();
        k.m.fail_next_allocs = 1;

        assert_eq!(k.step(0, |m| m.alloc_pages(0, 600)).unwrap(), None);
        assert_eq!(
            k.free_blocks(),
            BOOT_FREE,
            "a failed allocation takes nothing"
        );
        assert_eq!(k.m.fail_next_allocs, 0);
        assert_eq!(k.step(0, |m| m.alloc_pages(0, 600)).unwrap(), Some(600));
    }

    #[test]
    fn alloc_pages_fails_when_no_block_is_large_enough() {
        let mut k = Kernel::boot();
        assert_eq!(k.step(0, |m| m.alloc_pages(9, 512)).unwrap(), Some(512));
        assert_eq!(k.step(0, |m| m.alloc_pages(9, 0)).unwrap(), None);
        assert_eq!(k.step(0, |m| m.alloc_pages(8, 0)).unwrap(), Some(256));
    }

    #[test]
    fn free_pages_clears_the_flags_of_every_tail_page() {
        use crate::model::memory::{handle_mm_fault, zap_pte_range};
        use crate::model::pgtable::Uaddr;
        let mut k = Kernel::boot();
        // An order-1 anonymous mTHP at 600 mapped at pages 2 and 3: each
        // page is PageAnonExclusive.
        k.on(0, |cpu| handle_mm_fault(cpu, Uaddr::new(0, 2), 600, 1))
            .unwrap();
        assert!(k.m.peek(601).test(pg::ANON_EXCLUSIVE));

        k.on(0, |cpu| zap_pte_range(cpu, Uaddr::new(0, 2))).unwrap();
        k.on(0, |cpu| zap_pte_range(cpu, Uaddr::new(0, 3))).unwrap();
        assert_eq!(k.m.frames[601].owner, Owner::Free);

        // __free_pages_prepare clears PAGE_FLAGS_CHECK_AT_PREP in every
        // tail; a page allocated later (say, as a page-cache page) must not
        // inherit PG_anon_exclusive, which try_to_migrate_one() reads.
        assert_eq!(k.m.peek(601).flags, 0, "flags of the freed tail page 601");
    }

    #[test]
    fn freeing_a_page_still_on_the_lru_is_a_bad_page() {
        let mut k = Kernel::boot();
        assert_eq!(k.step(0, |m| m.alloc_pages(0, 600)).unwrap(), Some(600));
        k.m.peek_mut(600).flags |= pg::LRU;

        let err = k.step(0, |m| m.free_pages(600, 0)).unwrap_err();

        assert_eq!(err.oracle, crate::model::Oracle::BadPage);
        assert!(
            err.detail.contains("PAGE_FLAGS_CHECK_AT_FREE"),
            "{}",
            err.detail
        );
    }

    #[test]
    fn freeing_a_compound_page_with_a_stray_tail_is_a_bad_page() {
        let mut k = Kernel::boot();
        assert_eq!(k.step(0, |m| m.alloc_pages(2, 600)).unwrap(), Some(600));
        k.m.peek_mut(600).flags |= pg::HEAD;
        for t in 601..604 {
            k.m.peek_mut(t).compound_info = CompoundInfo::Tail(600);
        }
        k.m.peek_mut(602).compound_info = CompoundInfo::Tail(512);

        let err = k.step(0, |m| m.free_pages(600, 2)).unwrap_err();

        assert_eq!(err.oracle, crate::model::Oracle::BadPage);
        assert!(err.detail.contains("pfn 602"), "{}", err.detail);
    }
}
