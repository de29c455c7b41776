//! The command line and what it prints.

pub mod cli;
pub mod progress;
pub mod render;
