//! Recovery at open: the rules, as a table, and the scan of the store that applies them.
//!
//! | rule | what open finds                                                              | action                                   |
//! |------|------------------------------------------------------------------------------|------------------------------------------|
//! | 1    | the directory is missing or empty                                            | create a new journal                     |
//! | 2    | the directory is not empty and has no `JOURNAL` marker                       | refuse: `NotAJournal`                    |
//! | 3    | the marker names a newer on-disk format                                      | refuse: `FormatNewer`                    |
//! | 4    | a checkpoint exists but a sled store file is missing                         | refuse: `StoreFileMissing`               |
//! | 5    | every record from the start point is intact, contiguous and chained          | open                                     |
//! | 6    | bad records only at the tail: no stored value after the first bad one is intact | cut them (the intact records before the first bad one stay), keep the cut values' bytes in `aside/`, note it |
//! | 7    | after the start point, a bad record, gap or chain break followed by an intact record (in the same stored value or a later one) | refuse: `Corrupt` naming the sequence |
//! | 8    | the checkpoint records, or the scan finds, a newer event schema version      | refuse: `SchemaNewer` / `NewerSchema`    |
//! | 9    | the store ends before the checkpoint, or its record there has another crc    | refuse: `LostAcknowledged`               |
//! | 10   | the newest snapshot is missing, damaged, or does not match the chain         | note it, try older ones, else replay from 1 |
//! | 11   | a bad record before the start point (verified at an earlier open)            | open; replay stops there with `Corrupt` naming the sequence |
//!
//! Records are stored in groups, one sled value per group commit (`block`): a value has its own
//! crc and each record in it has its own crc and chain link, so damage is named at the first bad
//! record, and the records of a damaged value before it are kept (rules 6, 11) when they check.
//!
//! The start point is the record after the checkpoint or after the newest valid snapshot,
//! whichever is later (their chain value anchors the chain), or 1 without either. Records before
//! it were verified when the checkpoint was written and are verified again by `replay` as the
//! caller rebuilds its state (and by `inspect::verify`), so open does one pass over history, not
//! two, and a crash costs a scan of the records since the last checkpoint only. `RULES` mirrors
//! the table and the tests run a scenario per row.

use std::path::Path;

use crate::store::RawKv;
use crate::store::{catch_sled, Bad, Chain, Store};
use crate::{block, frame, Error};

/// What open does for a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Open,
    CutTail,
    IgnoreSnapshot,
    Refuse,
    /// Open succeeds; replay refuses when it reaches the damage.
    RefuseOnReplay,
}

/// One row of the recovery table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: u8,
    pub finds: &'static str,
    pub action: Action,
}

/// The recovery table above, row by row.
pub const RULES: [Rule; 11] = [
    Rule {
        id: 1,
        finds: "directory missing or empty",
        action: Action::Create,
    },
    Rule {
        id: 2,
        finds: "non-empty directory without JOURNAL marker",
        action: Action::Refuse,
    },
    Rule {
        id: 3,
        finds: "marker of a newer on-disk format",
        action: Action::Refuse,
    },
    Rule {
        id: 4,
        finds: "checkpoint present, sled store file missing",
        action: Action::Refuse,
    },
    Rule {
        id: 5,
        finds: "all records intact, contiguous, chained",
        action: Action::Open,
    },
    Rule {
        id: 6,
        finds: "bad records only at the tail",
        action: Action::CutTail,
    },
    Rule {
        id: 7,
        finds: "bad record, gap or chain break followed by an intact record",
        action: Action::Refuse,
    },
    Rule {
        id: 8,
        finds: "newer event schema version",
        action: Action::Refuse,
    },
    Rule {
        id: 9,
        finds: "store ends before the checkpoint or differs at it",
        action: Action::Refuse,
    },
    Rule {
        id: 10,
        finds: "snapshot missing, damaged or off the chain",
        action: Action::IgnoreSnapshot,
    },
    Rule {
        id: 11,
        finds: "bad record before the start point",
        action: Action::RefuseOnReplay,
    },
];

