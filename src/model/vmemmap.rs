//! The vmemmap page table and per-CPU TLBs (mm/sparse-vmemmap.c,
//! arch TLB flushing). Every struct page access goes through here, so a
//! remap really changes what a struct page address reads.

use super::config::STRUCT_PAGES_PER_VMEMMAP_PAGE;
use super::machine::{Content, Machine, Owner, Pfn};
use super::mm_types::StructPage;
use super::oracle::{self, Violation};
use std::panic::Location;

/// A vmemmap PTE: the frame a vmemmap page maps and its permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pte {
    pub frame: Pfn,
    pub writable: bool,
}

#[derive(Debug)]
pub struct Vmemmap {
    pub ptes: Vec<Pte>,
}

crate::clone_by_field!(Vmemmap { ptes });

impl Vmemmap {
    /// Boot: vmemmap page `i` maps memmap frame `i`, read-write.
    pub fn new(nr_pages: u32) -> Self {
        Vmemmap {
            ptes: (0..nr_pages)
                .map(|frame| Pte {
                    frame,
                    writable: true,
                })
                .collect(),
        }
    }
}

/// The vmemmap page holding `pfn_to_page(pfn)`.
pub fn vmemmap_page_of(pfn: Pfn) -> u32 {
    pfn / STRUCT_PAGES_PER_VMEMMAP_PAGE
}

/// `IS_ALIGNED(page, PAGE_SIZE)`: the first struct page of a vmemmap page.
pub fn page_aligned(pfn: Pfn) -> bool {
    pfn.is_multiple_of(STRUCT_PAGES_PER_VMEMMAP_PAGE)
}

/// One struct-page access through the vmemmap, as the running CPU's TLB
/// translated it.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub pfn: Pfn,
    pub write: bool,
    /// The translation used (possibly stale).
    pub pte: Pte,
    /// Who owns the frame it reaches.
    pub owner: Owner,
    /// The frame privately backs another vmemmap page (or is shared): the
    /// struct page read is not `pfn`'s own.
    pub aliased: bool,
    /// Through a TLB entry the page table no longer holds.
    pub stale: bool,
    /// Where in the model the access is made.
    pub site: &'static Location<'static>,
}

impl Machine {
    /// Translate through the running CPU's TLB, filling it on a miss, and
    /// check the access invariants.
    fn access(
        &mut self,
        pfn: Pfn,
        write: bool,
        site: &'static Location<'static>,
    ) -> Result<Access, Violation> {
        let vpage = vmemmap_page_of(pfn);
        let cpu = self.cpu_index();
        let current = self.vmemmap.ptes[vpage as usize];
        let pte = *self.cpus[cpu].tlb[vpage as usize].get_or_insert(current);
        let owner = self.frames[pte.frame as usize].owner;
        let a = Access {
            pfn,
            write,
            pte,
            owner,
            aliased: !matches!(owner, Owner::Memmap { home } if home == Some(vpage)),
            stale: pte != current,
            site,
        };
        oracle::at_access(&a)?;
        Ok(a)
    }

    fn slot(&mut self, a: &Access) -> &mut StructPage {
        match &mut self.frames[a.pte.frame as usize].content {
            Content::Memmap(pages) => &mut pages[(a.pfn % STRUCT_PAGES_PER_VMEMMAP_PAGE) as usize],
            _ => unreachable!("memmap-owned frame without struct pages"),
        }
    }

    fn observe(&mut self, a: &Access, seen: &StructPage) {
        if let Some(c) = self.kcov.as_mut() {
            c.record_access(a, seen);
        }
        if self.reached.is_some() {
            let got = oracle::observe_access(a, seen);
            self.reach(got);
        }
    }

    /// Record reachability properties an execution got to.
    pub fn reach(&mut self, bits: u64) {
        if let Some(r) = self.reached.as_mut() {
            *r |= bits;
        }
    }

    /// Read `pfn_to_page(pfn)` as the running CPU sees it.
    #[track_caller]
    pub fn page(&mut self, pfn: Pfn) -> Result<StructPage, Violation> {
        let a = self.access(pfn, false, Location::caller())?;
        let seen = *self.slot(&a);
        self.observe(&a, &seen);
        Ok(seen)
    }

    /// Write access to `pfn_to_page(pfn)` as the running CPU sees it.
    #[track_caller]
    pub fn page_mut(&mut self, pfn: Pfn) -> Result<&mut StructPage, Violation> {
        let a = self.access(pfn, true, Location::caller())?;
        if self.kcov.is_some() || self.reached.is_some() {
            let seen = *self.slot(&a);
            self.observe(&a, &seen);
        }
        Ok(self.slot(&a))
    }

