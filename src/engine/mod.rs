//! Hunting and minimizing: what every front end (CLI, proptest, fuzz)
//! shares. An engine only chooses interleavings; the decoder, the model and
//! the oracles are the same for all.

mod corpus;
pub mod hunt;
pub mod minimize;
mod mutate;

pub use hunt::{Engine, Finding, HuntOptions, HuntReport, hunt};
pub use minimize::minimize;
