//! The page cache of one file (mm/filemap.c).
//!
//! The xarray is a slot per index. Lookups are lockless under RCU; writers
//! hold `xa_lock`, which may span several steps.

use super::KResult;
use super::ctx::Cpu;
use super::machine::{Machine, Pfn};
use super::mm_types::{Mapping, pg};
use super::oracle::Violation;
use super::page_ref::{folio_put, folio_try_get};
use super::pgtable::RwSem;
use super::smp::under_spinlock;
use crate::ktrace;

#[derive(Debug)]
pub struct AddressSpace {
    /// `mapping->i_pages`.
    pub slots: Vec<Option<Pfn>>,
    /// The CPU holding `xa_lock`, if any.
    pub xa_lock: Option<u8>,
    /// `mapping->i_mmap_rwsem`, the file rmap lock: readers walk the VMAs
    /// that map the file (`i_mmap`) and their page tables; PMD unsharing
    /// and VMA insertion and removal take it for write.
    pub i_mmap_rwsem: RwSem,
    /// The indices whose slot or PTEs the running step changed, with the
    /// folio the slot held before (for the per-step page-cache check).
    pub changed: Vec<(u32, Option<Pfn>)>,
}

crate::clone_by_field!(AddressSpace {
    slots,
    xa_lock,
    i_mmap_rwsem,
    changed
});

impl AddressSpace {
    pub fn new(nr_slots: u32) -> Self {
        AddressSpace {
            slots: vec![None; nr_slots as usize],
            xa_lock: None,
            i_mmap_rwsem: RwSem::default(),
            changed: Vec::new(),
        }
    }

    pub fn slot(&self, index: u32) -> Option<Pfn> {
        self.slots[index as usize % self.slots.len()]
    }

    pub fn set_slot(&mut self, index: u32, folio: Option<Pfn>) {
        let n = self.slots.len();
        let old = std::mem::replace(&mut self.slots[index as usize % n], folio);
        self.changed.push((index, old));
    }
}

/// Run `f` as one step under `xa_lock` (`xas_lock_irq` ... `xas_unlock_irq`).
pub fn with_xa_lock<T>(
    cpu: &Cpu,
    func: &'static str,
    f: impl FnOnce(&mut Machine) -> Result<T, Violation>,
) -> KResult<T> {
    cpu.step_when(
        func,
        |m| m.mapping.xa_lock.is_none(),
        |m| under_spinlock(m, "xa_lock", f),
    )
}

/// `filemap_add_folio` (with `filemap_alloc_folio`): allocate a locked
/// order-0 folio and insert it at `index`; the page cache holds one
/// reference per page.
pub fn filemap_add_folio(cpu: &Cpu, index: u32, pfn_hint: Pfn) -> KResult<()> {
    let Some(folio) = cpu.step("filemap_alloc_folio", |m| {
        let folio = m.alloc_pages_may_sleep(0, pfn_hint, "filemap_alloc_folio")?;
        if let Some(f) = folio {
            m.page_mut(f)?.flags |= pg::LRU;
            m.folio_set_locked(f)?;
        }
        Ok(folio)
    })?
    else {
        return Ok(());
    };
    let inserted = with_xa_lock(cpu, "__filemap_add_folio", |m| {
        if m.mapping.slot(index).is_some() {
            ktrace!(m, "index {index} is occupied: -EEXIST");
            return Ok(false);
        }
        let p = m.page_mut(folio)?;
        p.refcount += 1;
        p.mapping = Mapping::File { index };
        m.mapping.set_slot(index, Some(folio));
        ktrace!(m, "xas_store(index {index}) = pfn {folio}");
        Ok(true)
    })?;
    cpu.step("folio_unlock", |m| {
        m.folio_clear_locked(folio, "folio_unlock")?;
        if !inserted {
            m.page_mut(folio)?.mapping = Mapping::None;
        }
        Ok(())
    })?;
    folio_put(cpu, folio)
}

