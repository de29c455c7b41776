//! Schedulers that decide only where the model has a real choice.
//!
//! Task 0 is the harness's main thread (it spawns the CPUs and joins them);
//! task `i + 1` is CPU `i`. The main thread always runs when it can, so a
//! *decision* is a point where two or more CPUs are runnable, and a schedule
//! is the list of CPUs chosen at decisions. Any shuttle scheduler can be
//! wrapped in [`Recording`], whose log replays exactly under
//! [`InputScheduler`].

use shuttle::scheduler::{Schedule, Scheduler, Task, TaskId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The CPUs chosen at each decision of the running execution.
pub type ScheduleLog = Arc<Mutex<Vec<u8>>>;

const MAIN_TASK: usize = 0;

pub fn cpu_of(task: TaskId) -> u8 {
    (usize::from(task) - 1) as u8
}

enum Decision {
    Forced(TaskId),
    Choose(Vec<TaskId>),
}

fn classify(runnable: &[&Task]) -> Decision {
    if let Some(main) = runnable.iter().find(|t| usize::from(t.id()) == MAIN_TASK) {
        return Decision::Forced(main.id());
    }
    match runnable {
        [only] => Decision::Forced(only.id()),
        _ => Decision::Choose(runnable.iter().map(|t| t.id()).collect()),
    }
}

fn push(log: &ScheduleLog, task: TaskId) {
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(cpu_of(task));
}

/// Takes each decision from a list carried in the scenario: the CPU to run,
/// or the next runnable CPU after it. When the list runs out, the running
/// CPU continues while it can (then the lowest runnable CPU).
pub struct InputScheduler {
    choices: Vec<u8>,
    pos: usize,
    started: bool,
    log: ScheduleLog,
}

impl InputScheduler {
    pub fn new(choices: Vec<u8>, log: ScheduleLog) -> Self {
        InputScheduler {
            choices,
            pos: 0,
            started: false,
            log,
        }
    }
}

impl Scheduler for InputScheduler {
    fn new_execution(&mut self) -> Option<Schedule> {
        if std::mem::replace(&mut self.started, true) {
            return None;
        }
        Some(Schedule::new(0))
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        _: bool,
    ) -> Option<TaskId> {
        let ids = match classify(runnable) {
            Decision::Forced(t) => return Some(t),
            Decision::Choose(ids) => ids,
        };
        let pick = match self.choices.get(self.pos) {
            Some(&want) => {
                self.pos += 1;
                *ids.iter()
                    .min_by_key(|&&t| cpu_of(t).wrapping_sub(want))
                    .expect("a decision has runnable CPUs")
            }
            None => current.filter(|c| ids.contains(c)).unwrap_or(ids[0]),
        };
        push(&self.log, pick);
        Some(pick)
    }

    fn next_u64(&mut self) -> u64 {
        0
    }
}

/// Wraps a shuttle scheduler (random, PCT, DFS): forced moves are made
/// without it, decisions are delegated and logged. Stops starting new
/// executions once `stop` is set.
pub struct Recording<S> {
    inner: S,
    log: ScheduleLog,
    stop: Arc<AtomicBool>,
}

impl<S: Scheduler> Recording<S> {
    pub fn new(inner: S, log: ScheduleLog, stop: Arc<AtomicBool>) -> Self {
        Recording { inner, log, stop }
    }
}

impl<S: Scheduler> Scheduler for Recording<S> {
    fn new_execution(&mut self) -> Option<Schedule> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.inner.new_execution()
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        yielding: bool,
    ) -> Option<TaskId> {
        match classify(runnable) {
            Decision::Forced(t) => Some(t),
            Decision::Choose(_) => {
                let t = self.inner.next_task(runnable, current, yielding)?;
                push(&self.log, t);
                Some(t)
            }
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
}
