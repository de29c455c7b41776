//! User page tables (include/linux/pgtable.h, mm/pgtable-generic.c) and the
//! per-CPU user TLBs.
//!
//! A process's PUD entries sit in its `mm_struct` (the levels above are
//! folded); a PUD entry points at a PMD table and a PMD entry at a PTE table
//! or, as a leaf, maps a THP or a hugetlb folio. PMD and PTE tables are
//! frames from the buddy allocator (`pagetable_alloc`), with their struct
//! page, so a freed table is reused like any other frame. A table that
//! lockless walkers (GUP-fast) may still be reading is freed through
//! `tlb_remove_table`, after an RCU grace period
//! (`MMU_GATHER_RCU_TABLE_FREE`): until then it stays readable.

use super::config::{
    Config, MAX_USER_PAGES, PMD_PAGES, PTRS_PER_PMD, PTRS_PER_PTE, PUD_PAGES, PUDS, VmaKind,
    VmaSlot,
};
use super::machine::{Content, Machine, Owner, Pfn};
use super::mm_types::{Mapping, pg};
use super::oracle::Violation;
use crate::ktrace;

/// A present user PTE: the page it maps and its permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PteEntry {
    pub pfn: Pfn,
    /// `pte_write`.
    pub write: bool,
    /// `pte_dirty`.
    pub dirty: bool,
    /// Write-protected for copy-on-write: a private page mapped read-only
    /// in a writable VMA, as `fork` leaves it (x86 keeps such a PTE's dirty
    /// bit as `_PAGE_SAVED_DIRTY`, first named `_PAGE_COW`).
    pub cow: bool,
}

impl PteEntry {
    /// A fresh mapping, as `mk_pte` + `maybe_mkwrite` make it.
    pub fn new(pfn: Pfn, write: bool) -> PteEntry {
        PteEntry {
            pfn,
            write,
            dirty: write,
            cow: false,
        }
    }
}

/// A user PTE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PteVal {
    None,
    /// Maps a page; the mapping holds a reference on its folio.
    Present(PteEntry),
    /// A migration entry for page `pfn` (`make_*_migration_entry`); holds
    /// no reference. `exclusive` remembers PageAnonExclusive, `write` the
    /// write permission.
    Migration {
        pfn: Pfn,
        exclusive: bool,
        write: bool,
    },
}

impl PteVal {
    /// The page a present PTE maps.
    pub fn present_pfn(self) -> Option<Pfn> {
        match self {
            PteVal::Present(e) => Some(e.pfn),
            _ => None,
        }
    }
}

/// A PMD leaf: a THP or a hugetlb folio mapped whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmdLeaf {
    /// The folio's head.
    pub pfn: Pfn,
    pub write: bool,
}

/// A PMD entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmdVal {
    None,
    /// Points at the PTE table in frame `pfn`.
    Table(Pfn),
    /// Maps a PMD-sized folio (`pmd_trans_huge`, or a hugetlb PMD).
    Leaf(PmdLeaf),
}

/// A PUD entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PudVal {
    #[default]
    None,
    /// Points at the PMD table in frame `pfn`.
    Table(Pfn),
}

/// A reader-writer semaphore held across steps (`mmap_lock`, the anon_vma
/// lock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RwSem {
    pub readers: u8,
    pub writer: Option<u8>,
}

impl RwSem {
    pub fn can_read(&self) -> bool {
        self.writer.is_none()
    }

    pub fn can_write(&self) -> bool {
        self.writer.is_none() && self.readers == 0
    }
}

/// What a process's VMAs say about one of its pages. The configuration
/// lays out the same VMAs in every process; munmap, mremap, mprotect and
/// madvise then change them per process, here page by page (a VMA split is
/// the pages on either side of it differing). hugetlb VMAs are also kept
/// as [`VmArea`]s (`Mm::hugetlb_vmas`), which PMD sharing needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmPage {
    /// A VMA covers the page (false: outside every VMA, or unmapped).
    pub mapped: bool,
    /// `VM_WRITE`.
    pub write: bool,
    /// `VM_DONTCOPY` (`MADV_DONTFORK`): fork leaves the page out.
    pub dontcopy: bool,
    /// `linear_page_index()`: the page offset the VMA maps here, which an
    /// anonymous folio's `index` records; mremap moves it with the page.
    pub pgoff: u8,
}

/// An anon_vma (mm/rmap.c): the rmap root of anonymous folios. Processes
/// link to the anon_vmas of their ancestors at fork (`anon_vma_fork`); a
/// family shares its root's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnonVma {
    pub root: u8,
    /// The root's `rwsem` (`anon_vma_lock_write`), meaningful at the root.
    pub lock: RwSem,
}

/// Most anon_vmas one execution may create (`avc` is a bitmask); fork and
/// exit fail with -ENOMEM beyond it.
pub const MAX_ANON_VMAS: usize = 64;

/// A hugetlb VMA of one process (`struct vm_area_struct` of a
/// `VM_MAYSHARE` hugetlbfs mapping). The configuration lays the same VMAs
/// out in every process at boot; munmap, splits and exit then change each
/// process's own, and each has its own hugetlb VMA lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmArea {
    /// Tells VMAs apart across splits: the part a split creates gets a new
    /// one (and a new lock).
    pub id: u32,
    pub start: u32,
    pub end: u32,
    /// `vm_pgoff`: the file page that `start` maps.
    pub pgoff: u32,
    /// The hugetlb VMA lock (`vm_private_data`, `hugetlb_vma_lock_alloc`):
    /// faults and page-table walkers hold it for read, unsharing for
    /// write. `None` once the final unmap freed it
    /// (`__hugetlb_vma_unlock_write_free`), which also makes the VMA
    /// ineligible for PMD sharing.
    pub lock: Option<RwSem>,
}

impl VmArea {
    pub fn contains(&self, page: u32) -> bool {
        (self.start..self.end).contains(&page)
    }

