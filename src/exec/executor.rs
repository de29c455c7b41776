//! The model's [`Executor`] over shuttle: each CPU is a shuttle thread, and
//! each step of a kernel path is exactly one scheduling point.

use super::guard;
use crate::model::ctx::{CpuId, Executor, Record};
use crate::model::{Config, Halt, KResult, Machine, Oracle, Violation};
use shuttle::sync::{Condvar, Mutex as ShuttleMutex};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Steps one execution may take before it counts as a livelock.
pub const STEP_BOUND: u32 = 100_000;

/// The machine and the run's bookkeeping. It sits in a std mutex, never
/// contended (shuttle runs one thread at a time), so that the harness can
/// read it after an execution, even one that shuttle tore down.
pub struct ExecState {
    pub machine: Machine,
    pub record: Record,
    /// Steps the setup took, before the CPUs started.
    pub setup_steps: u32,
    /// CPU threads that have not finished.
    pub running: u32,
    /// CPUs blocked on the gate and not notified since (changed only with
    /// the gate held).
    pub waiters: u32,
}

pub type SharedState = Arc<Mutex<ExecState>>;

/// The executor of one execution. Only waiters and the steps that wake
/// them take `gate`, so an ordinary step is a single scheduling point.
pub struct ShuttleExecutor {
    cfg: Config,
    state: SharedState,
    gate: ShuttleMutex<()>,
    wake: Condvar,
}

