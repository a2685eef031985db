//! Commands and `decide`: the pure function State + Command -> events, or a typed refusal.
//! A refused command produces no event. Every input becomes a `Command`: an operator's
//! [`Order`] (from any door: the API, the console, the local socket), an [`Observation`] of the
//! hardware, or the reconciler's verdict on an operation. Only the core calls `decide`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::decide::access;
use crate::decide::placement::{self, PlacementError, Want};
use crate::model::access::{
    AccountChange, AccountName, AccountRole, Password, ReservationEnd, SessionEnd, Subscription,
};
use crate::model::alarm::{AlarmEnd, Severity};
use crate::model::directory::{BindPassword, DirectorySettings, DirectoryUserChange};
use crate::model::domain::{
    valid_name, AttachState, Device, DeviceKind, Health, Identity, MountCondition, MountSource,
    Role, System, SYSTEM_DEVICES_MAX, SYSTEM_GPUS_MAX,
};
use crate::model::drain::DrainScope;
use crate::model::event::{DeviceFacts, Event, Made, MountSpec, Origin};
use crate::model::failure::Failure;
use crate::model::ids::{
    AlarmId, DeviceId, OperationId, PortId, RequestId, SwitchName, SystemName, TenantName,
};
use crate::model::network::{ManagementNetwork, PowerAction};
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
        /// The reservation whose devices this compose applies (they are free for it only).
        #[serde(default)]
        reservation: Option<String>,
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
    /// Replace `device` of `system` by a healthy free device of the same kind and at least its
    /// capacity: the same model first, then on the same switch, then the best fit.
    Failover {
        system: SystemName,
        device: DeviceId,
    },
    /// Move every system off a device, or off every device of a switch, before maintenance:
    /// the devices leave service and the reflex fails each held one over to a replacement.
    /// Refused when one would find no replacement outside the drain.
    Drain {
        scope: DrainScope,
        #[serde(default)]
        reason: String,
    },
    /// Take a device out of service or put it back. `repaired` (with `in_service` only) says
    /// the device was repaired or replaced: its health is Ok again and its alarms are cleared,
    /// which is how a device the appliance saw fail (a signal that never clears by itself, such
    /// as AER counters or a removal) becomes composable again.
    SetService {
        device: DeviceId,
        in_service: bool,
        #[serde(default)]
        reason: String,
        #[serde(default)]
        repaired: bool,
    },
    CreateAccount {
        name: AccountName,
        role: AccountRole,
        #[serde(default)]
        tenant: Option<TenantName>,
        password: Password,
        #[serde(default)]
        password_change_required: bool,
    },
    ChangeAccount {
        name: AccountName,
        change: AccountChange<Password>,
    },
    DeleteAccount {
        name: AccountName,
    },
    /// A login: the door checked the credentials and made the token; this records its hash.
    OpenSession {
        id: String,
        account: AccountName,
        token_sha256: String,
        at_ms: u64,
        /// A directory user's role and tenant (its groups', checked by the door).
        #[serde(default)]
        grant: Option<crate::model::directory::DirectoryGrant>,
    },
    CloseSession {
        id: String,
        end: SessionEnd,
    },
    CreateSubscription {
        subscription: Subscription,
    },
    DeleteSubscription {
        id: String,
    },
    /// Hold devices for a previewed composition until `expires_ms`.
    Reserve {
        id: String,
        devices: Vec<DeviceId>,
        /// The previewed manifest (JSON), applied later by the reservation's id.
        manifest: String,
        at_ms: u64,
        expires_ms: u64,
    },
    EndReservation {
        id: String,
        end: ReservationEnd,
    },
    /// An operator clears an active alarm (the device may still be failed).
    ClearAlarm {
        alarm: AlarmId,
    },
    /// The management port's static IPv4 settings; applied once durable, and at every start.
    SetManagementNetwork {
        network: ManagementNetwork,
    },
    /// Reboot or power off the appliance (journaled, then the systems' devices stay as they
    /// are: the journal brings them back at the next start).
    Power {
        action: PowerAction,
        #[serde(default)]
        reason: String,
    },
    /// Point logins at the studio's directory (None: local accounts only). The bind password
    /// reaches `decide` sealed (`api::handle` seals it).
    SetDirectory {
        settings: Option<Box<DirectorySettings<BindPassword>>>,
    },
    /// A directory user's lockout (the doors lock after repeated wrong passwords; an
    /// administrator unlocks) or TOTP secret key (sealed; its own, or cleared by an
    /// administrator).
    ChangeDirectoryUser {
        name: AccountName,
        change: DirectoryUserChange,
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
            Verb::Drain { .. } => OrderKind::Drain,
            Verb::CreateAccount { .. } => OrderKind::CreateAccount,
            Verb::ChangeAccount { .. } => OrderKind::ChangeAccount,
            Verb::DeleteAccount { .. } => OrderKind::DeleteAccount,
            Verb::OpenSession { .. } => OrderKind::OpenSession,
            Verb::CloseSession { .. } => OrderKind::CloseSession,
            Verb::CreateSubscription { .. } => OrderKind::CreateSubscription,
            Verb::DeleteSubscription { .. } => OrderKind::DeleteSubscription,
            Verb::Reserve { .. } => OrderKind::Reserve,
            Verb::EndReservation { .. } => OrderKind::EndReservation,
            Verb::ClearAlarm { .. } => OrderKind::ClearAlarm,
            Verb::SetManagementNetwork { .. } => OrderKind::SetManagementNetwork,
            Verb::Power { .. } => OrderKind::Power,
            Verb::SetDirectory { .. } => OrderKind::SetDirectory,
            Verb::ChangeDirectoryUser { .. } => OrderKind::ChangeDirectoryUser,
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
    /// The tenant whose systems the giver may touch; None = every tenant's. Another tenant's
    /// system is refused as unknown.
    pub scope: Option<TenantName>,
}

