//! The appliance: the domain model and its events (`model`), the pure decisions (`decide`), the
//! one writer over the journal (`core`), the hardware-facing runtime (`runtime`), the doors
//! operators come in by (`api`), the service's start and stop (`serve`), and PID-1 duties.

pub mod api;
pub mod console;
pub mod core;
pub mod decide;
pub mod model;
pub mod pid1;
pub mod runtime;
pub mod serve;
#[cfg(feature = "sim")]
pub mod testing;
pub mod time;
pub mod topology;
