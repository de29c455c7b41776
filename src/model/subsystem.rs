//! The model's subsystems: every op kind and every bug variant belongs to
//! one, and a generated scenario draws its ops from a set of them.

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
        }
    }

    /// The subsystems whose ops a scenario about this one draws from: the
    /// paths its races involve. HVO races a page-cache folio's lifecycle;
    /// GUP and migration race each other, faults and the page cache; THP
    /// copy-on-write races fork, faults, user accesses and GUP on
    /// anonymous memory.
    pub fn arm(self) -> SubsystemSet {
        use Subsystem::*;
        match self {
            PageCache | Hvo => SubsystemSet::of(&[PageCache, Hvo, Inject]),
            Memory | Gup | Migration | Inject => {
                SubsystemSet::of(&[PageCache, Memory, Gup, Migration, Inject])
            }
            Thp => SubsystemSet::of(&[Memory, Gup, Inject, Thp]),
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
