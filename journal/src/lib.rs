//! An append-only, crc-chained, durable event journal on sled. It knows nothing about devices.
//!
//! The public API here was agreed with the appliance core; keep its signatures. Modules:
//! `frame` (record layout and crc chain), `block` (one stored value per group commit, holding
//! its records), `commit` (group commit), `recovery` (the recovery
//! rules table and the scan applying it), `snapshot`, `layout` (files of a journal directory),
//! `fsio` (fsync and atomic writes), `store` (sled), `replay` (replay and live tail), `inspect`
//! (verify, stats, dump, salvage for the operator).
//!
//! Durability: an append returns once sled has flushed and its files have been `fsync`ed
//! (`fsio::TreeSyncer` says why sled's own flush is not enough). Concurrent appends share one
//! flush (leader/follower group commit in `commit`). Recovery at open follows the table in
//! `recovery`; open scans only the records after the checkpoint or the newest snapshot, and
//! `replay` verifies every record it returns, so a full history is read once per boot.
//!
//! Tests: `cargo test --release -p journal` runs the unit and property tests, the recovery table
//! row by row, the crash test (`tests/crash.rs`, 200 SIGKILL cycles, `JOURNAL_CRASH_CYCLES=N`
//! for more) and the fault-injection test (`tests/faults.rs`; the crate dev-depends on itself
//! with the `failpoints` feature so a plain `cargo test` compiles the fail points in).

mod block;
mod commit;
mod error;
pub mod frame;
mod fsio;
pub mod inspect;
mod layout;
mod open;
pub mod recovery;
mod replay;
pub mod snapshot;
mod store;

use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

pub use error::Error;
pub use layout::FORMAT;
pub use replay::{Replay, Tail};

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
        bincode::deserialize(payload).map_err(|e| DecodeError::Payload {
            kind,
            version,
            reason: e.to_string(),
        })
    }
}

/// Why a payload could not become an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event kind {kind} version {version} is not known to this build")]
    UnknownVersion { kind: u16, version: u16 },
    #[error("event kind {kind} version {version}: payload does not decode: {reason}")]
    Payload {
        kind: u16,
        version: u16,
        reason: String,
    },
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

impl Default for Config {
    /// 64 MiB of sled cache, 1 MiB records, 4096 events per group commit.
    fn default() -> Self {
        Config {
            cache_capacity_bytes: 64 << 20,
            record_bytes_max: 1 << 20,
            group_commit_events_max: 4096,
        }
    }
}

/// Largest record the framing can hold (its payload length is a u32).
pub const RECORD_BYTES_LIMIT: usize = u32::MAX as usize;
const _: () = assert!(
    frame::HEADER_BYTES + frame::TRAILER_BYTES < 1 << 20,
    "default record_bytes_max holds the framing"
);

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
    inner: Arc<open::Opened>,
    config: Config,
    _e: PhantomData<fn() -> E>,
}

impl<E: Event> std::fmt::Debug for Journal<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (last, head) = self.inner.writer.durable();
        f.debug_struct("Journal")
            .field("dir", &self.inner.layout.dir)
            .field("last_sequence", &last)
            .field("chain_head", &head)
            .finish()
    }
}

impl<E: Event> Journal<E> {
    /// Opens (creating if absent) the journal in `dir`, applying the recovery rules
    /// (`recovery::RULES`).
    pub fn open(dir: &Path, config: Config) -> Result<(Self, OpenReport), Error> {
        let _span = tracing::info_span!("journal_open", dir = %dir.display()).entered();
        let (opened, report) = open::open(dir, &config, Some(E::SCHEMA_VERSION))?;
        for note in &report.notes {
            tracing::warn!(dir = %dir.display(), "{note}");
        }
        tracing::info!(
            last_sequence = report.last_sequence,
            chain_head = report.chain_head,
            "journal open"
        );
        Ok((
            Journal {
                inner: Arc::new(opened),
                config,
                _e: PhantomData,
            },
            report,
        ))
    }

