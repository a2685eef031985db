//! The Redfish door: HTTPS (rustls, HTTP/1.1 keep-alive and HTTP/2) on hyper, one pipeline for
//! every request, and the resources of DSP0268 built from State in one place (`resources`).
//! Orders go through `api::handle` like every other door's; this module only translates URIs,
//! methods and bodies into `api::Request`s and renders their replies and errors as Redfish.
//!
//! The pipeline, in order (DSP0266, and what DMTF's protocol validator checks):
//! 1. TLS; a plain-HTTP connection fails the handshake and is closed at once.
//! 2. The whole body is read (also on a GET) within `BODY_BYTES_MAX` (413 beyond).
//! 3. `OData-Version` other than 4.0: 412.
//! 4. The public documents (`/redfish`, `/redfish/v1/`, `$metadata`, `odata`) and the login
//!    (POST to Sessions) need no credentials; everything else needs an `X-Auth-Token` session
//!    or HTTP Basic (401 with `WWW-Authenticate` otherwise), before a 404 and before any
//!    conditional header is looked at.
//! 5. An account that must change its password may only do that (403 PasswordChangeRequired).
//! 6. The URI's resource (404), the method (405 with `Allow`), the query (501 / 400).
//! 7. GET / HEAD: the resource, `$select` / `$expand` / `only`, its ETag (`If-None-Match`: 304).
//!    Writes: `If-Match` (412), the body (400 / 415), then one `api::Request`.
//!
//! Every answer carries `OData-Version: 4.0` and `Cache-Control`; resources `Allow`, `ETag`,
//! `Link rel=describedby`; errors Redfish's `error` with `@Message.ExtendedInfo`.

mod auth;
pub use self::auth::{first_admin, ADMIN_PASSWORD_FILE};
mod compose;
mod directory;
mod events;
pub mod messages;
mod metadata;
mod metrics;
mod orders;
pub mod query;
mod resources;
pub mod routes;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::{debug, info, info_span, warn, Instrument};

use self::messages::{
    RfError, HEADER_INVALID, MALFORMED_JSON, OPERATION_NOT_ALLOWED, PAYLOAD_TOO_LARGE,
};
use self::routes::Route;
use self::tls::TlsSource;
use crate::api::auth::{Keyring, Principal};
use crate::api::Context;
use crate::model::{AccountName, OperationId};

/// Largest request body read.
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Largest request head (request line and headers) hyper reads.
pub const HEAD_BYTES_MAX: usize = 64 << 10;
/// Connections served at once; more wait in the listener's backlog.
pub const CONNECTIONS_MAX: usize = 512;
/// A connection that sends nothing for this long is closed (slow clients).
pub const IDLE_TIMEOUT_MS: u64 = 30_000;
/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// The body of every answer.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How the door runs.
#[derive(Debug, Clone)]
pub struct RedfishConfig {
    pub listen: SocketAddr,
    pub tls: TlsSource,
    /// Where the appliance keeps its key and its files (the admin password it was given).
    pub data_dir: PathBuf,
    /// `/metrics` readable without credentials.
    pub metrics_public: bool,
    /// Hosts events may be pushed to (a subscription to another host is kept, but gets
    /// nothing); loopback when empty.
    pub event_hosts: Vec<String>,
    /// A session unused this long ends.
    pub session_timeout_s: u64,
    /// Failed logins in `lockout_window_s` that lock an account for `lockout_duration_s`.
    pub lockout_threshold: u32,
    pub lockout_window_s: u64,
    pub lockout_duration_s: u64,
    /// How long an order waits for its operation's outcome before it answers 202 and a task
    /// monitor.
    pub order_wait_ms: u64,
    /// How long a composition reservation holds its devices.
    pub reservation_s: u64,
    /// The firmware's version (Manager `FirmwareVersion`).
    pub firmware_version: String,
}

