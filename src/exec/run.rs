//! One execution of a scenario under a shuttle scheduler.

use super::cpu::{Cpu, Shared, lock};
use super::schedulers::{InputScheduler, Recording, ScheduleLog};
use crate::model::kcov::Coverage;
use crate::model::machine::{Detected, TraceEvent};
use crate::model::{Machine, Oracle, Violation, oracle};
use crate::scenario::Scenario;
use shuttle::scheduler::{DfsScheduler, PctScheduler, RandomScheduler, Scheduler};
use shuttle::{FailurePersistence, MaxSteps, Runner};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

static IN_EXECUTION: AtomicBool = AtomicBool::new(false);

/// Silence the panic messages of executions that shuttle fails (deadlock,
/// step bound): the harness reports those as verdicts. Other panics print.
pub fn quiet_shuttle_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_EXECUTION.load(Ordering::Relaxed) {
            previous(info);
        }
    }));
}

/// Scheduling points one execution may take before it counts as a livelock.
pub const STEP_BOUND: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Violation(Detected),
    /// The model itself panicked: a harness bug, not a finding.
    ModelPanic(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The CPU chosen at each decision, as the input scheduler replays it.
    pub schedule: Vec<u8>,
    /// Model steps executed.
    pub steps: u32,
    pub trace: Vec<TraceEvent>,
    /// Coverage features, when asked for (see `model::kcov::Coverage`).
    pub features: Vec<u64>,
}

impl Outcome {
    pub fn violation(&self) -> Option<&Detected> {
        match &self.verdict {
            Verdict::Violation(d) => Some(d),
            _ => None,
        }
    }

    pub fn oracle(&self) -> Option<Oracle> {
        self.violation().map(|d| d.violation.oracle)
    }
}

type MachineSlot = Arc<Mutex<Option<Arc<Mutex<Machine>>>>>;
type Report = Arc<dyn Fn(Outcome) + Send + Sync>;

fn outcome_of(m: &mut Machine, log: &ScheduleLog) -> Outcome {
    Outcome {
        features: Vec::new(),
        verdict: match &m.detected {
            Some(d) => Verdict::Violation(d.clone()),
            None => Verdict::Clean,
        },
        schedule: log.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        steps: m.step,
        trace: m.trace.take().unwrap_or_default(),
    }
}

/// What an execution records besides its verdict.
#[derive(Debug, Clone, Copy, Default)]
struct Observe {
    tracing: bool,
    /// Interleaving 2-grams and struct-page mapping states.
    coverage: bool,
    /// Conflicting struct-page accesses too: a denser signal that helps
    /// the shuttle schedulers keep scenarios where CPUs meet, but drowns a
    /// byte-mutating search in features.
    conflicts: bool,
}

