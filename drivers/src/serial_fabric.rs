//! The fabric link to the QEMU bench's emulated switch over a virtio-serial port.
//!
//! The protocol is JSON lines, one request or reply per line, in both directions over
//! `/dev/virtio-ports/fabric0`:
//!
//! ```text
//! guest -> switch   {"id":7,"op":"attach","device":"nvme-0","port":1}
//! switch -> guest   {"id":7,"status":"done"}
//! guest -> switch   {"id":8,"op":"inventory"}
//! switch -> guest   {"id":8,"status":"inventory","inventory":{"devices":[...],"ports":[...]}}
//! switch -> guest   {"id":9,"status":"error","kind":"unknown_device","reason":"..."}
//! switch -> guest   {"event":"port_link","port":3,"up":false,"reason":"surprise down"}
//! ```
//!
//! A line with `event` and no `id` is the switch's own report ([`FabricEvent`]), handed to
//! [`Fabric::events`]; it may come at any time, between a request and its reply too.
//!
//! Every call carries a fresh id and has a deadline; a reply whose id is not the awaited one (the
//! late reply to a call that already timed out) is skipped. The types below are the one definition
//! of the protocol: the bench's switch (crate `qemu`) serves them.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, ErrorKind as IoErrorKind, Read, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fabric::{Fabric, FabricError, FabricEvent, Inventory};

/// The guest's path of the port, as named by `-device virtserialport,name=fabric0`.
pub const PORT_PATH: &str = "/dev/virtio-ports/fabric0";
/// Longest line either side accepts; an inventory of 255 devices fits with room to spare.
pub const LINE_BYTES_MAX: usize = 1024 * 1024;
/// Default deadline of one call: more than the switch's detach wait (30 s; pciehp alone takes
/// ~5 s to honour the attention button, more on a loaded TCG host).
pub const CALL_TIMEOUT_MS_DEFAULT: u64 = 45_000;
/// How long the reader waits before reading again after end-of-file (the host side of a
/// virtio-serial port reads as EOF while nothing is connected; no event tells when it connects).
const EOF_RETRY_MS: u64 = 100;

/// One operation asked of the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FabricRequest {
    Inventory,
    Attach { device: String, port: u16 },
    Detach { device: String, port: u16 },
}

impl FabricRequest {
    /// The operation's name, for errors and logs.
    pub fn operation(&self) -> &'static str {
        match self {
            FabricRequest::Inventory => "inventory",
            FabricRequest::Attach { .. } => "attach",
            FabricRequest::Detach { .. } => "detach",
        }
    }
}

/// A request line: an id chosen by the caller and the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLine {
    pub id: u64,
    #[serde(flatten)]
    pub request: FabricRequest,
}

/// Why the switch refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    UnknownDevice,
    UnknownPort,
    /// The request is valid but the switch could not or would not do it (port busy, device
    /// attached elsewhere, QMP failed).
    Refused,
    /// The request line could not be parsed.
    BadRequest,
}

/// The switch's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FabricReply {
    Inventory { inventory: Inventory },
    Done,
    Error { kind: RefusalKind, reason: String },
}

/// A reply line: the id of the request it answers (0 when the request's id was unreadable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyLine {
    pub id: u64,
    #[serde(flatten)]
    pub reply: FabricReply,
}

/// What the reader thread hands to callers.
enum Incoming {
    Reply(ReplyLine),
    /// A line that is not a reply; kept so a call can name it when it times out.
    Garbage(String),
    Closed(String),
}

/// [`Fabric`] over a JSON-lines byte stream to the emulated switch.
#[derive(Debug)]
pub struct SerialFabric {
    link: Mutex<Link>,
    timeout: Duration,
    /// The switch's reports, until [`Fabric::events`] takes them.
    events: Mutex<Option<Receiver<FabricEvent>>>,
}

#[derive(Debug)]
struct Link {
    next_id: u64,
    lines_out: Sender<Vec<u8>>,
    incoming: Receiver<IncomingDebug>,
}

/// `Incoming` with a `Debug` impl that does not print whole inventories.
struct IncomingDebug(Incoming);

impl std::fmt::Debug for IncomingDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Incoming::Reply(line) => write!(f, "Reply(id {})", line.id),
            Incoming::Garbage(_) => write!(f, "Garbage"),
            Incoming::Closed(why) => write!(f, "Closed({why})"),
        }
    }
}

