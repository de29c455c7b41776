//! RCU (kernel/rcu): read sections, grace periods and callbacks.
//!
//! `synchronize_rcu()` waits for exactly the read sections that began before
//! it: it snapshots each CPU's section number and waits until each of those
//! sections has ended. `call_rcu()` queues a callback behind the same kind
//! of snapshot; it runs at the end of the first step after which every
//! section in its snapshot has ended.

use super::KResult;
use super::ctx::Cpu;
use super::machine::{Machine, Pfn};
use super::oracle::Violation;
use crate::ktrace;

/// What a queued callback does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callback {
    /// `tlb_remove_table_rcu`: free a page-table page.
    FreeTable(Pfn),
}

#[derive(Debug)]
pub struct RcuState {
    /// Read-section nesting depth per CPU.
    nesting: Vec<u8>,
    /// Count of outermost read sections entered, per CPU.
    section: Vec<u32>,
    /// Callbacks and the sections they wait for.
    callbacks: Vec<(GracePeriod, Callback)>,
}

crate::clone_by_field!(RcuState {
    nesting,
    section,
    callbacks
});

/// The read sections a grace period must wait for: (cpu, section number).
pub type GracePeriod = Vec<(usize, u32)>;

impl RcuState {
    pub fn new(nr_cpus: usize) -> Self {
        RcuState {
            nesting: vec![0; nr_cpus],
            section: vec![0; nr_cpus],
            callbacks: Vec::new(),
        }
    }

    fn snapshot(&self, except: Option<usize>) -> GracePeriod {
        (0..self.nesting.len())
            .filter(|&c| Some(c) != except && self.nesting[c] > 0)
            .map(|c| (c, self.section[c]))
            .collect()
    }

    /// Has every section in the snapshot ended?
    pub fn grace_period_elapsed(&self, gp: &GracePeriod) -> bool {
        gp.iter()
            .all(|&(c, s)| self.nesting[c] == 0 || self.section[c] != s)
    }

    /// Is `cpu` inside a read section?
    pub fn in_read_section(&self, cpu: usize) -> bool {
        self.nesting[cpu] > 0
    }

    pub fn has_callbacks(&self) -> bool {
        !self.callbacks.is_empty()
    }

    /// Callbacks not yet run.
    pub fn pending(&self) -> impl Iterator<Item = Callback> + '_ {
        self.callbacks.iter().map(|(_, cb)| *cb)
    }

    /// `call_rcu`: the caller's own read section, if any, counts too.
    pub fn call_rcu(&mut self, cb: Callback) {
        let gp = self.snapshot(None);
        self.callbacks.push((gp, cb));
    }
}

impl Machine {
    /// `rcu_read_lock()` on the running CPU.
    pub fn rcu_read_lock(&mut self) {
        let cpu = self.cpu_index();
        if self.rcu.nesting[cpu] == 0 {
            self.rcu.section[cpu] += 1;
        }
        self.rcu.nesting[cpu] += 1;
    }

    /// `rcu_read_unlock()` on the running CPU.
    pub fn rcu_read_unlock(&mut self) {
        let cpu = self.cpu_index();
        self.rcu.nesting[cpu] -= 1;
    }