    /// `range_in_vma(vma, start, end)`.
    pub fn covers(&self, pages: std::ops::Range<u32>) -> bool {
        self.start <= pages.start && pages.end <= self.end
    }

    /// The hugetlbfs file's huge page that `page` maps.
    pub fn huge_index(&self, page: u32) -> u32 {
        (self.pgoff + page - self.start) / PMD_PAGES
    }

    /// The address of file page `file_page` in this VMA, if it maps it.
    pub fn address_of(&self, file_page: u32) -> Option<u32> {
        let page = (file_page + self.start).checked_sub(self.pgoff)?;
        self.contains(page).then_some(page)
    }
}

/// A process: its page-table root, its locks and its VMAs.
#[derive(Debug, Default)]
pub struct Mm {
    pub pud: [PudVal; PUDS as usize],
    pub mmap_lock: RwSem,
    /// The anon_vma of this process's anonymous VMAs (`vma->anon_vma`).
    pub anon_vma: u8,
    /// The anon_vmas its VMAs are linked to (`anon_vma_chain`), one bit
    /// each: its own and, after fork, every ancestor's.
    pub avc: u64,
    /// Its VMAs, page by page.
    pub vm: [VmPage; MAX_USER_PAGES as usize],
    /// `mm->write_protect_seq`: odd while fork write-protects the process's
    /// page tables (`copy_page_range`).
    pub write_protect_seq: u32,
    /// fork is building this process (`dup_mmap` of a new mm): nothing but
    /// fork may touch it yet.
    pub in_fork: bool,
    /// PTE tables deposited for PMD leaves (`pgtable_trans_huge_deposit`),
    /// by the first page of the PMD range.
    pub deposited: Vec<(u32, Pfn)>,
    /// Its hugetlb VMAs, by address.
    pub hugetlb_vmas: Vec<VmArea>,
    /// The next `VmArea::id`.
    pub next_vma_id: u32,
    /// `exit_mmap` ran: the process has no VMAs any more.
    pub exited: bool,
}

crate::clone_by_field!(Mm {
    pud,
    mmap_lock,
    anon_vma,
    avc,
    vm,
    write_protect_seq,
    in_fork,
    deposited,
    hugetlb_vmas,
    next_vma_id,
    exited
});

impl Mm {
    /// A process as exec (or boot) leaves it: the configuration's VMAs,
    /// nothing mapped, anon_vma `anon_vma`; each hugetlb VMA maps the
    /// hugetlbfs file from offset 0.
    pub fn new(cfg: &Config, anon_vma: u8) -> Mm {
        let mut mm = Mm {
            anon_vma,
            avc: 1 << anon_vma,
            ..Mm::default()
        };
        mm.reset_vmas(cfg);
        mm
    }

    /// The configuration's VMAs: page by page, and the hugetlb ones as
    /// [`VmArea`]s with new locks.
    pub fn reset_vmas(&mut self, cfg: &Config) {
        for (page, v) in self.vm.iter_mut().enumerate() {
            let mapped = cfg.vmas.find(page as u32).is_some();
            *v = VmPage {
                mapped,
                write: mapped,
                dontcopy: false,
                pgoff: page as u8,
            };
        }
        self.hugetlb_vmas.clear();
        for v in cfg
            .vmas
            .slots()
            .filter(|v| v.kind == VmaKind::HugetlbShared)
        {
            self.new_vma(v.start, v.end(), 0);
        }
        self.exited = false;
    }

    /// A new hugetlb VMA with its own lock (`hugetlb_vm_op_open` →
    /// `hugetlb_vma_lock_alloc`).
    pub fn new_vma(&mut self, start: u32, end: u32, pgoff: u32) -> VmArea {
        let v = VmArea {
            id: self.next_vma_id,
            start,
            end,
            pgoff,
            lock: Some(RwSem::default()),
        };
        self.next_vma_id += 1;
        let at = self.hugetlb_vmas.partition_point(|x| x.start < start);
        self.hugetlb_vmas.insert(at, v);
        v
    }

    /// `vma_lookup` among the hugetlb VMAs.
    pub fn hugetlb_vma(&self, page: u32) -> Option<VmArea> {
        self.hugetlb_vmas.iter().copied().find(|v| v.contains(page))
    }

    /// The hugetlb VMA with identity `id`, if it still exists.
    pub fn vma_by_id(&self, id: u32) -> Option<&VmArea> {
        self.hugetlb_vmas.iter().find(|v| v.id == id)
    }

    pub fn vma_by_id_mut(&mut self, id: u32) -> Option<&mut VmArea> {
        self.hugetlb_vmas.iter_mut().find(|v| v.id == id)
    }

    /// `pgtable_trans_huge_deposit`.
    pub fn deposit(&mut self, pmd_base: u32, table: Pfn) {
        self.deposited.push((pmd_base, table));
    }

    /// `pgtable_trans_huge_withdraw`.
    pub fn withdraw(&mut self, pmd_base: u32) -> Option<Pfn> {
        let i = self.deposited.iter().position(|&(b, _)| b == pmd_base)?;
        Some(self.deposited.remove(i).1)
    }
}

/// A user address: process and page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Uaddr {
    pub mm: u8,
    pub page: u32,
}

impl Uaddr {
    /// An address; scenario loading has checked that it exists.
    pub fn new(mm: u8, page: u8) -> Uaddr {
        Uaddr {
            mm,
            page: page as u32,
        }
    }

    pub fn pud_index(self) -> usize {
        (self.page / PUD_PAGES) as usize
    }

    /// The entry in the PMD table.
    pub fn pmd_index(self) -> usize {
        ((self.page / PMD_PAGES) % PTRS_PER_PMD) as usize
    }

    /// The entry in the PTE table.
    pub fn pte_index(self) -> usize {
        (self.page % PTRS_PER_PTE) as usize
    }