impl SerialFabric {
    /// Opens the guest's virtio-serial port (normally [`PORT_PATH`]).
    pub fn open(path: &Path) -> Result<SerialFabric, FabricError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| FabricError::Link {
                operation: "open",
                reason: format!("open {} read-write: {e}", path.display()),
            })?;
        let writer = file.try_clone().map_err(|e| FabricError::Link {
            operation: "open",
            reason: format!("duplicate the descriptor of {}: {e}", path.display()),
        })?;
        Ok(Self::from_streams(Box::new(file), Box::new(writer)))
    }

    /// Runs the protocol over any pair of byte streams (a socket in tests).
    pub fn from_streams(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
    ) -> SerialFabric {
        let (lines_out, lines_rx) = mpsc::channel::<Vec<u8>>();
        let (incoming_tx, incoming) = mpsc::channel();
        let (events_tx, events) = mpsc::channel();
        thread::Builder::new()
            .name("fabric-link-write".into())
            .spawn(move || write_loop(writer, lines_rx))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("spawn fabric-link-write: {e}"));
        thread::Builder::new()
            .name("fabric-link-read".into())
            .spawn(move || read_loop(reader, incoming_tx, events_tx))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("spawn fabric-link-read: {e}"));
        SerialFabric {
            link: Mutex::new(Link {
                next_id: 1,
                lines_out,
                incoming,
            }),
            timeout: Duration::from_millis(CALL_TIMEOUT_MS_DEFAULT),
            events: Mutex::new(Some(events)),
        }
    }

    /// Sets the deadline of every call.
    pub fn with_timeout(mut self, timeout: Duration) -> SerialFabric {
        self.timeout = timeout;
        self
    }

    /// Sends one request and waits for its reply, within the deadline.
    pub fn call(&self, request: FabricRequest) -> Result<FabricReply, FabricError> {
        let operation = request.operation();
        let _span = tracing::debug_span!("fabric_call", operation).entered();
        let mut link = self.link.lock().map_err(|_| FabricError::Link {
            operation,
            reason: "a previous call panicked while holding the link".into(),
        })?;
        let id = link.next_id;
        link.next_id += 1;
        let mut line =
            serde_json::to_vec(&RequestLine { id, request }).map_err(|e| FabricError::Link {
                operation,
                reason: format!("encode request: {e}"),
            })?;
        line.push(b'\n');
        link.lines_out.send(line).map_err(|_| FabricError::Link {
            operation,
            reason: "the link's writer has stopped".into(),
        })?;
        wait_reply(&link.incoming, id, operation, self.timeout)
    }
}

/// Waits for the reply with `id`, skipping stale replies, until the deadline.
fn wait_reply(
    incoming: &Receiver<IncomingDebug>,
    id: u64,
    operation: &'static str,
    timeout: Duration,
) -> Result<FabricReply, FabricError> {
    let deadline = Instant::now() + timeout;
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match incoming.recv_timeout(left) {
            Ok(IncomingDebug(Incoming::Reply(reply))) if reply.id == id => return Ok(reply.reply),
            Ok(IncomingDebug(Incoming::Reply(stale))) => {
                tracing::debug!(
                    stale = stale.id,
                    awaited = id,
                    "skipping a stale fabric reply"
                );
            }
            Ok(IncomingDebug(Incoming::Garbage(line))) => {
                tracing::warn!(line = %truncate(&line), "fabric link sent a line that is not a reply");
            }
            Ok(IncomingDebug(Incoming::Closed(reason))) => {
                return Err(FabricError::Link { operation, reason })
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(FabricError::Timeout {
                    operation,
                    timeout_ms,
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(FabricError::Link {
                    operation,
                    reason: "the link's reader has stopped".into(),
                })
            }
        }
    }
}

fn write_loop(mut writer: Box<dyn Write + Send>, lines: Receiver<Vec<u8>>) {
    for line in lines {
        if let Err(e) = writer.write_all(&line).and_then(|()| writer.flush()) {
            tracing::error!("write to the fabric link: {e}");
            return;
        }
    }
}

fn read_loop(
    reader: Box<dyn Read + Send>,
    incoming: Sender<IncomingDebug>,
    events: Sender<FabricEvent>,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let outcome = read_line_bounded(&mut reader, &mut line);
        let message = match outcome {
            Ok(0) => {
                // EOF: on a virtio-serial port this means the host side is not connected now.
                thread::sleep(Duration::from_millis(EOF_RETRY_MS));
                continue;
            }
            Ok(_) => match serde_json::from_slice::<FabricEvent>(&line) {
                Ok(event) => {
                    tracing::info!(?event, "the switch reported");
                    // Nobody listening (the receiver was dropped) is nobody to tell.
                    let _ = events.send(event);
                    continue;
                }
                Err(_) => parse_reply(&line),
            },
            Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
            Err(e) => Incoming::Closed(format!("read from the fabric link: {e}")),
        };
        let closed = matches!(message, Incoming::Closed(_));
        if incoming.send(IncomingDebug(message)).is_err() || closed {
            return;
        }
    }
}

