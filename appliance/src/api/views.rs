//! Views: the public shape of devices, systems, operations, the appliance's status and its
//! history, as every door shows them. Built from State in one place (here); State's own structs
//! can change without changing what a client reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::time::rfc3339;
use crate::core::history::HistoryEntry;
use crate::core::metrics::LatencySummary;
use crate::core::StartReport;
use crate::model::directory::{DirectorySettings, DirectoryUserChange, DirectoryUserRecord};
use crate::model::{
    Alarm, AlarmId, AttachState, Counters, Device, DeviceId, DeviceKind, Event, Failure, Identity,
    ManagementNetwork, Mount, MountSource, Operation, OperationId, OperationKind, Origin, Outcome,
    Port, PortId, Role, Severity, State, SwitchName, System, SystemName, Tenant, TenantName,
};
pub use crate::runtime::machine::ManagementPort;

/// The directory's settings as shown (no bind password), and the directory users the appliance
/// keeps a lockout or a TOTP key for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryView {
    pub settings: DirectorySettings<()>,
    pub users: Vec<DirectoryUserView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUserView {
    pub name: String,
    /// Locked until then (ms since the epoch), if it is.
    pub locked_until_ms: Option<u64>,
    pub totp: bool,
}

impl DirectoryView {
    pub fn of(
        settings: &DirectorySettings,
        users: &BTreeMap<crate::model::AccountName, DirectoryUserRecord>,
    ) -> DirectoryView {
        let now_ms = super::time::now_ms();
        DirectoryView {
            settings: settings.with_password(()),
            users: users
                .iter()
                .filter(|(_, user)| user.is_locked(now_ms) || user.totp.is_some())
                .map(|(name, user)| DirectoryUserView {
                    name: name.to_string(),
                    locked_until_ms: user.locked_until_ms.filter(|_| user.is_locked(now_ms)),
                    totp: user.totp.is_some(),
                })
                .collect(),
        }
    }
}

/// The summary of the directory's settings.
fn directory_summary(settings: Option<&DirectorySettings>) -> String {
    match settings {
        None => "directory logins turned off: local accounts only".to_string(),
        Some(d) => format!(
            "logins fall back to the directory at {} ({}, base {}, {} groups mapped)",
            d.uri,
            d.kind.name(),
            d.base,
            d.mappings.len()
        ),
    }
}

/// A device's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    /// "ok", "degraded" or "failed".
    pub state: String,
    pub reason: Option<String>,
}

/// Where a device stands for composing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Free to compose.
    Free,
    /// Being attached to a system.
    Attaching,
    /// Composed into a system.
    Composed,
    /// Being detached from a system.
    Detaching,
    /// Not composable: absent, unhealthy or out of service.
    Unavailable,
}

impl DeviceState {
    pub fn name(self) -> &'static str {
        match self {
            DeviceState::Free => "free",
            DeviceState::Attaching => "attaching",
            DeviceState::Composed => "composed",
            DeviceState::Detaching => "detaching",
            DeviceState::Unavailable => "unavailable",
        }
    }
}

/// One pool device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    pub id: DeviceId,
    pub kind: DeviceKind,
    pub state: DeviceState,
    pub system: Option<SystemName>,
    pub port: Option<PortId>,
    pub switch: SwitchName,
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub vendor_id: u16,
    pub device_id: u16,
    /// PCI class code (base, sub, prog-if).
    pub class: u32,
    /// NVMe capacity or GPU memory; 0 where it has no meaning.
    pub capacity_bytes: u64,
    pub rdma: bool,
    pub health: HealthView,
    pub in_service: bool,
    /// Out of service by a drain, its system not yet moved off it.
    pub draining: bool,
    pub present: bool,
    /// The ETag: the sequence of the last event that changed the device.
    pub version: u64,
}

/// One device of a system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: DeviceId,
    pub kind: Option<DeviceKind>,
    pub port: PortId,
    /// "attaching", "attached" or "detaching".
    pub state: String,
}

