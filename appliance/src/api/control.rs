//! The control interface: JSON lines over TCP (one request object per line, one response object
//! per line). Types, a small blocking `Client` (used by `appliance ctl` and the end-to-end tests)
//! and the server that translates requests into core commands and queries.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::core::history::{self, HistoryEntry, Subject};
use crate::core::log::EventLog;
use crate::core::metrics::LatencySummary;
use crate::core::{Accepted, CoreError, CoreHandle, StartReport};
use crate::decide::command::{Command, NewSystem, Selection};
use crate::decide::placement::Want;
use crate::model::domain::{
    AttachState, Device, DeviceKind, Health, Identity, MountSource, OperationId, Port, Role, System,
};
use crate::model::event::MountSpec;
use crate::model::state::{Counters, Operation, State};

/// Longest request line accepted.
pub const REQUEST_BYTES_MAX: u64 = 1 << 20;
/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 64;
/// How long a request with `wait` waits for its operation's outcome.
pub const OUTCOME_WAIT_MS: u64 = 120_000;

fn yes() -> bool {
    true
}

/// A control request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    ListDevices,
    ListPorts,
    ListSystems,
    ShowSystem {
        name: String,
    },
    ShowDevice {
        device: String,
    },
    ShowOperation {
        op: OperationId,
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
    /// Specific (`devices`) or constrained (`wants`) compose; creates the system when `tenant`
    /// and `role` are given and it does not exist. With `wait`, answers once the outcome is known.
    Compose {
        system: String,
        #[serde(default)]
        devices: Vec<String>,
        #[serde(default)]
        wants: Vec<Want>,
        tenant: Option<String>,
        role: Option<Role>,
        request_id: Option<String>,
        expected_version: Option<u64>,
        #[serde(default = "yes")]
        wait: bool,
    },
    Decompose {
        system: String,
        devices: Option<Vec<String>>,
        request_id: Option<String>,
        expected_version: Option<u64>,
        #[serde(default = "yes")]
        wait: bool,
    },
    Mount {
        system: String,
        mount: MountSpec,
        request_id: Option<String>,
        expected_version: Option<u64>,
        #[serde(default = "yes")]
        wait: bool,
    },
    Unmount {
        system: String,
        target: String,
        request_id: Option<String>,
        expected_version: Option<u64>,
        #[serde(default = "yes")]
        wait: bool,
    },
    Failover {
        system: String,
        device: String,
        request_id: Option<String>,
        expected_version: Option<u64>,
        #[serde(default = "yes")]
        wait: bool,
    },
    SetService {
        device: String,
        in_service: bool,
        #[serde(default)]
        reason: String,
        expected_version: Option<u64>,
    },
    /// The events about one device (id or serial) or one system.
    History {
        device: Option<String>,
        system: Option<String>,
        limit: Option<usize>,
    },
    /// State right after `sequence`, or at `time_ms` (ms since the Unix epoch).
    StateAt {
        sequence: Option<u64>,
        time_ms: Option<u64>,
    },
}

/// Counts of one device kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    pub total: u64,
    pub composed: u64,
    pub free: u64,
    pub unavailable: u64,
}

/// The status answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub identity: Identity,
    pub journal_head: u64,
    pub start: StartReport,
    pub pools: std::collections::BTreeMap<String, PoolUsage>,
    pub ports_total: u64,
    pub ports_free: u64,
    pub systems: u64,
    pub tenants: u64,
    pub operations_pending: u64,
    pub counters: Counters,
    pub commands: u64,
    pub commands_refused: u64,
    pub batches: u64,
    pub events_appended: u64,
    pub append_latency: LatencySummary,
    pub compose_latency: LatencySummary,
    pub decompose_latency: LatencySummary,
}

/// An accepted mutating request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedReply {
    pub sequence: u64,
    pub op: Option<OperationId>,
    pub repeated: bool,
    /// The operation as last seen (finished when the request waited and it finished in time).
    pub operation: Option<Operation>,
}

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// A stable code (the error variant in snake case), e.g. "device_composed", "stale_version".
    pub code: String,
    pub message: String,
}

/// A control response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(Box<StatusReport>),
    Devices(Vec<Device>),
    Ports(Vec<Port>),
    Systems(Vec<System>),
    System(System),
    Device(Device),
    Operation(Operation),
    Accepted(AcceptedReply),
    History(Vec<HistoryEntry>),
    State(Box<State>),
    Error(ErrorReply),
}