    /// The first page of the PMD range.
    pub fn pmd_base(self) -> u32 {
        self.page & !(PMD_PAGES - 1)
    }

    /// The page's offset inside a PMD leaf.
    pub fn pmd_offset(self) -> u32 {
        self.page - self.pmd_base()
    }

    pub fn with_page(self, page: u32) -> Uaddr {
        Uaddr { mm: self.mm, page }
    }
}

impl std::fmt::Display for Uaddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mm{}:{}", self.mm, self.page)
    }
}

/// A cached user translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserTlbEntry {
    pub mm: u8,
    pub page: u32,
    pub pfn: Pfn,
    pub write: bool,
    /// The frame's generation when the entry was filled.
    pub generation: u32,
    /// The page table whose entry the walk used (a PMD table for a PMD
    /// leaf, else the PTE table), and its generation then: the translation
    /// was derived from that table, as the paging-structure caches keep it.
    pub table: Pfn,
    pub table_generation: u32,
}

/// One CPU's user TLB: entries stay until a flush, whatever the page
/// tables say meanwhile.
#[derive(Debug, Default)]
pub struct UserTlb {
    entries: Vec<UserTlbEntry>,
}

crate::clone_by_field!(UserTlb { entries });

impl UserTlb {
    pub fn lookup(&self, mm: u8, page: u32) -> Option<UserTlbEntry> {
        self.entries
            .iter()
            .copied()
            .find(|e| e.mm == mm && e.page == page)
    }

    pub fn fill(&mut self, e: UserTlbEntry) {
        self.entries.retain(|x| !(x.mm == e.mm && x.page == e.page));
        self.entries.push(e);
    }

    fn flush(&mut self, mm: u8, pages: std::ops::Range<u32>) {
        self.entries
            .retain(|e| !(e.mm == mm && pages.contains(&e.page)));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[UserTlbEntry] {
        &self.entries
    }
}

/// A page-table page: which level it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Pmd,
    Pte,
}

impl Machine {
    /// The VMA of every process at `page`.
    pub fn vma(&self, page: u32) -> Option<VmaSlot> {
        self.cfg.vmas.find(page)
    }

    pub fn pud(&self, a: Uaddr) -> PudVal {
        self.mms[a.mm as usize].pud[a.pud_index()]
    }

    /// The PMD table `a` walks through.
    pub fn pmd_table(&self, a: Uaddr) -> Option<Pfn> {
        match self.pud(a) {
            PudVal::Table(t) => Some(t),
            PudVal::None => None,
        }
    }

    /// The entries of the PMD table in frame `table`.
    pub fn pmds(&self, table: Pfn) -> &[PmdVal; PTRS_PER_PMD as usize] {
        match &self.frames[table as usize].content {
            Content::Pmds(t) => t,
            c => unreachable!("frame {table} is not a PMD table: {c:?}"),
        }
    }

    fn pmds_mut(&mut self, table: Pfn) -> &mut [PmdVal; PTRS_PER_PMD as usize] {
        match &mut self.frames[table as usize].content {
            Content::Pmds(t) => t,
            c => unreachable!("frame {table} is not a PMD table: {c:?}"),
        }
    }

    /// The entries of the PTE table in frame `table`.
    pub fn ptes(&self, table: Pfn) -> &[PteVal; PTRS_PER_PTE as usize] {
        match &self.frames[table as usize].content {
            Content::Ptes(t) => t,
            c => unreachable!("frame {table} is not a PTE table: {c:?}"),
        }
    }

    fn ptes_mut(&mut self, table: Pfn) -> &mut [PteVal; PTRS_PER_PTE as usize] {
        match &mut self.frames[table as usize].content {
            Content::Ptes(t) => t,
            c => unreachable!("frame {table} is not a PTE table: {c:?}"),
        }
    }

    /// The entry for `a` in the PMD table in frame `table`.
    pub fn pmd_in(&self, table: Pfn, a: Uaddr) -> PmdVal {
        self.pmds(table)[a.pmd_index()]
    }

    /// `set_pmd_at` through a pointer into the PMD table in frame `table`.
    pub fn set_pmd_in(&mut self, table: Pfn, a: Uaddr, v: PmdVal) {
        self.pmds_mut(table)[a.pmd_index()] = v;
    }

    /// `pud_populate` / `pud_clear` of `a`'s PUD entry. The PMD tables it
    /// points at before and after are noted for the share-count oracle.
    pub fn set_pud(&mut self, a: Uaddr, v: PudVal) {
        let old = std::mem::replace(&mut self.mms[a.mm as usize].pud[a.pud_index()], v);
        for t in [old, v] {
            if let PudVal::Table(t) = t {
                self.ledger.touch_pmd_table(t);
            }
        }
    }

    /// Is the frame `table` still a PMD table of process `mm` for `a`: its
    /// PUD points at it, an unshare of it from `mm` is still under way (the
    /// PUD is cleared but the share not yet dropped), or it is detached and
    /// waiting for the RCU grace period that frees it (what GUP-fast relies
    /// on)? Anything else means the table was unshared (it is some other
    /// process's now), or freed and reused.
    pub fn pmd_table_of(&self, mm: u8, table: Pfn, a: Uaddr) -> bool {
        let f = &self.frames[table as usize];
        if f.owner != Owner::PageTable || !matches!(f.content, Content::Pmds(_)) {
            return false;
        }
        self.mms[mm as usize].pud[a.pud_index()] == PudVal::Table(table)
            || self.ledger.unsharing.contains(&(mm, table))
            || (self.pmd_table_users(table) == 0
                && self
                    .rcu
                    .pending()
                    .any(|cb| cb == super::rcu::Callback::FreeTable(table)))
    }

    /// How many PUD entries, over every process, point at `table`.
    pub fn pmd_table_users(&self, table: Pfn) -> u32 {
        self.mms
            .iter()
            .flat_map(|mm| mm.pud.iter())
            .filter(|p| **p == PudVal::Table(table))
            .count() as u32
    }

