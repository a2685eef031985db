//! An append-only, crc-chained, durable event journal on sled. It knows nothing about devices.
//!
//! THIS FILE IS THE AGREED PUBLIC API (written before the implementation so that the core can be
//! built against it in parallel). The implementer may add items and split modules, but must keep
//! every signature below, or change its callers in `appliance` in the same change.

use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

/// A typed event that the journal can store. The journal frames it; the event type owns its
/// encoding's evolution.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The schema version this build writes into every record.
    const SCHEMA_VERSION: u16;
    /// A stable number per event kind (never reused; new kinds get new numbers).
    fn kind(&self) -> u16;
    /// A human name for a kind number, for `dump` and error messages.
    fn kind_name(kind: u16) -> Option<&'static str>;
    /// Decodes a payload written with `version` (<= SCHEMA_VERSION), upcasting older versions.
    /// The default decodes the current version with bincode and refuses any other.
    fn decode(kind: u16, version: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        if version != Self::SCHEMA_VERSION {
            return Err(DecodeError::UnknownVersion { kind, version });
        }
        bincode::deserialize(payload).map_err(|e| DecodeError::Payload { kind, version, reason: e.to_string() })
    }
}

/// Why a payload could not become an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event kind {kind} version {version} is not known to this build")]
    UnknownVersion { kind: u16, version: u16 },
    #[error("event kind {kind} version {version}: payload does not decode: {reason}")]
    Payload { kind: u16, version: u16, reason: String },
}

/// Limits and tuning. Every field has a unit in its name.
#[derive(Debug, Clone)]
pub struct Config {
    /// sled's page cache, set explicitly so memory stays bounded.
    pub cache_capacity_bytes: u64,
    /// Largest encoded record accepted by `append`.
    pub record_bytes_max: usize,
    /// Most events one group commit gathers into a single durable write.
    pub group_commit_events_max: usize,
}

/// One stored event with its framing.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<E> {
    pub sequence: u64,
    /// Milliseconds since the Unix epoch when appended.
    pub timestamp_ms: u64,
    pub kind: u16,
    pub version: u16,
    /// crc32 of this record's framing and payload, chained with the previous record's crc.
    pub crc: u32,
    pub event: E,
}

/// Sequence numbers of an acknowledged (durable) batch, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first: u64,
    pub last: u64,
}

/// What `open` found and did (torn tail cut, side file path, snapshot ignored and why...).
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Last durable sequence (0 when empty; sequences start at 1).
    pub last_sequence: u64,
    /// Chain value (crc) of the last record, 0 when empty.
    pub chain_head: u32,
    /// Human-readable lines describing repairs and warnings, for the boot log.
    pub notes: Vec<String>,
}

/// A snapshot as stored: opaque state bytes (rkyv-encoded by the caller) taken at `sequence`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub sequence: u64,
    pub bytes: Vec<u8>,
}

/// The journal. `Journal<E>` is `Send + Sync`; `append` may be called from many threads at once
/// and concurrent calls share one durable write (group commit).
pub struct Journal<E: Event> {
    _e: std::marker::PhantomData<E>,
}

impl<E: Event> Journal<E> {
    /// Opens (creating if absent) the journal in `dir`, applying the recovery rules.
    pub fn open(dir: &Path, config: Config) -> Result<(Self, OpenReport), Error> {
        let _ = (dir, config);
        Err(Error::NotImplemented)
    }

    /// Appends a batch; returns only once the batch is durable on disk. An empty batch is refused.
    pub fn append(&self, events: Vec<E>) -> Result<Appended, Error> {
        let _ = events;
        Err(Error::NotImplemented)
    }

    /// Records with sequence >= `from`, in order, each crc and chain link verified.
    pub fn replay(&self, from: u64) -> impl Iterator<Item = Result<Record<E>, Error>> + '_ {
        let _ = from;
        std::iter::empty()
    }

    /// Last durable sequence (0 when empty).
    pub fn last_sequence(&self) -> u64 {
        0
    }

    /// Chain value of the last record (0 when empty).
    pub fn chain_head(&self) -> u32 {
        0
    }

    /// A live tail: records after `after`, first the stored ones, then each new one as it becomes
    /// durable.
    pub fn subscribe(&self, after: u64) -> Tail<E> {
        let _ = after;
        Tail { _e: std::marker::PhantomData }
    }

    /// Stores a snapshot of caller state at `sequence` (must be <= last_sequence), durably, with
    /// its own checksum and the chain value at `sequence`.
    pub fn write_snapshot(&self, sequence: u64, state_bytes: &[u8]) -> Result<(), Error> {
        let _ = (sequence, state_bytes);
        Err(Error::NotImplemented)
    }

    /// The newest valid snapshot (checksum good, chain value matches the record at its
    /// sequence), or None. Invalid ones are reported in the returned notes and ignored.
    pub fn load_snapshot(&self) -> (Option<Snapshot>, Vec<String>) {
        (None, Vec::new())
    }

    /// Makes everything durable and closes sled cleanly.
    pub fn close(self) -> Result<(), Error> {
        Ok(())
    }
}

/// A subscriber's view of the journal: stored records after a sequence, then live ones.
pub struct Tail<E> {
    _e: std::marker::PhantomData<E>,
}

impl<E: Event> Tail<E> {
    /// Next record, waiting for one to be appended if needed.
    pub async fn next(&mut self) -> Option<Result<Record<E>, Error>> {
        None
    }
}

/// Journal errors. Messages say what is wrong, where (sequence, file) and what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not implemented yet")]
    NotImplemented,
}
