//! The runtime: what touches hardware. The reconciler executes the operations State holds
//! against the fabric and the host and rolls back what fails, `drift` repairs what moved on its
//! own, `monitor` turns the host's observations into commands, `storage` keeps the NAS
//! gateway's mirrors (md RAID1, mounted on this server), and `adapt` alone turns `drivers` types
//! into the domain's.

pub mod adapt;
pub mod drift;
pub mod machine;
pub mod monitor;
pub mod reconciler;
pub mod storage;

pub use reconciler::{Drivers, ReconcileLimits, Reconciler};
