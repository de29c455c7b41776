//! Machine configuration: sizes, the HVO generation, the processes and
//! their VMAs, and the bug variants switched on.

use super::arch::Arch;
use super::variant::{Variant, VariantSet};
use serde::{Deserialize, Serialize};

/// Which generation of HugeTLB Vmemmap Optimization the model runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum HvoMode {
    /// The v5.14 layout of f41f2ed43ca5 ("mm: hugetlb: free the vmemmap
    /// pages associated with each HugeTLB page"): vmemmap pages 0 and 1
    /// stay; pages 2.. alias page 1 read-only. Not v5.14 as it ran: this
    /// mode is that layout on a v6.10+ kernel, with bd225530a4c7's grace
    /// period and reader checks.
    #[serde(rename = "keep-2")]
    #[value(name = "keep-2")]
    Keep2,
    /// v5.18 (e7d324850bfc, "mm: hugetlb: free the 2nd vmemmap page
    /// associated with each HugeTLB page") with the v6.10 reader guards
    /// (bd225530a4c7) and the 2025 load order: page 0 is copied to a fresh
    /// frame and every tail vmemmap page aliases it read-only, so fake
    /// heads appear.
    #[default]
    #[serde(rename = "keep-1")]
    #[value(name = "keep-1")]
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

/// How a write fault on an anonymous THP decides between reusing the page
/// and copying it: the three designs of do_wp_page / do_huge_pmd_wp_page
/// for THPs (MODEL-NOTES §6, seed 002). Each is that kernel's rule for a
/// large folio, run with the rest of the v5.19+ machinery
/// (PageAnonExclusive, fork copying maybe-pinned pages, FAULT_FLAG_UNSHARE
/// for read-only pins, `write_protect_seq`) and the v5.19+ rule for small
/// pages, as keep-2 HVO runs with the v6.10 guards: the designs differ in
/// their THP rule alone. A variant that is one of these designs
/// (`Variant::design`: `thp-cow-breaks-pin`) selects it; one that changes
/// a design's path (`Variant::needs_design`) requires it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
pub enum CowDesign {
    /// The 2016 THP refcount redesign (v4.5, 53f9263baba6 "mm: rework
    /// mapcount accounting to enable 4k mapping of THPs"):
    /// `reuse_swap_page()` refuses every PageTransCompound page, so a write
    /// to a PTE-mapped THP subpage always copies; `do_huge_pmd_wp_page`
    /// reuses only at `page_mapcount == 1 && page_count == 1`, which a pin
    /// fails.
    #[serde(rename = "v4.5")]
    #[value(name = "v4.5")]
    V4_5,
    /// Andrea Arcangeli's fix as posted in seed 002 (merged, with a guard,
    /// as 6d0a07edd17c in v4.6): reuse when `page_trans_huge_mapcount()`
    /// (the largest subpage mapcount plus the PMD mappings) is 1, then
    /// `page_move_anon_rmap()` of the whole compound page.
    #[serde(rename = "2016-fix")]
    #[value(name = "2016-fix")]
    Fix2016,
    /// PageAnonExclusive (6c287605fd56, v5.19): reuse an exclusive page;
    /// otherwise a PMD-mapped THP is reused only at refcount 1 and a
    /// PTE-mapped THP subpage is copied (`wp_can_reuse_anon_folio` refuses
    /// large folios, as through v6.14).
    #[default]
    #[serde(rename = "v5.19")]
    #[value(name = "v5.19")]
    V5_19,
}

impl CowDesign {
    pub const ALL: [CowDesign; 3] = [CowDesign::V4_5, CowDesign::Fix2016, CowDesign::V5_19];

    pub fn name(self) -> &'static str {
        match self {
            CowDesign::V4_5 => "v4.5",
            CowDesign::Fix2016 => "2016-fix",
            CowDesign::V5_19 => "v5.19",
        }
    }
}

/// What a VMA maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum VmaKind {
    /// `MAP_SHARED` of the model's one regular file, from offset 0.
    FileShared,
    /// `MAP_PRIVATE | MAP_ANONYMOUS`.
    AnonPrivate,
    /// `MAP_SHARED` of a hugetlbfs file (`VM_MAYSHARE`): each PMD maps one
    /// hugetlb folio.
    HugetlbShared,
}

/// One VMA of every process, in pages. VMAs are laid out one after the
/// other, each starting at the next address aligned for its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmaSpec {
    pub kind: VmaKind,
    pub pages: u8,
}

