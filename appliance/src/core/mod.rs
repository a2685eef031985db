//! The core: the one writer that decides commands and appends their events to the journal,
//! replay at start, the event log, history, and the core's metrics.

pub mod history;
pub mod log;
pub mod metrics;
mod writer;

pub use writer::*;