/// The closure shuttle runs: boot, setup, spawn one thread per CPU, join,
/// then check quiescence and report.
fn body(
    scenario: Arc<Scenario>,
    observe: Observe,
    slot: MachineSlot,
    log: ScheduleLog,
    report: Report,
) -> impl Fn() + Send + Sync + 'static {
    move || {
        let machine = Arc::new(Mutex::new(Machine::new(
            scenario.config,
            scenario.cpus.len(),
            observe.tracing,
        )));
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(machine.clone());
        if observe.coverage {
            let mut m = lock(&machine);
            m.coverage = Some(Coverage::new(m.nr_pfns(), observe.conflicts));
        }
        let shared = Shared::new(machine.clone());
        let boot = Cpu::new(None, shared.clone());
        for op in &scenario.setup {
            if op.run(&boot).is_err() {
                break;
            }
        }
        lock(&machine).flush_tlb_all();
        let handles: Vec<_> = (0..scenario.cpus.len())
            .map(|i| {
                let cpu = Cpu::new(Some(i as u8), shared.clone());
                let scenario = scenario.clone();
                shuttle::thread::spawn(move || {
                    for op in &scenario.cpus[i] {
                        if op.run(&cpu).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        let mut m = lock(&machine);
        if !m.halted() {
            m.cur_cpu = None;
            m.cur_func = "quiescence";
            if let Err(v) = oracle::check_quiescent(&m) {
                m.detect(v);
            }
        }
        let mut outcome = outcome_of(&mut m, &log);
        let coverage = m.coverage.take();
        drop(m);
        if let Some(c) = coverage {
            outcome.features = c.into_features();
        }
        report(outcome);
    }
}

fn shuttle_config() -> shuttle::Config {
    let mut c = shuttle::Config::new();
    c.max_steps = MaxSteps::FailAfter(STEP_BOUND);
    c.failure_persistence = FailurePersistence::None;
    c.silence_warnings = true;
    c
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

/// Turn a shuttle failure (deadlock, step bound) into a verdict on the
/// execution that was running.
fn failed_outcome(message: String, slot: &MachineSlot, log: &ScheduleLog) -> Outcome {
    let machine = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let oracle = if message.contains("deadlock") {
        Some(Oracle::Deadlock)
    } else if message.contains("max_steps") || message.contains("step bound") {
        Some(Oracle::StepLimit)
    } else {
        None
    };
    let Some(machine) = machine else {
        return Outcome {
            verdict: Verdict::ModelPanic(message),
            schedule: Vec::new(),
            steps: 0,
            trace: Vec::new(),
            features: Vec::new(),
        };
    };
    let mut m = lock(&machine);
    match oracle {
        Some(oracle) => {
            m.cur_cpu = None;
            m.cur_func = "shuttle";
            m.detect(Violation {
                oracle,
                detail: message.lines().next().unwrap_or_default().to_string(),
            });
            outcome_of(&mut m, log)
        }
        None => {
            let mut o = outcome_of(&mut m, log);
            o.verdict = Verdict::ModelPanic(message);
            o
        }
    }
}

/// Run `scheduler` over `scenario` until it stops or `report` says to stop.
fn run_with<S: Scheduler + 'static>(
    scenario: &Scenario,
    scheduler: S,
    observe: Observe,
    log: ScheduleLog,
    mut on_outcome: impl FnMut(Outcome) -> bool + Send + 'static,
    stop: Arc<AtomicBool>,
) -> Option<Outcome> {
    let slot: MachineSlot = Arc::default();
    let sink = Arc::new(Mutex::new(move |o: Outcome| on_outcome(o)));
    let stop2 = stop.clone();
    let report: Report = Arc::new(move |o| {
        let keep_going = (sink.lock().unwrap_or_else(|e| e.into_inner()))(o);
        if !keep_going {
            stop2.store(true, Ordering::Relaxed);
        }
    });
    let f = body(
        Arc::new(scenario.clone()),
        observe,
        slot.clone(),
        log.clone(),
        report,
    );
    IN_EXECUTION.store(true, Ordering::Relaxed);
    let result = catch_unwind(AssertUnwindSafe(|| {
        Runner::new(scheduler, shuttle_config()).run(f)
    }));
    IN_EXECUTION.store(false, Ordering::Relaxed);
    match result {
        Ok(_) => None,
        Err(payload) => Some(failed_outcome(panic_message(payload.as_ref()), &slot, &log)),
    }
}

/// Replay `scenario.schedule` with the input-driven scheduler: one
/// deterministic execution.
pub fn run_input(scenario: &Scenario, tracing: bool) -> Outcome {
    input_execution(
        scenario,
        Observe {
            tracing,
            ..Observe::default()
        },
    )
}

/// [`run_input`], recording interleaving-coverage features.
pub fn run_input_covered(scenario: &Scenario) -> Outcome {
    input_execution(
        scenario,
        Observe {
            coverage: true,
            ..Observe::default()
        },
    )
}

fn input_execution(scenario: &Scenario, observe: Observe) -> Outcome {
    let log = ScheduleLog::default();
    let result: Arc<Mutex<Option<Outcome>>> = Arc::default();
    let r = result.clone();
    let sched = InputScheduler::new(scenario.schedule.clone(), log.clone());
    let failed = run_with(
        scenario,
        sched,
        observe,
        log,
        move |o| {
            *r.lock().unwrap_or_else(|e| e.into_inner()) = Some(o);
            false
        },
        Arc::default(),
    );
    if let Some(o) = failed {
        return o;
    }
    let o = result.lock().unwrap_or_else(|e| e.into_inner()).take();
    o.expect("the input scheduler runs exactly one execution")
}

/// Which shuttle scheduler explores interleavings of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShuttleEngine {
    Random,
    Pct { depth: usize },
    Dfs,
}

/// What exploring one scenario with a shuttle scheduler produced.
#[derive(Debug, Clone, Default)]
pub struct Explored {
    pub executions: usize,
    /// The first non-clean outcome; its schedule replays under
    /// [`run_input`].
    pub failure: Option<Outcome>,
    /// The union of the executions' coverage features, if asked for.
    pub features: Vec<u64>,
    /// The decisions of the one execution of a schedule-driven run (empty
    /// for the shuttle schedulers, which run many).
    pub schedule: Vec<u8>,
}

/// Explore up to `executions` interleavings of `scenario` with a shuttle
/// scheduler, stopping at the first violation.
pub fn explore_shuttle(
    scenario: &Scenario,
    engine: ShuttleEngine,
    seed: u64,
    executions: usize,
    coverage: bool,
) -> Explored {
    let observe = Observe {
        tracing: false,
        coverage,
        conflicts: coverage,
    };
    // With one CPU there is nothing to schedule (and PCT needs a decision).
    if scenario.cpus.len() < 2 {
        let mut o = input_execution(scenario, observe);
        return Explored {
            executions: 1,
            features: std::mem::take(&mut o.features),
            failure: (o.verdict != Verdict::Clean).then_some(o),
            ..Explored::default()
        };
    }
    let log = ScheduleLog::default();
    let stop = Arc::new(AtomicBool::new(false));
    let acc: Arc<Mutex<Explored>> = Arc::default();
    let a = acc.clone();
    let on_outcome = move |o: Outcome| {
        let mut acc = a.lock().unwrap_or_else(|e| e.into_inner());
        acc.executions += 1;
        acc.features.extend_from_slice(&o.features);
        if matches!(o.verdict, Verdict::Clean) {
            return true;
        }
        acc.failure = Some(o);
        false
    };
    let failed = match engine {
        ShuttleEngine::Random => run_with(
            scenario,
            Recording::new(
                RandomScheduler::new_from_seed(seed, executions),
                log.clone(),
                stop.clone(),
            ),
            observe,
            log,
            on_outcome,
            stop,
        ),
        ShuttleEngine::Pct { depth } => run_with(
            scenario,
            Recording::new(
                PctScheduler::new_from_seed(seed, depth, executions),
                log.clone(),
                stop.clone(),
            ),
            observe,
            log,
            on_outcome,
            stop,
        ),
        ShuttleEngine::Dfs => run_with(
            scenario,
            Recording::new(
                DfsScheduler::new(Some(executions), false),
                log.clone(),
                stop.clone(),
            ),
            observe,
            log,
            on_outcome,
            stop,
        ),
    };
    let mut acc = std::mem::take(&mut *acc.lock().unwrap_or_else(|e| e.into_inner()));
    if let Some(o) = failed {
        acc.executions += 1;
        acc.failure = Some(o);
    }
    acc.features.sort_unstable();
    acc.features.dedup();
    acc
}

/// Explore `executions` interleavings of `scenario` with a shuttle
/// scheduler. Returns how many ran and the first violating outcome, whose
/// schedule replays under [`run_input`].
pub fn run_shuttle(
    scenario: &Scenario,
    engine: ShuttleEngine,
    seed: u64,
    executions: usize,
) -> (usize, Option<Outcome>) {
    let e = explore_shuttle(scenario, engine, seed, executions, false);
    (e.executions, e.failure)
}
