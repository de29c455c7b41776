//! Hunting and minimizing: what every front end (CLI, proptest, fuzz)
//! shares. An engine only chooses interleavings; the decoder, the model and
//! the oracles are the same for all.

pub mod adaptive;
pub mod bench;
mod corpus;
pub mod hunt;
pub mod minimize;
mod mutate;

pub use hunt::{Engine, Finding, Flow, HuntOptions, HuntReport, Hunter, hunt, hunt_with};
pub use minimize::{find_schedule, minimize};
