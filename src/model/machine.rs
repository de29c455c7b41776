//! The whole simulated machine: frames, vmemmap, per-CPU state, subsystems.
//! Kernel state only; what the oracles remember is in [`Ledger`], and what
//! an execution records (steps, the stamped trace, the first violation)
//! stays with the executor.

use super::config::{Config, STRUCT_PAGES_PER_VMEMMAP_PAGE};
use super::ctx::CpuId;
use super::filemap::AddressSpace;
use super::hugetlb::Hstate;
use super::kcov::Coverage;
use super::ledger::Ledger;
use super::mm_types::{StructPage, pg};
use super::page_alloc::Buddy;
use super::pgtable::{AnonVma, Mm, PmdVal, PteVal, UserTlb};
use super::rcu::RcuState;
use super::vmemmap::{Pte, Vmemmap};

/// A page frame number. A struct page pointer is `pfn_to_page(pfn)`: the
/// vmemmap address of slot `pfn % 64` in vmemmap page `pfn / 64`.
pub type Pfn = u32;

/// Who owns a physical frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// In the buddy allocator.
    Free,
    /// Holds struct pages for the vmemmap. `home` is the vmemmap page it
    /// privately backs; `None` for the shared tail page of the 2026 series.
    Memmap { home: Option<u32> },
    /// A user page table (`pagetable_alloc`).
    PageTable,
    /// Allocated: a folio's data, or a page someone holds.
    Allocated,
}

/// What a frame holds.
#[derive(Debug, PartialEq)]
pub enum Content {
    /// Freed frames are poisoned.
    Poison,
    /// User data (one word per frame stands for the page).
    Data(u64),
    /// 64 struct pages.
    Memmap(Box<[StructPage; STRUCT_PAGES_PER_VMEMMAP_PAGE as usize]>),
    /// A PTE table.
    Ptes([PteVal; super::config::PTRS_PER_PTE as usize]),
    /// A PMD table.
    Pmds([PmdVal; super::config::PTRS_PER_PMD as usize]),
}

impl Clone for Content {
    fn clone(&self) -> Self {
        match self {
            Content::Poison => Content::Poison,
            Content::Data(v) => Content::Data(*v),
            Content::Memmap(p) => Content::Memmap(p.clone()),
            Content::Ptes(t) => Content::Ptes(*t),
            Content::Pmds(t) => Content::Pmds(*t),
        }
    }

