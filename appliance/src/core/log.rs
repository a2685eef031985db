//! Where the core's events go: the `EventLog` trait, implemented by the durable `journal` crate
//! (production) and by an in-memory log (deterministic simulation and unit tests), plus State
//! snapshots encoded with rkyv.

use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::event::Event;
use crate::model::state::State;

/// Layout version of snapshot bytes; a snapshot of another layout is ignored (replay instead).
/// 2: an operation's mount spec is boxed (rkyv lays it out apart).
/// 3: pending and finished operations are boxed in State's maps.
/// 4: State keeps the active alarms.
/// 5: a mount keeps its condition (a mirror degraded, rebuilding, clean).
/// 6: State keeps the drains.
/// 7: State keeps the management port's settings and how they were applied, and the
///    directory's settings.
pub const SNAPSHOT_FORMAT: u16 = 8;

/// One logged event with its sequence and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub sequence: u64,
    pub timestamp_ms: u64,
    pub event: Event,
}

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("journal")]
    Journal(#[from] journal::Error),
    #[error("append to the in-memory log refused (injected)")]
    Injected,
    #[error("the log is closed")]
    Closed,
    #[error("append from sequence {sequence} failed: {reason}")]
    Append { sequence: u64, reason: String },
    #[error("snapshot at sequence {sequence} does not decode: {reason}")]
    Snapshot { sequence: u64, reason: String },
}

/// A durable, ordered log of the appliance's events.
pub trait EventLog: Send + Sync {
    /// Appends and returns the sequences (first, last) once durable.
    fn append(&self, events: Vec<Event>) -> Result<(u64, u64), LogError>;
    fn last_sequence(&self) -> u64;
    /// Events with sequence >= from, in order.
    fn replay(&self, from: u64) -> Box<dyn Iterator<Item = Result<Logged, LogError>> + '_>;
    /// The event at `sequence`, if the log holds it.
    fn read(&self, sequence: u64) -> Result<Option<Logged>, LogError> {
        self.replay(sequence)
            .next()
            .transpose()
            .map(|found| found.filter(|l| l.sequence == sequence))
    }
    fn write_snapshot(&self, sequence: u64, bytes: &[u8]) -> Result<(), LogError>;
    /// The newest valid snapshot (sequence, bytes) and notes about ignored ones.
    fn load_snapshot(&self) -> (Option<(u64, Vec<u8>)>, Vec<String>);
    /// The newest valid snapshot taken at or before `sequence`, if one is kept.
    fn load_snapshot_at_or_before(&self, sequence: u64) -> Option<(u64, Vec<u8>)>;
    /// Makes everything durable and closes; later calls fail with `Closed`.
    fn close(&self) -> Result<(), LogError>;
}

/// The production log: the `journal` crate.
pub struct JournalLog {
    journal: RwLock<Option<journal::Journal<Event>>>,
}

impl std::fmt::Debug for JournalLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournalLog")
    }
}

impl JournalLog {
    /// Opens the journal in `dir` (recovery rules apply); returns its notes for the boot log.
    pub fn open(dir: &Path) -> Result<(JournalLog, journal::OpenReport), LogError> {
        let config = journal::Config {
            cache_capacity_bytes: 64 << 20,
            record_bytes_max: 1 << 20,
            group_commit_events_max: 4096,
        };
        let (journal, report) = journal::Journal::open(dir, config)?;
        Ok((
            JournalLog {
                journal: RwLock::new(Some(journal)),
            },
            report,
        ))
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&journal::Journal<Event>) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        let guard = self.journal.read().unwrap_or_else(|e| e.into_inner());
        f(guard.as_ref().ok_or(LogError::Closed)?)
    }
}

impl EventLog for JournalLog {
    fn append(&self, events: Vec<Event>) -> Result<(u64, u64), LogError> {
        self.with(|j| {
            j.append(events)
                .map(|a| (a.first, a.last))
                .map_err(LogError::from)
        })
    }

