//! Operator tools behind `appliance journal verify|dump|stats|salvage`: a full check of every
//! record without repairing anything, statistics, raw records for dumping, and salvage.
//!
//! `verify`, `stats` and `raw_records` never modify the journal: sled writes to its files when it
//! opens them, so they open a private copy of the store in the system temp dir.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::layout::{Checkpoint, Layout};
use crate::open::{prepare_dir, read_checkpoint, replace_tail, scan_error};
use crate::recovery::{self, ScanError, Scanned};
use crate::store::{catch_sled, Chain, Store};
use crate::{fsio, snapshot, Error};

/// sled cache used by the inspection tools.
const INSPECT_CACHE_BYTES: u64 = 16 << 20;

/// The result of a successful `verify`: Display is a one-line summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    pub records: u64,
    /// 0 when empty.
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub chain_head: u32,
    /// Highest event schema version stored.
    pub version_max: u16,
    /// "none", "at sequence N (valid)", or why the snapshots are ignored.
    pub snapshot: String,
}

impl fmt::Display for VerifySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.records == 0 {
            return write!(f, "journal OK: empty, snapshot: {}", self.snapshot);
        }
        write!(
            f,
            "journal OK: {} records, sequences {}..={}, chain head {:#010x}, schema versions <= {}, snapshot: {}",
            self.records, self.first_sequence, self.last_sequence, self.chain_head, self.version_max, self.snapshot
        )
    }
}

/// Numbers about a journal: Display is multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Intact records (up to the first damaged one, if any).
    pub records: u64,
    pub last_sequence: u64,
    pub chain_head: u32,
    /// All files of the journal directory.
    pub bytes_on_disk: u64,
    /// The sled store alone.
    pub store_bytes: u64,
    pub snapshot: String,
    /// Why the journal is not clean, if it is not.
    pub damage: Option<String>,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "events:        {}", self.records)?;
        writeln!(f, "last sequence: {}", self.last_sequence)?;
        writeln!(f, "chain head:    {:#010x}", self.chain_head)?;
        writeln!(
            f,
            "size on disk:  {} bytes (store {} bytes)",
            self.bytes_on_disk, self.store_bytes
        )?;
        write!(f, "snapshot:      {}", self.snapshot)?;
        if let Some(damage) = &self.damage {
            write!(f, "\ndamage:        {damage}")?;
        }
        Ok(())
    }
}

/// One stored record, framing checked, payload not decoded (the caller owns the event type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub sequence: u64,
    pub timestamp_ms: u64,
    pub kind: u16,
    pub version: u16,
    pub crc: u32,
    pub payload: Vec<u8>,
}

/// What `salvage` did: Display is a few lines for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalvageReport {
    /// Records 1..=kept_through remain.
    pub kept_through: u64,
    pub chain_head: u32,
    pub moved_records: usize,
    pub moved_bytes: u64,
    /// Where the moved records' bytes are (None when nothing was moved).
    pub side_file: Option<PathBuf>,
    pub snapshots_moved: Vec<PathBuf>,
    /// The damage found, if any.
    pub problem: Option<String>,
    /// Acknowledged sequence (from the checkpoint) beyond what was kept: records lost.
    pub acknowledged_lost_through: Option<u64>,
}

impl fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(problem) = &self.problem else {
            return write!(
                f,
                "journal is intact through sequence {}: nothing to salvage",
                self.kept_through
            );
        };
        writeln!(f, "damage: {problem}")?;
        write!(
            f,
            "kept records 1..={} (chain head {:#010x})",
            self.kept_through, self.chain_head
        )?;
        if let Some(side) = &self.side_file {
            write!(
                f,
                "\nmoved {} record(s), {} bytes, to {}",
                self.moved_records,
                self.moved_bytes,
                side.display()
            )?;
        }
        for path in &self.snapshots_moved {
            write!(f, "\nmoved snapshot to {}", path.display())?;
        }
        if let Some(lost) = self.acknowledged_lost_through {
            write!(
                f,
                "\nWARNING: records {}..={lost} had been acknowledged and are lost",
                self.kept_through + 1
            )?;
        }
        Ok(())
    }
}

/// A private copy of a journal's store, removed on drop.
#[derive(Debug)]
struct TempCopy {
    dir: PathBuf,
}

impl TempCopy {
    fn of(store: &Path) -> Result<TempCopy, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("journal-inspect-{}-{nanos}", std::process::id()));
        let copy = TempCopy { dir };
        if store.is_dir() {
            fsio::copy_tree(store, &copy.dir)?;
        }
        Ok(copy)
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A read-only view: the journal's layout and checkpoint, and an open copy of its store.
#[derive(Debug)]
struct View {
    layout: Layout,
    checkpoint: Option<Checkpoint>,
    store: Store,
    _copy: TempCopy,
}

