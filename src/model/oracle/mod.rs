//! The model's properties, in one registry as stateright keeps them: a
//! name, when it is checked, and its function.
//!
//! - *Invariants* ("always") fail an execution: at each struct-page access,
//!   at each reference-count update, after every step, at quiescence, on
//!   the kernel path that knows what it expects, or from the run itself.
//! - *Reachability* properties ("sometimes") only record that an execution
//!   got somewhere a bug needs (a reader met a fake head, a migration
//!   completed), so that a test can assert generated inputs still get there.

mod access;
mod hugetlb;
mod migration;
mod page_alloc;
mod page_cache;
mod pmd_share;
mod quiescent;
mod state;
mod thp;
mod vma;

pub use access::{
    RefKind, RefUpdate, cmpxchg_through_ro_vmemmap, no_access_to_unowned_vmemmap_frame,
    no_increment_from_zero, no_tlb_entry_outlives_free, no_underflow, no_write_through_ro_vmemmap,
    ref_target_is_genuine, unfreeze_from_zero, user_tlb_entry_current, user_tlb_table_current,
    walked_freed_table,
};
pub use hugetlb::hugetlb_counters_match;
pub use migration::{
    folio_is_quiet, migration_carries_data, migration_expected_refs, migration_makes_progress,
    migration_refcount_exact, migration_skips_only_freed,
};
pub use page_alloc::buddy_lists_match_pages;
pub use page_alloc::{folio_unlock_by_locker, hvo_folio_frozen, might_sleep, no_bad_page_at_free};
pub use page_cache::{
    gup_entry_maps, gup_page_is_current, isolated_folio_is_current, lookup_is_current,
    page_cache_matches_mappings_and_ptes,
};
pub use pmd_share::{
    pmd_table_free_unshared, share_counts_at_quiescence, share_counts_match,
    shared_tables_map_one_offset, unshare_holds_off_walkers, walked_pmd_table_not_of_mm,
};
pub use quiescent::{
    Quiescence, every_frame_accounted, every_reference_put, no_migration_entry_left,
    page_tables_within_vmas,
};
pub use state::{frozen_stays_frozen, pinned_writes_not_lost};
pub use thp::{
    anon_rmap_reaches_mappings, hold_read_sees, holds_stay_private, load_sees_own_data,
    mapcounts_match_mappings, pins_coherent,
};
pub use vma::segv_only_outside_vmas;

