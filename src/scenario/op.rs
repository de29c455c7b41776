//! The operations a CPU runs: each one kernel path, named after it.

use crate::exec::Cpu;
use crate::model::gup::{self, Foll};
use crate::model::pgtable::Uaddr;
use crate::model::{
    KResult, buffer, filemap, hugetlb, khugepaged, memory, migrate, pfn_walker, truncate, vmscan,
};
use serde::{Deserialize, Serialize};

/// One kernel path. Serialised as `{"op": "<kernel name>", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Inject failure into the next `count` page allocations.
    FailNextAllocs { count: u8 },
    /// `filemap_add_folio`: a new order-0 folio at `index`; the allocator
    /// returns `pfn_hint` if that page is free.
    FilemapAddFolio { index: u8, pfn_hint: u32 },
    /// `filemap_get_folio` + `folio_put`: a speculative RCU lookup.
    FilemapGetFolio { index: u8 },
    /// `truncate_inode_pages_range` for one index.
    TruncateInodeFolio { index: u8 },
    /// `shrink_folio_list` → `__remove_mapping` for the folio at `index`.
    ShrinkFolio { index: u8 },
    /// A pfn walker (`isolate_migratepages_block`): `PageLRU`,
    /// `get_page_unless_zero`, `page_folio`, `folio_put`.
    PfnWalk { pfn: u32 },
    /// `alloc_pool_huge_folio`: grow the hugetlb pool (runs HVO) with the
    /// free block holding `pfn_hint`, if there is one.
    AllocPoolHugeFolio { pfn_hint: u32 },
    /// `alloc_hugetlb_folio`: take a pool folio, or allocate a surplus one
    /// from the free block holding `pfn_hint`; this CPU keeps it.
    AllocHugetlbFolio { pfn_hint: u32 },
    /// `folio_put` on the last hugetlb folio this CPU took.
    PutHugetlbFolio,
    /// `set_max_huge_pages(nr - 1)`: free a pool folio (restores its vmemmap).
    ShrinkHugePool,
    /// `handle_mm_fault`: a read fault on user page `addr` of process `mm`
    /// (pages 0-1 map the file, 2-3 are anonymous; `order` 1 asks for an
    /// anon mTHP). New folios come from the free block holding `pfn_hint`.
    HandleMmFault {
        mm: u8,
        addr: u8,
        pfn_hint: u32,
        #[serde(default)]
        order: u8,
    },
    /// `get_user_pages_fast` (`FOLL_GET`) of one page; the CPU keeps the
    /// reference.
    GetUserPagesFast { mm: u8, addr: u8 },
    /// `pin_user_pages_fast` (`FOLL_PIN`) of one page; the CPU keeps the pin.
    PinUserPagesFast { mm: u8, addr: u8 },
    /// `memcpy_to_page`: write a fresh value through the CPU's latest GUP
    /// reference or pin.
    MemcpyToPage,
    /// `unpin_user_page` (`put_page` for `FOLL_GET`) of the CPU's latest
    /// GUP reference or pin.
    UnpinUserPage,
    /// `move_pages(2)` → `migrate_pages` of the folio mapped at `addr`; the
    /// new folio comes from the free block holding `pfn_hint`.
    MigratePages { mm: u8, addr: u8, pfn_hint: u32 },
    /// `zap_pte_range` (MADV_DONTNEED) of one page.
    ZapPteRange { mm: u8, addr: u8 },
    /// `create_empty_buffers`: attach buffer heads (PG_private) to the
    /// page-cache folio at `index`.
    CreateEmptyBuffers { index: u8 },
    /// khugepaged's `collapse_huge_page` of process `mm`'s anonymous range
    /// into a PMD-mapped folio from the free block holding `pfn_hint`.
    CollapseHugePage { mm: u8, pfn_hint: u32 },
}

impl Op {
    /// Run the kernel path on `cpu`.
    pub fn run(&self, cpu: &Cpu) -> KResult<()> {
        match *self {
            Op::FailNextAllocs { count } => cpu.step("should_fail_alloc_page", |m| {
                m.fail_next_allocs += count as u32;
                Ok(())
            }),
            Op::FilemapAddFolio { index, pfn_hint } => {
                filemap::filemap_add_folio(cpu, index as u32, pfn_hint)
            }
            Op::FilemapGetFolio { index } => filemap::filemap_get_folio(cpu, index as u32),
            Op::TruncateInodeFolio { index } => truncate::truncate_inode_folio(cpu, index as u32),
            Op::ShrinkFolio { index } => vmscan::shrink_folio(cpu, index as u32),
            Op::PfnWalk { pfn } => pfn_walker::pfn_walk(cpu, pfn),
            Op::AllocPoolHugeFolio { pfn_hint } => hugetlb::alloc_pool_huge_folio(cpu, pfn_hint),
            Op::AllocHugetlbFolio { pfn_hint } => hugetlb::alloc_hugetlb_folio(cpu, pfn_hint),
            Op::PutHugetlbFolio => hugetlb::put_hugetlb_folio(cpu),
            Op::ShrinkHugePool => hugetlb::shrink_huge_pool(cpu),
            Op::HandleMmFault {
                mm,
                addr,
                pfn_hint,
                order,
            } => memory::handle_mm_fault(cpu, Uaddr::new(mm, addr), pfn_hint, order.min(1)),
            Op::GetUserPagesFast { mm, addr } => {
                gup::gup_fast_fallback(cpu, Uaddr::new(mm, addr), Foll::Get)
            }
            Op::PinUserPagesFast { mm, addr } => {
                gup::gup_fast_fallback(cpu, Uaddr::new(mm, addr), Foll::Pin)
            }
            Op::MemcpyToPage => gup::memcpy_to_page(cpu),
            Op::UnpinUserPage => gup::unpin_user_page(cpu),
            Op::MigratePages { mm, addr, pfn_hint } => {
                migrate::migrate_pages(cpu, Uaddr::new(mm, addr), pfn_hint)
            }
            Op::ZapPteRange { mm, addr } => memory::zap_pte_range(cpu, Uaddr::new(mm, addr)),
            Op::CreateEmptyBuffers { index } => buffer::create_empty_buffers(cpu, index as u32),
            Op::CollapseHugePage { mm, pfn_hint } => {
                khugepaged::collapse_huge_page(cpu, Uaddr::new(mm, 0).mm, pfn_hint)
            }
        }
    }
}
