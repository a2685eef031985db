//! The appliance's events: everything that changes it, as journaled. A closed enum with stable
//! kind numbers; variants and fields are only ever appended (bincode is not self-describing).
//!
//! Schema versions (every record carries the version it was written with):
//! - 1: the first schema; frozen in [`v1`], upcast on replay.
//! - 2: outcome events carry a typed [`Failure`] instead of a text; every order of an operator
//!   carries [`Made`] (who made it, through which door, under which request id). Kinds 25 to 33
//!   (accounts, sessions, subscriptions, reservations) came with it; kinds 34 and 35 (alarms) were
//!   appended later, which schema 2 allows (a new variant at the end decodes as it is), then
//!   kind 36 (a mount's condition) and the mirror mount source, kind 37 (a drain), kinds 38 to
//!   40 (the management port's settings and their application, a power order), kind 41 (the
//!   directory's settings, in their first layout: no longer written, upcast on replay), kind 42
//!   (a directory user's session), kind 43 (the directory's settings with their group
//!   attributes), kind 44 (a directory user's lockout or TOTP key).

pub mod v1;

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::{Deserialize, Serialize};

use super::access::{
    AccountChange, AccountName, AccountRole, ReservationEnd, SessionEnd, Subscription,
};
use super::alarm::{AlarmEnd, Severity};
use super::directory::{
    DirectoryGrant, DirectorySettings, DirectoryUserChange, FirstDirectorySettings,
};
use super::domain::{DeviceKind, Health, Identity, MountCondition, MountSource, Role};
use super::drain::DrainScope;
use super::failure::Failure;
use super::ids::{
    AlarmId, DeviceId, OperationId, PortId, RequestId, SwitchName, SystemName, TenantName,
};
use super::network::{ManagementNetwork, PowerAction};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u16 = 2;

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
    pub switch: SwitchName,
}

/// A mount as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct MountSpec {
    pub source: MountSource,
    pub target: String,
    pub filesystem: String,
    pub options: String,
}

/// The door an order came in by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum Door {
    /// Journaled before doors were recorded (event schema 1).
    #[default]
    Unrecorded,
    /// The appliance itself: start-up, the reconciler, the health monitor.
    Appliance,
    /// The local socket in the data directory (`appliance ctl` on the box).
    Local,
    /// The HTTPS API.
    Api,
    /// The front-panel console on the serial line.
    Console,
}

impl Door {
    pub fn name(self) -> &'static str {
        match self {
            Door::Unrecorded => "unrecorded",
            Door::Appliance => "appliance",
            Door::Local => "local",
            Door::Api => "api",
            Door::Console => "console",
        }
    }
}

/// Who made an order: the door, and the account where the door has accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Origin {
    pub door: Door,
    pub account: Option<String>,
    /// The session the order came through, when it came through one.
    #[serde(default)]
    pub session: Option<String>,
}

impl Origin {
    /// The appliance itself (start-up sync, reconciler, monitor).
    pub fn appliance() -> Origin {
        Origin::door(Door::Appliance)
    }

    /// A door without accounts (the local socket).
    pub fn door(door: Door) -> Origin {
        Origin {
            door,
            account: None,
            session: None,
        }
    }