impl Order {
    /// A plain order: no request id, no expected version, every tenant's systems.
    pub fn new(verb: Verb, by: Origin) -> Order {
        Order {
            verb,
            request_id: None,
            expected_version: None,
            by,
            scope: None,
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
    /// A device's health as the host sees it now, with what it saw (`evidence`) and when.
    Health {
        device: DeviceId,
        health: Health,
        evidence: String,
        at_ms: u64,
    },
    /// A mount this server holds, as it sees it now.
    Mount {
        system: SystemName,
        target: String,
        condition: MountCondition,
        evidence: String,
    },
    /// The management port's settings, as the appliance applied them (or why it could not).
    ManagementApplied {
        interface: String,
        network: ManagementNetwork,
        error: Option<String>,
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
            Command::Observe(Observation::Mount { .. }) => "observe_mount",
            Command::Observe(Observation::ManagementApplied { .. }) => "observe_management",
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
    #[error("mount {target:?} of system {system:?}: {reason}")]
    BadMount {
        system: String,
        target: String,
        reason: String,
    },
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
    #[error("{reason}")]
    BadOrder { reason: String },
    #[error("no account {account:?}")]
    UnknownAccount { account: String },
    #[error("account {account:?} already exists")]
    AccountExists { account: String },
    #[error("account {account:?} is disabled")]
    AccountDisabled { account: String },
    #[error("account {account:?} is the last enabled administrator")]
    LastAdministrator { account: String },
    #[error("a password reached the core unhashed (a door's bug); nothing was journaled")]
    PasswordNotHashed,
    #[error("no session {id:?}")]
    UnknownSession { id: String },
    #[error("session {id:?} already exists")]
    SessionExists { id: String },
    #[error("no event subscription {id:?}")]
    UnknownSubscription { id: String },
    #[error("event subscription {id:?} already exists")]
    SubscriptionExists { id: String },
    #[error("no reservation {id:?}")]
    UnknownReservation { id: String },
    #[error("reservation {id:?} already exists")]
    ReservationExists { id: String },
    #[error("device {device} is reserved by reservation {reservation:?}")]
    DeviceReserved { device: String, reservation: String },
    #[error("a tenant's account cannot {what}")]
    OutOfScope { what: String },
    #[error("no active alarm {alarm}")]
    UnknownAlarm { alarm: AlarmId },
    #[error("no device on switch {switch:?}")]
    UnknownSwitch { switch: String },
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
    check_scope(state, order)?;
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
            reservation,
        } => {
            let asked = Compose {
                system,
                selection,
                create,
                tenant,
                reservation: reservation.as_deref(),
            };
            compose(state, asked, version, made)
        }
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
            repaired,
        } => {
            let service = Service {
                in_service: *in_service,
                repaired: *repaired,
                reason,
            };
            set_service(state, device, service, version, made)
        }
        Verb::Drain { scope, reason } => drain(state, scope, reason, version, made),
        Verb::SetManagementNetwork { network } => {
            unversioned()?;
            network
                .check()
                .map_err(|reason| CommandError::BadOrder { reason })?;
            Ok(Decision::plain(vec![Event::ManagementNetworkSet {
                network: *network,
                made,
            }]))
        }
        Verb::SetDirectory { settings } => {
            unversioned()?;
            let settings = match settings {
                None => None,
                Some(settings) => {
                    settings
                        .check()
                        .map_err(|reason| CommandError::BadOrder { reason })?;
                    match &settings.bind_password {
                        BindPassword::Sealed(sealed) => {
                            Some(settings.with_password(sealed.clone()))
                        }
                        BindPassword::Plain(_) => return Err(CommandError::PasswordNotHashed),
                    }
                }
            };
            Ok(Decision::plain(vec![Event::DirectoryConfigured {
                settings,
                made,
            }]))
        }
        Verb::ChangeDirectoryUser { name, change } => {
            unversioned()?;
            access::change_directory_user(state, name, change, made)
        }
        Verb::Power { action, reason } => {
            unversioned()?;
            Ok(Decision::plain(vec![Event::PowerRequested {
                action: *action,
                reason: reason.clone(),
                made,
            }]))
        }
        Verb::CreateAccount {
            name,
            role,
            tenant,
            password,
            password_change_required,
        } => {
            unversioned()?;
            let tenant = tenant.clone().or(order.scope.clone());
            access::create_account(
                state,
                name,
                *role,
                &tenant,
                password,
                *password_change_required,
                made,
            )
        }
        Verb::ChangeAccount { name, change } => {
            access::change_account(state, name, change, version, made)
        }
        Verb::DeleteAccount { name } => access::delete_account(state, name, version, made),
        Verb::OpenSession {
            id,
            account,
            token_sha256,
            at_ms,
            grant: None,
        } => access::open_session(state, id, account, token_sha256, *at_ms, made),
        Verb::OpenSession {
            id,
            account,
            token_sha256,
            at_ms,
            grant: Some(grant),
        } => access::open_directory_session(state, id, account, token_sha256, *at_ms, grant, made),
        Verb::CloseSession { id, end } => access::close_session(state, id, *end, made),
        Verb::CreateSubscription { subscription } => {
            access::create_subscription(state, subscription, made)
        }
        Verb::DeleteSubscription { id } => access::delete_subscription(state, id, made),
        Verb::Reserve {
            id,
            devices,
            manifest,
            at_ms,
            expires_ms,
        } => access::reserve(state, id, devices, manifest, *at_ms, *expires_ms, made),
        Verb::EndReservation { id, end } => access::end_reservation(state, id, *end, made),
        Verb::ClearAlarm { alarm } => {
            unversioned()?;
            clear_alarm(state, *alarm, made)
        }
    }
}

