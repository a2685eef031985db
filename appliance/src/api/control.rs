//! The control protocol: JSON lines (one request object per line, one answer object per line)
//! over a Unix socket in the data directory (mode 0600: root on the box) or TCP. A door like any
//! other: each line is parsed into a [`Request`], carried out by [`super::handle`], and its
//! reply or error written back. Also the blocking [`Client`] used by `appliance ctl` and tests.
//!
//! ```text
//! > {"query":"status"}
//! < {"status":{"identity":{...},"journal_head":41,...}}
//! > {"query":{"system":{"name":"ws1"}}}
//! < {"error":{"code":"unknown_system","message":"no system \"ws1\""}}
//! > {"order":{"compose":{"system":"ws1","selection":{"constrained":[{"kind":"gpu","count":1}]},
//!    "create":{"tenant":"studio","role":"workstation"}}},"request_id":"r1","wait":true}
//! < {"accepted":{"sequence":44,"op":3,"repeated":false,"operation":{...,"state":"completed"}}}
//! ```
//! A request line carries exactly one of `query` and `order`, and for an order optionally
//! `request_id`, `expected_version` and `wait` (default true). Unknown fields are refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span, warn};

use super::{handle, Action, ApiError, Context, ErrorCode, Meta, Query, Reply, Request};
use crate::decide::command::Verb;
use crate::model::{Door, Origin, RequestId};

/// Longest request line accepted.
pub const REQUEST_BYTES_MAX: u64 = 1 << 20;
/// Longest answer line a client accepts.
pub const RESPONSE_BYTES_MAX: u64 = 64 << 20;
/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 64;
/// The socket's name in the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// A request line on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    query: Option<Query>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    order: Option<Verb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait: Option<bool>,
}

/// An error answer on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorLine {
    error: ApiError,
}