/// `filemap_get_entry`: look up `index` under RCU and take a reference
/// with `folio_try_get`, then recheck the slot (seed 000).
pub fn filemap_get_entry(cpu: &Cpu, index: u32) -> KResult<Option<Pfn>> {
    const F: &str = "filemap_get_entry";
    let found = find_get_entry(cpu, F, index)?;
    cpu.step(F, |m| {
        m.rcu_read_unlock();
        if let Some(f) = found {
            ktrace!(m, "rcu_read_unlock; found pfn {f}");
        }
        Ok(())
    })?;
    Ok(found)
}

/// `find_get_entry` (and the same loop in `filemap_get_entry`):
/// `rcu_read_lock`, `xas_load`, `folio_try_get` (retry while the count is
/// zero), `xas_reload` (slot changed: put and retry). Returns with the RCU
/// read section still held, traced as kernel function `func`.
pub fn find_get_entry(cpu: &Cpu, func: &'static str, index: u32) -> KResult<Option<Pfn>> {
    let mut folio = cpu.step(func, |m| {
        m.rcu_read_lock();
        let f = m.mapping.slot(index);
        ktrace!(m, "rcu_read_lock; xas_load(index {index}) = {f:?}");
        Ok(f)
    })?;
    loop {
        let Some(f) = folio else {
            return Ok(None);
        };
        if !folio_try_get(cpu, f)? {
            // goto repeat: spinning on an unchanged slot and a zero count
            // is the same as waiting for either to change.
            folio = cpu.step_when(
                func,
                |m| m.mapping.slot(index) != Some(f) || m.peek(f).refcount != 0,
                |m| {
                    let f = m.mapping.slot(index);
                    ktrace!(m, "repeat: xas_load(index {index}) = {f:?}");
                    Ok(f)
                },
            )?;
            continue;
        }
        let reloaded = cpu.step(func, |m| {
            let r = m.mapping.slot(index);
            ktrace!(m, "xas_reload(index {index}) = {r:?}");
            Ok(r)
        })?;
        if reloaded != Some(f) {
            folio_put(cpu, f)?;
            folio = reloaded;
            continue;
        }
        return Ok(Some(f));
    }
}

/// `filemap_get_folio` followed by the caller's `folio_put`.
pub fn filemap_get_folio(cpu: &Cpu, index: u32) -> KResult<()> {
    if let Some(folio) = filemap_get_entry(cpu, index)? {
        folio_put(cpu, folio)?;
    }
    Ok(())
}

/// `folio_lock`: sleep until PG_locked is clear, then set it.
pub fn folio_lock(cpu: &Cpu, folio: Pfn) -> KResult<()> {
    folio_lock_then(cpu, "folio_lock", folio, |_| Ok(()))
}

/// `folio_lock`, then `then` in the same step (what the caller reads
/// first under the lock), traced as kernel function `func`.
pub fn folio_lock_then<T>(
    cpu: &Cpu,
    func: &'static str,
    folio: Pfn,
    then: impl FnOnce(&mut Machine) -> Result<T, Violation>,
) -> KResult<T> {
    cpu.step_when(
        func,
        |m| !m.peek(folio).test(pg::LOCKED),
        |m| {
            // A sleeping lock: folio_lock() starts with might_sleep().
            super::oracle::might_sleep(m, func)?;
            m.folio_set_locked(folio)?;
            then(m)
        },
    )
}

/// `folio_trylock`.
pub fn folio_trylock(cpu: &Cpu, folio: Pfn) -> KResult<bool> {
    cpu.step("folio_trylock", |m| {
        if m.page(folio)?.test(pg::LOCKED) {
            return Ok(false);
        }
        m.folio_set_locked(folio)?;
        Ok(true)
    })
}

