//! The buddy allocator (mm/page_alloc.c).
//!
//! Which free page an allocation gets depends, in the kernel, on per-CPU
//! lists, zones and history the model does not carry; the scenario chooses
//! it instead (a pfn hint), so generated inputs explore placements.

use super::KResult;
use super::config::{HvoMode, STRUCT_PAGES_PER_VMEMMAP_PAGE};
use super::ctx::Cpu;
use super::machine::{Content, Machine, Owner, Pfn};
use super::mm_types::{CompoundInfo, Mapping, pg};
use super::oracle::Violation;
use crate::ktrace;
use std::ops::Range;

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

    /// `__alloc_pages(gfp, order)` in one step: returns the first pfn, or
    /// `None` when the allocation fails (no block, or injected failure).
    /// For callers inside another step, which all allocate order 0 (page
    /// tables, vmemmap frames, page-cache and COW pages), where there is no
    /// compound store to split off, and for tests. A compound allocation
    /// from a CPU-level path takes [`alloc_pages_then`], which gives
    /// `prep_compound_page`'s stores steps of their own.
    pub fn alloc_pages(&mut self, order: u8, hint: Pfn) -> Result<Option<Pfn>, Violation> {
        let pfn = self.alloc_pages_head(order, hint)?;
        if let Some(pfn) = pfn
            && order > 0
        {
            for tails in tail_chunks(pfn, order) {
                self.prep_compound_tails(pfn, order, tails)?;
            }
            self.prep_compound_head(pfn, order)?;
            self.set_page_refcounted(pfn)?;
        }
        Ok(pfn)
    }

    /// `__alloc_pages` up to the first store of `prep_compound_page`
    /// (v6.12 mm/page_alloc.c): `rmqueue` takes the block under
    /// `zone->lock` (`expand` hands the halves back with
    /// `set_buddy_order`), `prep_new_page`'s `post_alloc_hook` clears
    /// `page->private`, and for a compound allocation `__SetPageHead`. An
    /// order-0 page gets its refcount here; a compound one stays frozen at
    /// 0, its tails untouched: [`Machine::prep_compound_tails`],
    /// [`Machine::prep_compound_head`] and [`Machine::set_page_refcounted`]
    /// follow.
    pub fn alloc_pages_head(&mut self, order: u8, hint: Pfn) -> Result<Option<Pfn>, Violation> {
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
        // post_alloc_hook: set_page_private (and the refcount of order 0).
        let head = self.page_mut(pfn)?;
        head.refcount = (order == 0) as i32;
        head.private = 0;
        head.flags &= !pg::BUDDY;
        if order > 0 {
            // prep_compound_page: __SetPageHead
            head.flags |= pg::HEAD;
        }
        ktrace!(self, "alloc_pages(order {order}) = pfn {pfn}");
        Ok(Some(pfn))
    }

    /// `set_page_refcounted` of a compound allocation, after
    /// `prep_compound_page`: `__alloc_pages_noprof` once
    /// `__alloc_frozen_pages_noprof` returns (v6.14+), so a speculative
    /// `folio_try_get` fails on the folio until it is whole. v6.12's
    /// `post_alloc_hook` set it before `prep_compound_page`: a GUP-fast pin
    /// through a stale PTE could then land mid-prep, see PG_head, add to
    /// `_pincount`, and have `prep_compound_head` reset it (the pin's
    /// release then takes it to -1). The default hunt found that in the
    /// thp arm (test
    /// `a_speculative_reference_on_a_compound_folio_mid_prep_is_refused`).
    pub fn set_page_refcounted(&mut self, head: Pfn) -> Result<(), Violation> {
        self.page_mut(head)?.refcount = 1;
        ktrace!(self, "set_page_refcounted(pfn {head})");
        Ok(())
    }

    /// `prep_compound_tail` (v6.12 mm/internal.h) for each tail of `tails`:
    /// `compound_head` pointing at `head` (a mask in the shared-tail
    /// design), `page->private` cleared.
    pub fn prep_compound_tails(
        &mut self,
        head: Pfn,
        order: u8,
        tails: Range<Pfn>,
    ) -> Result<(), Violation> {
        let info = if self.cfg.hvo_mode == HvoMode::SharedTail {
            CompoundInfo::TailMask(order)
        } else {
            CompoundInfo::Tail(head)
        };
        self.pages_mut(tails, |_, p| {
            p.compound_info = info;
            p.private = 0;
        })
    }

    /// `prep_compound_head` (v6.12 mm/internal.h), after every tail:
    /// `folio_set_order` in page[1], the mapcounts and pincount reset.
    /// Until this store `compound_order` of the head reads 0.
    pub fn prep_compound_head(&mut self, head: Pfn, order: u8) -> Result<(), Violation> {
        let second = self.page_mut(head + 1)?;
        second.order = order;
        second.pincount = 0;
        second.entire_mapcount = -1;
        ktrace!(self, "prep_compound_head(pfn {head}, order {order})");
        Ok(())
    }

    /// `__free_pages(page, order)` after the last put, in one step. For
    /// callers inside another step, which all free order 0: page tables
    /// (`pagetable_free`, once no walker may be on them) and HVO's vmemmap
    /// frames (`free_vmemmap_page_list`, after the remap's flush). An
    /// order-0 free has no tails, so [`free_pages_then`] would take one
    /// step for it too. A folio a CPU-level path frees, of any order, takes
    /// [`free_pages_then`].
    pub fn free_pages(&mut self, pfn: Pfn, order: u8) -> Result<(), Violation> {
        self.free_pages_prepare_begin(pfn, order)?;
        for tails in tail_chunks(pfn, order) {
            self.free_tail_pages_prepare(pfn, order, tails)?;
        }
        self.free_pages_prepare_head(pfn, order)
    }

    /// The start of `free_pages_prepare` (v6.12 mm/page_alloc.c): no TLB
    /// may still translate to the pages (the model's oracle), and a
    /// compound page's `page[1].flags &= ~PAGE_FLAGS_SECOND`, which clears
    /// the order `folio_set_order` left there: from here `compound_order`
    /// of the head reads 0 while PG_head is still set.
    pub fn free_pages_prepare_begin(&mut self, pfn: Pfn, order: u8) -> Result<(), Violation> {
        super::oracle::no_tlb_entry_outlives_free(
            self,
            pfn..pfn + (1 << order),
            "the buddy allocator",
        )?;
        if order > 0 && self.page(pfn)?.test(pg::HEAD) {
            self.page_mut(pfn + 1)?.order = 0;
        }
        Ok(())
    }

    /// `free_pages_prepare`'s loop over the tails of `tails`, in pfn order:
    /// `free_tail_page_prepare` (checks, then `mapping` and `compound_head`
    /// cleared), `free_page_is_bad`, and `flags &= ~PAGE_FLAGS_CHECK_AT_PREP`.
    pub fn free_tail_pages_prepare(
        &mut self,
        pfn: Pfn,
        order: u8,
        tails: Range<Pfn>,
    ) -> Result<(), Violation> {
        super::oracle::no_bad_page_at_free(self, pfn, order, tails.clone())?;
        self.pages_mut(tails, |_, p| {
            p.compound_info = CompoundInfo::None;
            p.mapping = Mapping::None;
            p.order = 0;
            p.pincount = 0;
            p.flags = 0;
            p.mapcount = -1;
        })
    }

    /// The end of `free_pages_prepare`, after the tails: the head's
    /// `mapping` cleared, `free_page_is_bad(page)`, its flags cleared
    /// (PG_head with them); then `free_one_page`'s `__free_one_page` merges
    /// it with free buddies under `zone->lock` and `set_buddy_order` marks
    /// the merged block. One step: between the two a reader sees a page with
    /// no flags and refcount 0, as it sees any page the allocator holds.
    pub fn free_pages_prepare_head(&mut self, pfn: Pfn, order: u8) -> Result<(), Violation> {
        super::oracle::no_bad_page_at_free(self, pfn, order, pfn..pfn + 1)?;
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

/// `__alloc_pages(gfp | __GFP_COMP, order)` (v6.12 mm/page_alloc.c) for a
/// caller at CPU level, with the caller's own work around it. Step `func`
/// runs `request` (the caller's checks, which pick the order and the pfn
/// hint, or `None` to allocate nothing), `might_sleep` for `caller`, and
/// [`Machine::alloc_pages_head`]: the block is taken, refcounted and, if
/// compound, has PG_head. Then `prep_compound_page`'s tail stores run as
/// steps of their own, one per vmemmap page of tails ([`tail_chunks`]), so
/// a speculative pfn walker can find a head whose tails are not set yet,
/// and `prep_compound_head` with `then` (the caller's first stores to the
/// new folio, before anyone else can find it through a mapping or the page
/// cache) as the last. An order-0 allocation stays one step, `then`
/// included. `None` when `request` declined, `Some(None)` when the
/// allocation failed.
pub fn alloc_pages_then<T>(
    cpu: &Cpu,
    func: &'static str,
    caller: &str,
    request: impl FnOnce(&mut Machine) -> Result<Option<(u8, Pfn)>, Violation>,
    then: impl FnOnce(&mut Machine, Pfn, u8) -> Result<T, Violation>,
) -> KResult<Option<Option<T>>> {
    enum Taken<T> {
        Declined,
        Failed,
        Done(T),
        Compound(Pfn, u8),
    }
    let mut then = Some(then);
    let taken = cpu.step(func, |m| {
        let Some((order, hint)) = request(m)? else {
            return Ok(Taken::Declined);
        };
        super::oracle::might_sleep(m, caller)?;
        let Some(pfn) = m.alloc_pages_head(order, hint)? else {
            return Ok(Taken::Failed);
        };
        if order == 0 {
            let then = then.take().expect("then runs once");
            return then(m, pfn, 0).map(Taken::Done);
        }
        Ok(Taken::Compound(pfn, order))
    })?;
    let (pfn, order) = match taken {
        Taken::Declined => return Ok(None),
        Taken::Failed => return Ok(Some(None)),
        Taken::Done(t) => return Ok(Some(Some(t))),
        Taken::Compound(pfn, order) => (pfn, order),
    };
    for tails in tail_chunks(pfn, order) {
        cpu.step("prep_compound_tail", |m| {
            ktrace!(
                m,
                "prep_compound_tail(pfn {pfn}): tails {}..{}",
                tails.start,
                tails.end
            );
            m.prep_compound_tails(pfn, order, tails.clone())
        })?;
    }
    let then = then.take().expect("then runs once");
    cpu.step("prep_compound_head", |m| {
        m.prep_compound_head(pfn, order)?;
        m.set_page_refcounted(pfn)?;
        then(m, pfn, order)
    })
    .map(|t| Some(Some(t)))
}

/// [`alloc_pages_then`] of a fixed order with nothing of the caller's
/// around it: `__folio_alloc(gfp, order)` returning the folio.
pub fn folio_alloc(
    cpu: &Cpu,
    func: &'static str,
    order: u8,
    hint: Pfn,
    caller: &str,
) -> KResult<Option<Pfn>> {
    let got = alloc_pages_then(
        cpu,
        func,
        caller,
        |_| Ok(Some((order, hint))),
        |_, pfn, _| Ok(pfn),
    )?;
    Ok(got.flatten())
}

/// `free_pages_prepare` and `free_one_page` (v6.12 mm/page_alloc.c) for a
/// caller at CPU level that dropped the last reference. Step `func` runs
/// `first` (the caller's own work, which returns the pfn and order to
/// free) and the start of `free_pages_prepare`, with the tails of the
/// head's vmemmap page; each further vmemmap page of tails is a step
/// (`free_tail_page_prepare`, [`tail_chunks`]), in the kernel's order,
/// and the head, cleared after every tail, and its return to the buddy
/// lists is the last. In between a pfn walker finds a head that still has
/// PG_head but reads order 0 from page[1], with some tails cleared and
/// others not. An order-0 free stays one step.
pub fn free_pages_then(
    cpu: &Cpu,
    func: &'static str,
    first: impl FnOnce(&mut Machine) -> Result<(Pfn, u8), Violation>,
) -> KResult<()> {
    let (pfn, order) = cpu.step(func, |m| {
        let (pfn, order) = first(m)?;
        m.free_pages_prepare_begin(pfn, order)?;
        match tail_chunks(pfn, order).next() {
            None => m.free_pages_prepare_head(pfn, order)?,
            Some(tails) => free_tail_page_prepare(m, pfn, order, tails)?,
        }
        Ok((pfn, order))
    })?;
    if order == 0 {
        return Ok(());
    }
    for tails in tail_chunks(pfn, order).skip(1) {
        cpu.step("free_tail_page_prepare", |m| {
            free_tail_page_prepare(m, pfn, order, tails.clone())
        })?;
    }
    cpu.step("free_one_page", |m| m.free_pages_prepare_head(pfn, order))
}

/// One step's [`Machine::free_tail_pages_prepare`], traced.
fn free_tail_page_prepare(
    m: &mut Machine,
    pfn: Pfn,
    order: u8,
    tails: Range<Pfn>,
) -> Result<(), Violation> {
    ktrace!(
        m,
        "free_tail_page_prepare(pfn {pfn}): tails {}..{}",
        tails.start,
        tails.end
    );
    m.free_tail_pages_prepare(pfn, order, tails)
}

/// The tails of the order-`order` folio at `head` that one step of
/// [`alloc_pages_then`] or [`free_pages_then`] stores to: those whose struct
/// pages share one vmemmap page (64 struct pages of 64 bytes in 4 KiB), in
/// the ascending order the kernel's loops over `page + i` walk them.
///
/// The kernel stores one tail at a time, but a hugetlb folio has 127..1023
/// tails and the schedulers cannot afford a step each. A vmemmap page is
/// the unit the races over struct pages are about: HVO remaps, and
/// `page_fixed_fake_head` inspects, whole vmemmap pages, and a tail in
/// another vmemmap page than the one being stored stays as it was. What a
/// step per tail would add is a reader seeing, inside one vmemmap page,
/// some tails set and others not; the model's speculative readers (the pfn
/// walker, GUP-fast, `page_fixed_fake_head`) each read one tail, and see
/// it set or not set either way.
pub fn tail_chunks(head: Pfn, order: u8) -> impl Iterator<Item = Range<Pfn>> {
    let end = head + (1 << order);
    let mut next = head + 1;
    std::iter::from_fn(move || {
        if next >= end {
            return None;
        }
        let stop =
            end.min((next / STRUCT_PAGES_PER_VMEMMAP_PAGE + 1) * STRUCT_PAGES_PER_VMEMMAP_PAGE);
        let chunk = next..stop;
        next = stop;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::page_ref::page_ref_add_unless;
    use crate::model::pfn_walker::pfn_walk;
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

        // free_pages_prepare clears PAGE_FLAGS_CHECK_AT_PREP in every
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

    /// CPU 1's `isolate_migratepages_block` visit of each of `pfns`: the
    /// lines it traced.
    fn pfn_walks(k: &mut Kernel, pfns: &[Pfn]) -> Vec<String> {
        k.trace_on();
        for &pfn in pfns {
            k.on(1, |cpu| pfn_walk(cpu, pfn)).unwrap();
        }
        k.take_trace()
    }

    fn traced(trace: &[String], line: &str) -> bool {
        trace.iter().any(|l| l.contains(line))
    }

    const FOLIO: Pfn = 512;

    #[test]
    fn a_pfn_walker_between_set_page_head_and_the_tail_stores_skips_an_order_0_head() {
        let mut k = Kernel::boot();
        // CPU 0: __alloc_pages(GFP_COMP, 9) through post_alloc_hook and
        // prep_compound_page's __SetPageHead, no tail stored yet.
        assert_eq!(
            k.step(0, |m| m.alloc_pages_head(9, FOLIO)).unwrap(),
            Some(FOLIO)
        );
        assert_eq!(
            k.m.peek(FOLIO).refcount,
            0,
            "frozen until prep_compound_page is done"
        );

        let trace = pfn_walks(&mut k, &[FOLIO, FOLIO + 88]);

        // The head is PageCompound, and compound_order reads page[1]'s
        // order, not stored yet: 0. The tail has neither PG_head nor its
        // tail bit: an order-0 page, not on the LRU.
        assert!(traced(&trace, "compound_order(pfn 512) = 0"), "{trace:#?}");
        assert!(
            traced(&trace, "page = pfn_to_page(600); PageLRU = false"),
            "{trace:#?}"
        );
        assert_eq!(k.m.peek(FOLIO).refcount, 0, "the walker took no reference");
        assert_eq!(k.m.peek(FOLIO + 88).refcount, 0);
    }

    /// The race the default hunt found in v6.12's order (a THP freed and
    /// reallocated at the pfn a GUP-fast pin had looked up):
    ///
    /// ```text
    /// CPU 0 (THP fault)                   CPU 1 (GUP-fast pin, stale PTE)
    /// alloc_pages_head(1)  PG_head
    ///                                     folio_ref_try_add(folio)   v6.12: 1 -> 2
    ///                                     PG_head: _pincount += 1
    /// prep_compound_tail, prep_compound_head: _pincount = 0
    ///                                     recheck fails: _pincount -= 1 -> -1
    /// ```
    ///
    /// With the refcount set after prep (v6.14+), CPU 1's add finds it 0.
    #[test]
    fn a_speculative_reference_on_a_compound_folio_mid_prep_is_refused() {
        let mut k = Kernel::boot();
        let folio = k
            .step(0, |m| m.alloc_pages_head(1, FOLIO))
            .unwrap()
            .unwrap();

        let got = k.on(1, |cpu| page_ref_add_unless(cpu, folio, 1, 0));
        assert_eq!(got, Ok(false), "refcount 0 until the folio is whole");

        k.step(0, |m| {
            m.prep_compound_tails(folio, 1, folio + 1..folio + 2)?;
            m.prep_compound_head(folio, 1)?;
            m.set_page_refcounted(folio)
        })
        .unwrap();
        let got = k.on(1, |cpu| page_ref_add_unless(cpu, folio, 1, 0));
        assert_eq!(got, Ok(true));
        assert_eq!(k.m.peek(folio).refcount, 2);
        assert_eq!(k.m.peek(folio + 1).pincount, 0);
    }

    #[test]
    fn a_pfn_walker_between_the_tail_stores_sees_the_tails_of_one_vmemmap_page_set() {
        let mut k = Kernel::boot();
        assert_eq!(
            k.step(0, |m| m.alloc_pages_head(9, FOLIO)).unwrap(),
            Some(FOLIO)
        );
        let mut chunks = tail_chunks(FOLIO, 9);
        // CPU 0: prep_compound_tail for the tails of the head's vmemmap
        // page (513..576) only.
        let first = chunks.next().unwrap();
        assert_eq!(first, 513..576);
        k.step(0, |m| m.prep_compound_tails(FOLIO, 9, first))
            .unwrap();

        let trace = pfn_walks(&mut k, &[FOLIO + 1, FOLIO + 88]);

        // 513 has its tail bit: PageCompound, skipped before PageLRU (a
        // tail's own flags have no PG_head, so compound_order is 0). 600,
        // in the next vmemmap page, is still a plain page.
        assert!(!traced(&trace, "pfn_to_page(513)"), "{trace:#?}");
        assert!(
            traced(&trace, "page = pfn_to_page(600); PageLRU = false"),
            "{trace:#?}"
        );

        for tails in chunks {
            k.step(0, |m| m.prep_compound_tails(FOLIO, 9, tails))
                .unwrap();
        }
        // Every tail set, prep_compound_head still to come.
        let before = pfn_walks(&mut k, &[FOLIO, FOLIO + 88]);
        k.step(0, |m| m.prep_compound_head(FOLIO, 9)).unwrap();
        let after = pfn_walks(&mut k, &[FOLIO]);

        assert!(!traced(&before, "PageLRU"), "{before:#?}");
        assert!(
            traced(&before, "compound_order(pfn 512) = 0"),
            "{before:#?}"
        );
        assert!(traced(&after, "compound_order(pfn 512) = 9"), "{after:#?}");
        assert_eq!(
            k.m.peek(FOLIO + 88).compound_info,
            CompoundInfo::Tail(FOLIO)
        );
    }

    #[test]
    fn folio_alloc_stores_the_tails_one_vmemmap_page_per_step_then_the_head() {
        let mut k = Kernel::boot();

        let (folio, lines) = k
            .on_traced(0, |cpu| folio_alloc(cpu, "test", 9, FOLIO, "test"))
            .unwrap();

        assert_eq!(folio, Some(FOLIO));
        let steps: Vec<(u32, &str)> = lines
            .iter()
            .filter(|(_, l)| l.starts_with("alloc_pages") || l.starts_with("prep_compound"))
            .map(|(s, l)| (*s, l.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                (1, "alloc_pages(order 9) = pfn 512"),
                (2, "prep_compound_tail(pfn 512): tails 513..576"),
                (3, "prep_compound_tail(pfn 512): tails 576..640"),
                (4, "prep_compound_tail(pfn 512): tails 640..704"),
                (5, "prep_compound_tail(pfn 512): tails 704..768"),
                (6, "prep_compound_tail(pfn 512): tails 768..832"),
                (7, "prep_compound_tail(pfn 512): tails 832..896"),
                (8, "prep_compound_tail(pfn 512): tails 896..960"),
                (9, "prep_compound_tail(pfn 512): tails 960..1024"),
                (10, "prep_compound_head(pfn 512, order 9)"),
            ]
        );
        for t in FOLIO + 1..FOLIO + 512 {
            assert_eq!(k.m.peek(t).compound_info, CompoundInfo::Tail(FOLIO));
        }
        assert_eq!(k.m.peek(FOLIO + 1).order, 9);
        assert_eq!(k.m.peek(FOLIO).refcount, 1);
    }

    #[test]
    fn an_order_0_folio_alloc_is_one_step() {
        let mut k = Kernel::boot();

        let (folio, lines) = k
            .on_traced(0, |cpu| folio_alloc(cpu, "test", 0, 600, "test"))
            .unwrap();

        assert_eq!(folio, Some(600));
        assert!(lines.iter().all(|(s, _)| *s == 1), "{lines:#?}");
    }

    #[test]
    fn a_pfn_walker_in_the_middle_of_free_pages_prepare_sees_an_order_0_head() {
        use crate::model::page_ref::folio_ref_sub_and_test;
        let mut k = Kernel::boot();
        assert_eq!(k.step(0, |m| m.alloc_pages(9, FOLIO)).unwrap(), Some(FOLIO));
        assert!(k.step(0, |m| folio_ref_sub_and_test(m, FOLIO, 1)).unwrap());
        // CPU 0: free_pages_prepare through page[1]'s PAGE_FLAGS_SECOND
        // and the tails of the head's vmemmap page.
        k.step(0, |m| {
            m.free_pages_prepare_begin(FOLIO, 9)?;
            m.free_tail_pages_prepare(FOLIO, 9, 513..576)
        })
        .unwrap();

        let trace = pfn_walks(&mut k, &[FOLIO, FOLIO + 1, FOLIO + 88]);

        // The head keeps PG_head until after its tails, but its order is
        // gone: compound_order reads 0. 513 is a plain page again; 600,
        // not yet prepared, is still a tail: skipped as compound.
        assert!(traced(&trace, "compound_order(pfn 512) = 0"), "{trace:#?}");
        assert!(
            traced(&trace, "page = pfn_to_page(513); PageLRU = false"),
            "{trace:#?}"
        );
        assert!(!traced(&trace, "pfn_to_page(600)"), "{trace:#?}");
        assert!(!traced(&trace, "buddy_order_unsafe"), "{trace:#?}");
        assert_eq!(k.m.frames[600].owner, Owner::Allocated, "not free yet");

        for tails in tail_chunks(FOLIO, 9).skip(1) {
            k.step(0, |m| m.free_tail_pages_prepare(FOLIO, 9, tails))
                .unwrap();
        }
        k.step(0, |m| m.free_pages_prepare_head(FOLIO, 9)).unwrap();
        let freed = pfn_walks(&mut k, &[FOLIO]);

        assert!(
            traced(&freed, "buddy_order_unsafe(pfn 512) = 9"),
            "{freed:#?}"
        );
        assert_eq!(k.free_blocks(), BOOT_FREE);
    }

    #[test]
    fn the_last_folio_put_frees_the_tails_one_vmemmap_page_per_step_then_the_head() {
        use crate::model::page_ref::folio_put;
        let mut k = Kernel::boot();
        assert_eq!(k.step(0, |m| m.alloc_pages(7, 640)).unwrap(), Some(640));

        let ((), lines) = k.on_traced(0, |cpu| folio_put(cpu, 640)).unwrap();

        let steps: Vec<(u32, &str)> = lines
            .iter()
            .filter(|(_, l)| l.starts_with("free_"))
            .map(|(s, l)| (*s, l.as_str()))
            .collect();
        // Step 1 is the put, step 2 __folio_put's PageHuge test.
        assert_eq!(
            steps,
            [
                (3, "free_tail_page_prepare(pfn 640): tails 641..704"),
                (4, "free_tail_page_prepare(pfn 640): tails 704..768"),
                (5, "free_pages: pfn 512 back to the buddy at order 9"),
            ]
        );
        assert_eq!(k.free_blocks(), BOOT_FREE);
    }

    #[test]
    fn a_bad_tail_in_a_later_vmemmap_page_is_found_after_the_earlier_tails_are_cleared() {
        use crate::model::page_ref::folio_put;
        let mut k = Kernel::boot();
        assert_eq!(k.step(0, |m| m.alloc_pages(7, 640)).unwrap(), Some(640));
        k.m.peek_mut(720).compound_info = CompoundInfo::Tail(512);

        let err = k.on(0, |cpu| folio_put(cpu, 640)).unwrap_err();

        // free_tail_page_prepare checks each tail as it reaches it: the
        // head's vmemmap page was already scrubbed when 720 fails.
        assert_eq!(err.oracle, crate::model::Oracle::BadPage);
        assert!(err.detail.contains("pfn 720"), "{}", err.detail);
        assert_eq!(k.m.peek(641).compound_info, CompoundInfo::None);
        assert_eq!(k.m.peek(705).compound_info, CompoundInfo::Tail(640));
        assert!(k.m.peek(640).test(pg::HEAD), "the head is cleared last");
    }
}