/// Errors of the control client and server.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("send request to {addr}")]
    Send {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("read response from {addr}")]
    Receive {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} closed the connection before answering")]
    Closed { addr: SocketAddr },
    #[error("response from {addr} is not valid: {reason}; line: {line:?}")]
    Decode {
        addr: SocketAddr,
        reason: String,
        line: String,
    },
    #[error("bind control listener on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A blocking control client over one TCP connection.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects to a control address ("127.0.0.1:7780").
    pub fn connect(addr: impl ToSocketAddrs + std::fmt::Display) -> Result<Client, ControlError> {
        let shown = addr.to_string();
        let stream = TcpStream::connect(&addr).map_err(|source| ControlError::Connect {
            addr: shown.clone(),
            source,
        })?;
        let peer = stream.peer_addr().map_err(|source| ControlError::Connect {
            addr: shown.clone(),
            source,
        })?;
        let _ = stream.set_nodelay(true);
        let writer = stream.try_clone().map_err(|source| ControlError::Connect {
            addr: shown,
            source,
        })?;
        Ok(Client {
            addr: peer,
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request and reads its response.
    pub fn call(&mut self, request: &Request) -> Result<Response, ControlError> {
        let mut line = serde_json::to_string(request).map_err(|e| ControlError::Decode {
            addr: self.addr,
            reason: e.to_string(),
            line: String::new(),
        })?;
        line.push('\n');
        let addr = self.addr;
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| ControlError::Send { addr, source })?;
        let mut answer = String::new();
        let read = self
            .reader
            .read_line(&mut answer)
            .map_err(|source| ControlError::Receive { addr, source })?;
        if read == 0 {
            return Err(ControlError::Closed { addr });
        }
        serde_json::from_str(answer.trim_end()).map_err(|e| ControlError::Decode {
            addr,
            reason: e.to_string(),
            line: answer,
        })
    }
}

/// What the server needs to answer requests.
#[derive(Clone)]
pub struct ServerContext {
    pub core: CoreHandle,
    pub log: Arc<dyn EventLog>,
    pub start: StartReport,
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext")
            .field("start", &self.start)
            .finish()
    }
}

/// The running control server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` and serves in background threads.
    pub fn start(listen: SocketAddr, context: ServerContext) -> Result<Server, ControlError> {
        let listener = TcpListener::bind(listen).map_err(|source| ControlError::Bind {
            addr: listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ControlError::Bind {
            addr: listen,
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(listener, context, stop2))
            .map_err(|source| ControlError::Bind { addr, source })?;
        info!(%addr, "control interface listening");
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections (open connections end at their next request).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, context: ServerContext, stop: Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if open.load(Ordering::SeqCst) >= CONNECTIONS_MAX {
            let mut stream = stream;
            let _ = reply(
                &mut stream,
                &error_reply(
                    "overloaded",
                    format!("{CONNECTIONS_MAX} connections already open"),
                ),
            );
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (context, open, stop) = (context.clone(), open.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                serve_connection(stream, &context, &stop);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "control connection thread not spawned");
        }
    }
}

fn serve_connection(stream: TcpStream, context: &ServerContext, stop: &AtomicBool) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.by_ref().take(REQUEST_BYTES_MAX).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if stop.load(Ordering::SeqCst) {
            let _ = reply(
                &mut writer,
                &error_reply("stopping", "the appliance is shutting down".into()),
            );
            return;
        }
        if !line.ends_with('\n') {
            let _ = reply(
                &mut writer,
                &error_reply(
                    "bad_request",
                    format!("request line longer than {REQUEST_BYTES_MAX} bytes"),
                ),
            );
            return;
        }
        let response = match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(request) => handle(context, request),
            Err(e) => error_reply("bad_request", format!("not a request: {e}")),
        };
        debug!(%peer, "request answered");
        if reply(&mut writer, &response).is_err() {
            return;
        }
    }
}

fn reply(stream: &mut TcpStream, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_string(response).map_err(std::io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())
}

fn error_reply(code: &str, message: String) -> Response {
    Response::Error(ErrorReply {
        code: code.to_string(),
        message,
    })
}

fn core_error(e: CoreError) -> Response {
    let code = match &e {
        CoreError::Refused(refusal) => serde_json::to_value(refusal)
            .ok()
            .and_then(|v| v.as_object().and_then(|o| o.keys().next().cloned()))
            .unwrap_or_else(|| "refused".into()),
        CoreError::Overloaded { .. } => "overloaded".into(),
        CoreError::Stopped => "stopping".into(),
        CoreError::WaitTimeout { .. } => "timeout".into(),
        CoreError::UnknownOperation { .. } => "unknown_operation".into(),
        _ => "internal".into(),
    };
    let message = match &e {
        CoreError::Refused(refusal) => refusal.to_string(),
        other => error_chain(other),
    };
    error_reply(&code, message)
}

