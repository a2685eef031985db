//! History: the events about one device or one system ("where was GPU serial X last Tuesday, and
//! why did it move"), the sequence written at a time, and State as of a sequence. Reads the log;
//! never touches the live State.
//!
//! Answers come from an index, not from a replay of the journal from sequence 1 per question:
//! [`History`] reads the journal once, at the first question, and then only what was appended
//! since the last one. It keeps, per device and per system, the sequences of the events about it,
//! and every `TIME_CHECKPOINT_EVENTS`th event's time; an answer reads only its own events. State
//! as of a sequence starts from the newest snapshot at or before it when the journal keeps one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::core::log::{decode_snapshot, EventLog, LogError, Logged};
use crate::model::{ApplyError, DeviceId, Event, OperationId, State, SystemName};

/// Most entries a history answer carries (the newest ones are kept).
pub const HISTORY_ENTRIES_MAX: usize = 10_000;
/// Events between two time checkpoints of the index (a time lookup reads at most this many).
pub const TIME_CHECKPOINT_EVENTS: u64 = 256;

/// One event in a history answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub sequence: u64,
    pub timestamp_ms: u64,
    pub event: Event,
}

/// Errors of history queries.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("read the journal")]
    Read(#[from] LogError),
    #[error("rebuild state")]
    Rebuild(#[from] ApplyError),
    #[error("sequence {requested} is past the journal's head {head}")]
    Future { requested: u64, head: u64 },
    #[error("no event at or before time {time_ms} ms")]
    BeforeStart { time_ms: u64 },
    #[error("the journal holds no event at sequence {sequence}, which the index names")]
    Missing { sequence: u64 },
}

/// What a history query is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    Device(DeviceId),
    System(SystemName),
}

/// The subjects an event is about.
fn subjects(event: &Event) -> Vec<Subject> {
    let mut about: Vec<Subject> = event
        .devices()
        .into_iter()
        .map(|d| Subject::Device(d.clone()))
        .collect();
    about.extend(event.system().map(|s| Subject::System(s.clone())));
    about
}

/// The index, as far as it has read the journal.
#[derive(Debug, Default)]
struct Index {
    /// The last sequence indexed.
    indexed: u64,
    /// Sequences of the events about each subject: those naming it, and the outcomes of the
    /// operations whose intent named it.
    by_subject: HashMap<Subject, Vec<u64>>,
    /// The subjects of the operations whose outcome has not been indexed yet.
    open: HashMap<OperationId, Vec<Subject>>,
    /// (the latest time up to here, its sequence) every `TIME_CHECKPOINT_EVENTS` events.
    times: Vec<(u64, u64)>,
    /// The latest time seen so far (journal times only grow, but a clock can step back).
    latest_ms: u64,
}

impl Index {
    fn add(&mut self, logged: &Logged) {
        let event = &logged.event;
        let mut about = subjects(event);
        if let Some(op) = event.outcome_of() {
            about.extend(self.open.remove(&op).unwrap_or_default());
        }
        if let Some(op) = event.intent_of() {
            self.open.insert(op, about.clone());
        }
        about.sort_unstable();
        about.dedup();
        for subject in about {
            self.by_subject
                .entry(subject)
                .or_default()
                .push(logged.sequence);
        }
        self.latest_ms = self.latest_ms.max(logged.timestamp_ms);
        if logged.sequence % TIME_CHECKPOINT_EVENTS == 0 {
            self.times.push((self.latest_ms, logged.sequence));
        }
        self.indexed = logged.sequence;
    }
}

/// History over one log, answered from an index kept up to date lazily.
pub struct History {
    log: Arc<dyn EventLog>,
    index: Mutex<Index>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").finish_non_exhaustive()
    }
}

impl History {
    pub fn new(log: Arc<dyn EventLog>) -> History {
        History {
            log,
            index: Mutex::new(Index::default()),
        }
    }

    /// The index, caught up with the log's head.
    fn caught_up(&self) -> Result<std::sync::MutexGuard<'_, Index>, HistoryError> {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if index.indexed < self.log.last_sequence() {
            for logged in self.log.replay(index.indexed + 1) {
                index.add(&logged?);
            }
        }
        Ok(index)
    }

    /// The newest `limit` events about `subject`, oldest first.
    pub fn entries(
        &self,
        subject: &Subject,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, HistoryError> {
        let limit = limit.clamp(1, HISTORY_ENTRIES_MAX);
        let sequences: Vec<u64> = {
            let index = self.caught_up()?;
            let all = index
                .by_subject
                .get(subject)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            all[all.len().saturating_sub(limit)..].to_vec()
        };
        sequences
            .into_iter()
            .map(|sequence| {
                let logged = self
                    .log
                    .read(sequence)?
                    .ok_or(HistoryError::Missing { sequence })?;
                Ok(HistoryEntry {
                    sequence,
                    timestamp_ms: logged.timestamp_ms,
                    event: logged.event,
                })
            })
            .collect()
    }

    /// The last sequence written before the first event later than `time_ms` (ms since the
    /// Unix epoch).
    pub fn sequence_at(&self, time_ms: u64) -> Result<u64, HistoryError> {
        let from = {
            let index = self.caught_up()?;
            let before = index
                .times
                .partition_point(|(latest, _)| *latest <= time_ms);
            before.checked_sub(1).map(|i| index.times[i].1).unwrap_or(0)
        };
        let mut found = (from > 0).then_some(from);
        for logged in self.log.replay(from + 1) {
            let logged = logged?;
            if logged.timestamp_ms > time_ms {
                break;
            }
            found = Some(logged.sequence);
        }
        found.ok_or(HistoryError::BeforeStart { time_ms })
    }
}

