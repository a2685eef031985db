//! History: State as of a sequence number or a time, and the event history of one device or one
//! system ("where was GPU serial X last Tuesday, and why did it move"). Reads the log; never
//! touches the live State.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::core::log::{EventLog, LogError};
use crate::model::{ApplyError, DeviceId, Event, State, SystemName};

/// Most entries a history answer carries (the newest ones are kept).
pub const HISTORY_ENTRIES_MAX: usize = 10_000;

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
}

/// What a history query is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Device(DeviceId),
    System(SystemName),
}

/// State as it was right after event `sequence` (0 = empty).
pub fn state_at(log: &dyn EventLog, sequence: u64) -> Result<State, HistoryError> {
    let head = log.last_sequence();
    if sequence > head {
        return Err(HistoryError::Future {
            requested: sequence,
            head,
        });
    }
    let mut state = State::default();
    for logged in log.replay(1) {
        let logged = logged?;
        if logged.sequence > sequence {
            break;
        }
        state.apply(logged.sequence, &logged.event)?;
    }
    Ok(state)
}

/// The last sequence written at or before `time_ms` (ms since the Unix epoch).
pub fn sequence_at(log: &dyn EventLog, time_ms: u64) -> Result<u64, HistoryError> {
    let mut found = None;
    for logged in log.replay(1) {
        let logged = logged?;
        if logged.timestamp_ms > time_ms {
            break;
        }
        found = Some(logged.sequence);
    }
    found.ok_or(HistoryError::BeforeStart { time_ms })
}

/// Every event about `subject`: those naming it, and the outcomes of operations whose intent did.
pub fn history(
    log: &dyn EventLog,
    subject: &Subject,
    limit: usize,
) -> Result<Vec<HistoryEntry>, HistoryError> {
    let limit = limit.clamp(1, HISTORY_ENTRIES_MAX);
    let mut ops = BTreeSet::new();
    let mut entries = VecDeque::with_capacity(limit.min(1024));
    for logged in log.replay(1) {
        let logged = logged?;
        let event = &logged.event;
        let names = match subject {
            Subject::Device(id) => event.names_device(id),
            Subject::System(name) => event.system() == Some(name),
        };
        let outcome_of_ours = event.outcome_of().is_some_and(|op| ops.remove(&op));
        if !names && !outcome_of_ours {
            continue;
        }
        if let Some(op) = event.intent_of() {
            ops.insert(op);
        }
        if entries.len() == limit {
            entries.pop_front();
        }
        entries.push_back(HistoryEntry {
            sequence: logged.sequence,
            timestamp_ms: logged.timestamp_ms,
            event: logged.event,
        });
    }
    Ok(entries.into())
}