/// What a mount mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountSourceView {
    Namespace { device: DeviceId, namespace: u32 },
    Export { server: String, path: String },
    Mirror { devices: Vec<DeviceId> },
    Disk { hba: DeviceId, uuid: String },
}

/// One mount of a system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountView {
    pub target: String,
    pub source: MountSourceView,
    pub filesystem: String,
    pub options: String,
    /// "mounting", "mounted" or "unmounting".
    pub state: String,
    /// A mirror's condition as this server last saw it: "clean", "rebuilding", "degraded" or
    /// "unmounted".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// One composed system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemView {
    pub name: SystemName,
    pub tenant: TenantName,
    pub role: Role,
    pub devices: Vec<MemberView>,
    pub mounts: Vec<MountView>,
    /// The operation in flight, if any.
    pub pending: Option<OperationId>,
    pub last_failure: Option<String>,
    /// The ETag: the sequence of the last event that changed the system.
    pub version: u64,
}

/// One port of the fabric toward this server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub id: PortId,
    pub switch: SwitchName,
    pub slot: u32,
    pub device: Option<DeviceId>,
}

/// One tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantView {
    pub name: TenantName,
    pub systems: u64,
    pub version: u64,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureView {
    /// The failure's stable code ("bind_timeout", "device_vanished", ...).
    pub code: String,
    pub message: String,
    pub device: Option<DeviceId>,
}

impl From<&Failure> for FailureView {
    fn from(failure: &Failure) -> FailureView {
        FailureView {
            code: failure.code().to_string(),
            message: failure.to_string(),
            device: failure.device().cloned(),
        }
    }
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    Pending,
    Completed,
    Failed,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationView {
    pub id: OperationId,
    /// "compose", "decompose", "mount", "unmount" or "failover".
    pub kind: String,
    pub system: SystemName,
    /// The devices it attaches, with their ports (compose, and a failover's replacement).
    pub attaches: Vec<(DeviceId, PortId)>,
    /// The devices it detaches (decompose, and a failover's failed device).
    pub detaches: Vec<DeviceId>,
    /// The mount target it mounts or unmounts.
    pub mount: Option<String>,
    pub by: Origin,
    pub request_id: Option<String>,
    pub requested_at: u64,
    pub finished_at: Option<u64>,
    pub state: OperationState,
    pub failure: Option<FailureView>,
}

/// An active alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmView {
    pub id: AlarmId,
    pub device: DeviceId,
    /// The system that held the device when the alarm was raised.
    pub system: Option<SystemName>,
    pub severity: Severity,
    pub message: String,
    pub evidence: String,
    /// When the host saw the fault: RFC 3339, UTC, and ms since the epoch.
    pub raised: String,
    pub raised_ms: u64,
    /// The journal sequence that raised it.
    pub sequence: u64,
    /// The failover it started, as last seen (None: none was started, or it finished so long
    /// ago that State forgot it; the history has it).
    pub failover: Option<OperationView>,
    /// The failover's number even when State forgot it.
    pub failover_op: Option<OperationId>,
}

impl AlarmView {
    pub fn of(state: &State, alarm: &Alarm) -> AlarmView {
        AlarmView {
            id: alarm.id,
            device: alarm.device.clone(),
            system: alarm.system.clone(),
            severity: alarm.severity,
            message: alarm.message.clone(),
            evidence: alarm.evidence.clone(),
            raised: rfc3339(alarm.at_ms),
            raised_ms: alarm.at_ms,
            sequence: alarm.raised_at,
            failover: alarm
                .failover
                .and_then(|op| state.operation(op))
                .map(OperationView::of),
            failover_op: alarm.failover,
        }
    }
}

/// Counts of one device kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub total: u64,
    pub composed: u64,
    pub free: u64,
    pub unavailable: u64,
}