use super::machine::Machine;
use super::mm_types::StructPage;
use super::vmemmap::Access;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! oracles {
    ($( $(#[$doc:meta])* $name:ident = $kebab:literal; )*) => {
        /// A named invariant of the model.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Oracle { $( $(#[$doc])* #[serde(rename = $kebab)] $name, )* }

        impl Oracle {
            pub const ALL: &'static [Oracle] = &[ $( Oracle::$name, )* ];
            pub fn name(self) -> &'static str {
                match self { $( Oracle::$name => $kebab, )* }
            }
        }
    };
}

oracles! {
    /// A store to a struct page through a read-only vmemmap mapping: an oops.
    RoVmemmapWrite = "no-write-through-ro-vmemmap";
    /// A struct-page access faulted: its vmemmap PTE was cleared for
    /// break-before-make (arm64) and the CPU had no cached translation.
    VmemmapFault = "no-fault-on-vmemmap-access";
    /// An access through the vmemmap to a frame the vmemmap no longer owns.
    UseAfterRemap = "no-use-after-remap";
    /// A reference taken on a tail page or a fake head.
    RefOnTailOrFakeHead = "no-ref-on-tail-or-fake-head";
    /// An unconditional increment of a refcount that was 0.
    IncFromZero = "no-inc-from-zero";
    /// A put below zero.
    RefcountUnderflow = "no-refcount-underflow";
    /// A frozen folio's refcount left 0 before its freezer unfroze it.
    FrozenChanged = "frozen-stays-frozen";
    /// At quiescence a frame is owned by nobody, or by two owners.
    FrameAccounting = "every-frame-accounted";
    /// At quiescence a refcount differs from the references that exist.
    ReferenceLeak = "every-reference-put";
    /// A GUP reference or pin is held on a folio whose contents migration
    /// (or khugepaged) already moved elsewhere: whatever is written
    /// through it is lost.
    PinnedWriteLost = "pinned-writes-not-lost";
    /// Migration went ahead (a passed refcount check, a freeze) while the
    /// folio's refcount was not exactly the references migration expects.
    MigrationRefcount = "migration-only-at-expected-refcount";
    /// The new folio lacks the old folio's data or mapping, or a migration
    /// entry outlived its migration.
    MigrationCopy = "migration-carries-data-and-mapping";
    /// Migration gave up with -EAGAIN on a folio nobody else referenced.
    MigrationProgress = "migration-makes-progress";
    /// A user access through a stale TLB entry reached a frame that no
    /// longer holds the page it cached (freed, or reused by someone else),
    /// or was translated through a page table that has since been freed
    /// (and maybe reused).
    UserUseAfterFree = "no-user-access-after-free";
    /// Frames went back to the buddy allocator (or a hugetlb folio to the
    /// pool) while a CPU's TLB still translated to them, or through a page
    /// table among them.
    TlbFlushBeforeFree = "no-free-before-tlb-flush";
    /// A lockless page-table walker read a frame that is no longer a page
    /// table (freed, or reused).
    PageTableUseAfterFree = "no-walk-of-freed-page-table";
    /// A process read (through a mapping, or a GUP reference or pin it
    /// took) a value another process wrote after they parted at fork.
    Isolation = "process-isolation";
    /// A FOLL_PIN pin of an anonymous page is not the page its process maps
    /// at that address, the page is mapped by another process, or a read
    /// through the pin (or a load the pin wrote for) misses a write.
    PinCoherence = "pin-coherence";
    /// An anonymous folio's mapcounts, refcount or PageAnonExclusive
    /// disagree with the page tables.
    MapcountConsistent = "mapcounts-match-mappings";
    /// A mapping of an anonymous folio that an rmap walk from the folio's
    /// anon_vma cannot reach.
    AnonRmap = "anon-rmap-reaches-every-mapping";
    /// A page-table walker loaded from a PMD table that is no longer a page
    /// table of its process: unshared from it (another process's table
    /// now), or freed, or reused.
    PmdTableNotOfMm = "no-walk-of-page-table-not-of-its-mm";
    /// A PMD table's `pt_share_count` is not one less than the processes
    /// using it, or a PMD table was freed while still in use.
    PmdShareCount = "pmd-share-count-matches";
    /// Processes that share a PMD table map the same hugetlbfs pages
    /// through it: their VMAs map one file offset at its PUD range.
    PmdShareSameOffset = "pmd-shared-at-one-file-offset";
    /// An unshare of a PMD table held off neither through `mmap_lock` for
    /// write nor through the VMA locks every walker of its process that
    /// may be on the table.
    PmdUnshareExcludesWalkers = "pmd-unshare-holds-off-walkers";
    /// A page freed to the buddy allocator fails `free_pages_prepare`'s
    /// checks (`bad_page`).
    BadPage = "no-bad-page-at-free";
    /// A sleeping call in atomic context (`might_sleep`).
    MightSleep = "no-sleep-in-atomic-context";
    /// HVO optimized or restored a folio that was not frozen.
    HvoNotFrozen = "hvo-only-on-frozen-folio";
    /// A folio unlocked that was not locked, or that another CPU locked.
    FolioLockOwner = "folio-unlock-by-its-locker";
    /// After a `hugetlb_lock` section, `nr_huge_pages` is not the folios on
    /// the free and active lists, `surplus_huge_pages` exceeds it, or a
    /// folio is on the lists twice.
    HugetlbCounters = "hugetlb-counters-match-lists";
    /// After a step, a page in a block the buddy allocator changed has
    /// PageBuddy without heading a free block of its `buddy_order`, a free
    /// block's head lacks it, or two free blocks overlap.
    BuddyConsistent = "buddy-lists-match-pagebuddy";
    /// After a step, at an index the step changed: the page cache holds a
    /// folio whose `mapping`/`index` is not that index, a folio the step
    /// took out of the cache still has it, or a present PTE of the file
    /// VMA maps another folio than the cache's.
    PageCacheConsistent = "page-cache-matches-mappings-and-ptes";
    /// A folio a lookup returned (`filemap_get_entry`, GUP, compaction's
    /// isolation) was used without a recheck after it left the index,
    /// address or pfn it was looked up by.
    LookupCurrent = "lookup-returns-current-folio";
    /// At quiescence a process holds a PMD table for a PUD range that none
    /// of its VMAs overlaps: `free_pgtables` left it behind.
    PageTableLeak = "no-page-table-outlives-its-vmas";
    /// A fault found no VMA, and SIGSEGV'd, at a page one of the process's
    /// VMAs covers: the lookup and the VMAs disagree.
    SegvInVma = "sigsegv-only-outside-vmas";
    /// Every CPU is blocked.
    Deadlock = "no-deadlock";
    /// The execution did not finish within the step bound.
    StepLimit = "terminates";
}

impl fmt::Display for Oracle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Oracle {
    pub fn from_name(name: &str) -> Option<Oracle> {
        Oracle::ALL.iter().copied().find(|o| o.name() == name)
    }
}

/// An oracle that failed, with what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub oracle: Oracle,
    pub detail: String,
}

