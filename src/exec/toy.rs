//! The yardstick for the executor's speed: a bare shuttle test of the same
//! shape as the model's executions (threads, and steps per thread, each
//! step one mutex-protected update), run by one `Runner` under shuttle's
//! random scheduler, as a shuttle user would write it.

use shuttle::scheduler::RandomScheduler;
use shuttle::sync::Mutex;
use shuttle::{Config, Runner};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Executions per second of `threads` threads doing `steps` locked
/// increments each, over about `time`.
pub fn bare_shuttle_exec_per_s(threads: usize, steps: usize, time: Duration) -> f64 {
    let mut config = Config::new();
    config.silence_warnings = true;
    let start = Instant::now();
    let mut n = 0;
    // Runs of a fixed length (a time bound would drop the random scheduler
    // before its last execution, which it reports as a failure).
    for seed in 0.. {
        if start.elapsed() >= time {
            break;
        }
        n += run(threads, steps, seed, RUN, &config);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Executions per `Runner::run` of the toy.
const RUN: usize = 2000;

fn run(threads: usize, steps: usize, seed: u64, executions: usize, config: &Config) -> usize {
    Runner::new(
        RandomScheduler::new_from_seed(seed, executions),
        config.clone(),
    )
    .run(move || {
        let counter = Arc::new(Mutex::new(0u64));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let counter = counter.clone();
                shuttle::thread::spawn(move || {
                    for _ in 0..steps {
                        *counter.lock().unwrap() += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    })
}