    /// A page-table walker's load of the PMD entry for `a` from `table`,
    /// which it read from process `a.mm`'s PUD earlier (`pmdp_get_lockless`,
    /// `huge_ptep_get`): the table must still be one of that process's.
    pub fn walk_pmd(&mut self, a: Uaddr, table: Pfn) -> Result<PmdVal, Violation> {
        let cpu = self.cpu_index() as u8;
        self.ledger.walk_done(cpu);
        if !self.pmd_table_of(a.mm, table, a) {
            return Err(super::oracle::walked_pmd_table_not_of_mm(self, a, table));
        }
        Ok(self.pmd_in(table, a))
    }

    /// A lockless walker read `a`'s PUD: remember the PMD table it found
    /// until its next load, for the reachability properties.
    pub fn walk_started(&mut self, a: Uaddr) -> Option<Pfn> {
        let t = self.pmd_table(a)?;
        let cpu = self.cpu_index() as u8;
        self.ledger.walk_started(cpu, a.mm, t);
        ktrace!(self, "{a}: PUD -> PMD table in frame {t}");
        Some(t)
    }

    /// `pmdp_get_lockless`: none when there is no PMD table.
    pub fn pmd(&self, a: Uaddr) -> PmdVal {
        match self.pmd_table(a) {
            Some(t) => self.pmds(t)[a.pmd_index()],
            None => PmdVal::None,
        }
    }

    /// `set_pmd_at`; the PUD must point at a PMD table.
    pub fn set_pmd(&mut self, a: Uaddr, v: PmdVal) {
        let t = self
            .pmd_table(a)
            .unwrap_or_else(|| unreachable!("set_pmd at {a} without a PMD table"));
        let leaf = |v: PmdVal| match v {
            PmdVal::Leaf(l) => Some((l.pfn, l.write)),
            _ => None,
        };
        let old = leaf(self.pmds(t)[a.pmd_index()]).map(|(p, _)| p);
        self.pmds_mut(t)[a.pmd_index()] = v;
        self.note_mapping(a.with_page(a.pmd_base()), true, old, leaf(v));
    }

    /// Tell the ledger that the entry at `a` went from mapping `old` to
    /// `new` (pages, or for a leaf the folio's head; and whether
    /// writable).
    fn note_mapping(&mut self, a: Uaddr, leaf: bool, old: Option<Pfn>, new: Option<(Pfn, bool)>) {
        if old.is_none() && new.is_none() {
            return;
        }
        let head = |p: Pfn| super::page_flags::peek_head(self, p);
        let heads = [old.map(head), new.map(|(p, _)| head(p))];
        self.ledger.mapping_changed(a, leaf, old, new, heads);
    }

    /// The PTE at `a` in the PTE table in frame `table`.
    pub fn pte_in(&self, table: Pfn, a: Uaddr) -> PteVal {
        self.ptes(table)[a.pte_index()]
    }

    pub fn set_pte_in(&mut self, table: Pfn, a: Uaddr, v: PteVal) {
        // A PTE store is a PTE-lock section: none may run while another
        // CPU holds the lock (a missing `pte_lock_free` wait is a model
        // bug).
        if let Some(&(_, holder)) = self.pt_locks.iter().find(|&&(t, _)| t == table) {
            assert_eq!(
                holder as usize,
                self.cpu_index(),
                "model bug: {a} stored while CPU {holder} holds its PTE lock"
            );
        }
        let old = self.ptes(table)[a.pte_index()].present_pfn();
        self.ptes_mut(table)[a.pte_index()] = v;
        let new = match v {
            PteVal::Present(e) => Some((e.pfn, e.write)),
            _ => None,
        };
        self.note_mapping(a, false, old, new);
        if let Some(vma) = self.cfg.vmas.first_of(VmaKind::FileShared)
            && vma.contains(a.page)
        {
            self.mapping.changed.push((a.page - vma.start, None));
        }
    }

    /// A lockless walker's read of the PTE at `a` in the table it read from
    /// a PMD earlier: the frame must still be a page table.
    pub fn walk_pte(&self, table: Pfn, a: Uaddr) -> Result<PteVal, Violation> {
        match &self.frames[table as usize].content {
            Content::Ptes(t) if self.frames[table as usize].owner == Owner::PageTable => {
                Ok(t[a.pte_index()])
            }
            _ => Err(super::oracle::walked_freed_table(
                table,
                a,
                self.frames[table as usize].owner,
            )),
        }
    }

    /// `ptep_get` through the current PMD; `None` when the PMD maps no table.
    pub fn pte(&self, a: Uaddr) -> Option<PteVal> {
        match self.pmd(a) {
            PmdVal::Table(t) => Some(self.pte_in(t, a)),
            _ => None,
        }
    }

    /// `set_pte_at` through the current PMD, which must map a table.
    pub fn set_pte(&mut self, a: Uaddr, v: PteVal) {
        let PmdVal::Table(t) = self.pmd(a) else {
            unreachable!("set_pte at {a} without a PTE table");
        };
        self.set_pte_in(t, a, v);
    }

    /// `pagetable_alloc`: a zeroed table page, `PG_table`, one reference.
    /// `None` when the allocation fails.
    pub fn pagetable_alloc(&mut self, level: Level) -> Result<Option<Pfn>, Violation> {
        let Some(pfn) = self.alloc_pages_may_sleep(0, 0, "pagetable_alloc(GFP_PGTABLE_USER)")?
        else {
            return Ok(None);
        };
        let frame = &mut self.frames[pfn as usize];
        frame.owner = Owner::PageTable;
        frame.content = match level {
            Level::Pmd => Content::Pmds([PmdVal::None; PTRS_PER_PMD as usize]),
            Level::Pte => Content::Ptes([PteVal::None; PTRS_PER_PTE as usize]),
        };
        let p = self.page_mut(pfn)?;
        p.flags |= pg::TABLE;
        // pagetable_pmd_ctor → ptdesc_pmd_pts_init.
        p.pt_share_count = 0;
        ktrace!(self, "pagetable_alloc: {level:?} table in frame {pfn}");
        Ok(Some(pfn))
    }

