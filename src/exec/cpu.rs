//! A CPU's handle on the shared machine.

use crate::model::{Config, Halt, KResult, Machine, Violation, oracle};
use shuttle::sync::{Condvar, Mutex as ShuttleMutex};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The machine, and what blocked CPUs wait on.
///
/// The machine sits in a std mutex (never contended: shuttle runs one thread
/// at a time) so the harness can read it after an execution, even one that
/// shuttle tore down. Only waiters and the steps that wake them take `gate`,
/// so an ordinary step is a single scheduling point.
pub struct Shared {
    pub machine: Arc<Mutex<Machine>>,
    cfg: Config,
    gate: ShuttleMutex<()>,
    wake: Condvar,
}

impl Shared {
    pub fn new(machine: Arc<Mutex<Machine>>) -> Arc<Shared> {
        let cfg = lock(&machine).cfg;
        Arc::new(Shared {
            machine,
            cfg,
            gate: ShuttleMutex::new(()),
            wake: Condvar::new(),
        })
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One CPU (or the setup context, `id == None`).
#[derive(Clone)]
pub struct Cpu {
    pub id: Option<u8>,
    shared: Arc<Shared>,
}

impl Cpu {
    pub fn new(id: Option<u8>, shared: Arc<Shared>) -> Cpu {
        Cpu { id, shared }
    }

    /// The machine's configuration, which never changes during a run.
    pub fn cfg(&self) -> &Config {
        &self.shared.cfg
    }

    /// The CPU index for per-CPU state (setup runs as CPU 0).
    pub fn index(&self) -> usize {
        self.id.unwrap_or(0) as usize
    }

    /// Run one atomic step of a kernel path: a scheduling point, then `f`
    /// with exclusive access to the machine, then the per-step oracles.
    pub fn step<T>(
        &self,
        func: &'static str,
        f: impl FnOnce(&mut Machine) -> Result<T, Violation>,
    ) -> KResult<T> {
        self.step_when(func, |_| true, f)
    }

    /// Like [`Cpu::step`], but first block until `ready` holds: a lock
    /// acquisition, a grace period, or a spin loop re-reading unchanged
    /// state (which is equivalent to waiting for a change).
    pub fn step_when<T>(
        &self,
        func: &'static str,
        ready: impl Fn(&Machine) -> bool,
        f: impl FnOnce(&mut Machine) -> Result<T, Violation>,
    ) -> KResult<T> {
        // The one scheduling point of a step (shuttle's sleep is a plain
        // context switch).
        shuttle::thread::sleep(Duration::ZERO);
        let mut gate = None;
        let mut m = lock(&self.shared.machine);
        if !m.halted() && !ready(&m) {
            // Slow path: wait under the gate. A waiter registers and enters
            // wait() holding it, and wakers take it before notify_all(), so
            // no wake-up is lost in between. The machine lock is never held
            // across a scheduling point (taking the gate may be one).
            drop(m);
            let mut g = self.shared.gate.lock().unwrap_or_else(|e| e.into_inner());
            m = loop {
                let mut m = lock(&self.shared.machine);
                if m.halted() || ready(&m) {
                    break m;
                }
                m.waiters += 1;
                drop(m);
                g = self.shared.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                lock(&self.shared.machine).waiters -= 1;
            };
            gate = Some(g);
        }
        if m.halted() {
            return Err(Halt);
        }
        m.step += 1;
        m.cur_cpu = self.id;
        m.cur_func = func;
        let result = f(&mut m).and_then(|v| oracle::check_step(&m).map(|()| v));
        let result = result.map_err(|v| {
            m.detect(v);
            Halt
        });
        if let Some(c) = m.coverage.as_mut() {
            c.record_step(self.id, func);
        }
        let notify = m.waiters > 0;
        drop(m);
        if notify {
            let _g =
                gate.unwrap_or_else(|| self.shared.gate.lock().unwrap_or_else(|e| e.into_inner()));
            self.shared.wake.notify_all();
        }
        result
    }
}