/// A request as one line (without the newline).
pub fn encode_request(request: &Request) -> String {
    let (query, order) = match &request.action {
        Action::Query(query) => (Some(query.clone()), None),
        Action::Order(verb) => (None, Some(verb.clone())),
    };
    let meta = &request.meta;
    let line = Line {
        query,
        order,
        request_id: meta.request_id.clone(),
        expected_version: meta.expected_version,
        wait: (!meta.wait).then_some(false),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// Parses a request line; the error names what is wrong.
pub fn decode_request(line: &str) -> Result<Request, ApiError> {
    let line: Line = serde_json::from_str(line)
        .map_err(|e| ApiError::bad_request(format!("not a request: {e}")))?;
    let action = match (line.query, line.order) {
        (Some(query), None) => Action::Query(query),
        (None, Some(verb)) => Action::Order(verb),
        _ => {
            return Err(ApiError::bad_request(
                "a request carries exactly one of \"query\" and \"order\"",
            ))
        }
    };
    if matches!(action, Action::Query(_))
        && (line.request_id.is_some() || line.expected_version.is_some() || line.wait.is_some())
    {
        return Err(ApiError::bad_request(
            "request_id, expected_version and wait go with an order, not a query",
        ));
    }
    let meta = Meta {
        request_id: line.request_id,
        expected_version: line.expected_version,
        wait: line.wait.unwrap_or(true),
    };
    Ok(Request { action, meta })
}

/// An answer as one line (without the newline).
pub fn encode_answer(answer: &Result<Reply, ApiError>) -> String {
    let encoded = match answer {
        Ok(reply) => serde_json::to_string(reply),
        Err(error) => serde_json::to_string(&ErrorLine {
            error: error.clone(),
        }),
    };
    encoded.unwrap_or_else(|e| {
        format!(r#"{{"error":{{"code":"internal","message":"answer not encoded: {e}"}}}}"#)
    })
}

/// Parses an answer line.
pub fn decode_answer(line: &str) -> Result<Result<Reply, ApiError>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    if value.get("error").is_some() {
        return serde_json::from_value::<ErrorLine>(value).map(|e| Err(e.error));
    }
    serde_json::from_value(value).map(Ok)
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
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("read the answer from {addr}")]
    Receive {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} closed the connection before answering")]
    Closed { addr: String },
    #[error("the answer from {addr} is not valid: {reason}; line: {line:?}")]
    Decode {
        addr: String,
        reason: String,
        line: String,
    },
    #[error("listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A connection, over TCP or a Unix socket.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// A blocking control client over one connection.
#[derive(Debug)]
pub struct Client {
    addr: String,
    reader: BufReader<Stream>,
    writer: Stream,
}

impl Client {
    /// Connects to a TCP control address ("127.0.0.1:7780").
    pub fn connect(
        addr: impl std::net::ToSocketAddrs + std::fmt::Display,
    ) -> Result<Client, ControlError> {
        let shown = addr.to_string();
        let stream = TcpStream::connect(&addr).map_err(|source| ControlError::Connect {
            addr: shown.clone(),
            source,
        })?;
        let _ = stream.set_nodelay(true);
        Client::over(shown, Stream::Tcp(stream))
    }

    /// Connects to the control socket at `path`.
    pub fn connect_unix(path: &Path) -> Result<Client, ControlError> {
        let shown = path.display().to_string();
        let stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
            addr: shown.clone(),
            source,
        })?;
        Client::over(shown, Stream::Unix(stream))
    }

    fn over(addr: String, stream: Stream) -> Result<Client, ControlError> {
        let writer = stream.try_clone().map_err(|source| ControlError::Connect {
            addr: addr.clone(),
            source,
        })?;
        Ok(Client {
            addr,
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request and reads its answer: the reply, or the door's error.
    pub fn call(&mut self, request: &Request) -> Result<Result<Reply, ApiError>, ControlError> {
        let mut line = encode_request(request);
        line.push('\n');
        let addr = &self.addr;
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| ControlError::Send {
                addr: addr.clone(),
                source,
            })?;
        let mut answer = String::new();
        let read = (&mut self.reader)
            .take(RESPONSE_BYTES_MAX)
            .read_line(&mut answer)
            .map_err(|source| ControlError::Receive {
                addr: addr.clone(),
                source,
            })?;
        if read == 0 {
            return Err(ControlError::Closed { addr: addr.clone() });
        }
        decode_answer(answer.trim_end()).map_err(|e| ControlError::Decode {
            addr: addr.clone(),
            reason: e.to_string(),
            line: answer,
        })
    }
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    /// A Unix socket, created mode 0600 (an old socket file at the path is replaced).
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn bind(listen: &Listen) -> Result<(Listener, Listen), ControlError> {
        let failed = |source| ControlError::Listen {
            addr: listen.to_string(),
            source,
        };
        match listen {
            Listen::Tcp(addr) => {
                let listener = TcpListener::bind(addr).map_err(failed)?;
                let bound = listener.local_addr().map_err(failed)?;
                Ok((Listener::Tcp(listener), Listen::Tcp(bound)))
            }
            Listen::Unix(path) => {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(failed(e)),
                }
                let listener = UnixListener::bind(path).map_err(failed)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(failed)?;
                Ok((Listener::Unix(listener), listen.clone()))
            }
        }
    }

    fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// The running control server.
#[derive(Debug)]
pub struct Server {
    listen: Listen,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens and serves in background threads; requests come in as made through `door`.
    pub fn start(listen: &Listen, door: Door, context: Context) -> Result<Server, ControlError> {
        let (listener, bound) = Listener::bind(listen)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(listener, door, context, stop2))
            .map_err(|source| ControlError::Listen {
                addr: bound.to_string(),
                source,
            })?;
        info!(listen = %bound, "control interface listening");
        Ok(Server {
            listen: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens (the bound port, for a TCP address with port 0).
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// Stops accepting connections (open connections end at their next request).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        match &self.listen {
            Listen::Tcp(addr) => {
                let _ = TcpStream::connect_timeout(addr, Duration::from_secs(1));
            }
            Listen::Unix(path) => {
                let _ = UnixStream::connect(path);
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Listen::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn accept_loop(listener: Listener, door: Door, context: Context, stop: Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = listener.accept();
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        if open.load(Ordering::SeqCst) >= CONNECTIONS_MAX {
            let full = ApiError::new(
                ErrorCode::Overloaded,
                format!("{CONNECTIONS_MAX} connections already open"),
            );
            let _ = reply(&mut stream, &Err(full));
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (context, open, stop) = (context.clone(), open.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                serve_connection(stream, door, &context, &stop);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "control connection thread not spawned");
        }
    }
}

fn serve_connection(stream: Stream, door: Door, context: &Context, stop: &AtomicBool) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let by = Origin::door(door);
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.by_ref().take(REQUEST_BYTES_MAX).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if stop.load(Ordering::SeqCst) {
            let stopping = ApiError::new(ErrorCode::Stopping, "the appliance is shutting down");
            let _ = reply(&mut writer, &Err(stopping));
            return;
        }
        if !line.ends_with('\n') {
            let long = ApiError::bad_request(format!(
                "request line longer than {REQUEST_BYTES_MAX} bytes"
            ));
            let _ = reply(&mut writer, &Err(long));
            return;
        }
        let answer = decode_request(line.trim_end()).and_then(|request| {
            let _span = info_span!("control_request", door = door.name()).entered();
            handle(context, &by, request)
        });
        debug!(ok = answer.is_ok(), "control request answered");
        if reply(&mut writer, &answer).is_err() {
            return;
        }
    }
}

fn reply(stream: &mut Stream, answer: &Result<Reply, ApiError>) -> std::io::Result<()> {
    let mut line = encode_answer(answer);
    line.push('\n');
    stream.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::command::Selection;
    use crate::model::SystemName;

    #[test]
    fn requests_round_trip_through_their_line() {
        let requests = [
            Request::query(Query::Status),
            Request::query(Query::System {
                name: SystemName::from("ws1"),
            }),
            Request::order(
                Verb::Decompose {
                    system: "ws1".into(),
                    devices: None,
                },
                Meta {
                    request_id: Some("r1".into()),
                    expected_version: Some(4),
                    wait: false,
                },
            ),
            Request::order(
                Verb::Compose {
                    system: "ws1".into(),
                    selection: Selection::Specific(vec!["gpu-0".into()]),
                    create: None,
                    tenant: None,
                },
                Meta::default(),
            ),
        ];
        for request in requests {
            let line = encode_request(&request);
            assert_eq!(decode_request(&line), Ok(request), "{line}");
        }
    }

    #[test]
    fn bad_lines_are_refused_with_what_is_wrong() {
        let cases = [
            ("not json", "not a request"),
            (
                r#"{"query":"status","order":{"delete_system":{"name":"a"}}}"#,
                "exactly one",
            ),
            (r#"{}"#, "exactly one"),
            (r#"{"query":"statuss"}"#, "unknown variant"),
            (r#"{"query":"status","wait":false}"#, "go with an order"),
            (
                r#"{"order":{"delete_system":{"name":"a","nme":1}}}"#,
                "unknown field",
            ),
            (r#"{"order":{"create_tenant":{}}}"#, "missing field `name`"),
            (r#"{"query":"status","extra":1}"#, "unknown field"),
        ];
        for (line, says) in cases {
            let error = decode_request(line).expect_err(line);
            assert_eq!(error.code, ErrorCode::BadRequest, "{line}");
            assert!(error.message.contains(says), "{line}: {}", error.message);
        }
    }
}