/// A tenant's account touches only its tenant's systems and accounts; another tenant's system
/// is unknown to it, and what belongs to no tenant (the pool's devices, tenants, the
/// appliance's identity) is out of its scope.
fn check_scope(state: &State, order: &Order) -> Result<(), CommandError> {
    let Some(scope) = &order.scope else {
        return Ok(());
    };
    let out = |what: &str| {
        Err(CommandError::OutOfScope {
            what: what.to_string(),
        })
    };
    let own_system = |name: &SystemName| match state.systems.get(name) {
        Some(system) if system.tenant != *scope => Err(CommandError::UnknownSystem {
            system: name.to_string(),
        }),
        _ => Ok(()),
    };
    let own_account = |name: &AccountName| match state.accounts.get(name) {
        Some(account) if account.tenant.as_ref() != Some(scope) => {
            Err(CommandError::UnknownAccount {
                account: name.to_string(),
            })
        }
        _ => Ok(()),
    };
    match &order.verb {
        Verb::SetIdentity { .. } => out("set the appliance's identity"),
        Verb::CreateTenant { .. } => out("create a tenant"),
        Verb::SetService { .. } => out("take a device out of service or back"),
        Verb::Drain { .. } => out("drain a device or a switch"),
        Verb::SetManagementNetwork { .. } => out("set the management network"),
        Verb::Power { .. } => out("reboot or power off the appliance"),
        Verb::SetDirectory { .. } => out("point logins at a directory"),
        Verb::CreateSystem { tenant, .. } if tenant != scope => {
            out("create a system for another tenant")
        }
        Verb::Compose {
            create: Some(new),
            system,
            ..
        } if new.tenant != *scope && !state.systems.contains_key(system) => {
            out("create a system for another tenant")
        }
        Verb::CreateAccount { tenant, .. } if tenant.as_ref() != Some(scope) => {
            out("create an account outside its tenant")
        }
        Verb::DeleteSystem { name: system }
        | Verb::Compose { system, .. }
        | Verb::Decompose { system, .. }
        | Verb::Mount { system, .. }
        | Verb::Unmount { system, .. }
        | Verb::Failover { system, .. } => own_system(system),
        Verb::ClearAlarm { .. } => out("clear an alarm"),
        Verb::ChangeAccount { name, .. } | Verb::DeleteAccount { name } => own_account(name),
        Verb::ChangeDirectoryUser { name, .. } if order.by.account.as_deref() != Some(name) => {
            out("change another directory user")
        }
        _ => Ok(()),
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

/// Refuses a stale expected version.
pub(crate) fn stale(
    what: &str,
    name: &str,
    expected: Option<u64>,
    actual: u64,
) -> Result<(), CommandError> {
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

/// The device, at the expected version.
fn device_at<'a>(
    state: &'a State,
    id: &DeviceId,
    expected_version: Option<u64>,
) -> Result<&'a Device, CommandError> {
    let device = state
        .devices
        .get(id)
        .ok_or_else(|| CommandError::UnknownDevice {
            device: id.to_string(),
        })?;
    stale("device", id, expected_version, device.version)?;
    Ok(device)
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

/// What a compose asks for.
struct Compose<'a> {
    system: &'a SystemName,
    selection: &'a Selection,
    create: &'a Option<NewSystem>,
    tenant: &'a Option<TenantName>,
    reservation: Option<&'a str>,
}

fn compose(
    state: &State,
    asked: Compose,
    expected_version: Option<u64>,
    made: Made,
) -> Result<Decision, CommandError> {
    let Compose {
        system,
        selection,
        create,
        tenant,
        reservation,
    } = asked;
    let mut events = Vec::new();
    if let Some(id) = reservation {
        if !state.reservations.contains_key(id) {
            return Err(CommandError::UnknownReservation { id: id.to_string() });
        }
        if !matches!(selection, Selection::Specific(_)) {
            return Err(CommandError::Empty {
                reason: "a reservation is applied to the devices it holds (a specific compose)"
                    .into(),
            });
        }
    }
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
    let devices = select(state, selection, reservation)?;
    check_limits(state, &held, &devices)?;
    if let Some(id) = reservation {
        events.push(Event::ReservationEnded {
            id: id.to_string(),
            end: ReservationEnd::Applied,
            made: Made::by(made.by.clone()),
        });
    }
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

fn select(
    state: &State,
    selection: &Selection,
    reservation: Option<&str>,
) -> Result<Vec<(DeviceId, PortId)>, CommandError> {
    match selection {
        Selection::Specific(ids) => {
            if ids.is_empty() {
                return Err(CommandError::Empty {
                    reason: "no devices named".into(),
                });
            }
            let mut unique: Vec<&DeviceId> = Vec::with_capacity(ids.len());
            for id in ids {
                available(state, id, reservation)?;
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

/// The device is free to compose (or held by `reservation`, which the compose applies).
pub(crate) fn available(
    state: &State,
    id: &DeviceId,
    reservation: Option<&str>,
) -> Result<(), CommandError> {
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
    if let Some(held) = &device.reservation {
        if reservation != Some(held.as_str()) {
            return Err(CommandError::DeviceReserved {
                device: id.to_string(),
                reservation: held.clone(),
            });
        }
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

fn bad_mount(system: &System, target: &str, reason: String) -> CommandError {
    CommandError::BadMount {
        system: system.name.to_string(),
        target: target.to_string(),
        reason,
    }
}

/// A mount this server makes (a mirror, a disk) is a NAS gateway's (the role that runs on this
/// server), at an absolute target.
fn check_local(system: &System, what: &str, target: &str) -> Result<(), CommandError> {
    if system.role != Role::NasGateway {
        return Err(bad_mount(
            system,
            target,
            format!(
                "a {what} is mounted on this server, by a nas_gateway; {} is a {}",
                system.name,
                system.role.name()
            ),
        ));
    }
    if !target.starts_with('/') || target.split('/').any(|part| part == "..") {
        return Err(bad_mount(
            system,
            target,
            "the target must be an absolute path without \"..\"".into(),
        ));
    }
    Ok(())
}

/// A disk mount names its filesystem by UUID (8-4-4-4-12 hexadecimal digits).
fn check_disk(system: &System, uuid: &str, target: &str) -> Result<(), CommandError> {
    check_local(system, "disk", target)?;
    let groups: Vec<&str> = uuid.split('-').collect();
    let shaped = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    if !shaped {
        return Err(bad_mount(
            system,
            target,
            format!("{uuid:?} is not a filesystem UUID (8-4-4-4-12 hexadecimal digits)"),
        ));
    }
    Ok(())
}

/// A mirror is made over two or more distinct drives that no other mount of the system uses.
fn check_mirror(system: &System, devices: &[DeviceId], target: &str) -> Result<(), CommandError> {
    let refuse = |reason: String| Err(bad_mount(system, target, reason));
    check_local(system, "mirror", target)?;
    let distinct: BTreeSet<&DeviceId> = devices.iter().collect();
    if devices.len() < 2 || distinct.len() != devices.len() {
        return refuse("a mirror needs two or more distinct drives".into());
    }
    for mount in system.mounts.values() {
        if let Some(used) = devices.iter().find(|d| mount.source.uses(d)) {
            return refuse(format!("{used} is already mounted at {}", mount.target));
        }
    }
    Ok(())
}

/// A device that carries a mount of a system the system makes itself (a namespace) may not
/// be decomposed while mounted; one under a mirror fails over with the mirror.
fn check_unmounted(system: &System, device: &str) -> Result<(), CommandError> {
    for mount in system.mounts.values() {
        if mount.source.uses(device) {
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
    // A disk mount lives on an HBA, every other mount on NVMe drives.
    let kind = match &mount.source {
        MountSource::Disk { .. } => DeviceKind::Hba,
        _ => DeviceKind::Nvme,
    };
    for device in mount.source.devices() {
        let is_kind = state.devices.get(device).is_some_and(|d| d.kind == kind);
        if attached(system, device).is_err() || !is_kind {
            return Err(CommandError::DeviceNotComposed {
                device: device.to_string(),
                system: name.to_string(),
            });
        }
    }
    match &mount.source {
        MountSource::Mirror { devices } => check_mirror(system, devices, &mount.target)?,
        MountSource::Disk { uuid, .. } => check_disk(system, uuid, &mount.target)?,
        MountSource::Namespace { .. } | MountSource::Export { .. } => {}
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
    let old = &state.devices[device];
    let (to, port) = placement::replacement(state, old)?;
    let op = state.next_operation;
    // The old device leaves service with the failover (a plain record: the request id, if
    // any, is the failover's), so that it is not placed again until an operator returns it.
    let out_of_service = old.in_service.then(|| Event::ServiceChanged {
        device: device.clone(),
        in_service: false,
        reason: match &old.health {
            Health::Ok => format!("failed over from by operation {op}"),
            health => format!("{}; failed over from by operation {op}", health.name()),
        },
        made: Made {
            by: made.by.clone(),
            request_id: None,
        },
    });
    let event = Event::FailoverRequested {
        op,
        system: name.clone(),
        from: device.clone(),
        to,
        port,
        made,
    };
    Ok(Decision::Events {
        events: std::iter::once(event).chain(out_of_service).collect(),
        op: Some(op),
    })
}

/// What a service order asks of a device.
struct Service<'a> {
    in_service: bool,
    repaired: bool,
    reason: &'a str,
}

fn set_service(
    state: &State,
    id: &DeviceId,
    service: Service,
    expected_version: Option<u64>,
    made: Made,
) -> Result<Decision, CommandError> {
    let device = device_at(state, id, expected_version)?;
    if service.repaired && !service.in_service {
        return Err(CommandError::BadOrder {
            reason: format!("{id} cannot be repaired and taken out of service at once"),
        });
    }
    // A repaired device is healthy again and its alarms end, cleared by the operator.
    let mut events = Vec::new();
    if service.repaired {
        if !device.health.is_ok() {
            events.push(Event::HealthChanged {
                device: id.clone(),
                health: Health::Ok,
            });
        }
        events.extend(state.alarms_of(id).map(|alarm| Event::AlarmEnded {
            alarm: alarm.id,
            device: id.clone(),
            end: AlarmEnd::Cleared,
            made: made.clone(),
        }));
    }
    if device.in_service == service.in_service && events.is_empty() {
        return Ok(Decision::plain(Vec::new()));
    }
    // Otherwise its alarms stand: a device returned to service while still failed is the
    // reflex's again (a retry, say once a spare is in the pool); clearing the alarm is what
    // stops it.
    events.push(Event::ServiceChanged {
        device: id.clone(),
        in_service: service.in_service,
        reason: service.reason.to_string(),
        made,
    });
    Ok(Decision::plain(events))
}

/// The scope's devices leave service in one event; each held one is marked draining, and the
/// reflex (`decide::reflex`) moves its system off it. Accepted only when every held device would
/// find a replacement outside the drain, each taken in turn from a scratch copy of the free
/// pool, so that an accepted drain can be carried out with the pool as it is.
fn drain(
    state: &State,
    scope: &DrainScope,
    reason: &str,
    expected_version: Option<u64>,
    made: Made,
) -> Result<Decision, CommandError> {
    let devices: Vec<DeviceId> = match scope {
        DrainScope::Device(id) => {
            device_at(state, id, expected_version)?;
            vec![id.clone()]
        }
        DrainScope::Switch(switch) => {
            if expected_version.is_some() {
                return Err(CommandError::VersionNotApplicable {
                    order: "drain of a switch".into(),
                });
            }
            let on: Vec<DeviceId> = (state.devices.values())
                .filter(|d| d.switch == *switch)
                .map(|d| d.id.clone())
                .collect();
            if on.is_empty() {
                return Err(CommandError::UnknownSwitch {
                    switch: switch.to_string(),
                });
            }
            on
        }
    };
    let done = |id: &DeviceId| {
        let device = &state.devices[id];
        !device.in_service && (device.holder.is_none() || state.drains.contains_key(id))
    };
    if devices.iter().all(done) {
        return Ok(Decision::plain(Vec::new()));
    }
    replacements(state, &devices)?;
    Ok(Decision::plain(vec![Event::DrainRequested {
        scope: scope.clone(),
        devices,
        reason: reason.to_string(),
        made,
    }]))
}

/// Whether every device of `draining` that a system holds (and is not already leaving) finds a
/// replacement of its kind and capacity outside `draining`, none of them taken twice.
fn replacements(state: &State, draining: &[DeviceId]) -> Result<(), CommandError> {
    let mut scratch = state.clone();
    for id in draining {
        scratch.pool.remove_device(&state.devices[id]);
    }
    for id in draining {
        let device = &state.devices[id];
        let Some(holder) = &device.holder else {
            continue;
        };
        let leaving = state.systems[holder]
            .devices
            .get(id)
            .is_none_or(|a| a.state == AttachState::Detaching);
        if leaving {
            continue;
        }
        let (to, port) =
            placement::replacement(&scratch, device).map_err(|e| CommandError::NoPlacement {
                reason: format!(
                    "no replacement for {id} of system {holder:?} outside the drain: {e}"
                ),
            })?;
        scratch.pool.remove_device(&state.devices[&to]);
        scratch.pool.remove_port(&state.ports[&port]);
    }
    Ok(())
}

fn clear_alarm(state: &State, alarm: AlarmId, made: Made) -> Result<Decision, CommandError> {
    let found = state
        .alarms
        .get(&alarm)
        .ok_or(CommandError::UnknownAlarm { alarm })?;
    Ok(Decision::plain(vec![Event::AlarmEnded {
        alarm,
        device: found.device.clone(),
        end: AlarmEnd::Cleared,
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
        Observation::Health {
            device,
            health,
            evidence,
            at_ms,
        } => {
            let known = state.devices.get(device).ok_or_else(|| unknown(device))?;
            if known.health == *health {
                return Ok(vec![]);
            }
            let changed = Event::HealthChanged {
                device: device.clone(),
                health: health.clone(),
            };
            let mut events = vec![changed];
            match (Severity::of(health), health.reason()) {
                // Healthy again: every alarm of the device ends, recovered.
                (None, _) | (_, None) => {
                    events.extend(state.alarms_of(device).map(|alarm| Event::AlarmEnded {
                        alarm: alarm.id,
                        device: device.clone(),
                        end: AlarmEnd::Recovered,
                        made: Made {
                            by: Origin::appliance(),
                            request_id: None,
                        },
                    }))
                }
                // A new fault (the same one seen again changed nothing above) raises an alarm;
                // an alarm already raised for it stays the one.
                (Some(severity), Some(message)) => {
                    let raised = state
                        .alarms_of(device)
                        .any(|alarm| alarm.severity == severity && alarm.message == message);
                    if !raised {
                        events.push(Event::AlarmRaised {
                            alarm: AlarmId(state.next_alarm.0.max(1)),
                            device: device.clone(),
                            severity,
                            message: message.to_string(),
                            evidence: evidence.clone(),
                            at_ms: *at_ms,
                        });
                    }
                }
            }
            events
        }
        Observation::Mount {
            system,
            target,
            condition,
            evidence,
        } => {
            let mount = state
                .systems
                .get(system)
                .and_then(|s| s.mounts.get(target))
                .ok_or_else(|| CommandError::UnknownMount {
                    system: system.to_string(),
                    target: target.clone(),
                })?;
            if mount.condition == Some(*condition) {
                vec![]
            } else {
                vec![Event::MountObserved {
                    system: system.clone(),
                    target: target.clone(),
                    condition: *condition,
                    evidence: evidence.clone(),
                }]
            }
        }
        Observation::ManagementApplied {
            interface,
            network,
            error,
        } => vec![Event::ManagementNetworkApplied {
            interface: interface.clone(),
            network: *network,
            error: error.clone(),
        }],
    })
}
