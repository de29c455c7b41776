//! Invariants checked after every step. Each looks only at what the
//! ledger names (frozen and migrated folios), never at the whole machine.

use super::{Oracle, Violation, fail};
use crate::model::machine::Machine;

/// A frozen folio stays at refcount 0 until its freezer unfreezes it.
pub fn frozen_stays_frozen(m: &Machine) -> Result<(), Violation> {
    for f in &m.ledger.frozen {
        let count = m.peek(f.folio).refcount;
        if count != 0 {
            return fail(
                Oracle::FrozenChanged,
                format!(
                    "folio pfn {} frozen by CPU {} has refcount {count}",
                    f.folio, f.cpu
                ),
            );
        }
    }
    Ok(())
}

/// No CPU holds a GUP reference or pin on a folio that migration replaced.
pub fn pinned_writes_not_lost(m: &Machine) -> Result<(), Violation> {
    if m.ledger.migrated.is_empty() {
        return Ok(());
    }
    for (c, cpu) in m.cpus.iter().enumerate() {
        for h in &cpu.holds {
            let Some(folio) = h.gup_folio() else { continue };
            if let Some(x) = m.ledger.migrated.iter().find(|x| x.src == folio) {
                return fail(
                    Oracle::PinnedWriteLost,
                    format!(
                        "CPU {c} holds {h:?}, but CPU {} migrated pfn {} to pfn {}: writes through it are lost",
                        x.cpu, x.src, x.dst
                    ),
                );
            }
        }
    }
    Ok(())
}