fn view(dir: &Path) -> Result<View, Error> {
    let layout = Layout::new(dir);
    prepare_dir(&layout, false)?;
    let checkpoint = read_checkpoint(&layout, &mut Vec::new())?;
    let copy = TempCopy::of(&layout.store())?;
    let store = Store::open(&copy.dir, INSPECT_CACHE_BYTES).map_err(|e| match e {
        Error::OpenStore { reason, .. } => Error::OpenStore {
            path: layout.store(),
            reason,
        },
        other => other,
    })?;
    Ok(View {
        layout,
        checkpoint,
        store,
        _copy: copy,
    })
}

fn snapshot_status(layout: &Layout, store: &Store, last: u64) -> String {
    match snapshot::newest_valid(layout, store, last) {
        (Some(loaded), notes) if notes.is_empty() => {
            format!("at sequence {} (valid)", loaded.snapshot.sequence)
        }
        (Some(loaded), notes) => format!(
            "at sequence {} (valid; {})",
            loaded.snapshot.sequence,
            notes.join("; ")
        ),
        (None, notes) if notes.is_empty() => "none".to_string(),
        (None, notes) => notes.join("; "),
    }
}

/// Checks every record (framing, crc, sequence, chain), the checkpoint and the snapshots,
/// without modifying anything. Any damage, even a torn tail that open would cut, is an error
/// naming the sequence, the problem and what the operator can do.
pub fn verify(dir: &Path) -> Result<VerifySummary, Error> {
    let _span = tracing::info_span!("journal_verify", dir = %dir.display()).entered();
    let view = view(dir)?;
    let scanned = recovery::scan(&view.store, Chain::new(1, 0), None, &view.layout.store())
        .map_err(|e| scan_error(&view.layout, e))?;
    if let Some(bad) = &scanned.torn {
        return Err(Error::TornTail {
            dir: dir.to_path_buf(),
            sequence: bad.sequence,
            problem: bad.problem.clone(),
            good_through: scanned.last,
        });
    }
    if let Some(cp) = view.checkpoint {
        recovery::check_checkpoint(&view.store, scanned.last, cp, dir)?;
    }
    Ok(VerifySummary {
        records: scanned.records,
        first_sequence: u64::from(scanned.records > 0),
        last_sequence: scanned.last,
        chain_head: scanned.head,
        version_max: scanned.version_max,
        snapshot: snapshot_status(&view.layout, &view.store, scanned.last),
    })
}

/// Event count, size on disk, last sequence and chain head; damage is reported in `damage`
/// (counting the intact records before it) rather than as an error.
pub fn stats(dir: &Path) -> Result<Stats, Error> {
    let _span = tracing::info_span!("journal_stats", dir = %dir.display()).entered();
    let view = view(dir)?;
    let (records, last, head, damage) =
        match recovery::scan(&view.store, Chain::new(1, 0), None, &view.layout.store()) {
            Ok(Scanned {
                records,
                last,
                head,
                torn: None,
                ..
            }) => (records, last, head, None),
            Ok(Scanned {
                records,
                last,
                head,
                torn: Some(bad),
                ..
            }) => (
                records,
                last,
                head,
                Some(format!(
                    "torn tail at sequence {}: {}",
                    bad.sequence, bad.problem
                )),
            ),
            Err(ScanError::Corrupt {
                bad,
                good_through,
                head,
            }) => (
                good_through,
                good_through,
                head,
                Some(format!(
                    "corrupt at sequence {}: {}",
                    bad.sequence, bad.problem
                )),
            ),
            Err(e) => return Err(scan_error(&view.layout, e)),
        };
    Ok(Stats {
        records,
        last_sequence: last,
        chain_head: head,
        bytes_on_disk: fsio::tree_bytes(dir),
        store_bytes: fsio::tree_bytes(&view.layout.store()),
        snapshot: snapshot_status(&view.layout, &view.store, last),
        damage,
    })
}

/// Every record in order with its framing checked; the first damaged record ends the iteration
/// with an error. Reads a private copy of the store.
pub fn raw_records(dir: &Path) -> impl Iterator<Item = Result<RawRecord, Error>> {
    match view(dir) {
        Ok(view) => RawRecords {
            iter: Some(view.store.tree.iter()),
            chain: Chain::new(1, 0),
            buffer: VecDeque::new(),
            view: Some(view),
        },
        Err(e) => RawRecords {
            iter: None,
            chain: Chain::new(1, 0),
            buffer: VecDeque::from([Err(e)]),
            view: None,
        },
    }
}