/// State as it was right after event `sequence` (0 = empty): from the newest snapshot at or
/// before it, when the log keeps one, plus the events up to it.
pub fn state_at(log: &dyn EventLog, sequence: u64) -> Result<State, HistoryError> {
    let head = log.last_sequence();
    if sequence > head {
        return Err(HistoryError::Future {
            requested: sequence,
            head,
        });
    }
    let mut state = log
        .load_snapshot_at_or_before(sequence)
        .and_then(|(at, bytes)| decode_snapshot(at, &bytes).ok())
        .unwrap_or_default();
    if state.head == sequence {
        return Ok(state);
    }
    for logged in log.replay(state.head + 1) {
        let logged = logged?;
        if logged.sequence > sequence {
            break;
        }
        state.apply_owned(logged.sequence, logged.event)?;
    }
    Ok(state)
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::core::log::{encode_snapshot, MemoryLog};

    /// Compose/decompose cycles of 16 GPUs on 16 systems.
    fn events(count: u64) -> Vec<Event> {
        crate::testing::synth::cycle_events(count).collect()
    }

    /// The answers of the plain algorithm: a scan from sequence 1.
    fn scanned(log: &dyn EventLog, subject: &Subject) -> Vec<u64> {
        let mut ops = std::collections::BTreeSet::new();
        let mut found = Vec::new();
        for logged in log.replay(1) {
            let logged = logged.expect("replay");
            let event = &logged.event;
            let names = subjects(event).contains(subject);
            let ours = event.outcome_of().is_some_and(|op| ops.remove(&op));
            if !names && !ours {
                continue;
            }
            if let Some(op) = event.intent_of() {
                ops.insert(op);
            }
            found.push(logged.sequence);
        }
        found
    }

    #[test]
    fn the_index_answers_as_a_scan_from_the_start_and_follows_appends() {
        let log = Arc::new(MemoryLog::with_clock(1_000));
        log.append(events(3000)).expect("append");
        let history = History::new(log.clone());
        for subject in [
            Subject::Device("gpu-3".into()),
            Subject::System("s5".into()),
            Subject::Device("none".into()),
        ] {
            let entries = history.entries(&subject, 10_000).expect("entries");
            let sequences: Vec<u64> = entries.iter().map(|e| e.sequence).collect();
            assert_eq!(sequences, scanned(log.as_ref(), &subject), "{subject:?}");
            let newest = history.entries(&subject, 3).expect("entries");
            assert_eq!(newest.len(), sequences.len().min(3));
        }
        // Appended after the first question: the next one sees it.
        log.append(vec![Event::DeviceVanished {
            device: "gpu-3".into(),
        }])
        .expect("append");
        let subject = Subject::Device("gpu-3".into());
        let entries = history.entries(&subject, 10_000).expect("entries");
        assert_eq!(entries.last().map(|e| e.sequence), Some(3001));
        assert_eq!(
            entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            scanned(log.as_ref(), &subject)
        );
    }

    #[test]
    fn a_time_finds_the_last_sequence_written_by_then() {
        let log = Arc::new(MemoryLog::with_clock(1_000));
        log.append(events(1000)).expect("append");
        let history = History::new(log);
        // The clock gives event N the time 1_000 + N.
        assert_eq!(history.sequence_at(1_700).expect("found"), 700);
        assert_eq!(history.sequence_at(1_256).expect("found"), 256);
        assert_eq!(history.sequence_at(5_000).expect("found"), 1000);
        assert!(matches!(
            history.sequence_at(500),
            Err(HistoryError::BeforeStart { .. })
        ));
    }

    #[test]
    fn state_at_a_sequence_starts_from_a_snapshot_before_it() {
        let log = MemoryLog::with_clock(0);
        let events = events(800);
        log.append(events.clone()).expect("append");
        let mut full = State::default();
        for (sequence, event) in (1..).zip(&events).take(500) {
            full.apply(sequence, event).expect("applies");
        }
        let mut at_300 = State::default();
        for (sequence, event) in (1..).zip(&events).take(300) {
            at_300.apply(sequence, event).expect("applies");
        }
        log.write_snapshot(300, &encode_snapshot(&at_300).expect("encode"))
            .expect("snapshot");
        assert_eq!(state_at(&log, 500).expect("state"), full);
        assert_eq!(state_at(&log, 300).expect("state"), at_300);
        let mut at_100 = State::default();
        for (sequence, event) in (1..).zip(&events).take(100) {
            at_100.apply(sequence, event).expect("applies");
        }
        assert_eq!(
            state_at(&log, 100).expect("state"),
            at_100,
            "before the snapshot"
        );
        assert!(matches!(
            state_at(&log, 801),
            Err(HistoryError::Future { .. })
        ));
    }
}
