//! Machine configuration: sizes, the HVO generation, and the bug variants.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which generation of HugeTLB Vmemmap Optimization the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HvoMode {
    /// The v5.14 layout: vmemmap pages 0 and 1 stay; pages 2.. alias page 1
    /// read-only. Runs with the v6.10+ grace period and checks.
    #[serde(rename = "keep-2")]
    Keep2,
    /// v5.18+ (v6.10+ fixes): page 0 is copied to a fresh frame, every tail
    /// vmemmap page aliases it read-only, so fake heads appear.
    #[default]
    #[serde(rename = "keep-1")]
    Keep1,
    /// The 2026 series ("mm: Eliminate fake head pages from vmemmap
    /// optimization"): all tails of an order are byte-identical and share
    /// one read-only page; the head vmemmap page stays private. No fake
    /// heads, and, as the series does, no grace period and no
    /// `page_count_writable`.
    SharedTail,
}

impl HvoMode {
    pub const ALL: [HvoMode; 3] = [HvoMode::Keep2, HvoMode::Keep1, HvoMode::SharedTail];

    pub fn name(self) -> &'static str {
        match self {
            HvoMode::Keep2 => "keep-2",
            HvoMode::Keep1 => "keep-1",
            HvoMode::SharedTail => "shared-tail",
        }
    }

    /// Does HVO guard speculative readers: bump `hugetlb_optimize_vmemmap_key`
    /// and wait an RCU grace period, with readers checking
    /// `page_count_writable` (and fake heads)? Every mode but shared-tail,
    /// whose series drops all three ("hugetlb: Remove
    /// VMEMMAP_SYNCHRONIZE_RCU").
    pub fn guards_readers(self) -> bool {
        self != HvoMode::SharedTail
    }

    /// `HUGETLB_VMEMMAP_RESERVE_PAGES`: vmemmap pages of a folio kept private.
    pub fn reserve_pages(self) -> u32 {
        match self {
            HvoMode::Keep2 => 2,
            HvoMode::Keep1 | HvoMode::SharedTail => 1,
        }
    }
}

macro_rules! variants {
    ($( $(#[$doc:meta])* $name:ident = $kebab:literal, $breaks:literal; )*) => {
        /// A historical buggy design that the model can switch back on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Variant { $( $(#[$doc])* $name, )* }

        impl Variant {
            pub const ALL: &'static [Variant] = &[ $( Variant::$name, )* ];

            pub fn name(self) -> &'static str {
                match self { $( Variant::$name => $kebab, )* }
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
    HvoNoRcuSync = "hvo-no-rcu-sync",
        "HVO remaps the vmemmap without synchronize_rcu(), so a speculative reader that passed its checks writes through the new RO alias (fixed by bd225530a4c7, v6.10)";
    /// `page_ref_add_unless` without `page_count_writable`.
    RefNoFakeHeadCheck = "ref-no-fake-head-check",
        "page_ref_add_unless() takes a reference on a fake head instead of refusing it (pre-v6.10 page_ref_add_unless)";
    /// The fake-head check before the refcount read.
    RefFakeHeadBeforeCount = "ref-fake-head-before-count",
        "page_count_writable() checks page_is_fake_head() before reading the refcount, racing with remap + unfreeze (fixed in 2025, \"fix memory loads ordering\")";
    /// Free the old vmemmap frames before `flush_tlb_kernel_range`.
    HvoFreeBeforeFlush = "hvo-free-before-flush",
        "HVO frees the old vmemmap frames before the TLB flush, so a stale TLB entry reaches a frame the buddy allocator owns";
    /// Free the folio even though its vmemmap could not be restored.
    HvoRestoreFailFrees = "hvo-restore-fail-frees",
        "on hugetlb_vmemmap_restore_folio() -ENOMEM the folio is freed anyway, writing its RO-aliased tail struct pages (seed 004)";
    /// `__folio_migrate_mapping` checks the refcount, then stores 0 with a
    /// plain store: the speculative-reference design of e286781d5f2e
    /// ("mm: speculative page references", v2.6.27) needs the cmpxchg of
    /// `folio_ref_freeze` (seed 003).
    MigrateNonatomicFreeze = "migrate-nonatomic-freeze",
        "__folio_migrate_mapping() checks refcount == expected, then stores 0 with a plain store instead of folio_ref_freeze()'s cmpxchg, wiping a concurrent GUP-fast reference (seed 003; the cmpxchg freeze dates from e286781d5f2e, v2.6.27)";
    /// `gup_fast_pte_range` keeps its reference without re-reading the
    /// PTE: the re-read that RCU GUP-fast (2667f50e8b81, 2014) relies on
    /// instead of IPIs. (The PMD recheck is a separate variant.)
    GupFastNoRecheck = "gup-fast-no-recheck",
        "gup_fast_pte_range() keeps its reference without re-reading the PTE, so it pins a folio that migration already replaced (RCU GUP-fast needs the recheck: 2667f50e8b81, 2014)";
    /// `folio_expected_refs` without the page-cache term: every page-cache
    /// folio looks over-referenced. The same shape as the shmem THP bug
    /// e71769ae5260 fixed (1 counted instead of nr_pages: offlining looped).
    MigrateExpectedRefsUndercount = "migrate-expected-refs-undercount",
        "folio_expected_refs() drops the page-cache term, so a quiet page-cache folio never matches the expected count and migration returns -EAGAIN until it gives up (like shmem THP before e71769ae5260 (2018), whose page-cache term was 1, not nr_pages)";
    /// `gup_fast_pte_range` rechecks the PTE but not the PMD (before
    /// 70cbc3cc78a9, 2022).
    GupFastNoPmdRecheck = "gup-fast-no-pmd-recheck",
        "gup_fast_pte_range() rechecks the PTE but not the PMD, so it pins a page khugepaged is collapsing after pmdp_collapse_flush() detached its page table (fixed by 70cbc3cc78a9, 2022)";
}

impl Variant {
    /// Does the variant live in HVO (hugetlb vmemmap, page refs) rather
    /// than in user memory (GUP, migration)?
    pub fn is_hvo(self) -> bool {
        matches!(
            self,
            Variant::HvoNoRcuSync
                | Variant::RefNoFakeHeadCheck
                | Variant::RefFakeHeadBeforeCount
                | Variant::HvoFreeBeforeFlush
                | Variant::HvoRestoreFailFrees
        )
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

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of enabled variants; empty means the fixed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VariantSet(u32);

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

    /// "fixed" for the fixed model, else the variant names joined by "+".
    pub fn label(self) -> String {
        if self.is_empty() {
            return "fixed".to_string();
        }
        self.iter().map(|v| v.name()).collect::<Vec<_>>().join("+")
    }
}

impl Serialize for VariantSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|v| v.name()))
    }
}

impl<'de> Deserialize<'de> for VariantSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let vs = names
            .iter()
            .map(|n| Variant::from_name(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::de::Error::custom)?;
        Ok(VariantSet::new(&vs))
    }
}

