//! The domain model: devices, ports, systems, tenants, the events that change them, and State,
//! the pure fold of those events. Plain data: no I/O, and no hardware types (`runtime::adapt`
//! turns what the drivers report into these).

pub mod access;
pub mod alarm;
pub mod directory;
pub mod domain;
pub mod drain;
pub mod event;
pub mod failure;
pub mod ids;
pub mod network;
pub mod operation;
pub mod pool;
pub mod state;

pub use access::{
    Account, AccountChange, AccountName, AccountRole, Password, Privilege, Reservation,
    ReservationEnd, Sealed, Secret, Session, SessionEnd, Subscription,
};
pub use alarm::{Alarm, AlarmEnd, Severity};
pub use domain::{
    AttachState, Attachment, Device, DeviceKind, Health, Identity, Mount, MountCondition,
    MountSource, MountState, Port, Role, System, Tenant,
};
pub use drain::{Drain, DrainScope};
pub use event::{DeviceFacts, Door, Event, Made, MountSpec, Origin};
pub use failure::{Failure, SwitchStep};
pub use ids::{
    AlarmId, DeviceId, OperationId, PortId, RequestId, SwitchName, SystemName, TenantName,
};
pub use network::{ManagementNetwork, PowerAction};
pub use operation::{Operation, OperationKind, OrderKind, Outcome, Requested};
pub use state::{ApplyError, Counters, State};
