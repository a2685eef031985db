//! The runtime: what touches hardware. The reconciler executes the operations State holds
//! against the fabric and the host, repairs drift, and turns host observations into commands.

pub mod reconciler;