/// User pages one PTE table maps (`PTRS_PER_PTE`). A PMD leaf maps a THP of
/// this many pages, or one hugetlb folio.
pub const PTRS_PER_PTE: u32 = 2;
/// PMD entries per PMD table (`PTRS_PER_PMD`).
pub const PTRS_PER_PMD: u32 = 2;
/// Pages a PMD entry covers (`PMD_SIZE / PAGE_SIZE`).
pub const PMD_PAGES: u32 = PTRS_PER_PTE;
/// Pages a PUD entry covers (`PUD_SIZE / PAGE_SIZE`).
pub const PUD_PAGES: u32 = PTRS_PER_PTE * PTRS_PER_PMD;
/// PUD entries of a process: its user address space is `PUDS * PUD_PAGES`
/// pages.
pub const PUDS: u32 = 4;
pub const MAX_USER_PAGES: u32 = PUDS * PUD_PAGES;
/// Processes a configuration may have.
pub const MAX_MMS: u8 = 4;
pub const MAX_VMAS: usize = 4;

impl VmaKind {
    /// The alignment of the VMA's start, in pages: a hugetlb VMA is
    /// PUD-aligned so that its PMD table can be shared (`want_pmd_share`).
    pub fn align(self) -> u32 {
        match self {
            VmaKind::HugetlbShared => PUD_PAGES,
            _ => PMD_PAGES,
        }
    }
}

/// Where a VMA sits: its spec and its first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmaSlot {
    pub index: usize,
    pub kind: VmaKind,
    pub start: u32,
    pub pages: u32,
}

impl VmaSlot {
    pub fn end(&self) -> u32 {
        self.start + self.pages
    }

    pub fn contains(&self, page: u32) -> bool {
        (self.start..self.end()).contains(&page)
    }
}

/// The VMAs, a short list kept `Copy` so that a configuration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vmas {
    len: u8,
    items: [VmaSpec; MAX_VMAS],
}

impl Vmas {
    pub fn new(specs: &[VmaSpec]) -> Result<Vmas, String> {
        if specs.len() > MAX_VMAS {
            return Err(format!(
                "{} VMAs; at most {MAX_VMAS} are supported",
                specs.len()
            ));
        }
        let mut items = [VmaSpec {
            kind: VmaKind::AnonPrivate,
            pages: 0,
        }; MAX_VMAS];
        items[..specs.len()].copy_from_slice(specs);
        Ok(Vmas {
            len: specs.len() as u8,
            items,
        })
    }

    pub fn specs(&self) -> &[VmaSpec] {
        &self.items[..self.len as usize]
    }

    /// Each VMA with its start, in order.
    pub fn slots(&self) -> impl Iterator<Item = VmaSlot> + '_ {
        let mut next = 0u32;
        self.specs().iter().enumerate().map(move |(index, s)| {
            let start = next.next_multiple_of(s.kind.align());
            next = start + s.pages as u32;
            VmaSlot {
                index,
                kind: s.kind,
                start,
                pages: s.pages as u32,
            }
        })
    }

    /// The VMA holding `page`, if any (`vma_lookup`).
    pub fn find(&self, page: u32) -> Option<VmaSlot> {
        self.slots().find(|v| v.contains(page))
    }

    /// One past the last mapped page.
    pub fn end(&self) -> u32 {
        self.slots().last().map_or(0, |v| v.end())
    }

    pub fn first_of(&self, kind: VmaKind) -> Option<VmaSlot> {
        self.slots().find(|v| v.kind == kind)
    }
}

impl Default for Vmas {
    /// The file at pages 0-1 and an anonymous VMA at pages 2-3.
    fn default() -> Self {
        Vmas::new(&[
            VmaSpec {
                kind: VmaKind::FileShared,
                pages: 2,
            },
            VmaSpec {
                kind: VmaKind::AnonPrivate,
                pages: 2,
            },
        ])
        .expect("the default layout fits")
    }
}

impl Serialize for Vmas {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.specs().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Vmas {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let specs = Vec::<VmaSpec>::deserialize(d)?;
        Vmas::new(&specs).map_err(serde::de::Error::custom)
    }
}