    /// An account through a door.
    pub fn account(door: Door, account: impl Into<String>) -> Origin {
        Origin {
            door,
            account: Some(account.into()),
            session: None,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.account {
            Some(account) => write!(f, "{account} via {}", self.door.name()),
            None => f.write_str(self.door.name()),
        }
    }
}

/// What the journal keeps of the order that produced an event: who made it, and its request id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[derive(Serialize, Deserialize, Archive, RkyvSerialize, RkyvDeserialize)]
pub struct Made {
    pub by: Origin,
    pub request_id: Option<RequestId>,
}

impl Made {
    pub fn by(by: Origin) -> Made {
        Made {
            by,
            request_id: None,
        }
    }
}

/// Every event. Intent (`*Requested`) and outcome (`*Completed` / `*Failed`) are separate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged: bincode cannot decode internally tagged enums.
#[serde(rename_all = "snake_case")]
pub enum Event {
    IdentitySet {
        identity: Identity,
        made: Made,
    },
    TenantCreated {
        name: TenantName,
        made: Made,
    },
    SystemCreated {
        name: SystemName,
        tenant: TenantName,
        role: Role,
        made: Made,
    },
    SystemDeleted {
        name: SystemName,
        made: Made,
    },
    PortDiscovered {
        port: PortId,
        switch: SwitchName,
        slot: u32,
    },
    DeviceDiscovered {
        // Boxed, as `MountRequested`'s spec: the two largest payloads would make every event
        // twice the size of the others, and replay moves each event several times. Serialized
        // as the value itself (serde), so the journal's bytes are those of the facts.
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
        made: Made,
    },
    ComposeRequested {
        op: OperationId,
        system: SystemName,
        devices: Vec<(DeviceId, PortId)>,
        made: Made,
    },
    ComposeCompleted {
        op: OperationId,
    },
    ComposeFailed {
        op: OperationId,
        failure: Failure,
    },
    DecomposeRequested {
        op: OperationId,
        system: SystemName,
        devices: Vec<DeviceId>,
        made: Made,
    },
    DecomposeCompleted {
        op: OperationId,
    },
    DecomposeFailed {
        op: OperationId,
        failure: Failure,
    },
    MountRequested {
        op: OperationId,
        system: SystemName,
        mount: Box<MountSpec>,
        made: Made,
    },
    MountCompleted {
        op: OperationId,
    },
    MountFailed {
        op: OperationId,
        failure: Failure,
    },
    UnmountRequested {
        op: OperationId,
        system: SystemName,
        target: String,
        made: Made,
    },
    UnmountCompleted {
        op: OperationId,
    },
    UnmountFailed {
        op: OperationId,
        failure: Failure,
    },
    FailoverRequested {
        op: OperationId,
        system: SystemName,
        from: DeviceId,
        to: DeviceId,
        port: PortId,
        made: Made,
    },
    FailoverCompleted {
        op: OperationId,
    },
    FailoverFailed {
        op: OperationId,
        failure: Failure,
    },
    AccountCreated {
        name: AccountName,
        role: AccountRole,
        tenant: Option<TenantName>,
        /// argon2id, as a PHC string: never the password.
        password_hash: String,
        password_change_required: bool,
        made: Made,
    },
    AccountChanged {
        name: AccountName,
        change: AccountChange,
        made: Made,
    },
    AccountDeleted {
        name: AccountName,
        made: Made,
    },
    SessionOpened {
        id: String,
        account: AccountName,
        /// SHA-256 of the token, hex: never the token.
        token_sha256: String,
        at_ms: u64,
        made: Made,
    },
    SessionClosed {
        id: String,
        end: SessionEnd,
        made: Made,
    },
    SubscriptionCreated {
        subscription: Box<Subscription>,
        made: Made,
    },
    SubscriptionDeleted {
        id: String,
        made: Made,
    },
    ReservationMade {
        id: String,
        devices: Vec<DeviceId>,
        manifest: String,
        at_ms: u64,
        expires_ms: u64,
        made: Made,
    },
    ReservationEnded {
        id: String,
        end: ReservationEnd,
        made: Made,
    },
    /// A fault seen on a device, journaled with the health change it comes with.
    AlarmRaised {
        alarm: AlarmId,
        device: DeviceId,
        severity: Severity,
        message: String,
        evidence: String,
        /// When the host saw it.
        at_ms: u64,
    },
    /// An alarm's end (when: the record's timestamp).
    AlarmEnded {
        alarm: AlarmId,
        device: DeviceId,
        end: AlarmEnd,
        made: Made,
    },
    /// A mount this server holds changed condition (a mirror degraded, rebuilding, clean).
    MountObserved {
        system: SystemName,
        target: String,
        condition: MountCondition,
        evidence: String,
    },
    /// An operator's drain: `devices` (the scope's, when it was ordered) leave service, and the
    /// systems holding them are moved off them by failovers (`model::drain`).
    DrainRequested {
        scope: DrainScope,
        devices: Vec<DeviceId>,
        reason: String,
        made: Made,
    },
    /// The operator's settings of the management port; applied once durable and at every
    /// start of the appliance (`ManagementNetworkApplied` says how that went).
    ManagementNetworkSet {
        network: ManagementNetwork,
        made: Made,
    },
    /// The management port's settings as the appliance applied them to `interface`, or why it
    /// could not (`error`).
    ManagementNetworkApplied {
        interface: String,
        network: ManagementNetwork,
        error: Option<String>,
    },
    /// An operator's reboot or power off, journaled before the appliance stops.
    PowerRequested {
        action: PowerAction,
        reason: String,
        made: Made,
    },
    /// The studio's directory in the first layout of its settings (before the group
    /// attributes): no longer written; replayed as [`Event::DirectoryConfigured`].
    DirectorySet {
        settings: Option<FirstDirectorySettings>,
        made: Made,
    },
    /// A directory user's login: its session, with the role and tenant its groups gave it.
    DirectorySessionOpened {
        id: String,
        account: AccountName,
        token_sha256: String,
        at_ms: u64,
        grant: DirectoryGrant,
        made: Made,
    },
    /// The studio's directory that logins fall back to (None: local accounts only); its bind
    /// password sealed with the appliance's key.
    DirectoryConfigured {
        settings: Option<DirectorySettings>,
        made: Made,
    },
    /// A directory user's lockout or second factor (it has no local account to hold them).
    DirectoryUserChanged {
        name: AccountName,
        change: DirectoryUserChange,
        made: Made,
    },
}

/// Kind numbers, stable forever, in the enum's order.
const KIND_NAMES: [&str; 44] = [
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
    "account_created",
    "account_changed",
    "account_deleted",
    "session_opened",
    "session_closed",
    "subscription_created",
    "subscription_deleted",
    "reservation_made",
    "reservation_ended",
    "alarm_raised",
    "alarm_ended",
    "mount_observed",
    "drain_requested",
    "management_network_set",
    "management_network_applied",
    "power_requested",
    "directory_set",
    "directory_session_opened",
    "directory_configured",
    "directory_user_changed",
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
            Event::AccountCreated { .. } => 24,
            Event::AccountChanged { .. } => 25,
            Event::AccountDeleted { .. } => 26,
            Event::SessionOpened { .. } => 27,
            Event::SessionClosed { .. } => 28,
            Event::SubscriptionCreated { .. } => 29,
            Event::SubscriptionDeleted { .. } => 30,
            Event::ReservationMade { .. } => 31,
            Event::ReservationEnded { .. } => 32,
            Event::AlarmRaised { .. } => 33,
            Event::AlarmEnded { .. } => 34,
            Event::MountObserved { .. } => 35,
            Event::DrainRequested { .. } => 36,
            Event::ManagementNetworkSet { .. } => 37,
            Event::ManagementNetworkApplied { .. } => 38,
            Event::PowerRequested { .. } => 39,
            Event::DirectorySet { .. } => 40,
            Event::DirectorySessionOpened { .. } => 41,
            Event::DirectoryConfigured { .. } => 42,
            Event::DirectoryUserChanged { .. } => 43,
        };
        index + 1
    }

    /// The kind's stable name ("compose_requested").
    pub fn kind_name(&self) -> &'static str {
        KIND_NAMES[usize::from(self.kind_number() - 1)]
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

    /// The failure an outcome reports, if it is a failed outcome.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Event::ComposeFailed { failure, .. }
            | Event::DecomposeFailed { failure, .. }
            | Event::MountFailed { failure, .. }
            | Event::UnmountFailed { failure, .. }
            | Event::FailoverFailed { failure, .. } => Some(failure),
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

    /// The order this event came from, if an order made it.
    pub fn made(&self) -> Option<&Made> {
        match self {
            Event::IdentitySet { made, .. }
            | Event::TenantCreated { made, .. }
            | Event::SystemCreated { made, .. }
            | Event::SystemDeleted { made, .. }
            | Event::ServiceChanged { made, .. }
            | Event::ComposeRequested { made, .. }
            | Event::DecomposeRequested { made, .. }
            | Event::MountRequested { made, .. }
            | Event::UnmountRequested { made, .. }
            | Event::FailoverRequested { made, .. }
            | Event::AccountCreated { made, .. }
            | Event::AccountChanged { made, .. }
            | Event::AccountDeleted { made, .. }
            | Event::SessionOpened { made, .. }
            | Event::SessionClosed { made, .. }
            | Event::SubscriptionCreated { made, .. }
            | Event::SubscriptionDeleted { made, .. }
            | Event::ReservationMade { made, .. }
            | Event::ReservationEnded { made, .. }
            | Event::AlarmEnded { made, .. }
            | Event::DrainRequested { made, .. }
            | Event::ManagementNetworkSet { made, .. }
            | Event::PowerRequested { made, .. }
            | Event::DirectorySet { made, .. }
            | Event::DirectorySessionOpened { made, .. }
            | Event::DirectoryConfigured { made, .. }
            | Event::DirectoryUserChanged { made, .. } => Some(made),
            _ => None,
        }
    }

    /// The account the event is about, if it is about one.
    pub fn account(&self) -> Option<&AccountName> {
        match self {
            Event::AccountCreated { name, .. }
            | Event::AccountChanged { name, .. }
            | Event::AccountDeleted { name, .. } => Some(name),
            Event::SessionOpened { account, .. } => Some(account),
            _ => None,
        }
    }

    /// The devices the event names directly.
    pub fn devices(&self) -> Vec<&DeviceId> {
        match self {
            Event::DeviceDiscovered { facts } => vec![&facts.id],
            Event::DeviceVanished { device }
            | Event::HealthChanged { device, .. }
            | Event::ServiceChanged { device, .. }
            | Event::AlarmRaised { device, .. }
            | Event::AlarmEnded { device, .. } => vec![device],
            Event::ComposeRequested { devices, .. } => devices.iter().map(|(d, _)| d).collect(),
            Event::DecomposeRequested { devices, .. } => devices.iter().collect(),
            Event::FailoverRequested { from, to, .. } => vec![from, to],
            Event::MountRequested { mount, .. } => mount.source.devices(),
            Event::ReservationMade { devices, .. } | Event::DrainRequested { devices, .. } => {
                devices.iter().collect()
            }
            _ => vec![],
        }
    }

    /// Whether the event names this device directly.
    pub fn names_device(&self, id: &str) -> bool {
        self.devices().iter().any(|d| d.as_str() == id)
    }

    /// The system the event names directly, if any.
    pub fn system(&self) -> Option<&SystemName> {
        match self {
            Event::SystemCreated { name, .. } | Event::SystemDeleted { name, .. } => Some(name),
            Event::ComposeRequested { system, .. }
            | Event::DecomposeRequested { system, .. }
            | Event::MountRequested { system, .. }
            | Event::UnmountRequested { system, .. }
            | Event::FailoverRequested { system, .. }
            | Event::MountObserved { system, .. } => Some(system),
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

    /// Schema 2 decodes as it is; schema 1 decodes into the frozen [`v1::Event`] and is upcast.
    fn decode(kind: u16, version: u16, payload: &[u8]) -> Result<Self, journal::DecodeError> {
        let failed = |e: bincode::Error| journal::DecodeError::Payload {
            kind,
            version,
            reason: e.to_string(),
        };
        match version {
            SCHEMA_VERSION => bincode::deserialize(payload).map_err(failed),
            1 => bincode::deserialize::<v1::Event>(payload)
                .map(Event::from)
                .map_err(failed),
            _ => Err(journal::DecodeError::UnknownVersion { kind, version }),
        }
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
                Event::TenantCreated {
                    name: "t".into(),
                    made: Made::default(),
                },
                2,
                "tenant_created",
            ),
            (
                Event::ComposeRequested {
                    op: OperationId(1),
                    system: "s".into(),
                    devices: vec![],
                    made: Made::default(),
                },
                10,
                "compose_requested",
            ),
            (
                Event::FailoverFailed {
                    op: OperationId(1),
                    failure: Failure::Unclassified { reason: "r".into() },
                },
                24,
                "failover_failed",
            ),
        ];
        for (event, kind, name) in samples {
            assert_eq!(event.kind(), kind, "{event:?}");
            assert_eq!(<Event as journal::Event>::kind_name(kind), Some(name));
            assert_eq!(event.kind_name(), name);
        }
        assert_eq!(<Event as journal::Event>::kind_name(0), None);
        assert_eq!(<Event as journal::Event>::kind_name(45), None);
        let last = Event::AlarmEnded {
            alarm: AlarmId(1),
            device: "nvme-1".into(),
            end: AlarmEnd::Cleared,
            made: Made::default(),
        };
        assert_eq!((last.kind(), last.kind_name()), (35, "alarm_ended"));
        let drain = Event::DrainRequested {
            scope: DrainScope::Switch("sw0".into()),
            devices: vec![],
            reason: String::new(),
            made: Made::default(),
        };
        assert_eq!((drain.kind(), drain.kind_name()), (37, "drain_requested"));
        let network = crate::model::ManagementNetwork::parse("10.0.2.20/24", "10.0.2.2").unwrap();
        let machine = [
            Event::ManagementNetworkSet {
                network,
                made: Made::default(),
            },
            Event::ManagementNetworkApplied {
                interface: "eth0".into(),
                network,
                error: None,
            },
            Event::PowerRequested {
                action: PowerAction::Reboot,
                reason: String::new(),
                made: Made::default(),
            },
        ];
        let kinds: Vec<(u16, &str)> = machine.iter().map(|e| (e.kind(), e.kind_name())).collect();
        assert_eq!(
            kinds,
            [
                (38, "management_network_set"),
                (39, "management_network_applied"),
                (40, "power_requested")
            ]
        );
        let directory = Event::DirectorySet {
            settings: None,
            made: Made::default(),
        };
        assert_eq!(
            (directory.kind(), directory.kind_name()),
            (41, "directory_set")
        );
        let directory = [
            Event::DirectoryConfigured {
                settings: None,
                made: Made::default(),
            },
            Event::DirectoryUserChanged {
                name: "ana".into(),
                change: DirectoryUserChange::Locked { until_ms: Some(9) },
                made: Made::default(),
            },
        ];
        let kinds: Vec<(u16, &str)> = directory
            .iter()
            .map(|e| (e.kind(), e.kind_name()))
            .collect();
        assert_eq!(
            kinds,
            [(43, "directory_configured"), (44, "directory_user_changed")]
        );
        for event in machine.into_iter().chain(directory) {
            let bytes = bincode::serialize(&event).expect("serialize");
            let back = Event::decode(event.kind(), SCHEMA_VERSION, &bytes).expect("decode");
            assert_eq!(back, event);
        }
    }

    /// Kind 41 as session 13's build wrote it (the settings without group attributes) still
    /// decodes, and replays as settings whose groups are read as that kind read them.
    #[test]
    fn a_directory_set_in_the_first_layout_replays_with_the_kinds_groups() {
        use crate::model::access::Sealed;
        use crate::model::directory::{DirectoryKind, GroupMapping};
        let first = FirstDirectorySettings {
            kind: DirectoryKind::ActiveDirectory,
            uri: "ldaps://dc1.studio.test".into(),
            starttls: false,
            allow_plain: false,
            ca_pem: "-----BEGIN CERTIFICATE-----".into(),
            bind_dn: "cn=svc".into(),
            bind_password: Sealed {
                nonce: vec![1; 12],
                ciphertext: vec![2; 20],
            },
            base: "dc=studio,dc=test".into(),
            user_attribute: "sAMAccountName".into(),
            mappings: vec![GroupMapping {
                group: "admins".into(),
                role: AccountRole::Administrator,
                tenant: None,
            }],
            timeout_ms: 3000,
        };
        let event = Event::DirectorySet {
            settings: Some(first),
            made: Made::default(),
        };
        let bytes = bincode::serialize(&event).expect("serialize");
        let back = Event::decode(41, SCHEMA_VERSION, &bytes).expect("decode");
        assert_eq!(back, event);
        let mut state = crate::model::State::default();
        state.apply(1, &back).expect("apply");
        let settings = state.directory.expect("set");
        assert_eq!(settings.groups_from(), Some("memberOf"));
        assert_eq!(settings.group_name_attribute, "cn");
        assert_eq!(settings.uri, "ldaps://dc1.studio.test");
        assert_eq!(settings.bind_password.ciphertext, vec![2; 20]);
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

    #[test]
    fn a_schema_1_failure_is_upcast_to_an_unclassified_failure() {
        let old = v1::Event::ComposeFailed {
            op: 3,
            reason: "bind timed out".into(),
        };
        let bytes = bincode::serialize(&old).expect("serialize");
        let back = Event::decode(12, 1, &bytes).expect("decode");
        assert_eq!(
            back,
            Event::ComposeFailed {
                op: OperationId(3),
                failure: Failure::Unclassified {
                    reason: "bind timed out".into()
                }
            }
        );
    }

    #[test]
    fn a_schema_1_order_is_upcast_with_an_unrecorded_origin_and_its_request_id() {
        let old = v1::Event::DecomposeRequested {
            op: 4,
            system: "ws1".into(),
            devices: vec!["gpu-1".into()],
            request_id: Some("r9".into()),
        };
        let bytes = bincode::serialize(&old).expect("serialize");
        let back = Event::decode(13, 1, &bytes).expect("decode");
        assert_eq!(
            back,
            Event::DecomposeRequested {
                op: OperationId(4),
                system: "ws1".into(),
                devices: vec!["gpu-1".into()],
                made: Made {
                    by: Origin::default(),
                    request_id: Some("r9".into()),
                },
            }
        );
        assert_eq!(Origin::default().door, Door::Unrecorded);
    }
}