pub(crate) fn fail(oracle: Oracle, detail: String) -> Result<(), Violation> {
    Err(Violation { oracle, detail })
}

type Check<T> = fn(&T) -> Result<(), Violation>;
type QuiescentCheck = for<'a> fn(&Quiescence<'a>) -> Result<(), Violation>;

/// When an invariant is checked, and with what.
pub enum When {
    /// At each struct-page access through the vmemmap, before it reads.
    Access(Check<Access>),
    /// At each update of a refcount.
    Ref(Check<RefUpdate>),
    /// After every step.
    Step(Check<Machine>),
    /// Once every CPU has finished.
    Quiescent(QuiescentCheck),
    /// On the kernel path that knows what it expects; the path calls the
    /// named function.
    Path(&'static str),
    /// From the run itself: the executor reports it.
    Run,
}

/// One row of the registry.
pub struct Invariant {
    pub oracle: Oracle,
    pub when: When,
}

/// Every invariant. An oracle may be checked at more than one time.
pub static INVARIANTS: &[Invariant] = &[
    Invariant {
        oracle: Oracle::RoVmemmapWrite,
        when: When::Access(no_write_through_ro_vmemmap),
    },
    Invariant {
        oracle: Oracle::UseAfterRemap,
        when: When::Access(no_access_to_unowned_vmemmap_frame),
    },
    Invariant {
        oracle: Oracle::VmemmapFault,
        when: When::Path("vmemmap::access, at a translation of a cleared PTE"),
    },
    Invariant {
        oracle: Oracle::RoVmemmapWrite,
        when: When::Path("page_ref::add_unless_cmpxchg"),
    },
    Invariant {
        oracle: Oracle::RefOnTailOrFakeHead,
        when: When::Ref(ref_target_is_genuine),
    },
    Invariant {
        oracle: Oracle::IncFromZero,
        when: When::Ref(no_increment_from_zero),
    },
    Invariant {
        oracle: Oracle::RefcountUnderflow,
        when: When::Ref(no_underflow),
    },
    Invariant {
        oracle: Oracle::FrozenChanged,
        when: When::Step(frozen_stays_frozen),
    },
    Invariant {
        oracle: Oracle::FrozenChanged,
        when: When::Path("page_ref::folio_ref_unfreeze"),
    },
    Invariant {
        oracle: Oracle::PinnedWriteLost,
        when: When::Step(pinned_writes_not_lost),
    },
    Invariant {
        oracle: Oracle::MigrationRefcount,
        when: When::Path("migrate::__migrate_folio and the freeze"),
    },
    Invariant {
        oracle: Oracle::MigrationCopy,
        when: When::Path("migrate::__folio_migrate_mapping"),
    },
    Invariant {
        oracle: Oracle::MigrationCopy,
        when: When::Quiescent(no_migration_entry_left),
    },
    Invariant {
        oracle: Oracle::MigrationProgress,
        when: When::Path("migrate::folio_putback_lru"),
    },
    Invariant {
        oracle: Oracle::MigrationProgress,
        when: When::Path("migrate::migrate_folio_unmap, at \"freed from under us\""),
    },
    Invariant {
        oracle: Oracle::UserUseAfterFree,
        when: When::Path("memory::user_access"),
    },
    Invariant {
        oracle: Oracle::PageTableUseAfterFree,
        when: When::Path("pgtable::walk_pte"),
    },
    Invariant {
        oracle: Oracle::MapcountConsistent,
        when: When::Step(mapcounts_match_mappings),
    },
    Invariant {
        oracle: Oracle::AnonRmap,
        when: When::Step(anon_rmap_reaches_mappings),
    },
    Invariant {
        oracle: Oracle::PinCoherence,
        when: When::Step(pins_coherent),
    },
    Invariant {
        oracle: Oracle::Isolation,
        when: When::Step(holds_stay_private),
    },
    Invariant {
        oracle: Oracle::Isolation,
        when: When::Path("memory::user_access, gup::memcpy_from_page"),
    },
    Invariant {
        oracle: Oracle::PinCoherence,
        when: When::Path("memory::user_access, gup::memcpy_from_page"),
    },
    Invariant {
        oracle: Oracle::UserUseAfterFree,
        when: When::Path("memory::user_access: the table the entry was walked through"),
    },
    Invariant {
        oracle: Oracle::TlbFlushBeforeFree,
        when: When::Path(
            "page_alloc::free_pages_prepare_begin (every free) and hugetlb::enqueue_hugetlb_folio",
        ),
    },
    Invariant {
        oracle: Oracle::PmdTableNotOfMm,
        when: When::Path("pgtable::walk_pmd, at each load of a PMD table"),
    },
    Invariant {
        oracle: Oracle::PmdUnshareExcludesWalkers,
        when: When::Path("hugetlb::huge_pmd_unshare"),
    },
    Invariant {
        oracle: Oracle::PmdShareCount,
        when: When::Step(share_counts_match),
    },
    Invariant {
        oracle: Oracle::PmdShareSameOffset,
        when: When::Step(shared_tables_map_one_offset),
    },
    Invariant {
        oracle: Oracle::PmdShareCount,
        when: When::Path("pgtable::pagetable_free"),
    },
    Invariant {
        oracle: Oracle::PmdShareCount,
        when: When::Quiescent(share_counts_at_quiescence),
    },
    Invariant {
        oracle: Oracle::BuddyConsistent,
        when: When::Step(buddy_lists_match_pages),
    },
    Invariant {
        oracle: Oracle::HugetlbCounters,
        when: When::Step(hugetlb_counters_match),
    },
    Invariant {
        oracle: Oracle::PageCacheConsistent,
        when: When::Step(page_cache_matches_mappings_and_ptes),
    },
    Invariant {
        oracle: Oracle::LookupCurrent,
        when: When::Path(
            "memory::do_read_fault at finish_fault, gup::hold (GUP's return), \
             pfn_walker::compact_pfn at isolation",
        ),
    },
    Invariant {
        oracle: Oracle::FrameAccounting,
        when: When::Quiescent(every_frame_accounted),
    },
    Invariant {
        oracle: Oracle::ReferenceLeak,
        when: When::Quiescent(every_reference_put),
    },
    Invariant {
        oracle: Oracle::PageTableLeak,
        when: When::Quiescent(page_tables_within_vmas),
    },
    Invariant {
        oracle: Oracle::SegvInVma,
        when: When::Path("hugetlb::hugetlb_fault when its VMA lookup finds nothing"),
    },
    Invariant {
        oracle: Oracle::BadPage,
        when: When::Path(
            "page_alloc::free_tail_pages_prepare and free_pages_prepare_head, on each step's pages",
        ),
    },
    Invariant {
        oracle: Oracle::MightSleep,
        when: When::Path(
            "rcu::synchronize_rcu, filemap::folio_lock, page_alloc::alloc_pages_may_sleep \
             (every GFP_KERNEL-like allocation), mmap_lock, i_mmap_rwsem, the hugetlb VMA \
             lock, hugetlb_fault_mutex",
        ),
    },
    Invariant {
        oracle: Oracle::FolioLockOwner,
        when: When::Path("filemap::folio_unlock and every PG_locked clear"),
    },
    Invariant {
        oracle: Oracle::HvoNotFrozen,
        when: When::Path("hugetlb_vmemmap::hugetlb_vmemmap_optimize_folio and _restore_folio"),
    },
    Invariant {
        oracle: Oracle::Deadlock,
        when: When::Run,
    },
    Invariant {
        oracle: Oracle::StepLimit,
        when: When::Run,
    },
];

/// The registry's checks of one kind, gathered once.
struct ByKind {
    access: Vec<Check<Access>>,
    refs: Vec<Check<RefUpdate>>,
    step: Vec<Check<Machine>>,
    quiescent: Vec<QuiescentCheck>,
}

fn by_kind() -> &'static ByKind {
    static BY_KIND: std::sync::OnceLock<ByKind> = std::sync::OnceLock::new();
    BY_KIND.get_or_init(|| {
        let mut k = ByKind {
            access: Vec::new(),
            refs: Vec::new(),
            step: Vec::new(),
            quiescent: Vec::new(),
        };
        for inv in INVARIANTS {
            match inv.when {
                When::Access(c) => k.access.push(c),
                When::Ref(c) => k.refs.push(c),
                When::Step(c) => k.step.push(c),
                When::Quiescent(c) => k.quiescent.push(c),
                When::Path(_) | When::Run => {}
            }
        }
        k
    })
}

