//! The doors operators come in by, and the one vocabulary they share. A door (the JSON-lines
//! control socket, the CLI, the Redfish API, the console) parses its input into a [`Request`]:
//! an [`Action`] (a [`Query`], or an order's [`Verb`]) with its [`Meta`]; [`handle`] carries it
//! out and answers a [`Reply`] made of [`views`], or an [`ApiError`] with one [`ErrorCode`].
//! Each door is one parse and one render; none decides anything (`decide` does).
//!
//! - [`control`]: the JSON-lines protocol over a Unix socket or TCP, its server and client;
//! - [`render`]: the human text of replies, shared by the CLI and the console;
//! - [`views`]: the public shape of what State holds.

pub mod auth;
pub mod client;
pub mod control;
pub mod directory;
pub mod error;
pub mod redfish;
pub mod render;
pub use crate::time;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::auth::Principal;
pub use self::error::{ApiError, ErrorCode};
use self::views::{
    AcceptedView, AlarmView, DeviceView, HistoryEntryView, JournalCheckView, OperationView,
    PortView, StateAtView, StatusView, SystemView, TenantView,
};
use crate::core::history::{self, History, Subject};
use crate::core::log::EventLog;
use crate::core::{Accepted, CoreHandle, StartReport};
use crate::decide::command::{Command, Order, Verb};
use crate::model::directory::{BindPassword, DirectoryUserChange};
use crate::model::{
    AccountChange, Device, OperationId, Password, PowerAction, Privilege, RequestId, Severity,
    State, System, SystemName,
};
use crate::runtime::machine::{apply_journaled, HostMachine, Machine};

/// How long a request with `wait` waits for its operation's outcome.
pub const OUTCOME_WAIT_MS: u64 = 120_000;
/// Most history entries one answer carries when the request names no limit.
pub const HISTORY_ENTRIES_DEFAULT: usize = 1000;

/// What a history query is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryOf {
    /// A device, by id or serial number.
    Device(String),
    System(SystemName),
}

/// A point in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum At {
    Sequence(u64),
    /// Milliseconds since the Unix epoch.
    TimeMs(u64),
}

/// Everything a door can ask without changing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    Status,
    Devices,
    /// A device by id or serial number.
    Device {
        device: String,
    },
    Ports,
    Systems,
    System {
        name: SystemName,
    },
    Tenants,
    Operation {
        op: OperationId,
    },
    History {
        of: HistoryOf,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// The systems and devices as they were at a point of the journal.
    StateAt {
        at: At,
    },
    /// The active alarms, oldest first.
    Alarms,
    /// The journal's live tail: the events after sequence `after` (at most `limit`, default
    /// and most [`EVENTS_MAX`]), waiting up to `wait_ms` (at most [`EVENTS_WAIT_MS_MAX`]) for
    /// the first one when there is none yet; an empty answer means none came in the wait.
    /// A reader that asks again after the last sequence it got misses nothing.
    Events {
        after: u64,
        #[serde(default)]
        wait_ms: u64,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Reads the whole journal back, checking every record's checksum, chain link and
    /// decoding, and the snapshots (an operator's check; it takes a while on a long journal).
    VerifyJournal,
    /// The directory logins fall back to, without its bind password.
    Directory,
}

/// The most events one `Query::Events` answers.
pub const EVENTS_MAX: usize = 256;
/// The longest a `Query::Events` waits for its first event.
pub const EVENTS_WAIT_MS_MAX: u64 = 30_000;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Query(Query),
    Order(Verb),
}

/// What every order may carry (also the command line's options of every order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// An idempotency key: the same id again answers with the first outcome and journals
    /// nothing.
    #[serde(default)]
    #[arg(long)]
    pub request_id: Option<RequestId>,
    /// The version (ETag) of the system or device the order changes; a stale one is refused.
    #[serde(default)]
    #[arg(long)]
    pub expected_version: Option<u64>,
    /// Answer once the operation's outcome is known (up to `OUTCOME_WAIT_MS`), not as soon as
    /// its intent is durable (`--no-wait` on the command line).
    #[serde(default = "yes")]
    #[arg(
        long = "no-wait",
        action = clap::ArgAction::SetFalse,
        help = "Answer once the order is durable, without waiting for the operation's outcome"
    )]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            request_id: None,
            expected_version: None,
            wait: true,
        }
    }
}

