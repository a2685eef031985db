//! Deciding: commands, the pure `decide` (State + Command -> events or a typed refusal) and
//! placement. No I/O.

pub mod access;
pub mod command;
pub mod placement;
pub mod reflex;