    /// Appends a batch; returns only once the batch is durable on disk. An empty batch is refused.
    pub fn append(&self, events: Vec<E>) -> Result<Appended, Error> {
        let _span = tracing::debug_span!("journal_append", events = events.len()).entered();
        if events.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let encoded = events
            .iter()
            .map(|e| self.encode(e))
            .collect::<Result<Vec<_>, _>>()?;
        let version_max = &self.inner.version_max;
        version_max.fetch_max(E::SCHEMA_VERSION, std::sync::atomic::Ordering::Relaxed);
        self.inner.writer.append(encoded, now_ms())
    }

    fn encode(&self, event: &E) -> Result<commit::Encoded, Error> {
        let kind = event.kind();
        let payload = bincode::serialize(event).map_err(|e| Error::Encode {
            kind,
            reason: e.to_string(),
        })?;
        let bytes = frame::HEADER_BYTES + payload.len() + frame::TRAILER_BYTES;
        let bytes_max = self.config.record_bytes_max.min(RECORD_BYTES_LIMIT);
        if bytes > bytes_max {
            return Err(Error::RecordTooLarge {
                kind,
                bytes,
                bytes_max,
            });
        }
        Ok(commit::Encoded {
            kind,
            version: E::SCHEMA_VERSION,
            payload,
        })
    }

    /// Records with sequence >= `from`, in order, each crc and chain link verified.
    pub fn replay(&self, from: u64) -> impl Iterator<Item = Result<Record<E>, Error>> + '_ {
        let (last, _) = self.inner.writer.durable();
        Replay::new(&self.inner.store, &self.inner.layout.store(), from, last)
    }

    /// Last durable sequence (0 when empty).
    pub fn last_sequence(&self) -> u64 {
        self.inner.writer.durable().0
    }

    /// Chain value of the last record (0 when empty).
    pub fn chain_head(&self) -> u32 {
        self.inner.writer.durable().1
    }

    /// Durable writes (group commits) made since open; appends / durable_writes is the mean
    /// number of appends that shared one.
    pub fn durable_writes(&self) -> u64 {
        self.inner.writer.syncs()
    }

    /// A live tail: records after `after`, first the stored ones, then each new one as it becomes
    /// durable. The tail ends (None) once the journal is dropped or closed.
    pub fn subscribe(&self, after: u64) -> Tail<E> {
        Tail::new(
            self.inner.store.clone(),
            self.inner.layout.store(),
            self.inner.writer.subscribe(),
            after + 1,
        )
    }

    /// Stores a snapshot of caller state at `sequence` (must be <= last_sequence), durably, with
    /// its own checksum and the chain value at `sequence`.
    pub fn write_snapshot(&self, sequence: u64, state_bytes: &[u8]) -> Result<(), Error> {
        let _span = tracing::info_span!(
            "journal_write_snapshot",
            sequence,
            bytes = state_bytes.len()
        )
        .entered();
        self.inner.write_snapshot(sequence, state_bytes)
    }

    /// The newest valid snapshot (checksum good, chain value matches the record at its
    /// sequence), or None. Invalid ones are reported in the returned notes and ignored.
    pub fn load_snapshot(&self) -> (Option<Snapshot>, Vec<String>) {
        let (last, _) = self.inner.writer.durable();
        let (loaded, notes) = snapshot::newest_valid(&self.inner.layout, &self.inner.store, last);
        (loaded.map(|l| l.snapshot), notes)
    }

    /// The newest valid snapshot taken at or before `sequence` (for the state as of a past
    /// sequence), or None; invalid ones are reported in the notes and ignored.
    pub fn load_snapshot_at_or_before(&self, sequence: u64) -> (Option<Snapshot>, Vec<String>) {
        let (last, _) = self.inner.writer.durable();
        let (loaded, notes) = snapshot::newest_valid_at_or_before(
            &self.inner.layout,
            &self.inner.store,
            last,
            sequence,
        );
        (loaded.map(|l| l.snapshot), notes)
    }

    /// Makes everything durable and closes sled cleanly.
    pub fn close(self) -> Result<(), Error> {
        let _span = tracing::info_span!("journal_close").entered();
        self.inner.close()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
