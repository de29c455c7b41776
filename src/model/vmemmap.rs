//! The vmemmap page table and per-CPU TLBs (mm/sparse-vmemmap.c,
//! arch TLB flushing). Every struct page access goes through here, so a
//! remap really changes what a struct page address reads.

use super::config::STRUCT_PAGES_PER_VMEMMAP_PAGE;
use super::kcov::Access;
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

#[derive(Debug, Clone)]
pub struct Vmemmap {
    pub ptes: Vec<Pte>,
}

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

/// A translated struct page address.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    pub pte: Pte,
    pub slot: usize,
    /// The frame privately backs another vmemmap page (or is shared): the
    /// struct page read is not `pfn`'s own.
    pub aliased: bool,
}

impl Machine {
    /// Translate through the running CPU's TLB, filling it on a miss.
    pub fn resolve(&mut self, pfn: Pfn) -> Resolved {
        let vpage = vmemmap_page_of(pfn);
        let cpu = self.cpu_index();
        let entry = &mut self.cpus[cpu].tlb[vpage as usize];
        let pte = *entry.get_or_insert(self.vmemmap.ptes[vpage as usize]);
        let aliased = match self.frames[pte.frame as usize].owner {
            Owner::Memmap { home } => home != Some(vpage),
            _ => false,
        };
        Resolved {
            pte,
            slot: (pfn % STRUCT_PAGES_PER_VMEMMAP_PAGE) as usize,
            aliased,
        }
    }

    fn memmap_slot(&mut self, pfn: Pfn, r: Resolved) -> Result<&mut StructPage, Violation> {
        let frame = &mut self.frames[r.pte.frame as usize];
        oracle::no_access_to_unowned_vmemmap_frame(pfn, r.pte.frame, frame.owner)?;
        match &mut frame.content {
            Content::Memmap(pages) => Ok(&mut pages[r.slot]),
            _ => unreachable!("memmap-owned frame without struct pages"),
        }
    }

    fn cover(
        &mut self,
        pfn: Pfn,
        write: bool,
        r: Resolved,
        seen: &StructPage,
        site: &'static Location<'static>,
    ) {
        if let Some(c) = self.coverage.as_mut() {
            let access = Access {
                pfn,
                cpu: self.cur_cpu,
                func: self.cur_func,
                site,
                write,
                aliased: r.aliased,
                stale: r.pte != self.vmemmap.ptes[vmemmap_page_of(pfn) as usize],
                writable: r.pte.writable,
            };
            c.record_access(&access, seen);
        }
    }

    /// Read `pfn_to_page(pfn)` as the running CPU sees it.
    #[track_caller]
    pub fn page(&mut self, pfn: Pfn) -> Result<StructPage, Violation> {
        let r = self.resolve(pfn);
        let seen = *self.memmap_slot(pfn, r)?;
        self.cover(pfn, false, r, &seen, Location::caller());
        Ok(seen)
    }

    /// Write access to `pfn_to_page(pfn)` as the running CPU sees it.
    #[track_caller]
    pub fn page_mut(&mut self, pfn: Pfn) -> Result<&mut StructPage, Violation> {
        let r = self.resolve(pfn);
        oracle::no_write_through_ro_vmemmap(pfn, r.pte)?;
        if self.coverage.is_some() {
            let seen = *self.memmap_slot(pfn, r)?;
            self.cover(pfn, true, r, &seen, Location::caller());
        }
        self.memmap_slot(pfn, r)
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
    pub fn read_vmemmap_page(
        &mut self,
        vpage: u32,
    ) -> Result<Box<[StructPage; STRUCT_PAGES_PER_VMEMMAP_PAGE as usize]>, Violation> {
        let first = vpage * STRUCT_PAGES_PER_VMEMMAP_PAGE;
        let r = self.resolve(first);
        self.memmap_slot(first, r)?;
        match &self.frames[r.pte.frame as usize].content {
            Content::Memmap(pages) => Ok(pages.clone()),
            _ => unreachable!(),
        }
    }
}