impl ShuttleExecutor {
    pub fn new(cfg: Config, state: SharedState) -> ShuttleExecutor {
        ShuttleExecutor {
            cfg,
            state,
            gate: ShuttleMutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// A CPU thread finished its ops: if every other live CPU is blocked,
    /// nothing can wake them.
    pub fn cpu_finished(&self, cpu: CpuId) {
        let mut st = guard(&self.state);
        st.running -= 1;
        // Waiters count is exact outside the gate: it changes only under
        // it, and no scheduling point falls between a change and the
        // wait or wake-up it stands for.
        if st.running == 0 || st.waiters < st.running || st.record.halted() {
            return;
        }
        detect_deadlock(&mut st, cpu);
        drop(st);
        let _g = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        guard(&self.state).waiters = 0;
        self.wake.notify_all();
    }
}

fn detect_deadlock(st: &mut ExecState, cpu: CpuId) {
    let running = st.running;
    st.record.detect(
        cpu,
        "deadlock",
        Violation {
            oracle: Oracle::Deadlock,
            detail: format!("all {running} running CPU(s) are blocked, and nothing can wake them"),
        },
    );
}

impl Executor for ShuttleExecutor {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn step(
        &self,
        cpu: CpuId,
        func: &'static str,
        ready: Option<&dyn Fn(&Machine) -> bool>,
        body: &mut dyn FnMut(&mut Machine) -> Result<(), Violation>,
    ) -> KResult<()> {
        // The one scheduling point of a step (shuttle's sleep is a plain
        // context switch), unless no other CPU could run: it would be a
        // forced move, never a decision, so skipping it changes no
        // schedule (the main thread only waits for the CPUs, and a CPU
        // woken but not yet run is no longer counted as a waiter).
        let alone = {
            let st = guard(&self.state);
            st.running <= st.waiters + 1
        };
        if !alone {
            shuttle::thread::sleep(Duration::ZERO);
        }
        let mut gate = None;
        let mut st = guard(&self.state);
        let ready = |st: &ExecState| ready.is_none_or(|r| r(&st.machine));
        if !st.record.halted() && !ready(&st) {
            // Slow path: wait under the gate. A waiter registers and enters
            // wait() holding it, and wakers take it before notify_all(), so
            // no wake-up is lost in between. The state lock is never held
            // across a scheduling point (taking the gate may be one).
            drop(st);
            let mut g = self.gate.lock().unwrap_or_else(|e| e.into_inner());
            st = loop {
                let mut st = guard(&self.state);
                if st.record.halted() || ready(&st) {
                    break st;
                }
                if st.waiters + 1 == st.running {
                    // Nothing can wake this CPU: wake the others to halt.
                    // (Notifying may switch CPUs: never with the state held.)
                    detect_deadlock(&mut st, cpu);
                    st.waiters = 0;
                    drop(st);
                    self.wake.notify_all();
                    break guard(&self.state);
                }
                st.waiters += 1;
                drop(st);
                g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            };
            gate = Some(g);
        }
        if st.record.halted() {
            return Err(Halt);
        }
        let s = &mut *st;
        let mut result = body(&mut s.machine);
        if result.is_ok() && s.record.steps >= STEP_BOUND {
            result = Err(Violation {
                oracle: Oracle::StepLimit,
                detail: format!("the execution did not finish within {STEP_BOUND} steps"),
            });
        }
        let result = s.record.finish_step(&mut s.machine, cpu, func, result);
        let notify = s.waiters > 0;
        drop(st);
        if notify {
            // Under the gate, so that the waiters counted are exactly the
            // ones this wakes (taking the gate may let another register).
            let _g = gate.unwrap_or_else(|| self.gate.lock().unwrap_or_else(|e| e.into_inner()));
            guard(&self.state).waiters = 0;
            self.wake.notify_all();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ctx::Cpu;

    fn state(nr_cpus: u32) -> SharedState {
        Arc::new(Mutex::new(ExecState {
            machine: Machine::new(Config::default(), nr_cpus as usize),
            record: Record::default(),
            setup_steps: 0,
            running: nr_cpus,
            waiters: 0,
        }))
    }

    /// Every CPU waiting for a condition nobody can make true is a
    /// deadlock, found by the executor as a violation (not by shuttle).
    #[test]
    fn cpus_all_blocked_on_conditions_nobody_changes_are_a_deadlock() {
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let v = verdicts.clone();
        shuttle::check_random(
            move || {
                let st = state(2);
                let ex = Arc::new(ShuttleExecutor::new(Config::default(), st.clone()));
                let hs: Vec<_> = (0..2u8)
                    .map(|i| {
                        let ex = ex.clone();
                        shuttle::thread::spawn(move || {
                            let cpu = Cpu::new(CpuId::cpu(i), &*ex);
                            let _ = cpu.step_when("never", |_| false, |_| Ok(()));
                            ex.cpu_finished(cpu.id);
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
                let d = guard(&st).record.detected.clone();
                v.lock().unwrap().push(d.map(|d| d.violation.oracle));
            },
            50,
        );
        let verdicts = verdicts.lock().unwrap();
        assert_eq!(verdicts.len(), 50);
        assert!(
            verdicts.iter().all(|o| *o == Some(Oracle::Deadlock)),
            "{verdicts:?}"
        );
    }

    /// A CPU waiting for another that will make progress is no deadlock,
    /// however the waiters and wake-ups interleave.
    #[test]
    fn a_waiter_woken_before_it_runs_again_is_not_a_deadlock() {
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let v = verdicts.clone();
        shuttle::check_random(
            move || {
                let st = state(3);
                let ex = Arc::new(ShuttleExecutor::new(Config::default(), st.clone()));
                let hs: Vec<_> = (0..3u8)
                    .map(|i| {
                        let ex = ex.clone();
                        shuttle::thread::spawn(move || {
                            let cpu = Cpu::new(CpuId::cpu(i), &*ex);
                            if i == 0 {
                                // Four steps, then the flag the others wait on.
                                for _ in 0..4 {
                                    let _ = cpu.step("work", |_| Ok(()));
                                }
                                let _ = cpu.step("release", |m| {
                                    m.fail_next_allocs = 1;
                                    Ok(())
                                });
                            } else {
                                let _ =
                                    cpu.step_when("wait", |m| m.fail_next_allocs == 1, |_| Ok(()));
                            }
                            ex.cpu_finished(cpu.id);
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
                let d = guard(&st).record.detected.clone();
                v.lock().unwrap().push(d.map(|d| d.violation));
            },
            500,
        );
        let verdicts = verdicts.lock().unwrap();
        assert!(verdicts.iter().all(Option::is_none), "{verdicts:?}");
    }
}