/// An error and its sources as one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Answers one request.
pub fn handle(context: &ServerContext, request: Request) -> Response {
    match to_command(request) {
        Ok((command, wait)) => match context.core.submit(command) {
            Ok(accepted) => accepted_reply(context, accepted, wait),
            Err(e) => core_error(e),
        },
        Err(NotCommand::Query(request)) => query(context, *request),
        Err(NotCommand::Bad(response)) => *response,
    }
}

/// A request that is not a command: a query, or a malformed mutating request.
enum NotCommand {
    Query(Box<Request>),
    Bad(Box<Response>),
}

/// Answers a query from one published State. A mutating request never takes a State here: a
/// reader holding one makes the core copy State for its next batch.
fn query(context: &ServerContext, request: Request) -> Response {
    let state = context.core.state();
    match request {
        Request::Status => Response::Status(Box::new(status(context, &state))),
        Request::ListDevices => Response::Devices(state.devices.values().cloned().collect()),
        Request::ListPorts => Response::Ports(state.ports.values().cloned().collect()),
        Request::ListSystems => Response::Systems(state.systems.values().cloned().collect()),
        Request::ShowSystem { name } => match state.systems.get(&name) {
            Some(system) => Response::System(system.clone()),
            None => error_reply("unknown_system", format!("no system {name:?}")),
        },
        Request::ShowDevice { device } => match state.find_device(&device) {
            Some(found) => Response::Device(found.clone()),
            None => error_reply(
                "unknown_device",
                format!("no device with id or serial {device:?}"),
            ),
        },
        Request::ShowOperation { op } => match state.operation(op) {
            Some(operation) => Response::Operation(operation.clone()),
            None => error_reply(
                "unknown_operation",
                format!("operation {op} is not known (or finished long ago)"),
            ),
        },
        Request::History {
            device,
            system,
            limit,
        } => history_reply(context, &state, device, system, limit),
        Request::StateAt { sequence, time_ms } => {
            drop(state);
            state_at_reply(context, sequence, time_ms)
        }
        mutating => error_reply("bad_request", format!("{mutating:?} is not a query")),
    }
}

fn to_command(request: Request) -> Result<(Command, bool), NotCommand> {
    let command = match request {
        Request::CreateTenant { name } => (Command::CreateTenant { name }, false),
        Request::CreateSystem { name, tenant, role } => {
            (Command::CreateSystem { name, tenant, role }, false)
        }
        Request::DeleteSystem {
            name,
            expected_version,
        } => (
            Command::DeleteSystem {
                name,
                expected_version,
            },
            false,
        ),
        Request::Compose {
            system,
            devices,
            wants,
            tenant,
            role,
            request_id,
            expected_version,
            wait,
        } => {
            let selection = match (devices.is_empty(), wants.is_empty()) {
                (false, true) => Selection::Specific(devices),
                (true, false) => Selection::Constrained(wants),
                _ => {
                    return Err(NotCommand::Bad(Box::new(error_reply(
                        "bad_request",
                        "give either devices or wants".into(),
                    ))))
                }
            };
            let create = match (&tenant, role) {
                (Some(tenant), Some(role)) => Some(NewSystem {
                    tenant: tenant.clone(),
                    role,
                }),
                _ => None,
            };
            (
                Command::Compose {
                    system,
                    selection,
                    create,
                    tenant,
                    request_id,
                    expected_version,
                },
                wait,
            )
        }
        Request::Decompose {
            system,
            devices,
            request_id,
            expected_version,
            wait,
        } => (
            Command::Decompose {
                system,
                devices,
                request_id,
                expected_version,
            },
            wait,
        ),
        Request::Mount {
            system,
            mount,
            request_id,
            expected_version,
            wait,
        } => (
            Command::Mount {
                system,
                mount,
                request_id,
                expected_version,
            },
            wait,
        ),
        Request::Unmount {
            system,
            target,
            request_id,
            expected_version,
            wait,
        } => (
            Command::Unmount {
                system,
                target,
                request_id,
                expected_version,
            },
            wait,
        ),
        Request::Failover {
            system,
            device,
            request_id,
            expected_version,
            wait,
        } => (
            Command::Failover {
                system,
                device,
                request_id,
                expected_version,
            },
            wait,
        ),
        Request::SetService {
            device,
            in_service,
            reason,
            expected_version,
        } => (
            Command::SetService {
                device,
                in_service,
                reason,
                expected_version,
            },
            false,
        ),
        query => return Err(NotCommand::Query(Box::new(query))),
    };
    Ok(command)
}

fn accepted_reply(context: &ServerContext, accepted: Accepted, wait: bool) -> Response {
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
            Ok(done) => Some(done),
            Err(_) => context
                .core
                .state()
                .pending
                .get(&op)
                .map(|o| Operation::clone(o)),
        },
        (Some(op), false) => context.core.state().operation(op).cloned(),
        (None, _) => None,
    };
    Response::Accepted(AcceptedReply {
        sequence,
        op,
        repeated,
        operation,
    })
}

