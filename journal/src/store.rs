//! The sled store under a journal: opening it with bounded memory, and reading records safely.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::block;
use crate::frame::{self, Frame};
use crate::Error;

/// A stored key and value, raw (for side files).
pub type RawKv = (Vec<u8>, Vec<u8>);

/// The file sled keeps its log in.
pub const LOG_FILE: &str = "db";

/// Most of sled's log file read ahead at open (see [`read_ahead`]).
pub const READ_AHEAD_BYTES_MAX: i64 = 256 << 20;

/// Asks the kernel to start reading sled's log into the page cache (`posix_fadvise` WILLNEED,
/// which queues the reads and returns). Replay then reads sled's pages from memory: sled reads
/// each page with small `pread`s in tree order, and on a cold cache every one of them waited for
/// the disk (100k events: ~1,200 reads, 585 ms cold against 68 ms warm on the build host; under
/// QEMU's virtio-blk it was most of the boot's replay). Best effort: a missing file (a new
/// journal) or a refused hint changes nothing but speed.
fn read_ahead(log: &Path) {
    let Ok(file) = std::fs::File::open(log) else {
        return;
    };
    let advice = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED;
    if let Err(e) = nix::fcntl::posix_fadvise(&file, 0, READ_AHEAD_BYTES_MAX, advice) {
        tracing::debug!(path = %log.display(), error = %e, "posix_fadvise WILLNEED refused");
    }
}

/// How long `Store::open` waits for sled's lock on its log file to be let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// What sled 0.34's open error says when another handle holds the store's lock.
const SLED_LOCKED: &str = "could not acquire lock";

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
    ///
    /// sled locks its log file and lets go of the lock from its own threads some time after the
    /// last handle of a store is dropped, so an open right after a close in the same process can
    /// find the lock still taken: such an open is retried for up to `LOCK_WAIT`; a store held
    /// longer (by another process) is an error that says so.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<Store, Error> {
        let open_err = |reason: String| Error::OpenStore {
            path: path.to_path_buf(),
            reason,
        };
        read_ahead(&path.join(LOG_FILE));
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput);
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match catch_sled(|| config.open()).map_err(open_err)? {
                Ok(db) => break db,
                Err(e) => {
                    let reason = e.to_string();
                    if !reason.contains(SLED_LOCKED) || std::time::Instant::now() >= deadline {
                        return Err(open_err(reason));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        };
        let tree = catch_sled(|| db.open_tree(RECORDS_TREE))
            .map_err(open_err)?
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Store { db, tree })
    }

    /// The stored value holding `sequence` if any: the one with the greatest key <= it.
    pub fn value_containing(&self, sequence: u64, path: &Path) -> Result<Option<RawIv>, Error> {
        let read_err = |reason: String| Error::ReadStore {
            path: path.to_path_buf(),
            reason,
        };
        catch_sled(|| self.tree.range(..=frame::key(sequence)).next_back())
            .map_err(read_err)?
            .transpose()
            .map_err(|e| read_err(e.to_string()))
    }

    /// The crc of the record at `sequence` (its value's crc and its own checked), or why there
    /// is none: Ok(Err(problem)) when it is missing or damaged.
    pub fn record_crc(&self, sequence: u64, path: &Path) -> Result<Result<u32, String>, Error> {
        let Some((key, value)) = self.value_containing(sequence, path)? else {
            return Ok(Err(format!("record {sequence} is missing")));
        };
        let damaged =
            |e: &dyn std::fmt::Display| Ok(Err(format!("record {sequence} is damaged: {e}")));
        let parsed = match block::parse(&key, &value) {
            Ok(parsed) => parsed,
            Err(e) => return damaged(&e),
        };
        if let Some(e) = &parsed.damage {
            return damaged(e);
        }
        for frame in parsed.frames() {
            match frame {
                Ok(f) if f.sequence == sequence => return Ok(Ok(f.crc)),
                Ok(_) => {}
                Err(e) => return damaged(&e),
            }
        }
        Ok(Err(format!("record {sequence} is missing")))
    }

    /// Last sequence the store holds, by the header of its last value (0 when empty). A value
    /// whose header does not parse counts by its key alone.
    pub fn last_stored(&self, path: &Path) -> Result<u64, Error> {
        let read_err = |reason: String| Error::ReadStore {
            path: path.to_path_buf(),
            reason,
        };
        let last = catch_sled(|| self.tree.last())
            .map_err(read_err)?
            .map_err(|e| read_err(e.to_string()))?;
        let Some((key, value)) = last else {
            return Ok(0);
        };
        Ok(match block::parse(&key, &value) {
            Ok(parsed) => parsed.first + u64::from(parsed.count.max(1)) - 1,
            Err(_) => frame::sequence_of(&key).unwrap_or(u64::MAX),
        })
    }
}

/// A stored key and value as sled returns them.
pub type RawIv = (sled::IVec, sled::IVec);

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

/// Why stored values break the log at some sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub sequence: u64,
    pub problem: String,
    /// The stored value is itself intact (its crc matches): the damage is a gap, an overlap or a
    /// chain break, not torn bytes.
    pub intact: bool,
}