/// The appliance at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub identity: Identity,
    pub journal_head: u64,
    pub start: StartReport,
    /// Pool usage by device kind ("gpu", "nvme", ...).
    pub pools: BTreeMap<String, PoolUsage>,
    pub ports_total: u64,
    pub ports_free: u64,
    pub systems: u64,
    pub tenants: u64,
    pub operations_pending: u64,
    /// Active alarms: (warning, critical).
    pub alarms_warning: u64,
    pub alarms_critical: u64,
    pub counters: Counters,
    pub commands: u64,
    pub commands_refused: u64,
    pub batches: u64,
    pub events_appended: u64,
    pub append_latency: LatencySummary,
    pub compose_latency: LatencySummary,
    pub decompose_latency: LatencySummary,
    /// The firmware's version.
    #[serde(default)]
    pub firmware: String,
    /// Seconds since the service started.
    #[serde(default)]
    pub uptime_s: u64,
    /// The worst active alarm's severity: OK, Warning or Critical.
    #[serde(default)]
    pub health: String,
    /// The management port as the kernel has it (None where the service has none of its own).
    #[serde(default)]
    pub management: Option<ManagementPort>,
    /// The operator's settings of the management port, if any, and how they were applied.
    #[serde(default)]
    pub management_setting: Option<ManagementSettingView>,
    /// Where the HTTPS API answers, if it is served.
    #[serde(default)]
    pub api_url: Option<String>,
}

/// What a check of the whole journal found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalCheckView {
    pub records: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// The newest valid snapshot's sequence.
    pub snapshot: Option<u64>,
    /// Damage found (a record that does not verify or decode, a gap, an invalid snapshot);
    /// empty when the journal is intact.
    pub problems: Vec<String>,
    pub ms: u64,
}

/// The operator's settings of the management port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagementSettingView {
    pub network: ManagementNetwork,
    /// The interface they were applied to, once they were.
    pub applied_to: Option<String>,
    /// Why they were not applied, if they were not.
    pub error: Option<String>,
}

/// An accepted order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedView {
    /// The journal's head once the order's events were durable.
    pub sequence: u64,
    pub op: Option<OperationId>,
    /// True when the request id was seen before: nothing was journaled.
    pub repeated: bool,
    /// The operation as last seen (finished when the request waited and it finished in time).
    pub operation: Option<OperationView>,
}

/// One event of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntryView {
    pub sequence: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub timestamp_ms: u64,
    /// The event's kind ("compose_requested").
    pub kind: String,
    /// What happened, in a sentence.
    pub summary: String,
    pub system: Option<SystemName>,
    pub devices: Vec<DeviceId>,
    pub op: Option<OperationId>,
    /// Who made the order, for events an order made.
    pub by: Option<Origin>,
}

/// The appliance as it was right after a sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateAtView {
    pub sequence: u64,
    pub systems: Vec<SystemView>,
    pub devices: Vec<DeviceView>,
}

impl DeviceView {
    pub fn of(state: &State, device: &Device) -> DeviceView {
        let attachment = device
            .holder
            .as_ref()
            .and_then(|h| state.systems.get(h))
            .and_then(|s| s.devices.get(&device.id));
        let state_now = match attachment.map(|a| a.state) {
            Some(AttachState::Attaching) => DeviceState::Attaching,
            Some(AttachState::Attached) => DeviceState::Composed,
            Some(AttachState::Detaching) => DeviceState::Detaching,
            None if device.is_available() => DeviceState::Free,
            None => DeviceState::Unavailable,
        };
        DeviceView {
            id: device.id.clone(),
            kind: device.kind,
            state: state_now,
            system: device.holder.clone(),
            port: device.port,
            switch: device.switch.clone(),
            model: device.model.clone(),
            serial: device.serial.clone(),
            firmware: device.firmware.clone(),
            vendor_id: device.vendor_id,
            device_id: device.device_id,
            class: device.class,
            capacity_bytes: device.capacity_bytes,
            rdma: device.rdma,
            health: HealthView {
                state: device.health.name().to_string(),
                reason: device.health.reason().map(String::from),
            },
            in_service: device.in_service,
            draining: state.drains.contains_key(&device.id),
            present: device.present,
            version: device.version,
        }
    }
}