/// How a scan of the store ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// Last good sequence and its crc (the chain head), or the start point's predecessor.
    pub last: u64,
    pub head: u32,
    /// Good records seen by this scan.
    pub records: u64,
    /// Highest schema version seen.
    pub version_max: u16,
    /// Rule 6: the first bad record of a torn tail (`cut_after(last)` says what to move).
    pub torn: Option<Bad>,
}

/// Why a scan refuses.
#[derive(Debug)]
pub enum ScanError {
    /// Rule 7.
    Corrupt {
        bad: Bad,
        good_through: u64,
        head: u32,
    },
    /// Rule 8.
    Newer {
        sequence: u64,
        kind: u16,
        version: u16,
        supported: u16,
    },
    /// The store itself could not be read.
    Store(Error),
}

fn read_error(path: &Path) -> impl Fn(String) -> ScanError + '_ {
    move |reason| {
        ScanError::Store(Error::ReadStore {
            path: path.to_path_buf(),
            reason,
        })
    }
}

/// Where a scan starting at `chain.expected` begins: at that sequence's key, or, when it lies
/// inside a stored value (a snapshot taken mid-group), at that value's first record, the chain
/// anchored on the value's own first link (the records before the start point are checked but
/// not counted).
fn start_of(store: &Store, chain: Chain, path: &Path) -> Result<(sled::Iter, Chain), ScanError> {
    if chain.expected <= 1 {
        // From the start, iterate every key (a stray key sorting before sequence 1 is found too).
        return Ok((store.tree.iter(), chain));
    }
    let containing = store
        .value_containing(chain.expected, path)
        .map_err(ScanError::Store)?;
    if let Some((key, value)) = containing {
        let first_link = block::parse(&key, &value)
            .ok()
            .filter(|v| v.first < chain.expected)
            .and_then(|v| Some((v.first, v.frames().next()?.ok()?.prev_crc)));
        if let Some((first, prev_crc)) = first_link {
            let iter = store.tree.range(frame::key(first)..);
            return Ok((iter, Chain::new(first, prev_crc)));
        }
    }
    Ok((store.tree.range(frame::key(chain.expected)..), chain))
}

/// Scans records from `chain.expected` to the end, applying rules 5 to 8. `schema_max` is the
/// newest schema version the caller decodes (None: any).
pub fn scan(
    store: &Store,
    chain: Chain,
    schema_max: Option<u16>,
    path: &Path,
) -> Result<Scanned, ScanError> {
    let mut scanned = Scanned {
        last: chain.expected - 1,
        head: chain.prev_crc,
        records: 0,
        version_max: 0,
        torn: None,
    };
    let start = chain.expected;
    let (mut iter, mut chain) = start_of(store, chain, path)?;
    loop {
        let item = catch_sled(|| iter.next()).map_err(read_error(path))?;
        let Some(item) = item else { return Ok(scanned) };
        let (key, value) = item.map_err(|e| read_error(path)(e.to_string()))?;
        let checked = chain.check_value(&key, &value);
        for frame in checked.frames.iter().filter(|f| f.sequence >= start) {
            if let Some(supported) = schema_max.filter(|max| frame.version > *max) {
                let (sequence, kind, version) = (frame.sequence, frame.kind, frame.version);
                return Err(ScanError::Newer {
                    sequence,
                    kind,
                    version,
                    supported,
                });
            }
            scanned.version_max = scanned.version_max.max(frame.version);
            (scanned.last, scanned.head, scanned.records) =
                (frame.sequence, frame.crc, scanned.records + 1);
        }
        let Some(bad) = checked.bad else { continue };
        let (good_through, head) = (scanned.last, scanned.head);
        if bad.intact {
            return Err(ScanError::Corrupt {
                bad,
                good_through,
                head,
            });
        }
        if let Some(intact) = first_intact(&mut iter, path)? {
            let problem = format!(
                "{}; yet the stored value holding records from {intact} after it is intact",
                bad.problem
            );
            return Err(ScanError::Corrupt {
                bad: Bad { problem, ..bad },
                good_through,
                head,
            });
        }
        scanned.torn = Some(bad);
        return Ok(scanned);
    }
}