/// `folio_unlock`.
pub fn folio_unlock(cpu: &Cpu, folio: Pfn) -> KResult<()> {
    cpu.step("folio_unlock", |m| {
        m.folio_clear_locked(folio, "folio_unlock")
    })
}

impl Machine {
    /// PG_locked set (`__folio_set_locked` on a new folio, the test-and-set
    /// of `folio_lock`/`folio_trylock`), held by the running CPU.
    pub fn folio_set_locked(&mut self, folio: Pfn) -> Result<(), Violation> {
        self.page_mut(folio)?.flags |= pg::LOCKED;
        let me = self.this_cpu;
        self.ledger.folio_locks.retain(|&(f, _)| f != folio);
        self.ledger.folio_locks.push((folio, me));
        Ok(())
    }

    /// PG_locked cleared (`folio_unlock`), by the CPU that holds it.
    pub fn folio_clear_locked(&mut self, folio: Pfn, what: &str) -> Result<(), Violation> {
        super::oracle::folio_unlock_by_locker(self, folio, what)?;
        self.page_mut(folio)?.flags &= !pg::LOCKED;
        self.ledger.folio_locks.retain(|&(f, _)| f != folio);
        Ok(())
    }
}

/// `__filemap_remove_folio` under `xa_lock`: clear the slot if it still
/// holds `folio`. Returns whether it did.
pub fn filemap_remove_folio_locked(
    m: &mut Machine,
    index: u32,
    folio: Pfn,
) -> Result<bool, Violation> {
    if m.mapping.slot(index) != Some(folio) {
        return Ok(false);
    }
    m.mapping.set_slot(index, None);
    let p = m.page_mut(folio)?;
    p.mapping = Mapping::None;
    ktrace!(m, "xas_store(index {index}) = NULL");
    Ok(true)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Oracle;
    use crate::model::testing::Kernel;

    /// A page-cache folio at index 0, unlocked, and the kernel it is in.
    pub(crate) fn cached_folio() -> (Kernel, Pfn) {
        let mut k = Kernel::boot();
        k.on(0, |cpu| filemap_add_folio(cpu, 0, 600)).unwrap();
        let folio = k.m.mapping.slot(0).expect("filemap_add_folio inserted it");
        (k, folio)
    }

    #[test]
    fn folio_unlock_by_the_cpu_that_locked_it_is_clean() {
        let (mut k, folio) = cached_folio();

        k.on(1, |cpu| folio_lock(cpu, folio)).unwrap();
        k.on(1, |cpu| folio_unlock(cpu, folio)).unwrap();

        assert!(!k.m.peek(folio).test(pg::LOCKED));
        k.quiesce().unwrap();
    }

    #[test]
    fn folio_unlock_of_a_folio_another_cpu_locked_is_caught() {
        let (mut k, folio) = cached_folio();
        k.on(0, |cpu| folio_lock(cpu, folio)).unwrap();

        let err = k.on(1, |cpu| folio_unlock(cpu, folio)).unwrap_err();

        assert_eq!(err.oracle, Oracle::FolioLockOwner);
        assert!(err.detail.contains("CPU 0 locked it"), "{}", err.detail);
    }

    #[test]
    fn folio_lock_inside_an_rcu_read_section_is_a_sleep_in_atomic_context() {
        let (mut k, folio) = cached_folio();
        k.step(0, |m| {
            m.rcu_read_lock();
            Ok(())
        })
        .unwrap();

        let err = k.on(0, |cpu| folio_lock(cpu, folio)).unwrap_err();

        assert_eq!(err.oracle, Oracle::MightSleep);
    }

    #[test]
    fn folio_unlock_of_an_unlocked_folio_is_caught() {
        let (mut k, folio) = cached_folio();

        let err = k.on(0, |cpu| folio_unlock(cpu, folio)).unwrap_err();

        assert_eq!(err.oracle, Oracle::FolioLockOwner);
        assert!(err.detail.contains("unlocked pfn"), "{}", err.detail);
    }
}
