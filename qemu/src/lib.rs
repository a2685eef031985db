//! The QEMU test bench: q35 VM, QMP client, the emulated fabric switch, serial console access.
//!
//! - [`Vm::launch`] starts the appliance image in QEMU with the bench's fabric ([`VmOptions`]);
//! - [`Vm::console`] waits for serial-console lines, [`Vm::qmp`] runs QMP commands,
//!   [`Vm::fabric`] is the emulated switch (attach/detach and fault injection),
//!   [`Vm::api`] logs in to the forwarded HTTPS API with the credentials the bench provisioned
//!   on the data disk ([`provision`]); dropping the [`Vm`] kills QEMU;
//! - [`run_driver_selftest`] answers the drivers' in-guest self-test and collects its figures.

pub mod api;
pub mod args;
pub mod console;
pub mod failover;
pub mod faults;
pub mod host;
pub mod provision;
pub mod qmp;
pub mod ready;
pub mod selftest;
pub mod switch;
pub mod topology;
pub mod vm;

pub use api::{Api, ApiError};
pub use args::{Accel, ConsoleMode, RunPaths};
pub use console::{Console, ConsoleError};
pub use provision::{Credentials, ProvisionError};
pub use qmp::{Event, Qmp, QmpError};
pub use ready::ReadyLine;
pub use selftest::{run_driver_selftest, SelftestError, SelftestOutcome};
pub use switch::{Switch, SwitchError};
pub use topology::{BenchTopology, DeviceKind, Identity, TopologyError};
pub use vm::{Vm, VmError, VmOptions};