/// The access invariants, before an access reads or writes.
pub fn at_access(a: &Access) -> Result<(), Violation> {
    by_kind().access.iter().try_for_each(|check| check(a))
}

/// The refcount invariants, at an update.
pub fn at_ref_update(r: &RefUpdate) -> Result<(), Violation> {
    by_kind().refs.iter().try_for_each(|check| check(r))
}

/// The per-step invariants, and the reachability properties when asked.
pub fn after_step(m: &mut Machine) -> Result<(), Violation> {
    by_kind().step.iter().try_for_each(|check| check(m))?;
    m.ledger.touched.clear();
    m.ledger.pmd_tables_touched.clear();
    m.ledger.hugetlb_changed = false;
    m.buddy.changed.clear();
    m.mapping.changed.clear();
    m.hugetlbfs.changed.clear();
    if m.reached.is_some() {
        let mut got = 0;
        for (i, r) in REACHABLE.iter().enumerate() {
            if let Reach::Step(p) = r.when
                && p(m)
            {
                got |= 1 << i;
            }
        }
        m.reach(got);
    }
    Ok(())
}

/// The quiescence invariants: every CPU has finished, so outstanding RCU
/// callbacks run first (`rcu_barrier`).
pub fn at_quiescence(m: &mut Machine) -> Result<(), Violation> {
    m.rcu_barrier()?;
    let q = Quiescence::new(m);
    by_kind().quiescent.iter().try_for_each(|check| check(&q))
}