/// One request of any door.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub action: Action,
    pub meta: Meta,
}

impl Request {
    pub fn query(query: Query) -> Request {
        Request {
            action: Action::Query(query),
            meta: Meta::default(),
        }
    }

    pub fn order(verb: Verb, meta: Meta) -> Request {
        Request {
            action: Action::Order(verb),
            meta,
        }
    }
}

/// What a request gets back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Status(Box<StatusView>),
    Devices(Vec<DeviceView>),
    Device(DeviceView),
    Ports(Vec<PortView>),
    Systems(Vec<SystemView>),
    System(SystemView),
    Tenants(Vec<TenantView>),
    Operation(OperationView),
    Accepted(AcceptedView),
    History(Vec<HistoryEntryView>),
    StateAt(Box<StateAtView>),
    Alarms(Vec<AlarmView>),
    JournalCheck(JournalCheckView),
    /// The directory's settings (the bind password left out), if one is set.
    Directory(Option<Box<views::DirectoryView>>),
}

/// What `handle` needs.
#[derive(Clone)]
pub struct Context {
    pub core: CoreHandle,
    pub log: Arc<dyn EventLog>,
    /// The log's history index (built at the first history question).
    pub history: Arc<History>,
    pub start: StartReport,
    /// The machine the service runs on: the management port, the power.
    pub machine: Arc<dyn Machine>,
    /// Where the HTTPS door listens, if it is served.
    pub api_listen: Option<std::net::SocketAddr>,
    /// The appliance's key, which seals the secrets the journal keeps.
    pub keyring: Option<Arc<auth::Keyring>>,
    pub started: std::time::Instant,
}

impl Context {
    /// A context on a machine that is not the service's own ([`HostMachine`]).
    pub fn new(core: CoreHandle, log: Arc<dyn EventLog>, start: StartReport) -> Context {
        Context {
            core,
            history: Arc::new(History::new(log.clone())),
            log,
            start,
            machine: Arc::new(HostMachine::default()),
            api_listen: None,
            keyring: None,
            started: std::time::Instant::now(),
        }
    }

    pub fn with_machine(self, machine: Arc<dyn Machine>) -> Context {
        Context { machine, ..self }
    }

    pub fn with_api_listen(self, api_listen: Option<std::net::SocketAddr>) -> Context {
        Context { api_listen, ..self }
    }

    pub fn with_keyring(self, keyring: Arc<auth::Keyring>) -> Context {
        Context {
            keyring: Some(keyring),
            ..self
        }
    }

    /// The API's URL: at the management port's address when the door listens on every address.
    fn api_url(&self, management: Option<&views::ManagementPort>) -> Option<String> {
        let listen = self.api_listen?;
        let host = match (
            listen.ip().is_unspecified(),
            management.and_then(|m| m.address),
        ) {
            (true, Some((address, _))) => std::net::IpAddr::V4(address),
            _ => listen.ip(),
        };
        let port = match listen.port() {
            443 => String::new(),
            port => format!(":{port}"),
        };
        Some(format!("https://{host}{port}/redfish/v1"))
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("start", &self.start)
            .finish()
    }
}

/// Carries out one request of `principal` (as its door authenticated it).
pub fn handle(
    context: &Context,
    principal: &Principal,
    request: Request,
) -> Result<Reply, ApiError> {
    let Request { action, meta } = request;
    match action {
        Action::Query(query) => {
            principal.require(Privilege::Login)?;
            answer(context, principal, query)
        }
        Action::Order(verb) => {
            authorize(principal, &verb)?;
            if let Verb::Power { action, .. } = &verb {
                context
                    .machine
                    .can_power(*action)
                    .map_err(|why| ApiError::new(ErrorCode::NotSupported, why))?;
            }
            let after = After::of(&verb);
            let order = Order {
                verb: seal_secrets(context, hash_passwords(verb)?)?,
                request_id: meta.request_id,
                expected_version: meta.expected_version,
                by: principal.by.clone(),
                scope: principal.scope.clone(),
            };
            let accepted = context.core.submit(Command::Order(order))?;
            if !accepted.repeated {
                after.carry_out(context);
            }
            Ok(Reply::Accepted(accepted_view(context, accepted, meta.wait)))
        }
    }
}

