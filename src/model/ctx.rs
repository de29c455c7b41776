//! What a kernel path needs from whoever runs it, as loom splits its
//! runtime from the facade on top: kernel paths take a [`Cpu`], and every
//! access they make to shared state is one *step* that an [`Executor`]
//! runs. `exec` implements the executor over shuttle, where each step is a
//! scheduling point; [`Sequential`] runs steps one after another, for the
//! setup of a scenario and for the model's unit tests.

use super::machine::Machine;
use super::oracle::{self, Oracle, Violation};
use super::{Config, Halt, KResult};
use std::cell::RefCell;

/// The CPU a step runs on. Setup runs before the CPUs start, on CPU 0's
/// per-CPU state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuId(Option<u8>);

impl CpuId {
    pub const SETUP: CpuId = CpuId(None);

    pub fn cpu(i: u8) -> CpuId {
        CpuId(Some(i))
    }

    /// `smp_processor_id()`: the index of per-CPU state.
    pub fn index(self) -> usize {
        self.0.unwrap_or(0) as usize
    }

    /// The scenario CPU, `None` for setup.
    pub fn get(self) -> Option<u8> {
        self.0
    }
}

impl std::fmt::Display for CpuId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(c) => write!(f, "CPU {c}"),
            None => f.write_str("setup"),
        }
    }
}

/// What runs the steps of kernel paths.
pub trait Executor {
    /// The machine's configuration, which never changes during a run.
    fn config(&self) -> &Config;

    /// Run one atomic step of kernel function `func` on `cpu`: once
    /// `ready` holds (a lock is free, a grace period ended), `body` with
    /// the machine to itself. `Err(Halt)` once any step of the run
    /// violated an oracle; a failing `body` is that violation.
    fn step(
        &self,
        cpu: CpuId,
        func: &'static str,
        ready: Option<&dyn Fn(&Machine) -> bool>,
        body: &mut dyn FnMut(&mut Machine) -> Result<(), Violation>,
    ) -> KResult<()>;
}

/// A CPU's handle for running kernel paths.
#[derive(Clone, Copy)]
pub struct Cpu<'a> {
    pub id: CpuId,
    exec: &'a dyn Executor,
}

impl<'a> Cpu<'a> {
    pub fn new(id: CpuId, exec: &'a dyn Executor) -> Cpu<'a> {
        Cpu { id, exec }
    }

    pub fn cfg(&self) -> &'a Config {
        self.exec.config()
    }

    /// The index of this CPU's per-CPU state.
    pub fn index(&self) -> usize {
        self.id.index()
    }

    /// One step of kernel function `func`: `f` with exclusive access to the
    /// machine, then the per-step oracles.
    pub fn step<T>(
        &self,
        func: &'static str,
        f: impl FnOnce(&mut Machine) -> Result<T, Violation>,
    ) -> KResult<T> {
        self.run(func, None, f)
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
        self.run(func, Some(&ready), f)
    }

    fn run<T>(
        &self,
        func: &'static str,
        ready: Option<&dyn Fn(&Machine) -> bool>,
        f: impl FnOnce(&mut Machine) -> Result<T, Violation>,
    ) -> KResult<T> {
        let id = self.id;
        // While a CPU has the others paused (arm64 vmemmap updates), they
        // wait at their next step.
        let paused = |m: &Machine| m.may_run(id.index()) && ready.is_none_or(|r| r(m));
        let ready: Option<&dyn Fn(&Machine) -> bool> =
            if self.cfg().arch.kernel_pte_break_before_make() && id.get().is_some() {
                Some(&paused)
            } else {
                ready
            };
        let mut f = Some(f);
        let mut out = None;
        self.exec.step(id, func, ready, &mut |m| {
            m.this_cpu = id;
            if let Some(k) = m.kcov.as_mut() {
                k.begin_step(id.get(), func);
            }
            let f = f.take().expect("an executor runs a step body once");
            out = Some(f(m)?);
            m.end_step()?;
            oracle::after_step(m)
        })?;
        Ok(out.expect("the executor ran the step"))
    }
}