/// Sizes and switches for one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The architecture; scenario files from before it was a field are x86.
    #[serde(default, skip_serializing_if = "Arch::is_default")]
    pub arch: Arch,
    /// Which HVO generation runs.
    #[serde(default)]
    pub hvo_mode: HvoMode,
    /// `huge_page_order(h)`; 9 is a 2 MiB folio on 4 KiB pages.
    pub hugetlb_order: u8,
    /// Physical memory in blocks of `1 << hugetlb_order` frames. Block 0
    /// holds the memmap; the others can become hugetlb folios.
    pub memory_blocks: u8,
    /// Processes (`mm_struct`s), each with the same VMAs.
    #[serde(default = "default_mms", skip_serializing_if = "is_default_mms")]
    pub mms: u8,
    /// Every process's VMAs.
    #[serde(default, skip_serializing_if = "is_default_vmas")]
    pub vmas: Vmas,
    /// The THP write-fault design; a variant that is a design selects it
    /// (see [`Config::cow`]).
    #[serde(default, skip_serializing_if = "is_default_cow")]
    pub cow: CowDesign,
    /// `hugepages=N` on the kernel command line: hugetlb folios put in the
    /// pool at boot (`hugetlb_hstate_alloc_pages`, HVO'd as they join it),
    /// from blocks 1, 2, ...
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hugepages: u8,
    /// Enabled bug variants.
    #[serde(default)]
    pub variants: VariantSet,
}

fn default_mms() -> u8 {
    2
}

fn is_default_mms(mms: &u8) -> bool {
    *mms == default_mms()
}

fn is_default_vmas(vmas: &Vmas) -> bool {
    *vmas == Vmas::default()
}

fn is_default_cow(cow: &CowDesign) -> bool {
    *cow == CowDesign::default()
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl Default for Config {
    fn default() -> Self {
        Config {
            arch: Arch::X86,
            hvo_mode: HvoMode::Keep1,
            hugetlb_order: 9,
            memory_blocks: 2,
            mms: default_mms(),
            vmas: Vmas::default(),
            cow: CowDesign::default(),
            hugepages: 0,
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
        if self.hugepages >= self.memory_blocks {
            return Err(format!(
                "hugepages {} does not fit in {} memory blocks (block 0 holds the memmap)",
                self.hugepages, self.memory_blocks
            ));
        }
        if self
            .vmas
            .slots()
            .filter(|v| v.kind == VmaKind::HugetlbShared)
            .count()
            > 1
        {
            return Err(
                "at most one hugetlb VMA: each maps the hugetlbfs file from offset 0".into(),
            );
        }
        if !(1..=MAX_MMS).contains(&self.mms) {
            return Err(format!("mms {} is out of range 1..={MAX_MMS}", self.mms));
        }
        for v in self.vmas.slots() {
            if v.pages == 0 {
                return Err(format!("vmas[{}] has no pages", v.index));
            }
            if v.kind == VmaKind::HugetlbShared && !v.pages.is_multiple_of(PMD_PAGES) {
                return Err(format!(
                    "vmas[{}] is a hugetlb VMA of {} pages; it must be a multiple of {PMD_PAGES} (one PMD per hugetlb folio)",
                    v.index, v.pages
                ));
            }
        }
        let mut selected = self
            .variants
            .iter()
            .filter_map(|v| v.design().map(|d| (v, d)));
        if let Some((v, d)) = selected.next() {
            if let Some((w, e)) = selected.find(|&(_, e)| e != d) {
                return Err(format!(
                    "variants {v} and {w} are two write-fault designs ({} and {})",
                    d.name(),
                    e.name()
                ));
            }
            if self.cow != d && self.cow != CowDesign::default() {
                return Err(format!(
                    "variant {v} is the {} design, but cow is {}",
                    d.name(),
                    self.cow.name()
                ));
            }
        }
        for v in self.variants.iter() {
            if let Some(d) = v.needs_design()
                && self.cow() != d
            {
                return Err(format!(
                    "variant {v} changes the {} design, but the design is {}",
                    d.name(),
                    self.cow().name()
                ));
            }
        }
        if self.vmas.end() > MAX_USER_PAGES {
            return Err(format!(
                "the VMAs end at page {}, past the {MAX_USER_PAGES} pages of the user address space",
                self.vmas.end()
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

    /// The THP write-fault design that runs: the one a variant selects,
    /// else `cow`.
    pub fn cow(&self) -> CowDesign {
        self.variants
            .iter()
            .find_map(|v| v.design())
            .unwrap_or(self.cow)
    }

    /// One past the last user page of every process.
    pub fn user_pages(&self) -> u32 {
        self.vmas.end()
    }
}
