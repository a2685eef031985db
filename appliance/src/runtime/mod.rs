//! The runtime: what touches hardware. The reconciler executes the operations State holds
//! against the fabric and the host and rolls back what fails, `drift` repairs what moved on its
//! own, `monitor` turns the host's observations into commands, and `adapt` alone turns `drivers`
//! types into the domain's.

pub mod adapt;
pub mod drift;
pub mod monitor;
pub mod reconciler;

pub use reconciler::{Drivers, ReconcileLimits, Reconciler};
