//! mmharness: property-based, fuzz and concurrency testing around an
//! executable model of Linux memory management.
//!
//! - [`model`]: the kernel model, one module per kernel file;
//! - [`exec`]: runs the model under shuttle, one thread per CPU;
//! - [`scenario`]: the versioned scenario format and its generators;
//! - [`engine`]: hunting and minimizing, shared by every front end;
//! - [`ui`]: the command line and the interleaving tables.

pub mod engine;
pub mod exec;
pub mod model;
pub mod scenario;
pub mod ui;
