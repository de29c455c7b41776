//! `struct page` as laid out in a vmemmap frame (include/linux/mm_types.h).

use super::machine::Pfn;
use serde::Serialize;

/// Page flag bits (include/linux/page-flags.h). Only the ones the model reads.
pub mod pg {
    pub const LOCKED: u32 = 1 << 0;
    pub const HEAD: u32 = 1 << 1;
    pub const PRIVATE: u32 = 1 << 2;
    pub const RESERVED: u32 = 1 << 3;
    pub const LRU: u32 = 1 << 4;
    /// Page type `PGTY_buddy` (a free block head).
    pub const BUDDY: u32 = 1 << 5;
    /// Page type `PGTY_hugetlb` (`folio_test_hugetlb`).
    pub const HUGETLB: u32 = 1 << 6;
    /// `HPG_vmemmap_optimized` (`folio_test_hugetlb_vmemmap_optimized`).
    pub const VMEMMAP_OPTIMIZED: u32 = 1 << 7;
    pub const ANON_EXCLUSIVE: u32 = 1 << 8;
    pub const SWAPBACKED: u32 = 1 << 9;
    /// Page type `PGTY_table` (`PageTable`): a page-table page.
    pub const TABLE: u32 = 1 << 10;
}

/// `page->compound_head` (called `compound_info` in the 2026 series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CompoundInfo {
    /// Bit 0 clear: a head or small page.
    None,
    /// `head | 1`: a tail that points at its head.
    Tail(Pfn),
    /// `mask | 1`: a tail whose head is `page & mask` (shared-tail HVO),
    /// stored as the folio order. Identical in every tail of that order.
    TailMask(u8),
}

/// What `page->mapping` points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mapping {
    None,
    /// A file's page cache, at a page index.
    File {
        index: u32,
    },
    /// The hugetlbfs file's page cache, at a huge page index.
    Hugetlbfs {
        index: u32,
    },
    /// An anon_vma (one per process in the model), at a linear page index.
    Anon {
        anon_vma: u8,
        index: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructPage {
    pub flags: u32,
    pub compound_info: CompoundInfo,
    /// `_refcount`.
    pub refcount: i32,
    /// `_mapcount`, -1 when unmapped.
    pub mapcount: i32,
    /// `folio->_pincount` (meaningful in page[1] of a large folio).
    pub pincount: i32,
    /// `folio->_entire_mapcount` (page[1] of a large folio): PMD mappings,
    /// -1 when none.
    pub entire_mapcount: i32,
    /// `folio->_folio_order` (meaningful in page[1] of a large folio).
    pub order: u8,
    pub mapping: Mapping,
    /// `page->private`: the buddy order of a free block head.
    pub private: u32,
    /// `ptdesc->pt_share_count` of a PMD table page: how many processes
    /// beyond the first share it (`ptdesc_pmd_pts_inc/dec`, 59d9094df3d7,
    /// v6.13; before it the table page's refcount counted sharers).
    pub pt_share_count: i32,
}

impl StructPage {
    /// A page as `memmap_init` leaves it: reserved until freed to the buddy.
    pub const INIT: StructPage = StructPage {
        flags: 0,
        compound_info: CompoundInfo::None,
        refcount: 0,
        mapcount: -1,
        pincount: 0,
        entire_mapcount: -1,
        order: 0,
        mapping: Mapping::None,
        private: 0,
        pt_share_count: 0,
    };

    pub fn test(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Bit 0 of `compound_head`: `PageTail` without the fake-head part.
    pub fn tail_bit(&self) -> bool {
        !matches!(self.compound_info, CompoundInfo::None)
    }
}
