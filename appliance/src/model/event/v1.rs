//! Event schema 1, frozen: the enum exactly as the first builds journaled it (bincode reads
//! fields by position, so nothing here may change), and its upcast to the current [`Event`].
//! The payload types that schema 2 left as they were (facts, mount spec, identity, health, role)
//! are shared with the current schema; one that changes later must be frozen here first.

use serde::{Deserialize, Serialize};

use super::{DeviceFacts, Made, MountSpec, Origin};
use crate::model::domain::{Health, Identity, Role};
use crate::model::failure::Failure;

/// Schema 1's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event1 {
    IdentitySet {
        identity: Identity,
    },
    TenantCreated {
        name: String,
    },
    SystemCreated {
        name: String,
        tenant: String,
        role: Role,
    },
    SystemDeleted {
        name: String,
    },
    PortDiscovered {
        port: u16,
        switch: String,
        slot: u32,
    },
    DeviceDiscovered {
        facts: Box<DeviceFacts>,
    },
    DeviceVanished {
        device: String,
    },
    HealthChanged {
        device: String,
        health: Health,
    },
    ServiceChanged {
        device: String,
        in_service: bool,
        reason: String,
    },
    ComposeRequested {
        op: u64,
        system: String,
        devices: Vec<(String, u16)>,
        request_id: Option<String>,
    },
    ComposeCompleted {
        op: u64,
    },
    ComposeFailed {
        op: u64,
        reason: String,
    },
    DecomposeRequested {
        op: u64,
        system: String,
        devices: Vec<String>,
        request_id: Option<String>,
    },
    DecomposeCompleted {
        op: u64,
    },
    DecomposeFailed {
        op: u64,
        reason: String,
    },
    MountRequested {
        op: u64,
        system: String,
        mount: Box<MountSpec>,
        request_id: Option<String>,
    },
    MountCompleted {
        op: u64,
    },
    MountFailed {
        op: u64,
        reason: String,
    },
    UnmountRequested {
        op: u64,
        system: String,
        target: String,
        request_id: Option<String>,
    },
    UnmountCompleted {
        op: u64,
    },
    UnmountFailed {
        op: u64,
        reason: String,
    },
    FailoverRequested {
        op: u64,
        system: String,
        from: String,
        to: String,
        port: u16,
        request_id: Option<String>,
    },
    FailoverCompleted {
        op: u64,
    },
    FailoverFailed {
        op: u64,
        reason: String,
    },
}

pub use Event1 as Event;

/// Schema 1 recorded no origin; an operation's request id moves into [`Made`].
fn made(request_id: Option<String>) -> Made {
    Made {
        by: Origin::default(),
        request_id: request_id.map(Into::into),
    }
}

/// Schema 1's failure reasons were free text.
fn failure(reason: String) -> Failure {
    Failure::Unclassified { reason }
}

impl From<Event1> for super::Event {
    fn from(old: Event1) -> super::Event {
        use super::Event as E;
        use Event1 as O;
        match old {
            O::IdentitySet { identity } => E::IdentitySet {
                identity,
                made: made(None),
            },
            O::TenantCreated { name } => E::TenantCreated {
                name: name.into(),
                made: made(None),
            },
            O::SystemCreated { name, tenant, role } => E::SystemCreated {
                name: name.into(),
                tenant: tenant.into(),
                role,
                made: made(None),
            },
            O::SystemDeleted { name } => E::SystemDeleted {
                name: name.into(),
                made: made(None),
            },
            O::PortDiscovered { port, switch, slot } => E::PortDiscovered {
                port: port.into(),
                switch: switch.into(),
                slot,
            },
            O::DeviceDiscovered { facts } => E::DeviceDiscovered { facts },
            O::DeviceVanished { device } => E::DeviceVanished {
                device: device.into(),
            },
            O::HealthChanged { device, health } => E::HealthChanged {
                device: device.into(),
                health,
            },
            O::ServiceChanged {
                device,
                in_service,
                reason,
            } => E::ServiceChanged {
                device: device.into(),
                in_service,
                reason,
                made: made(None),
            },
            O::ComposeRequested {
                op,
                system,
                devices,
                request_id,
            } => E::ComposeRequested {
                op: op.into(),
                system: system.into(),
                devices: devices
                    .into_iter()
                    .map(|(d, p)| (d.into(), p.into()))
                    .collect(),
                made: made(request_id),
            },
            O::ComposeCompleted { op } => E::ComposeCompleted { op: op.into() },
            O::ComposeFailed { op, reason } => E::ComposeFailed {
                op: op.into(),
                failure: failure(reason),
            },
            O::DecomposeRequested {
                op,
                system,
                devices,
                request_id,
            } => E::DecomposeRequested {
                op: op.into(),
                system: system.into(),
                devices: devices.into_iter().map(Into::into).collect(),
                made: made(request_id),
            },
            O::DecomposeCompleted { op } => E::DecomposeCompleted { op: op.into() },
            O::DecomposeFailed { op, reason } => E::DecomposeFailed {
                op: op.into(),
                failure: failure(reason),
            },
            O::MountRequested {
                op,
                system,
                mount,
                request_id,
            } => E::MountRequested {
                op: op.into(),
                system: system.into(),
                mount,
                made: made(request_id),
            },
            O::MountCompleted { op } => E::MountCompleted { op: op.into() },
            O::MountFailed { op, reason } => E::MountFailed {
                op: op.into(),
                failure: failure(reason),
            },
            O::UnmountRequested {
                op,
                system,
                target,
                request_id,
            } => E::UnmountRequested {
                op: op.into(),
                system: system.into(),
                target,
                made: made(request_id),
            },
            O::UnmountCompleted { op } => E::UnmountCompleted { op: op.into() },
            O::UnmountFailed { op, reason } => E::UnmountFailed {
                op: op.into(),
                failure: failure(reason),
            },
            O::FailoverRequested {
                op,
                system,
                from,
                to,
                port,
                request_id,
            } => E::FailoverRequested {
                op: op.into(),
                system: system.into(),
                from: from.into(),
                to: to.into(),
                port: port.into(),
                made: made(request_id),
            },
            O::FailoverCompleted { op } => E::FailoverCompleted { op: op.into() },
            O::FailoverFailed { op, reason } => E::FailoverFailed {
                op: op.into(),
                failure: failure(reason),
            },
        }
    }
}