/// What an order does to the machine once it is durable.
enum After {
    Nothing,
    ApplyNetwork,
    Power(PowerAction),
}

/// How long a power order waits before it starts, so that its answer reaches the door.
const POWER_DELAY: Duration = Duration::from_millis(300);

impl After {
    fn of(verb: &Verb) -> After {
        match verb {
            Verb::SetManagementNetwork { .. } => After::ApplyNetwork,
            Verb::Power { action, .. } => After::Power(*action),
            _ => After::Nothing,
        }
    }

    fn carry_out(self, context: &Context) {
        match self {
            After::Nothing => {}
            After::ApplyNetwork => apply_journaled(&context.core, context.machine.as_ref()),
            After::Power(action) => {
                tracing::warn!(action = action.name(), "power order journaled");
                let machine = context.machine.clone();
                let spawned = std::thread::Builder::new()
                    .name("power".into())
                    .spawn(move || {
                        std::thread::sleep(POWER_DELAY);
                        machine.power(action);
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "the power order's thread did not start");
                }
            }
        }
    }
}

/// The privilege an order needs (DSP0266's privilege model): composition needs
/// ConfigureComponents, accounts ConfigureUsers (one's own password ConfigureSelf), the
/// appliance itself ConfigureManager. An account that must change its password may do only that.
fn authorize(principal: &Principal, verb: &Verb) -> Result<(), ApiError> {
    let own_password = match verb {
        Verb::ChangeAccount {
            name,
            change: AccountChange::Password { .. } | AccountChange::Totp(_),
        } => principal.is(name),
        Verb::ChangeDirectoryUser {
            name,
            change: DirectoryUserChange::Totp(_),
        } => principal.is(name),
        _ => false,
    };
    if own_password {
        return Ok(());
    }
    let needs = match verb {
        Verb::SetIdentity { .. }
        | Verb::CreateTenant { .. }
        | Verb::SetManagementNetwork { .. }
        | Verb::Power { .. } => Privilege::ConfigureManager,
        Verb::CreateAccount { .. }
        | Verb::ChangeAccount { .. }
        | Verb::DeleteAccount { .. }
        | Verb::SetDirectory { .. }
        | Verb::ChangeDirectoryUser { .. } => Privilege::ConfigureUsers,
        // Logins and logouts are the doors' own (they check the credentials or the session).
        Verb::OpenSession { .. } | Verb::CloseSession { .. } => Privilege::Login,
        Verb::CreateSystem { .. }
        | Verb::DeleteSystem { .. }
        | Verb::Compose { .. }
        | Verb::Decompose { .. }
        | Verb::Mount { .. }
        | Verb::Unmount { .. }
        | Verb::Failover { .. }
        | Verb::SetService { .. }
        | Verb::Drain { .. }
        | Verb::CreateSubscription { .. }
        | Verb::DeleteSubscription { .. }
        | Verb::Reserve { .. }
        | Verb::EndReservation { .. }
        | Verb::ClearAlarm { .. } => Privilege::ConfigureComponents,
    };
    principal.require(needs)
}

/// Checks a typed password against the policy and hashes it: only hashes go on to the core.
fn hash_passwords(verb: Verb) -> Result<Verb, ApiError> {
    let hash = |password: Password| match password {
        Password::Plain(secret) => auth::hash_password(&secret).map(Password::Hashed),
        hashed => Ok(hashed),
    };
    Ok(match verb {
        Verb::CreateAccount {
            name,
            role,
            tenant,
            password,
            password_change_required,
        } => Verb::CreateAccount {
            name,
            role,
            tenant,
            password: hash(password)?,
            password_change_required,
        },
        Verb::ChangeAccount {
            name,
            change:
                AccountChange::Password {
                    password,
                    change_required,
                },
        } => Verb::ChangeAccount {
            name,
            change: AccountChange::Password {
                password: hash(password)?,
                change_required,
            },
        },
        other => other,
    })
}

