//! Running jobs: many executions of many scenarios, at the speed of the
//! scheduler.
//!
//! shuttle's `Runner` makes a continuation pool per `run`, so a runner per
//! execution would allocate fresh coroutine stacks (mmap, mprotect,
//! munmap) every time. Here each thread keeps one pool and one booted
//! machine for its whole life, and runs every execution through shuttle's
//! `Execution` inside that pool: a batch, a single replay (a fuzz target's
//! input), the minimizer's candidates all reuse the stacks and the machine.
//! The machine is reset to its booted state between executions (no
//! allocation); a job with many executions runs its (sequential) setup
//! once. A panic in one execution is reported as that job's verdict, and
//! the batch carries on.

use super::executor::{ExecState, STEP_BOUND, SharedState, ShuttleExecutor};
use super::guard;
use super::schedulers::{Decision, InputScheduler, PrefixThen, classify, cpu_of};
use crate::model::ctx::{Cpu, CpuId, Detected, Record, Sequential, TraceEvent};
use crate::model::kcov::Coverage;
use crate::model::{Config, Machine, Oracle, Violation, hugetlb, oracle};
use crate::scenario::Scenario;
use shuttle::scheduler::{
    DfsScheduler, PctScheduler, RandomScheduler, Schedule, Scheduler, Task, TaskId,
};
use shuttle::{FailurePersistence, MaxSteps, Runner};
use shuttle_engine::runtime::execution::Execution;
use shuttle_engine::runtime::thread::continuation::{CONTINUATION_POOL, ContinuationPool};
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::rc::Rc;
use std::sync::{Arc, Mutex, Once};

/// What an execution records besides its verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observe {
    pub tracing: bool,
    /// Interleaving 2-grams and struct-page mapping states.
    pub coverage: bool,
    /// Conflicting struct-page accesses too: a denser signal that helps
    /// the shuttle schedulers keep scenarios where CPUs meet, but drowns a
    /// byte-mutating search in features.
    pub conflicts: bool,
    /// The reachability properties the execution got to.
    pub reach: bool,
}

/// How a job's interleavings are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// One execution of the scenario's own schedule.
    Replay,
    /// shuttle's random scheduler.
    Random { seed: u64, executions: usize },
    /// shuttle's PCT scheduler.
    Pct {
        seed: u64,
        depth: usize,
        executions: usize,
    },
    /// shuttle's bounded DFS.
    Dfs { executions: usize },
}

impl Plan {
    fn executions(self) -> usize {
        match self {
            Plan::Replay => 1,
            Plan::Random { executions, .. }
            | Plan::Pct { executions, .. }
            | Plan::Dfs { executions } => executions,
        }
    }

    /// The plan's seed, for what is drawn beside its scheduler.
    fn seed(self) -> u64 {
        match self {
            Plan::Random { seed, .. } | Plan::Pct { seed, .. } => seed,
            Plan::Replay | Plan::Dfs { .. } => 0,
        }
    }

    fn scheduler(self, scenario: &Scenario) -> Box<dyn Scheduler + Send> {
        match self {
            Plan::Replay => Box::new(InputScheduler::new(scenario.schedule.clone())),
            Plan::Random { seed, executions } => {
                Box::new(RandomScheduler::new_from_seed(seed, executions))
            }
            Plan::Pct {
                seed,
                depth,
                executions,
            } => Box::new(PctScheduler::new_from_seed(seed, depth, executions)),
            Plan::Dfs { executions } => Box::new(DfsScheduler::new(Some(executions), false)),
        }
    }
}

/// One scenario to explore.
#[derive(Debug, Clone)]
pub struct Job {
    pub scenario: Arc<Scenario>,
    pub plan: Plan,
    pub observe: Observe,
    /// Each execution replays a cut of `scenario.schedule` before the
    /// plan's scheduler decides ([`PrefixThen`]).
    pub from_schedule: bool,
}

impl Job {
    pub fn new(scenario: Arc<Scenario>, plan: Plan, observe: Observe) -> Job {
        // With one CPU there is nothing to schedule (and PCT needs a
        // decision).
        let plan = if scenario.cpus.len() < 2 {
            Plan::Replay
        } else {
            plan
        };
        Job {
            scenario,
            plan,
            observe,
            from_schedule: false,
        }
    }

