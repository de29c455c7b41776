//! User page tables (include/linux/pgtable.h, include/linux/mm_types.h).
//!
//! Each process (`mm_struct`) has a fixed layout: user pages
//! `0..FILE_PAGES` are a shared mapping of the model's one file (page `a`
//! maps file index `a`), pages `ANON_BASE..USER_PAGES` are an anonymous VMA.
//! Every PMD covers `PTRS_PER_PTE` pages and points at a PTE table, or is a
//! leaf mapping a PMD-sized folio. PTE tables are never reused: a table
//! detached from its PMD stays readable, as an RCU-freed table is to
//! GUP-fast.

use super::machine::{Machine, Pfn};
use super::mm_types::Mapping;

/// Processes in the model.
pub const NR_MMS: usize = 2;
/// User pages per process.
pub const USER_PAGES: u32 = 4;
/// Pages `0..FILE_PAGES` map the file at the same index.
pub const FILE_PAGES: u32 = 2;
/// First page of the anonymous VMA.
pub const ANON_BASE: u32 = 2;
/// Pages one PTE table maps (`PTRS_PER_PTE`); a PMD leaf maps a folio of
/// this many pages (`HPAGE_PMD_ORDER` below).
pub const PTRS_PER_PTE: u32 = 2;
pub const HPAGE_PMD_ORDER: u8 = PTRS_PER_PTE.trailing_zeros() as u8;
const NR_PMDS: usize = (USER_PAGES / PTRS_PER_PTE) as usize;

/// A user PTE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PteVal {
    None,
    /// Maps the page `pfn`; the mapping holds a reference on its folio.
    Present {
        pfn: Pfn,
    },
    /// A migration entry for page `pfn` (`make_*_migration_entry`); holds
    /// no reference. `exclusive` remembers PageAnonExclusive.
    Migration {
        pfn: Pfn,
        exclusive: bool,
    },
}

/// A PMD entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmdVal {
    None,
    /// Points at PTE table `id`.
    Table(u32),
    /// Maps the PMD-sized folio `pfn` (`pmd_trans_huge`).
    Leaf(Pfn),
}

#[derive(Debug, Clone)]
pub struct PteTable {
    pub ptes: [PteVal; PTRS_PER_PTE as usize],
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

#[derive(Debug, Clone)]
pub struct Mm {
    pub pmds: [PmdVal; NR_PMDS],
    pub mmap_lock: RwSem,
    /// The lock of this process's anon_vma (`anon_vma_lock_write`).
    pub anon_vma_lock: RwSem,
}

#[derive(Debug, Clone)]
pub struct PageTables {
    pub mms: Vec<Mm>,
    pub tables: Vec<PteTable>,
}

impl PageTables {
    pub fn new() -> Self {
        let mut tables = Vec::new();
        let mms = (0..NR_MMS)
            .map(|_| Mm {
                pmds: std::array::from_fn(|_| {
                    tables.push(PteTable {
                        ptes: [PteVal::None; PTRS_PER_PTE as usize],
                    });
                    PmdVal::Table(tables.len() as u32 - 1)
                }),
                mmap_lock: RwSem::default(),
                anon_vma_lock: RwSem::default(),
            })
            .collect();
        PageTables { mms, tables }
    }

    /// A fresh PTE table (`pte_alloc_one`).
    pub fn alloc_table(&mut self) -> u32 {
        self.tables.push(PteTable {
            ptes: [PteVal::None; PTRS_PER_PTE as usize],
        });
        self.tables.len() as u32 - 1
    }
}

impl Default for PageTables {
    fn default() -> Self {
        Self::new()
    }
}

/// A user address: process and page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Uaddr {
    pub mm: u8,
    pub page: u32,
}

impl Uaddr {
    /// Scenario ops name any byte; fold it onto the layout.
    pub fn new(mm: u8, page: u8) -> Uaddr {
        Uaddr {
            mm: mm % NR_MMS as u8,
            page: page as u32 % USER_PAGES,
        }
    }

    pub fn is_anon(self) -> bool {
        self.page >= ANON_BASE
    }

    pub fn pmd_index(self) -> usize {
        (self.page / PTRS_PER_PTE) as usize
    }

    pub fn pte_index(self) -> usize {
        (self.page % PTRS_PER_PTE) as usize
    }

    /// The first page of the PMD range.
    pub fn pmd_base(self) -> u32 {
        self.page & !(PTRS_PER_PTE - 1)
    }
}

impl std::fmt::Display for Uaddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mm{}:{}", self.mm, self.page)
    }
}

impl Machine {
    /// `pmdp_get_lockless`.
    pub fn pmd(&self, a: Uaddr) -> PmdVal {
        self.pt.mms[a.mm as usize].pmds[a.pmd_index()]
    }

    pub fn set_pmd(&mut self, a: Uaddr, v: PmdVal) {
        self.pt.mms[a.mm as usize].pmds[a.pmd_index()] = v;
    }

    /// The PTE at `a` in table `table`.
    pub fn pte_in(&self, table: u32, a: Uaddr) -> PteVal {
        self.pt.tables[table as usize].ptes[a.pte_index()]
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
        self.pt.tables[t as usize].ptes[a.pte_index()] = v;
    }
}

/// Where `page` (page `i` of a folio with `mapping`) can be mapped: the
/// addresses rmap visits (`vma_address`), one candidate per VMA.
pub fn rmap_candidates(mapping: Mapping, i: u32) -> Vec<Uaddr> {
    match mapping {
        Mapping::File { index } if index + i < FILE_PAGES => (0..NR_MMS as u8)
            .map(|mm| Uaddr {
                mm,
                page: index + i,
            })
            .collect(),
        Mapping::Anon { anon_vma, index } if index + i < USER_PAGES => vec![Uaddr {
            mm: anon_vma,
            page: index + i,
        }],
        _ => Vec::new(),
    }
}
