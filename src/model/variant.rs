//! The bug variants: historical buggy designs the model can switch back on.
//! Each row names its subsystem, the oracle a finding violates, and what
//! it breaks; the kernel path it changes tests `cfg.has(Variant::..)`.

use super::arch::Arch;
use super::config::CowDesign;
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
    HvoFreeBeforeFlush = "hvo-free-before-flush", Hvo, TlbFlushBeforeFree,
        "HVO frees the old vmemmap frames before the TLB flush, so the buddy allocator owns (and hands out) frames a CPU's TLB still maps as struct pages";
    /// Free the folio even though its vmemmap could not be restored.
    HvoRestoreFailFrees = "hvo-restore-fail-frees", Hvo, BadPage,
        "on hugetlb_vmemmap_restore_folio() -ENOMEM the folio is freed anyway: free_pages_prepare finds the RO-aliased tail struct pages inconsistent (bad_page) and then writes through the RO alias (seed 004)";
    /// `__folio_migrate_mapping` checks the refcount, then stores 0 with a
    /// plain store: the speculative-reference design of e286781d5f2e
    /// ("mm: speculative page references", v2.6.27) needs the cmpxchg of
    /// `folio_ref_freeze` (seed 003).
    MigrateNonatomicFreeze = "migrate-nonatomic-freeze", Migration, MigrationRefcount,
        "__folio_migrate_mapping() checks refcount == expected, then stores 0 with a plain store instead of folio_ref_freeze()'s cmpxchg, wiping a concurrent GUP-fast reference (seed 003; the cmpxchg freeze dates from e286781d5f2e, v2.6.27)";
    /// `gup_fast_pte_range` keeps its reference without re-reading the
    /// PTE: the re-read that RCU GUP-fast (2667f50e8b81, 2014) relies on
    /// instead of IPIs. An arm64 bug: on x86 `ptep_clear_flush`'s IPI
    /// waits the GUP-fast out before migration goes on. (The PMD recheck
    /// is a separate variant.)
    GupFastNoRecheck = "gup-fast-no-recheck", Gup, LookupCurrent,
        "gup_fast_pte_range() keeps its reference without re-reading the PTE, so on arm64 (whose TLB flush waits for no CPU) it returns (and pins) a page its PTE no longer maps, a folio migration already replaced (RCU GUP-fast needs the recheck: 2667f50e8b81, 2014)";
    /// `folio_expected_refs` without the page-cache term: every page-cache
    /// folio looks over-referenced. The same shape as the shmem THP bug
    /// e71769ae5260 fixed (1 counted instead of nr_pages: offlining looped).
    MigrateExpectedRefsUndercount = "migrate-expected-refs-undercount", Migration, MigrationProgress,
        "folio_expected_refs() drops the page-cache term, so a quiet page-cache folio never matches the expected count and migration returns -EAGAIN until it gives up (like shmem THP before e71769ae5260 (2018), whose page-cache term was 1, not nr_pages)";
    /// `gup_fast_pte_range` rechecks the PTE but not the PMD (before
    /// 70cbc3cc78a9, 2022).
    GupFastNoPmdRecheck = "gup-fast-no-pmd-recheck", Gup, LookupCurrent,
        "gup_fast_pte_range() rechecks the PTE but not the PMD, so it returns (and pins) a page khugepaged is collapsing after pmdp_collapse_flush() detached its page table (fixed by 70cbc3cc78a9, 2022)";
    /// The v4.5 THP write-fault rule: selects `cow: v4.5`.
    ThpCowBreaksPin = "thp-cow-breaks-pin", Thp, PinCoherence,
        "a write fault copies every PTE-mapped THP subpage (reuse_swap_page() refuses PageTransCompound pages) and a pinned PMD-mapped THP (page_count != 1), so a vfio pin no longer maps the process's page (the 2016 vfio regression under the THP refcount redesign, seed 002; fixed by 6d0a07edd17c, v4.6)";
    /// The 2016 rule for a PTE-mapped THP subpage inside v5.19's
    /// do_wp_page: needs `cow: v5.19`.
    ThpReuseSubpageMapcount = "thp-reuse-subpage-mapcount", Thp, AnonRmap,
        "a write fault reuses a subpage of a THP that fork shared and each side half unmapped, because every subpage's mapcount is 1 (page_trans_huge_mapcount(), seed 002), and moves the whole folio to the child's anon_vma though the parent still maps the other half (Kirill's counterexample, seed 002; 6d0a07edd17c moves it only at total_mapcount == 1)";
    /// `wp_can_reuse_anon_folio` decides a small page by its mapcount.
    GupAfterForkReadPin = "gup-after-fork-read-pin", Thp, Isolation,
        "do_wp_page() reuses a small anon page mapped once though GUP holds it (reuse_swap_page()'s mapcount rule), so the reference a child's vmsplice() took before unmapping sees the parent's later writes (CVE-2020-29374; worked around by 17839856fd58 in v5.8, fixed by 09854ba94c6a's refcount rule in v5.9)";
    /// `page_try_dup_anon_rmap` without the maybe-pinned check.
    ForkSharesPinnedPage = "fork-shares-pinned-page", Thp, PinCoherence,
        "fork shares an exclusive anon page that may be DMA-pinned instead of copying it for the child, so the pinned page is mapped by both and the next write fault moves one of them off it (fixed by 70e806e4e645 \"mm: Do early cow for pinned pages during fork() for ptes\", v5.9)";
    /// GUP-fast ignores `mm->write_protect_seq`.
    GupFastNoWriteProtectSeq = "gup-fast-no-write-protect-seq", Thp, PinCoherence,
        "GUP-fast ignores mm->write_protect_seq, so it pins a page between fork's maybe-pinned check and its write-protection, and fork shares the pinned page with the child (fixed by 57efa1fe5957 \"mm/gup: prevent gup_fast from racing with COW during fork\", v5.11)";
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
            Variant::HvoBbmNoPause | Variant::GupFastNoRecheck => Arch::Arm64,
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

    /// The THP write-fault design this variant is, if it is one (a design
    /// is a whole rule, a variant one path switched back): it selects that
    /// design. Only `thp-cow-breaks-pin` is: the v4.5 rule.
    pub fn design(self) -> Option<CowDesign> {
        match self {
            Variant::ThpCowBreaksPin => Some(CowDesign::V4_5),
            _ => None,
        }
    }

    /// The design a variant switches a path of, if it needs one:
    /// `thp-reuse-subpage-mapcount` changes v5.19's rule for a THP subpage.
    /// (The other variants change fork and GUP, the same in every design.)
    pub fn needs_design(self) -> Option<CowDesign> {
        match self {
            Variant::ThpReuseSubpageMapcount => Some(CowDesign::V5_19),
            _ => None,
        }
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