/// Sizes and switches for one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which HVO generation runs.
    #[serde(default)]
    pub hvo_mode: HvoMode,
    /// `huge_page_order(h)`; 9 is a 2 MiB folio on 4 KiB pages.
    pub hugetlb_order: u8,
    /// Physical memory in blocks of `1 << hugetlb_order` frames. Block 0
    /// holds the memmap; the others can become hugetlb folios.
    pub memory_blocks: u8,
    /// Enabled bug variants.
    #[serde(default)]
    pub variants: VariantSet,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hvo_mode: HvoMode::Keep1,
            hugetlb_order: 9,
            memory_blocks: 2,
            variants: VariantSet::default(),
        }
    }
}

/// `sizeof(struct page)` is 64 bytes, so a 4 KiB vmemmap page holds 64.
pub const STRUCT_PAGES_PER_VMEMMAP_PAGE: u32 = 64;

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if !(7..=10).contains(&self.hugetlb_order) {
            return Err(format!(
                "hugetlb_order {} is out of range 7..=10 (a folio must span at least two vmemmap pages)",
                self.hugetlb_order
            ));
        }
        if !(2..=8).contains(&self.memory_blocks) {
            return Err(format!(
                "memory_blocks {} is out of range 2..=8",
                self.memory_blocks
            ));
        }
        Ok(())
    }

    pub fn pages_per_huge_page(&self) -> u32 {
        1 << self.hugetlb_order
    }

    pub fn nr_pfns(&self) -> u32 {
        self.pages_per_huge_page() * self.memory_blocks as u32
    }

    /// `hugetlb_vmemmap_size(h)` in vmemmap pages.
    pub fn vmemmap_pages_per_folio(&self) -> u32 {
        self.pages_per_huge_page() / STRUCT_PAGES_PER_VMEMMAP_PAGE
    }

    /// `hugetlb_vmemmap_optimizable(h)`: is there anything to free?
    pub fn hvo_optimizable(&self) -> bool {
        self.vmemmap_pages_per_folio() > self.hvo_mode.reserve_pages()
    }

    pub fn has(&self, v: Variant) -> bool {
        self.variants.has(v)
    }
}