/// Reads the directory's CA bundle (a certificate that does not parse is refused) and seals
/// its bind password with the appliance's key: only sealed ones go on.
fn seal_secrets(context: &Context, verb: Verb) -> Result<Verb, ApiError> {
    let Verb::SetDirectory {
        settings: Some(settings),
    } = &verb
    else {
        return Ok(verb);
    };
    if !settings.ca_pem.trim().is_empty() {
        // Every door's CA is read here, where the bundle reaches the service.
        directory::ca_certificates(&settings.ca_pem)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e))?;
    }
    let BindPassword::Plain(secret) = &settings.bind_password else {
        return Ok(verb);
    };
    let keyring = context.keyring.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Internal,
            "this service has no key to seal the directory's bind password with",
        )
    })?;
    let sealed = keyring.seal(secret.0.as_bytes());
    Ok(Verb::SetDirectory {
        settings: Some(Box::new(
            settings.with_password(BindPassword::Sealed(sealed)),
        )),
    })
}

/// What a principal may see: every tenant's systems, or its own tenant's, and the devices free
/// to compose or held by those systems.
struct Sight<'a> {
    state: &'a State,
    scope: Option<&'a crate::model::TenantName>,
}

impl Sight<'_> {
    fn system(&self, system: &System) -> bool {
        self.scope.is_none_or(|tenant| system.tenant == *tenant)
    }

    fn system_named(&self, name: &str) -> bool {
        self.state.systems.get(name).is_some_and(|s| self.system(s))
    }

    fn device(&self, device: &Device) -> bool {
        match &device.holder {
            Some(holder) => self.system_named(holder),
            None => true,
        }
    }

    fn refuse_scoped(&self, what: &str) -> Result<(), ApiError> {
        match self.scope {
            Some(_) => Err(ApiError::new(
                ErrorCode::OutOfScope,
                format!("a tenant's account cannot {what}"),
            )),
            None => Ok(()),
        }
    }
}