fn history_reply(
    context: &ServerContext,
    state: &State,
    device: Option<String>,
    system: Option<String>,
    limit: Option<usize>,
) -> Response {
    let subject = match (device, system) {
        (Some(device), None) => {
            // Accept a serial number too: "where was GPU serial X".
            let id = state
                .find_device(&device)
                .map(|d| d.id.clone())
                .unwrap_or(device);
            Subject::Device(id)
        }
        (None, Some(system)) => Subject::System(system),
        _ => return error_reply("bad_request", "give either device or system".into()),
    };
    match history::history(context.log.as_ref(), &subject, limit.unwrap_or(1000)) {
        Ok(entries) => Response::History(entries),
        Err(e) => error_reply("history", error_chain(&e)),
    }
}

fn state_at_reply(
    context: &ServerContext,
    sequence: Option<u64>,
    time_ms: Option<u64>,
) -> Response {
    let log = context.log.as_ref();
    let sequence = match (sequence, time_ms) {
        (Some(sequence), None) => Ok(sequence),
        (None, Some(time_ms)) => history::sequence_at(log, time_ms),
        _ => return error_reply("bad_request", "give either sequence or time_ms".into()),
    };
    match sequence.and_then(|s| history::state_at(log, s)) {
        Ok(state) => Response::State(Box::new(state)),
        Err(e) => error_reply("history", error_chain(&e)),
    }
}

fn status(context: &ServerContext, state: &State) -> StatusReport {
    let metrics = context.core.metrics();
    let mut pools = std::collections::BTreeMap::new();
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
    StatusReport {
        identity: state.identity.clone(),
        journal_head: state.head,
        start: context.start.clone(),
        pools,
        ports_total: state.ports.len() as u64,
        ports_free: state.ports.values().filter(|p| p.device.is_none()).count() as u64,
        systems: state.systems.len() as u64,
        tenants: state.tenants.len() as u64,
        operations_pending: state.pending.len() as u64,
        counters: state.counters.clone(),
        commands: metrics.commands,
        commands_refused: metrics.commands_refused,
        batches: metrics.batches,
        events_appended: metrics.events_appended,
        append_latency: metrics.append.summary(),
        compose_latency: metrics.compose.summary(),
        decompose_latency: metrics.decompose.summary(),
    }
}

/// One line per system for humans.
pub fn describe_system(system: &System) -> String {
    let devices: Vec<String> = system
        .devices
        .iter()
        .map(|(id, a)| match a.state {
            AttachState::Attached => format!("{id}@{}", a.port),
            other => format!("{id}@{}({other:?})", a.port),
        })
        .collect();
    let mounts: Vec<String> = system
        .mounts
        .values()
        .map(|m| match &m.source {
            MountSource::Namespace { device, namespace } => {
                format!("{device}n{namespace}:{}", m.target)
            }
            MountSource::Export { server, path } => format!("{server}:{path}:{}", m.target),
        })
        .collect();
    let pending = system
        .pending
        .map(|op| format!(" pending=op{op}"))
        .unwrap_or_default();
    let failure = system
        .last_failure
        .as_ref()
        .map(|f| format!(" last_failure={f:?}"))
        .unwrap_or_default();
    format!(
        "{} tenant={} role={:?} version={} devices=[{}] mounts=[{}]{pending}{failure}",
        system.name,
        system.tenant,
        system.role,
        system.version,
        devices.join(" "),
        mounts.join(" ")
    )
}

/// One line per device for humans.
pub fn describe_device(device: &Device) -> String {
    let gib = device.capacity_bytes as f64 / (1u64 << 30) as f64;
    let size = match device.kind {
        DeviceKind::Gpu => format!("{gib:.0}GiB"),
        DeviceKind::Nvme => format!("{:.1}TB", device.capacity_bytes as f64 / 1e12),
        _ => String::new(),
    };
    let health = match &device.health {
        Health::Ok => "ok".to_string(),
        Health::Degraded(why) => format!("degraded({why})"),
        Health::Failed(why) => format!("failed({why})"),
    };
    format!(
        "{:<10} {:<5} {:<8} {:<22} serial={:<12} switch={} port={} holder={} health={} service={} present={} version={}{}",
        device.id,
        device.kind.name(),
        size,
        device.model,
        device.serial,
        device.switch,
        device.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        device.holder.as_deref().unwrap_or("-"),
        health,
        if device.in_service { "in" } else { "out" },
        device.present,
        device.version,
        if device.rdma { " rdma" } else { "" }
    )
}
