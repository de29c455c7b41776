//! Interrupt state and cross-CPU calls (include/linux/irqflags.h,
//! kernel/smp.c).
//!
//! A CPU with interrupts disabled takes no IPI: `smp_call_function(.., wait
//! = 1)` returns only once every other CPU ran the function, so it waits for
//! each CPU that had interrupts off when the IPIs were sent to turn them
//! back on. That is what lets GUP-fast, which walks page tables with
//! interrupts off, be held off by `tlb_remove_table_sync_one()` (and, on
//! x86, by a TLB-flush IPI). As `synchronize_rcu` does for read sections,
//! the wait snapshots each CPU's interrupts-off section and ends when each
//! of those sections has ended: a section entered later is not waited for.

use super::KResult;
use super::ctx::Cpu;
use super::machine::Machine;
use super::oracle::{Oracle, Violation};
use crate::ktrace;

/// The interrupts-off sections an IPI waits for: (cpu, section number).
pub type IpiWait = Vec<(usize, u32)>;

impl Machine {
    /// `local_irq_save`: interrupts off on the running CPU. With interrupts
    /// off a CPU is also in an RCU read section (since the RCU flavours were
    /// consolidated in v4.20).
    pub fn local_irq_save(&mut self) {
        let c = self.cpu_index();
        let cpu = &mut self.cpus[c];
        if cpu.irqs_off == 0 {
            cpu.irq_sections += 1;
        }
        cpu.irqs_off += 1;
        self.rcu_read_lock();
    }

    /// `local_irq_restore`.
    /// An IPI sent while interrupts were off is taken now (an x86 kernel
    /// TLB flush, see `vmemmap::flush_tlb_kernel_range`).
    pub fn local_irq_restore(&mut self) {
        let c = self.cpu_index();
        let cpu = &mut self.cpus[c];
        cpu.irqs_off -= 1;
        if cpu.irqs_off == 0 && cpu.kernel_flush_pending {
            cpu.kernel_flush_pending = false;
            cpu.tlb.iter_mut().for_each(|e| *e = None);
        }
        self.rcu_read_unlock();
    }

    /// May CPU `cpu` run a step now? Not while another CPU has it paused
    /// for a vmemmap update, unless `cpu` has not taken the pause IPI yet
    /// (it is still in the interrupts-off section it was in).
    pub fn may_run(&self, cpu: usize) -> bool {
        match &self.vmemmap.paused_by {
            None => true,
            Some((pauser, wait)) => {
                *pauser == cpu
                    || wait.iter().any(|&(c, s)| {
                        c == cpu && self.irqs_disabled(c) && self.cpus[c].irq_sections == s
                    })
            }
        }
    }

    /// `irqs_disabled()` on CPU `cpu`.
    pub fn irqs_disabled(&self, cpu: usize) -> bool {
        self.cpus[cpu].irqs_off > 0
    }

    /// The CPUs other than the running one that an IPI sent now must wait
    /// for.
    fn ipi_targets_with_irqs_off(&self) -> IpiWait {
        let me = self.cpu_index();
        (0..self.cpus.len())
            .filter(|&c| c != me && self.irqs_disabled(c))
            .map(|c| (c, self.cpus[c].irq_sections))
            .collect()
    }

    /// Has every CPU in `wait` taken its IPI (left the interrupts-off
    /// section it was in)?
    pub fn ipis_delivered(&self, wait: &IpiWait) -> bool {
        wait.iter()
            .all(|&(c, s)| !self.irqs_disabled(c) || self.cpus[c].irq_sections != s)
    }
}

/// `smp_call_function(func, NULL, wait = 1)`: send an IPI to every other
/// CPU and wait until each ran `func` (one step to send, one to wait).
/// Calling it with interrupts disabled can deadlock (two CPUs waiting for
/// each other's IPI), which `smp_call_function_many_cond` warns about.
pub fn smp_call_function(cpu: &Cpu, func: &'static str) -> KResult<()> {
    let wait = cpu.step("smp_call_function_many_cond", |m| {
        if m.irqs_disabled(m.cpu_index()) {
            return Err(Violation {
                oracle: Oracle::Deadlock,
                detail: format!("smp_call_function({func}) with interrupts disabled"),
            });
        }
        let wait = m.ipi_targets_with_irqs_off();
        ktrace!(
            m,
            "IPI {func} to every CPU; {} with interrupts off",
            wait.len()
        );
        Ok(wait)
    })?;
    cpu.step_when(
        "smp_call_function_many_cond",
        |m| m.ipis_delivered(&wait),
        |m| {
            ktrace!(m, "every CPU ran {func}");
            Ok(())
        },
    )
}