/// Answers a query from one published State. An order never holds a State while it waits: a
/// reader holding one makes the core copy State for its next batch.
fn answer(context: &Context, principal: &Principal, query: Query) -> Result<Reply, ApiError> {
    let state = context.core.state();
    let sight = Sight {
        state: &state,
        scope: principal.scope.as_ref(),
    };
    let not_found = |code, message: String| Err(ApiError::new(code, message));
    match query {
        Query::Status => Ok(Reply::Status(Box::new(status(context, &state)))),
        Query::Devices => Ok(Reply::Devices(
            state
                .devices
                .values()
                .filter(|d| sight.device(d))
                .map(|d| DeviceView::of(&state, d))
                .collect(),
        )),
        Query::Device { device } => match state.find_device(&device).filter(|d| sight.device(d)) {
            Some(found) => Ok(Reply::Device(DeviceView::of(&state, found))),
            None => not_found(
                ErrorCode::UnknownDevice,
                format!("no device with id or serial {device:?}"),
            ),
        },
        Query::Ports => Ok(Reply::Ports(
            state.ports.values().map(PortView::of).collect(),
        )),
        Query::Systems => Ok(Reply::Systems(
            state
                .systems
                .values()
                .filter(|s| sight.system(s))
                .map(|s| SystemView::of(&state, s))
                .collect(),
        )),
        Query::System { name } => match state.systems.get(&name).filter(|s| sight.system(s)) {
            Some(system) => Ok(Reply::System(SystemView::of(&state, system))),
            None => not_found(ErrorCode::UnknownSystem, format!("no system {name:?}")),
        },
        Query::Tenants => Ok(Reply::Tenants(
            state
                .tenants
                .values()
                .filter(|t| sight.scope.is_none_or(|own| t.name == *own))
                .map(|t| TenantView::of(&state, t))
                .collect(),
        )),
        Query::Operation { op } => {
            let seen = state
                .operation(op)
                .filter(|o| sight.system_named(&o.system) || sight.scope.is_none());
            match seen {
                Some(operation) => Ok(Reply::Operation(OperationView::of(operation))),
                None => not_found(
                    ErrorCode::UnknownOperation,
                    format!("operation {op} is not known (or finished long ago)"),
                ),
            }
        }
        Query::History { of, limit } => {
            let subject = match of {
                HistoryOf::Device(device) => {
                    sight.refuse_scoped("read a device's history")?;
                    // Accept a serial number too: "where was GPU serial X".
                    Subject::Device(
                        state
                            .find_device(&device)
                            .map(|d| d.id.clone())
                            .unwrap_or_else(|| device.into()),
                    )
                }
                HistoryOf::System(system) => {
                    if sight.scope.is_some() && !sight.system_named(&system) {
                        return not_found(
                            ErrorCode::UnknownSystem,
                            format!("no system {system:?}"),
                        );
                    }
                    Subject::System(system)
                }
            };
            drop(state);
            history_reply(context, &subject, limit)
        }
        Query::StateAt { at } => {
            sight.refuse_scoped("read the appliance's past state")?;
            drop(state);
            state_at(context, at)
        }
        Query::Events {
            after,
            wait_ms,
            limit,
        } => {
            sight.refuse_scoped("read the journal's tail")?;
            drop(state);
            let wait = Duration::from_millis(wait_ms.min(EVENTS_WAIT_MS_MAX));
            context.core.wait_change(after, wait);
            let limit = limit.unwrap_or(EVENTS_MAX).clamp(1, EVENTS_MAX);
            let entries: Result<Vec<HistoryEntryView>, _> = (context.log.replay(after + 1))
                .take(limit)
                .map(|logged| {
                    logged.map(|logged| {
                        HistoryEntryView::of(&history::HistoryEntry {
                            sequence: logged.sequence,
                            timestamp_ms: logged.timestamp_ms,
                            event: logged.event,
                        })
                    })
                })
                .collect();
            entries
                .map(Reply::History)
                .map_err(|e| ApiError::new(ErrorCode::HistoryUnavailable, drivers::error_chain(&e)))
        }
        Query::Directory => {
            sight.refuse_scoped("read the directory's settings")?;
            principal.require(Privilege::ConfigureUsers)?;
            Ok(Reply::Directory(state.directory.as_ref().map(|d| {
                Box::new(views::DirectoryView::of(d, &state.directory_users))
            })))
        }
        Query::VerifyJournal => {
            sight.refuse_scoped("verify the journal")?;
            Ok(Reply::JournalCheck(verify_journal(context.log.as_ref())))
        }
        Query::Alarms => Ok(Reply::Alarms(
            state
                .alarms
                .values()
                .filter(|alarm| {
                    state
                        .devices
                        .get(&alarm.device)
                        .is_some_and(|d| sight.device(d))
                })
                .map(|alarm| AlarmView::of(&state, alarm))
                .collect(),
        )),
    }
}

fn history_reply(
    context: &Context,
    subject: &Subject,
    limit: Option<usize>,
) -> Result<Reply, ApiError> {
    let limit = limit.unwrap_or(HISTORY_ENTRIES_DEFAULT);
    let entries = context
        .history
        .entries(subject, limit)
        .map_err(|e| ApiError::new(ErrorCode::HistoryUnavailable, drivers::error_chain(&e)))?;
    Ok(Reply::History(
        entries.iter().map(HistoryEntryView::of).collect(),
    ))
}

fn state_at(context: &Context, at: At) -> Result<Reply, ApiError> {
    let log = context.log.as_ref();
    let unavailable = |e: history::HistoryError| {
        ApiError::new(ErrorCode::HistoryUnavailable, drivers::error_chain(&e))
    };
    let sequence = match at {
        At::Sequence(sequence) => sequence,
        At::TimeMs(time_ms) => context.history.sequence_at(time_ms).map_err(unavailable)?,
    };
    let state = history::state_at(log, sequence).map_err(unavailable)?;
    Ok(Reply::StateAt(Box::new(StateAtView::of(&state))))
}

