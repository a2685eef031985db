//! The appliance's events: everything that changes it, as journaled. A closed enum with stable
//! kind numbers; variants and fields are only ever appended (bincode is not self-describing).

use serde::{Deserialize, Serialize};

use crate::model::domain::{
    DeviceId, DeviceKind, Health, Identity, MountSource, OperationId, Role, SystemName,
};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u16 = 1;

/// A device's facts as the fabric reports them (what does not change by composing it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFacts {
    pub id: DeviceId,
    pub kind: DeviceKind,
    pub class: u32,
    pub vendor_id: u16,
    pub device_id: u16,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    pub capacity_bytes: u64,
    pub rdma: bool,
    pub switch: String,
}

/// A mount as requested.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct MountSpec {
    pub source: MountSource,
    pub target: String,
    pub filesystem: String,
    pub options: String,
}

/// Every event. Intent (`*Requested`) and outcome (`*Completed` / `*Failed`) are separate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged: bincode cannot decode internally tagged enums.
#[serde(rename_all = "snake_case")]
pub enum Event {
    IdentitySet {
        identity: Identity,
    },
    TenantCreated {
        name: String,
    },
    SystemCreated {
        name: SystemName,
        tenant: String,
        role: Role,
    },
    SystemDeleted {
        name: SystemName,
    },
    PortDiscovered {
        port: u16,
        switch: String,
        slot: u32,
    },
    DeviceDiscovered {
        // Boxed, as `MountRequested`'s spec: the two largest payloads would make every event
        // twice the size of the others (176 bytes), and replay moves each event several times.
        // Serialized as the value itself (serde), so the journal's bytes are unchanged.
        facts: Box<DeviceFacts>,
    },
    DeviceVanished {
        device: DeviceId,
    },
    HealthChanged {
        device: DeviceId,
        health: Health,
    },
    ServiceChanged {
        device: DeviceId,
        in_service: bool,
        reason: String,
    },
    ComposeRequested {
        op: OperationId,
        system: SystemName,
        devices: Vec<(DeviceId, u16)>,
        request_id: Option<String>,
    },
    ComposeCompleted {
        op: OperationId,
    },
    ComposeFailed {
        op: OperationId,
        reason: String,
    },
    DecomposeRequested {
        op: OperationId,
        system: SystemName,
        devices: Vec<DeviceId>,
        request_id: Option<String>,
    },
    DecomposeCompleted {
        op: OperationId,
    },
    DecomposeFailed {
        op: OperationId,
        reason: String,
    },
    MountRequested {
        op: OperationId,
        system: SystemName,
        mount: Box<MountSpec>,
        request_id: Option<String>,
    },
    MountCompleted {
        op: OperationId,
    },
    MountFailed {
        op: OperationId,
        reason: String,
    },
    UnmountRequested {
        op: OperationId,
        system: SystemName,
        target: String,
        request_id: Option<String>,
    },
    UnmountCompleted {
        op: OperationId,
    },
    UnmountFailed {
        op: OperationId,
        reason: String,
    },
    FailoverRequested {
        op: OperationId,
        system: SystemName,
        from: DeviceId,
        to: DeviceId,
        port: u16,
        request_id: Option<String>,
    },
    FailoverCompleted {
        op: OperationId,
    },
    FailoverFailed {
        op: OperationId,
        reason: String,
    },
}

/// Kind numbers, stable forever, in the enum's order.
const KIND_NAMES: [&str; 24] = [
    "identity_set",
    "tenant_created",
    "system_created",
    "system_deleted",
    "port_discovered",
    "device_discovered",
    "device_vanished",
    "health_changed",
    "service_changed",
    "compose_requested",
    "compose_completed",
    "compose_failed",
    "decompose_requested",
    "decompose_completed",
    "decompose_failed",
    "mount_requested",
    "mount_completed",
    "mount_failed",
    "unmount_requested",
    "unmount_completed",
    "unmount_failed",
    "failover_requested",
    "failover_completed",
    "failover_failed",
];

