//! The guest's serial console as the bench captures it: every line kept in memory and appended to
//! a log file, and a wait for the first line matching a pattern, with a deadline.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest console line kept whole; longer ones are split (a guest may print without newlines).
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Errors of the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("open console log {path}")]
    OpenLog {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no console line containing {pattern:?} within {timeout_ms} ms; last lines:\n{tail}")]
    WaitTimeout {
        pattern: String,
        timeout_ms: u64,
        tail: String,
    },
    #[error("the console closed (QEMU exited) before a line containing {pattern:?}; last lines:\n{tail}")]
    Closed { pattern: String, tail: String },
}

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// Lines of one VM's serial console (all boots of it, since QEMU resets keep the chardev), and
/// the way to type on it.
#[derive(Debug, Clone)]
pub struct Console {
    shared: Arc<(Mutex<Lines>, Condvar)>,
    keys: Option<Arc<Mutex<std::os::unix::net::UnixStream>>>,
}

impl Console {
    /// Starts capturing `stream`; every line is also appended to `log`.
    pub fn capture(
        stream: impl Read + Send + 'static,
        log: &Path,
    ) -> Result<Console, ConsoleError> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ConsoleError::OpenLog {
                path: log.display().to_string(),
                source,
            })?;
        let console = Console {
            shared: Arc::new((Mutex::new(Lines::default()), Condvar::new())),
            keys: None,
        };
        let shared = Arc::clone(&console.shared);
        let spawned = thread::Builder::new()
            .name("console".into())
            .spawn(move || read_loop(stream, file, &shared));
        if let Err(e) = spawned {
            tracing::error!("spawn the console reader: {e}");
            console
                .shared
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .closed = true;
        }
        Ok(console)
    }

    /// Types on the serial line through `keys` (the console socket's other direction).
    pub fn with_keys(mut self, keys: std::os::unix::net::UnixStream) -> Console {
        self.keys = Some(Arc::new(Mutex::new(keys)));
        self
    }

    /// Sends `bytes` to the guest's serial console, as keys typed on it.
    pub fn type_keys(&self, bytes: &[u8]) -> std::io::Result<()> {
        let Some(keys) = &self.keys else {
            return Err(std::io::Error::other(
                "this console takes no keys (a terminal has it)",
            ));
        };
        let mut keys = keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.write_all(bytes)?;
        keys.flush()
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lock().lines.clone()
    }

    /// How many lines so far (a cursor for [`Console::wait_for_after`]).
    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the first line (from the start) containing `pattern`.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> Result<String, ConsoleError> {
        self.wait_for_after(0, pattern, timeout)
            .map(|(_, line)| line)
    }

    /// Waits for the first line at index `from` or later containing `pattern`; returns its index
    /// and text.
    pub fn wait_for_after(
        &self,
        from: usize,
        pattern: &str,
        timeout: Duration,
    ) -> Result<(usize, String), ConsoleError> {
        self.wait_for_line_matching(from, |line| line.contains(pattern), pattern, timeout)
    }

    /// Waits for the first line at index `from` or later for which `matches` holds.
    pub fn wait_for_line_matching(
        &self,
        from: usize,
        matches: impl Fn(&str) -> bool,
        what: &str,
        timeout: Duration,
    ) -> Result<(usize, String), ConsoleError> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lock();
        let mut next = from;
        loop {
            if let Some(found) = lines.lines.iter().skip(next).position(|l| matches(l)) {
                let at = next + found;
                return Ok((at, lines.lines[at].clone()));
            }
            next = lines.lines.len().max(from);
            if lines.closed {
                return Err(ConsoleError::Closed {
                    pattern: what.into(),
                    tail: tail(&lines.lines),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                return Err(ConsoleError::WaitTimeout {
                    pattern: what.into(),
                    timeout_ms,
                    tail: tail(&lines.lines),
                });
            }
            lines = self
                .shared
                .1
                .wait_timeout(lines, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn read_loop(stream: impl Read, mut log: File, shared: &(Mutex<Lines>, Condvar)) {
    let mut reader = BufReader::new(stream);
    let mut buffer = [0u8; 4096];
    let mut line = Vec::new();
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Err(e) = log.write_all(&buffer[..n]) {
            tracing::warn!("append to the console log: {e}");
        }
        for &byte in &buffer[..n] {
            if byte == b'\n' || line.len() >= LINE_BYTES_MAX {
                push_line(shared, &line);
                line.clear();
            }
            if byte != b'\n' && byte != b'\r' {
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        push_line(shared, &line);
    }
    let mut lines = shared.0.lock().unwrap_or_else(|p| p.into_inner());
    lines.closed = true;
    shared.1.notify_all();
}

fn push_line(shared: &(Mutex<Lines>, Condvar), line: &[u8]) {
    let text = String::from_utf8_lossy(line).into_owned();
    let mut lines = shared.0.lock().unwrap_or_else(|p| p.into_inner());
    lines.lines.push(text);
    shared.1.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn waits_for_lines_and_logs_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let (mut guest, ours) = UnixStream::pair().unwrap();
        let console = Console::capture(ours, &log).unwrap();
        guest
            .write_all(b"[    0.1] booting\r\nAPPLIANCE READY api=https://0.0.0.0:443\r\npartial")
            .unwrap();
        let line = console
            .wait_for("APPLIANCE READY", Duration::from_secs(5))
            .unwrap();
        assert_eq!(line, "APPLIANCE READY api=https://0.0.0.0:443");
        let (at, _) = console
            .wait_for_after(0, "booting", Duration::from_secs(5))
            .unwrap();
        assert_eq!(at, 0);
        drop(guest);
        let err = console
            .wait_for_after(2, "never", Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(err, ConsoleError::Closed { .. }), "{err}");
        assert_eq!(console.lines().last().map(String::as_str), Some("partial"));
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("APPLIANCE READY"), "{logged}");
    }

    #[test]
    fn a_missing_line_times_out_with_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut guest, ours) = UnixStream::pair().unwrap();
        let console = Console::capture(ours, &dir.path().join("c.log")).unwrap();
        guest.write_all(b"only this\n").unwrap();
        console
            .wait_for("only this", Duration::from_secs(5))
            .unwrap();
        let err = console
            .wait_for("READY", Duration::from_millis(200))
            .unwrap_err();
        assert!(
            matches!(&err, ConsoleError::WaitTimeout { tail, .. } if tail.contains("only this")),
            "{err}"
        );
    }
}