impl RedfishConfig {
    /// The defaults, listening on `listen`, keeping files in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> RedfishConfig {
        RedfishConfig {
            listen,
            tls: TlsSource::Generated {
                dir: data_dir.clone(),
                names: vec!["localhost".into(), "127.0.0.1".into()],
            },
            data_dir,
            metrics_public: false,
            event_hosts: Vec::new(),
            session_timeout_s: 1800,
            lockout_threshold: 5,
            lockout_window_s: 300,
            lockout_duration_s: 300,
            order_wait_ms: 10_000,
            reservation_s: 600,
            firmware_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Errors of starting the door.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the TLS certificate")]
    Tls(#[from] tls::TlsError),
    #[error("the appliance's key")]
    Key(#[from] crate::api::auth::KeyError),
    #[error("listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("start the HTTPS door's runtime")]
    Runtime(#[source] std::io::Error),
}

/// What a task monitor answers once its operation is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskKind {
    /// A compose from POST to Systems: 201 and the system.
    Compose { system: String },
    /// A decompose from DELETE of a system: the system is deleted after it, then 204.
    DeleteSystem { system: String },
    /// Another order on a system: 200 and the system.
    System { system: String },
}

/// What the door's requests share.
pub(crate) struct Service {
    pub context: Context,
    pub keyring: Keyring,
    pub config: RedfishConfig,
    /// The service's UUID (ServiceRoot, Manager): stable per appliance.
    pub uuid: String,
    /// When each session was last used (its idle timeout).
    pub seen: Mutex<HashMap<String, Instant>>,
    /// Recent failed logins per account (lockout).
    pub failures: Mutex<HashMap<AccountName, Vec<Instant>>>,
    /// Basic credentials already checked: SHA-256 of name and password -> the hash they matched.
    pub basic: Mutex<HashMap<String, String>>,
    /// Basic credentials of directory users the directory accepted: SHA-256 of name and
    /// password -> what their groups gave, and when (kept `DIRECTORY_BASIC_TTL`).
    pub directory_basic: Mutex<HashMap<String, (crate::model::directory::DirectoryGrant, Instant)>>,
    pub tasks: Mutex<HashMap<OperationId, TaskKind>>,
    pub metrics: metrics::ApiMetrics,
    pub runtime: tokio::runtime::Handle,
}

impl Service {
    /// Forgets the Basic credentials already checked (an account or the directory changed).
    pub fn forget_basic(&self) {
        self.basic.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.directory_basic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Runs `work` on a blocking thread (orders wait on the core; argon2 takes tens of ms).
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, RfError> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| RfError::internal(&format!("a worker thread failed: {e}")))
    }
}

/// The running door.
#[derive(Debug)]
pub struct RedfishServer {
    addr: SocketAddr,
    cert_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RedfishServer {
    /// Binds `config.listen` and serves on a runtime of its own (two worker threads).
    pub fn start(config: RedfishConfig, context: Context) -> Result<RedfishServer, ServeError> {
        let (tls, cert_pem) = tls::server_config(&config.tls)?;
        let keyring = Keyring::open_or_create(&config.data_dir)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("redfish")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let std_listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| ServeError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = std_listener
            .local_addr()
            .map_err(|source| ServeError::Listen {
                addr: config.listen,
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| ServeError::Listen { addr, source })?;
        let uuid = auth::stored_uuid(&config.data_dir);
        let service = Arc::new(Service {
            metrics: metrics::ApiMetrics::new(&context),
            context,
            keyring,
            config,
            uuid,
            seen: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            basic: Mutex::new(HashMap::new()),
            directory_basic: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            runtime: runtime.handle().clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let thread = std::thread::Builder::new()
            .name("redfish-door".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(listener) => listener,
                        Err(e) => return warn!(error = %e, "the HTTPS door cannot listen"),
                    };
                    events::start(&service);
                    auth::start_sweeper(&service);
                    accept_loop(listener, acceptor, service, stopped).await;
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(ServeError::Runtime)?;
        info!(%addr, "HTTPS door (Redfish) listening");
        Ok(RedfishServer {
            addr,
            cert_pem,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate's PEM (to pin it).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Stops accepting; open connections are dropped.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RedfishServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    service: Arc<Service>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => return,
            permit = slots.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, service) = (acceptor.clone(), service.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(
                Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
                acceptor.accept(tcp),
            );
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            serve_connection(tls, peer, service).await;
        });
    }
}

async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: SocketAddr,
    service: Arc<Service>,
) {
    let io = hyper_util::rt::TokioIo::new(tls);
    let handler = hyper::service::service_fn(move |request| {
        let service = service.clone();
        async move { Ok::<_, Infallible>(answer(service, peer, request).await) }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(HEAD_BYTES_MAX)
        .header_read_timeout(Duration::from_millis(IDLE_TIMEOUT_MS))
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive(true);
    builder
        .http2()
        .max_header_list_size(HEAD_BYTES_MAX as u32)
        .timer(hyper_util::rt::TokioTimer::new());
    if let Err(e) = builder.serve_connection_with_upgrades(io, handler).await {
        debug!(%peer, error = %e, "connection ended");
    }
}

/// A request as the pipeline reads it.
pub(crate) struct Asked {
    pub method: Method,
    pub path: String,
    pub route: Route,
    pub query: query::Query,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Asked {
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn answer(
    service: Arc<Service>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let span = info_span!("redfish", %method, %path, %peer);
    let response = pipeline(&service, request)
        .instrument(span)
        .await
        .unwrap_or_else(|error| error_response(&error));
    let response = with_common_headers(response);
    service
        .metrics
        .request(response.status().as_u16(), started.elapsed());
    response
}

async fn pipeline(
    service: &Arc<Service>,
    request: Request<Incoming>,
) -> Result<Response<Body>, RfError> {
    let (parts, incoming) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > BODY_BYTES_MAX) {
        // Refused before a byte of it is read.
        return Err(RfError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            PAYLOAD_TOO_LARGE,
            &[],
        ));
    }
    let body = match Limited::new(incoming, BODY_BYTES_MAX).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(RfError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                PAYLOAD_TOO_LARGE,
                &[],
            ));
        }
        // The body ended before its length, or the connection broke while it came.
        Err(_) => return Err(RfError::bad_request(MALFORMED_JSON, &[])),
    };
    if let Some(version) = parts.headers.get("odata-version") {
        if version.as_bytes() != b"4.0" {
            return Err(RfError::new(
                StatusCode::PRECONDITION_FAILED,
                HEADER_INVALID,
                &["OData-Version"],
            ));
        }
    }
    let path = parts.uri.path().to_string();
    let route = Route::parse(&path);
    let public = route.as_ref().is_some_and(|r| {
        r.is_public(&parts.method) || (*r == Route::Metrics && service.config.metrics_public)
    });
    let principal = match public {
        true => None,
        false => Some(auth::authenticate(service, &parts.headers).await?),
    };
    let Some(route) = route else {
        return Err(RfError::not_found(&path));
    };
    if !route.allowed().contains(&parts.method) {
        return Err(method_not_allowed(&route, &parts.method));
    }
    if let Some(principal) = &principal {
        auth::refuse_until_password_changed(principal, &route, &parts.method)?;
    }
    let query = query::Query::parse(parts.uri.query())?;
    let asked = Asked {
        method: parts.method,
        path,
        route,
        query,
        headers: parts.headers,
        body,
    };
    dispatch(service, principal.as_ref(), asked).await
}

fn method_not_allowed(route: &Route, method: &Method) -> RfError {
    let status = if ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        .contains(&method.as_str())
    {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::NOT_IMPLEMENTED
    };
    RfError::new(status, OPERATION_NOT_ALLOWED, &[]).header(header::ALLOW, route.allow_header())
}

async fn dispatch(
    service: &Arc<Service>,
    principal: Option<&Principal>,
    asked: Asked,
) -> Result<Response<Body>, RfError> {
    match (&asked.route, principal) {
        (Route::Versions, _) => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"v1": "/redfish/v1/"}),
        )),
        (Route::Metadata, _) => Ok(metadata::metadata_response(&asked)),
        (Route::Schema(file), _) => metadata::oem_schema_response(file, &asked)
            .ok_or_else(|| RfError::not_found(&asked.path)),
        (Route::Metrics, _) => metrics::respond(service, principal).await,
        (Route::Sessions | Route::SessionsMembers, _) if asked.method == Method::POST => {
            auth::login(service, &asked).await
        }
        (_, Some(principal)) if asked.method == Method::GET || asked.method == Method::HEAD => {
            match asked.route {
                Route::EventStream => events::stream(service, principal, &asked).await,
                Route::TaskMonitor(op) => orders::task_monitor(service, principal, op).await,
                _ => resources::get(service, Some(principal), &asked),
            }
        }
        (Route::Root | Route::Odata, None) => resources::get(service, None, &asked),
        (_, Some(principal)) => orders::write(service, principal, asked).await,
        (_, None) => Err(RfError::unauthorized()),
    }
}

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    response
}

/// An answer without a body.
pub(crate) fn empty_response(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Vec::new()));
    *response.status_mut() = status;
    response
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub(crate) fn error_response(error: &RfError) -> Response<Body> {
    let mut response = json_response(error.status, &error.body());
    for (name, value) in &error.headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name.clone(), value);
        }
    }
    response
}

fn with_common_headers(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert("odata-version", HeaderValue::from_static("4.0"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
