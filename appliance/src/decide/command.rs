//! Commands and `decide`: the pure function State + Command -> events, or a typed refusal.
//! A refused command produces no event. Every input becomes a `Command`: an operator's
//! [`Order`] (from any door: the API, the console, the local socket), an [`Observation`] of the
//! hardware, or the reconciler's verdict on an operation. Only the core calls `decide`.

use serde::{Deserialize, Serialize};

use crate::decide::placement::{self, PlacementError, Want};
use crate::model::domain::{
    valid_name, AttachState, DeviceKind, Health, Identity, MountSource, Role, System,
    SYSTEM_DEVICES_MAX, SYSTEM_GPUS_MAX,
};
use crate::model::event::{DeviceFacts, Event, Made, MountSpec, Origin};
use crate::model::failure::Failure;
use crate::model::ids::{
    DeviceId, OperationId, PortId, RequestId, SwitchName, SystemName, TenantName,
};
use crate::model::operation::{OperationKind, OrderKind};
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
    pub tenant: TenantName,
    pub role: Role,
}

/// What an operator can order, through any door. The one list of the appliance's verbs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Verb {
    SetIdentity {
        identity: Identity,
    },
    CreateTenant {
        name: TenantName,
    },
    CreateSystem {
        name: SystemName,
        tenant: TenantName,
        role: Role,
    },
    DeleteSystem {
        name: SystemName,
    },
    /// Specific or constrained compose into `system`; creates it when `create` is given and it
    /// does not exist. `tenant`, when given, must be the system's.
    Compose {
        system: SystemName,
        selection: Selection,
        #[serde(default)]
        create: Option<NewSystem>,
        #[serde(default)]
        tenant: Option<TenantName>,
    },
    /// Decompose `devices` of `system` (all of them when None).
    Decompose {
        system: SystemName,
        #[serde(default)]
        devices: Option<Vec<DeviceId>>,
    },
    Mount {
        system: SystemName,
        mount: MountSpec,
    },
    Unmount {
        system: SystemName,
        target: String,
    },
    /// Replace `device` of `system` by a healthy free device of the same kind (best fit).
    Failover {
        system: SystemName,
        device: DeviceId,
    },
    /// Take a device out of service or put it back.
    SetService {
        device: DeviceId,
        in_service: bool,
        #[serde(default)]
        reason: String,
    },
}

impl Verb {
    pub fn kind(&self) -> OrderKind {
        match self {
            Verb::SetIdentity { .. } => OrderKind::SetIdentity,
            Verb::CreateTenant { .. } => OrderKind::CreateTenant,
            Verb::CreateSystem { .. } => OrderKind::CreateSystem,
            Verb::DeleteSystem { .. } => OrderKind::DeleteSystem,
            Verb::Compose { .. } => OrderKind::Compose,
            Verb::Decompose { .. } => OrderKind::Decompose,
            Verb::Mount { .. } => OrderKind::Mount,
            Verb::Unmount { .. } => OrderKind::Unmount,
            Verb::Failover { .. } => OrderKind::Failover,
            Verb::SetService { .. } => OrderKind::SetService,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// An operator's order: a verb, with what every verb may carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub verb: Verb,
    /// The same id again answers with the first outcome and journals nothing.
    pub request_id: Option<RequestId>,
    /// The version (ETag) of the system or device the verb changes; a stale one is refused.
    pub expected_version: Option<u64>,
    /// Who gave it, through which door.
    pub by: Origin,
}

impl Order {
    /// A plain order: no request id, no expected version.
    pub fn new(verb: Verb, by: Origin) -> Order {
        Order {
            verb,
            request_id: None,
            expected_version: None,
            by,
        }
    }
}

/// What the fabric or the host reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    Port {
        port: PortId,
        switch: SwitchName,
        slot: u32,
    },
    Device {
        facts: DeviceFacts,
    },
    Vanished {
        device: DeviceId,
    },
    Health {
        device: DeviceId,
        health: Health,
    },
}

/// Everything that can ask the core to change State.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Order(Order),
    Observe(Observation),
    /// The reconciler's verdict on a pending operation.
    Finish {
        op: OperationId,
        result: Result<(), Failure>,
    },
}

