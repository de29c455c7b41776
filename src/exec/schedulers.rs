//! Schedulers that decide only where the model has a real choice.
//!
//! Task 0 is the harness's main thread (it runs the setup, spawns the CPUs
//! and joins them); task `i + 1` is CPU `i`. The main thread always runs
//! when it can, so a *decision* is a point where two or more CPUs are
//! runnable, and a schedule is the list of CPUs chosen at decisions. Every
//! scheduler sees only decisions, and the batch scheduler logs each one, so
//! any execution replays exactly under [`InputScheduler`].

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shuttle::scheduler::{Schedule, Scheduler, Task, TaskId};

const MAIN_TASK: usize = 0;

pub fn cpu_of(task: TaskId) -> u8 {
    (usize::from(task) - 1) as u8
}

/// What a scheduling point is.
pub enum Decision {
    /// One task can run (or the main thread, which always runs first).
    Forced(TaskId),
    /// Two or more CPUs can run.
    Choose,
}

pub fn classify(runnable: &[&Task]) -> Decision {
    if let Some(main) = runnable.iter().find(|t| usize::from(t.id()) == MAIN_TASK) {
        return Decision::Forced(main.id());
    }
    match runnable {
        [only] => Decision::Forced(only.id()),
        _ => Decision::Choose,
    }
}

/// Takes each decision from a list carried in the scenario: the CPU to run,
/// or the next runnable CPU after it. When the list runs out, the running
/// CPU continues while it can (then the lowest runnable CPU). One
/// execution.
pub struct InputScheduler {
    choices: Vec<u8>,
    pos: usize,
    started: bool,
}

impl InputScheduler {
    pub fn new(choices: Vec<u8>) -> Self {
        InputScheduler {
            choices,
            pos: 0,
            started: false,
        }
    }

    /// [`InputScheduler::choose`] over shuttle's tasks.
    fn choose_task(
        want: Option<u8>,
        runnable: &[&Task],
        current: Option<TaskId>,
    ) -> Option<TaskId> {
        let cpus = runnable.iter().map(|t| cpu_of(t.id()));
        let current = current.filter(|t| usize::from(*t) != MAIN_TASK).map(cpu_of);
        let pick = InputScheduler::choose(want, cpus, current)?;
        Some(TaskId::from(pick as usize + 1))
    }

    /// The rule: the wanted CPU, or the first runnable one after it
    /// (wrapping); past the list, the running CPU, else the lowest.
    pub fn choose(
        want: Option<u8>,
        runnable: impl Iterator<Item = u8> + Clone,
        current: Option<u8>,
    ) -> Option<u8> {
        match want {
            Some(want) => runnable.min_by_key(|&c| c.wrapping_sub(want)),
            None => current
                .filter(|&c| runnable.clone().any(|r| r == c))
                .or_else(|| runnable.min()),
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
        let want = self.choices.get(self.pos).copied();
        if want.is_some() {
            self.pos += 1;
        }
        InputScheduler::choose_task(want, runnable, current)
    }

    fn next_u64(&mut self) -> u64 {
        0
    }
}

/// Replays a cut of a recorded schedule, then lets `inner` decide: an
/// exploration that starts from where an earlier execution got (a near
/// miss that reached a rare state), so that the preemptions still missing
/// are placed in the rest of the execution only. Each execution cuts the
/// recording at another point short of its end, drawn from `seed`.
pub struct PrefixThen {
    prefix: Vec<u8>,
    cut: usize,
    pos: usize,
    rng: StdRng,
    inner: Box<dyn Scheduler + Send>,
}

impl PrefixThen {
    pub fn new(prefix: Vec<u8>, seed: u64, inner: Box<dyn Scheduler + Send>) -> Self {
        PrefixThen {
            prefix,
            cut: 0,
            pos: 0,
            rng: StdRng::seed_from_u64(seed),
            inner,
        }
    }
}

impl Scheduler for PrefixThen {
    fn new_execution(&mut self) -> Option<Schedule> {
        let schedule = self.inner.new_execution()?;
        // Short of the whole recording: the inner scheduler must see at
        // least one decision of every execution (PCT panics otherwise).
        self.cut = self.rng.gen_range(0..self.prefix.len().max(1));
        self.pos = 0;
        Some(schedule)
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        yielding: bool,
    ) -> Option<TaskId> {
        if self.pos >= self.cut {
            return self.inner.next_task(runnable, current, yielding);
        }
        let want = self.prefix[self.pos];
        self.pos += 1;
        InputScheduler::choose_task(Some(want), runnable, current)
    }

    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::InputScheduler;

    /// The choice rule the scenario format documents.
    #[test]
    fn input_scheduler_takes_the_wanted_cpu_or_the_next_runnable_one() {
        let choose = |want, runnable: &[u8], current| {
            InputScheduler::choose(want, runnable.iter().copied(), current).unwrap()
        };
        // CPU 1 wanted and runnable.
        assert_eq!(choose(Some(1), &[0, 1, 2], Some(0)), 1);
        // CPU 1 wanted but blocked: the next runnable after it, CPU 2.
        assert_eq!(choose(Some(1), &[0, 2], Some(0)), 2);
        // CPU 2 wanted but blocked: wrap around to CPU 0.
        assert_eq!(choose(Some(2), &[0, 1], Some(1)), 0);
        // Past the list, the running CPU continues ...
        assert_eq!(choose(None, &[0, 1], Some(1)), 1);
        // ... unless it cannot, then the lowest runnable CPU.
        assert_eq!(choose(None, &[0, 2], Some(1)), 0);
        assert_eq!(choose(None, &[1, 2], None), 1);
    }
}
