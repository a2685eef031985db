//! A minimal client of the appliance's control interface (JSON lines over TCP) for the bench's
//! measurements. The bench must not depend on `appliance`, so requests and responses are plain
//! JSON values in the appliance's wire format (`{"query":"status"}` or `{"order":{"compose":{...}}}`
//! in, `{"accepted":{...}}` or `{"error":{...}}` out).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest response line accepted.
pub const RESPONSE_BYTES_MAX: u64 = 16 << 20;

/// How long a response may take once connected (a compose waits for the hardware).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(150);

/// How long `connect` waits for the answer to its first status request before it tries a new
/// connection. Under TCG, a connection opened in a burst (the bench's 48 at once, right after
/// its compose rounds) is sometimes never answered at all while a new one is (cause not found:
/// the guest or QEMU's user networking); a status answer takes milliseconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the control link.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("connect to the control interface at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{operation} on the control link to {addr}")]
    Io {
        operation: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the control interface at {addr} closed the connection")]
    Closed { addr: SocketAddr },
    #[error("the control interface at {addr} answered with a line that is not JSON: {line:?}")]
    Decode { addr: SocketAddr, line: String },
    #[error("the control interface refused {request}: {response}")]
    Refused { request: String, response: Value },
}

/// A connected control link.
#[derive(Debug)]
pub struct ControlLink {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl ControlLink {
    /// Connects, retrying until `timeout` (the guest's port is forwarded before it listens, and
    /// a connection whose first status request is not answered within `PROBE_TIMEOUT` is
    /// replaced by a new one).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<ControlLink, ControlError> {
        let deadline = Instant::now() + timeout;
        loop {
            match Self::try_connect(addr) {
                Ok(mut link) => match link.probe() {
                    Ok(()) => return Ok(link),
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(e) => tracing::debug!(error = %e, "control link probe failed; retrying"),
                },
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
            // The guest gives no signal when its listener is up; retry at a short interval.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn try_connect(addr: SocketAddr) -> Result<ControlLink, ControlError> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|source| ControlError::Connect { addr, source })?;
        let io = |operation| {
            move |source| ControlError::Io {
                operation,
                addr,
                source,
            }
        };
        stream
            .set_read_timeout(Some(PROBE_TIMEOUT))
            .map_err(io("set read timeout"))?;
        let writer = stream.try_clone().map_err(io("clone"))?;
        Ok(ControlLink {
            addr,
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// One status request under `PROBE_TIMEOUT`, then the normal response timeout.
    fn probe(&mut self) -> Result<(), ControlError> {
        self.call(&serde_json::json!({"query": "status"}))?;
        self.reader
            .get_ref()
            .set_read_timeout(Some(RESPONSE_TIMEOUT))
            .map_err(|source| ControlError::Io {
                operation: "set read timeout",
                addr: self.addr,
                source,
            })
    }

    /// Sends every request without waiting (from a writer thread) while reading the responses
    /// in order; `check` sees each response.
    pub fn pipeline(
        &mut self,
        requests: Vec<Value>,
        mut check: impl FnMut(&Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let addr = self.addr;
        let count = requests.len();
        let mut writer = self.writer.try_clone().map_err(|source| ControlError::Io {
            operation: "clone",
            addr,
            source,
        })?;
        let sender = std::thread::spawn(move || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::new(&mut writer);
            for request in requests {
                out.write_all(request.to_string().as_bytes())?;
                out.write_all(b"\n")?;
            }
            out.flush()
        });
        let mut line = String::new();
        for _ in 0..count {
            line.clear();
            let n = std::io::Read::take(&mut self.reader, RESPONSE_BYTES_MAX)
                .read_line(&mut line)
                .map_err(|source| ControlError::Io {
                    operation: "receive",
                    addr,
                    source,
                })?;
            if n == 0 {
                return Err(ControlError::Closed { addr }.into());
            }
            let response: Value =
                serde_json::from_str(line.trim_end()).map_err(|_| ControlError::Decode {
                    addr,
                    line: line.clone(),
                })?;
            check(&response)?;
        }
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("the pipelining writer panicked"))??;
        Ok(())
    }

    /// Sends one request and reads its response; `{"error":...}` responses are errors.
    pub fn call(&mut self, request: &Value) -> Result<Value, ControlError> {
        let addr = self.addr;
        let io = |operation| {
            move |source| ControlError::Io {
                operation,
                addr,
                source,
            }
        };
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(io("send"))?;
        let mut answer = String::new();
        let n = std::io::Read::take(&mut self.reader, RESPONSE_BYTES_MAX)
            .read_line(&mut answer)
            .map_err(io("receive"))?;
        if n == 0 {
            return Err(ControlError::Closed { addr });
        }
        let response: Value =
            serde_json::from_str(answer.trim_end()).map_err(|_| ControlError::Decode {
                addr,
                line: answer.clone(),
            })?;
        if response.get("error").is_some() {
            return Err(ControlError::Refused {
                request: request.to_string(),
                response,
            });
        }
        Ok(response)
    }
}
