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
    /// Interleaving coverage, when a guided search asks for it.
    pub coverage: Option<Mutex<Coverage>>,
}

impl Shared {
    pub fn new(machine: Arc<Mutex<Machine>>, coverage: bool) -> Arc<Shared> {
        let cfg = lock(&machine).cfg;
        Arc::new(Shared {
            machine,
            cfg,
            gate: ShuttleMutex::new(()),
            wake: Condvar::new(),
            coverage: coverage.then(|| Mutex::new(Coverage::default())),
        })
    }
}

/// Interleaving 2-grams: for each step, the previous step's kernel function,
/// this step's, and whether the CPU switched in between. Same-CPU pairs
/// follow control flow (which branch a path took); switched pairs are the
/// interleavings. Features bucket each pair's count, as AFL does.
#[derive(Debug, Default)]
pub struct Coverage {
    last: Option<(Option<u8>, usize)>,
    pairs: Vec<u64>,
}

impl Coverage {
    fn record(&mut self, cpu: Option<u8>, func: &'static str) {
        // A kernel name is a string literal: its address identifies it.
        let f = func.as_ptr() as usize;
        if let Some((prev_cpu, prev)) = self.last {
            let switched = (prev_cpu != cpu) as u64;
            let h = (prev as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (f as u64).rotate_left(29)
                ^ switched;
            self.pairs.push(h.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        }
        self.last = Some((cpu, f));
    }

    /// The execution's features, sorted and deduplicated.
    pub fn features(&mut self) -> Vec<u64> {
        self.pairs.sort_unstable();
        let mut out = Vec::new();
        for run in self.pairs.chunk_by(|a, b| a == b) {
            let bucket = match run.len() {
                1 => 0,
                2 => 1,
                3 => 2,
                4..=7 => 3,
                _ => 4,
            };
            out.push(run[0] ^ bucket);
        }
        out.dedup();
        out
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
        let waits = {
            let m = lock(&self.shared.machine);
            !m.halted() && !ready(&m)
        };
        if waits {
            // Slow path: wait under the gate. A waiter registers and enters
            // wait() holding it, and wakers take it before notify_all(), so
            // no wake-up is lost in between.
            let mut g = self.shared.gate.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let mut m = lock(&self.shared.machine);
                if m.halted() || ready(&m) {
                    break;
                }
                m.waiters += 1;
                drop(m);
                g = self.shared.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                lock(&self.shared.machine).waiters -= 1;
            }
            gate = Some(g);
        }
        let mut m = lock(&self.shared.machine);
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
        let notify = m.waiters > 0;
        drop(m);
        if let Some(c) = &self.shared.coverage {
            lock(c).record(self.id, func);
        }
        if notify {
            let _g =
                gate.unwrap_or_else(|| self.shared.gate.lock().unwrap_or_else(|e| e.into_inner()));
            self.shared.wake.notify_all();
        }
        result
    }
}
