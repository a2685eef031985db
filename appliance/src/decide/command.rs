//! Commands and `decide`: the pure function State + Command -> events, or a typed refusal.
//! A refused command produces no event. Every input (API, console, reconciler, monitor) becomes a
//! `Command`; only the core calls `decide`.

use serde::{Deserialize, Serialize};

use crate::decide::placement::{self, PlacementError, Want};
use crate::model::domain::{
    valid_name, AttachState, DeviceId, DeviceKind, Health, Identity, MountSource, OperationId,
    Role, System, SYSTEM_DEVICES_MAX, SYSTEM_GPUS_MAX,
};
use crate::model::event::{DeviceFacts, Event, MountSpec};
use crate::model::state::State;

/// Which devices a compose wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Exactly these devices.
    Specific(Vec<DeviceId>),
    /// Whatever satisfies these items, placed by policy (see `placement`).
    Constrained(Vec<Want>),
}

/// Creates the system as part of the compose when it does not exist yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSystem {
    pub tenant: String,
    pub role: Role,
}

/// Everything that can ask the core to change State.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    SetIdentity {
        identity: Identity,
    },
    CreateTenant {
        name: String,
    },
    CreateSystem {
        name: String,
        tenant: String,
        role: Role,
    },
    DeleteSystem {
        name: String,
        expected_version: Option<u64>,
    },
    Compose {
        system: String,
        selection: Selection,
        create: Option<NewSystem>,
        tenant: Option<String>,
        request_id: Option<String>,
        expected_version: Option<u64>,
    },
    Decompose {
        system: String,
        devices: Option<Vec<DeviceId>>,
        request_id: Option<String>,
        expected_version: Option<u64>,
    },
    Mount {
        system: String,
        mount: MountSpec,
        request_id: Option<String>,
        expected_version: Option<u64>,
    },
    Unmount {
        system: String,
        target: String,
        request_id: Option<String>,
        expected_version: Option<u64>,
    },
    /// Replace `device` of `system` by a healthy free device of the same kind (best fit).
    Failover {
        system: String,
        device: DeviceId,
        request_id: Option<String>,
        expected_version: Option<u64>,
    },
    SetService {
        device: DeviceId,
        in_service: bool,
        reason: String,
        expected_version: Option<u64>,
    },
    ObservePort {
        port: u16,
        switch: String,
        slot: u32,
    },
    ObserveDevice {
        facts: DeviceFacts,
    },
    ObserveVanished {
        device: DeviceId,
    },
    ObserveHealth {
        device: DeviceId,
        health: Health,
    },
    /// The reconciler's verdict on a pending operation.
    Finish {
        op: OperationId,
        result: Result<(), String>,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::SetIdentity { .. } => "set_identity",
            Command::CreateTenant { .. } => "create_tenant",
            Command::CreateSystem { .. } => "create_system",
            Command::DeleteSystem { .. } => "delete_system",
            Command::Compose { .. } => "compose",
            Command::Decompose { .. } => "decompose",
            Command::Mount { .. } => "mount",
            Command::Unmount { .. } => "unmount",
            Command::Failover { .. } => "failover",
            Command::SetService { .. } => "set_service",
            Command::ObservePort { .. } => "observe_port",
            Command::ObserveDevice { .. } => "observe_device",
            Command::ObserveVanished { .. } => "observe_vanished",
            Command::ObserveHealth { .. } => "observe_health",
            Command::Finish { .. } => "finish",
        }
    }

    /// The request id of a mutating request, if it carries one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Command::Compose { request_id, .. }
            | Command::Decompose { request_id, .. }
            | Command::Mount { request_id, .. }
            | Command::Unmount { request_id, .. }
            | Command::Failover { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
}