    fn last_sequence(&self) -> u64 {
        self.with(|j| Ok(j.last_sequence())).unwrap_or(0)
    }

    fn replay(&self, from: u64) -> Box<dyn Iterator<Item = Result<Logged, LogError>> + '_> {
        Box::new(GuardedReplay {
            log: &self.journal,
            next: from.max(1),
            buffer: Default::default(),
            done: false,
        })
    }

    fn write_snapshot(&self, sequence: u64, bytes: &[u8]) -> Result<(), LogError> {
        self.with(|j| j.write_snapshot(sequence, bytes).map_err(LogError::from))
    }

    fn read(&self, sequence: u64) -> Result<Option<Logged>, LogError> {
        self.with(|j| match j.replay(sequence).next() {
            Some(Ok(r)) if r.sequence == sequence => Ok(Some(Logged {
                sequence: r.sequence,
                timestamp_ms: r.timestamp_ms,
                event: r.event,
            })),
            Some(Ok(_)) | None => Ok(None),
            Some(Err(e)) => Err(e.into()),
        })
    }

    fn load_snapshot(&self) -> (Option<(u64, Vec<u8>)>, Vec<String>) {
        let guard = self.journal.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(j) => {
                let (snapshot, notes) = j.load_snapshot();
                (snapshot.map(|s| (s.sequence, s.bytes)), notes)
            }
            None => (None, vec!["journal closed".into()]),
        }
    }

    fn load_snapshot_at_or_before(&self, sequence: u64) -> Option<(u64, Vec<u8>)> {
        let guard = self.journal.read().unwrap_or_else(|e| e.into_inner());
        let (snapshot, _) = guard.as_ref()?.load_snapshot_at_or_before(sequence);
        snapshot.map(|s| (s.sequence, s.bytes))
    }

    fn close(&self) -> Result<(), LogError> {
        let mut guard = self.journal.write().unwrap_or_else(|e| e.into_inner());
        match guard.take() {
            Some(j) => j.close().map_err(LogError::from),
            None => Ok(()),
        }
    }
}

/// Replays the journal in chunks, re-taking the read lock per chunk so `close` is never starved.
struct GuardedReplay<'a> {
    log: &'a RwLock<Option<journal::Journal<Event>>>,
    next: u64,
    buffer: std::collections::VecDeque<Result<Logged, LogError>>,
    done: bool,
}

const REPLAY_CHUNK_EVENTS: usize = 4096;

impl Iterator for GuardedReplay<'_> {
    type Item = Result<Logged, LogError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            self.fill();
        }
        self.buffer.pop_front()
    }
}

impl GuardedReplay<'_> {
    fn fill(&mut self) {
        let guard = self.log.read().unwrap_or_else(|e| e.into_inner());
        let Some(journal) = guard.as_ref() else {
            self.buffer.push_back(Err(LogError::Closed));
            self.done = true;
            return;
        };
        for record in journal.replay(self.next).take(REPLAY_CHUNK_EVENTS) {
            match record {
                Ok(r) => {
                    self.next = r.sequence + 1;
                    self.buffer.push_back(Ok(Logged {
                        sequence: r.sequence,
                        timestamp_ms: r.timestamp_ms,
                        event: r.event,
                    }));
                }
                Err(e) => {
                    self.buffer.push_back(Err(e.into()));
                    self.done = true;
                    return;
                }
            }
        }
        if self.buffer.len() < REPLAY_CHUNK_EVENTS {
            self.done = true;
        }
    }
}