impl MountView {
    pub fn of(mount: &Mount) -> MountView {
        let source = match &mount.source {
            MountSource::Namespace { device, namespace } => MountSourceView::Namespace {
                device: device.clone(),
                namespace: *namespace,
            },
            MountSource::Export { server, path } => MountSourceView::Export {
                server: server.clone(),
                path: path.clone(),
            },
            MountSource::Mirror { devices } => MountSourceView::Mirror {
                devices: devices.clone(),
            },
            MountSource::Disk { hba, uuid } => MountSourceView::Disk {
                hba: hba.clone(),
                uuid: uuid.clone(),
            },
        };
        MountView {
            target: mount.target.clone(),
            source,
            filesystem: mount.filesystem.clone(),
            options: mount.options.clone(),
            state: mount.state.name().to_string(),
            condition: mount.condition.map(|c| c.name().to_string()),
        }
    }
}

impl SystemView {
    pub fn of(state: &State, system: &System) -> SystemView {
        let devices = system
            .devices
            .iter()
            .map(|(id, attachment)| MemberView {
                id: id.clone(),
                kind: state.devices.get(id).map(|d| d.kind),
                port: attachment.port,
                state: attachment.state.name().to_string(),
            })
            .collect();
        SystemView {
            name: system.name.clone(),
            tenant: system.tenant.clone(),
            role: system.role,
            devices,
            mounts: system.mounts.values().map(MountView::of).collect(),
            pending: system.pending,
            last_failure: system.last_failure.clone(),
            version: system.version,
        }
    }
}

impl PortView {
    pub fn of(port: &Port) -> PortView {
        PortView {
            id: port.id,
            switch: port.switch.clone(),
            slot: port.slot,
            device: port.device.clone(),
        }
    }
}

impl TenantView {
    pub fn of(state: &State, tenant: &Tenant) -> TenantView {
        let systems = state
            .systems
            .values()
            .filter(|s| s.tenant == tenant.name)
            .count() as u64;
        TenantView {
            name: tenant.name.clone(),
            systems,
            version: tenant.version,
        }
    }
}

impl OperationView {
    pub fn of(operation: &Operation) -> OperationView {
        let (attaches, detaches, mount) = match &operation.kind {
            OperationKind::Compose { devices } => (devices.clone(), vec![], None),
            OperationKind::Decompose { devices } => (vec![], devices.clone(), None),
            OperationKind::Mount { mount } => (vec![], vec![], Some(mount.target.clone())),
            OperationKind::Unmount { target } => (vec![], vec![], Some(target.clone())),
            OperationKind::Failover { from, to, port } => {
                (vec![(to.clone(), *port)], vec![from.clone()], None)
            }
        };
        let (state, failure) = match &operation.outcome {
            None => (OperationState::Pending, None),
            Some(Outcome::Completed) => (OperationState::Completed, None),
            Some(Outcome::Failed(failure)) => (OperationState::Failed, Some(failure.into())),
        };
        OperationView {
            id: operation.id,
            kind: operation.kind.name().to_string(),
            system: operation.system.clone(),
            attaches,
            detaches,
            mount,
            by: operation.made.by.clone(),
            request_id: operation.made.request_id.as_ref().map(|r| r.to_string()),
            requested_at: operation.requested_at,
            finished_at: operation.finished_at,
            state,
            failure,
        }
    }
}