impl Command {
    /// An order of the appliance itself (start-up, the reconciler).
    pub fn appliance(verb: Verb) -> Command {
        Command::Order(Order::new(verb, Origin::appliance()))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Order(order) => order.verb.name(),
            Command::Observe(Observation::Port { .. }) => "observe_port",
            Command::Observe(Observation::Device { .. }) => "observe_device",
            Command::Observe(Observation::Vanished { .. }) => "observe_vanished",
            Command::Observe(Observation::Health { .. }) => "observe_health",
            Command::Finish { .. } => "finish",
        }
    }
}

/// Why a command was refused. Nothing was journaled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    #[error("{order} creates something new: an expected version does not apply")]
    VersionNotApplicable { order: String },
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
    #[error("request id {request_id:?} was used for a {previous}, not a {requested}")]
    RequestIdReused {
        request_id: String,
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
    /// A repeated request id: answer with its first order's operation, journal nothing.
    Repeat { op: Option<OperationId> },
}

impl Decision {
    fn plain(events: Vec<Event>) -> Decision {
        Decision::Events { events, op: None }
    }

    fn operation(event: Event, op: OperationId) -> Decision {
        Decision::Events {
            events: vec![event],
            op: Some(op),
        }
    }
}

/// Decides a command against `state`. Pure.
pub fn decide(state: &State, command: &Command) -> Result<Decision, CommandError> {
    match command {
        Command::Order(order) => decide_order(state, order),
        Command::Observe(observation) => Ok(Decision::plain(observe(state, observation)?)),
        Command::Finish { op, result } => finish(state, *op, result),
    }
}

fn decide_order(state: &State, order: &Order) -> Result<Decision, CommandError> {
    if let Some(request_id) = &order.request_id {
        if let Some(repeat) = repeated(state, request_id, order.verb.kind())? {
            return Ok(repeat);
        }
    }
    let made = Made {
        by: order.by.clone(),
        request_id: order.request_id.clone(),
    };
    let version = order.expected_version;
    let unversioned = || match version {
        Some(_) => Err(CommandError::VersionNotApplicable {
            order: order.verb.name().to_string(),
        }),
        None => Ok(()),
    };
    match &order.verb {
        Verb::SetIdentity { identity } => {
            unversioned()?;
            Ok(Decision::plain(vec![Event::IdentitySet {
                identity: identity.clone(),
                made,
            }]))
        }
        Verb::CreateTenant { name } => {
            unversioned()?;
            create_tenant(state, name, made)
        }
        Verb::CreateSystem { name, tenant, role } => {
            unversioned()?;
            create_system(state, name, tenant, *role, made).map(Decision::plain)
        }
        Verb::DeleteSystem { name } => delete_system(state, name, version, made),
        Verb::Compose {
            system,
            selection,
            create,
            tenant,
        } => compose(state, system, selection, create, tenant, version, made),
        Verb::Decompose { system, devices } => {
            decompose(state, system, devices.as_deref(), version, made)
        }
        Verb::Mount { system, mount } => mount_(state, system, mount, version, made),
        Verb::Unmount { system, target } => unmount(state, system, target, version, made),
        Verb::Failover { system, device } => failover(state, system, device, version, made),
        Verb::SetService {
            device,
            in_service,
            reason,
        } => set_service(state, device, *in_service, reason, version, made),
    }
}

fn repeated(
    state: &State,
    request_id: &RequestId,
    order: OrderKind,
) -> Result<Option<Decision>, CommandError> {
    let Some(requested) = state.requests.get(request_id) else {
        return Ok(None);
    };
    if requested.order != order {
        return Err(CommandError::RequestIdReused {
            request_id: request_id.to_string(),
            previous: requested.order.name().to_string(),
            requested: order.name().to_string(),
        });
    }
    Ok(Some(Decision::Repeat { op: requested.op }))
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

fn create_tenant(state: &State, name: &TenantName, made: Made) -> Result<Decision, CommandError> {
    check_name("tenant", name)?;
    if state.tenants.contains_key(name) {
        return Err(CommandError::TenantExists {
            tenant: name.to_string(),
        });
    }
    Ok(Decision::plain(vec![Event::TenantCreated {
        name: name.clone(),
        made,
    }]))
}

fn create_system(
    state: &State,
    name: &SystemName,
    tenant: &TenantName,
    role: Role,
    made: Made,
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
        name: name.clone(),
        tenant: tenant.clone(),
        role,
        made,
    }])
}