    /// Explore from cuts of the scenario's schedule (a recorded execution)
    /// rather than from the start: random and PCT plans. A replay already
    /// follows it whole; DFS backtracks over its own decisions, from the
    /// start.
    pub fn from_schedule(mut self) -> Job {
        self.from_schedule = matches!(self.plan, Plan::Random { .. } | Plan::Pct { .. });
        self
    }

    pub fn replay(scenario: Arc<Scenario>, observe: Observe) -> Job {
        Job::new(scenario, Plan::Replay, observe)
    }
}

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
    /// Model steps executed, setup included.
    pub steps: u32,
    /// Of those, the setup's (run before the CPUs start, not scheduling
    /// points).
    pub setup_steps: u32,
    pub trace: Vec<TraceEvent>,
    /// Coverage features, when asked for (see `model::kcov::Coverage`).
    pub features: Vec<u64>,
    /// Bits of `oracle::REACHABLE` the execution got to, when asked for.
    pub reached: u64,
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

/// What exploring one job produced.
#[derive(Debug, Clone, Default)]
pub struct Explored {
    pub executions: usize,
    /// Model steps over every execution.
    pub steps: u64,
    /// Of those, the steps the CPUs took (each a scheduling point).
    pub cpu_steps: u64,
    /// The first non-clean outcome; its schedule replays under
    /// [`Plan::Replay`].
    pub failure: Option<Outcome>,
    /// The one outcome of a replay.
    pub replayed: Option<Outcome>,
    /// The union of the executions' coverage features, sorted.
    pub features: Vec<u64>,
    /// For a job exploring many interleavings with coverage: per feature
    /// (aligned with `features`), the first execution that reached it, and
    /// each execution's schedule, so that a near miss can be explored from
    /// where it got to.
    pub first_execution: Vec<u32>,
    pub schedules: Vec<Vec<u8>>,
    /// The union of the reachability properties.
    pub reached: u64,
}

/// The decisions of the running execution.
type ScheduleLog = Arc<Mutex<Vec<u8>>>;

/// Configurations a thread keeps booted: the adaptive hunt's arms draw
/// CPU counts and memory sizes per scenario, and a single slot would boot
/// (and copy every frame) again at every change. With 8, each switch of
/// arms booted the next arm's configurations again; 32 keep several arms'
/// (the input engine's default hunt ran 14% more executions per second),
/// at about 270 KiB each.
const SLOTS: usize = 32;

/// One configuration's booted machine, and the state its executions run
/// on (reset from the booted machine or a job's setup by copying only the
/// frames an execution dirtied, while it stays with one source).
struct Slot {
    config: Config,
    nr_cpus: usize,
    booted: Machine,
    exec: Option<SharedState>,
    /// What the execution state's machine was last reset from.
    source: Source,
}

/// What a thread keeps from one run of jobs to the next: the slots of the
/// last configurations, most recently used last.
#[derive(Default)]
struct Cache {
    slots: Vec<Slot>,
}

impl Cache {
    /// The slot of `config` with `nr_cpus` CPUs, booted now if there is
    /// none; it becomes the most recently used.
    fn slot(&mut self, config: Config, nr_cpus: usize) -> &mut Slot {
        // Boot reads the VMA layout only into the processes, which
        // `Machine::set_vmas` sets up for each execution: one slot serves
        // every layout the default hunt draws.
        let config = Config {
            vmas: Config::default().vmas,
            ..config
        };
        match self
            .slots
            .iter()
            .position(|s| s.config == config && s.nr_cpus == nr_cpus)
        {
            Some(i) => {
                let slot = self.slots.remove(i);
                self.slots.push(slot);
            }
            None => {
                if self.slots.len() == SLOTS {
                    self.slots.remove(0);
                }
                self.slots.push(Slot {
                    config,
                    nr_cpus,
                    booted: Machine::new(config, nr_cpus),
                    exec: None,
                    source: Source::None,
                });
            }
        }
        self.slots.last_mut().expect("pushed above")
    }
}

/// A machine an execution starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Source {
    #[default]
    None,
    Booted,
    /// The setup of the job with this serial number.
    AfterSetup(u64),
}

