//! The bug variants: historical buggy designs the model can switch back on.
//! Each row names its subsystem, the oracle a finding violates, and what
//! it breaks; the kernel path it changes tests `cfg.has(Variant::..)`.

use super::arch::Arch;
use super::oracle::Oracle;
use super::subsystem::Subsystem;
use std::fmt;

macro_rules! variants {
    ($( $(#[$doc:meta])* $name:ident = $kebab:literal, $subsystem:ident, $oracle:ident,
        $breaks:literal; )*) => {
        /// A historical buggy design that the model can switch back on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Variant { $( $(#[$doc])* $name, )* }

        impl Variant {
            pub const ALL: &'static [Variant] = &[ $( Variant::$name, )* ];

            pub fn name(self) -> &'static str {
                match self { $( Variant::$name => $kebab, )* }
            }

            /// Where the bug lives.
            pub fn subsystem(self) -> Subsystem {
                match self { $( Variant::$name => Subsystem::$subsystem, )* }
            }

            /// The oracle a finding of this variant violates.
            pub fn oracle(self) -> Oracle {
                match self { $( Variant::$name => Oracle::$oracle, )* }
            }

            /// One line: what the variant breaks and where the kernel fixed it.
            pub fn breaks(self) -> &'static str {
                match self { $( Variant::$name => $breaks, )* }
            }
        }
    };
}

variants! {
    /// `__hugetlb_vmemmap_optimize_folio` without `synchronize_rcu()`.
    HvoNoRcuSync = "hvo-no-rcu-sync", Hvo, RoVmemmapWrite,
        "HVO remaps the vmemmap without synchronize_rcu(), so a speculative reader that passed its checks writes through the new RO alias (fixed by bd225530a4c7, v6.10)";
    /// arm64 HVO doing break-before-make on live vmemmap PTEs with the
    /// other CPUs running.
    HvoBbmNoPause = "hvo-bbm-no-pause", Hvo, VmemmapFault,
        "on arm64, HVO's break-before-make of each vmemmap PTE (pte_clear, TLBI, set_pte_at) runs while other CPUs run, so a speculative struct-page access in the window takes a kernel translation fault (why 060a2c92d1b6 disabled HVO on arm64; Yu Zhao's \"arm64: pause remote CPUs to update vmemmap\" pauses them)";
    /// `page_ref_add_unless` without `page_count_writable`.
    RefNoFakeHeadCheck = "ref-no-fake-head-check", Hvo, RoVmemmapWrite,
        "page_ref_add_unless() takes a reference on a fake head instead of refusing it (pre-v6.10 page_ref_add_unless)";
    /// The fake-head check before the refcount read.
    RefFakeHeadBeforeCount = "ref-fake-head-before-count", Hvo, RoVmemmapWrite,
        "page_count_writable() checks page_is_fake_head() before reading the refcount, racing with remap + unfreeze (fixed in 2025, \"fix memory loads ordering\")";
    /// Free the old vmemmap frames before `flush_tlb_kernel_range`.
    HvoFreeBeforeFlush = "hvo-free-before-flush", Hvo, UseAfterRemap,
        "HVO frees the old vmemmap frames before the TLB flush, so a stale TLB entry reaches a frame the buddy allocator owns";
    /// Free the folio even though its vmemmap could not be restored.
    HvoRestoreFailFrees = "hvo-restore-fail-frees", Hvo, BadPage,
        "on hugetlb_vmemmap_restore_folio() -ENOMEM the folio is freed anyway: __free_pages_prepare finds the RO-aliased tail struct pages inconsistent (bad_page) and then writes through the RO alias (seed 004)";
    /// `__folio_migrate_mapping` checks the refcount, then stores 0 with a
    /// plain store: the speculative-reference design of e286781d5f2e
    /// ("mm: speculative page references", v2.6.27) needs the cmpxchg of
    /// `folio_ref_freeze` (seed 003).
    MigrateNonatomicFreeze = "migrate-nonatomic-freeze", Migration, MigrationRefcount,
        "__folio_migrate_mapping() checks refcount == expected, then stores 0 with a plain store instead of folio_ref_freeze()'s cmpxchg, wiping a concurrent GUP-fast reference (seed 003; the cmpxchg freeze dates from e286781d5f2e, v2.6.27)";
    /// `gup_fast_pte_range` keeps its reference without re-reading the
    /// PTE: the re-read that RCU GUP-fast (2667f50e8b81, 2014) relies on
    /// instead of IPIs. (The PMD recheck is a separate variant.)
    GupFastNoRecheck = "gup-fast-no-recheck", Gup, PinnedWriteLost,
        "gup_fast_pte_range() keeps its reference without re-reading the PTE, so it pins a folio that migration already replaced (RCU GUP-fast needs the recheck: 2667f50e8b81, 2014)";
    /// `folio_expected_refs` without the page-cache term: every page-cache
    /// folio looks over-referenced. The same shape as the shmem THP bug
    /// e71769ae5260 fixed (1 counted instead of nr_pages: offlining looped).
    MigrateExpectedRefsUndercount = "migrate-expected-refs-undercount", Migration, MigrationProgress,
        "folio_expected_refs() drops the page-cache term, so a quiet page-cache folio never matches the expected count and migration returns -EAGAIN until it gives up (like shmem THP before e71769ae5260 (2018), whose page-cache term was 1, not nr_pages)";
    /// `gup_fast_pte_range` rechecks the PTE but not the PMD (before
    /// 70cbc3cc78a9, 2022).
    GupFastNoPmdRecheck = "gup-fast-no-pmd-recheck", Gup, PinnedWriteLost,
        "gup_fast_pte_range() rechecks the PTE but not the PMD, so it pins a page khugepaged is collapsing after pmdp_collapse_flush() detached its page table (fixed by 70cbc3cc78a9, 2022)";
    /// hugetlb walkers that call `huge_pte_offset()` without the hugetlb
    /// VMA lock, as before Peter Xu's v6.2 series "Make huge_pte_offset()
    /// thread-safe for pmd unshare" (seed 001): `hugetlb_fault`'s first
    /// lookup (moved under the lock by fcd48540d188) and GUP's
    /// `follow_hugetlb_page` (eefc7fa53608).
    PmdWalkWithoutVmaLock = "pmd-walk-without-vma-lock", PmdShare, PmdTableNotOfMm,
        "hugetlb_fault() and GUP call huge_pte_offset() without the hugetlb VMA lock, so a truncation unshares the PMD table between their PUD and PMD loads and they walk another process's table (seed 001; fixed in v6.2 by fcd48540d188 and eefc7fa53608)";
    /// `__unmap_hugepage_range` without the TLB flush after a successful
    /// `huge_pmd_unshare` (CVE-2021-4002).
    PmdUnshareNoFlush = "pmd-unshare-no-flush", PmdShare, TlbFlushBeforeFree,
        "__unmap_hugepage_range() unshares a PMD table without flushing the TLB before i_mmap_rwsem is dropped, so the table (or its pages) can be freed and reused while stale TLB entries still translate through it (CVE-2021-4002, fixed by a4a118f2eead)";
    /// `huge_pmd_unshare` without `tlb_remove_table_sync_one()`.
    PmdUnshareNoGupFastSync = "pmd-unshare-no-gup-fast-sync", PmdShare, PmdTableNotOfMm,
        "huge_pmd_unshare() drops its share without waiting out GUP-fast (tlb_remove_table_sync_one()), so a GUP-fast that read the PUD with interrupts off walks a PMD table that is now another process's only (fixed by 1013af4f585f, 2025)";
    /// A split of a hugetlb VMA at an address that is not PUD-aligned that
    /// leaves the PMD table shared, as before b30c14cd6102.
    PmdShareSplitVma = "pmd-share-split-vma", PmdShare, PmdUnshareExcludesWalkers,
        "a hugetlb VMA split at a non-PUD-aligned address keeps its shared PMD table, so an unshare through one half holds only that half's VMA lock while walkers of the other half may be on the table (fixed by b30c14cd6102, v6.2; unshared under the split's locks since 081056dc00a2)";
}

