//! The operations a CPU runs, each one kernel path named after it, in one
//! table: the op, its kind, its subsystem, its fields and what it runs.
//! Scenario files, the decoder and the validator all derive from it.

use super::config::{Config, MAX_MMS, PMD_PAGES};
use super::ctx::Cpu;
use super::gup::{self, Foll};
use super::machine::PAGE_CACHE_SLOTS;
use super::pgtable::Uaddr;
use super::subsystem::{Subsystem, SubsystemSet};
use super::{
    KResult, buffer, filemap, fork, huge_memory, hugetlb, hugetlbfs, khugepaged, madvise, memory,
    migrate, mmap, mprotect, mremap, pfn_walker, truncate, vma, vmscan,
};
use serde::{Deserialize, Serialize};

/// What an op field stands for, which decides its valid range and how the
/// decoder draws it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A page-cache index of the model's file.
    Index,
    /// A page frame number.
    Pfn,
    /// A process.
    Mm,
    /// A user page of a process.
    Page,
    /// How many times (fault injection).
    Count,
    /// A folio order a fault may ask for.
    Order,
    /// The pages of a range, at most a PMD's (whether a range covers a THP
    /// whole or in part decides whether it is split).
    Len,
    /// A flag: `FOLL_WRITE`, `PROT_WRITE`, `MADV_DOFORK`.
    Bit,
}

/// Most page allocations one `fail_next_allocs` may fail.
pub const MAX_FAIL_COUNT: u32 = 16;

impl Role {
    /// The values a field of this role may take on `cfg`, and what they
    /// are.
    pub fn range(self, cfg: &Config) -> (std::ops::RangeInclusive<u32>, &'static str) {
        match self {
            Role::Index => (0..=PAGE_CACHE_SLOTS - 1, "the file's page-cache slots"),
            Role::Pfn => (0..=cfg.nr_pfns() - 1, "the machine's page frames"),
            Role::Mm => (0..=cfg.mms as u32 - 1, "the configuration's processes"),
            Role::Page => (
                0..=cfg.user_pages().max(1) - 1,
                "the user pages the configuration's VMAs map",
            ),
            Role::Count => (1..=MAX_FAIL_COUNT, "allocations to fail"),
            Role::Order => (0..=1, "anonymous folio orders (0, or 1 for an mTHP)"),
            Role::Len => (1..=PMD_PAGES, "pages of a range, at most a PMD"),
            Role::Bit => (0..=1, "a flag, 0 or 1"),
        }
    }
}

const _: () = assert!(MAX_MMS as u32 <= u8::MAX as u32);

/// Where the decoder gets field values: one per role.
pub trait Draw {
    fn draw(&mut self, role: Role) -> arbitrary::Result<u32>;
}

/// An op field: a number with a role.
pub trait Arg: Sized {
    const ROLE: Role;
    fn from_raw(v: u32) -> Self;
    fn raw(&self) -> u32;

    /// A value is in its role's range, or an error naming the field.
    fn check(&self, field: &str, cfg: &Config) -> Result<(), String> {
        let (range, what) = Self::ROLE.range(cfg);
        if range.contains(&self.raw()) {
            return Ok(());
        }
        Err(format!(
            "field `{field}` is {}, out of range {}..={} ({what})",
            self.raw(),
            range.start(),
            range.end()
        ))
    }
}

