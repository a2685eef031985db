//! The appliance: domain model, commands and events, the core that decides, the reconciler that
//! drives the hardware, the control interface, and PID-1 duties.

pub mod command;
pub mod control;
pub mod core;
pub mod domain;
pub mod event;
pub mod history;
pub mod log;
pub mod metrics;
pub mod pid1;
pub mod placement;
pub mod reconciler;
pub mod serve;
pub mod sim;
pub mod simulation;
pub mod state;
pub mod synth;
pub mod topology;
