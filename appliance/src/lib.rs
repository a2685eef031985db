//! The appliance: domain model, commands and events, the core that decides, the reconciler that
//! drives the hardware, the control interface, and PID-1 duties.

pub mod pid1;