/// Why a command was refused. Nothing was journaled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandError {
    #[error(
        "{what} name {value:?} is not valid (1 to 128 printable characters, no spaces or quotes)"
    )]
    InvalidName { what: String, value: String },
    #[error("no tenant {tenant:?}")]
    UnknownTenant { tenant: String },
    #[error("tenant {tenant:?} already exists")]
    TenantExists { tenant: String },
    #[error("no system {system:?}")]
    UnknownSystem { system: String },
    #[error("system {system:?} already exists")]
    SystemExists { system: String },
    #[error("no device {device:?}")]
    UnknownDevice { device: String },
    #[error("device {device} is already composed into system {holder:?}")]
    DeviceComposed { device: String, holder: String },
    #[error("device {device} cannot be composed: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    #[error("device {device} is not composed into system {system:?}")]
    DeviceNotComposed { device: String, system: String },
    #[error("system {system:?} belongs to tenant {tenant:?}, not {requested:?}")]
    TenantMismatch {
        system: String,
        tenant: String,
        requested: String,
    },
    #[error(
        "{what} {name:?} is at version {actual}, the request expected {expected}; reload and retry"
    )]
    StaleVersion {
        what: String,
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: {requested} requested, the limit is {limit}")]
    OverLimit {
        what: String,
        requested: usize,
        limit: usize,
    },
    #[error("no placement: {reason}")]
    NoPlacement { reason: String },
    #[error("system {system:?} is busy with operation {op}; wait for its outcome")]
    SystemBusy { system: String, op: OperationId },
    #[error("system {system:?} still holds {devices} devices; decompose them first")]
    SystemNotEmpty { system: String, devices: usize },
    #[error("device {device} of system {system:?} carries mount {target:?}; unmount it first")]
    DeviceMounted {
        system: String,
        device: String,
        target: String,
    },
    #[error("system {system:?} has no mount at {target:?}")]
    UnknownMount { system: String, target: String },
    #[error("mount target {target:?} of system {system:?} is in use")]
    MountExists { system: String, target: String },
    #[error(
        "request id {request_id:?} was used for a {previous} (operation {op}), not a {requested}"
    )]
    RequestIdReused {
        request_id: String,
        op: OperationId,
        previous: String,
        requested: String,
    },
    #[error("operation {op} is not pending")]
    NotPending { op: OperationId },
    #[error("the request is empty: {reason}")]
    Empty { reason: String },
}

impl From<PlacementError> for CommandError {
    fn from(e: PlacementError) -> Self {
        CommandError::NoPlacement {
            reason: e.to_string(),
        }
    }
}

/// What `decide` concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Journal these events; `op` is the operation they start, if any.
    Events {
        events: Vec<Event>,
        op: Option<OperationId>,
    },
    /// A repeated request id: answer with its operation, journal nothing.
    Repeat { op: OperationId },
}

impl Decision {
    fn plain(events: Vec<Event>) -> Decision {
        Decision::Events { events, op: None }
    }
}

/// Decides a command against `state`. Pure.
pub fn decide(state: &State, command: &Command) -> Result<Decision, CommandError> {
    if let Some(request_id) = command.request_id() {
        if let Some(op) = repeated(state, request_id, command)? {
            return Ok(Decision::Repeat { op });
        }
    }
    match command {
        Command::SetIdentity { identity } => Ok(Decision::plain(vec![Event::IdentitySet {
            identity: identity.clone(),
        }])),
        Command::CreateTenant { name } => create_tenant(state, name),
        Command::CreateSystem { name, tenant, role } => {
            create_system(state, name, tenant, *role).map(Decision::plain)
        }
        Command::DeleteSystem {
            name,
            expected_version,
        } => delete_system(state, name, *expected_version),
        Command::Compose { .. } => compose(state, command),
        Command::Decompose {
            system,
            devices,
            request_id,
            expected_version,
        } => decompose(
            state,
            system,
            devices.as_deref(),
            request_id,
            *expected_version,
        ),
        Command::Mount {
            system,
            mount,
            request_id,
            expected_version,
        } => mount_(state, system, mount, request_id, *expected_version),
        Command::Unmount {
            system,
            target,
            request_id,
            expected_version,
        } => unmount(state, system, target, request_id, *expected_version),
        Command::Failover {
            system,
            device,
            request_id,
            expected_version,
        } => failover(state, system, device, request_id, *expected_version),
        Command::SetService {
            device,
            in_service,
            reason,
            expected_version,
        } => set_service(state, device, *in_service, reason, *expected_version),
        Command::Finish { op, result } => finish(state, *op, result),
        _ => observe(state, command),
    }
}

