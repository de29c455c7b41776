//! RCU (kernel/rcu): read sections and grace periods.
//!
//! `synchronize_rcu()` waits for exactly the read sections that began before
//! it: it snapshots each CPU's section number and waits until each of those
//! sections has ended.

use super::KResult;
use super::machine::Machine;
use crate::exec::Cpu;
use crate::ktrace;

#[derive(Debug, Clone)]
pub struct RcuState {
    /// Read-section nesting depth per CPU.
    nesting: Vec<u8>,
    /// Count of outermost read sections entered, per CPU.
    section: Vec<u32>,
}

/// The read sections a grace period must wait for: (cpu, section number).
pub type GracePeriod = Vec<(usize, u32)>;

impl RcuState {
    pub fn new(nr_cpus: usize) -> Self {
        RcuState {
            nesting: vec![0; nr_cpus],
            section: vec![0; nr_cpus],
        }
    }

    fn snapshot(&self, except: usize) -> GracePeriod {
        (0..self.nesting.len())
            .filter(|&c| c != except && self.nesting[c] > 0)
            .map(|c| (c, self.section[c]))
            .collect()
    }

    /// Has every section in the snapshot ended?
    pub fn grace_period_elapsed(&self, gp: &GracePeriod) -> bool {
        gp.iter()
            .all(|&(c, s)| self.nesting[c] == 0 || self.section[c] != s)
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
}

/// `synchronize_rcu()`: block until all pre-existing readers have finished.
pub fn synchronize_rcu(cpu: &Cpu) -> KResult<()> {
    let me = cpu.index();
    let gp = cpu.step("synchronize_rcu", |m| {
        let gp = m.rcu.snapshot(me);
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
