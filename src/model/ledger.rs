//! What the oracles remember about an execution, apart from kernel state:
//! who froze which folio, which folios migration replaced, and the values
//! written to user memory.

use super::machine::Pfn;

/// A folio frozen by `page_ref_freeze`, and the CPU that froze it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frozen {
    pub folio: Pfn,
    pub cpu: u8,
}

/// A folio whose contents migration (or khugepaged) moved to another folio:
/// from then on, a write to `src` is lost. Dropped when `src` is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub src: Pfn,
    pub dst: Pfn,
    pub cpu: u8,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// Folios frozen at refcount 0, for the freeze oracle.
    pub frozen: Vec<Frozen>,
    /// Folios whose contents moved elsewhere, until they are freed.
    pub migrated: Vec<Migrated>,
    /// Values written to user memory are `write_seq`, counting up, so that
    /// each write is told apart from every other.
    pub write_seq: u64,
    /// Writes made through a GUP reference or pin.
    pub pin_writes: u32,
    /// Page-table pages freed back to the buddy allocator.
    pub tables_freed: u32,
    /// Unshares under way: (process, PMD table) whose PUD entry is cleared
    /// but whose share is not dropped yet. The table is still that
    /// process's for its walkers, and its share count counts it.
    pub unsharing: Vec<(u8, Pfn)>,
    /// PMD tables whose PUD references or share count the running step
    /// changed, for the per-step share-count check.
    pub pmd_tables_touched: Vec<Pfn>,
    /// Lockless walks between their PUD load and their next load: (CPU,
    /// process, the PMD table read).
    pub walks: Vec<(u8, u8, Pfn)>,
    /// PMD tables that have been shared, until they are freed.
    pub shared: Vec<Pfn>,
    /// Shares taken (`huge_pmd_share` populated a PUD with a sibling's
    /// table).
    pub pmd_shares: u32,
    /// Unshares of a table a walker of that process was between its PUD
    /// and its PMD load on.
    pub walks_across_unshare: u32,
    /// Freed PMD tables that had been shared.
    pub shared_tables_freed: u32,
}

crate::clone_by_field!(Ledger {
    frozen,
    migrated,
    write_seq,
    pin_writes,
    tables_freed,
    unsharing,
    pmd_tables_touched,
    walks,
    shared,
    pmd_shares,
    walks_across_unshare,
    shared_tables_freed
});

impl Ledger {
    pub fn freeze(&mut self, folio: Pfn, cpu: u8) {
        if !self.is_frozen(folio) {
            self.frozen.push(Frozen { folio, cpu });
        }
    }

    pub fn unfreeze(&mut self, folio: Pfn) {
        self.frozen.retain(|f| f.folio != folio);
    }

    pub fn is_frozen(&self, folio: Pfn) -> bool {
        self.frozen.iter().any(|f| f.folio == folio)
    }

    /// A folio went back to the buddy allocator: forget it.
    pub fn forget(&mut self, folio: Pfn) {
        self.unfreeze(folio);
        self.migrated.retain(|x| x.src != folio);
    }

    pub fn touch_pmd_table(&mut self, table: Pfn) {
        if !self.pmd_tables_touched.contains(&table) {
            self.pmd_tables_touched.push(table);
        }
    }

    /// A share of `table` was taken.
    pub fn shared_table(&mut self, table: Pfn) {
        self.pmd_shares += 1;
        if !self.shared.contains(&table) {
            self.shared.push(table);
        }
    }

    /// `table` is freed: was it ever shared?
    pub fn forget_shared(&mut self, table: Pfn) -> bool {
        let was = self.shared.contains(&table);
        self.shared.retain(|&t| t != table);
        was
    }

    pub fn walk_started(&mut self, cpu: u8, mm: u8, table: Pfn) {
        self.walk_done(cpu);
        self.walks.push((cpu, mm, table));
    }

    pub fn walk_done(&mut self, cpu: u8) {
        self.walks.retain(|w| w.0 != cpu);
    }

    /// CPU `cpu` starts unsharing `table` from process `mm` (its PUD entry
    /// is cleared).
    pub fn unshare_begins(&mut self, cpu: u8, mm: u8, table: Pfn) {
        self.unsharing.push((mm, table));
        if self
            .walks
            .iter()
            .any(|&(c, wm, t)| c != cpu && wm == mm && t == table)
        {
            self.walks_across_unshare += 1;
        }
        self.touch_pmd_table(table);
    }

    /// The share is dropped.
    pub fn unshare_done(&mut self, mm: u8, table: Pfn) {
        self.unsharing.retain(|&x| x != (mm, table));
        self.touch_pmd_table(table);
    }

    /// A fresh value to write.
    pub fn next_value(&mut self) -> u64 {
        self.write_seq += 1;
        self.write_seq
    }
}