fn repeated(
    state: &State,
    request_id: &str,
    command: &Command,
) -> Result<Option<OperationId>, CommandError> {
    let Some(op) = state.requests.get(request_id) else {
        return Ok(None);
    };
    let operation = state.pending.get(op).or_else(|| state.finished.get(op));
    let previous = operation
        .map(|o| o.kind.name())
        .unwrap_or("forgotten operation");
    if previous != command.name() {
        return Err(CommandError::RequestIdReused {
            request_id: request_id.to_string(),
            op: *op,
            previous: previous.to_string(),
            requested: command.name().to_string(),
        });
    }
    Ok(Some(*op))
}

fn check_name(what: &str, value: &str) -> Result<(), CommandError> {
    if valid_name(value) {
        Ok(())
    } else {
        Err(CommandError::InvalidName {
            what: what.to_string(),
            value: value.to_string(),
        })
    }
}

fn create_tenant(state: &State, name: &str) -> Result<Decision, CommandError> {
    check_name("tenant", name)?;
    if state.tenants.contains_key(name) {
        return Err(CommandError::TenantExists {
            tenant: name.to_string(),
        });
    }
    Ok(Decision::plain(vec![Event::TenantCreated {
        name: name.to_string(),
    }]))
}

fn create_system(
    state: &State,
    name: &str,
    tenant: &str,
    role: Role,
) -> Result<Vec<Event>, CommandError> {
    check_name("system", name)?;
    if !state.tenants.contains_key(tenant) {
        return Err(CommandError::UnknownTenant {
            tenant: tenant.to_string(),
        });
    }
    if state.systems.contains_key(name) {
        return Err(CommandError::SystemExists {
            system: name.to_string(),
        });
    }
    Ok(vec![Event::SystemCreated {
        name: name.to_string(),
        tenant: tenant.to_string(),
        role,
    }])
}

/// The system, idle, at the expected version.
fn idle_system<'a>(
    state: &'a State,
    name: &str,
    expected_version: Option<u64>,
) -> Result<&'a System, CommandError> {
    let system = state
        .systems
        .get(name)
        .ok_or_else(|| CommandError::UnknownSystem {
            system: name.to_string(),
        })?;
    if let Some(expected) = expected_version {
        if expected != system.version {
            return Err(CommandError::StaleVersion {
                what: "system".into(),
                name: name.to_string(),
                expected,
                actual: system.version,
            });
        }
    }
    if let Some(op) = system.pending {
        return Err(CommandError::SystemBusy {
            system: name.to_string(),
            op,
        });
    }
    Ok(system)
}

fn delete_system(
    state: &State,
    name: &str,
    expected_version: Option<u64>,
) -> Result<Decision, CommandError> {
    let system = idle_system(state, name, expected_version)?;
    if !system.devices.is_empty() {
        return Err(CommandError::SystemNotEmpty {
            system: name.to_string(),
            devices: system.devices.len(),
        });
    }
    Ok(Decision::plain(vec![Event::SystemDeleted {
        name: name.to_string(),
    }]))
}

fn compose(state: &State, command: &Command) -> Result<Decision, CommandError> {
    let Command::Compose {
        system,
        selection,
        create,
        tenant,
        request_id,
        expected_version,
    } = command
    else {
        return Err(CommandError::Empty {
            reason: "not a compose".into(),
        });
    };
    let mut events = Vec::new();
    let held = match state.systems.get(system) {
        Some(existing) => {
            if let Some(requested) = tenant.as_ref().or(create.as_ref().map(|c| &c.tenant)) {
                if *requested != existing.tenant {
                    return Err(CommandError::TenantMismatch {
                        system: system.clone(),
                        tenant: existing.tenant.clone(),
                        requested: requested.clone(),
                    });
                }
            }
            idle_system(state, system, *expected_version)?
                .devices
                .keys()
                .cloned()
                .collect()
        }
        None => {
            let Some(new) = create else {
                return Err(CommandError::UnknownSystem {
                    system: system.clone(),
                });
            };
            events = create_system(state, system, &new.tenant, new.role)?;
            Vec::new()
        }
    };
    let devices = select(state, selection)?;
    check_limits(state, &held, &devices)?;
    let op = state.next_operation;
    events.push(Event::ComposeRequested {
        op,
        system: system.clone(),
        devices,
        request_id: request_id.clone(),
    });
    Ok(Decision::Events {
        events,
        op: Some(op),
    })
}

