//! The vmemmap page table and per-CPU TLBs (mm/sparse-vmemmap.c,
//! arch TLB flushing). Every struct page access goes through here, so a
//! remap really changes what a struct page address reads.

use super::KResult;
use super::config::STRUCT_PAGES_PER_VMEMMAP_PAGE;
use super::ctx::Cpu;
use super::machine::{Content, Machine, Owner, Pfn};
use super::mm_types::StructPage;
use super::oracle::{self, Oracle, Violation};
use super::smp::IpiWait;
use crate::ktrace;
use std::panic::Location;

/// `flush_tlb_kernel_range` as the architecture runs it. x86
/// (arch/x86/mm/tlb.c): `on_each_cpu(do_kernel_range_flush, .., 1)`, an
/// IPI the flusher waits on: a CPU with interrupts off keeps its
/// translations until it enables them (then takes the IPI), and the flusher
/// waits that long (one more step, only when some CPU has interrupts off).
/// arm64 (arch/arm64/include/asm/tlbflush.h): `tlbi vaale1is` broadcast,
/// every CPU's entries are gone at once and nobody is waited for.
pub fn flush_tlb_kernel_range(cpu: &Cpu, range: std::ops::Range<u32>) -> KResult<()> {
    let wait = cpu.step("flush_tlb_kernel_range", |m| {
        let ipi = m.cfg.arch.kernel_tlb_flush_is_ipi();
        let me = m.cpu_index();
        let mut wait = IpiWait::new();
        for c in 0..m.cpus.len() {
            if ipi && c != me && m.irqs_disabled(c) {
                m.cpus[c].kernel_flush_pending = true;
                wait.push((c, m.cpus[c].irq_sections));
            } else {
                m.flush_cpu_kernel_tlb(c, range.clone());
            }
        }
        ktrace!(m, "flush_tlb_kernel_range(vmemmap pages {range:?})");
        if !wait.is_empty() {
            ktrace!(
                m,
                "{} CPU(s) with interrupts off take the IPI later",
                wait.len()
            );
        }
        Ok(wait)
    })?;
    if wait.is_empty() {
        return Ok(());
    }
    cpu.step_when(
        "flush_tlb_kernel_range",
        |m| m.ipis_delivered(&wait),
        |m| {
            ktrace!(m, "every CPU took the TLB-flush IPI");
            Ok(())
        },
    )
}

/// A vmemmap PTE: the frame a vmemmap page maps and its permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pte {
    pub frame: Pfn,
    pub writable: bool,
}

#[derive(Debug)]
pub struct Vmemmap {
    pub ptes: Vec<Pte>,
    /// The PTEs a break-before-make cleared and has not yet rewritten
    /// (`pte_clear`): a CPU without a cached translation faults on them.
    pub cleared: Vec<bool>,
    /// The CPU that paused the others to update the vmemmap (arm64, Yu
    /// Zhao's `pause_remote_cpus`), and the interrupts-off sections its
    /// pause IPI still waits for: a CPU still in one runs on.
    pub paused_by: Option<(usize, IpiWait)>,
}

crate::clone_by_field!(Vmemmap {
    ptes,
    cleared,
    paused_by
});

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
            cleared: vec![false; nr_pages as usize],
            paused_by: None,
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
        let current = self.vmemmap.ptes[vpage as usize];
        let Some(pte) = self.translate(vpage) else {
            return Err(self.vmemmap_fault(pfn, write, site));
        };
        let owner = self.frames[pte.frame as usize].owner;
        let a = Access {
            pfn,
            write,
            pte,
            owner,
            aliased: !matches!(owner, Owner::Memmap { home } if home == Some(vpage)),
            stale: pte != current || self.vmemmap.cleared[vpage as usize],
            site,
        };
        oracle::at_access(&a)?;
        Ok(a)
    }

    /// The running CPU's translation of a vmemmap page: its TLB entry, or
    /// a walk that fills it. `None`: the PTE is cleared (a break-before-make
    /// window) and the TLB holds nothing, so the access faults.
    fn translate(&mut self, vpage: u32) -> Option<Pte> {
        let cpu = self.cpu_index();
        if let Some(pte) = self.cpus[cpu].tlb[vpage as usize] {
            return Some(pte);
        }
        if self.vmemmap.cleared[vpage as usize] {
            return None;
        }
        let pte = self.vmemmap.ptes[vpage as usize];
        self.cpus[cpu].tlb[vpage as usize] = Some(pte);
        Some(pte)
    }

    /// A translation fault on a vmemmap address: arm64's `do_translation_fault`
    /// on a kernel address ends in `die_kernel_fault` (arch/arm64/mm/fault.c).
    fn vmemmap_fault(&self, pfn: Pfn, write: bool, site: &'static Location<'static>) -> Violation {
        let vpage = vmemmap_page_of(pfn);
        Violation {
            oracle: Oracle::VmemmapFault,
            detail: format!(
                "{} of the struct page of pfn {pfn} faults: vmemmap page {vpage}'s PTE is cleared for break-before-make and {} has no TLB entry for it (at {site})",
                if write { "write" } else { "read" },
                self.this_cpu
            ),
        }
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
        self.translate(vpage)
            .unwrap_or(self.vmemmap.ptes[vpage as usize])
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
        self.vmemmap.cleared[vpage as usize] = false;
    }

    /// `pte_clear(&init_mm, addr, pte)`: the break of break-before-make.
    pub fn clear_vmemmap_pte(&mut self, vpage: u32) {
        self.vmemmap.cleared[vpage as usize] = true;
    }

    /// Flush the vmemmap translations on one CPU.
    pub fn flush_cpu_kernel_tlb(&mut self, cpu: usize, vpages: std::ops::Range<u32>) {
        for e in &mut self.cpus[cpu].tlb[vpages.start as usize..vpages.end as usize] {
            *e = None;
        }
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