/// Iterator behind `raw_records` (fields drop in order: iterator, then store, then the copy).
/// It holds the records of one stored value at a time.
struct RawRecords {
    iter: Option<sled::Iter>,
    chain: Chain,
    buffer: VecDeque<Result<RawRecord, Error>>,
    view: Option<View>,
}

impl fmt::Debug for RawRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRecords")
            .field("chain", &self.chain)
            .field("view", &self.view)
            .finish()
    }
}

impl RawRecords {
    /// Reads and checks the next stored value into the buffer; false at the end or on an error.
    fn fill(&mut self) -> bool {
        let Some(iter) = self.iter.as_mut() else {
            return false;
        };
        let path = self
            .view
            .as_ref()
            .map(|v| v.layout.store())
            .unwrap_or_default();
        let item = match catch_sled(|| iter.next()) {
            Ok(item) => item,
            Err(reason) => Some(Err(sled::Error::ReportableBug(reason))),
        };
        let (key, value) = match item {
            None => return false,
            Some(Ok(kv)) => kv,
            Some(Err(e)) => {
                let reason = e.to_string();
                self.buffer
                    .push_back(Err(Error::ReadStore { path, reason }));
                return false;
            }
        };
        let checked = self.chain.check_value(&key, &value);
        self.buffer.extend(checked.frames.iter().map(|f| {
            Ok(RawRecord {
                sequence: f.sequence,
                timestamp_ms: f.timestamp_ms,
                kind: f.kind,
                version: f.version,
                crc: f.crc,
                payload: f.payload.to_vec(),
            })
        }));
        match checked.bad {
            Some(bad) => {
                self.buffer.push_back(Err(Error::BadRecord {
                    sequence: bad.sequence,
                    problem: bad.problem,
                }));
                false
            }
            None => true,
        }
    }
}

impl Iterator for RawRecords {
    type Item = Result<RawRecord, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.buffer.is_empty() {
            if !self.fill() {
                self.iter = None;
                break;
            }
        }
        let item = self.buffer.pop_front()?;
        if item.is_err() {
            self.iter = None;
            self.buffer.clear();
        }
        Some(item)
    }
}

/// Keeps the longest valid prefix of the journal and moves every record after it (their raw
/// bytes) to a side file in `aside/`, and snapshots past it too; rewrites the checkpoint.
/// Works in place: the appliance must not be running (sled's lock refuses a second opener).
pub fn salvage(dir: &Path) -> Result<SalvageReport, Error> {
    let _span = tracing::info_span!("journal_salvage", dir = %dir.display()).entered();
    let layout = Layout::new(dir);
    prepare_dir(&layout, false)?;
    let checkpoint = layout.read_checkpoint().unwrap_or(None);
    if let (Some(missing), Some(cp)) = (layout.missing_store_file(), checkpoint) {
        return Err(Error::StoreFileMissing {
            dir: dir.to_path_buf(),
            missing,
            checkpoint_sequence: cp.sequence,
        });
    }
    let store = Store::open(&layout.store(), INSPECT_CACHE_BYTES)?;
    let (kept, head, problem) =
        match recovery::scan(&store, Chain::new(1, 0), None, &layout.store()) {
            Ok(Scanned {
                last, head, torn, ..
            }) => (
                last,
                head,
                torn.map(|bad| format!("torn tail at sequence {}: {}", bad.sequence, bad.problem)),
            ),
            Err(ScanError::Corrupt {
                bad,
                good_through,
                head,
            }) => (
                good_through,
                head,
                Some(format!(
                    "corrupt at sequence {}: {}",
                    bad.sequence, bad.problem
                )),
            ),
            Err(e) => return Err(scan_error(&layout, e)),
        };
    let cut = recovery::cut_after(&store, kept, &layout.store())?;
    let side_file = if cut.rest.is_empty() {
        None
    } else {
        Some(layout.write_aside("salvage", kept + 1, &cut.rest)?)
    };
    replace_tail(&layout, &store, &cut)?;
    let snapshots_moved = snapshot::move_aside_from(&layout, kept + 1)?;
    let version_max = checkpoint.map_or(0, |cp| cp.version_max);
    layout.write_checkpoint(Checkpoint {
        sequence: kept,
        chain: head,
        version_max,
    })?;
    Ok(SalvageReport {
        kept_through: kept,
        chain_head: head,
        moved_records: usize::try_from(cut.moved_records).unwrap_or(usize::MAX),
        moved_bytes: cut
            .rest
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum(),
        side_file,
        snapshots_moved,
        problem,
        acknowledged_lost_through: checkpoint.map(|cp| cp.sequence).filter(|&s| s > kept),
    })
}
