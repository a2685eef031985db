//! The domain model: devices, ports, systems, tenants, the events that change them, and State,
//! the pure fold of those events. Plain data; no I/O and no hardware types.

pub mod domain;
pub mod event;
pub mod state;