/// One line of the step-by-step trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    pub step: u32,
    /// `None` for setup, which runs before the CPUs start.
    pub cpu: Option<u8>,
    pub func: &'static str,
    pub text: String,
}

/// Where a violation was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub violation: Violation,
    pub step: u32,
    pub cpu: Option<u8>,
    pub func: &'static str,
}

/// An executor's bookkeeping of one run: steps taken, the trace, and the
/// first violation (later ones are its consequences).
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub steps: u32,
    pub trace: Option<Vec<TraceEvent>>,
    pub detected: Option<Detected>,
}

impl Record {
    pub fn new(tracing: bool) -> Record {
        Record {
            steps: 0,
            trace: tracing.then(Vec::new),
            detected: None,
        }
    }

    pub fn halted(&self) -> bool {
        self.detected.is_some()
    }

    /// Account a step that ran `result`: number it, stamp the lines it
    /// traced, and record its violation.
    pub fn finish_step(
        &mut self,
        m: &mut Machine,
        cpu: CpuId,
        func: &'static str,
        result: Result<(), Violation>,
    ) -> KResult<()> {
        self.steps += 1;
        self.take_lines(m, cpu, func);
        result.map_err(|v| {
            self.detect(cpu, func, v);
            Halt
        })
    }

    /// Stamp the lines the machine traced since the last call.
    pub fn take_lines(&mut self, m: &mut Machine, cpu: CpuId, func: &'static str) {
        if let Some(t) = self.trace.as_mut() {
            for text in m.trace.drain() {
                t.push(TraceEvent {
                    step: self.steps,
                    cpu: cpu.get(),
                    func,
                    text,
                });
            }
        }
    }

    /// Record the first violation.
    pub fn detect(&mut self, cpu: CpuId, func: &'static str, violation: Violation) {
        if self.detected.is_some() {
            return;
        }
        if let Some(t) = self.trace.as_mut() {
            t.push(TraceEvent {
                step: self.steps,
                cpu: cpu.get(),
                func,
                text: format!(
                    "VIOLATION {}: {}",
                    violation.oracle.name(),
                    violation.detail
                ),
            });
        }
        self.detected = Some(Detected {
            violation,
            step: self.steps,
            cpu: cpu.get(),
            func,
        });
    }
}

/// Runs steps one after another on a machine it borrows: the setup of a
/// scenario, and the model's unit tests. A step that would block can never
/// be woken (nothing else runs), which is a deadlock.
pub struct Sequential<'m> {
    cfg: Config,
    state: RefCell<(&'m mut Machine, Record)>,
}

impl<'m> Sequential<'m> {
    pub fn new(m: &'m mut Machine, record: Record) -> Sequential<'m> {
        Sequential {
            cfg: m.cfg,
            state: RefCell::new((m, record)),
        }
    }

    pub fn cpu(&self, id: CpuId) -> Cpu<'_> {
        Cpu::new(id, self)
    }

    /// The bookkeeping so far.
    pub fn into_record(self) -> Record {
        self.state.into_inner().1
    }

    /// Read the machine between steps.
    pub fn with<T>(&self, f: impl FnOnce(&Machine) -> T) -> T {
        f(self.state.borrow().0)
    }

    /// The first violation so far.
    pub fn detected(&self) -> Option<Detected> {
        self.state.borrow().1.detected.clone()
    }
}

impl Executor for Sequential<'_> {
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
        let mut guard = self.state.borrow_mut();
        let (m, record) = &mut *guard;
        if record.halted() {
            return Err(Halt);
        }
        let result = if ready.is_some_and(|r| !r(m)) {
            Err(Violation {
                oracle: Oracle::Deadlock,
                detail: format!("{cpu} blocks in {func}() with no other CPU running to wake it"),
            })
        } else {
            body(m)
        };
        record.finish_step(m, cpu, func, result)
    }
}
