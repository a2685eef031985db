//! The journal's error type: every message says what is wrong, where, and what the operator can do.

use std::path::PathBuf;

use crate::DecodeError;

/// Journal errors. Messages say what is wrong, where (sequence, file) and what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("create journal directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no journal at {dir}: the directory does not exist")]
    Missing { dir: PathBuf },
    #[error("{dir} is not a journal: it is not empty and has no JOURNAL marker file (found {found}); point --data-dir at a journal or at an empty directory")]
    NotAJournal { dir: PathBuf, found: String },
    #[error("read journal marker {path}: {reason}")]
    ReadMarker { path: PathBuf, reason: String },
    #[error("journal at {dir} has on-disk format {found}, this build reads format {supported}: it was written by a newer build; run that build or a newer one")]
    FormatNewer {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("journal at {dir} is damaged: store file {missing} is missing although the journal holds acknowledged records up to sequence {checkpoint_sequence}; restore the data dir from a backup")]
    StoreFileMissing {
        dir: PathBuf,
        missing: PathBuf,
        checkpoint_sequence: u64,
    },
    #[error("open the sled store in {path}: {reason}")]
    OpenStore { path: PathBuf, reason: String },
    #[error("read the sled store in {path}: {reason}")]
    ReadStore { path: PathBuf, reason: String },
    #[error("write record batch {first}..={last} to the sled store: {reason}")]
    WriteStore {
        first: u64,
        last: u64,
        reason: String,
    },
    #[error("flush the sled store in {path}: {reason}")]
    Flush { path: PathBuf, reason: String },
    #[error("fsync {path}")]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal at {dir} is corrupt at sequence {sequence}: {problem}; records 1..={good_through} are intact. Nothing was changed. Run `appliance journal verify` on this data dir for details, or `appliance journal salvage` to keep records 1..={good_through} and move the rest aside into {dir}/aside")]
    Corrupt {
        dir: PathBuf,
        sequence: u64,
        problem: String,
        good_through: u64,
    },
    #[error("journal at {dir} has a torn tail at sequence {sequence}: {problem}; records 1..={good_through} are intact. The appliance cuts such a tail on its next start (keeping the bytes in {dir}/aside), or run `appliance journal salvage` on this data dir")]
    TornTail {
        dir: PathBuf,
        sequence: u64,
        problem: String,
        good_through: u64,
    },
    #[error("journal at {dir} lost acknowledged records: the checkpoint says sequence {checkpoint_sequence} (chain {checkpoint_chain:#010x}) was durable, but {found}. Nothing was changed; restore the data dir from a backup, or run `appliance journal salvage` to accept the loss")]
    LostAcknowledged {
        dir: PathBuf,
        checkpoint_sequence: u64,
        checkpoint_chain: u32,
        found: String,
    },
    #[error("record {sequence} has event kind {kind} schema version {version}, but this build knows versions up to {supported}: the journal was written by a newer build; run that build or a newer one")]
    NewerSchema {
        sequence: u64,
        kind: u16,
        version: u16,
        supported: u16,
    },
    #[error("journal at {dir} holds events of schema version {version}, this build knows versions up to {supported}: it was written by a newer build; run that build or a newer one")]
    SchemaNewer {
        dir: PathBuf,
        version: u16,
        supported: u16,
    },
    #[error("record {sequence} does not decode")]
    Decode {
        sequence: u64,
        #[source]
        source: DecodeError,
    },
    #[error("record {sequence} is damaged: {problem}")]
    BadRecord { sequence: u64, problem: String },
    #[error("append an empty batch: a batch needs at least one event")]
    EmptyBatch,
    #[error("encode event kind {kind}: {reason}")]
    Encode { kind: u16, reason: String },
    #[error(
        "record of event kind {kind} is {bytes} bytes, more than record_bytes_max {bytes_max}"
    )]
    RecordTooLarge {
        kind: u16,
        bytes: usize,
        bytes_max: usize,
    },
    #[error("the journal refuses writes after an earlier durable write failed ({reason}); restart the service so that open re-checks the journal")]
    Poisoned { reason: String },
    #[error("snapshot at sequence {sequence} refused: it must be between 1 and the last durable sequence {last_sequence}")]
    SnapshotSequence { sequence: u64, last_sequence: u64 },
    #[error("snapshot of {bytes} bytes is larger than snapshot_bytes_max {bytes_max}")]
    SnapshotTooLarge { bytes: usize, bytes_max: usize },
    #[error("write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rename {from} to {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
