//! The model's subsystems: every op kind and every bug variant belongs to
//! one, and a generated scenario draws its ops from a set of them.

use super::config::{Config, PMD_PAGES, PUD_PAGES, VmaKind, VmaSpec, Vmas};
use serde::{Deserialize, Serialize};

/// A part of mm, as the kernel's MAINTAINERS file would split it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Subsystem {
    /// The page cache: lookups, insertion, truncation, reclaim.
    PageCache,
    /// The hugetlb pool, HVO and the speculative pfn walkers that race it.
    Hvo,
    /// Page faults, zapping and user loads and stores.
    Memory,
    /// get_user_pages: references and pins, and what holders do with them.
    Gup,
    /// Page migration and khugepaged collapse.
    Migration,
    /// Fault injection (`should_fail_alloc_page`).
    Inject,
    /// Anonymous THPs, fork and copy-on-write with GUP pins: PMD and PTE
    /// mappings, splits, unmapping and remapping parts of them.
    Thp,
    /// hugetlb PMD sharing: faults that share, the paths that unshare
    /// (munmap, MADV_DONTNEED, VMA splits, truncation, hole punching,
    /// exit), and the walkers they race.
    PmdShare,
}

impl Subsystem {
    pub const ALL: &'static [Subsystem] = &[
        Subsystem::PageCache,
        Subsystem::Hvo,
        Subsystem::Memory,
        Subsystem::Gup,
        Subsystem::Migration,
        Subsystem::Inject,
        Subsystem::Thp,
        Subsystem::PmdShare,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Subsystem::PageCache => "page-cache",
            Subsystem::Hvo => "hvo",
            Subsystem::Memory => "memory",
            Subsystem::Gup => "gup",
            Subsystem::Migration => "migration",
            Subsystem::Inject => "inject",
            Subsystem::Thp => "thp",
            Subsystem::PmdShare => "pmd-share",
        }
    }

    /// The subsystems whose ops a scenario about this one draws from: the
    /// paths its races involve. HVO races a page-cache folio's lifecycle;
    /// GUP and migration race each other, faults and the page cache; THP
    /// copy-on-write races fork, faults, user accesses and GUP on
    /// anonymous memory; PMD sharing races the walkers: faults, user
    /// accesses and GUP.
    pub fn arm(self) -> SubsystemSet {
        use Subsystem::*;
        match self {
            PageCache | Hvo => SubsystemSet::of(&[PageCache, Hvo, Inject]),
            Memory | Gup | Migration | Inject => {
                SubsystemSet::of(&[PageCache, Memory, Gup, Migration, Inject])
            }
            Thp => SubsystemSet::of(&[Memory, Gup, Inject, Thp]),
            PmdShare => SubsystemSet::of(&[PmdShare, Memory, Gup]),
        }
    }

    /// The machine a scenario about this subsystem runs on, from the
    /// hunt's configuration. PMD sharing needs the processes to map one
    /// hugetlbfs range with a PUD-aligned `VM_MAYSHARE` VMA covering whole
    /// PUD ranges, and memory for a folio per huge page: unless the
    /// configuration already has such a VMA, the user pages become one
    /// hugetlb VMA (at least a PUD range), memory grows to hold its folios
    /// (block 0 holds the memmap) and the hugetlb pool is filled with them
    /// at boot (`hugepages=`). Every layout keeps the
    /// configuration's processes and at least its pages and frames, so
    /// that what the decoder drew on the configuration stays valid.
    pub fn layout(self, cfg: Config) -> Config {
        match self {
            Subsystem::PmdShare => {
                let shareable = cfg
                    .vmas
                    .slots()
                    .any(|v| v.kind == VmaKind::HugetlbShared && v.pages >= PUD_PAGES);
                if shareable {
                    return cfg;
                }
                let pages = cfg.user_pages().max(PUD_PAGES).next_multiple_of(PUD_PAGES);
                let vmas = Vmas::new(&[VmaSpec {
                    kind: VmaKind::HugetlbShared,
                    pages: pages as u8,
                }])
                .expect("one VMA fits");
                let huge_pages = pages / PMD_PAGES;
                let blocks = (1 + huge_pages).clamp(cfg.memory_blocks as u32, 8);
                Config {
                    vmas,
                    memory_blocks: blocks as u8,
                    // A pool reserved for the mapping, as hugetlb users do.
                    hugepages: (cfg.hugepages as u32).max(huge_pages).min(blocks - 1) as u8,
                    ..cfg
                }
            }
            _ => cfg,
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

impl std::fmt::Display for Subsystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of subsystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubsystemSet(u32);

impl SubsystemSet {
    pub fn of(subsystems: &[Subsystem]) -> SubsystemSet {
        SubsystemSet(subsystems.iter().fold(0, |acc, s| acc | s.bit()))
    }

    pub fn all() -> SubsystemSet {
        SubsystemSet::of(Subsystem::ALL)
    }

    pub fn has(self, s: Subsystem) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn union(self, other: SubsystemSet) -> SubsystemSet {
        SubsystemSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Subsystem> {
        Subsystem::ALL.iter().copied().filter(move |s| self.has(*s))
    }

    /// The union of the arms of every subsystem in the set.
    pub fn arms(self) -> SubsystemSet {
        self.iter()
            .fold(SubsystemSet::default(), |acc, s| acc.union(s.arm()))
    }

    /// An arm's name: "all", the subsystems whose arm it is (bar the page
    /// cache and fault injection, which every arm has), or its members.
    pub fn arm_name(self) -> String {
        if self == SubsystemSet::all() {
            return "all".into();
        }
        let owners: Vec<&str> = Subsystem::ALL
            .iter()
            .filter(|s| s.arm() == self && !matches!(s, Subsystem::PageCache | Subsystem::Inject))
            .map(|s| s.name())
            .collect();
        if owners.is_empty() {
            self.label()
        } else {
            format!("{} arm", owners.join("+"))
        }
    }

    /// The machine for scenarios drawing from these subsystems: each one's
    /// layout in turn (`Subsystem::layout`).
    pub fn layout(self, cfg: Config) -> Config {
        self.iter().fold(cfg, |c, s| s.layout(c))
    }

    /// Names joined by ",".
    pub fn label(self) -> String {
        self.iter().map(|s| s.name()).collect::<Vec<_>>().join(",")
    }
}

/// The distinct arms a hunt on the default configuration spreads over.
pub fn distinct_arms() -> Vec<SubsystemSet> {
    let mut arms: Vec<SubsystemSet> = Vec::new();
    for s in Subsystem::ALL {
        if !arms.contains(&s.arm()) {
            arms.push(s.arm());
        }
    }
    arms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::MAX_USER_PAGES;

    #[test]
    fn the_pmd_share_layout_maps_a_whole_pud_range_and_keeps_what_was_drawn_valid() {
        let base = Config::default();
        let c = Subsystem::PmdShare.layout(base);

        let slots: Vec<_> = c.vmas.slots().map(|v| (v.kind, v.start, v.pages)).collect();
        assert_eq!(slots, [(VmaKind::HugetlbShared, 0, PUD_PAGES)]);
        assert_eq!(
            c.memory_blocks, 3,
            "block 0 holds the memmap, one per folio"
        );
        assert_eq!(c.mms, base.mms);
        assert!(c.user_pages() >= base.user_pages() && c.nr_pfns() >= base.nr_pfns());
        c.validate().unwrap();
        // Idempotent, and a no-op for the other subsystems.
        assert_eq!(Subsystem::PmdShare.layout(c), c);
        assert_eq!(Subsystem::Migration.layout(base), base);
        assert_eq!(SubsystemSet::all().layout(base), c);
    }

    #[test]
    fn the_pmd_share_layout_covers_every_page_of_a_larger_configuration() {
        let base = Config {
            vmas: Vmas::new(&[VmaSpec {
                kind: VmaKind::AnonPrivate,
                pages: 6,
            }])
            .unwrap(),
            ..Config::default()
        };
        let c = Subsystem::PmdShare.layout(base);

        assert_eq!(c.user_pages(), 8, "rounded up to whole PUD ranges");
        assert_eq!((c.memory_blocks, c.hugepages), (5, 4));
        assert!(c.user_pages() <= MAX_USER_PAGES);
        c.validate().unwrap();
    }
}