impl Event {
    /// The stable kind number (1-based index into the enum's order).
    pub fn kind_number(&self) -> u16 {
        let index = match self {
            Event::IdentitySet { .. } => 0,
            Event::TenantCreated { .. } => 1,
            Event::SystemCreated { .. } => 2,
            Event::SystemDeleted { .. } => 3,
            Event::PortDiscovered { .. } => 4,
            Event::DeviceDiscovered { .. } => 5,
            Event::DeviceVanished { .. } => 6,
            Event::HealthChanged { .. } => 7,
            Event::ServiceChanged { .. } => 8,
            Event::ComposeRequested { .. } => 9,
            Event::ComposeCompleted { .. } => 10,
            Event::ComposeFailed { .. } => 11,
            Event::DecomposeRequested { .. } => 12,
            Event::DecomposeCompleted { .. } => 13,
            Event::DecomposeFailed { .. } => 14,
            Event::MountRequested { .. } => 15,
            Event::MountCompleted { .. } => 16,
            Event::MountFailed { .. } => 17,
            Event::UnmountRequested { .. } => 18,
            Event::UnmountCompleted { .. } => 19,
            Event::UnmountFailed { .. } => 20,
            Event::FailoverRequested { .. } => 21,
            Event::FailoverCompleted { .. } => 22,
            Event::FailoverFailed { .. } => 23,
        };
        index + 1
    }

    /// The operation this event is the outcome of, if it is one.
    pub fn outcome_of(&self) -> Option<OperationId> {
        match self {
            Event::ComposeCompleted { op }
            | Event::ComposeFailed { op, .. }
            | Event::DecomposeCompleted { op }
            | Event::DecomposeFailed { op, .. }
            | Event::MountCompleted { op }
            | Event::MountFailed { op, .. }
            | Event::UnmountCompleted { op }
            | Event::UnmountFailed { op, .. }
            | Event::FailoverCompleted { op }
            | Event::FailoverFailed { op, .. } => Some(*op),
            _ => None,
        }
    }

    /// The operation this event is the intent of, if it is one.
    pub fn intent_of(&self) -> Option<OperationId> {
        match self {
            Event::ComposeRequested { op, .. }
            | Event::DecomposeRequested { op, .. }
            | Event::MountRequested { op, .. }
            | Event::UnmountRequested { op, .. }
            | Event::FailoverRequested { op, .. } => Some(*op),
            _ => None,
        }
    }

    /// Whether the event names this device directly.
    pub fn names_device(&self, id: &str) -> bool {
        match self {
            Event::DeviceDiscovered { facts } => facts.id == id,
            Event::DeviceVanished { device }
            | Event::HealthChanged { device, .. }
            | Event::ServiceChanged { device, .. } => device == id,
            Event::ComposeRequested { devices, .. } => devices.iter().any(|(d, _)| d == id),
            Event::DecomposeRequested { devices, .. } => devices.iter().any(|d| d == id),
            Event::FailoverRequested { from, to, .. } => from == id || to == id,
            Event::MountRequested { mount, .. } => {
                matches!(&mount.source, MountSource::Namespace { device, .. } if device == id)
            }
            _ => false,
        }
    }

    /// The system the event names directly, if any.
    pub fn system(&self) -> Option<&str> {
        match self {
            Event::SystemCreated { name, .. } | Event::SystemDeleted { name } => Some(name),
            Event::ComposeRequested { system, .. }
            | Event::DecomposeRequested { system, .. }
            | Event::MountRequested { system, .. }
            | Event::UnmountRequested { system, .. }
            | Event::FailoverRequested { system, .. } => Some(system),
            _ => None,
        }
    }
}

impl journal::Event for Event {
    const SCHEMA_VERSION: u16 = SCHEMA_VERSION;

    fn kind(&self) -> u16 {
        self.kind_number()
    }

    fn kind_name(kind: u16) -> Option<&'static str> {
        let index = usize::from(kind).checked_sub(1)?;
        KIND_NAMES.get(index).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use journal::Event as _;

    #[test]
    fn kind_numbers_are_stable_and_named() {
        let samples = [
            (
                Event::TenantCreated { name: "t".into() },
                2,
                "tenant_created",
            ),
            (
                Event::ComposeRequested {
                    op: 1,
                    system: "s".into(),
                    devices: vec![],
                    request_id: None,
                },
                10,
                "compose_requested",
            ),
            (
                Event::FailoverFailed {
                    op: 1,
                    reason: "r".into(),
                },
                24,
                "failover_failed",
            ),
        ];
        for (event, kind, name) in samples {
            assert_eq!(event.kind(), kind, "{event:?}");
            assert_eq!(Event::kind_name(kind), Some(name));
        }
        assert_eq!(Event::kind_name(0), None);
        assert_eq!(Event::kind_name(25), None);
    }

    #[test]
    fn payload_round_trips_through_decode() {
        let event = Event::HealthChanged {
            device: "gpu-1".into(),
            health: Health::Failed("ecc".into()),
        };
        let bytes = bincode::serialize(&event).expect("serialize");
        let back = Event::decode(event.kind(), SCHEMA_VERSION, &bytes).expect("decode");
        assert_eq!(back, event);
        assert!(Event::decode(8, SCHEMA_VERSION + 1, &bytes).is_err());
    }
}