    /// `pagetable_free`: the table page goes back to the buddy allocator
    /// now (nobody may be walking it, and a PMD table must no longer be
    /// shared), unless a speculative reference (GUP-fast on the page the
    /// frame held before) still holds it: then that reference's put frees
    /// it (`__free_pages` is a put).
    pub fn pagetable_free(&mut self, table: Pfn) -> Result<(), Violation> {
        if matches!(self.frames[table as usize].content, Content::Pmds(_)) {
            super::oracle::pmd_table_free_unshared(self, table)?;
            if self.ledger.forget_shared(table) {
                self.ledger.shared_tables_freed += 1;
            }
        }
        self.page_mut(table)?.flags &= !pg::TABLE;
        self.frames[table as usize].owner = Owner::Allocated;
        self.ledger.tables_freed += 1;
        ktrace!(self, "pagetable_free: frame {table}");
        if !super::page_ref::folio_ref_sub_and_test(self, table, 1)? {
            ktrace!(
                self,
                "frame {table} is still referenced: its last put frees it"
            );
            return Ok(());
        }
        self.free_pages(table, 0)
    }

    /// Take the page-table lock of the table in frame `table` (the split
    /// PMD lock lives in the table's ptdesc, so the sharers of a PMD table
    /// share it). Held across steps only where the kernel holds it across
    /// a wait; a lock section within one step needs no state.
    pub fn ptl_lock(&mut self, table: Pfn) {
        let cpu = self.cpu_index() as u8;
        self.pt_locks.push((table, cpu));
    }

    pub fn ptl_unlock(&mut self, table: Pfn) {
        self.pt_locks.retain(|&(t, _)| t != table);
    }

    /// Is `table`'s page-table lock free?
    pub fn ptl_free(&self, table: Pfn) -> bool {
        !self.pt_locks.iter().any(|&(t, _)| t == table)
    }

    /// Is the PTE lock of the PTE table `a`'s PMD points at free? (None
    /// when it points at none.) A PTE-lock section of another CPU waits
    /// while migration holds it across `try_to_migrate_one`'s steps. Every
    /// PTE-lock section's readiness check runs this, so the common case (no
    /// lock held at all) answers without a page-table walk.
    pub fn pte_lock_free(&self, a: Uaddr) -> bool {
        self.pt_locks.is_empty()
            || match self.pmd(a) {
                PmdVal::Table(t) => self.ptl_free(t),
                _ => true,
            }
    }

    /// [`Machine::pte_lock_free`] for every page of `pages`.
    pub fn pte_locks_free(&self, pages: &[Uaddr]) -> bool {
        pages.iter().all(|&a| self.pte_lock_free(a))
    }

    /// No PTE table of process `mm` is locked.
    pub fn mm_pte_locks_free(&self, mm: u8) -> bool {
        self.pt_locks.is_empty()
            || (0..MAX_USER_PAGES)
                .step_by(PTRS_PER_PTE as usize)
                .all(|page| self.pte_lock_free(Uaddr { mm, page }))
    }

    /// `tlb_remove_table` with `MMU_GATHER_RCU_TABLE_FREE`: free the table
    /// once every lockless walker that may hold it (GUP-fast, inside an RCU
    /// read section or with interrupts off) is done.
    pub fn tlb_remove_table(&mut self, table: Pfn) {
        self.rcu.call_rcu(super::rcu::Callback::FreeTable(table));
        ktrace!(
            self,
            "tlb_remove_table: frame {table} freed after a grace period"
        );
    }

    /// `__pmd_alloc`: give `a`'s PUD a PMD table if it has none. False when
    /// the allocation fails.
    pub fn pmd_alloc(&mut self, a: Uaddr) -> Result<bool, Violation> {
        if self.pmd_table(a).is_some() {
            return Ok(true);
        }
        let Some(t) = self.pagetable_alloc(Level::Pmd)? else {
            return Ok(false);
        };
        self.set_pud(a, PudVal::Table(t));
        Ok(true)
    }

    /// `__pte_alloc`: give `a`'s PMD a PTE table if it is none. False when
    /// an allocation fails or the PMD is a leaf.
    pub fn pte_alloc(&mut self, a: Uaddr) -> Result<bool, Violation> {
        if !self.pmd_alloc(a)? {
            return Ok(false);
        }
        match self.pmd(a) {
            PmdVal::Table(_) => Ok(true),
            PmdVal::Leaf(_) => Ok(false),
            PmdVal::None => {
                let Some(t) = self.pagetable_alloc(Level::Pte)? else {
                    return Ok(false);
                };
                self.set_pmd(a, PmdVal::Table(t));
                Ok(true)
            }
        }
    }

    /// The lock of anon_vma `id`'s root.
    pub fn anon_vma_lock(&self, id: u8) -> &RwSem {
        let root = self.anon_vmas[id as usize].root;
        &self.anon_vmas[root as usize].lock
    }

    pub fn anon_vma_lock_mut(&mut self, id: u8) -> &mut RwSem {
        let root = self.anon_vmas[id as usize].root;
        &mut self.anon_vmas[root as usize].lock
    }

    /// `anon_vma_alloc`: a new anon_vma under `root` (its own root if
    /// none); `None` past `MAX_ANON_VMAS`.
    pub fn anon_vma_alloc(&mut self, root: Option<u8>) -> Option<u8> {
        let id = self.anon_vmas.len();
        if id >= MAX_ANON_VMAS {
            return None;
        }
        let id = id as u8;
        self.anon_vmas.push(AnonVma {
            root: root.unwrap_or(id),
            lock: RwSem::default(),
        });
        Some(id)
    }

