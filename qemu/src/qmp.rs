//! A blocking QMP client: the greeting and capabilities negotiation, commands with ids and a
//! deadline, and a queue of asynchronous events (DEVICE_DELETED, WATCHDOG, SHUTDOWN...) that
//! callers wait on.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// Default deadline of one command.
pub const COMMAND_TIMEOUT_MS: u64 = 10_000;
/// How often a removal that has no DEVICE_DELETED yet looks for the device in QEMU's tree.
const REMOVAL_POLL: Duration = Duration::from_millis(200);
/// Events kept before the oldest are dropped (nobody waited for them).
pub const EVENTS_MAX: usize = 1024;

/// Errors of the QMP client.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP {operation} on {what}: {source}")]
    Io {
        operation: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP greeting was not valid: {line:?}")]
    Greeting { line: String },
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP command {command} got no answer within {timeout_ms} ms")]
    CommandTimeout { command: String, timeout_ms: u64 },
    #[error("no QMP event {what} within {timeout_ms} ms")]
    EventTimeout { what: String, timeout_ms: u64 },
    #[error("QMP connection closed during {operation}")]
    Closed { operation: String },
}

/// An asynchronous event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

#[derive(Debug, Default)]
struct EventQueue {
    events: VecDeque<Event>,
    closed: bool,
}

/// A connected QMP session. Commands are serialized; events are queued for [`Qmp::wait_event`].
#[derive(Debug)]
pub struct Qmp {
    writer: Mutex<(UnixStream, u64)>,
    replies: Mutex<Receiver<Value>>,
    events: Arc<(Mutex<EventQueue>, Condvar)>,
}