macro_rules! args {
    ($( $(#[$doc:meta])* $name:ident($repr:ty) = $role:ident; )*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $repr);

        impl Arg for $name {
            const ROLE: Role = Role::$role;
            fn from_raw(v: u32) -> Self {
                $name(v as $repr)
            }
            fn raw(&self) -> u32 {
                self.0 as u32
            }
        }

        impl $name {
            pub fn get(self) -> u32 {
                self.0 as u32
            }
        }
    )*};
}

args! {
    /// A page-cache index.
    Index(u8) = Index;
    /// A pfn, or the pfn an allocation should return if it is free.
    PfnArg(u32) = Pfn;
    /// A process.
    MmArg(u8) = Mm;
    /// A user page.
    PageArg(u8) = Page;
    /// A count.
    Count(u8) = Count;
    /// A folio order.
    Order(u8) = Order;
    /// Pages of a range.
    Len(u8) = Len;
    /// A flag.
    Bit(u8) = Bit;
}

impl Bit {
    pub fn set(self) -> bool {
        self.0 != 0
    }
}

fn uaddr(mm: MmArg, addr: PageArg) -> Uaddr {
    Uaddr::new(mm.0, addr.0)
}

macro_rules! present {
    () => {
        false
    };
    ($x:ident) => {
        true
    };
}

macro_rules! ops {
    ($(
        $(#[$doc:meta])*
        $name:ident = $kernel:literal, $subsystem:ident $(, $setup:ident)? {
            $( $(#[$fattr:meta])* $field:ident : $ty:ty ),* $(,)?
        } => |$cpu:ident| $run:expr;
    )*) => {
        /// One kernel path. Serialised as `{"op": "<kernel name>", ...}`.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "op", deny_unknown_fields)]
        pub enum Op {
            $(
                $(#[$doc])*
                #[serde(rename = $kernel)]
                $name { $( $(#[$fattr])* $field: $ty ),* },
            )*
        }

        /// What kind of op, without its fields.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind { $( $name, )* }

        impl OpKind {
            /// Every kind, simplest first: the decoder reads zero as the
            /// first kind of an arm.
            pub const ALL: &'static [OpKind] = &[ $( OpKind::$name, )* ];

            /// The kernel path's name, as scenario files spell it.
            pub fn name(self) -> &'static str {
                match self { $( OpKind::$name => $kernel, )* }
            }

            pub fn subsystem(self) -> Subsystem {
                match self { $( OpKind::$name => Subsystem::$subsystem, )* }
            }

            /// Does the op build state (a folio, a mapping, a reference)
            /// rather than tear it down? The setup draws only these, so that
            /// the CPUs race over state that exists.
            pub fn builds_state(self) -> bool {
                match self { $( OpKind::$name => present!($($setup)?), )* }
            }

            /// The roles of this kind's fields, in order.
            pub fn roles(self) -> &'static [Role] {
                match self { $( OpKind::$name => &[ $( <$ty as Arg>::ROLE ),* ], )* }
            }

            /// An op of this kind with fields drawn from `d`.
            pub fn draw(self, d: &mut dyn Draw) -> arbitrary::Result<Op> {
                Ok(match self {
                    $( OpKind::$name => Op::$name {
                        $( $field: <$ty as Arg>::from_raw(d.draw(<$ty as Arg>::ROLE)?), )*
                    }, )*
                })
            }
        }

        impl Op {
            pub fn kind(&self) -> OpKind {
                match self { $( Op::$name { .. } => OpKind::$name, )* }
            }

            /// Every field's value, in the order of `OpKind::roles`.
            pub fn values(&self) -> Vec<u32> {
                match self {
                    $( Op::$name { $( $field ),* } => vec![ $( $field.raw() ),* ], )*
                }
            }

            /// Every field in its range for `cfg`.
            pub fn check(&self, cfg: &Config) -> Result<(), String> {
                match self {
                    $( Op::$name { $( $field ),* } => {
                        $( $field.check(stringify!($field), cfg)?; )*
                        let _ = cfg;
                        Ok(())
                    } )*
                }
            }

            /// Run the kernel path on `cpu`.
            pub fn run(&self, cpu: &Cpu) -> KResult<()> {
                match *self {
                    $( Op::$name { $( $field ),* } => {
                        let $cpu = cpu;
                        $run
                    } )*
                }
            }
        }
    };
}

ops! {
    /// A pfn walker (`isolate_migratepages_block`): `PageLRU`,
    /// `get_page_unless_zero`, `page_folio`, `folio_put`.
    PfnWalk = "pfn_walk", Hvo { pfn: PfnArg }
        => |cpu| pfn_walker::pfn_walk(cpu, pfn.get());
    /// `filemap_get_folio` + `folio_put`: a speculative RCU lookup.
    FilemapGetFolio = "filemap_get_folio", PageCache { index: Index }
        => |cpu| filemap::filemap_get_folio(cpu, index.get());
    /// `filemap_add_folio`: a new order-0 folio at `index`; the allocator
    /// returns `pfn_hint` if that page is free.
    FilemapAddFolio = "filemap_add_folio", PageCache, setup { index: Index, pfn_hint: PfnArg }
        => |cpu| filemap::filemap_add_folio(cpu, index.get(), pfn_hint.get());
    /// `truncate_inode_pages_range` for one index.
    TruncateInodeFolio = "truncate_inode_folio", PageCache { index: Index }
        => |cpu| truncate::truncate_inode_folio(cpu, index.get());
    /// `shrink_folio_list` → `__remove_mapping` for the folio at `index`.
    ShrinkFolio = "shrink_folio", PageCache { index: Index }
        => |cpu| vmscan::shrink_folio(cpu, index.get());
    /// `alloc_hugetlb_folio`: take a pool folio, or allocate a surplus one
    /// from the free block holding `pfn_hint`; this CPU keeps it.
    AllocHugetlbFolio = "alloc_hugetlb_folio", Hvo { pfn_hint: PfnArg }
        => |cpu| hugetlb::alloc_hugetlb_folio(cpu, pfn_hint.get());
    /// `folio_put` on the last hugetlb folio this CPU took.
    PutHugetlbFolio = "put_hugetlb_folio", Hvo {}
        => |cpu| hugetlb::put_hugetlb_folio(cpu);
    /// `alloc_pool_huge_folio`: grow the hugetlb pool (runs HVO) with the
    /// free block holding `pfn_hint`, if there is one.
    AllocPoolHugeFolio = "alloc_pool_huge_folio", Hvo, setup { pfn_hint: PfnArg }
        => |cpu| hugetlb::alloc_pool_huge_folio(cpu, pfn_hint.get());
    /// `set_max_huge_pages(nr - 1)`: free a pool folio (restores its vmemmap).
    ShrinkHugePool = "shrink_huge_pool", Hvo {}
        => |cpu| hugetlb::shrink_huge_pool(cpu);
    /// `free_hpage_workfn`: a kworker on this CPU frees the HVO'd folios
    /// `free_huge_folio` queued.
    FreeHpageWorkfn = "free_hpage_workfn", Hvo {}
        => |cpu| hugetlb::free_hpage_workfn(cpu);
    /// `dissolve_free_hugetlb_folio` of the folio headed at `pfn`, if it is
    /// a free pool folio.
    DissolveFreeHugetlbFolio = "dissolve_free_hugetlb_folio", Hvo { pfn: PfnArg }
        => |cpu| hugetlb::dissolve_free_hugetlb_folio(cpu, pfn.get());
    /// Inject failure into the next `count` page allocations.
    FailNextAllocs = "fail_next_allocs", Inject { count: Count }
        => |cpu| cpu.step("should_fail_alloc_page", |m| {
            m.fail_next_allocs += count.get();
            Ok(())
        });
    /// `handle_mm_fault`: a read fault on user page `addr` of process `mm`
    /// (`order` 1 asks for an anon mTHP). New folios come from the free
    /// block holding `pfn_hint`.
    HandleMmFault = "handle_mm_fault", Memory, setup {
        mm: MmArg,
        addr: PageArg,
        pfn_hint: PfnArg,
        #[serde(default = "order_zero")]
        order: Order,
    } => |cpu| memory::handle_mm_fault(cpu, uaddr(mm, addr), pfn_hint.get(), order.0);
    /// `get_user_pages_fast` (`FOLL_GET`) of one page; the CPU keeps the
    /// reference.
    GetUserPagesFast = "get_user_pages_fast", Gup, setup { mm: MmArg, addr: PageArg }
        => |cpu| gup::gup_fast_fallback(cpu, uaddr(mm, addr), Foll::Get, false);
    /// `pin_user_pages_fast` (`FOLL_PIN | FOLL_LONGTERM`, with
    /// `foll_write` also `FOLL_WRITE`) of one page; the CPU keeps the pin.
    PinUserPagesFast = "pin_user_pages_fast", Gup, setup {
        mm: MmArg,
        addr: PageArg,
        #[serde(default)]
        foll_write: Bit,
    } => |cpu| gup::gup_fast_fallback(cpu, uaddr(mm, addr), Foll::Pin, foll_write.set());
    /// `memcpy_to_page`: write a fresh value through the CPU's latest
    /// `FOLL_WRITE` pin.
    MemcpyToPage = "memcpy_to_page", Gup {}
        => |cpu| gup::memcpy_to_page(cpu);
    /// `unpin_user_page` (`put_page` for `FOLL_GET`) of the CPU's latest
    /// GUP reference or pin.
    UnpinUserPage = "unpin_user_page", Gup {}
        => |cpu| gup::unpin_user_page(cpu);
    /// `move_pages(2)` → `migrate_pages` of the folio mapped at `addr`; the
    /// new folio comes from the free block holding `pfn_hint`.
    MigratePages = "migrate_pages", Migration { mm: MmArg, addr: PageArg, pfn_hint: PfnArg }
        => |cpu| migrate::migrate_pages(cpu, uaddr(mm, addr), pfn_hint.get());
    /// `zap_pte_range` (MADV_DONTNEED) of one page.
    ZapPteRange = "zap_pte_range", Memory { mm: MmArg, addr: PageArg }
        => |cpu| memory::zap_pte_range(cpu, uaddr(mm, addr));
    /// `create_empty_buffers`: attach buffer heads (PG_private) to the
    /// page-cache folio at `index`; what migration counts for PG_private.
    CreateEmptyBuffers = "create_empty_buffers", Migration, setup { index: Index }
        => |cpu| buffer::create_empty_buffers(cpu, index.get());
    /// khugepaged's `collapse_huge_page` of process `mm`'s first anonymous
    /// PMD range into a PMD-mapped folio from the free block holding
    /// `pfn_hint`.
    CollapseHugePage = "collapse_huge_page", Migration { mm: MmArg, pfn_hint: PfnArg }
        => |cpu| khugepaged::collapse_huge_page(cpu, mm.0, pfn_hint.get());
    /// A user load from page `addr` of process `mm`: through this CPU's
    /// TLB, the page-table walk on a miss, and a read fault if nothing is
    /// mapped.
    UserLoad = "user_load", Memory { mm: MmArg, addr: PageArg }
        => |cpu| memory::user_access(cpu, uaddr(mm, addr), false);
    /// A user store to page `addr` of process `mm`: as a load, with a
    /// write fault (`do_wp_page`) where the PTE is read-only.
    UserStore = "user_store", Memory { mm: MmArg, addr: PageArg }
        => |cpu| memory::user_access(cpu, uaddr(mm, addr), true);
    /// A write fault on page `addr` of a THP-eligible anonymous VMA
    /// (`MADV_HUGEPAGE`) of process `mm` whose PMD is none
    /// (`do_huge_pmd_anonymous_page`): a THP from the free block holding
    /// `pfn_hint`, mapped by a writable PMD.
    DoHugePmdAnonymousPage = "do_huge_pmd_anonymous_page", Thp, setup {
        mm: MmArg,
        addr: PageArg,
        pfn_hint: PfnArg,
    } => |cpu| huge_memory::do_huge_pmd_anonymous_page(cpu, uaddr(mm, addr), pfn_hint.get());
    /// `__split_huge_pmd` of the THP PMD mapping `addr`, as a partial
    /// mprotect, munmap or madvise of its range does.
    SplitHugePmd = "split_huge_pmd", Thp, setup { mm: MmArg, addr: PageArg }
        => |cpu| huge_memory::split_huge_pmd_op(cpu, uaddr(mm, addr));
    /// `fork(2)` of process `mm` into slot `child` (`dup_mmap`): the
    /// process in `child` exits first; nothing if they are the same.
    DupMmap = "dup_mmap", Thp, setup { mm: MmArg, child: MmArg }
        => |cpu| fork::dup_mmap(cpu, mm.0, child.0);
    /// `munmap(2)` of `len` anonymous pages from `addr` (`vm_munmap`).
    VmMunmap = "vm_munmap", Thp { mm: MmArg, addr: PageArg, len: Len }
        => |cpu| mmap::vm_munmap(cpu, uaddr(mm, addr), len.get());
    /// `madvise(MADV_DONTNEED)` of `len` anonymous pages from `addr`.
    MadviseDontneedFree = "madvise_dontneed_free", Thp { mm: MmArg, addr: PageArg, len: Len }
        => |cpu| madvise::madvise_dontneed_free(cpu, uaddr(mm, addr), len.get());
    /// `mremap(2)` (`MREMAP_MAYMOVE | MREMAP_FIXED`) of `len` anonymous
    /// pages from `addr` to `new_addr`.
    Mremap = "mremap", Thp { mm: MmArg, addr: PageArg, len: Len, new_addr: PageArg }
        => |cpu| mremap::mremap(cpu, uaddr(mm, addr), len.get(), new_addr.get());
    /// `mprotect(2)` of `len` anonymous pages from `addr` to `PROT_READ`,
    /// with `write` `PROT_READ | PROT_WRITE`.
    Mprotect = "mprotect", Thp { mm: MmArg, addr: PageArg, len: Len, write: Bit }
        => |cpu| mprotect::mprotect(cpu, uaddr(mm, addr), len.get(), write.set());
    /// `madvise(MADV_DONTFORK)` of `len` anonymous pages from `addr`, with
    /// `dofork` `MADV_DOFORK` (`madvise_update_vma`).
    MadviseUpdateVma = "madvise_update_vma", Thp { mm: MmArg, addr: PageArg, len: Len, dofork: Bit }
        => |cpu| madvise::madvise_update_vma(cpu, uaddr(mm, addr), len.get(), dofork.set());
    /// `pin_user_pages` (`FOLL_PIN | FOLL_LONGTERM`, with `foll_write`
    /// also `FOLL_WRITE`) of one page through the slow path alone; the CPU
    /// keeps the pin.
    PinUserPages = "pin_user_pages", Gup, setup { mm: MmArg, addr: PageArg, foll_write: Bit }
        => |cpu| gup::pin_user_pages(cpu, uaddr(mm, addr), foll_write.set());
    /// `memcpy_from_page`: read through the CPU's latest GUP reference or
    /// pin (a pipe reading what vmsplice() took, a device reading DMA).
    MemcpyFromPage = "memcpy_from_page", Gup {}
        => |cpu| gup::memcpy_from_page(cpu);
    /// `munmap` of the huge page holding `addr` in process `mm`: splits
    /// the VMA around it, unmaps it (unsharing) and frees page tables.
    Munmap = "munmap", PmdShare { mm: MmArg, addr: PageArg }
        => |cpu| vma::munmap(cpu, uaddr(mm, addr));
    /// `madvise(MADV_DONTNEED)` of the huge page holding `addr`.
    MadviseDontneed = "madvise_dontneed", PmdShare { mm: MmArg, addr: PageArg }
        => |cpu| madvise::madvise_dontneed(cpu, uaddr(mm, addr));
    /// `madvise(MADV_DONTFORK)` of the huge page holding `addr`: a flag
    /// change that splits the VMA around it (`__split_vma`).
    MadviseDontfork = "madvise_dontfork", PmdShare { mm: MmArg, addr: PageArg }
        => |cpu| madvise::madvise_dontfork(cpu, uaddr(mm, addr));
    /// `fallocate(FALLOC_FL_PUNCH_HOLE)` of hugetlbfs huge page `index`.
    HugetlbfsPunchHole = "hugetlbfs_punch_hole", PmdShare { index: Index }
        => |cpu| hugetlbfs::hugetlbfs_punch_hole(cpu, index.get());
    /// `ftruncate` of the hugetlbfs file to `index` huge pages
    /// (`hugetlb_vmtruncate`).
    HugetlbVmtruncate = "hugetlb_vmtruncate", PmdShare { index: Index }
        => |cpu| hugetlbfs::hugetlb_vmtruncate(cpu, index.get());
    /// `exit_mmap` of process `mm`.
    ExitMmap = "exit_mmap", PmdShare { mm: MmArg }
        => |cpu| mmap::exit_mmap(cpu, mm.0);
    /// `compact_zone` over one pfn (kcompactd): isolate the folio at `pfn`
    /// and migrate it to the free block holding `pfn_hint`.
    CompactPfn = "compact_pfn", Migration { pfn: PfnArg, pfn_hint: PfnArg }
        => |cpu| pfn_walker::compact_pfn(cpu, pfn.get(), pfn_hint.get());
}

fn order_zero() -> Order {
    Order(0)
}

impl Op {
    /// The op's kernel name.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// Field values given in order, as a [`Draw`].
struct Values<'a>(std::slice::Iter<'a, u32>);

impl Draw for Values<'_> {
    fn draw(&mut self, _: Role) -> arbitrary::Result<u32> {
        Ok(self.0.next().copied().unwrap_or(0))
    }
}

impl OpKind {
    /// The op of this kind with these field values (missing ones are 0).
    pub fn with(self, values: &[u32]) -> Op {
        self.draw(&mut Values(values.iter()))
            .expect("drawing from values cannot fail")
    }

    /// The kinds an arm of subsystems draws from, simplest first.
    pub fn of(arm: SubsystemSet) -> impl Iterator<Item = OpKind> {
        OpKind::ALL
            .iter()
            .copied()
            .filter(move |k| arm.has(k.subsystem()))
    }

    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.iter().copied().find(|k| k.name() == name)
    }
}