fn stale(what: &str, name: &str, expected: Option<u64>, actual: u64) -> Result<(), CommandError> {
    match expected {
        Some(expected) if expected != actual => Err(CommandError::StaleVersion {
            what: what.into(),
            name: name.to_string(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
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
    stale("system", name, expected_version, system.version)?;
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
    name: &SystemName,
    expected_version: Option<u64>,
    made: Made,
) -> Result<Decision, CommandError> {
    let system = idle_system(state, name, expected_version)?;
    if !system.devices.is_empty() {
        return Err(CommandError::SystemNotEmpty {
            system: name.to_string(),
            devices: system.devices.len(),
        });
    }
    Ok(Decision::plain(vec![Event::SystemDeleted {
        name: name.clone(),
        made,
    }]))
}

fn compose(
    state: &State,
    system: &SystemName,
    selection: &Selection,
    create: &Option<NewSystem>,
    tenant: &Option<TenantName>,
    expected_version: Option<u64>,
    made: Made,
) -> Result<Decision, CommandError> {
    let mut events = Vec::new();
    let held: Vec<DeviceId> = match state.systems.get(system) {
        Some(existing) => {
            if let Some(requested) = tenant.as_ref().or(create.as_ref().map(|c| &c.tenant)) {
                if *requested != existing.tenant {
                    return Err(CommandError::TenantMismatch {
                        system: system.to_string(),
                        tenant: existing.tenant.to_string(),
                        requested: requested.to_string(),
                    });
                }
            }
            idle_system(state, system, expected_version)?
                .devices
                .keys()
                .cloned()
                .collect()
        }
        None => {
            let Some(new) = create else {
                return Err(CommandError::UnknownSystem {
                    system: system.to_string(),
                });
            };
            // The request id belongs to the compose; the system it creates is part of it.
            let creation = Made::by(made.by.clone());
            events = create_system(state, system, &new.tenant, new.role, creation)?;
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
        made,
    });
    Ok(Decision::Events {
        events,
        op: Some(op),
    })
}

fn select(state: &State, selection: &Selection) -> Result<Vec<(DeviceId, PortId)>, CommandError> {
    match selection {
        Selection::Specific(ids) => {
            if ids.is_empty() {
                return Err(CommandError::Empty {
                    reason: "no devices named".into(),
                });
            }
            let mut unique: Vec<&DeviceId> = Vec::with_capacity(ids.len());
            for id in ids {
                available(state, id)?;
                if !unique.contains(&id) {
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

fn available(state: &State, id: &DeviceId) -> Result<(), CommandError> {
    let device = state
        .devices
        .get(id)
        .ok_or_else(|| CommandError::UnknownDevice {
            device: id.to_string(),
        })?;
    if let Some(holder) = &device.holder {
        return Err(CommandError::DeviceComposed {
            device: id.to_string(),
            holder: holder.to_string(),
        });
    }
    let reason = if !device.present {
        "the fabric no longer reports it".to_string()
    } else if !device.in_service {
        "it is out of service".to_string()
    } else if let Some(why) = device.health.reason() {
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
    adding: &[(DeviceId, PortId)],
) -> Result<(), CommandError> {
    let total = held.len() + adding.len();
    if total > SYSTEM_DEVICES_MAX {
        return Err(CommandError::OverLimit {
            what: "devices per system".into(),
            requested: total,
            limit: SYSTEM_DEVICES_MAX,
        });
    }
    let is_gpu = |id: &DeviceId| {
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
    name: &SystemName,
    devices: Option<&[DeviceId]>,
    expected_version: Option<u64>,
    made: Made,
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
        attached(system, id)?;
        check_unmounted(system, id)?;
    }
    let op = state.next_operation;
    let event = Event::DecomposeRequested {
        op,
        system: name.clone(),
        devices: chosen,
        made,
    };
    Ok(Decision::operation(event, op))
}

/// `device` is composed into `system` and attached.
fn attached(system: &System, device: &str) -> Result<(), CommandError> {
    if system.devices.get(device).map(|a| a.state) != Some(AttachState::Attached) {
        return Err(CommandError::DeviceNotComposed {
            device: device.to_string(),
            system: system.name.to_string(),
        });
    }
    Ok(())
}

fn check_unmounted(system: &System, device: &str) -> Result<(), CommandError> {
    for mount in system.mounts.values() {
        if matches!(&mount.source, MountSource::Namespace { device: d, .. } if d == device) {
            return Err(CommandError::DeviceMounted {
                system: system.name.to_string(),
                device: device.to_string(),
                target: mount.target.clone(),
            });
        }
    }
    Ok(())
}

fn mount_(
    state: &State,
    name: &SystemName,
    mount: &MountSpec,
    expected_version: Option<u64>,
    made: Made,
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
        let is_nvme = state
            .devices
            .get(device)
            .is_some_and(|d| d.kind == DeviceKind::Nvme);
        if attached(system, device).is_err() || !is_nvme {
            return Err(CommandError::DeviceNotComposed {
                device: device.to_string(),
                system: name.to_string(),
            });
        }
    }
    let op = state.next_operation;
    let event = Event::MountRequested {
        op,
        system: name.clone(),
        mount: Box::new(mount.clone()),
        made,
    };
    Ok(Decision::operation(event, op))
}

fn unmount(
    state: &State,
    name: &SystemName,
    target: &str,
    expected_version: Option<u64>,
    made: Made,
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
        system: name.clone(),
        target: target.to_string(),
        made,
    };
    Ok(Decision::operation(event, op))
}

fn failover(
    state: &State,
    name: &SystemName,
    device: &DeviceId,
    expected_version: Option<u64>,
    made: Made,
) -> Result<Decision, CommandError> {
    let system = idle_system(state, name, expected_version)?;
    attached(system, device)?;
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
        system: name.clone(),
        from: device.clone(),
        to,
        port,
        made,
    };
    Ok(Decision::operation(event, op))
}

fn set_service(
    state: &State,
    id: &DeviceId,
    in_service: bool,
    reason: &str,
    expected_version: Option<u64>,
    made: Made,
) -> Result<Decision, CommandError> {
    let device = state
        .devices
        .get(id)
        .ok_or_else(|| CommandError::UnknownDevice {
            device: id.to_string(),
        })?;
    stale("device", id, expected_version, device.version)?;
    if device.in_service == in_service {
        return Ok(Decision::plain(Vec::new()));
    }
    Ok(Decision::plain(vec![Event::ServiceChanged {
        device: id.clone(),
        in_service,
        reason: reason.to_string(),
        made,
    }]))
}

fn finish(
    state: &State,
    op: OperationId,
    result: &Result<(), Failure>,
) -> Result<Decision, CommandError> {
    let operation = state
        .pending
        .get(&op)
        .ok_or(CommandError::NotPending { op })?;
    use OperationKind as K;
    let event = match (&operation.kind, result.clone()) {
        (K::Compose { .. }, Ok(())) => Event::ComposeCompleted { op },
        (K::Compose { .. }, Err(failure)) => Event::ComposeFailed { op, failure },
        (K::Decompose { .. }, Ok(())) => Event::DecomposeCompleted { op },
        (K::Decompose { .. }, Err(failure)) => Event::DecomposeFailed { op, failure },
        (K::Mount { .. }, Ok(())) => Event::MountCompleted { op },
        (K::Mount { .. }, Err(failure)) => Event::MountFailed { op, failure },
        (K::Unmount { .. }, Ok(())) => Event::UnmountCompleted { op },
        (K::Unmount { .. }, Err(failure)) => Event::UnmountFailed { op, failure },
        (K::Failover { .. }, Ok(())) => Event::FailoverCompleted { op },
        (K::Failover { .. }, Err(failure)) => Event::FailoverFailed { op, failure },
    };
    Ok(Decision::plain(vec![event]))
}

/// Observations: journaled only when they change what State believes.
fn observe(state: &State, observation: &Observation) -> Result<Vec<Event>, CommandError> {
    let unknown = |device: &DeviceId| CommandError::UnknownDevice {
        device: device.to_string(),
    };
    Ok(match observation {
        Observation::Port { port, switch, slot } => {
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
        Observation::Device { facts } => {
            let same = state
                .devices
                .get(&facts.id)
                .is_some_and(|d| d.present && DeviceFacts::of(d) == *facts);
            if same {
                vec![]
            } else {
                vec![Event::DeviceDiscovered {
                    facts: Box::new(facts.clone()),
                }]
            }
        }
        Observation::Vanished { device } => {
            let known = state.devices.get(device).ok_or_else(|| unknown(device))?;
            if known.present {
                vec![Event::DeviceVanished {
                    device: device.clone(),
                }]
            } else {
                vec![]
            }
        }
        Observation::Health { device, health } => {
            let known = state.devices.get(device).ok_or_else(|| unknown(device))?;
            if known.health == *health {
                vec![]
            } else {
                vec![Event::HealthChanged {
                    device: device.clone(),
                    health: health.clone(),
                }]
            }
        }
    })
}
