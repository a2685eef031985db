//! The control protocol: JSON lines (one request object per line, one answer object per line)
//! over a Unix socket in the data directory (mode 0600: root on the box, so it speaks as root;
//! nothing of it listens on the network: remote doors are HTTPS, see [`super::redfish`]). A door
//! like any other: each line is parsed into a [`Request`], carried out by [`super::handle`], and
//! its reply or error written back. The same lines go over HTTPS to
//! `POST /redfish/v1/Oem/Appliance/Requests`. Also the blocking [`Client`] of `appliance ctl`.
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
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span, warn};

use super::{handle, Action, ApiError, Context, ErrorCode, Meta, Principal, Query, Reply, Request};
use crate::decide::command::Verb;
use crate::model::{Door, RequestId};

/// Longest request line accepted.
pub const REQUEST_BYTES_MAX: u64 = 1 << 20;
/// Longest answer line a client accepts.
pub const RESPONSE_BYTES_MAX: u64 = 64 << 20;
/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 64;
/// The socket's name in the data directory.
pub const SOCKET_NAME: &str = "control.sock";
/// The local console's socket in the data directory: the same protocol, its orders journaled as
/// made at the console (root only, mode 0600, like the control socket).
pub const CONSOLE_SOCKET_NAME: &str = "console.sock";

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

type Stream = UnixStream;

/// A blocking control client over one connection.
#[derive(Debug)]
pub struct Client {
    addr: String,
    reader: BufReader<Stream>,
    writer: Stream,
}

impl Client {
    /// Connects to the control socket at `path`.
    pub fn connect_unix(path: &Path) -> Result<Client, ControlError> {
        let shown = path.display().to_string();
        let stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
            addr: shown.clone(),
            source,
        })?;
        Client::over(shown, stream)
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

/// Binds the socket at `path`, mode 0600 (an old socket file at the path is replaced).
fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let failed = |source| ControlError::Listen {
        addr: path.display().to_string(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    Ok(listener)
}

/// The running control server.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens and serves in background threads; requests come in as made through `door`.
    pub fn start(path: &Path, door: Door, context: Context) -> Result<Server, ControlError> {
        let listener = bind(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(listener, door, context, stop2))
            .map_err(|source| ControlError::Listen {
                addr: path.display().to_string(),
                source,
            })?;
        info!(socket = %path.display(), "control socket listening");
        Ok(Server {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting connections (open connections end at their next request).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, door: Door, context: Context, stop: Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = listener.accept().map(|(stream, _)| stream);
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
    // The socket is root's (mode 0600): who reaches it is root on the box.
    let principal = Principal::root(door);
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
            handle(context, &principal, request)
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
                    reservation: None,
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