    /// What process `a.mm`'s VMAs say about page `a.page`.
    pub fn vm_page(&self, a: Uaddr) -> VmPage {
        self.mms[a.mm as usize].vm[a.page as usize]
    }

    /// Does an anonymous VMA of `a.mm` cover `a`?
    pub fn anon_vma_covers(&self, a: Uaddr) -> bool {
        self.vm_page(a).mapped
            && self
                .cfg
                .vmas
                .find(a.page)
                .is_some_and(|v| v.kind == VmaKind::AnonPrivate)
    }

    /// Where page `i` of a folio with `mapping` can be mapped: the addresses
    /// an rmap walk visits (`vma_address`). An anonymous folio is found in
    /// every process linked to its anon_vma, at the pages whose VMA maps its
    /// index.
    pub fn rmap_addresses(&self, mapping: Mapping, i: u32) -> Vec<Uaddr> {
        let Mapping::Anon { anon_vma, index } = mapping else {
            return rmap_candidates(&self.cfg, mapping, i);
        };
        let mut out = Vec::new();
        for (mm, x) in self.mms.iter().enumerate() {
            if x.avc & (1 << anon_vma) == 0 {
                continue;
            }
            for page in 0..MAX_USER_PAGES {
                let a = Uaddr { mm: mm as u8, page };
                if self.anon_vma_covers(a) && x.vm[page as usize].pgoff as u32 == index + i {
                    out.push(a);
                }
            }
        }
        out
    }

    /// `flush_tlb_range(vma, start, end)` on every CPU.
    pub fn flush_tlb_range(&mut self, mm: u8, pages: std::ops::Range<u32>) {
        for c in &mut self.cpus {
            c.user_tlb.flush(mm, pages.clone());
        }
    }

    /// `ptep_clear_flush(vma, a, ptep)` (mm/pgtable-generic.c, v6.12):
    /// `ptep_get_and_clear`, then `flush_tlb_page`. Returns the old PTE
    /// and, where the flush is an IPI (x86), the GUP-fast sections of
    /// `a.mm` with interrupts off that it waits for
    /// ([`Arch::user_tlb_flush_is_ipi`](super::arch::Arch::user_tlb_flush_is_ipi)).
    /// The caller holds `a`'s PTE lock.
    pub fn ptep_clear_flush(&mut self, a: Uaddr) -> (PteVal, super::smp::IpiWait) {
        let old = self.pte(a).unwrap_or(PteVal::None);
        self.set_pte(a, PteVal::None);
        self.flush_tlb_range(a.mm, a.page..a.page + 1);
        let me = self.cpu_index();
        let wait = if self.cfg.arch.user_tlb_flush_is_ipi() {
            (0..self.cpus.len())
                .filter(|&c| {
                    c != me && self.irqs_disabled(c) && self.cpus[c].gup_fast_mm == Some(a.mm)
                })
                .map(|c| (c, self.cpus[c].irq_sections))
                .collect()
        } else {
            Vec::new()
        };
        (old, wait)
    }

    /// `flush_tlb_mm`.
    pub fn flush_tlb_mm(&mut self, mm: u8) {
        self.flush_tlb_range(mm, 0..u32::MAX);
    }

    /// Visit every present mapping in the page tables: the page it maps (a
    /// PMD leaf's head), and whether it is a PMD leaf. A PMD table shared by
    /// several processes maps its pages once: it is visited once.
    pub fn for_each_mapping(&self, mut f: impl FnMut(Pfn, bool)) {
        let mut seen: Vec<Pfn> = Vec::new();
        for mm in 0..self.mms.len() as u8 {
            for pud in 0..PUDS {
                let base = pud * PUD_PAGES;
                let Some(t) = self.pmd_table(Uaddr { mm, page: base }) else {
                    continue;
                };
                if seen.contains(&t) {
                    continue;
                }
                seen.push(t);
                for pmd in self.pmds(t) {
                    match *pmd {
                        PmdVal::Leaf(l) => f(l.pfn, true),
                        PmdVal::Table(pt) => {
                            for pte in self.ptes(pt) {
                                if let Some(pfn) = pte.present_pfn() {
                                    f(pfn, false);
                                }
                            }
                        }
                        PmdVal::None => {}
                    }
                }
            }
        }
    }

    /// Every page-table frame the processes own: reachable from their
    /// PUDs (a shared PMD table once), or deposited for a PMD leaf.
    /// (frame, level).
    pub fn page_table_frames(&self) -> Vec<(Pfn, Level)> {
        let mut out = Vec::new();
        for mm in &self.mms {
            out.extend(mm.deposited.iter().map(|&(_, t)| (t, Level::Pte)));
            for pud in mm.pud {
                let PudVal::Table(t) = pud else { continue };
                if out.contains(&(t, Level::Pmd)) {
                    continue;
                }
                out.push((t, Level::Pmd));
                for pmd in self.pmds(t) {
                    if let PmdVal::Table(pt) = *pmd {
                        out.push((pt, Level::Pte));
                    }
                }
            }
        }
        out
    }
}

/// `tlb_remove_table_sync_one` (mm/mmu_gather.c): an IPI to every CPU,
/// waiting until each took it, so that no GUP-fast that started before
/// (with interrupts off) is still walking a table the caller detached.
pub fn tlb_remove_table_sync_one(cpu: &super::ctx::Cpu) -> super::KResult<()> {
    super::smp::smp_call_function(cpu, "tlb_remove_table_smp_sync")
}