    /// `rcu_do_batch`: run the callbacks whose grace period has elapsed.
    pub fn rcu_do_batch(&mut self) -> Result<(), Violation> {
        let mut i = 0;
        while i < self.rcu.callbacks.len() {
            if self.rcu.grace_period_elapsed(&self.rcu.callbacks[i].0) {
                let (_, cb) = self.rcu.callbacks.remove(i);
                self.run_callback(cb)?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// `rcu_barrier`: run every callback (no reader is left).
    pub fn rcu_barrier(&mut self) -> Result<(), Violation> {
        for (_, cb) in std::mem::take(&mut self.rcu.callbacks) {
            self.run_callback(cb)?;
        }
        Ok(())
    }

    fn run_callback(&mut self, cb: Callback) -> Result<(), Violation> {
        match cb {
            Callback::FreeTable(t) => {
                ktrace!(self, "RCU callback: tlb_remove_table_rcu(frame {t})");
                self.pagetable_free(t)
            }
        }
    }
}

/// `synchronize_rcu()`: block until all pre-existing readers have finished.
pub fn synchronize_rcu(cpu: &Cpu) -> KResult<()> {
    let me = cpu.index();
    let gp = cpu.step("synchronize_rcu", |m| {
        super::oracle::might_sleep(m, "synchronize_rcu()")?;
        let gp = m.rcu.snapshot(Some(me));
        ktrace!(m, "grace period starts, waiting for {} reader(s)", gp.len());
        Ok(gp)
    })?;
    if gp.is_empty() {
        return Ok(());
    }
    cpu.step_when(
        "synchronize_rcu",
        |m| m.rcu.grace_period_elapsed(&gp),
        |m| {
            ktrace!(m, "grace period ends");
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::machine::Owner;
    use crate::model::oracle::Oracle;
    use crate::model::pgtable::Level;
    use crate::model::testing::Kernel;

    fn rcu_read_lock(k: &mut Kernel, cpu: u8) {
        k.step(cpu, |m| {
            m.rcu_read_lock();
            Ok(())
        })
        .unwrap();
    }

    fn rcu_read_unlock(k: &mut Kernel, cpu: u8) {
        k.step(cpu, |m| {
            m.rcu_read_unlock();
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn synchronize_rcu_waits_for_a_reader_that_entered_before_it() {
        let mut k = Kernel::boot();
        rcu_read_lock(&mut k, 0);

        // Nothing else runs, so the wait can never end.
        let err = k.on(1, synchronize_rcu).unwrap_err();

        assert_eq!(err.oracle, Oracle::Deadlock);
        assert!(err.detail.contains("synchronize_rcu"), "{}", err.detail);
    }

    #[test]
    fn synchronize_rcu_does_not_wait_for_a_reader_that_left() {
        let mut k = Kernel::boot();
        rcu_read_lock(&mut k, 0);
        rcu_read_unlock(&mut k, 0);

        k.on(1, synchronize_rcu).unwrap();
    }

    #[test]
    fn synchronize_rcu_waits_for_the_outermost_section_of_a_nested_reader() {
        let mut k = Kernel::boot();
        rcu_read_lock(&mut k, 0);
        rcu_read_lock(&mut k, 0);
        rcu_read_unlock(&mut k, 0);

        assert!(k.m.rcu.in_read_section(0));
        assert_eq!(
            k.on(1, synchronize_rcu).unwrap_err().oracle,
            Oracle::Deadlock
        );
    }

    #[test]
    fn a_nested_read_section_entered_after_the_snapshot_belongs_to_the_outer_one() {
        let mut k = Kernel::boot();
        rcu_read_lock(&mut k, 0);
        let gp = k.m.rcu.snapshot(Some(1));

        rcu_read_lock(&mut k, 0);
        rcu_read_unlock(&mut k, 0);
        assert!(
            !k.m.rcu.grace_period_elapsed(&gp),
            "the outer section goes on"
        );

        rcu_read_unlock(&mut k, 0);
        assert!(k.m.rcu.grace_period_elapsed(&gp));
    }

    #[test]
    fn synchronize_rcu_inside_a_read_section_is_a_sleep_in_atomic_context() {
        let mut k = Kernel::boot();
        rcu_read_lock(&mut k, 1);

        let err = k.on(1, synchronize_rcu).unwrap_err();

        assert_eq!(err.oracle, Oracle::MightSleep);
        assert!(err.detail.contains("RCU read section"), "{}", err.detail);
    }

    #[test]
    fn synchronize_rcu_with_interrupts_off_is_a_sleep_in_atomic_context() {
        let mut k = Kernel::boot();
        k.step(1, |m| {
            m.local_irq_save();
            Ok(())
        })
        .unwrap();

        let err = k.on(1, synchronize_rcu).unwrap_err();

        assert_eq!(err.oracle, Oracle::MightSleep);
        assert!(err.detail.contains("interrupts disabled"), "{}", err.detail);
    }

    #[test]
    fn a_reader_entering_after_the_snapshot_does_not_delay_the_grace_period() {
        let mut k = Kernel::boot();
        rcu_read_lock(&mut k, 0);
        // synchronize_rcu() on CPU 1 starts here: it waits for CPU 0's
        // first section only.
        let gp = k.m.rcu.snapshot(Some(1));
        assert_eq!(gp, [(0, 1)]);
        assert!(!k.m.rcu.grace_period_elapsed(&gp));

        // CPU 0 leaves and enters a new section; CPU 1 enters one too.
        rcu_read_unlock(&mut k, 0);
        rcu_read_lock(&mut k, 0);
        rcu_read_lock(&mut k, 1);

        assert!(k.m.rcu.in_read_section(0) && k.m.rcu.in_read_section(1));
        assert!(k.m.rcu.grace_period_elapsed(&gp));
    }

    #[test]
    fn a_snapshot_with_no_reader_has_nothing_to_wait_for() {
        let k = Kernel::boot();
        let gp = k.m.rcu.snapshot(None);
        assert!(gp.is_empty());
        assert!(k.m.rcu.grace_period_elapsed(&gp));
    }

    /// A PTE table nobody points at, ready to be freed.
    fn detached_pte_table(k: &mut Kernel) -> Pfn {
        k.step(0, |m| m.pagetable_alloc(Level::Pte))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn call_rcu_runs_the_callback_only_after_every_preexisting_reader_left() {
        let mut k = Kernel::builder().cpus(3).boot();
        let table = detached_pte_table(&mut k);
        rcu_read_lock(&mut k, 0);
        rcu_read_lock(&mut k, 1);

        k.step(2, |m| {
            m.rcu.call_rcu(Callback::FreeTable(table));
            Ok(())
        })
        .unwrap();
        // A reader entering after call_rcu is not waited for.
        rcu_read_lock(&mut k, 2);

        // rcu_do_batch runs at the end of every step.
        assert_eq!(
            k.m.rcu.pending().collect::<Vec<_>>(),
            [Callback::FreeTable(table)]
        );
        rcu_read_unlock(&mut k, 0);
        assert!(k.m.rcu.has_callbacks(), "CPU 1 is still reading");
        assert_eq!(k.m.frames[table as usize].owner, Owner::PageTable);

        rcu_read_unlock(&mut k, 1);

        assert!(!k.m.rcu.has_callbacks());
        assert_eq!(k.m.frames[table as usize].owner, Owner::Free);
        assert!(k.m.rcu.in_read_section(2));
    }

    #[test]
    fn call_rcu_inside_a_read_section_waits_for_that_section() {
        let mut k = Kernel::boot();
        let table = detached_pte_table(&mut k);
        rcu_read_lock(&mut k, 0);

        k.step(0, |m| {
            m.tlb_remove_table(table);
            Ok(())
        })
        .unwrap();
        k.step(1, |m| m.rcu_do_batch()).unwrap();
        assert_eq!(k.m.frames[table as usize].owner, Owner::PageTable);

        rcu_read_unlock(&mut k, 0);
        assert_eq!(k.m.frames[table as usize].owner, Owner::Free);
    }

    #[test]
    fn call_rcu_with_no_reader_runs_the_callback_at_the_end_of_the_step() {
        let mut k = Kernel::boot();
        let table = detached_pte_table(&mut k);

        k.step(0, |m| {
            m.tlb_remove_table(table);
            assert_eq!(m.frames[table as usize].owner, Owner::PageTable);
            Ok(())
        })
        .unwrap();

        assert_eq!(k.m.frames[table as usize].owner, Owner::Free);
        assert_eq!(k.m.ledger.tables_freed, 1);
    }

    #[test]
    fn rcu_barrier_runs_every_queued_callback_at_quiescence() {
        let mut k = Kernel::boot();
        let tables = [detached_pte_table(&mut k), detached_pte_table(&mut k)];
        // Queued between steps, so no step's rcu_do_batch ran them yet.
        for t in tables {
            k.m.rcu.call_rcu(Callback::FreeTable(t));
        }
        assert_eq!(k.m.rcu.pending().count(), 2);

        k.m.rcu_barrier().unwrap();

        assert!(!k.m.rcu.has_callbacks());
        for t in tables {
            assert_eq!(k.m.frames[t as usize].owner, Owner::Free);
        }
        assert_eq!(k.m.ledger.tables_freed, 2);
    }
}