/// The first sequence of the first remaining stored value whose crc is intact, if any.
fn first_intact(iter: &mut sled::Iter, path: &Path) -> Result<Option<u64>, ScanError> {
    for item in iter {
        let (key, value) = item.map_err(|e| read_error(path)(e.to_string()))?;
        if let Ok(parsed) = block::parse(&key, &value) {
            if parsed.damage.is_none() {
                return Ok(Some(parsed.first));
            }
        }
    }
    Ok(None)
}

/// What cutting the store after a sequence moves and keeps.
#[derive(Debug, Default)]
pub struct Cut {
    /// Every stored key and value holding records after the cut, raw (for the side file).
    pub rest: Vec<RawKv>,
    /// The intact records before the cut of a value that straddles it, as a new value to store
    /// under the same key.
    pub keep: Option<RawKv>,
    /// Records moved (by the value headers that parse; a value whose header does not counts 1).
    pub moved_records: u64,
}

/// The stored values holding records after `kept` (and any malformed key sorting after them).
pub fn cut_after(store: &Store, kept: u64, path: &Path) -> Result<Cut, Error> {
    let read_err = |reason: String| Error::ReadStore {
        path: path.to_path_buf(),
        reason,
    };
    let mut cut = Cut::default();
    let mut from = std::ops::Bound::Excluded(frame::key(kept).to_vec());
    if kept == 0 {
        from = std::ops::Bound::Unbounded;
    } else if let Some((key, value)) = store.value_containing(kept + 1, path)? {
        if let Some((keep, kept_records)) = straddling(&key, &value, kept) {
            cut.keep = Some(keep);
            cut.moved_records = cut.moved_records.wrapping_sub(kept_records);
            from = std::ops::Bound::Included(key.to_vec());
        }
    }
    let items = catch_sled(|| {
        store
            .tree
            .range::<Vec<u8>, _>((from, std::ops::Bound::Unbounded))
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(read_err)?
    .map_err(|e| read_err(e.to_string()))?;
    for (key, value) in items {
        let records = block::parse(&key, &value).map_or(1, |v| u64::from(v.count.max(1)));
        cut.moved_records = cut.moved_records.wrapping_add(records);
        cut.rest.push((key.to_vec(), value.to_vec()));
    }
    Ok(cut)
}

/// If the value at `key` holds records both up to `kept` and after it: the value made of its
/// records up to `kept`, and how many they are.
fn straddling(key: &[u8], value: &[u8], kept: u64) -> Option<(RawKv, u64)> {
    let parsed = block::parse(key, value).ok()?;
    let end = parsed.first + u64::from(parsed.count);
    if parsed.first > kept || end <= kept + 1 && parsed.damage.is_none() {
        return None;
    }
    let (mut count, mut bytes) = (0u32, 0usize);
    for frame in parsed.frames() {
        match frame {
            Ok(f) if f.sequence <= kept => (count, bytes) = (count + 1, bytes + f.bytes),
            _ => break,
        }
    }
    if count == 0 {
        return None;
    }
    let keep = block::from_records(parsed.first, count, &parsed.records[..bytes]);
    Some(((key.to_vec(), keep), u64::from(count)))
}

/// Rule 9: the store must reach the checkpoint with the same chain value there.
pub fn check_checkpoint(
    store: &Store,
    store_last: u64,
    checkpoint: crate::layout::Checkpoint,
    dir: &Path,
) -> Result<(), Error> {
    let lost = |found: String| Error::LostAcknowledged {
        dir: dir.to_path_buf(),
        checkpoint_sequence: checkpoint.sequence,
        checkpoint_chain: checkpoint.chain,
        found,
    };
    if checkpoint.sequence == 0 {
        return Ok(());
    }
    if store_last < checkpoint.sequence {
        return Err(lost(format!("the store ends at sequence {store_last}")));
    }
    match store.record_crc(checkpoint.sequence, dir)? {
        Ok(crc) if crc == checkpoint.chain => Ok(()),
        Ok(crc) => Err(lost(format!("the record there has crc {crc:#010x}"))),
        Err(problem) => Err(lost(problem)),
    }
}
