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
