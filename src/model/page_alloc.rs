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

#[derive(Debug, Clone)]
pub struct Buddy {
    max_order: u8,
    /// `zone->free_area[order]`, most recently freed last.
    free_area: Vec<Vec<Pfn>>,
}

impl Buddy {
    pub fn new(max_order: u8) -> Self {
        Buddy {
            max_order,
            free_area: vec![Vec::new(); max_order as usize + 1],
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
        for tail in head + 1..head + (1 << order) {
            self.page_mut(tail)?.compound_info = info;
        }
        let second = self.page_mut(head + 1)?;
        second.order = order;
        second.pincount = 0;
        second.entire_mapcount = -1;
        Ok(())
    }

    /// `__free_pages(page, order)` after the last put: `free_pages_prepare`
    /// scrubs the struct pages, `__free_one_page` merges buddies.
    pub fn free_pages(&mut self, pfn: Pfn, order: u8) -> Result<(), Violation> {
        // free_tail_page_prepare for each tail, then the head.
        for tail in pfn + 1..pfn + (1 << order) {
            let p = self.page_mut(tail)?;
            p.compound_info = CompoundInfo::None;
            p.mapping = Mapping::None;
            p.order = 0;
            p.pincount = 0;
        }
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
            self.page_mut(buddy)?.flags &= !pg::BUDDY;
            pfn = pfn.min(buddy);
            order += 1;
        }
        self.buddy.free_area[order as usize].push(pfn);
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
