//! The sled store under a journal: opening it with bounded memory, and reading records safely.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::frame::{self, Frame, FrameError};
use crate::Error;

/// A stored key and value, raw (for side files).
pub type RawKv = (Vec<u8>, Vec<u8>);

/// Name of the sled tree holding the records.
pub const RECORDS_TREE: &[u8] = b"records";

/// An open sled database and its records tree.
#[derive(Debug, Clone)]
pub struct Store {
    pub db: sled::Db,
    pub tree: sled::Tree,
}

impl Store {
    /// Opens (creating if absent) the sled store at `path` with a bounded page cache. sled's
    /// background flusher is off: the journal flushes (and fsyncs) itself at each group commit.
    /// A panic inside sled on damaged files is caught and reported as an error.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Store, Error> {
        let open_err = |reason: String| Error::OpenStore {
            path: path.to_path_buf(),
            reason,
        };
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput);
        let db = catch_sled(|| config.open())
            .map_err(open_err)?
            .map_err(|e| open_err(e.to_string()))?;
        let tree = catch_sled(|| db.open_tree(RECORDS_TREE))
            .map_err(open_err)?
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Store { db, tree })
    }

    /// The raw value stored at `sequence`, if any.
    pub fn get(&self, sequence: u64, path: &Path) -> Result<Option<sled::IVec>, Error> {
        let read_err = |reason: String| Error::ReadStore {
            path: path.to_path_buf(),
            reason,
        };
        catch_sled(|| self.tree.get(frame::key(sequence)))
            .map_err(read_err)?
            .map_err(|e| read_err(e.to_string()))
    }

    /// Key of the last stored record, if any.
    pub fn last_key(&self, path: &Path) -> Result<Option<sled::IVec>, Error> {
        let read_err = |reason: String| Error::ReadStore {
            path: path.to_path_buf(),
            reason,
        };
        let last = catch_sled(|| self.tree.last())
            .map_err(read_err)?
            .map_err(|e| read_err(e.to_string()))?;
        Ok(last.map(|(k, _)| k))
    }
}

/// Runs a sled call, turning a panic (sled asserts on some damaged files) into an error text.
pub fn catch_sled<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        format!("sled failed on the stored bytes: {text}")
    })
}

/// Why a stored record breaks the log at some sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub sequence: u64,
    pub problem: String,
    /// The stored record is itself intact (the damage is a gap or chain break before it).
    pub intact: bool,
}

/// Checks records one after another: framing, own crc, contiguous sequence, chain link.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    /// Sequence the next record must have.
    pub expected: u64,
    /// crc of the record before `expected` (0 before sequence 1).
    pub prev_crc: u32,
}

impl Chain {
    pub fn new(expected: u64, prev_crc: u32) -> Chain {
        Chain { expected, prev_crc }
    }

    /// Checks the next stored record and advances past it.
    pub fn check<'a>(&mut self, key: &[u8], value: &'a [u8]) -> Result<Frame<'a>, Bad> {
        let frame = frame::decode(key, value).map_err(|e| self.bad_frame(key, e))?;
        if frame.sequence != self.expected {
            return Err(Bad {
                sequence: self.expected,
                problem: format!(
                    "record {} is missing (the next stored record is {})",
                    self.expected, frame.sequence
                ),
                intact: true,
            });
        }
        if frame.prev_crc != self.prev_crc {
            return Err(Bad {
                sequence: frame.sequence,
                problem: format!(
                    "chain broken: the record links to previous crc {:#010x} but the record before it has crc {:#010x}",
                    frame.prev_crc, self.prev_crc
                ),
                intact: true,
            });
        }
        self.expected += 1;
        self.prev_crc = frame.crc;
        Ok(frame)
    }

    fn bad_frame(&self, key: &[u8], e: FrameError) -> Bad {
        let sequence = frame::sequence_of(key).unwrap_or(self.expected);
        Bad {
            sequence,
            problem: format!("record {sequence}: {e}"),
            intact: false,
        }
    }
}