impl Qmp {
    /// Takes an accepted or connected stream, reads the greeting and negotiates capabilities.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        let io = |operation| {
            move |source| QmpError::Io {
                operation,
                what: "the QMP socket".into(),
                source,
            }
        };
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io("set read timeout"))?;
        let mut reader = BufReader::new(stream.try_clone().map_err(io("clone"))?);
        let mut greeting = String::new();
        reader
            .read_line(&mut greeting)
            .map_err(io("read greeting"))?;
        let parsed: Value = serde_json::from_str(&greeting).unwrap_or(Value::Null);
        if parsed.get("QMP").is_none() {
            return Err(QmpError::Greeting { line: greeting });
        }
        stream
            .set_read_timeout(None)
            .map_err(io("clear read timeout"))?;
        let (reply_tx, replies) = mpsc::channel();
        let events = Arc::new((Mutex::new(EventQueue::default()), Condvar::new()));
        let queue = Arc::clone(&events);
        thread::Builder::new()
            .name("qmp-read".into())
            .spawn(move || read_loop(reader, reply_tx, &queue))
            .map_err(io("spawn reader"))?;
        let qmp = Qmp {
            writer: Mutex::new((stream, 1)),
            replies: Mutex::new(replies),
            events,
        };
        qmp.execute_with("qmp_capabilities", Value::Null, timeout)?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments` (Null for none); returns its `return` value.
    pub fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.execute_with(
            command,
            arguments,
            Duration::from_millis(COMMAND_TIMEOUT_MS),
        )
    }

    /// [`Qmp::execute`] with an explicit deadline.
    pub fn execute_with(
        &self,
        command: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let _span = tracing::debug_span!("qmp", command).entered();
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let id = writer.1;
        writer.1 += 1;
        let mut message = json!({"execute": command, "id": id});
        if !arguments.is_null() {
            message["arguments"] = arguments;
        }
        let mut line = message.to_string();
        line.push('\n');
        writer
            .0
            .write_all(line.as_bytes())
            .map_err(|source| QmpError::Io {
                operation: "send",
                what: format!("command {command}"),
                source,
            })?;
        let replies = self
            .replies
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = match replies.recv_timeout(left) {
                Ok(reply) => reply,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(QmpError::CommandTimeout {
                        command: command.into(),
                        timeout_ms: millis(timeout),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(QmpError::Closed {
                        operation: command.into(),
                    })
                }
            };
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            return answer(command, reply);
        }
    }

    /// Waits for (and removes from the queue) the first event named `name` for which `matches`
    /// holds; events that arrived before the call count.
    pub fn wait_event(
        &self,
        name: &str,
        matches: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Event, QmpError> {
        let (lock, ready) = &*self.events;
        let deadline = Instant::now() + timeout;
        let mut queue = lock.lock().unwrap_or_else(|poison| poison.into_inner());
        loop {
            if let Some(at) = queue
                .events
                .iter()
                .position(|e| e.name == name && matches(&e.data))
            {
                if let Some(event) = queue.events.remove(at) {
                    return Ok(event);
                }
            }
            if queue.closed {
                return Err(QmpError::Closed {
                    operation: format!("waiting for {name}"),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QmpError::EventTimeout {
                    what: name.into(),
                    timeout_ms: millis(timeout),
                });
            }
            queue = ready
                .wait_timeout(queue, left)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
    }

    /// Every queued event, oldest first (they stay queued).
    pub fn events(&self) -> Vec<Event> {
        let queue = self
            .events
            .0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        queue.events.iter().cloned().collect()
    }

    /// Hot-adds a device: `driver` and its properties (id, bus...).
    pub fn device_add(&self, driver: &str, properties: Map<String, Value>) -> Result<(), QmpError> {
        let mut arguments = properties;
        arguments.insert("driver".into(), Value::String(driver.into()));
        self.execute("device_add", Value::Object(arguments))
            .map(drop)
    }

    /// Asks for a device's removal; with `wait`, waits until QEMU has removed it: its
    /// DEVICE_DELETED event, or its absence from `/machine/peripheral`, whichever comes first (a
    /// bochs-display leaves the tree when the guest lets it go but is never finalized, and
    /// finalizing is when QEMU sends the event). An event queued by an earlier removal of the
    /// same id is dropped first, so that it does not answer for this one.
    pub fn device_del(&self, id: &str, wait: Option<Duration>) -> Result<(), QmpError> {
        let deleted = |data: &Value| data.get("device").and_then(Value::as_str) == Some(id);
        self.drop_events("DEVICE_DELETED", deleted);
        self.execute("device_del", json!({"id": id}))?;
        let Some(timeout) = wait else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QmpError::EventTimeout {
                    what: "DEVICE_DELETED".into(),
                    timeout_ms: millis(timeout),
                });
            }
            match self.wait_event("DEVICE_DELETED", deleted, left.min(REMOVAL_POLL)) {
                Ok(_) => return Ok(()),
                Err(QmpError::EventTimeout { .. }) => {}
                Err(e) => return Err(e),
            }
            let listed = self.execute("qom-list", json!({"path": "/machine/peripheral"}))?;
            if !lists(&listed, id) {
                return Ok(());
            }
        }
    }

    /// Drops the queued events named `name` for which `matches` holds.
    fn drop_events(&self, name: &str, matches: impl Fn(&Value) -> bool) {
        let mut queue = self
            .events
            .0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        queue
            .events
            .retain(|e| !(e.name == name && matches(&e.data)));
    }

    /// Sets a QOM property, e.g. `smart_critical_warning` of `/machine/peripheral/<id>`.
    pub fn qom_set(&self, path: &str, property: &str, value: Value) -> Result<(), QmpError> {
        self.execute(
            "qom-set",
            json!({"path": path, "property": property, "value": value}),
        )
        .map(drop)
    }

    /// Reads a QOM property.
    pub fn qom_get(&self, path: &str, property: &str) -> Result<Value, QmpError> {
        self.execute("qom-get", json!({"path": path, "property": property}))
    }

    /// Sets a NIC backend's or device's link up or down.
    pub fn set_link(&self, name: &str, up: bool) -> Result<(), QmpError> {
        self.execute("set_link", json!({"name": name, "up": up}))
            .map(drop)
    }

    /// ACPI power button.
    pub fn system_powerdown(&self) -> Result<(), QmpError> {
        self.execute("system_powerdown", Value::Null).map(drop)
    }

    /// `query-status`'s `status` (running, paused, prelaunch...).
    pub fn status(&self) -> Result<String, QmpError> {
        let value = self.execute("query-status", Value::Null)?;
        Ok(value
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }
}

fn answer(command: &str, reply: Value) -> Result<Value, QmpError> {
    if let Some(error) = reply.get("error") {
        let text = |key: &str| {
            error
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        return Err(QmpError::Command {
            command: command.into(),
            class: text("class"),
            desc: text("desc"),
        });
    }
    Ok(reply.get("return").cloned().unwrap_or(Value::Null))
}

fn read_loop(
    reader: BufReader<UnixStream>,
    replies: Sender<Value>,
    events: &(Mutex<EventQueue>, Condvar),
) {
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!(%line, "QMP sent a line that is not JSON");
            continue;
        };
        if let Some(name) = value.get("event").and_then(Value::as_str) {
            let event = Event {
                name: name.to_string(),
                data: value.get("data").cloned().unwrap_or(Value::Null),
            };
            tracing::debug!(event = %event.name, data = %event.data, "QMP event");
            let mut queue = events.0.lock().unwrap_or_else(|poison| poison.into_inner());
            if queue.events.len() >= EVENTS_MAX {
                queue.events.pop_front();
            }
            queue.events.push_back(event);
            events.1.notify_all();
        } else if replies.send(value).is_err() {
            break;
        }
    }
    let mut queue = events.0.lock().unwrap_or_else(|poison| poison.into_inner());
    queue.closed = true;
    events.1.notify_all();
}

/// Whether a `qom-list` answer names a child `name`.
pub fn lists(listed: &Value, name: &str) -> bool {
    (listed.as_array()).is_some_and(|children| children.iter().any(|c| c["name"] == name))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