impl Variant {
    /// The architecture the variant's bug is about: its hunts, corpus file
    /// and tests run there.
    pub fn arch(self) -> Arch {
        match self {
            Variant::HvoBbmNoPause => Arch::Arm64,
            _ => Arch::X86,
        }
    }

    pub fn from_name(name: &str) -> Result<Variant, String> {
        Variant::ALL
            .iter()
            .copied()
            .find(|v| v.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
                format!(
                    "unknown variant `{name}`; known variants: {}",
                    known.join(", ")
                )
            })
    }

    fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Variant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Variant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Variant::from_name(&name).map_err(serde::de::Error::custom)
    }
}

/// A set of enabled variants; empty means the fixed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VariantSet(u64);

impl VariantSet {
    pub fn new(variants: &[Variant]) -> Self {
        VariantSet(variants.iter().fold(0, |acc, v| acc | v.bit()))
    }

    pub fn has(self, v: Variant) -> bool {
        self.0 & v.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Variant> {
        Variant::ALL.iter().copied().filter(move |v| self.has(*v))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The architecture the variants are about (x86 unless one is an arm64
    /// bug).
    pub fn arch(self) -> Arch {
        self.iter()
            .map(Variant::arch)
            .find(|a| *a != Arch::X86)
            .unwrap_or_default()
    }

    /// "fixed" for the fixed model, else the variant names joined by "+".
    pub fn label(self) -> String {
        if self.is_empty() {
            return "fixed".to_string();
        }
        self.iter().map(|v| v.name()).collect::<Vec<_>>().join("+")
    }
}

impl serde::Serialize for VariantSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|v| v.name()))
    }
}

impl<'de> serde::Deserialize<'de> for VariantSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(VariantSet::new(&Vec::<Variant>::deserialize(d)?))
    }
}
