//! Running the model under shuttle: each CPU is a shuttle thread and every
//! step of a kernel path is a scheduling point. The executor implements
//! the model's `Executor`; the batch runner explores many jobs in one
//! shuttle run.

mod batch;
mod executor;
pub mod schedulers;
pub mod toy;

pub use batch::{
    Explored, Job, Observe, Outcome, Plan, Verdict, classify_failure, quiet_shuttle_panics, replay,
    run_input, run_job, run_jobs, run_shuttle,
};
pub use executor::STEP_BOUND;

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, and go on with its data if a holder panicked: a model panic
/// is reported as a finding, and none of these locks guards an invariant
/// a panic can break halfway.
pub fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