thread_local! {
    /// Coroutine stacks, reused by every execution on this thread.
    static POOL: ContinuationPool = ContinuationPool::new();
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The running job, shared by the run loop and the body.
struct Running {
    job: Option<Job>,
    /// The job's machine after its setup, when it has more than one
    /// execution.
    after_setup: Option<(Machine, Record)>,
    cache: Cache,
    result: Explored,
    /// An execution failed: start no more of the job's.
    stop: bool,
    /// Numbers jobs, for `Source::AfterSetup`.
    serial: u64,
    /// For [`Explored::first_execution`]: each execution's features, tagged
    /// with its index, instead of `result.features`.
    tagged: Vec<(u64, u32)>,
}

impl Running {
    fn job(&self) -> &Job {
        self.job.as_ref().expect("a job is running")
    }

    fn report(&mut self, o: Outcome) {
        let replay = self.job().plan == Plan::Replay;
        let failed = o.verdict != Verdict::Clean;
        self.stop |= failed;
        let track = !replay && self.job().observe.coverage;
        let r = &mut self.result;
        if track {
            let at = r.executions as u32;
            self.tagged.extend(o.features.iter().map(|&f| (f, at)));
            r.schedules.push(o.schedule.clone());
        } else if r.features.is_empty() {
            r.features.clone_from(&o.features);
        } else {
            r.features.extend_from_slice(&o.features);
        }
        r.executions += 1;
        r.steps += o.steps as u64;
        r.cpu_steps += (o.steps - o.setup_steps) as u64;
        r.reached |= o.reached;
        if replay {
            if failed && r.failure.is_none() {
                r.failure = Some(o.clone());
            }
            r.replayed = Some(o);
        } else if failed && r.failure.is_none() {
            r.failure = Some(o);
        }
    }

    /// The job's result, its features sorted and deduplicated (each with
    /// the first execution that reached it, when tracked).
    fn finish(&mut self) -> Explored {
        let mut r = std::mem::take(&mut self.result);
        let mut tagged = std::mem::take(&mut self.tagged);
        if tagged.is_empty() {
            r.features.sort_unstable();
            r.features.dedup();
        } else {
            tagged.sort_unstable();
            tagged.dedup_by_key(|t| t.0);
            (r.features, r.first_execution) = tagged.into_iter().unzip();
        }
        r
    }
}

/// A job's scheduler: forced moves are made without asking, each decision
/// is delegated to the plan's scheduler and logged.
struct JobScheduler {
    inner: Box<dyn Scheduler + Send>,
    log: ScheduleLog,
}

impl Scheduler for JobScheduler {
    fn new_execution(&mut self) -> Option<Schedule> {
        guard(&self.log).clear();
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
            Decision::Choose => {
                let t = self.inner.next_task(runnable, current, yielding)?;
                guard(&self.log).push(cpu_of(t));
                Some(t)
            }
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
}

/// Prepare the running execution's state: the booted machine of its
/// configuration, then its setup (run now, or copied from the job's first
/// execution). Returns the scenario and the state.
fn begin_execution(running: &Mutex<Running>) -> (Arc<Scenario>, SharedState) {
    let mut r = guard(running);
    let r = &mut *r;
    let job = r.job().clone();
    let s = &job.scenario;
    let nr_cpus = s.cpus.len();
    let serial = r.serial;
    let slot = r.cache.slot(s.config, nr_cpus);
    let exec = slot
        .exec
        .get_or_insert_with(|| {
            Arc::new(Mutex::new(ExecState {
                machine: slot.booted.clone(),
                record: Record::default(),
                setup_steps: 0,
                running: 0,
                waiters: 0,
            }))
        })
        .clone();
    let mut st = guard(&exec);
    if let Some((m, rec)) = &r.after_setup {
        let source = Source::AfterSetup(serial);
        st.machine.reset_to(m, slot.source == source);
        slot.source = source;
        st.record.clone_from(rec);
    } else {
        st.machine
            .reset_to(&slot.booted, slot.source == Source::Booted);
        if st.machine.cfg.vmas != s.config.vmas {
            st.machine.set_vmas(s.config);
        }
        slot.source = Source::Booted;
        st.machine.trace.set_enabled(job.observe.tracing);
        st.machine.kcov = None;
        st.machine.reached = job.observe.reach.then_some(0);
        let st = &mut *st;
        let seq = Sequential::new(&mut st.machine, Record::new(job.observe.tracing));
        let boot = seq.cpu(CpuId::SETUP);
        for op in &s.setup {
            if op.run(&boot).is_err() {
                break;
            }
        }
        st.record = seq.into_record();
        st.machine.flush_tlb_all();
        if job.plan.executions() > 1 {
            r.after_setup = Some((st.machine.clone(), st.record.clone()));
        }
    }
    st.setup_steps = st.record.steps;
    if job.observe.coverage {
        st.machine.kcov = Some(Coverage::new(st.machine.nr_pfns(), job.observe.conflicts));
    }
    st.running = nr_cpus as u32;
    st.waiters = 0;
    drop(st);
    (job.scenario.clone(), exec)
}

/// The outcome of the execution whose state this is.
fn outcome_of(st: &mut ExecState, log: &ScheduleLog) -> Outcome {
    Outcome {
        verdict: match &st.record.detected {
            Some(d) => Verdict::Violation(d.clone()),
            None => Verdict::Clean,
        },
        schedule: guard(log).clone(),
        steps: st.record.steps,
        setup_steps: st.setup_steps,
        trace: st.record.trace.take().unwrap_or_default(),
        features: st
            .machine
            .kcov
            .take()
            .map(Coverage::into_features)
            .unwrap_or_default(),
        reached: st.machine.reached.unwrap_or(0),
    }
}

/// The closure shuttle runs for every execution: set up, spawn one thread
/// per CPU, join, check quiescence, report.
fn body(running: Arc<Mutex<Running>>, log: ScheduleLog) -> impl FnOnce() + Send + 'static {
    move || {
        let (scenario, state) = begin_execution(&running);
        let ex = Arc::new(ShuttleExecutor::new(scenario.config, state.clone()));
        let handles: Vec<_> = (0..scenario.cpus.len())
            .map(|i| {
                let ex = ex.clone();
                let scenario = scenario.clone();
                shuttle::thread::spawn(move || {
                    let id = CpuId::cpu(i as u8);
                    let cpu = Cpu::new(id, &*ex);
                    for op in &scenario.cpus[i] {
                        if op.run(&cpu).is_err() {
                            break;
                        }
                    }
                    ex.cpu_finished(id);
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        let mut st = guard(&state);
        // flush_work(&free_hpage_work), only when work is queued: no extra
        // step otherwise.
        if !st.record.halted() && !st.machine.hstate.hpage_freelist.is_empty() {
            let s = &mut *st;
            let seq = Sequential::new(&mut s.machine, std::mem::take(&mut s.record));
            let _ = hugetlb::flush_free_hpage_work(&seq.cpu(CpuId::SETUP));
            s.record = seq.into_record();
        }
        if !st.record.halted() {
            let s = &mut *st;
            if let Err(v) = oracle::at_quiescence(&mut s.machine) {
                s.record.detect(CpuId::SETUP, "quiescence", v);
            }
        }
        let o = outcome_of(&mut st, &log);
        drop(st);
        guard(&running).report(o);
    }
}

fn shuttle_config() -> shuttle::Config {
    let mut c = shuttle::Config::new();
    // The executor stops an execution at STEP_BOUND model steps; shuttle's
    // own bound, on scheduling points, is only a backstop.
    c.max_steps = MaxSteps::FailAfter(4 * STEP_BOUND as usize);
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

/// What a panic out of shuttle was: its own failures (which the executor
/// detects first, as violations, unless the model misbehaves) by their
/// message, since shuttle reports them only as a panic string; anything
/// else is the model panicking.
pub fn classify_failure(message: &str) -> Option<Oracle> {
    if message.starts_with("deadlock!") || message.contains("deadlock while dropping") {
        Some(Oracle::Deadlock)
    } else if message.starts_with("exceeded max_steps bound")
        || message.contains("exceeded the step bound")
    {
        Some(Oracle::StepLimit)
    } else {
        None
    }
}

/// The verdict on the execution that a panic stopped.
fn failed_outcome(message: String, exec: Option<SharedState>, log: &ScheduleLog) -> Outcome {
    let Some(exec) = exec else {
        return Outcome {
            verdict: Verdict::ModelPanic(message),
            schedule: guard(log).clone(),
            steps: 0,
            setup_steps: 0,
            trace: Vec::new(),
            features: Vec::new(),
            reached: 0,
        };
    };
    let mut st = guard(&exec);
    match classify_failure(&message) {
        Some(oracle) if !st.record.halted() => {
            st.record.detect(
                CpuId::SETUP,
                "shuttle",
                Violation {
                    oracle,
                    detail: message.lines().next().unwrap_or_default().to_string(),
                },
            );
            outcome_of(&mut st, log)
        }
        _ => {
            let mut o = outcome_of(&mut st, log);
            o.verdict = Verdict::ModelPanic(message);
            o
        }
    }
}

thread_local! {
    static IN_EXECUTION: Cell<bool> = const { Cell::new(false) };
}

/// Silence the panic messages of executions (the harness reports them as
/// verdicts) on the thread running them; other panics print. shuttle
/// installs its own hook at its first run, so run once first and wrap it.
pub fn quiet_shuttle_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        Runner::new(RandomScheduler::new(1), shuttle_config()).run(|| {});
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_EXECUTION.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Run every job; one result per job, in order.
pub fn run_jobs(jobs: Vec<Job>) -> Vec<Explored> {
    let log = ScheduleLog::default();
    let config = shuttle_config();
    let running = Arc::new(Mutex::new(Running {
        job: None,
        after_setup: None,
        cache: CACHE.with(|c| {
            let mut cache = std::mem::take(&mut *c.borrow_mut());
            // Job serial numbers start again with this run.
            for slot in &mut cache.slots {
                if matches!(slot.source, Source::AfterSetup(_)) {
                    slot.source = Source::None;
                }
            }
            cache
        }),
        result: Explored::default(),
        stop: false,
        serial: 0,
        tagged: Vec::new(),
    }));
    let mut results = Vec::with_capacity(jobs.len());
    POOL.with(|pool| {
        CONTINUATION_POOL.set(pool, || {
            for job in jobs {
                let scheduler = Rc::new(RefCell::new(JobScheduler {
                    inner: if job.from_schedule {
                        Box::new(PrefixThen::new(
                            job.scenario.schedule.clone(),
                            job.plan.seed(),
                            job.plan.scheduler(&job.scenario),
                        ))
                    } else {
                        job.plan.scheduler(&job.scenario)
                    },
                    log: log.clone(),
                }));
                {
                    let mut r = guard(&running);
                    r.job = Some(job);
                    r.after_setup = None;
                    r.stop = false;
                    r.serial += 1;
                }
                loop {
                    let Some(schedule) = scheduler.borrow_mut().new_execution() else {
                        break;
                    };
                    let f = body(running.clone(), log.clone());
                    IN_EXECUTION.with(|c| c.set(true));
                    let ran = catch_unwind(AssertUnwindSafe(|| {
                        Execution::new(scheduler.clone(), schedule).run(
                            &config,
                            f,
                            Location::caller(),
                        )
                    }));
                    IN_EXECUTION.with(|c| c.set(false));
                    let mut r = guard(&running);
                    if let Err(payload) = ran {
                        // The failed execution's slot is the one used last.
                        let exec = r.cache.slots.last_mut().and_then(|slot| {
                            slot.source = Source::None;
                            slot.exec.take()
                        });
                        let o = failed_outcome(panic_message(payload.as_ref()), exec, &log);
                        r.report(o);
                    }
                    if r.stop {
                        // Run the plan out without executing it: shuttle's
                        // random scheduler reports a failing seed on
                        // stderr if it is dropped early.
                        while scheduler.borrow_mut().inner.new_execution().is_some() {}
                        break;
                    }
                }
                results.push(guard(&running).finish());
            }
        })
    });
    let cache = std::mem::take(&mut guard(&running).cache);
    CACHE.with(|c| *c.borrow_mut() = cache);
    results
}

/// Explore one job.
pub fn run_job(job: Job) -> Explored {
    run_jobs(vec![job]).pop().expect("one job, one result")
}

/// Replay `scenario.schedule` with the input-driven scheduler: one
/// deterministic execution.
pub fn run_input(scenario: &Scenario, tracing: bool) -> Outcome {
    let observe = Observe {
        tracing,
        ..Observe::default()
    };
    replay(scenario, observe)
}

/// One replay of `scenario`, observing what `observe` asks.
pub fn replay(scenario: &Scenario, observe: Observe) -> Outcome {
    run_job(Job::replay(Arc::new(scenario.clone()), observe))
        .replayed
        .expect("a replay runs once")
}

/// Explore `executions` interleavings of `scenario` with a shuttle
/// scheduler, stopping at the first violation. Returns how many ran and the
/// first violating outcome, whose schedule replays under [`run_input`].
pub fn run_shuttle(scenario: &Scenario, plan: Plan) -> (usize, Option<Outcome>) {
    let e = run_job(Job::new(
        Arc::new(scenario.clone()),
        plan,
        Observe::default(),
    ));
    (e.executions, e.failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The panic message of a shuttle run of `f`.
    fn shuttle_failure(f: impl Fn() + Send + Sync + 'static, config: shuttle::Config) -> String {
        quiet_shuttle_panics();
        IN_EXECUTION.with(|c| c.set(true));
        let r = catch_unwind(AssertUnwindSafe(|| {
            Runner::new(RandomScheduler::new_from_seed(1, 10), config).run(f)
        }));
        IN_EXECUTION.with(|c| c.set(false));
        panic_message(r.expect_err("the run fails").as_ref())
    }

    /// shuttle reports its own failures only as panic strings: pin the
    /// match on each, on shuttle's real messages.
    #[test]
    fn shuttle_deadlock_and_step_bound_are_classified_by_their_messages() {
        let deadlock = shuttle_failure(
            || {
                let a = Arc::new(shuttle::sync::Mutex::new(()));
                let b = Arc::new(shuttle::sync::Mutex::new(()));
                let (a2, b2) = (a.clone(), b.clone());
                let t = shuttle::thread::spawn(move || {
                    let _x = b2.lock().unwrap();
                    shuttle::thread::yield_now();
                    let _y = a2.lock().unwrap();
                });
                let _x = a.lock().unwrap();
                shuttle::thread::yield_now();
                let _y = b.lock().unwrap();
                drop(_y);
                drop(_x);
                t.join().unwrap();
            },
            {
                let mut c = shuttle_config();
                c.max_steps = MaxSteps::FailAfter(1000);
                c
            },
        );
        assert_eq!(
            classify_failure(&deadlock),
            Some(Oracle::Deadlock),
            "{deadlock}"
        );

        let spin = shuttle_failure(
            || loop {
                shuttle::thread::yield_now();
            },
            {
                let mut c = shuttle_config();
                c.max_steps = MaxSteps::FailAfter(100);
                c
            },
        );
        assert_eq!(classify_failure(&spin), Some(Oracle::StepLimit), "{spin}");

        let panic = shuttle_failure(|| panic!("index out of bounds"), shuttle_config());
        assert_eq!(classify_failure(&panic), None, "{panic}");
    }

    /// A model panic in one job is that job's verdict; the batch goes on
    /// and the next job runs as usual.
    #[test]
    fn a_panicking_job_does_not_lose_the_batch() {
        use crate::model::Op;
        use crate::model::op::{Index, PfnArg};
        let ok = Scenario::new(
            Config::default(),
            vec![],
            vec![vec![Op::FilemapAddFolio {
                index: Index(0),
                pfn_hint: PfnArg(600),
            }]],
        );
        // An op the model cannot run: a pfn past memory (validation would
        // refuse it; the executor must survive it anyway).
        let mut bad = ok.clone();
        bad.cpus[0] = vec![Op::PfnWalk {
            pfn: PfnArg(1 << 30),
        }];
        quiet_shuttle_panics();
        let r = run_jobs(vec![
            Job::replay(Arc::new(ok.clone()), Observe::default()),
            Job::replay(Arc::new(bad), Observe::default()),
            Job::replay(Arc::new(ok), Observe::default()),
        ]);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].replayed.as_ref().unwrap().verdict, Verdict::Clean);
        assert!(
            matches!(
                r[1].failure.as_ref().unwrap().verdict,
                Verdict::ModelPanic(_)
            ),
            "{:?}",
            r[1].failure
        );
        assert_eq!(r[2].replayed.as_ref().unwrap().verdict, Verdict::Clean);
    }

    /// The per-configuration slots reset each execution from the right
    /// booted machine: scenarios of many configurations (more than there
    /// are slots, so some are evicted) run interleaved in one batch give
    /// each the outcome and trace it has alone on a fresh thread.
    #[test]
    fn interleaved_configurations_replay_as_they_do_alone() {
        use crate::scenario::generate::{GenOptions, decode_bytes};
        let opts = GenOptions {
            max_cpus: 4,
            memory_blocks: (2, 6),
            hugetlb_order: (7, 9),
            vma_growth: 16,
            ..GenOptions::default()
        };
        let scenarios: Vec<Arc<Scenario>> = (0..48u8)
            .map(|i| {
                let bytes: Vec<u8> = (0..160u32)
                    .map(|j| (j.wrapping_mul(31) ^ (u32::from(i) * 97)) as u8)
                    .collect();
                Arc::new(decode_bytes(&bytes, &opts))
            })
            .collect();
        let configs: std::collections::BTreeSet<_> = scenarios
            .iter()
            .map(|s| (s.config.memory_blocks, s.config.hugetlb_order, s.cpus.len()))
            .collect();
        assert!(
            configs.len() > SLOTS,
            "only {} configurations",
            configs.len()
        );
        let observe = Observe {
            tracing: true,
            ..Observe::default()
        };
        let summary = |o: &Outcome| {
            (
                o.verdict.clone(),
                o.schedule.clone(),
                o.steps,
                o.trace.len(),
            )
        };
        let alone: Vec<_> = scenarios
            .iter()
            .map(|s| {
                let job = Job::replay(s.clone(), observe);
                std::thread::spawn(move || run_jobs(vec![job]).pop().unwrap().replayed.unwrap())
                    .join()
                    .unwrap()
            })
            .collect();
        let jobs: Vec<_> = scenarios
            .iter()
            .map(|s| Job::replay(s.clone(), observe))
            .collect();
        let together = std::thread::spawn(move || run_jobs(jobs)).join().unwrap();
        for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
            let t = t.replayed.as_ref().unwrap();
            assert_eq!(summary(a), summary(t), "scenario {i}");
            assert_eq!(
                format!("{:?}", a.trace),
                format!("{:?}", t.trace),
                "scenario {i}"
            );
        }
    }

    /// A slot boots one machine for every VMA layout: `set_vmas` makes it
    /// the machine that layout boots.
    #[test]
    fn set_vmas_gives_the_machine_the_layout_boots() {
        use crate::scenario::generate::{GenOptions, decode_bytes};
        let opts = GenOptions {
            vma_growth: 16,
            ..GenOptions::default()
        };
        let mut layouts = 0;
        for i in 0..32u8 {
            let bytes: Vec<u8> = (0..64u8).map(|j| j.wrapping_mul(37) ^ i).collect();
            let config = decode_bytes(&bytes, &opts).config;
            let booted_for_default = Machine::new(
                Config {
                    vmas: Config::default().vmas,
                    ..config
                },
                2,
            );
            layouts += (config.vmas != Config::default().vmas) as usize;
            let mut m = booted_for_default;
            m.set_vmas(config);
            assert_eq!(
                format!("{:?}", m),
                format!("{:?}", Machine::new(config, 2)),
                "layout {:?}",
                config.vmas
            );
        }
        assert!(layouts > 8, "only {layouts} grown layouts");
    }

    /// A job `from_schedule` starts its executions from cuts of the
    /// recorded schedule: each replays a prefix of it, and far longer ones
    /// than a fresh PCT exploration of the same scenario shares with it.
    #[test]
    fn from_schedule_replays_cuts_of_the_recorded_schedule() {
        use crate::model::Op;
        use crate::model::op::{Index, PfnArg};
        let cpu = |index| {
            vec![
                Op::FilemapAddFolio {
                    index: Index(index),
                    pfn_hint: PfnArg(600 + u32::from(index)),
                },
                Op::TruncateInodeFolio {
                    index: Index(index),
                },
            ]
        };
        let mut s = Scenario::new(Config::default(), vec![], vec![cpu(0), cpu(1)]);
        let observe = Observe {
            coverage: true,
            ..Observe::default()
        };
        let pct = |seed| Plan::Pct {
            seed,
            depth: 3,
            executions: 64,
        };
        let first = run_job(Job::new(Arc::new(s.clone()), pct(1), observe));
        s.schedule = first.schedules.last().cloned().expect("an execution");
        assert!(s.schedule.len() > 4, "{:?}", s.schedule);
        let shared = |e: &Explored| -> Vec<usize> {
            e.schedules
                .iter()
                .map(|x| {
                    x.iter()
                        .zip(&s.schedule)
                        .take_while(|(a, b)| a == b)
                        .count()
                })
                .collect()
        };

        let cut = run_job(Job::new(Arc::new(s.clone()), pct(2), observe).from_schedule());
        let fresh = run_job(Job::new(Arc::new(s.clone()), pct(2), observe));

        let (cut, fresh) = (shared(&cut), shared(&fresh));
        assert_eq!(cut.len(), 64);
        let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
        assert!(
            mean(&cut) > 2.0 * mean(&fresh).max(1.0),
            "cut {cut:?} fresh {fresh:?}"
        );
        assert!(cut.iter().any(|&n| n + 1 >= s.schedule.len()), "{cut:?}");
    }
}