/// What checking one stored value found.
#[derive(Debug)]
pub struct Checked<'a> {
    /// The records that check, in order: all of the value's, or the prefix before `bad`.
    pub frames: Vec<Frame<'a>>,
    pub bad: Option<Bad>,
}

impl Checked<'_> {
    fn bad(frames: Vec<Frame<'_>>, bad: Bad) -> Checked<'_> {
        Checked {
            frames,
            bad: Some(bad),
        }
    }

    /// Encoded bytes of the records in `frames` (a prefix of the value's records).
    pub fn prefix_bytes(&self) -> usize {
        self.frames.iter().map(|f| f.bytes).sum()
    }
}

/// Checks records one after another: each stored value's header and crc (covering every byte
/// of its records), each record's framing (and its own crc when the value's crc fails, to name
/// the first damaged record), contiguous sequences, chain links.
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

    /// Checks the next stored value and advances past the records in it that check. When the
    /// value's own crc fails, its records are still checked one by one so that the first damaged
    /// record is named (the ones before it are returned); if they all check, the header is what
    /// is damaged and the whole value is bad.
    pub fn check_value<'a>(&mut self, key: &[u8], value: &'a [u8]) -> Checked<'a> {
        let parsed = match block::parse(key, value) {
            Ok(parsed) => parsed,
            Err(e) => {
                let sequence = frame::sequence_of(key).unwrap_or(self.expected);
                let problem = format!("stored value at key {sequence}: {e}");
                return Checked::bad(Vec::new(), self.bad(problem, false));
            }
        };
        let intact = parsed.damage.is_none();
        if parsed.first != self.expected {
            let problem = if parsed.first > self.expected {
                format!(
                    "record {} is missing (the next stored value starts at record {})",
                    self.expected, parsed.first
                )
            } else {
                format!(
                    "the stored value at key {} overlaps records before {}",
                    parsed.first, self.expected
                )
            };
            return Checked::bad(Vec::new(), self.bad(problem, intact));
        }
        let start = *self;
        let capacity = (parsed.count as usize).min(parsed.records.len() / frame::HEADER_BYTES);
        let mut frames = Vec::with_capacity(capacity);
        let mut offset = 0;
        for item in parsed.frames() {
            let checked = item
                .map_err(|e| self.damaged(e, &parsed.records[offset..]))
                .and_then(|f| self.link(f, intact));
            match checked {
                Ok(frame) => {
                    offset += frame.bytes;
                    frames.push(frame);
                }
                Err(bad) => return Checked::bad(frames, bad),
            }
        }
        let found = frames.len() as u32;
        let damage = parsed.damage.or_else(|| {
            (found != parsed.count || found == 0).then_some(block::ValueError::Count {
                declared: parsed.count,
                found,
            })
        });
        if let Some(damage) = damage {
            *self = start;
            let problem = format!(
                "record {}: the stored value holding it is damaged: {damage}",
                parsed.first
            );
            return Checked::bad(Vec::new(), self.bad(problem, false));
        }
        Checked { frames, bad: None }
    }

    /// Checks that `frame` is the next record of the chain and advances past it.
    fn link<'a>(&mut self, frame: Frame<'a>, intact: bool) -> Result<Frame<'a>, Bad> {
        if frame.sequence != self.expected {
            let problem = format!(
                "record {} is missing (record {} is stored in its place)",
                self.expected, frame.sequence
            );
            return Err(self.bad(problem, intact));
        }
        if frame.prev_crc != self.prev_crc {
            let problem = format!(
                "record {}: chain broken: the record links to previous crc {:#010x} but the record before it has crc {:#010x}",
                frame.sequence, frame.prev_crc, self.prev_crc
            );
            return Err(self.bad(problem, intact));
        }
        self.expected += 1;
        self.prev_crc = frame.crc;
        Ok(frame)
    }

    /// The record expected next does not decode from `rest` (the value's bytes from where it
    /// starts). If an intact record follows it in the same value, this is not a torn write but
    /// damage in the middle of history (`intact`, so that open refuses).
    fn damaged(&self, e: frame::FrameError, rest: &[u8]) -> Bad {
        match intact_record_after(rest, self.expected) {
            Some(later) => self.bad(
                format!(
                    "record {}: {e}; yet record {later} after it is intact",
                    self.expected
                ),
                true,
            ),
            None => self.bad(format!("record {}: {e}", self.expected), false),
        }
    }

    fn bad(&self, problem: String, intact: bool) -> Bad {
        Bad {
            sequence: self.expected,
            problem,
            intact,
        }
    }
}

/// The sequence of an intact record (its own crc good, sequence after `sequence`) starting
/// anywhere in `bytes` after their first byte: damaged framing may hide where the next record
/// starts, so every offset where a record could start is tried.
fn intact_record_after(bytes: &[u8], sequence: u64) -> Option<u64> {
    (1..bytes.len())
        .filter(|&at| bytes[at] == frame::FRAME_MAGIC)
        .filter_map(|at| frame::decode(&bytes[at..]).ok())
        .map(|f| f.sequence)
        .find(|&later| later > sequence)
}