/// Reads one line of at most [`LINE_BYTES_MAX`] bytes (without its newline); an over-long line
/// is an error rather than unbounded memory.
fn read_line_bounded(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let limit = u64::try_from(LINE_BYTES_MAX + 1).unwrap_or(u64::MAX);
    let n = reader.by_ref().take(limit).read_until(b'\n', line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > LINE_BYTES_MAX {
        return Err(std::io::Error::new(
            IoErrorKind::InvalidData,
            format!("a line longer than {LINE_BYTES_MAX} bytes"),
        ));
    }
    Ok(n)
}

fn parse_reply(line: &[u8]) -> Incoming {
    match serde_json::from_slice::<ReplyLine>(line) {
        Ok(reply) => Incoming::Reply(reply),
        Err(_) => Incoming::Garbage(String::from_utf8_lossy(line).into_owned()),
    }
}

fn truncate(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

/// Turns a switch's refusal into the error of the trait.
fn refusal(
    operation: &'static str,
    device: &str,
    port: u16,
    kind: RefusalKind,
    reason: String,
) -> FabricError {
    match kind {
        RefusalKind::UnknownDevice => FabricError::UnknownDevice {
            device: device.to_string(),
        },
        RefusalKind::UnknownPort => FabricError::UnknownPort { port },
        RefusalKind::Refused | RefusalKind::BadRequest => FabricError::Refused {
            operation,
            device: device.to_string(),
            port,
            reason,
        },
    }
}

fn unexpected(operation: &'static str, reply: &FabricReply) -> FabricError {
    FabricError::Link {
        operation,
        reason: format!("the switch answered with an unexpected reply: {reply:?}"),
    }
}

impl Fabric for SerialFabric {
    fn events(&self) -> Result<Receiver<FabricEvent>, FabricError> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.take().ok_or_else(|| FabricError::Link {
            operation: "events",
            reason: "events() may be called once".into(),
        })
    }

    fn inventory(&self) -> Result<Inventory, FabricError> {
        match self.call(FabricRequest::Inventory)? {
            FabricReply::Inventory { inventory } => Ok(inventory),
            FabricReply::Error { reason, .. } => Err(FabricError::Link {
                operation: "inventory",
                reason,
            }),
            other => Err(unexpected("inventory", &other)),
        }
    }

    fn attach(&self, device: &str, port: u16) -> Result<(), FabricError> {
        match self.call(FabricRequest::Attach {
            device: device.to_string(),
            port,
        })? {
            FabricReply::Done => Ok(()),
            FabricReply::Error { kind, reason } => {
                Err(refusal("attach", device, port, kind, reason))
            }
            other => Err(unexpected("attach", &other)),
        }
    }

    fn detach(&self, device: &str, port: u16) -> Result<(), FabricError> {
        match self.call(FabricRequest::Detach {
            device: device.to_string(),
            port,
        })? {
            FabricReply::Done => Ok(()),
            FabricReply::Error { kind, reason } => {
                Err(refusal("detach", device, port, kind, reason))
            }
            other => Err(unexpected("detach", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::{ClassCode, FabricPort, PoolDevice};
    use std::os::unix::net::UnixStream;

    fn inventory() -> Inventory {
        Inventory {
            devices: vec![PoolDevice {
                id: "nvme-0".into(),
                class: ClassCode::NVME,
                vendor_id: 0x1b36,
                device_id: 0x0010,
                serial: "POOL0001".into(),
                model: "QEMU NVMe Ctrl".into(),
                firmware: "1.0".into(),
                capacity_bytes: 1 << 30,
                switch: "sw0".into(),
                attached_port: None,
            }],
            ports: vec![FabricPort {
                id: 1,
                switch: "sw0".into(),
                slot: 1,
                attached: None,
            }],
        }
    }

    /// A fake switch on the other end of a socket: answers each request with `answer`.
    fn fake_peer(
        answer: impl Fn(RequestLine) -> Vec<String> + Send + 'static,
    ) -> (SerialFabric, thread::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let fabric =
            SerialFabric::from_streams(Box::new(ours.try_clone().expect("clone")), Box::new(ours))
                .with_timeout(Duration::from_secs(5));
        let peer = thread::spawn(move || {
            let mut writer = theirs.try_clone().expect("clone");
            for line in BufReader::new(theirs).lines() {
                let Ok(line) = line else { return };
                let request: RequestLine = serde_json::from_str(&line).expect("request parses");
                for out in answer(request) {
                    if writer.write_all(format!("{out}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            }
        });
        (fabric, peer)
    }

    fn reply(id: u64, reply: FabricReply) -> String {
        serde_json::to_string(&ReplyLine { id, reply }).expect("encode")
    }

    #[test]
    fn request_lines_have_the_documented_shape() {
        let line = RequestLine {
            id: 7,
            request: FabricRequest::Attach {
                device: "nvme-0".into(),
                port: 1,
            },
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"id":7,"op":"attach","device":"nvme-0","port":1}"#
        );
        let done = ReplyLine {
            id: 7,
            reply: FabricReply::Done,
        };
        assert_eq!(
            serde_json::to_string(&done).unwrap(),
            r#"{"id":7,"status":"done"}"#
        );
        let parsed: ReplyLine = serde_json::from_str(
            r#"{"id":9,"status":"error","kind":"unknown_device","reason":"no gpu-9"}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.reply,
            FabricReply::Error {
                kind: RefusalKind::UnknownDevice,
                reason: "no gpu-9".into()
            }
        );
    }

    #[test]
    fn inventory_and_attach_round_trip() {
        let (fabric, _peer) = fake_peer(|request| match request.request {
            FabricRequest::Inventory => vec![reply(
                request.id,
                FabricReply::Inventory {
                    inventory: inventory(),
                },
            )],
            FabricRequest::Attach { .. } | FabricRequest::Detach { .. } => {
                vec![reply(request.id, FabricReply::Done)]
            }
        });
        assert_eq!(fabric.inventory().unwrap(), inventory());
        fabric.attach("nvme-0", 1).unwrap();
        fabric.detach("nvme-0", 1).unwrap();
    }

    #[test]
    fn refusals_become_typed_errors() {
        let (fabric, _peer) = fake_peer(|request| {
            let (kind, reason) = match &request.request {
                FabricRequest::Attach { .. } => {
                    (RefusalKind::UnknownDevice, "no such device".to_string())
                }
                FabricRequest::Detach { .. } => {
                    (RefusalKind::Refused, "port 1 is empty".to_string())
                }
                FabricRequest::Inventory => (RefusalKind::UnknownPort, "?".to_string()),
            };
            vec![reply(request.id, FabricReply::Error { kind, reason })]
        });
        let err = fabric.attach("gpu-9", 1).unwrap_err();
        assert!(
            matches!(&err, FabricError::UnknownDevice { device } if device == "gpu-9"),
            "{err}"
        );
        let err = fabric.detach("nvme-0", 1).unwrap_err();
        assert!(
            matches!(&err, FabricError::Refused { operation: "detach", port: 1, reason, .. } if reason == "port 1 is empty"),
            "{err}"
        );
    }

    #[test]
    fn a_report_between_a_request_and_its_reply_goes_to_the_events() {
        let (fabric, _peer) = fake_peer(|request| {
            vec![
                r#"{"event":"port_link","port":1,"up":false,"reason":"surprise down"}"#.into(),
                reply(request.id, FabricReply::Done),
            ]
        });
        fabric.attach("nvme-0", 1).unwrap();
        let events = fabric.events().unwrap();
        let event = events.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            event,
            FabricEvent::PortLink {
                port: 1,
                up: false,
                reason: "surprise down".into()
            }
        );
        assert!(fabric.events().is_err(), "events() may be called once");
    }

    #[test]
    fn stale_replies_and_garbage_are_skipped() {
        let (fabric, _peer) = fake_peer(|request| {
            vec![
                "this is not json".to_string(),
                reply(
                    request.id + 1000,
                    FabricReply::Error {
                        kind: RefusalKind::Refused,
                        reason: "stale".into(),
                    },
                ),
                reply(request.id, FabricReply::Done),
            ]
        });
        fabric.attach("nvme-0", 1).unwrap();
    }

    #[test]
    fn a_silent_switch_times_out_naming_the_operation() {
        let (fabric, _peer) = fake_peer(|_| Vec::new());
        let fabric = fabric.with_timeout(Duration::from_millis(200));
        let err = fabric.attach("nvme-0", 1).unwrap_err();
        assert!(
            matches!(
                err,
                FabricError::Timeout {
                    operation: "attach",
                    timeout_ms: 200
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_broken_link_is_a_link_error() {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let fabric = SerialFabric::from_streams(Box::new(BrokenReader), Box::new(ours));
        drop(theirs);
        let err = fabric.inventory().unwrap_err();
        assert!(
            matches!(&err, FabricError::Link { operation: "inventory", reason } if reason.contains("boom")),
            "{err}"
        );
    }

    #[test]
    fn an_over_long_line_is_refused() {
        let mut long = vec![b'x'; LINE_BYTES_MAX + 10];
        long.push(b'\n');
        let mut reader = BufReader::new(&long[..]);
        let err = read_line_bounded(&mut reader, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), IoErrorKind::InvalidData);
    }

    #[test]
    fn opening_a_missing_port_names_the_path() {
        let err = SerialFabric::open(Path::new("/nonexistent/virtio-ports/fabric0")).unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/virtio-ports/fabric0"),
            "{err}"
        );
    }

    struct BrokenReader;
    impl Read for BrokenReader {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("boom"))
        }
    }
}