fn accepted_view(context: &Context, accepted: Accepted, wait: bool) -> AcceptedView {
    let Accepted {
        sequence,
        op,
        repeated,
        ..
    } = accepted;
    let operation = match (op, wait) {
        (Some(op), true) => match context
            .core
            .wait_finished(op, Duration::from_millis(OUTCOME_WAIT_MS))
        {
            Ok(done) => Some(OperationView::of(&done)),
            Err(_) => context
                .core
                .state()
                .pending
                .get(&op)
                .map(|o| OperationView::of(o)),
        },
        (Some(op), false) => context.core.state().operation(op).map(OperationView::of),
        (None, _) => None,
    };
    AcceptedView {
        sequence,
        op,
        repeated,
        operation,
    }
}

fn status(context: &Context, state: &State) -> StatusView {
    let metrics = context.core.metrics();
    let management = context.machine.management();
    StatusView {
        identity: state.identity.clone(),
        journal_head: state.head,
        start: context.start.clone(),
        pools: views::pools(state),
        ports_total: state.ports.len() as u64,
        ports_free: state.pool.ports_free() as u64,
        systems: state.systems.len() as u64,
        tenants: state.tenants.len() as u64,
        operations_pending: state.pending.len() as u64,
        alarms_warning: state.alarm_count(Severity::Warning) as u64,
        alarms_critical: state.alarm_count(Severity::Critical) as u64,
        counters: state.counters.clone(),
        commands: metrics.commands,
        commands_refused: metrics.commands_refused,
        batches: metrics.batches,
        events_appended: metrics.events_appended,
        append_latency: metrics.append.summary(),
        compose_latency: metrics.compose.summary(),
        decompose_latency: metrics.decompose.summary(),
        firmware: FIRMWARE_VERSION.to_string(),
        uptime_s: context.started.elapsed().as_secs(),
        health: match (
            state.alarm_count(Severity::Critical),
            state.alarm_count(Severity::Warning),
        ) {
            (0, 0) => "OK",
            (0, _) => "Warning",
            _ => "Critical",
        }
        .to_string(),
        api_url: context.api_url(management.as_ref()),
        management,
        management_setting: state.management_network.map(|network| {
            let (applied_to, error) = match &state.management_applied {
                None => (None, None),
                Some(Ok(interface)) => (Some(interface.clone()), None),
                Some(Err(error)) => (None, Some(error.clone())),
            };
            views::ManagementSettingView {
                network,
                applied_to,
                error,
            }
        }),
    }
}

/// Reads every record of `log` from the first, and its newest snapshot.
fn verify_journal(log: &dyn EventLog) -> JournalCheckView {
    let _span = tracing::info_span!("verify_journal").entered();
    let started = std::time::Instant::now();
    let last = log.last_sequence();
    let (mut records, mut first, mut previous) = (0u64, 0u64, 0u64);
    let mut problems = Vec::new();
    for logged in log.replay(1) {
        match logged {
            Ok(logged) => {
                if logged.sequence != previous + 1 {
                    problems.push(format!(
                        "sequence {} follows {previous}: records are missing",
                        logged.sequence
                    ));
                }
                if records == 0 {
                    first = logged.sequence;
                }
                records += 1;
                previous = logged.sequence;
            }
            Err(e) => {
                problems.push(format!(
                    "after sequence {previous}: {}",
                    drivers::error_chain(&e)
                ));
                break;
            }
        }
    }
    if problems.is_empty() && previous != last {
        problems.push(format!(
            "the journal's head is {last} but its records end at {previous}"
        ));
    }
    let (snapshot, notes) = log.load_snapshot();
    problems.extend(notes.into_iter().map(|note| format!("snapshot: {note}")));
    JournalCheckView {
        records,
        first_sequence: first,
        last_sequence: previous,
        snapshot: snapshot.map(|(sequence, _)| sequence),
        problems,
        ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// The firmware's version (the appliance binary's).
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
