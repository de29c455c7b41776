//! Running the model under shuttle: each CPU is a shuttle thread and every
//! step of a kernel path is a scheduling point.

mod cpu;
mod run;
pub mod schedulers;

pub use cpu::Cpu;
pub use run::{
    Explored, Outcome, STEP_BOUND, ShuttleEngine, Verdict, explore_shuttle, quiet_shuttle_panics,
    run_input, run_input_covered, run_shuttle,
};