    /// Write access to the struct pages of `pfns` as the running CPU sees
    /// them, `f` on each in turn: a loop over consecutive struct pages, as
    /// `prep_compound_page` runs, translates (and checks) each vmemmap page
    /// once.
    #[track_caller]
    pub fn pages_mut(
        &mut self,
        pfns: std::ops::Range<Pfn>,
        mut f: impl FnMut(Pfn, &mut StructPage),
    ) -> Result<(), Violation> {
        let site = Location::caller();
        let observing = self.kcov.is_some() || self.reached.is_some();
        let mut pfn = pfns.start;
        while pfn < pfns.end {
            let first = self.access(pfn, true, site)?;
            let end = pfns
                .end
                .min((vmemmap_page_of(pfn) + 1) * STRUCT_PAGES_PER_VMEMMAP_PAGE);
            for p in pfn..end {
                let a = Access { pfn: p, ..first };
                if observing {
                    let seen = *self.slot(&a);
                    self.observe(&a, &seen);
                }
                f(p, self.slot(&a));
            }
            pfn = end;
        }
        Ok(())
    }

    /// The translation the running CPU would use for `pfn`'s struct page,
    /// filling its TLB, without accessing it.
    pub fn resolve(&mut self, pfn: Pfn) -> Pte {
        let vpage = vmemmap_page_of(pfn);
        let cpu = self.cpu_index();
        let current = self.vmemmap.ptes[vpage as usize];
        *self.cpus[cpu].tlb[vpage as usize].get_or_insert(current)
    }

    /// Is `pfn`'s struct page reached through an alias by the running CPU?
    pub fn resolves_aliased(&mut self, pfn: Pfn) -> bool {
        let vpage = vmemmap_page_of(pfn);
        let pte = self.resolve(pfn);
        !matches!(self.frames[pte.frame as usize].owner, Owner::Memmap { home } if home == Some(vpage))
    }

    /// The struct page `pfn` reads through the page table, bypassing TLBs:
    /// the oracles' view, which never faults.
    pub fn peek(&self, pfn: Pfn) -> &StructPage {
        let pte = self.vmemmap.ptes[vmemmap_page_of(pfn) as usize];
        match &self.frames[pte.frame as usize].content {
            Content::Memmap(pages) => &pages[(pfn % STRUCT_PAGES_PER_VMEMMAP_PAGE) as usize],
            _ => unreachable!("vmemmap PTE maps a frame without struct pages"),
        }
    }

    /// Does `pfn`'s vmemmap page map a frame that is not its own (an HVO
    /// alias)? Its struct page then has no storage of its own.
    pub fn peek_aliased(&self, pfn: Pfn) -> bool {
        let vpage = vmemmap_page_of(pfn);
        let pte = self.vmemmap.ptes[vpage as usize];
        !matches!(self.frames[pte.frame as usize].owner, Owner::Memmap { home: Some(h) } if h == vpage)
    }

    /// Boot-time and allocator-internal writes through the page table.
    pub fn peek_mut(&mut self, pfn: Pfn) -> &mut StructPage {
        let pte = self.vmemmap.ptes[vmemmap_page_of(pfn) as usize];
        match &mut self.frames[pte.frame as usize].content {
            Content::Memmap(pages) => &mut pages[(pfn % STRUCT_PAGES_PER_VMEMMAP_PAGE) as usize],
            _ => unreachable!("vmemmap PTE maps a frame without struct pages"),
        }
    }

    /// `set_pte_at(&init_mm, addr, pte, entry)` on the vmemmap.
    pub fn set_vmemmap_pte(&mut self, vpage: u32, pte: Pte) {
        self.vmemmap.ptes[vpage as usize] = pte;
    }

    /// `flush_tlb_kernel_range`: every CPU drops its translations of the range.
    pub fn flush_tlb_kernel_range(&mut self, vpages: std::ops::Range<u32>) {
        for cpu in &mut self.cpus {
            for e in &mut cpu.tlb[vpages.start as usize..vpages.end as usize] {
                *e = None;
            }
        }
    }

    /// `flush_tlb_all`.
    pub fn flush_tlb_all(&mut self) {
        for cpu in &mut self.cpus {
            cpu.tlb.iter_mut().for_each(|e| *e = None);
        }
    }

    /// The struct pages of a vmemmap page, read through the running CPU's
    /// mapping (`copy_page(to, (void *)walk->reuse_addr)`).
    #[track_caller]
    pub fn read_vmemmap_page(
        &mut self,
        vpage: u32,
    ) -> Result<Box<[StructPage; STRUCT_PAGES_PER_VMEMMAP_PAGE as usize]>, Violation> {
        let first = vpage * STRUCT_PAGES_PER_VMEMMAP_PAGE;
        let a = self.access(first, false, Location::caller())?;
        match &self.frames[a.pte.frame as usize].content {
            Content::Memmap(pages) => Ok(pages.clone()),
            _ => unreachable!(),
        }
    }
}