    /// Copies struct pages in place when both hold them, so that resetting
    /// a machine to its booted state allocates nothing.
    fn clone_from(&mut self, source: &Self) {
        match (self, source) {
            (Content::Memmap(a), Content::Memmap(b)) => **a = **b,
            (a, b) => *a = b.clone(),
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct Frame {
    pub owner: Owner,
    pub content: Content,
    /// Bumped at every allocation, so that a stale user TLB entry can tell
    /// a reused frame from the one it cached.
    pub generation: u32,
}

impl Clone for Frame {
    fn clone(&self) -> Self {
        Frame {
            owner: self.owner,
            content: self.content.clone(),
            generation: self.generation,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.owner = source.owner;
        self.content.clone_from(&source.content);
        self.generation = source.generation;
    }
}

/// Physical memory: every frame; which ones changed since the machine was
/// last reset, so that a reset copies only those; and which ones changed
/// since boot, so that the quiescence oracles look only at those.
#[derive(Debug, Default)]
pub struct Frames {
    frames: Vec<Frame>,
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    touched: Vec<u32>,
    is_touched: Vec<bool>,
}

impl Frames {
    fn new(frames: Vec<Frame>) -> Frames {
        let n = frames.len();
        Frames {
            frames,
            dirty: Vec::new(),
            is_dirty: vec![false; n],
            touched: Vec::new(),
            is_touched: vec![false; n],
        }
    }

    /// The frames written since boot; every other frame is as booted.
    pub fn touched(&self) -> &[u32] {
        &self.touched
    }

    /// The booted machine has changed nothing.
    fn forget_boot(&mut self) {
        self.touched.clear();
        self.is_touched.fill(false);
        self.dirty.clear();
        self.is_dirty.fill(false);
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Frame> {
        self.frames.iter()
    }

    /// Become `source` again. `same_source`: this is the state `source`
    /// was last copied into, so only the frames changed since differ.
    pub fn reset_to(&mut self, source: &Frames, same_source: bool) {
        if same_source && self.frames.len() == source.frames.len() {
            for &i in &self.dirty {
                self.frames[i as usize].clone_from(&source.frames[i as usize]);
            }
        } else {
            self.frames.clone_from(&source.frames);
        }
        for &i in &self.dirty {
            self.is_dirty[i as usize] = false;
        }
        self.dirty.clear();
        self.is_dirty.resize(self.frames.len(), false);
        self.touched.clone_from(&source.touched);
        self.is_touched.clone_from(&source.is_touched);
    }
}

impl Clone for Frames {
    fn clone(&self) -> Self {
        Frames {
            frames: self.frames.clone(),
            dirty: Vec::new(),
            is_dirty: vec![false; self.frames.len()],
            touched: self.touched.clone(),
            is_touched: self.is_touched.clone(),
        }
    }
}

impl std::ops::Index<usize> for Frames {
    type Output = Frame;

    fn index(&self, i: usize) -> &Frame {
        &self.frames[i]
    }
}

impl std::ops::IndexMut<usize> for Frames {
    /// A write access: the frame is dirty until the next reset.
    fn index_mut(&mut self, i: usize) -> &mut Frame {
        if !self.is_dirty[i] {
            self.is_dirty[i] = true;
            self.dirty.push(i as u32);
        }
        if !self.is_touched[i] {
            self.is_touched[i] = true;
            self.touched.push(i as u32);
        }
        &mut self.frames[i]
    }
}

/// What a CPU holds across operations (a user's mapping, a pinned page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A hugetlb folio allocated to this CPU's task: one reference.
    HugetlbFolio(Pfn),
    /// A `FOLL_GET` reference from GUP on `folio`, for the user page `page`;
    /// `id` names it in the ledger.
    GupRef { folio: Pfn, page: Pfn, id: u32 },
    /// A `FOLL_PIN` pin: `GUP_PIN_COUNTING_BIAS` references on a small
    /// folio, one reference and one `_pincount` on a large one; `write` is
    /// `FOLL_WRITE`.
    GupPin {
        folio: Pfn,
        page: Pfn,
        write: bool,
        id: u32,
    },
}

impl Hold {
    /// The folio of a GUP reference or pin.
    pub fn gup_folio(self) -> Option<Pfn> {
        match self {
            Hold::GupRef { folio, .. } | Hold::GupPin { folio, .. } => Some(folio),
            Hold::HugetlbFolio(_) => None,
        }
    }
}

#[derive(Debug)]
pub struct CpuState {
    /// Cached vmemmap translations; stale until a flush.
    pub tlb: Vec<Option<Pte>>,
    /// Cached user translations; stale until a flush.
    pub user_tlb: UserTlb,
    /// What the task running on this CPU holds.
    pub holds: Vec<Hold>,
    /// `local_irq_save` nesting: interrupts are off while non-zero.
    pub irqs_off: u8,
    /// Interrupts-off sections entered, for IPI waits.
    pub irq_sections: u32,
    /// The process whose page tables this CPU is walking in GUP-fast (its
    /// task's `current->mm`): that process cannot exit meanwhile.
    pub gup_fast_mm: Option<u8>,
    /// An x86 kernel TLB-flush IPI this CPU has not taken yet (interrupts
    /// off): its vmemmap TLB is flushed when it enables them.
    pub kernel_flush_pending: bool,
    /// The spinlock (`hugetlb_lock`, `xa_lock`) the running step's body
    /// holds, for `might_sleep`.
    pub spinlock: Option<&'static str>,
}

crate::clone_by_field!(CpuState {
    tlb,
    user_tlb,
    holds,
    irqs_off,
    irq_sections,
    gup_fast_mm,
    kernel_flush_pending,
    spinlock
});

/// The lines a step traces (`trace_printk`), until the executor stamps
/// them with the step's number, CPU and function.
#[derive(Debug, Default)]
pub struct TraceBuf {
    lines: Option<Vec<String>>,
}

crate::clone_by_field!(TraceBuf { lines });

impl TraceBuf {
    pub fn set_enabled(&mut self, on: bool) {
        self.lines = on.then(Vec::new);
    }

    pub fn enabled(&self) -> bool {
        self.lines.is_some()
    }

    pub fn push(&mut self, line: String) {
        if let Some(l) = self.lines.as_mut() {
            l.push(line);
        }
    }

    pub fn drain(&mut self) -> std::vec::Drain<'_, String> {
        self.lines.get_or_insert_with(Vec::new).drain(..)
    }
}

#[derive(Debug)]
pub struct Machine {
    pub cfg: Config,
    pub frames: Frames,
    pub buddy: Buddy,
    pub vmemmap: Vmemmap,
    pub cpus: Vec<CpuState>,
    pub rcu: RcuState,
    /// The page cache of the model's one regular file.
    pub mapping: AddressSpace,
    /// The page cache of the hugetlbfs file hugetlb VMAs map: one slot per
    /// huge page.
    pub hugetlbfs: AddressSpace,
    /// The hugetlbfs file's inode: size and lock.
    pub hugetlbfs_inode: super::hugetlbfs::Inode,
    /// Every process: its page-table root and its locks.
    pub mms: Vec<Mm>,
    /// Every anon_vma, by id; the first `mms` are the processes' own at
    /// boot.
    pub anon_vmas: Vec<AnonVma>,
    /// Page-table locks held across steps: (table frame, CPU).
    pub pt_locks: Vec<(Pfn, u8)>,
    pub hstate: Hstate,
    /// `hugetlb_optimize_vmemmap_key`.
    pub hugetlb_optimize_vmemmap_key: u32,
    /// Fault injection: this many next page allocations fail.
    pub fail_next_allocs: u32,
    /// What the oracles remember.
    pub ledger: Ledger,
    /// `smp_processor_id()` of the running step.
    pub this_cpu: CpuId,
    pub trace: TraceBuf,
    /// Step and struct-page access coverage, when a guided search asks.
    pub kcov: Option<Coverage>,
    /// The reachability properties this execution got to (bits of
    /// `oracle::REACHABLE`), when asked.
    pub reached: Option<u64>,
}

impl Clone for Machine {
    fn clone(&self) -> Self {
        let mut m = Machine::new(self.cfg, self.cpus.len());
        m.reset_to(self, false);
        m
    }

    fn clone_from(&mut self, source: &Self) {
        self.reset_to(source, false);
    }
}

/// Number of slots in the model's single file mapping.
pub const PAGE_CACHE_SLOTS: u32 = 8;

impl Machine {
    /// Boot: lay out the memmap in block 0, free everything else.
    pub fn new(cfg: Config, nr_cpus: usize) -> Machine {
        let nr_pfns = cfg.nr_pfns();
        let nr_vmemmap = nr_pfns / STRUCT_PAGES_PER_VMEMMAP_PAGE;
        let mut frames = Vec::with_capacity(nr_pfns as usize);
        for pfn in 0..nr_pfns {
            if pfn < nr_vmemmap {
                let mut pages =
                    Box::new([StructPage::INIT; STRUCT_PAGES_PER_VMEMMAP_PAGE as usize]);
                // The memmap frames themselves are memblock-reserved.
                for (slot, p) in pages.iter_mut().enumerate() {
                    if (pfn * STRUCT_PAGES_PER_VMEMMAP_PAGE + slot as u32) < nr_vmemmap {
                        p.flags |= pg::RESERVED;
                        p.refcount = 1;
                    }
                }
                frames.push(Frame {
                    owner: Owner::Memmap { home: Some(pfn) },
                    content: Content::Memmap(pages),
                    generation: 0,
                });
            } else {
                frames.push(Frame {
                    owner: Owner::Free,
                    content: Content::Poison,
                    generation: 0,
                });
            }
        }
        let nr_cpus = nr_cpus.max(1);
        let mut m = Machine {
            cfg,
            frames: Frames::new(frames),
            buddy: Buddy::new(cfg.hugetlb_order),
            vmemmap: Vmemmap::new(nr_vmemmap),
            cpus: vec![
                CpuState {
                    tlb: vec![None; nr_vmemmap as usize],
                    user_tlb: UserTlb::default(),
                    holds: Vec::new(),
                    irqs_off: 0,
                    irq_sections: 0,
                    gup_fast_mm: None,
                    kernel_flush_pending: false,
                    spinlock: None,
                };
                nr_cpus
            ],
            rcu: RcuState::new(nr_cpus),
            mapping: AddressSpace::new(PAGE_CACHE_SLOTS),
            hugetlbfs: AddressSpace::new(super::config::MAX_USER_PAGES),
            hugetlbfs_inode: super::hugetlbfs::Inode::new(super::config::MAX_USER_PAGES),
            mms: (0..cfg.mms).map(|i| Mm::new(&cfg, i)).collect(),
            anon_vmas: (0..cfg.mms)
                .map(|i| AnonVma {
                    root: i,
                    ..AnonVma::default()
                })
                .collect(),
            pt_locks: Vec::new(),
            hstate: Hstate::new(super::config::MAX_USER_PAGES),
            hugetlb_optimize_vmemmap_key: 0,
            fail_next_allocs: 0,
            ledger: Ledger::default(),
            this_cpu: CpuId::SETUP,
            trace: TraceBuf::default(),
            kcov: None,
            reached: None,
        };
        m.buddy.boot_free_range(nr_vmemmap, nr_pfns);
        for (pfn, order) in m.buddy.free_blocks() {
            m.peek_mut(pfn).flags = pg::BUDDY;
            m.peek_mut(pfn).private = order as u32;
        }
        super::hugetlb::hugetlb_hstate_alloc_pages(&mut m);
        m.buddy.changed.clear();
        m.mapping.changed.clear();
        m.hugetlbfs.changed.clear();
        m.frames.forget_boot();
        m
    }

    /// Become the machine `Machine::new(cfg)` boots, from one booted with
    /// another VMA layout and otherwise `cfg`: boot reads the layout only
    /// into the processes, which exec (`Mm::new`) sets up afresh.
    pub fn set_vmas(&mut self, cfg: Config) {
        self.cfg = cfg;
        // In place of `Mm::new`: the booted processes are `Mm::new` of the
        // booted layout, and only their VMAs differ.
        for mm in &mut self.mms {
            mm.next_vma_id = 0;
            mm.reset_vmas(&cfg);
        }
    }

    pub fn nr_pfns(&self) -> u32 {
        self.frames.len() as u32
    }

    /// Become `source` again, copying only what changed if this machine
    /// was last reset from `source` (`same_source`).
    pub fn reset_to(&mut self, source: &Machine, same_source: bool) {
        // Every field, so that a new one cannot be forgotten.
        let Machine {
            cfg,
            frames,
            buddy,
            vmemmap,
            cpus,
            rcu,
            mapping,
            hugetlbfs,
            hugetlbfs_inode,
            mms,
            anon_vmas,
            pt_locks,
            hstate,
            hugetlb_optimize_vmemmap_key,
            fail_next_allocs,
            ledger,
            this_cpu,
            trace,
            kcov,
            reached,
        } = self;
        *cfg = source.cfg;
        frames.reset_to(&source.frames, same_source);
        buddy.clone_from(&source.buddy);
        vmemmap.clone_from(&source.vmemmap);
        cpus.clone_from(&source.cpus);
        rcu.clone_from(&source.rcu);
        mapping.clone_from(&source.mapping);
        hugetlbfs.clone_from(&source.hugetlbfs);
        hugetlbfs_inode.clone_from(&source.hugetlbfs_inode);
        mms.clone_from(&source.mms);
        anon_vmas.clone_from(&source.anon_vmas);
        pt_locks.clone_from(&source.pt_locks);
        hstate.clone_from(&source.hstate);
        *hugetlb_optimize_vmemmap_key = source.hugetlb_optimize_vmemmap_key;
        *fail_next_allocs = source.fail_next_allocs;
        ledger.clone_from(&source.ledger);
        *this_cpu = source.this_cpu;
        trace.clone_from(&source.trace);
        kcov.clone_from(&source.kcov);
        *reached = source.reached;
    }

    /// The per-CPU state index of the running step.
    pub fn cpu_index(&self) -> usize {
        self.this_cpu.index()
    }

    pub fn tracing(&self) -> bool {
        self.trace.enabled()
    }

    pub fn log(&mut self, text: String) {
        self.trace.push(text);
    }

    /// A data-dependent decision of the running step, for guided search
    /// (`Coverage::record_decision`).
    pub fn cover(&mut self, what: &'static str, state: u64) {
        if let Some(k) = self.kcov.as_mut() {
            k.record_decision(what, state);
        }
    }

    /// [`Machine::cover`] of a decision on page `page`, with the page's
    /// sharing state: PageAnonExclusive, mapped more than once, its folio
    /// referenced beyond its mappings (GUP), a large folio, the folio
    /// mapped by more than one process; `extra` above.
    pub fn cover_page(&mut self, what: &'static str, page: Pfn, extra: u64) {
        if self.kcov.is_none() {
            return;
        }
        let state = self.page_state(page) | extra << 8;
        self.cover(what, state);
    }

    fn page_state(&self, page: Pfn) -> u64 {
        let head = super::page_flags::peek_head(self, page);
        let (p, h) = (self.peek(page), self.peek(head));
        let large = super::page_flags::peek_nr_pages(self, head) > 1;
        let mut mapped = 0;
        let mut mms = 0u32;
        for e in &self.ledger.maps {
            if super::page_flags::peek_head(self, e.pfn) == head {
                mapped += 1;
                mms |= 1 << e.a.mm;
            }
        }
        p.test(pg::ANON_EXCLUSIVE) as u64
            | ((p.mapcount > 0) as u64) << 1
            | ((h.refcount > mapped) as u64) << 2
            | (large as u64) << 3
            | ((mms.count_ones() > 1) as u64) << 4
    }

    /// What the kernel does at the end of every step on its own: RCU
    /// callbacks whose grace period has elapsed run (`rcu_do_batch`, as
    /// RCU_SOFTIRQ would on this CPU).
    pub fn end_step(&mut self) -> Result<(), super::oracle::Violation> {
        if self.rcu.has_callbacks() {
            self.rcu_do_batch()?;
        }
        Ok(())
    }
}

/// Append a line to the trace; formats only when tracing is on.
#[macro_export]
macro_rules! ktrace {
    ($m:expr, $($arg:tt)*) => {
        if $m.tracing() {
            $m.log(format!($($arg)*));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::Kernel;
    use crate::model::{filemap, hugetlb};

    /// A reset copies only the frames written since the last reset, and
    /// leaves exactly the booted machine.
    #[test]
    fn reset_to_the_booted_machine_copies_only_what_changed_and_restores_all() {
        let booted = Machine::new(Config::default(), 2);
        let mut k = Kernel::boot();
        k.m.reset_to(&booted, false);
        assert!(k.m.frames.dirty.is_empty());
        k.on(0, |cpu| {
            filemap::filemap_add_folio(cpu, 0, 600)?;
            hugetlb::alloc_pool_huge_folio(cpu, 512)
        })
        .unwrap();
        assert!(!k.m.frames.dirty.is_empty());
        assert!(k.m.frames.dirty.len() < k.m.frames.len() / 2);
        k.m.reset_to(&booted, true);
        assert!(k.m.frames.iter().eq(booted.frames.iter()));
        assert_eq!(k.m.buddy.free_blocks(), booted.buddy.free_blocks());
        assert!(k.m.hstate.free_folios.is_empty());
        assert_eq!(k.m.hugetlb_optimize_vmemmap_key, 0);
        assert_eq!(k.m.vmemmap.ptes, booted.vmemmap.ptes);
    }
}