/// What an event says, in a sentence.
pub fn summary(event: &Event) -> String {
    let ports = |devices: &[(DeviceId, PortId)]| -> String {
        devices
            .iter()
            .map(|(d, p)| format!("{d}@{p}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let list = |devices: &[DeviceId]| -> String {
        devices
            .iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match event {
        Event::IdentitySet { identity, .. } => format!(
            "appliance identity set to {} at {}",
            identity.appliance_id, identity.site
        ),
        Event::TenantCreated { name, .. } => format!("tenant {name} created"),
        Event::SystemCreated {
            name, tenant, role, ..
        } => format!("system {name} created for tenant {tenant} as {role}"),
        Event::SystemDeleted { name, .. } => format!("system {name} deleted"),
        Event::PortDiscovered { port, switch, slot } => {
            format!("port {port} of switch {switch} is slot {slot}")
        }
        Event::DeviceDiscovered { facts } => format!(
            "{} {} discovered: {} serial {} behind {}",
            facts.kind, facts.id, facts.model, facts.serial, facts.switch
        ),
        Event::DeviceVanished { device } => format!("{device} left the switch's pool"),
        Event::HealthChanged { device, health } => match health.reason() {
            Some(reason) => format!("{device} is {}: {reason}", health.name()),
            None => format!("{device} is healthy"),
        },
        Event::ServiceChanged {
            device,
            in_service,
            reason,
            ..
        } => {
            let now = if *in_service { "back in" } else { "out of" };
            let why = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            format!("{device} taken {now} service{why}")
        }
        Event::DrainRequested {
            scope,
            devices,
            reason,
            ..
        } => {
            let why = if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            };
            let list: Vec<&str> = devices.iter().map(|d| d.as_str()).collect();
            format!("drain of {scope}{why}: {} out of service", list.join(", "))
        }
        Event::ManagementNetworkSet { network, .. } => {
            format!("management port set to {network}")
        }
        Event::ManagementNetworkApplied {
            interface,
            network,
            error,
        } => match error {
            None => format!("management port {interface} now {network}"),
            Some(error) => format!("management port not set to {network}: {error}"),
        },
        Event::DirectorySet { settings, .. } => {
            directory_summary(settings.clone().map(DirectorySettings::from).as_ref())
        }
        Event::DirectoryConfigured { settings, .. } => directory_summary(settings.as_ref()),
        Event::DirectoryUserChanged { name, change, .. } => match change {
            DirectoryUserChange::Locked {
                until_ms: Some(until),
            } => format!(
                "directory user {name} locked until {} after repeated wrong passwords",
                rfc3339(*until)
            ),
            DirectoryUserChange::Locked { until_ms: None } => {
                format!("directory user {name} unlocked")
            }
            DirectoryUserChange::Totp(Some(_)) => format!("directory user {name} turned on TOTP"),
            DirectoryUserChange::Totp(None) => format!("directory user {name} turned off TOTP"),
        },
        Event::PowerRequested { action, reason, .. } => match reason.is_empty() {
            true => format!("{} requested", action.name()),
            false => format!("{} requested: {reason}", action.name()),
        },
        Event::ComposeRequested {
            op,
            system,
            devices,
            ..
        } => format!("op {op}: compose {} into {system}", ports(devices)),
        Event::DecomposeRequested {
            op,
            system,
            devices,
            ..
        } => format!("op {op}: decompose {} from {system}", list(devices)),
        Event::MountRequested {
            op, system, mount, ..
        } => format!("op {op}: mount {} on {system}", mount.target),
        Event::UnmountRequested {
            op, system, target, ..
        } => format!("op {op}: unmount {target} on {system}"),
        Event::FailoverRequested {
            op,
            system,
            from,
            to,
            port,
            ..
        } => format!("op {op}: fail {system} over from {from} to {to}@{port}"),
        Event::ComposeCompleted { op }
        | Event::DecomposeCompleted { op }
        | Event::MountCompleted { op }
        | Event::UnmountCompleted { op }
        | Event::FailoverCompleted { op } => format!("op {op} completed"),
        Event::ComposeFailed { op, failure }
        | Event::DecomposeFailed { op, failure }
        | Event::MountFailed { op, failure }
        | Event::UnmountFailed { op, failure }
        | Event::FailoverFailed { op, failure } => {
            format!("op {op} failed ({}): {failure}", failure.code())
        }
        Event::AlarmRaised {
            alarm,
            device,
            severity,
            message,
            evidence,
            at_ms,
        } => format!(
            "alarm {alarm} ({}) on {device}: {message}; seen at {}: {evidence}",
            severity.name(),
            rfc3339(*at_ms)
        ),
        Event::AlarmEnded {
            alarm, device, end, ..
        } => format!("alarm {alarm} on {device} ended: {}", end.name()),
        Event::MountObserved {
            system,
            target,
            condition,
            evidence,
        } => format!(
            "{system}'s mount {target} is {}: {evidence}",
            condition.name()
        ),
        other => access_summary(other),
    }
}

/// What an account, session, subscription or reservation event says (never a secret).
fn access_summary(event: &Event) -> String {
    use crate::model::AccountChange as C;
    match event {
        Event::AccountCreated {
            name, role, tenant, ..
        } => match tenant {
            Some(tenant) => format!(
                "account {name} created as {} of tenant {tenant}",
                role.name()
            ),
            None => format!("account {name} created as {}", role.name()),
        },
        Event::AccountChanged { name, change, .. } => match change {
            C::Role(role) => format!("account {name} is now {}", role.name()),
            C::Password { .. } => format!("account {name} changed its password"),
            C::PasswordChangeRequired(true) => {
                format!("account {name} must change its password")
            }
            C::PasswordChangeRequired(false) => {
                format!("account {name} need not change its password")
            }
            C::Enabled(true) => format!("account {name} enabled"),
            C::Enabled(false) => format!("account {name} disabled"),
            C::Locked {
                until_ms: Some(until),
            } => {
                format!("account {name} locked until {}", rfc3339(*until))
            }
            C::Locked { until_ms: None } => format!("account {name} unlocked"),
            C::Totp(Some(_)) => format!("account {name} turned on TOTP"),
            C::Totp(None) => format!("account {name} turned off TOTP"),
        },
        Event::AccountDeleted { name, .. } => format!("account {name} deleted"),
        Event::SessionOpened { id, account, .. } => format!("{account} logged in (session {id})"),
        Event::DirectorySessionOpened {
            id, account, grant, ..
        } => format!(
            "{account} logged in through the directory as {}{} (session {id})",
            grant.role.name(),
            grant
                .tenant
                .as_ref()
                .map(|t| format!(" of tenant {t}"))
                .unwrap_or_default()
        ),
        Event::SessionClosed { id, end, .. } => format!("session {id} ended ({end:?})"),
        Event::SubscriptionCreated { subscription, .. } => format!(
            "subscription {} to {} created",
            subscription.id, subscription.destination
        ),
        Event::SubscriptionDeleted { id, .. } => format!("subscription {id} deleted"),
        Event::ReservationMade {
            id,
            devices,
            expires_ms,
            ..
        } => format!(
            "reservation {id} holds {} until {}",
            devices
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            rfc3339(*expires_ms)
        ),
        Event::ReservationEnded { id, end, .. } => format!("reservation {id} ended ({end:?})"),
        other => format!("{other:?}"),
    }
}

impl HistoryEntryView {
    pub fn of(entry: &HistoryEntry) -> HistoryEntryView {
        let event = &entry.event;
        HistoryEntryView {
            sequence: entry.sequence,
            time: rfc3339(entry.timestamp_ms),
            timestamp_ms: entry.timestamp_ms,
            kind: event.kind_name().to_string(),
            summary: summary(event),
            system: event.system().cloned(),
            devices: event.devices().into_iter().cloned().collect(),
            op: event.intent_of().or_else(|| event.outcome_of()),
            by: event.made().map(|m| m.by.clone()),
        }
    }
}

impl StateAtView {
    pub fn of(state: &State) -> StateAtView {
        StateAtView {
            sequence: state.head,
            systems: state
                .systems
                .values()
                .map(|s| SystemView::of(state, s))
                .collect(),
            devices: state
                .devices
                .values()
                .map(|d| DeviceView::of(state, d))
                .collect(),
        }
    }
}

/// Pool usage by kind.
pub fn pools(state: &State) -> BTreeMap<String, PoolUsage> {
    let mut pools = BTreeMap::new();
    for device in state.devices.values() {
        let usage: &mut PoolUsage = pools.entry(device.kind.name().to_string()).or_default();
        usage.total += 1;
        if device.holder.is_some() {
            usage.composed += 1;
        } else if device.is_available() {
            usage.free += 1;
        } else {
            usage.unavailable += 1;
        }
    }
    pools
}