/// An in-memory log for tests and simulation: every append is "durable" at once.
#[derive(Debug, Default)]
pub struct MemoryLog {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    events: Vec<Logged>,
    snapshot: Option<(u64, Vec<u8>)>,
    fail_appends: u32,
    closed: bool,
    /// A fixed clock for deterministic runs; None = wall clock.
    clock_ms: Option<u64>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// A log whose timestamps come from a counter starting at `start_ms` (+1 ms per event).
    pub fn with_clock(start_ms: u64) -> MemoryLog {
        let log = MemoryLog::default();
        log.lock().clock_ms = Some(start_ms);
        log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `count` appends fail.
    pub fn fail_appends(&self, count: u32) {
        self.lock().fail_appends = count;
    }

    /// Reopens after a crash: same contents, open again.
    pub fn reopen(&self) {
        self.lock().closed = false;
    }

    pub fn events(&self) -> Vec<Logged> {
        self.lock().events.clone()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl EventLog for MemoryLog {
    fn append(&self, events: Vec<Event>) -> Result<(u64, u64), LogError> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(LogError::Closed);
        }
        if inner.fail_appends > 0 {
            inner.fail_appends -= 1;
            return Err(LogError::Injected);
        }
        let first = inner.events.len() as u64 + 1;
        for event in events {
            let timestamp_ms = match inner.clock_ms.as_mut() {
                Some(clock) => {
                    *clock += 1;
                    *clock
                }
                None => now_ms(),
            };
            let sequence = inner.events.len() as u64 + 1;
            inner.events.push(Logged {
                sequence,
                timestamp_ms,
                event,
            });
        }
        Ok((first, inner.events.len() as u64))
    }

    fn last_sequence(&self) -> u64 {
        self.lock().events.len() as u64
    }

    fn replay(&self, from: u64) -> Box<dyn Iterator<Item = Result<Logged, LogError>> + '_> {
        let events: Vec<Logged> = self
            .lock()
            .events
            .iter()
            .skip(from.saturating_sub(1) as usize)
            .cloned()
            .collect();
        Box::new(events.into_iter().map(Ok))
    }

    fn write_snapshot(&self, sequence: u64, bytes: &[u8]) -> Result<(), LogError> {
        self.lock().snapshot = Some((sequence, bytes.to_vec()));
        Ok(())
    }

    fn read(&self, sequence: u64) -> Result<Option<Logged>, LogError> {
        let index = sequence.checked_sub(1).map(|i| i as usize);
        Ok(index.and_then(|i| self.lock().events.get(i).cloned()))
    }

    fn load_snapshot(&self) -> (Option<(u64, Vec<u8>)>, Vec<String>) {
        (self.lock().snapshot.clone(), Vec::new())
    }

    fn load_snapshot_at_or_before(&self, sequence: u64) -> Option<(u64, Vec<u8>)> {
        self.lock()
            .snapshot
            .clone()
            .filter(|(at, _)| *at <= sequence)
    }

    fn close(&self) -> Result<(), LogError> {
        self.lock().closed = true;
        Ok(())
    }
}

/// Encodes State for a snapshot: a format number, then rkyv bytes.
pub fn encode_snapshot(state: &State) -> Result<Vec<u8>, LogError> {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(state).map_err(|e| LogError::Snapshot {
        sequence: state.head,
        reason: e.to_string(),
    })?;
    let mut bytes = Vec::with_capacity(body.len() + 2);
    bytes.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Decodes snapshot bytes (validated by rkyv's bytecheck); refuses another format.
pub fn decode_snapshot(sequence: u64, bytes: &[u8]) -> Result<State, LogError> {
    let fail = |reason: String| LogError::Snapshot { sequence, reason };
    let (format, body) = bytes
        .split_at_checked(2)
        .ok_or_else(|| fail("shorter than its header".into()))?;
    let format = u16::from_le_bytes([format[0], format[1]]);
    if format != SNAPSHOT_FORMAT {
        return Err(fail(format!(
            "format {format}, this build reads {SNAPSHOT_FORMAT}"
        )));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    let state = rkyv::from_bytes::<State, rkyv::rancor::Error>(&aligned)
        .map_err(|e| fail(e.to_string()))?;
    if state.head != sequence {
        return Err(fail(format!("state inside is at sequence {}", state.head)));
    }
    Ok(state)
}