/// Where page `i` of a file or hugetlbfs folio with `mapping` can be mapped:
/// the addresses rmap visits (`vma_address`), one candidate per VMA that
/// maps it. Anonymous folios depend on the processes' anon_vma chains:
/// [`Machine::rmap_addresses`].
pub fn rmap_candidates(cfg: &Config, mapping: Mapping, i: u32) -> Vec<Uaddr> {
    match mapping {
        Mapping::File { index } => {
            let Some(vma) = cfg.vmas.first_of(VmaKind::FileShared) else {
                return Vec::new();
            };
            let page = vma.start + index + i;
            if !vma.contains(page) {
                return Vec::new();
            }
            (0..cfg.mms).map(|mm| Uaddr { mm, page }).collect()
        }
        Mapping::Hugetlbfs { index } => {
            let Some(vma) = cfg.vmas.first_of(VmaKind::HugetlbShared) else {
                return Vec::new();
            };
            let page = vma.start + index * PMD_PAGES;
            if i > 0 || !vma.contains(page) {
                return Vec::new();
            }
            (0..cfg.mms).map(|mm| Uaddr { mm, page }).collect()
        }
        Mapping::Anon { .. } | Mapping::None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{VmaSpec, Vmas};
    use crate::model::memory::{handle_mm_fault, zap_pte_range};
    use crate::model::oracle::Oracle;
    use crate::model::testing::Kernel;

    /// The default layout, the same in every process:
    ///
    /// ```text
    /// page   0     1     2     3
    ///        | file shared | anon private |
    ///        '-- PTE table -'-- PTE table -'   one PMD table (PUD 0)
    /// ```
    const ANON: u8 = 2;

    /// Fault in mm 0's anonymous page 2 from a free frame at 600.
    fn first_anon_fault(k: &mut Kernel) -> Uaddr {
        let a = Uaddr::new(0, ANON);
        k.on(0, |cpu| handle_mm_fault(cpu, a, 600, 0)).unwrap();
        a
    }

    #[test]
    fn a_first_fault_allocates_a_pmd_table_and_a_pte_table_from_the_buddy() {
        let mut k = Kernel::boot();
        let a = Uaddr::new(0, ANON);
        assert_eq!(k.m.pud(a), PudVal::None);

        k.on(0, |cpu| handle_mm_fault(cpu, a, 600, 0)).unwrap();

        // No hint: the tables take the smallest free blocks, 16 and 17.
        assert_eq!(k.m.pud(a), PudVal::Table(16));
        assert_eq!(k.m.pmd(a), PmdVal::Table(17));
        assert!(matches!(k.m.frames[16].content, Content::Pmds(_)));
        assert!(matches!(k.m.frames[17].content, Content::Ptes(_)));
        for table in [16, 17] {
            assert_eq!(k.m.frames[table].owner, Owner::PageTable, "frame {table}");
            let p = k.m.peek(table as Pfn);
            assert!(p.test(pg::TABLE), "frame {table} is PageTable");
            assert_eq!(p.refcount, 1, "frame {table}");
        }
        assert_eq!(
            k.m.page_table_frames(),
            [(16, Level::Pmd), (17, Level::Pte)]
        );
        assert_eq!(k.m.pte(a), Some(PteVal::Present(PteEntry::new(600, true))));
    }

    #[test]
    fn a_second_fault_under_the_same_pmd_allocates_no_table() {
        let mut k = Kernel::boot();
        let a = first_anon_fault(&mut k);
        let free = k.free_blocks();

        // Page 3 shares page 2's PTE table; page 0 (the file) only its
        // PMD table.
        k.on(0, |cpu| handle_mm_fault(cpu, a.with_page(3), 601, 0))
            .unwrap();
        assert_eq!(k.m.page_table_frames().len(), 2);

        k.on(0, |cpu| handle_mm_fault(cpu, a.with_page(0), 602, 0))
            .unwrap();
        let tables = k.m.page_table_frames();
        assert_eq!(tables.len(), 3);
        assert_eq!(tables[0], (16, Level::Pmd));
        assert_ne!(free, k.free_blocks());
    }

    #[test]
    fn a_fault_outside_every_vma_allocates_nothing() {
        let mut k = Kernel::boot();
        let free = k.free_blocks();

        k.on(0, |cpu| handle_mm_fault(cpu, Uaddr::new(0, 5), 600, 0))
            .unwrap();

        assert_eq!(k.m.pud(Uaddr::new(0, 5)), PudVal::None);
        assert_eq!(k.free_blocks(), free);
    }

    #[test]
    fn pagetable_free_gives_the_frame_back_and_the_allocator_hands_it_out_again() {
        let mut k = Kernel::boot();
        let a = first_anon_fault(&mut k);
        k.on(0, |cpu| zap_pte_range(cpu, a)).unwrap();
        let PmdVal::Table(table) = k.m.pmd(a) else {
            panic!("the fault left a PTE table");
        };
        let generation = k.m.frames[table as usize].generation;

        // free_pte_range: unhook the empty table and free it.
        k.step(0, |m| {
            m.set_pmd(a, PmdVal::None);
            m.pagetable_free(table)
        })
        .unwrap();

        assert_eq!(k.m.frames[table as usize].owner, Owner::Free);
        assert!(!k.m.peek(table).test(pg::TABLE));
        assert_eq!(k.m.peek(table).refcount, 0);
        assert!(
            k.free_blocks().contains(&(table, 0)),
            "its buddy 16 is the PMD table"
        );
        assert_eq!(k.m.ledger.tables_freed, 1);

        // The next allocation without a free hint takes the same frame.
        let again = k.step(1, |m| m.alloc_pages(0, 0)).unwrap();

        assert_eq!(again, Some(table));
        assert_eq!(k.m.frames[table as usize].owner, Owner::Allocated);
        assert_eq!(k.m.frames[table as usize].generation, generation + 1);
        // A walker still holding the old PMD value reads someone's page.
        let err = k.m.walk_pte(table, a).unwrap_err();
        assert_eq!(err.oracle, Oracle::PageTableUseAfterFree);
    }

    #[test]
    fn tlb_remove_table_defers_the_free_until_lockless_walkers_are_done() {
        let mut k = Kernel::boot();
        let a = first_anon_fault(&mut k);
        k.on(0, |cpu| zap_pte_range(cpu, a)).unwrap();
        let PmdVal::Table(table) = k.m.pmd(a) else {
            panic!("the fault left a PTE table");
        };
        // CPU 1 is in GUP-fast: interrupts off, the PMD read.
        k.step(1, |m| {
            m.local_irq_save();
            Ok(())
        })
        .unwrap();

        k.step(0, |m| {
            m.set_pmd(a, PmdVal::None);
            m.tlb_remove_table(table);
            Ok(())
        })
        .unwrap();

        // The walker may still read the detached table.
        assert_eq!(k.m.frames[table as usize].owner, Owner::PageTable);
        assert_eq!(k.step(1, |m| m.walk_pte(table, a)).unwrap(), PteVal::None);
        assert_eq!(k.m.ledger.tables_freed, 0);

        k.step(1, |m| {
            m.local_irq_restore();
            Ok(())
        })
        .unwrap();

        assert_eq!(k.m.frames[table as usize].owner, Owner::Free);
        assert_eq!(k.m.ledger.tables_freed, 1);
        k.quiesce().unwrap();
    }

    #[test]
    fn pagetable_alloc_fails_with_the_allocation() {
        let mut k = Kernel::boot();
        k.m.fail_next_allocs = 1;
        let a = Uaddr::new(0, ANON);

        k.on(0, |cpu| handle_mm_fault(cpu, a, 600, 0)).unwrap();

        assert_eq!(k.m.pud(a), PudVal::None, "VM_FAULT_OOM");
        assert_eq!(k.m.pte(a), None);
    }

    /// Three VMAs, each at the next address aligned for its kind:
    ///
    /// ```text
    /// page   0  1  2  3  4  5  6  7  8  9  10 11
    ///        | file   |  | anon|     | hugetlb   |
    ///                  ^ gap       ^ gap (PUD-aligned)
    /// ```
    fn three_vmas() -> Vmas {
        Vmas::new(&[
            VmaSpec {
                kind: VmaKind::FileShared,
                pages: 3,
            },
            VmaSpec {
                kind: VmaKind::AnonPrivate,
                pages: 2,
            },
            VmaSpec {
                kind: VmaKind::HugetlbShared,
                pages: 4,
            },
        ])
        .unwrap()
    }

    #[test]
    fn vmas_start_at_the_next_address_aligned_for_their_kind() {
        let vmas = three_vmas();
        let slots: Vec<(VmaKind, u32, u32)> =
            vmas.slots().map(|v| (v.kind, v.start, v.end())).collect();

        assert_eq!(
            slots,
            [
                (VmaKind::FileShared, 0, 3),
                (VmaKind::AnonPrivate, 4, 6),
                (VmaKind::HugetlbShared, 8, 12),
            ]
        );
        assert_eq!(vmas.find(3), None);
        assert_eq!(vmas.find(6), None);
        assert_eq!(vmas.find(9).map(|v| v.index), Some(2));
        assert_eq!(vmas.end(), 12);
    }

    #[test]
    fn config_rejects_vmas_a_process_cannot_map() {
        let with = |specs: &[VmaSpec]| Config {
            vmas: Vmas::new(specs).unwrap(),
            ..Config::default()
        };
        let spec = |kind, pages| VmaSpec { kind, pages };

        let odd_hugetlb = with(&[spec(VmaKind::HugetlbShared, 3)]);
        assert!(
            odd_hugetlb
                .validate()
                .unwrap_err()
                .contains("multiple of 2")
        );
        // 14 file pages, then the anon VMA at 14..17.
        let too_long = with(&[spec(VmaKind::FileShared, 14), spec(VmaKind::AnonPrivate, 3)]);
        assert!(
            too_long
                .validate()
                .unwrap_err()
                .contains("past the 16 pages")
        );
        assert!(
            with(&[spec(VmaKind::FileShared, 14), spec(VmaKind::AnonPrivate, 2)])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn rmap_candidates_of_a_file_page_are_every_process_at_its_offset() {
        let cfg = Config {
            vmas: three_vmas(),
            ..Config::default()
        };
        let file = |index, i| rmap_candidates(&cfg, Mapping::File { index }, i);

        assert_eq!(file(1, 0), [Uaddr::new(0, 1), Uaddr::new(1, 1)]);
        assert_eq!(file(1, 1), [Uaddr::new(0, 2), Uaddr::new(1, 2)]);
        // Past the end of the VMA: not mapped anywhere.
        assert_eq!(file(2, 1), []);
        assert_eq!(file(5, 0), []);
    }

    #[test]
    fn rmap_of_an_anon_page_visits_its_own_process_only() {
        let k = Kernel::builder().config(|c| c.vmas = three_vmas()).boot();
        let anon = |anon_vma, index, i| k.m.rmap_addresses(Mapping::Anon { anon_vma, index }, i);

        assert_eq!(anon(1, 4, 0), [Uaddr::new(1, 4)]);
        assert_eq!(anon(1, 4, 1), [Uaddr::new(1, 5)]);
        assert_eq!(anon(0, 5, 1), [], "page 6 is past the anon VMA");
        assert_eq!(anon(0, 2, 0), [], "page 2 is the file's");
    }

    #[test]
    fn rmap_candidates_of_a_hugetlb_folio_are_its_pmd_in_every_process() {
        let cfg = Config {
            vmas: three_vmas(),
            ..Config::default()
        };
        let huge = |index, i| rmap_candidates(&cfg, Mapping::Hugetlbfs { index }, i);

        assert_eq!(huge(1, 0), [Uaddr::new(0, 10), Uaddr::new(1, 10)]);
        assert_eq!(huge(1, 1), [], "only the head is mapped, by one PMD");
        assert_eq!(huge(2, 0), [], "the VMA holds two huge pages");
        assert_eq!(rmap_candidates(&cfg, Mapping::None, 0), []);
    }
}