/// `pause_remote_cpus` (Yu Zhao, "arm64: use IPIs to pause/resume remote
/// CPUs", in "mm/hugetlb_vmemmap: HVO on arm64", linux-mm, Aug 2024): an
/// IPI parks every other CPU in its handler; the caller waits until each
/// took it, so for each CPU that had interrupts off until it enabled them.
pub fn pause_remote_cpus(cpu: &Cpu) -> KResult<()> {
    let wait = cpu.step("pause_remote_cpus", |m| {
        let wait = m.ipi_targets_with_irqs_off();
        m.vmemmap.paused_by = Some((m.cpu_index(), wait.clone()));
        ktrace!(m, "IPI: pause every other CPU");
        Ok(wait)
    })?;
    cpu.step_when(
        "pause_remote_cpus",
        |m| m.ipis_delivered(&wait),
        |m| {
            ktrace!(m, "every other CPU is paused");
            Ok(())
        },
    )
}

/// `resume_remote_cpus`: the paused CPUs leave the IPI handler.
pub fn resume_remote_cpus(cpu: &Cpu) -> KResult<()> {
    cpu.step("resume_remote_cpus", |m| {
        m.vmemmap.paused_by = None;
        ktrace!(m, "resume every other CPU");
        Ok(())
    })
}

/// `spin_lock(lock)` around `f`, inside one step: a sleeping call in `f`
/// is a sleep in atomic context.
pub fn under_spinlock<T>(
    m: &mut Machine,
    lock: &'static str,
    f: impl FnOnce(&mut Machine) -> Result<T, Violation>,
) -> Result<T, Violation> {
    let c = m.cpu_index();
    let outer = m.cpus[c].spinlock.replace(lock);
    let r = f(m);
    m.cpus[c].spinlock = outer;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::Kernel;

    fn irq_save(k: &mut Kernel, cpu: u8) {
        k.step(cpu, |m| {
            m.local_irq_save();
            Ok(())
        })
        .unwrap();
    }

    fn irq_restore(k: &mut Kernel, cpu: u8) {
        k.step(cpu, |m| {
            m.local_irq_restore();
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn an_ipi_waits_for_a_cpu_with_interrupts_off() {
        let mut k = Kernel::boot();
        irq_save(&mut k, 0);

        // Nothing else runs, so the wait never ends.
        let err = k.on(1, |cpu| smp_call_function(cpu, "test")).unwrap_err();

        assert_eq!(err.oracle, Oracle::Deadlock);
        assert!(err.detail.contains("blocks"), "{}", err.detail);
    }

    #[test]
    fn an_ipi_does_not_wait_for_cpus_with_interrupts_on() {
        let mut k = Kernel::builder().cpus(3).boot();
        irq_save(&mut k, 0);
        irq_restore(&mut k, 0);

        k.on(1, |cpu| smp_call_function(cpu, "test")).unwrap();
        assert!(!k.m.irqs_disabled(0));
    }

    #[test]
    fn an_ipi_waits_only_for_the_section_it_was_sent_in() {
        let mut k = Kernel::boot();
        irq_save(&mut k, 0);
        let wait = k.step(1, |m| Ok(m.ipi_targets_with_irqs_off())).unwrap();
        assert_eq!(wait, [(0, 1)]);
        assert!(!k.m.ipis_delivered(&wait));

        // CPU 0 takes the IPI when it enables interrupts, even if it
        // disables them again right after.
        irq_restore(&mut k, 0);
        irq_save(&mut k, 0);

        assert!(k.m.irqs_disabled(0));
        assert!(k.m.ipis_delivered(&wait));
    }

    #[test]
    fn nested_irq_save_keeps_interrupts_off_until_the_outermost_restore() {
        let mut k = Kernel::boot();
        irq_save(&mut k, 0);
        irq_save(&mut k, 0);
        let wait = k.step(1, |m| Ok(m.ipi_targets_with_irqs_off())).unwrap();

        irq_restore(&mut k, 0);
        assert!(!k.m.ipis_delivered(&wait));
        assert!(k.m.rcu.in_read_section(0));

        irq_restore(&mut k, 0);
        assert!(k.m.ipis_delivered(&wait));
        assert!(!k.m.rcu.in_read_section(0));
    }

    #[test]
    fn smp_call_function_with_interrupts_off_is_refused() {
        let mut k = Kernel::boot();
        irq_save(&mut k, 1);

        let err = k.on(1, |cpu| smp_call_function(cpu, "test")).unwrap_err();

        assert_eq!(err.oracle, Oracle::Deadlock);
        assert!(err.detail.contains("interrupts disabled"), "{}", err.detail);
    }
}