fn select(state: &State, selection: &Selection) -> Result<Vec<(DeviceId, u16)>, CommandError> {
    match selection {
        Selection::Specific(ids) => {
            if ids.is_empty() {
                return Err(CommandError::Empty {
                    reason: "no devices named".into(),
                });
            }
            let mut unique: Vec<&str> = Vec::with_capacity(ids.len());
            for id in ids {
                available(state, id)?;
                if !unique.contains(&id.as_str()) {
                    unique.push(id);
                }
            }
            Ok(placement::assign_ports(state, &unique)?)
        }
        Selection::Constrained(wants) => {
            if wants.iter().all(|w| w.count == 0) {
                return Err(CommandError::Empty {
                    reason: "no device wanted".into(),
                });
            }
            let total: usize = wants.iter().map(|w| w.count as usize).sum();
            if total > SYSTEM_DEVICES_MAX {
                return Err(CommandError::OverLimit {
                    what: "devices per system".into(),
                    requested: total,
                    limit: SYSTEM_DEVICES_MAX,
                });
            }
            Ok(placement::place(state, wants)?.devices)
        }
    }
}

fn available(state: &State, id: &str) -> Result<(), CommandError> {
    let device = state
        .devices
        .get(id)
        .ok_or_else(|| CommandError::UnknownDevice {
            device: id.to_string(),
        })?;
    if let Some(holder) = &device.holder {
        return Err(CommandError::DeviceComposed {
            device: id.to_string(),
            holder: holder.clone(),
        });
    }
    let reason = if !device.present {
        "the fabric no longer reports it".to_string()
    } else if !device.in_service {
        "it is out of service".to_string()
    } else if let Health::Degraded(why) | Health::Failed(why) = &device.health {
        format!("it is unhealthy ({why})")
    } else {
        return Ok(());
    };
    Err(CommandError::DeviceUnavailable {
        device: id.to_string(),
        reason,
    })
}

fn check_limits(
    state: &State,
    held: &[DeviceId],
    adding: &[(DeviceId, u16)],
) -> Result<(), CommandError> {
    let total = held.len() + adding.len();
    if total > SYSTEM_DEVICES_MAX {
        return Err(CommandError::OverLimit {
            what: "devices per system".into(),
            requested: total,
            limit: SYSTEM_DEVICES_MAX,
        });
    }
    let is_gpu = |id: &str| {
        state
            .devices
            .get(id)
            .is_some_and(|d| d.kind == DeviceKind::Gpu)
    };
    let gpus = held.iter().filter(|id| is_gpu(id)).count()
        + adding.iter().filter(|(id, _)| is_gpu(id)).count();
    if gpus > SYSTEM_GPUS_MAX {
        return Err(CommandError::OverLimit {
            what: "GPUs per system".into(),
            requested: gpus,
            limit: SYSTEM_GPUS_MAX,
        });
    }
    Ok(())
}