/// Where a reachability property is observed.
pub enum Reach {
    /// At a struct-page access, with the struct page it read.
    Access(fn(&Access, &StructPage) -> bool),
    /// After a step.
    Step(fn(&Machine) -> bool),
}

/// A "sometimes" property: generated inputs should get here.
pub struct Reachable {
    pub name: &'static str,
    /// The subsystem whose races need it.
    pub subsystem: super::subsystem::Subsystem,
    pub when: Reach,
}

/// Every reachability property; the bit of property `i` is `1 << i`.
pub static REACHABLE: &[Reachable] = &[
    Reachable {
        name: "struct-page-read-through-hvo-alias",
        subsystem: super::subsystem::Subsystem::Hvo,
        when: Reach::Access(|a, _| a.aliased),
    },
    Reachable {
        name: "fake-head-read",
        subsystem: super::subsystem::Subsystem::Hvo,
        when: Reach::Access(|a, p| {
            a.aliased && super::vmemmap::page_aligned(a.pfn) && p.test(super::mm_types::pg::HEAD)
        }),
    },
    Reachable {
        name: "struct-page-read-through-stale-vmemmap-tlb",
        subsystem: super::subsystem::Subsystem::Hvo,
        when: Reach::Access(|a, _| a.stale),
    },
    Reachable {
        name: "hugetlb-folio-vmemmap-optimized",
        subsystem: super::subsystem::Subsystem::Hvo,
        when: Reach::Step(|m| m.hugetlb_optimize_vmemmap_key > 0),
    },
    Reachable {
        name: "two-hugetlb-folios-vmemmap-optimized",
        subsystem: super::subsystem::Subsystem::Hvo,
        when: Reach::Step(|m| m.hugetlb_optimize_vmemmap_key >= 2),
    },
    Reachable {
        name: "surplus-hugetlb-folio",
        subsystem: super::subsystem::Subsystem::Hvo,
        when: Reach::Step(|m| m.hstate.surplus_huge_pages > 0),
    },
    Reachable {
        name: "hugetlb-folio-freed-by-free-hpage-workfn",
        subsystem: super::subsystem::Subsystem::Hvo,
        when: Reach::Step(|m| m.ledger.hpage_work_freed),
    },
    Reachable {
        name: "hugetlb-folio-dissolved",
        subsystem: super::subsystem::Subsystem::Hvo,
        when: Reach::Step(|m| m.ledger.dissolved),
    },
    Reachable {
        name: "folio-migrated",
        subsystem: super::subsystem::Subsystem::Migration,
        when: Reach::Step(|m| !m.ledger.migrated.is_empty()),
    },
    Reachable {
        name: "folio-migrated-by-compaction",
        subsystem: super::subsystem::Subsystem::Migration,
        when: Reach::Step(|m| {
            let isolated = &m.ledger.compaction_isolated;
            m.ledger.migrated.iter().any(|x| isolated.contains(&x.src))
        }),
    },
    Reachable {
        name: "write-through-pin",
        subsystem: super::subsystem::Subsystem::Gup,
        when: Reach::Step(|m| m.ledger.pin_writes > 0),
    },
    Reachable {
        name: "pmd-leaf-mapped",
        subsystem: super::subsystem::Subsystem::Migration,
        when: Reach::Step(|m| {
            let mut leaf = false;
            m.for_each_mapping(|_, is_leaf| leaf |= is_leaf);
            leaf
        }),
    },
    // Page tables are freed at exit and fork (free_pgtables); a one-page
    // zap of a THP splits it rather than freeing its deposited table.
    Reachable {
        name: "page-table-freed",
        subsystem: super::subsystem::Subsystem::Thp,
        when: Reach::Step(|m| m.ledger.tables_freed > 0),
    },
    Reachable {
        name: "thp-pte-mapped",
        subsystem: super::subsystem::Subsystem::Thp,
        when: Reach::Step(|m| m.ledger.thp_pte_mapped),
    },
    Reachable {
        name: "fork-shared-anon-page",
        subsystem: super::subsystem::Subsystem::Thp,
        when: Reach::Step(|m| m.ledger.fork_shared_anon),
    },
    Reachable {
        name: "pinned-page-written-after-fork",
        subsystem: super::subsystem::Subsystem::Thp,
        when: Reach::Step(|m| m.ledger.pin_write_after_fork),
    },
    Reachable {
        name: "read-only-pin-unshared",
        subsystem: super::subsystem::Subsystem::Thp,
        when: Reach::Step(|m| m.ledger.unshared),
    },
    Reachable {
        name: "pmd-table-shared",
        subsystem: super::subsystem::Subsystem::PmdShare,
        when: Reach::Step(|m| m.ledger.pmd_shares > 0),
    },
    // Past the first PUD range: where a table is found by the file offset
    // of another process's VMA (`page_table_shareable`'s arithmetic).
    Reachable {
        name: "pmd-table-shared-past-the-first-pud-range",
        subsystem: super::subsystem::Subsystem::PmdShare,
        when: Reach::Step(|m| {
            m.mms.iter().any(|x| {
                x.pud[1..].iter().any(
                    |p| matches!(*p, super::pgtable::PudVal::Table(t) if m.pmd_table_users(t) > 1),
                )
            })
        }),
    },
    Reachable {
        name: "walker-between-pud-and-pmd-load-across-unshare",
        subsystem: super::subsystem::Subsystem::PmdShare,
        when: Reach::Step(|m| m.ledger.walks_across_unshare > 0),
    },
    Reachable {
        name: "shared-pmd-table-freed",
        subsystem: super::subsystem::Subsystem::PmdShare,
        when: Reach::Step(|m| m.ledger.shared_tables_freed > 0),
    },
];

/// The reachability properties an access reached.
pub fn observe_access(a: &Access, p: &StructPage) -> u64 {
    let mut got = 0;
    for (i, r) in REACHABLE.iter().enumerate() {
        if let Reach::Access(pred) = r.when
            && pred(a, p)
        {
            got |= 1 << i;
        }
    }
    got
}

/// The names of the properties in a reached-set.
pub fn reached_names(bits: u64) -> Vec<&'static str> {
    REACHABLE
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, r)| r.name)
        .collect()
}
