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
}

crate::clone_by_field!(Ledger {
    frozen,
    migrated,
    write_seq,
    pin_writes,
    tables_freed
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

    /// A fresh value to write.
    pub fn next_value(&mut self) -> u64 {
        self.write_seq += 1;
        self.write_seq
    }
}