fn decompose(
    state: &State,
    name: &str,
    devices: Option<&[DeviceId]>,
    request_id: &Option<String>,
    expected_version: Option<u64>,
) -> Result<Decision, CommandError> {
    let system = idle_system(state, name, expected_version)?;
    let chosen: Vec<DeviceId> = match devices {
        Some(ids) => ids.to_vec(),
        None => system.devices.keys().cloned().collect(),
    };
    if chosen.is_empty() {
        return Err(CommandError::Empty {
            reason: format!("system {name:?} holds no device to decompose"),
        });
    }
    for id in &chosen {
        if system.devices.get(id).map(|a| a.state) != Some(AttachState::Attached) {
            return Err(CommandError::DeviceNotComposed {
                device: id.clone(),
                system: name.to_string(),
            });
        }
        check_unmounted(system, id)?;
    }
    let op = state.next_operation;
    let event = Event::DecomposeRequested {
        op,
        system: name.to_string(),
        devices: chosen,
        request_id: request_id.clone(),
    };
    Ok(Decision::Events {
        events: vec![event],
        op: Some(op),
    })
}

fn check_unmounted(system: &System, device: &str) -> Result<(), CommandError> {
    for mount in system.mounts.values() {
        if matches!(&mount.source, MountSource::Namespace { device: d, .. } if d == device) {
            return Err(CommandError::DeviceMounted {
                system: system.name.clone(),
                device: device.to_string(),
                target: mount.target.clone(),
            });
        }
    }
    Ok(())
}

fn mount_(
    state: &State,
    name: &str,
    mount: &MountSpec,
    request_id: &Option<String>,
    expected_version: Option<u64>,
) -> Result<Decision, CommandError> {
    let system = idle_system(state, name, expected_version)?;
    check_name("mount target", &mount.target)?;
    if system.mounts.contains_key(&mount.target) {
        return Err(CommandError::MountExists {
            system: name.to_string(),
            target: mount.target.clone(),
        });
    }
    if let MountSource::Namespace { device, .. } = &mount.source {
        let composed = system.devices.get(device).map(|a| a.state) == Some(AttachState::Attached);
        let is_nvme = state
            .devices
            .get(device)
            .is_some_and(|d| d.kind == DeviceKind::Nvme);
        if !composed || !is_nvme {
            return Err(CommandError::DeviceNotComposed {
                device: device.clone(),
                system: name.to_string(),
            });
        }
    }
    let op = state.next_operation;
    let event = Event::MountRequested {
        op,
        system: name.to_string(),
        mount: Box::new(mount.clone()),
        request_id: request_id.clone(),
    };
    Ok(Decision::Events {
        events: vec![event],
        op: Some(op),
    })
}

fn unmount(
    state: &State,
    name: &str,
    target: &str,
    request_id: &Option<String>,
    expected_version: Option<u64>,
) -> Result<Decision, CommandError> {
    let system = idle_system(state, name, expected_version)?;
    if !system.mounts.contains_key(target) {
        return Err(CommandError::UnknownMount {
            system: name.to_string(),
            target: target.to_string(),
        });
    }
    let op = state.next_operation;
    let event = Event::UnmountRequested {
        op,
        system: name.to_string(),
        target: target.to_string(),
        request_id: request_id.clone(),
    };
    Ok(Decision::Events {
        events: vec![event],
        op: Some(op),
    })
}

fn failover(
    state: &State,
    name: &str,
    device: &str,
    request_id: &Option<String>,
    expected_version: Option<u64>,
) -> Result<Decision, CommandError> {
    let system = idle_system(state, name, expected_version)?;
    if system.devices.get(device).map(|a| a.state) != Some(AttachState::Attached) {
        return Err(CommandError::DeviceNotComposed {
            device: device.to_string(),
            system: name.to_string(),
        });
    }
    check_unmounted(system, device)?;
    let old = &state.devices[device];
    let want = Want {
        kind: old.kind,
        count: 1,
        capacity_bytes_min: old.capacity_bytes,
        rdma: old.rdma,
    };
    let placed = placement::place(state, &[want])?;
    let (to, port) =
        placed
            .devices
            .into_iter()
            .next()
            .ok_or_else(|| CommandError::NoPlacement {
                reason: "no replacement".into(),
            })?;
    let op = state.next_operation;
    let event = Event::FailoverRequested {
        op,
        system: name.to_string(),
        from: device.to_string(),
        to,
        port,
        request_id: request_id.clone(),
    };
    Ok(Decision::Events {
        events: vec![event],
        op: Some(op),
    })
}

fn set_service(
    state: &State,
    id: &str,
    in_service: bool,
    reason: &str,
    expected_version: Option<u64>,
) -> Result<Decision, CommandError> {
    let device = state
        .devices
        .get(id)
        .ok_or_else(|| CommandError::UnknownDevice {
            device: id.to_string(),
        })?;
    if let Some(expected) = expected_version {
        if expected != device.version {
            return Err(CommandError::StaleVersion {
                what: "device".into(),
                name: id.to_string(),
                expected,
                actual: device.version,
            });
        }
    }
    if device.in_service == in_service {
        return Ok(Decision::plain(Vec::new()));
    }
    Ok(Decision::plain(vec![Event::ServiceChanged {
        device: id.to_string(),
        in_service,
        reason: reason.to_string(),
    }]))
}

fn finish(
    state: &State,
    op: OperationId,
    result: &Result<(), String>,
) -> Result<Decision, CommandError> {
    let operation = state
        .pending
        .get(&op)
        .ok_or(CommandError::NotPending { op })?;
    use crate::model::state::OperationKind as K;
    let event = match (&operation.kind, result) {
        (K::Compose { .. }, Ok(())) => Event::ComposeCompleted { op },
        (K::Compose { .. }, Err(reason)) => Event::ComposeFailed {
            op,
            reason: reason.clone(),
        },
        (K::Decompose { .. }, Ok(())) => Event::DecomposeCompleted { op },
        (K::Decompose { .. }, Err(reason)) => Event::DecomposeFailed {
            op,
            reason: reason.clone(),
        },
        (K::Mount { .. }, Ok(())) => Event::MountCompleted { op },
        (K::Mount { .. }, Err(reason)) => Event::MountFailed {
            op,
            reason: reason.clone(),
        },
        (K::Unmount { .. }, Ok(())) => Event::UnmountCompleted { op },
        (K::Unmount { .. }, Err(reason)) => Event::UnmountFailed {
            op,
            reason: reason.clone(),
        },
        (K::Failover { .. }, Ok(())) => Event::FailoverCompleted { op },
        (K::Failover { .. }, Err(reason)) => Event::FailoverFailed {
            op,
            reason: reason.clone(),
        },
    };
    Ok(Decision::plain(vec![event]))
}

/// Observations: journaled only when they change what State believes.
fn observe(state: &State, command: &Command) -> Result<Decision, CommandError> {
    let events = match command {
        Command::ObservePort { port, switch, slot } => {
            let same = state
                .ports
                .get(port)
                .is_some_and(|p| p.switch == *switch && p.slot == *slot);
            if same {
                vec![]
            } else {
                vec![Event::PortDiscovered {
                    port: *port,
                    switch: switch.clone(),
                    slot: *slot,
                }]
            }
        }
        Command::ObserveDevice { facts } => {
            let same = state
                .devices
                .get(&facts.id)
                .is_some_and(|d| d.present && crate::model::state::facts_of(d) == *facts);
            if same {
                vec![]
            } else {
                vec![Event::DeviceDiscovered {
                    facts: Box::new(facts.clone()),
                }]
            }
        }
        Command::ObserveVanished { device } => {
            let known = state
                .devices
                .get(device)
                .ok_or_else(|| CommandError::UnknownDevice {
                    device: device.clone(),
                })?;
            if known.present {
                vec![Event::DeviceVanished {
                    device: device.clone(),
                }]
            } else {
                vec![]
            }
        }
        Command::ObserveHealth { device, health } => {
            let known = state
                .devices
                .get(device)
                .ok_or_else(|| CommandError::UnknownDevice {
                    device: device.clone(),
                })?;
            if known.health == *health {
                vec![]
            } else {
                vec![Event::HealthChanged {
                    device: device.clone(),
                    health: health.clone(),
                }]
            }
        }
        other => {
            return Err(CommandError::Empty {
                reason: format!("{} is not an observation", other.name()),
            })
        }
    };
    Ok(Decision::plain(events))
}
